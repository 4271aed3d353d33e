// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Event sink: bounded queue of whole lines, non-blocking writes, rotation. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include "sink.h"

enum sink_kind {
	SINK_REG,	/* regular file: never EAGAIN, may rotate */
	SINK_SOCK,	/* socket: sendmsg(MSG_DONTWAIT) */
	SINK_OTHER,	/* pipe, FIFO, terminal, device: O_NONBLOCK */
};

struct sink {
	char *path;		/* NULL: stdout */
	int fd;
	enum sink_kind kind;
	bool restore_flags;	/* O_NONBLOCK was set on a shared description */
	int saved_flags;
	uint64_t max_size;
	unsigned int keep;

	/* Ring of whole lines, each with its '\n': the queue always ends at a
	 * line boundary, and its first line may be partly written already. */
	char *buf;
	size_t cap, head, len;
	uint64_t lines;

	bool partial;		/* the fd holds the start of the first queued line */
	bool need_nl;		/* the file ends mid-line (an earlier failed write) */
	uint64_t cur_size;	/* bytes in the current file, for rotation */
	struct sink_stats st;
};

/* ---- ring ----------------------------------------------------------- */

/* The first N queued bytes as at most two segments. */
static int sink_segs(const struct sink *s, size_t n, struct iovec *iov)
{
	size_t first = s->cap - s->head;

	if (n == 0)
		return 0;
	iov[0].iov_base = s->buf + s->head;
	if (n <= first) {
		iov[0].iov_len = n;
		return 1;
	}
	iov[0].iov_len = first;
	iov[1].iov_base = s->buf;
	iov[1].iov_len = n - first;
	return 2;
}

/* Offset of the first '\n' in the queue; the queue ends with one. */
static size_t sink_first_nl(const struct sink *s)
{
	struct iovec iov[2];
	int n = sink_segs(s, s->len, iov);
	size_t off = 0;

	for (int i = 0; i < n; i++) {
		const char *p = memchr(iov[i].iov_base, '\n', iov[i].iov_len);

		if (p)
			return off + (size_t)(p - (const char *)iov[i].iov_base);
		off += iov[i].iov_len;
	}
	return s->len - 1;	/* not reached */
}

/* Offset of the last '\n' in the first N queued bytes, or -1. */
static ssize_t sink_last_nl(const struct sink *s, size_t n)
{
	struct iovec iov[2];
	int nseg = sink_segs(s, n, iov);

	for (int i = nseg - 1; i >= 0; i--) {
		const char *p = memrchr(iov[i].iov_base, '\n', iov[i].iov_len);

		if (p)
			return (ssize_t)((i ? iov[0].iov_len : 0) +
					 (size_t)(p - (const char *)iov[i].iov_base));
	}
	return -1;
}

static void sink_put(struct sink *s, const char *p, size_t n)
{
	size_t tail = (s->head + s->len) % s->cap;
	size_t room = s->cap - tail;

	if (n <= room) {
		memcpy(s->buf + tail, p, n);
	} else {
		memcpy(s->buf + tail, p, room);
		memcpy(s->buf, p + room, n - room);
	}
	s->len += n;
}

/* Drops the first N queued bytes, which the fd took; counts the lines they
 * completed. */
static void sink_consume(struct sink *s, size_t n)
{
	struct iovec iov[2];
	int nseg = sink_segs(s, n, iov);
	uint64_t done = 0;

	for (int i = 0; i < nseg; i++) {
		const char *p = iov[i].iov_base, *end = p + iov[i].iov_len;

		while ((p = memchr(p, '\n', (size_t)(end - p)))) {
			done++;
			p++;
		}
	}
	s->partial = s->buf[(s->head + n - 1) % s->cap] != '\n';
	s->head = (s->head + n) % s->cap;
	s->len -= n;
	/* Drained: start over at the front, so that a sink that keeps up
	 * touches a few pages of the buffer, not all of it in turn. */
	if (!s->len)
		s->head = 0;
	s->lines -= done;
	s->st.written += done;
}

static void sink_discard(struct sink *s, int err)
{
	s->st.dropped_error += s->lines;
	s->st.last_error = err;
	s->lines = 0;
	s->len = 0;
	s->head = 0;
	/* Whatever the fd took of the first line stays there: end it, so the
	 * next line starts on a line of its own. */
	if (s->partial)
		s->need_nl = true;
	s->partial = false;
}

/* ---- fds ------------------------------------------------------------ */

static bool sink_ends_mid_line(const char *path, off_t size)
{
	char c = '\n';
	int fd;

	if (size <= 0)
		return false;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return false;
	if (pread(fd, &c, 1, size - 1) != 1)
		c = '\n';
	close(fd);
	return c != '\n';
}

/* Opens PATH and classifies it; on success sets *FD, *KIND, *SIZE, *MID. */
static int sink_open_path(const char *path, int *fd, enum sink_kind *kind,
			  uint64_t *size, bool *mid)
{
	struct stat st;
	int f, err;

	f = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0640);
	if (f < 0)
		return -errno;
	if (fstat(f, &st)) {
		err = -errno;
		close(f);
		return err;
	}
	*fd = f;
	*size = 0;
	*mid = false;
	if (S_ISREG(st.st_mode)) {
		*kind = SINK_REG;
		*size = (uint64_t)st.st_size;
		*mid = sink_ends_mid_line(path, st.st_size);
	} else {
		*kind = S_ISSOCK(st.st_mode) ? SINK_SOCK : SINK_OTHER;
	}
	return 0;
}

static int sink_open_stdout(struct sink *s)
{
	struct stat st;
	int fl;

	if (fstat(STDOUT_FILENO, &st))
		return -errno;
	if (S_ISREG(st.st_mode) || S_ISSOCK(st.st_mode)) {
		s->kind = S_ISREG(st.st_mode) ? SINK_REG : SINK_SOCK;
		s->fd = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
		return s->fd < 0 ? -errno : 0;
	}
	s->kind = SINK_OTHER;
	/* A description of our own: O_NONBLOCK on the inherited one would
	 * also hit stderr (usually the same one) and whoever else holds it. */
	s->fd = open("/proc/self/fd/1", O_WRONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (s->fd >= 0)
		return 0;
	s->fd = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
	if (s->fd < 0)
		return -errno;
	fl = fcntl(s->fd, F_GETFL);
	if (fl < 0 || fcntl(s->fd, F_SETFL, fl | O_NONBLOCK))
		return -errno;
	s->saved_flags = fl;
	s->restore_flags = !(fl & O_NONBLOCK);
	return 0;
}

/* ---- rotation ------------------------------------------------------- */

static int sink_rename(const char *from, const char *to)
{
	if (rename(from, to) && errno != ENOENT)
		return -errno;
	return 0;
}

/* path.(keep-1) -> path.keep (replacing, so deleting, the oldest) ...
 * path -> path.1, then a new path. */
static int sink_rotate(struct sink *s)
{
	size_t n = strlen(s->path) + 16;
	char *from = malloc(n), *to = malloc(n);
	enum sink_kind kind;
	uint64_t size;
	bool mid;
	int fd, err = -ENOMEM;

	if (!from || !to)
		goto out;
	if (s->keep == 0) {
		err = unlink(s->path) && errno != ENOENT ? -errno : 0;
	} else {
		err = 0;
		for (unsigned int i = s->keep - 1; i >= 1 && !err; i--) {
			snprintf(from, n, "%s.%u", s->path, i);
			snprintf(to, n, "%s.%u", s->path, i + 1);
			err = sink_rename(from, to);
		}
		snprintf(to, n, "%s.1", s->path);
		if (!err)
			err = sink_rename(s->path, to);
	}
	if (err)
		goto out;
	/* If this fails the old fd, now path.1, goes on taking lines; the next
	 * rotation moves it along and creates path. */
	err = sink_open_path(s->path, &fd, &kind, &size, &mid);
	if (err)
		goto out;
	close(s->fd);
	s->fd = fd;
	s->kind = kind;
	s->cur_size = size;
	s->need_nl = mid;
	s->st.rotations++;
out:
	free(from);
	free(to);
	return err;
}

/* How much of the queue to write next to a rotating file, rotating first
 * if the next line does not fit: the most whole lines that fit, but at
 * least the first line (a fresh file takes an oversized line whole, and a
 * started line is finished where it started). */
static size_t sink_plan(struct sink *s)
{
	size_t first = sink_first_nl(s) + 1;
	uint64_t nl = s->need_nl, budget;
	ssize_t last;
	struct stat st;

	if (!s->partial && s->cur_size > 0 && s->cur_size + nl + first > s->max_size) {
		/* Our count can be stale (copytruncate, other writers). */
		if (!fstat(s->fd, &st))
			s->cur_size = (uint64_t)st.st_size;
		if (s->cur_size > 0 && s->cur_size + nl + first > s->max_size) {
			int err = sink_rotate(s);

			if (err) {
				s->st.rotate_errors++;
				s->st.last_error = err;
				/* Try again after another max_size, not per line. */
				s->cur_size = 0;
			}
			nl = s->need_nl;
		}
	}
	budget = s->max_size > s->cur_size + nl ? s->max_size - s->cur_size - nl : 0;
	last = sink_last_nl(s, budget < s->len ? (size_t)budget : s->len);
	if (last < 0 || (size_t)last + 1 < first)
		return first;
	return (size_t)last + 1;
}

/* ---- writing -------------------------------------------------------- */

static ssize_t sink_emit(struct sink *s, struct iovec *iov, int n)
{
	if (s->kind == SINK_SOCK) {
		struct msghdr m = { .msg_iov = iov, .msg_iovlen = (size_t)n };

		return sendmsg(s->fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
	}
	return writev(s->fd, iov, n);
}

int sink__flush(struct sink *s)
{
	static char nl = '\n';

	while (s->len) {
		struct iovec iov[3];
		size_t chunk = s->len;
		int n = 0;
		ssize_t w;

		if (s->kind == SINK_REG && s->max_size)
			chunk = sink_plan(s);
		if (s->need_nl) {
			iov[0].iov_base = &nl;
			iov[0].iov_len = 1;
			n = 1;
		}
		n += sink_segs(s, chunk, iov + n);
		w = sink_emit(s, iov, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			w = -errno;
			sink_discard(s, (int)w);
			return (int)w;
		}
		if (w == 0)
			return 0;	/* nothing taken and no error: try later */
		s->cur_size += (uint64_t)w;
		if (s->need_nl) {
			s->need_nl = false;
			w--;
		}
		if (w)
			sink_consume(s, (size_t)w);
	}
	return 0;
}

int sink__write(struct sink *s, const char *line, size_t len)
{
	if (memchr(line, '\n', len)) {
		s->st.dropped_invalid++;
		return -EINVAL;
	}
	if (len >= s->cap) {
		s->st.dropped_invalid++;
		return -EMSGSIZE;
	}
	if (s->cap - s->len < len + 1) {
		sink__flush(s);
		if (s->cap - s->len < len + 1) {
			s->st.dropped_full++;
			return -ENOBUFS;
		}
	}
	sink_put(s, line, len);
	sink_put(s, "\n", 1);
	s->lines++;
	return sink__flush(s);
}

static int64_t sink_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int sink__flush_blocking(struct sink *s, int timeout_ms)
{
	int64_t deadline = sink_now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);

	for (;;) {
		struct pollfd p = { .fd = s->fd, .events = POLLOUT };
		int err = sink__flush(s), ms = -1, r;

		if (err || !s->len)
			return err;
		if (timeout_ms >= 0) {
			int64_t left = deadline - sink_now_ms();

			if (left <= 0)
				return -ETIMEDOUT;
			ms = left > 60000 ? 60000 : (int)left;
		}
		/* POLLERR/POLLHUP wake us too; the next write reports them. */
		r = poll(&p, 1, ms);
		if (r < 0 && errno != EINTR)
			return -errno;
	}
}

int sink__fd(const struct sink *s)
{
	return s->kind == SINK_REG ? -1 : s->fd;
}

bool sink__pending(const struct sink *s)
{
	return s->len > 0;
}

void sink__stats(const struct sink *s, struct sink_stats *out)
{
	*out = s->st;
	out->queued = s->lines;
	out->queued_bytes = s->len;
}

int sink__reopen(struct sink *s)
{
	enum sink_kind kind;
	uint64_t size;
	bool mid;
	int fd, err;

	if (!s->path)
		return 0;
	sink__flush(s);
	err = sink_open_path(s->path, &fd, &kind, &size, &mid);
	if (err)
		return err;
	if (s->partial) {
		/* The start of that line is in the old file; its end cannot
		 * follow it anywhere useful. */
		size_t end = sink_first_nl(s) + 1;

		s->head = (s->head + end) % s->cap;
		s->len -= end;
		s->lines--;
		s->st.dropped_error++;
		s->partial = false;
	}
	close(s->fd);
	s->fd = fd;
	s->kind = kind;
	s->cur_size = size;
	s->need_nl = mid;
	return sink__flush(s);
}

int sink__open(const struct sink_opts *o, struct sink **out)
{
	struct sink *s;
	int err;

	if (!o || !o->path || !*o->path)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->fd = -1;
	s->max_size = o->max_size;
	s->keep = o->keep;
	s->cap = o->buffer_bytes ? o->buffer_bytes : SINK_DEFAULT_BUFFER;
	s->buf = malloc(s->cap);
	err = -ENOMEM;
	if (!s->buf)
		goto fail;
	if (strcmp(o->path, "-") == 0) {
		err = sink_open_stdout(s);
	} else {
		s->path = strdup(o->path);
		err = s->path ? sink_open_path(s->path, &s->fd, &s->kind, &s->cur_size,
					       &s->need_nl) : -ENOMEM;
	}
	if (err)
		goto fail;
	*out = s;
	return 0;
fail:
	sink__close(s);
	return err;
}

void sink__close(struct sink *s)
{
	if (!s)
		return;
	if (s->fd >= 0) {
		sink__flush(s);
		if (s->restore_flags)
			fcntl(s->fd, F_SETFL, s->saved_flags);
		close(s->fd);
	}
	free(s->buf);
	free(s->path);
	free(s);
}
