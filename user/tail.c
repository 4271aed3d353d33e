// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Follow a log file across rotation, truncation and restarts. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include "tail.h"

#define TAIL_CHUNK	65536
#define TAIL_STATE_MAGIC "sluice-tail-state 1"

struct tail_file {
	int fd;			/* -1: none */
	dev_t dev;
	ino_t ino;
	uint64_t committed;	/* end of the last line delivered or dropped */
	uint64_t rpos;		/* next byte to read */
	char *buf;		/* the line being read (no newline in it) */
	size_t len, cap;
	bool discard;		/* inside a line too long (or begun before from_end) */
	uint8_t head[TAIL_HEAD];
	size_t head_len;
	uint64_t size;		/* at the last look */
	uint64_t active_ns;	/* when it last grew (monotonic) */
};

struct tail {
	char *path;
	size_t max_line, poll_bytes;
	uint64_t grace_ns;
	bool from_end;
	tail_line_fn cb;
	void *ctx;

	struct tail_file cur;
	struct tail_file old[TAIL_MAX_OLD];	/* rotated away, oldest first */
	int nold;
	bool started;		/* polled, or resumed: from_end no longer applies */
	bool backlog;
	size_t budget;		/* bytes this poll may still read */
	int lines;		/* delivered by this poll */
	struct tail_stats st;
};

static uint64_t tail_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t tail_hash(const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;	/* FNV-1a */

	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static int tail_err(struct tail *t, int err)
{
	t->st.errors++;
	t->st.last_error = err;
	return err;
}

static void tail_file_init(struct tail_file *f)
{
	memset(f, 0, sizeof(*f));
	f->fd = -1;
}

static void tail_file_close(struct tail_file *f)
{
	if (f->fd >= 0)
		close(f->fd);
	free(f->buf);
	tail_file_init(f);
}

/* Read the first TAIL_HEAD bytes into H. Their count, or -errno. */
static ssize_t tail_read_head(int fd, uint8_t h[TAIL_HEAD])
{
	ssize_t n;

	do
		n = pread(fd, h, TAIL_HEAD, 0);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

/* Open PATH and describe it in F (position 0). */
static int tail_file_open(const char *path, struct tail_file *f)
{
	struct stat st;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	/* Offsets, sizes and inodes mean nothing on a pipe or device. */
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	n = tail_read_head(fd, f->head);
	if (n < 0) {
		close(fd);
		return (int)n;
	}
	f->fd = fd;
	f->dev = st.st_dev;
	f->ino = st.st_ino;
	f->head_len = (size_t)n;
	f->size = (uint64_t)st.st_size;
	f->active_ns = tail_now();
	return 0;
}

static void tail_restart(struct tail *t, struct tail_file *f)
{
	t->st.truncations++;
	f->committed = f->rpos = 0;
	f->len = 0;
	f->discard = false;
}

/* Deliver the lines of F's new bytes; stop at EOF or the poll's budget. */
static int tail_read(struct tail *t, struct tail_file *f)
{
	for (;;) {
		size_t total, start, from;
		ssize_t n;
		char *nl;

		if (t->budget == 0) {
			t->backlog = true;
			return 0;
		}
		if (f->cap < f->len + TAIL_CHUNK + 1) {
			size_t cap = f->len + TAIL_CHUNK + 1;
			char *b = realloc(f->buf, cap);

			if (!b)
				return -ENOMEM;
			f->buf = b;
			f->cap = cap;
		}
		do
			n = pread(f->fd, f->buf + f->len,
				  t->budget < TAIL_CHUNK ? t->budget : TAIL_CHUNK, (off_t)f->rpos);
		while (n < 0 && errno == EINTR);
		if (n < 0)
			return tail_err(t, -errno);
		if (n == 0)
			return 0;
		f->rpos += (uint64_t)n;
		f->active_ns = tail_now();
		t->st.bytes += (uint64_t)n;
		t->budget -= (size_t)n;

		/* The pending part holds no newline: look only at the new bytes. */
		from = f->len;
		total = f->len + (size_t)n;
		start = 0;
		while ((nl = memchr(f->buf + from, '\n', total - from))) {
			size_t e = (size_t)(nl - f->buf);

			if (f->discard) {
				f->discard = false;
			} else {
				int err;

				*nl = '\0';
				err = t->cb(t->ctx, f->buf + start, e - start);
				if (err < 0) {
					/* This line again at the next poll. */
					f->rpos = f->committed;
					f->len = 0;
					return err;
				}
				t->st.lines++;
				t->lines++;
			}
			f->committed = f->rpos - (total - e - 1);
			start = from = e + 1;
		}
		if (f->discard) {
			f->len = 0;
		} else {
			f->len = total - start;
			memmove(f->buf, f->buf + start, f->len);
			if (f->len > t->max_line) {
				t->st.lines_too_long++;
				f->discard = true;
				f->len = 0;
			}
		}
	}
}

/* Let F go: its unfinished last line is delivered, nothing will end it. */
static int tail_finish(struct tail *t, struct tail_file *f)
{
	if (f->len && !f->discard) {
		int err;

		f->buf[f->len] = '\0';
		err = t->cb(t->ctx, f->buf, f->len);
		if (err < 0)
			return err;
		t->st.lines++;
		t->lines++;
		f->committed = f->rpos;
	}
	tail_file_close(f);
	return 0;
}

static int tail_push_old(struct tail *t)
{
	int err;

	if (t->nold == TAIL_MAX_OLD) {
		/* No room: the oldest is read to its end and let go now. */
		size_t budget = t->budget;

		t->budget = SIZE_MAX;
		err = tail_read(t, &t->old[0]);
		t->budget = budget;
		if (err < 0)
			return err;
		err = tail_finish(t, &t->old[0]);
		if (err < 0)
			return err;
		memmove(&t->old[0], &t->old[1], sizeof(t->old[0]) * (TAIL_MAX_OLD - 1));
		t->nold--;
	}
	t->old[t->nold++] = t->cur;
	tail_file_init(&t->cur);
	return 0;
}

/* Has the path moved to another file? Opens a new current file. Failures
 * are counted: the files already open are still read. */
static void tail_check_path(struct tail *t)
{
	struct tail_file nf;
	struct stat st;
	int err;

	if (stat(t->path, &st) < 0) {
		if (errno != ENOENT && errno != ENOTDIR)
			tail_err(t, -errno);
		return;
	}
	if (t->cur.fd >= 0 && st.st_dev == t->cur.dev && st.st_ino == t->cur.ino)
		return;
	tail_file_init(&nf);
	err = tail_file_open(t->path, &nf);
	if (err) {
		/* Gone again between stat() and open(): next poll. */
		if (err != -ENOENT)
			tail_err(t, err);
		return;
	}
	if (t->cur.fd >= 0) {
		if (nf.dev == t->cur.dev && nf.ino == t->cur.ino) {
			tail_file_close(&nf);	/* renamed back and forth */
			return;
		}
		err = tail_push_old(t);
		if (err < 0) {
			/* Next poll tries again. */
			tail_err(t, err);
			tail_file_close(&nf);
			return;
		}
		t->st.rotations++;
	} else if (!t->started && t->from_end && nf.size) {
		uint8_t last;

		/* Skip what is there, and the line being written. */
		nf.committed = nf.rpos = nf.size;
		nf.discard = pread(nf.fd, &last, 1, (off_t)nf.size - 1) != 1 || last != '\n';
	}
	t->cur = nf;
}

/* Same inode, but shorter than what was read, or other first bytes: it
 * was truncated (and maybe written again past the old position). */
static int tail_check_truncation(struct tail *t, struct tail_file *f)
{
	uint8_t h[TAIL_HEAD];
	struct stat st;
	ssize_t n;
	size_t cmp;

	if (fstat(f->fd, &st) < 0)
		return tail_err(t, -errno);
	if ((uint64_t)st.st_size == f->size && f->head_len == TAIL_HEAD)
		return 0;
	f->size = (uint64_t)st.st_size;
	if (f->size < f->rpos) {
		tail_restart(t, f);
		f->head_len = 0;
	}
	n = tail_read_head(f->fd, h);
	if (n < 0)
		return tail_err(t, (int)n);
	cmp = (size_t)n < f->head_len ? (size_t)n : f->head_len;
	if (memcmp(h, f->head, cmp))
		tail_restart(t, f);
	memcpy(f->head, h, (size_t)n);
	f->head_len = (size_t)n;
	return 0;
}

static bool tail_idle(const struct tail *t, const struct tail_file *f, uint64_t now)
{
	return now - f->active_ns >= t->grace_ns;
}

int tail__poll(struct tail *t)
{
	int err;

	t->backlog = false;
	t->budget = t->poll_bytes;
	t->lines = 0;

	tail_check_path(t);
	t->started = true;

	/* Rotated files before the current one: their lines are older. */
	for (int i = 0; i < t->nold;) {
		struct tail_file *f = &t->old[i];

		err = tail_read(t, f);
		if (err < 0)
			return err;
		if (t->backlog)
			return t->lines;
		if (!tail_idle(t, f, tail_now())) {
			i++;
			continue;
		}
		err = tail_finish(t, f);
		if (err < 0)
			return err;
		memmove(&t->old[i], &t->old[i + 1], sizeof(t->old[0]) * (size_t)(t->nold - i - 1));
		tail_file_init(&t->old[--t->nold]);
	}

	if (t->cur.fd < 0)
		return t->lines;
	err = tail_check_truncation(t, &t->cur);
	if (err < 0)
		return err;
	err = tail_read(t, &t->cur);
	if (err < 0)
		return err;

	/* Deleted and nobody took the path: let it go once idle. */
	if (!t->backlog) {
		struct stat st;

		if (fstat(t->cur.fd, &st) == 0 && st.st_nlink == 0 &&
		    tail_idle(t, &t->cur, tail_now())) {
			err = tail_finish(t, &t->cur);
			if (err < 0)
				return err;
		}
	}
	return t->lines;
}

/* ---- saved state ----------------------------------------------------- */

struct tail_entry {
	uint64_t dev, ino, off, hash;
	size_t head_len;
};

static int tail_write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int tail_fmt_entry(char *buf, size_t len, const struct tail_file *f)
{
	return snprintf(buf, len, "file %" PRIu64 " %" PRIu64 " %" PRIu64 " %zu %016" PRIx64 "\n",
			(uint64_t)f->dev, (uint64_t)f->ino, f->committed, f->head_len,
			tail_hash(f->head, f->head_len));
}

int tail__save_state(const struct tail *t, const char *state_path)
{
	char tmp[PATH_MAX], buf[8192];
	size_t n;
	int fd, err;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", state_path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	n = (size_t)snprintf(buf, sizeof(buf), "%s\npath %s\n", TAIL_STATE_MAGIC, t->path);
	for (int i = 0; i < t->nold && n < sizeof(buf); i++)
		n += (size_t)tail_fmt_entry(buf + n, sizeof(buf) - n, &t->old[i]);
	if (t->cur.fd >= 0 && n < sizeof(buf))
		n += (size_t)tail_fmt_entry(buf + n, sizeof(buf) - n, &t->cur);
	if (n >= sizeof(buf))
		return -ENAMETOOLONG;

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	err = tail_write_all(fd, buf, n);
	/* Without the fsync a crash could leave the rename done and the
	 * contents not: an empty state, and the log read again from 0. */
	if (!err && fsync(fd) < 0)
		err = -errno;
	if (close(fd) < 0 && !err)
		err = -errno;
	if (!err && rename(tmp, state_path) < 0)
		err = -errno;
	if (err)
		unlink(tmp);
	return err;
}

static int tail_parse_state(const char *path, const char *want_path, struct tail_entry *e,
			    int *ne)
{
	char buf[8192], *line, *save = NULL;
	ssize_t n;
	int fd, lineno = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return -errno;
	if ((size_t)n == sizeof(buf) - 1)
		return -EBADMSG;
	buf[n] = '\0';
	*ne = 0;
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		struct tail_entry *x = &e[*ne];
		int used = 0;

		lineno++;
		if (lineno == 1) {
			if (strcmp(line, TAIL_STATE_MAGIC))
				return -EBADMSG;
		} else if (lineno == 2) {
			if (strncmp(line, "path ", 5))
				return -EBADMSG;
			if (strcmp(line + 5, want_path))
				return -ESTALE;
		} else {
			if (*ne == TAIL_MAX_OLD + 1)
				return -EBADMSG;
			if (sscanf(line, "file %" SCNu64 " %" SCNu64 " %" SCNu64 " %zu %" SCNx64 "%n",
				   &x->dev, &x->ino, &x->off, &x->head_len, &x->hash, &used) != 5 ||
			    line[used] || x->head_len > TAIL_HEAD)
				return -EBADMSG;
			(*ne)++;
		}
	}
	return lineno >= 2 ? 0 : -EBADMSG;
}

/* Open the file E names: the path itself, or a sibling whose name starts
 * with the path's (where logrotate and kubelet put rotated files). 0 and F
 * filled, -ENOENT (nowhere), -ESTALE (that inode holds other data now). */
static int tail_find(struct tail *t, const struct tail_entry *e, struct tail_file *f)
{
	char real[PATH_MAX], dirbuf[PATH_MAX], basebuf[PATH_MAX], cand[PATH_MAX];
	const char *dir, *base;
	struct dirent *de;
	struct stat st;
	size_t blen;
	bool found = false;
	DIR *d;

	if (stat(t->path, &st) == 0 && st.st_dev == e->dev && st.st_ino == e->ino) {
		snprintf(cand, sizeof(cand), "%s", t->path);
		found = true;
	} else {
		/* Through a symlink (/var/log/containers -> /var/log/pods), the
		 * rotated files sit beside the target. */
		if (!realpath(t->path, real))
			snprintf(real, sizeof(real), "%s", t->path);
		snprintf(dirbuf, sizeof(dirbuf), "%s", real);
		snprintf(basebuf, sizeof(basebuf), "%s", real);
		dir = dirname(dirbuf);
		base = basename(basebuf);
		blen = strlen(base);
		d = opendir(dir);
		if (!d)
			return -ENOENT;
		while (!found && (de = readdir(d))) {
			if (strncmp(de->d_name, base, blen) || !de->d_name[blen])
				continue;
			if (fstatat(dirfd(d), de->d_name, &st, 0) < 0 || st.st_dev != e->dev ||
			    st.st_ino != e->ino)
				continue;
			if ((size_t)snprintf(cand, sizeof(cand), "%s/%s", dir, de->d_name) <
			    sizeof(cand))
				found = true;
		}
		closedir(d);
	}
	tail_file_init(f);
	if (!found || tail_file_open(cand, f))
		return -ENOENT;
	if (f->dev != e->dev || f->ino != e->ino || f->head_len < e->head_len ||
	    tail_hash(f->head, e->head_len) != e->hash) {
		tail_file_close(f);
		return -ESTALE;
	}
	if (f->size < e->off) {
		t->st.truncations++;
	} else {
		f->committed = f->rpos = e->off;
	}
	return 0;
}

int tail__load_state(struct tail *t, const char *state_path)
{
	struct tail_entry e[TAIL_MAX_OLD + 1];
	struct tail_file found[TAIL_MAX_OLD + 1];
	int ne = 0, nfound = 0, err;
	struct stat st;
	bool path_ok;

	if (t->started)
		return -EBUSY;
	err = tail_parse_state(state_path, t->path, e, &ne);
	if (err)
		return err;
	for (int i = 0; i < ne; i++) {
		err = tail_find(t, &e[i], &found[nfound]);
		if (err == -ESTALE)
			t->st.replaced++;
		else if (err)
			t->st.files_lost++;
		else
			nfound++;
	}
	path_ok = stat(t->path, &st) == 0;
	for (int i = 0; i < nfound; i++) {
		bool is_path = path_ok && st.st_dev == found[i].dev && st.st_ino == found[i].ino;

		if (is_path && i == nfound - 1) {
			t->cur = found[i];
		} else {
			/* The one being written at the save was rotated away
			 * meanwhile. */
			if (i == nfound - 1)
				t->st.rotations++;
			t->old[t->nold++] = found[i];
		}
	}
	/* Whatever the path holds now, it is new since the save: from 0. */
	t->started = true;
	return 0;
}

/* ---- life cycle ------------------------------------------------------ */

void tail__set_ctx(struct tail *t, void *ctx)
{
	t->ctx = ctx;
}

int tail__open(const struct tail_opts *o, tail_line_fn cb, void *ctx, struct tail **out)
{
	struct tail *t;

	if (!o->path || !*o->path || !cb)
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->path = strdup(o->path);
	if (!t->path) {
		free(t);
		return -ENOMEM;
	}
	t->max_line = o->max_line ? o->max_line : TAIL_DEFAULT_MAX_LINE;
	t->poll_bytes = o->max_bytes_per_poll ? o->max_bytes_per_poll : TAIL_DEFAULT_POLL_BYTES;
	t->grace_ns = (uint64_t)(o->rotate_grace_ms < 0 ? TAIL_DEFAULT_GRACE_MS :
				 o->rotate_grace_ms) * 1000000ull;
	t->from_end = o->from_end;
	t->cb = cb;
	t->ctx = ctx;
	tail_file_init(&t->cur);
	for (int i = 0; i < TAIL_MAX_OLD; i++)
		tail_file_init(&t->old[i]);
	*out = t;
	return 0;
}

bool tail__backlog(const struct tail *t)
{
	return t->backlog;
}

void tail__stats(const struct tail *t, struct tail_stats *out)
{
	*out = t->st;
}

void tail__close(struct tail *t)
{
	if (!t)
		return;
	tail_file_close(&t->cur);
	for (int i = 0; i < t->nold; i++)
		tail_file_close(&t->old[i]);
	free(t->path);
	free(t);
}
