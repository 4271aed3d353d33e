// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* tail: appends and partial lines, rotation without loss, truncation and
 * copytruncate, a file that appears late or is deleted, restarts from a
 * saved state (no line lost or read twice, rotated meanwhile, same inode
 * with other contents), long lines, the per-poll budget, callback errors. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "tail.h"

/* ---- helpers -------------------------------------------------------- */

struct got {
	char text[65536];	/* lines joined with '|' */
	size_t len;
	int n;
	int fail_next;		/* fail this many calls with -EIO */
};

static int got_line(void *ctx, const char *line, size_t len)
{
	struct got *g = ctx;

	assert_int_equal(line[len], '\0');
	assert_null(memchr(line, '\n', len));
	if (g->fail_next) {
		g->fail_next--;
		return -EIO;
	}
	assert_true(g->len + len + 2 < sizeof(g->text));
	if (g->n)
		g->text[g->len++] = '|';
	memcpy(g->text + g->len, line, len);
	g->len += len;
	g->text[g->len] = '\0';
	g->n++;
	return 0;
}

static void got_reset(struct got *g)
{
	g->len = 0;
	g->n = 0;
	g->text[0] = '\0';
}

struct env {
	char dir[64];
	char path[128];		/* the followed file */
	char rot[128];		/* path.1 */
	char state[128];
};

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	assert_non_null(e);
	snprintf(e->dir, sizeof(e->dir), "/tmp/sluice-tail-XXXXXX");
	assert_non_null(mkdtemp(e->dir));
	snprintf(e->path, sizeof(e->path), "%s/gw.log", e->dir);
	snprintf(e->rot, sizeof(e->rot), "%s/gw.log.1", e->dir);
	snprintf(e->state, sizeof(e->state), "%s/state", e->dir);
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
	assert_int_equal(system(cmd), 0);
	free(e);
	return 0;
}

static void put(const char *path, const char *s, int flags)
{
	int fd = open(path, O_WRONLY | O_CREAT | flags, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
	close(fd);
}

static void append(const char *path, const char *s)
{
	put(path, s, O_APPEND);
}

static struct tail *topen(const char *path, struct got *g, int grace_ms)
{
	struct tail_opts o = { .path = path, .rotate_grace_ms = grace_ms };
	struct tail *t;

	assert_int_equal(tail__open(&o, got_line, g, &t), 0);
	return t;
}

static struct tail_stats stats(const struct tail *t)
{
	struct tail_stats s;

	tail__stats(t, &s);
	return s;
}

/* ---- tests ---------------------------------------------------------- */

static void test_appends_and_partial(void **state)
{
	struct env *e = *state;
	struct got g = { 0 };
	struct tail *t;

	put(e->path, "one\ntwo\nthr", O_TRUNC);
	t = topen(e->path, &g, 0);
	assert_int_equal(tail__poll(t), 2);
	assert_string_equal(g.text, "one|two");
	assert_int_equal(tail__poll(t), 0);

	append(e->path, "ee");
	assert_int_equal(tail__poll(t), 0);
	append(e->path, "\n\nfour\n");
	assert_int_equal(tail__poll(t), 3);
	assert_string_equal(g.text, "one|two|three||four");
	assert_int_equal(stats(t).lines, 5);
	assert_int_equal(stats(t).bytes, 20);
	assert_int_equal(stats(t).rotations, 0);
	tail__close(t);
}

static void test_missing_then_appearing(void **state)
{
	struct env *e = *state;
	struct got g = { 0 };
	struct tail *t = topen(e->path, &g, 0);

	assert_int_equal(tail__poll(t), 0);
	assert_int_equal(tail__poll(t), 0);
	put(e->path, "late\n", O_TRUNC);
	assert_int_equal(tail__poll(t), 1);
	assert_string_equal(g.text, "late");
	assert_int_equal(stats(t).errors, 0);

	/* Deleted and nobody takes the path: let go, and a new file is
	 * read from its start. */
	append(e->path, "last");
	assert_int_equal(unlink(e->path), 0);
	assert_int_equal(tail__poll(t), 1);
	assert_string_equal(g.text, "late|last");
	put(e->path, "again\n", O_TRUNC);
	assert_int_equal(tail__poll(t), 1);
	assert_string_equal(g.text, "late|last|again");
	assert_int_equal(stats(t).rotations, 0);
	tail__close(t);
}

static void test_rotation_no_loss(void **state)
{
	struct env *e = *state;
	struct got g = { 0 };
	struct tail *t;

	put(e->path, "1\n2\n", O_TRUNC);
	t = topen(e->path, &g, -1);
	assert_int_equal(tail__poll(t), 2);

	/* Written before the rename and not read yet; the writer keeps
	 * appending to the renamed file until it reopens. */
	append(e->path, "3\n4");
	assert_int_equal(rename(e->path, e->rot), 0);
	append(e->rot, "\n5\n");
	put(e->path, "6\n7\n", O_TRUNC);
	assert_int_equal(tail__poll(t), 5);
	assert_string_equal(g.text, "1|2|3|4|5|6|7");
	assert_int_equal(stats(t).rotations, 1);

	/* Within the grace period the old file is still read. */
	append(e->rot, "5b\n");
	append(e->path, "8\n");
	assert_int_equal(tail__poll(t), 2);
	assert_string_equal(g.text, "1|2|3|4|5|6|7|5b|8");

	/* A second rotation. */
	assert_int_equal(rename(e->path, e->rot), 0);
	put(e->path, "9\n", O_TRUNC);
	append(e->rot, "8b\n");
	assert_int_equal(tail__poll(t), 2);
	assert_string_equal(g.text, "1|2|3|4|5|6|7|5b|8|8b|9");
	assert_int_equal(stats(t).rotations, 2);
	assert_int_equal(stats(t).truncations, 0);
	tail__close(t);
}

static void test_rotation_grace_zero(void **state)
{
	struct env *e = *state;
	struct got g = { 0 };
	struct tail *t;

	put(e->path, "a\n", O_TRUNC);
	t = topen(e->path, &g, 0);
	assert_int_equal(tail__poll(t), 1);
	/* The old file's last line has no newline: nothing will end it. */
	append(e->path, "b\nunfinished");
	assert_int_equal(rename(e->path, e->rot), 0);
	put(e->path, "c\n", O_TRUNC);
	assert_int_equal(tail__poll(t), 3);
	assert_string_equal(g.text, "a|b|unfinished|c");
	/* Let go at once: later writes to it are not seen. */
	append(e->rot, "lost\n");
	assert_int_equal(tail__poll(t), 0);
	tail__close(t);
}

static void test_truncation(void **state)
{
	struct env *e = *state;
	struct got g = { 0 };
	struct tail *t;

	put(e->path, "first line\nsecond line\n", O_TRUNC);
	t = topen(e->path, &g, 0);
	assert_int_equal(tail__poll(t), 2);

	/* Shorter than what was read. */
	put(e->path, "x\n", O_TRUNC);
	assert_int_equal(tail__poll(t), 1);
	assert_string_equal(g.text, "first line|second line|x");
	assert_int_equal(stats(t).truncations, 1);

	/* copytruncate, and the writer wrote past the old position before
	 * the poll: only the first bytes tell. */
	got_reset(&g);
	put(e->path, "y1 with a longer text than before\ny2\n", O_TRUNC);
	assert_int_equal(tail__poll(t), 2);
	assert_string_equal(g.text, "y1 with a longer text than before|y2");
	assert_int_equal(stats(t).truncations, 2);
	assert_int_equal(stats(t).rotations, 0);
	tail__close(t);
}

static void test_long_lines_and_budget(void **state)
{
	struct env *e = *state;
	struct tail_opts o = { .path = e->path, .max_line = 16, .max_bytes_per_poll = 10 };
	struct got g = { 0 };
	struct tail *t;
	int n = 0, polls = 0;

	put(e->path, "short\nthis line is far too long for sixteen\nok\n", O_TRUNC);
	assert_int_equal(tail__open(&o, got_line, &g, &t), 0);
	do {
		int r = tail__poll(t);

		assert_true(r >= 0);
		n += r;
		polls++;
	} while (tail__backlog(t));
	assert_true(polls >= 5);
	assert_int_equal(n, 2);
	assert_string_equal(g.text, "short|ok");
	assert_int_equal(stats(t).lines_too_long, 1);
	assert_int_equal(stats(t).bytes, 47);
	tail__close(t);
}

static void test_callback_error(void **state)
{
	struct env *e = *state;
	struct got g = { 0 };
	struct tail *t;

	put(e->path, "a\nb\nc\n", O_TRUNC);
	t = topen(e->path, &g, 0);
	g.fail_next = 0;
	assert_int_equal(tail__poll(t), 3);
	append(e->path, "d\ne\n");
	g.fail_next = 1;
	assert_int_equal(tail__poll(t), -EIO);
	/* The failed line comes again, nothing twice. */
	assert_int_equal(tail__poll(t), 2);
	assert_string_equal(g.text, "a|b|c|d|e");
	tail__close(t);
}

static void test_from_end(void **state)
{
	struct env *e = *state;
	struct tail_opts o = { .path = e->path, .from_end = true };
	struct got g = { 0 };
	struct tail *t;

	put(e->path, "old\nbeing writ", O_TRUNC);
	assert_int_equal(tail__open(&o, got_line, &g, &t), 0);
	assert_int_equal(tail__poll(t), 0);
	append(e->path, "ten\nnew\n");
	assert_int_equal(tail__poll(t), 1);
	assert_string_equal(g.text, "new");
	tail__close(t);
}

static void test_restart_from_state(void **state)
{
	struct env *e = *state;
	struct got g = { 0 };
	struct tail *t;

	put(e->path, "1\n2\n3\n4\n5\npart", O_TRUNC);
	t = topen(e->path, &g, 0);
	assert_int_equal(tail__poll(t), 5);
	assert_int_equal(tail__save_state(t, e->state), 0);
	tail__close(t);
	/* The tmp file does not linger. */
	{
		char tmp[160];

		snprintf(tmp, sizeof(tmp), "%s.tmp", e->state);
		assert_int_equal(access(tmp, F_OK), -1);
	}

	append(e->path, "ial\n6\n7\n");
	got_reset(&g);
	t = topen(e->path, &g, 0);
	assert_int_equal(tail__load_state(t, e->state), 0);
	assert_int_equal(tail__poll(t), 3);
	assert_string_equal(g.text, "partial|6|7");
	assert_int_equal(tail__load_state(t, e->state), -EBUSY);
	assert_int_equal(tail__save_state(t, e->state), 0);
	tail__close(t);

	/* Restarting again without new lines: nothing. */
	got_reset(&g);
	t = topen(e->path, &g, 0);
	assert_int_equal(tail__load_state(t, e->state), 0);
	assert_int_equal(tail__poll(t), 0);
	append(e->path, "8\n");
	assert_int_equal(tail__poll(t), 1);
	assert_string_equal(g.text, "8");
	tail__close(t);
}

static void test_restart_after_rotation(void **state)
{
	struct env *e = *state;
	struct got g = { 0 };
	struct tail *t;

	put(e->path, "1\n2\n", O_TRUNC);
	t = topen(e->path, &g, 0);
	assert_int_equal(tail__poll(t), 2);
	assert_int_equal(tail__save_state(t, e->state), 0);
	tail__close(t);

	/* While the daemon is down: more lines, a rotation, a new file. */
	append(e->path, "3\n4\n");
	assert_int_equal(rename(e->path, e->rot), 0);
	put(e->path, "5\n", O_TRUNC);

	got_reset(&g);
	t = topen(e->path, &g, 0);
	assert_int_equal(tail__load_state(t, e->state), 0);
	assert_int_equal(tail__poll(t), 3);
	assert_string_equal(g.text, "3|4|5");
	assert_int_equal(stats(t).rotations, 1);
	assert_int_equal(stats(t).files_lost, 0);

	/* Saved in the middle of draining a rotated file: both are kept. */
	tail__close(t);
	put(e->path, "a\n", O_TRUNC);
	got_reset(&g);
	t = topen(e->path, &g, 60000);
	assert_int_equal(tail__poll(t), 1);
	assert_int_equal(rename(e->path, e->rot), 0);
	put(e->path, "b\n", O_TRUNC);
	assert_int_equal(tail__poll(t), 1);
	assert_int_equal(tail__save_state(t, e->state), 0);
	tail__close(t);
	append(e->rot, "a2\n");
	append(e->path, "b2\n");
	got_reset(&g);
	t = topen(e->path, &g, 0);
	assert_int_equal(tail__load_state(t, e->state), 0);
	assert_int_equal(tail__poll(t), 2);
	assert_string_equal(g.text, "a2|b2");
	tail__close(t);

	/* The rotated file is gone too: counted as lost; the new one is read
	 * from 0. */
	put(e->path, "x\n", O_TRUNC);
	got_reset(&g);
	t = topen(e->path, &g, 0);
	assert_int_equal(tail__poll(t), 1);
	assert_int_equal(tail__save_state(t, e->state), 0);
	tail__close(t);
	/* The new file exists before the old inode is freed, so it cannot
	 * take its number. */
	assert_int_equal(rename(e->path, e->rot), 0);
	put(e->path, "y\n", O_TRUNC);
	assert_int_equal(unlink(e->rot), 0);
	got_reset(&g);
	t = topen(e->path, &g, 0);
	assert_int_equal(tail__load_state(t, e->state), 0);
	assert_int_equal(tail__poll(t), 1);
	assert_string_equal(g.text, "y");
	assert_int_equal(stats(t).files_lost, 1);
	tail__close(t);
}

static void test_restart_same_inode_other_file(void **state)
{
	struct env *e = *state;
	struct got g = { 0 };
	struct stat a, b;
	struct tail *t;

	put(e->path, "old head line\nold 2\n", O_TRUNC);
	assert_int_equal(stat(e->path, &a), 0);
	t = topen(e->path, &g, 0);
	assert_int_equal(tail__poll(t), 2);
	assert_int_equal(tail__save_state(t, e->state), 0);
	tail__close(t);

	/* Same inode, other contents, longer than the saved offset: without
	 * the head hash the first 20 bytes would be skipped. */
	put(e->path, "NEW head line, other text\nnew 2\n", O_TRUNC);
	assert_int_equal(stat(e->path, &b), 0);
	assert_int_equal(a.st_ino, b.st_ino);
	got_reset(&g);
	t = topen(e->path, &g, 0);
	assert_int_equal(tail__load_state(t, e->state), 0);
	assert_int_equal(tail__poll(t), 2);
	assert_string_equal(g.text, "NEW head line, other text|new 2");
	assert_int_equal(stats(t).replaced, 1);
	tail__close(t);

	/* A file shorter than the head saved is another file too. */
	put(e->path, "0123456789\n", O_TRUNC);
	t = topen(e->path, &g, 0);
	assert_int_equal(tail__poll(t), 1);
	assert_int_equal(tail__save_state(t, e->state), 0);
	tail__close(t);
	put(e->path, "01\n", O_TRUNC);
	got_reset(&g);
	t = topen(e->path, &g, 0);
	assert_int_equal(tail__load_state(t, e->state), 0);
	assert_int_equal(tail__poll(t), 1);
	assert_string_equal(g.text, "01");
	tail__close(t);
}

static void test_state_errors(void **state)
{
	struct env *e = *state;
	struct got g = { 0 };
	struct tail_opts o = { .path = e->path, .from_end = true };
	struct tail *t;
	char other[160];

	put(e->path, "existing\n", O_TRUNC);
	assert_int_equal(tail__open(&o, got_line, &g, &t), 0);
	assert_int_equal(tail__load_state(t, e->state), -ENOENT);
	put(e->state, "garbage\n", O_TRUNC);
	assert_int_equal(tail__load_state(t, e->state), -EBADMSG);
	put(e->state, "sluice-tail-state 1\npath /elsewhere\n", O_TRUNC);
	assert_int_equal(tail__load_state(t, e->state), -ESTALE);
	put(e->state, "sluice-tail-state 1\npath ", O_TRUNC);
	append(e->state, e->path);
	append(e->state, "\nfile 1 2 x\n");
	assert_int_equal(tail__load_state(t, e->state), -EBADMSG);
	/* After a failed load: as without state (from_end here). */
	assert_int_equal(tail__poll(t), 0);
	append(e->path, "new\n");
	assert_int_equal(tail__poll(t), 1);
	assert_string_equal(g.text, "new");

	snprintf(other, sizeof(other), "%s/no/such/dir/state", e->dir);
	assert_int_equal(tail__save_state(t, other), -ENOENT);
	tail__close(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_appends_and_partial, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_then_appearing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rotation_no_loss, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rotation_grace_zero, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_lines_and_budget, setup, teardown),
		cmocka_unit_test_setup_teardown(test_callback_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_from_end, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_from_state, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_after_rotation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_same_inode_other_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_state_errors, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
