/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Follow a log file like `tail -F`, from an event loop: no threads, no
 * blocking. The daemon calls tail__poll() from a timer (~250 ms) and/or on
 * inotify events; each call reads what is new and hands complete lines to
 * the callback. A last line without its newline waits for the rest.
 *
 * - Rotation (the path names another inode): the old file is read to its
 *   end first and then again on each poll until it has stopped growing for
 *   rotate_grace_ms (a writer that has not reopened yet still appends to
 *   it), so nothing written to it is lost; the new file is read from 0.
 *   At most TAIL_MAX_OLD rotated files are drained at once; two rotations
 *   between two polls lose the file in the middle (nothing names it any
 *   more).
 * - Truncation (size below the read position, or the first bytes changed:
 *   copytruncate): read again from 0, counted.
 * - Missing file: waited for; read from 0 when it appears. A file deleted
 *   while followed is read until it has been idle for rotate_grace_ms.
 * - Lines longer than max_line are dropped whole and counted.
 * - A rotated file's last line without a newline is delivered when the file
 *   is let go: nothing will complete it.
 *
 * Restarts: tail__save_state() writes {dev, inode, offset, hash of the
 * first 64 bytes} of each file being read (temporary file + rename);
 * tail__load_state() before the first poll resumes there. The offset is the
 * end of the last line delivered, so saving after each poll's lines were
 * handled means no line is read twice and none is lost. A file rotated
 * while the daemon was down is looked for by inode among the files of the
 * same directory whose names start with the followed name ("0.log.2025...",
 * "access.log.1") and finished first. The head hash tells a file that
 * reuses the saved inode number (deleted and recreated meanwhile) from the
 * saved one: it is then read from 0.
 *
 * Not thread-safe: one thread owns a tail.
 */
#ifndef SLUICE_TAIL_H
#define SLUICE_TAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TAIL_DEFAULT_MAX_LINE	(1u << 20)
#define TAIL_DEFAULT_POLL_BYTES	(8u << 20)
#define TAIL_DEFAULT_GRACE_MS	2000
#define TAIL_MAX_OLD		4
#define TAIL_HEAD		64	/* bytes hashed to recognize a file */

struct tail;

struct tail_opts {
	const char *path;
	size_t max_line;		/* 0: TAIL_DEFAULT_MAX_LINE */
	size_t max_bytes_per_poll;	/* 0: TAIL_DEFAULT_POLL_BYTES */
	int rotate_grace_ms;		/* < 0: TAIL_DEFAULT_GRACE_MS; 0: let go at once */
	bool from_end;			/* without a saved state, skip what the file holds at
					 * the first poll (and the line being written) */
};

/* LINE has no newline and is NUL-terminated (line[len] == 0); valid during
 * the call. A negative return stops the poll, which returns it; that line
 * is not consumed and comes again at the next poll. */
typedef int (*tail_line_fn)(void *ctx, const char *line, size_t len);

struct tail_stats {
	uint64_t lines;			/* delivered */
	uint64_t bytes;			/* read */
	uint64_t rotations;		/* another file took the path (also found at load) */
	uint64_t truncations;		/* read again from 0 */
	uint64_t lines_too_long;	/* dropped */
	uint64_t replaced;		/* saved state named a file whose head changed */
	uint64_t files_lost;		/* saved state named a file found nowhere */
	uint64_t errors;		/* open/read/stat failures */
	int last_error;			/* -errno of the latest failure, or 0 */
};

/* Nothing is opened before the first tail__poll(); a missing file is fine. */
int tail__open(const struct tail_opts *o, tail_line_fn cb, void *ctx, struct tail **out);
/* Resume from STATE_PATH; call before the first poll. 0: resumed;
 * -ENOENT: no state file; -ESTALE: the state is of another path; -EBADMSG:
 * unreadable; -EBUSY: already polled. On any error the tail starts as if
 * there were no state. */
int tail__load_state(struct tail *t, const char *state_path);
/* Write the position to STATE_PATH (STATE_PATH.tmp, fsync, rename). -errno. */
int tail__save_state(const struct tail *t, const char *state_path);
/* Read what is new. The number of lines delivered, or -errno (the
 * callback's, or of a read; counted and retried at the next poll). */
int tail__poll(struct tail *t);
/* The last poll stopped at max_bytes_per_poll with more to read: poll again
 * soon rather than at the next tick. */
bool tail__backlog(const struct tail *t);
void tail__stats(const struct tail *t, struct tail_stats *out);
/* The callback's context moved (its owner was reallocated). */
void tail__set_ctx(struct tail *t, void *ctx);
void tail__close(struct tail *t);

#endif
