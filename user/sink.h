/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The event sink of sluiced: JSON lines into a file with size-based
 * rotation, or stdout, or a pipe/FIFO, without ever making the ring-buffer
 * reader wait for the consumer.
 *
 * Lines go into a bounded in-memory queue, whole or not at all, and are
 * written with non-blocking I/O. A line that finds the queue full is
 * dropped and counted; a write error drops what is queued and counts it.
 * At every moment
 *	written + dropped_full + dropped_error + dropped_invalid + queued
 * equals the number of sink__write() calls.
 *
 * Event loop use: sink__write() per record (it flushes what the fd takes
 * now); while sink__pending(), wait for POLLOUT on sink__fd() and call
 * sink__flush(); on SIGHUP sink__reopen(); on SIGTERM
 * sink__flush_blocking() with a deadline, then sink__close().
 *
 * Where the fd comes from, per kind of destination:
 * - path, regular file: O_APPEND, created 0640; the size of an existing
 *   file counts toward max_size. Regular files never return EAGAIN, so
 *   such a sink is drained by every flush (a write can still take as long
 *   as the filesystem takes; nothing here can bound that).
 * - path, FIFO or character device: opened O_NONBLOCK; a FIFO without a
 *   reader fails with -ENXIO. Never rotated.
 * - "-", stdout: a regular file is dup()ed. A socket is dup()ed and
 *   written with MSG_DONTWAIT, so its flags stay as they are. A pipe,
 *   FIFO or terminal is reopened through /proc/self/fd/1: that gives a
 *   file description of our own, so O_NONBLOCK does not leak into stderr
 *   or into the processes that share the original one. Only if that fails
 *   (no /proc) is O_NONBLOCK set on the shared description, and the old
 *   flags are put back by sink__close().
 *
 * Writing to a pipe whose reader has gone raises SIGPIPE: the daemon must
 * ignore SIGPIPE (the write then fails with EPIPE and is counted).
 *
 * Not thread-safe: one thread owns a sink.
 */
#ifndef SLUICE_SINK_H
#define SLUICE_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SINK_DEFAULT_BUFFER	(8u << 20)

struct sink;

struct sink_opts {
	const char *path;	/* "-": stdout */
	uint64_t max_size;	/* bytes per file; 0: no rotation. Regular files only */
	unsigned int keep;	/* rotated files kept: path.1 (newest) .. path.keep */
	size_t buffer_bytes;	/* queue bound; 0: SINK_DEFAULT_BUFFER */
};

struct sink_stats {
	uint64_t written;	  /* lines written whole */
	uint64_t dropped_full;	  /* queue full: the consumer is too slow */
	uint64_t dropped_error;	  /* a write error discarded them */
	uint64_t dropped_invalid; /* held a newline, or longer than the queue */
	uint64_t rotations;
	uint64_t rotate_errors;	  /* rotation failed; writing went on in the old file */
	uint64_t queued;	  /* lines in the queue (a partly written one included) */
	uint64_t queued_bytes;
	int last_error;		  /* -errno of the latest write or rotation error, or 0 */
};

/* Opens O->path (see above). -errno. */
int sink__open(const struct sink_opts *o, struct sink **out);
/* Queues LINE (no newline in it; the sink adds one) and writes what the fd
 * takes without waiting. 0: accepted. -ENOBUFS: queue full, dropped.
 * -EINVAL (newline in LINE) / -EMSGSIZE (cannot ever fit): dropped.
 * Another -errno: a write error discarded the queue, this line included.
 * Every drop is counted. */
int sink__write(struct sink *s, const char *line, size_t len);
/* Writes what the fd takes now. 0, or the -errno of a write error (the
 * queue was discarded and counted). */
int sink__flush(struct sink *s);
/* Drains the queue, waiting for the fd at most TIMEOUT_MS (-1: no limit).
 * 0 when empty, -ETIMEDOUT with lines still queued, or a write -errno. */
int sink__flush_blocking(struct sink *s, int timeout_ms);
/* The fd to wait for POLLOUT on while sink__pending(); -1 for a regular
 * file (it never waits, and epoll refuses regular files). It changes on
 * sink__reopen(): fetch it again. */
int sink__fd(const struct sink *s);
bool sink__pending(const struct sink *s);
void sink__stats(const struct sink *s, struct sink_stats *out);
/* Opens the path again (SIGHUP after an external logrotate moved it away);
 * the queue is kept and goes to the new file. A no-op for stdout. On error
 * the old fd stays in use. If the old fd stalled in the middle of a line
 * (pipe/FIFO), the rest of that line is dropped as dropped_error. */
int sink__reopen(struct sink *s);
/* Writes what it can without waiting and closes; what is left is lost, so
 * call sink__flush_blocking() first. */
void sink__close(struct sink *s);

#endif
