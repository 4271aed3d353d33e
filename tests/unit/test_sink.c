// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Event sink: rotation and its file set, a stalled pipe/socket on stdout
 * (never blocks, exact drop counts, intact lines after the drain), reopen
 * after a logrotate move, write errors. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "sink.h"

/* ---- helpers -------------------------------------------------------- */

/* Line I: its number and a pad whose length and letter vary with it. */
static size_t mkline(unsigned int i, char *buf, size_t len)
{
	unsigned int pad = (i * 37) % 90;
	int n = snprintf(buf, len, "{\"seq\":%06u,\"pad\":\"", i);

	assert_true(n > 0 && (size_t)n + pad + 3 <= len);
	memset(buf + n, 'a' + (int)(i % 26), pad);
	memcpy(buf + n + pad, "\"}", 3);
	return (size_t)n + pad + 2;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (!f)
		return NULL;
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	rewind(f);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	*len = (size_t)n;
	return buf;
}

/* Every line of BUF must be mkline(*next), *next counting up. */
static unsigned int check_lines(const char *buf, size_t len, unsigned int *next)
{
	const char *p = buf, *end = buf + len;
	unsigned int n = 0;
	char want[256];

	if (len)
		assert_int_equal(end[-1], '\n');
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t wl = mkline(*next, want, sizeof(want));

		assert_non_null(nl);
		if ((size_t)(nl - p) != wl || memcmp(p, want, wl))
			fail_msg("line %u: got '%.*s'", *next, (int)(nl - p), p);
		(*next)++;
		n++;
		p = nl + 1;
	}
	return n;
}

static size_t first_line_len(const char *path)
{
	size_t len;
	char *buf = slurp(path, &len), *nl;
	size_t n;

	assert_non_null(buf);
	nl = memchr(buf, '\n', len);
	assert_non_null(nl);
	n = (size_t)(nl - buf) + 1;
	free(buf);
	return n;
}

static void assert_accounted(struct sink *s, uint64_t attempted)
{
	struct sink_stats st;

	sink__stats(s, &st);
	assert_int_equal(st.written + st.dropped_full + st.dropped_error +
			 st.dropped_invalid + st.queued, attempted);
}

struct tmp {
	char dir[64];
	char path[128];
};

static void tmp_init(struct tmp *t)
{
	strcpy(t->dir, "/tmp/sluice-sink-XXXXXX");
	assert_non_null(mkdtemp(t->dir));
	snprintf(t->path, sizeof(t->path), "%s/events.log", t->dir);
}

static void tmp_fini(struct tmp *t)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
	assert_int_equal(system(cmd), 0);
}

static bool exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

static uint64_t fsize(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return (uint64_t)st.st_size;
}

static void write_file(const char *path, const char *data)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(data, f);
	fclose(f);
}

/* ---- rotation ------------------------------------------------------- */

static void test_rotation_file_set(void **state)
{
	struct sink_opts o = { .max_size = 1024, .keep = 3 };
	const unsigned int n = 300;
	struct sink_stats st;
	struct sink *s;
	struct tmp t;
	char line[256], name[160];
	unsigned int next = 0, total = 0;

	tmp_init(&t);
	o.path = t.path;
	assert_int_equal(sink__open(&o, &s), 0);
	assert_int_equal(sink__fd(s), -1);
	for (unsigned int i = 0; i < n; i++) {
		size_t len = mkline(i, line, sizeof(line));

		assert_int_equal(sink__write(s, line, len), 0);
		assert_false(sink__pending(s));
	}
	sink__stats(s, &st);
	assert_int_equal(st.written, n);
	assert_int_equal(st.dropped_full + st.dropped_error + st.dropped_invalid, 0);
	assert_true(st.rotations > 3);
	assert_int_equal(st.rotate_errors, 0);
	sink__close(s);

	snprintf(name, sizeof(name), "%s.4", t.path);
	assert_false(exists(name));
	/* Oldest first: path.3, path.2, path.1, path. */
	for (int k = 3; k >= 0; k--) {
		size_t len;
		char *buf;

		if (k)
			snprintf(name, sizeof(name), "%s.%d", t.path, k);
		else
			snprintf(name, sizeof(name), "%s", t.path);
		buf = slurp(name, &len);
		assert_non_null(buf);
		assert_true(len > 0 && len <= 1024);
		if (k == 3) {
			/* The oldest files were deleted: the set starts later. */
			assert_true(sscanf(buf, "{\"seq\":%u", &next) == 1);
			assert_true(next > 0);
		}
		total += check_lines(buf, len, &next);
		/* Rotated only when the next line would not fit. */
		if (k) {
			char newer[160];

			if (k > 1)
				snprintf(newer, sizeof(newer), "%s.%d", t.path, k - 1);
			else
				snprintf(newer, sizeof(newer), "%s", t.path);
			assert_true(len + first_line_len(newer) > 1024);
		}
		free(buf);
	}
	assert_int_equal(next, n);
	assert_true(total < n);
	tmp_fini(&t);
}

/* An existing file is appended to and its size counts; a line longer than
 * max_size gets a file of its own, whole. */
static void test_rotation_existing_and_oversized(void **state)
{
	struct sink_opts o = { .max_size = 1024, .keep = 2 };
	char big[2000], l100[100], name[160], *buf;
	struct sink_stats st;
	struct sink *s;
	struct tmp t;
	FILE *f;
	size_t len;

	tmp_init(&t);
	o.path = t.path;
	memset(l100, 'o', 99);
	l100[99] = '\n';
	f = fopen(t.path, "w");
	assert_non_null(f);
	for (int i = 0; i < 9; i++)
		fwrite(l100, 1, 100, f);
	fclose(f);

	assert_int_equal(sink__open(&o, &s), 0);
	memset(l100, 'a', 99);
	assert_int_equal(sink__write(s, l100, 99), 0);	/* 1000: fits */
	assert_int_equal(fsize(t.path), 1000);
	memset(l100, 'b', 99);
	assert_int_equal(sink__write(s, l100, 99), 0);	/* 1100: rotates */
	memset(big, 'c', sizeof(big));
	assert_int_equal(sink__write(s, big, sizeof(big)), 0);
	assert_int_equal(sink__write(s, "tail", 4), 0);
	sink__stats(s, &st);
	assert_int_equal(st.rotations, 3);
	assert_int_equal(st.written, 4);
	sink__close(s);

	buf = slurp(t.path, &len);
	assert_non_null(buf);
	assert_string_equal(buf, "tail\n");
	free(buf);
	snprintf(name, sizeof(name), "%s.1", t.path);
	assert_int_equal(fsize(name), sizeof(big) + 1);
	snprintf(name, sizeof(name), "%s.2", t.path);
	buf = slurp(name, &len);
	assert_non_null(buf);
	assert_int_equal(len, 100);
	assert_true(buf[0] == 'b' && buf[98] == 'b' && buf[99] == '\n');
	free(buf);
	snprintf(name, sizeof(name), "%s.3", t.path);
	assert_false(exists(name));
	tmp_fini(&t);
}

static void test_rotation_keep_zero_and_mid_line(void **state)
{
	struct sink_opts o = { .max_size = 16, .keep = 0 };
	char name[160], *buf;
	struct sink_stats st;
	struct sink *s;
	struct tmp t;
	size_t len;

	tmp_init(&t);
	o.path = t.path;
	/* A file that ends mid-line (a crash): the first line starts anew. */
	write_file(t.path, "torn");
	assert_int_equal(sink__open(&o, &s), 0);
	assert_int_equal(sink__write(s, "one", 3), 0);
	buf = slurp(t.path, &len);
	assert_string_equal(buf, "torn\none\n");
	free(buf);
	assert_int_equal(sink__write(s, "two-two", 7), 0);	/* 9 + 8 > 16 */
	sink__stats(s, &st);
	assert_int_equal(st.rotations, 1);
	sink__close(s);
	buf = slurp(t.path, &len);
	assert_string_equal(buf, "two-two\n");
	free(buf);
	snprintf(name, sizeof(name), "%s.1", t.path);
	assert_false(exists(name));
	tmp_fini(&t);
}

/* ---- stalled consumers ---------------------------------------------- */

struct reader {
	int fd;
	char *buf;
	size_t len, cap;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;

	for (;;) {
		ssize_t n;

		if (r->cap - r->len < 65536) {
			r->cap = r->cap * 2 + 65536;
			r->buf = realloc(r->buf, r->cap);
			if (!r->buf)
				abort();
		}
		n = read(r->fd, r->buf + r->len, r->cap - r->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		r->len += (size_t)n;
	}
	return NULL;
}

/* Opens "-" with FD as stdout, leaving the real stdout as it was. */
static struct sink *open_on_stdout(int fd, size_t buffer_bytes)
{
	struct sink_opts o = { .path = "-", .buffer_bytes = buffer_bytes };
	int saved = dup(STDOUT_FILENO);
	struct sink *s = NULL;

	assert_true(saved >= 0);
	fflush(stdout);
	assert_int_equal(dup2(fd, STDOUT_FILENO), STDOUT_FILENO);
	assert_int_equal(sink__open(&o, &s), 0);
	assert_int_equal(dup2(saved, STDOUT_FILENO), STDOUT_FILENO);
	close(saved);
	return s;
}

static void test_stalled_pipe(void **state)
{
	const unsigned int n = 1000;
	unsigned int nobufs = 0, next = 0;
	struct reader r = { 0 };
	struct sink_stats st;
	struct sink *s;
	pthread_t th;
	char line[256];
	int p[2], fl_before;
	int64_t t0;

	alarm(20);	/* a blocked write ends the test here */
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_true(fcntl(p[1], F_SETPIPE_SZ, 4096) >= 4096);
	fl_before = fcntl(p[1], F_GETFL);
	/* 16 KiB: writes above PIPE_BUF, so the pipe takes partial lines. */
	s = open_on_stdout(p[1], 16384);
	/* The sink writes through a description of its own. */
	assert_int_equal(fcntl(p[1], F_GETFL), fl_before);
	close(p[1]);
	assert_true(sink__fd(s) >= 0);

	t0 = now_ms();
	for (unsigned int i = 0; i < n; i++) {
		size_t len = mkline(i, line, sizeof(line));
		int err = sink__write(s, line, len);

		if (err == -ENOBUFS)
			nobufs++;
		else
			assert_int_equal(err, 0);
	}
	assert_true(now_ms() - t0 < 2000);
	sink__stats(s, &st);
	assert_int_equal(st.dropped_full, nobufs);
	assert_true(nobufs > 0);
	assert_int_equal(st.written + st.dropped_full + st.queued, n);
	assert_true(st.queued > 0 && st.queued_bytes <= 16384);
	assert_true(sink__pending(s));
	assert_int_equal(st.dropped_error + st.dropped_invalid, 0);

	t0 = now_ms();
	assert_int_equal(sink__flush_blocking(s, 100), -ETIMEDOUT);
	assert_true(now_ms() - t0 >= 90);
	assert_int_equal(sink__flush(s), 0);

	/* The consumer comes back: what was queued arrives, whole. */
	r.fd = p[0];
	assert_int_equal(pthread_create(&th, NULL, reader_main, &r), 0);
	assert_int_equal(sink__flush_blocking(s, 10000), 0);
	assert_false(sink__pending(s));
	sink__stats(s, &st);
	assert_int_equal(st.queued, 0);
	assert_int_equal(st.queued_bytes, 0);
	assert_int_equal(st.dropped_full, nobufs);
	assert_int_equal(st.written + st.dropped_full, n);
	sink__close(s);	/* the last writer: the reader sees EOF */
	assert_int_equal(pthread_join(th, NULL), 0);
	close(p[0]);

	/* No reader drained it while stalled, so the first lines made it and
	 * every later one was dropped. */
	assert_int_equal(check_lines(r.buf, r.len, &next), st.written);
	assert_int_equal(next + nobufs, n);
	free(r.buf);
	alarm(0);
}

static void test_stalled_socket(void **state)
{
	unsigned int nobufs = 0, next = 0;
	const unsigned int n = 2000;
	struct reader r = { 0 };
	struct sink_stats st;
	struct sink *s;
	pthread_t th;
	char line[256];
	int sv[2], sz = 4096, fl_before;

	alarm(20);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)), 0);
	fl_before = fcntl(sv[0], F_GETFL);
	s = open_on_stdout(sv[0], 8192);
	for (unsigned int i = 0; i < n; i++) {
		size_t len = mkline(i, line, sizeof(line));
		int err = sink__write(s, line, len);

		if (err == -ENOBUFS)
			nobufs++;
		else
			assert_int_equal(err, 0);
	}
	/* The socket is shared with whoever gave it to us: flags untouched. */
	assert_int_equal(fcntl(sv[0], F_GETFL), fl_before);
	close(sv[0]);
	assert_true(nobufs > 0);
	assert_accounted(s, n);

	r.fd = sv[1];
	assert_int_equal(pthread_create(&th, NULL, reader_main, &r), 0);
	assert_int_equal(sink__flush_blocking(s, 10000), 0);
	sink__stats(s, &st);
	assert_int_equal(st.written + nobufs, n);
	sink__close(s);
	assert_int_equal(pthread_join(th, NULL), 0);
	close(sv[1]);
	assert_int_equal(check_lines(r.buf, r.len, &next), st.written);
	free(r.buf);
	alarm(0);
}

/* ---- reopen, errors ------------------------------------------------- */

static void test_reopen_after_move(void **state)
{
	struct sink_opts o = { .max_size = 1 << 20, .keep = 2 };
	char moved[160], line[256], *buf;
	unsigned int next = 0;
	struct sink *s;
	struct tmp t;
	size_t len;

	tmp_init(&t);
	o.path = t.path;
	snprintf(moved, sizeof(moved), "%s-20240101", t.path);
	assert_int_equal(sink__open(&o, &s), 0);
	for (unsigned int i = 0; i < 5; i++) {
		len = mkline(i, line, sizeof(line));
		assert_int_equal(sink__write(s, line, len), 0);
		if (i == 2)
			assert_int_equal(rename(t.path, moved), 0);
	}
	assert_false(exists(t.path));
	assert_int_equal(sink__reopen(s), 0);
	for (unsigned int i = 5; i < 8; i++) {
		len = mkline(i, line, sizeof(line));
		assert_int_equal(sink__write(s, line, len), 0);
	}
	assert_accounted(s, 8);
	sink__close(s);

	buf = slurp(moved, &len);
	assert_int_equal(check_lines(buf, len, &next), 5);
	free(buf);
	buf = slurp(t.path, &len);
	assert_int_equal(check_lines(buf, len, &next), 3);
	free(buf);

	/* stdout has nothing to reopen. */
	s = open_on_stdout(STDOUT_FILENO, 0);
	assert_int_equal(sink__reopen(s), 0);
	sink__close(s);
	tmp_fini(&t);
}

static void test_write_errors(void **state)
{
	struct sink_opts o = { .path = "/dev/full" };
	char dev[160], name[176];
	struct sink_stats st;
	struct sink *s;
	struct tmp t;
	int p[2];

	assert_int_equal(sink__open(&o, &s), 0);
	for (int i = 0; i < 10; i++)
		assert_int_equal(sink__write(s, "x", 1), -ENOSPC);
	sink__stats(s, &st);
	assert_int_equal(st.dropped_error, 10);
	assert_int_equal(st.written, 0);
	assert_int_equal(st.last_error, -ENOSPC);
	assert_false(sink__pending(s));
	assert_accounted(s, 10);
	sink__close(s);

	/* A device is never rotated, even with max_size: on a private node,
	 * so that a mistake cannot rename the real /dev/full. */
	tmp_init(&t);
	snprintf(dev, sizeof(dev), "%s/full", t.dir);
	if (mknod(dev, S_IFCHR | 0666, makedev(1, 7)) == 0) {
		o.path = dev;
		o.max_size = 4;
		o.keep = 2;
		assert_int_equal(sink__open(&o, &s), 0);
		for (int i = 0; i < 4; i++)
			assert_int_equal(sink__write(s, "abcdef", 6), -ENOSPC);
		sink__stats(s, &st);
		assert_int_equal(st.rotations + st.rotate_errors, 0);
		sink__close(s);
		snprintf(name, sizeof(name), "%s.1", dev);
		assert_true(exists(dev));
		assert_false(exists(name));
	}

	/* A FIFO without a reader cannot be opened without blocking. */
	snprintf(dev, sizeof(dev), "%s/fifo", t.dir);
	assert_int_equal(mkfifo(dev, 0600), 0);
	o.path = dev;
	assert_int_equal(sink__open(&o, &s), -ENXIO);
	tmp_fini(&t);

	/* The reader went away: EPIPE (SIGPIPE is ignored by main). */
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	s = open_on_stdout(p[1], 0);
	close(p[1]);
	close(p[0]);
	assert_int_equal(sink__write(s, "gone", 4), -EPIPE);
	sink__stats(s, &st);
	assert_int_equal(st.dropped_error, 1);
	assert_int_equal(sink__flush_blocking(s, 100), 0);
	sink__close(s);
}

static void test_invalid_lines(void **state)
{
	struct sink_opts o = { .path = "/dev/null", .buffer_bytes = 64 };
	char big[64];
	struct sink_stats st;
	struct sink *s;

	memset(big, 'z', sizeof(big));
	assert_int_equal(sink__open(&o, &s), 0);
	assert_int_equal(sink__write(s, "a\nb", 3), -EINVAL);
	assert_int_equal(sink__write(s, big, 64), -EMSGSIZE);
	assert_int_equal(sink__write(s, big, 63), 0);	/* 63 + '\n' fits */
	assert_int_equal(sink__write(s, "", 0), 0);	/* an empty line is a line */
	sink__stats(s, &st);
	assert_int_equal(st.dropped_invalid, 2);
	assert_int_equal(st.written, 2);
	assert_accounted(s, 4);
	sink__close(s);

	o.path = NULL;
	assert_int_equal(sink__open(&o, &s), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rotation_file_set),
		cmocka_unit_test(test_rotation_existing_and_oversized),
		cmocka_unit_test(test_rotation_keep_zero_and_mid_line),
		cmocka_unit_test(test_stalled_pipe),
		cmocka_unit_test(test_stalled_socket),
		cmocka_unit_test(test_reopen_after_move),
		cmocka_unit_test(test_write_errors),
		cmocka_unit_test(test_invalid_lines),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
