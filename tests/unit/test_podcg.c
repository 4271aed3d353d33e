// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Pod cgroup names for both kubelet drivers, and finding them in a tree
 * laid out as the kubelet lays it (nested, as in a kind node). */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <cmocka.h>
#include "podcg.h"

#define UID "3f0c6c1e-5a6b-4c1d-9e2f-0a1b2c3d4e5f"

static void test_names(void **state)
{
	char n[PODCG_NAMES][SL_NAME_MAX];

	assert_int_equal(podcg__names(UID, PODCG_BURSTABLE, n), 0);
	assert_string_equal(n[0], "kubepods-burstable-pod3f0c6c1e_5a6b_4c1d_9e2f_0a1b2c3d4e5f.slice");
	assert_string_equal(n[1], "pod" UID);
	/* NUL-padded: the kernel compares the whole key */
	assert_int_equal(n[1][SL_NAME_MAX - 1], 0);
	assert_int_equal(podcg__names(UID, PODCG_GUARANTEED, n), 0);
	assert_string_equal(n[0], "kubepods-pod3f0c6c1e_5a6b_4c1d_9e2f_0a1b2c3d4e5f.slice");
	assert_int_equal(podcg__names(UID, PODCG_BESTEFFORT, n), 0);
	assert_string_equal(n[0], "kubepods-besteffort-pod3f0c6c1e_5a6b_4c1d_9e2f_0a1b2c3d4e5f.slice");
	assert_true(strlen(n[0]) < SL_NAME_MAX);
	assert_int_equal(podcg__names("not-a-uid", PODCG_BURSTABLE, n), -EINVAL);
	assert_int_equal(podcg__names(UID "0", PODCG_BURSTABLE, n), -EINVAL);
	assert_int_equal(podcg__qos_parse("Burstable"), PODCG_BURSTABLE);
	assert_int_equal(podcg__qos_parse("burstable"), -EINVAL);
}

static char tmp[] = "/tmp/podcg.XXXXXX";

static void mk(const char *rel)
{
	char p[PATH_MAX], *s;

	snprintf(p, sizeof(p), "%s/%s", tmp, rel);
	for (s = p + strlen(tmp) + 1; *s; s++)
		if (*s == '/') {
			*s = '\0';
			mkdir(p, 0755);
			*s = '/';
		}
	mkdir(p, 0755);
}

static void test_find_both_drivers(void **state)
{
	char n[PODCG_NAMES][SL_NAME_MAX], out[PATH_MAX], want[PATH_MAX];

	assert_non_null(mkdtemp(tmp));
	/* kind: the node container's cgroup holds the kubelet's tree */
	mk("system.slice/docker-abc.scope/kubelet.slice/kubelet-kubepods.slice/"
	   "kubelet-kubepods-burstable.slice/kubepods-burstable-pod3f0c6c1e_5a6b_4c1d_9e2f_0a1b2c3d4e5f.slice/"
	   "cri-containerd-0123.scope");
	mk("kubepods/besteffort/pod11111111-2222-3333-4444-555555555555/0123");
	assert_int_equal(podcg__names(UID, PODCG_BURSTABLE, n), 0);
	assert_int_equal(podcg__find(tmp, n, 8, out, sizeof(out)), 0);
	snprintf(want, sizeof(want), "%s/system.slice/docker-abc.scope/kubelet.slice/kubelet-kubepods.slice/"
		 "kubelet-kubepods-burstable.slice/kubepods-burstable-pod3f0c6c1e_5a6b_4c1d_9e2f_0a1b2c3d4e5f.slice",
		 tmp);
	assert_string_equal(out, want);
	assert_int_equal(podcg__names("11111111-2222-3333-4444-555555555555", PODCG_BESTEFFORT, n), 0);
	assert_int_equal(podcg__find(tmp, n, 8, out, sizeof(out)), 0);
	snprintf(want, sizeof(want), "%s/kubepods/besteffort/pod11111111-2222-3333-4444-555555555555", tmp);
	assert_string_equal(out, want);
	/* too deep for the bound */
	assert_int_equal(podcg__names(UID, PODCG_BURSTABLE, n), 0);
	assert_int_equal(podcg__find(tmp, n, 3, out, sizeof(out)), -ENOENT);
	/* unknown pod */
	assert_int_equal(podcg__names("99999999-2222-3333-4444-555555555555", PODCG_BURSTABLE, n), 0);
	assert_int_equal(podcg__find(tmp, n, 8, out, sizeof(out)), -ENOENT);
	{
		char cmd[PATH_MAX + 16];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
		assert_int_equal(system(cmd), 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_find_both_drivers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
