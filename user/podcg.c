// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include "podcg.h"

/* A Kubernetes UID is an RFC 4122 UUID: 36 characters, hex and '-'. */
static int podcg__check_uid(const char *uid)
{
	size_t i, n = strlen(uid);

	if (n != 36)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;

		if (dash ? uid[i] != '-' : !isxdigit((unsigned char)uid[i]))
			return -EINVAL;
	}
	return 0;
}

int podcg__qos_parse(const char *s)
{
	if (!s)
		return -EINVAL;
	if (!strcmp(s, "Guaranteed"))
		return PODCG_GUARANTEED;
	if (!strcmp(s, "Burstable"))
		return PODCG_BURSTABLE;
	if (!strcmp(s, "BestEffort"))
		return PODCG_BESTEFFORT;
	return -EINVAL;
}

int podcg__names(const char *uid, enum podcg_qos qos, char names[PODCG_NAMES][SL_NAME_MAX])
{
	static const char *const qn[] = { "", "burstable", "besteffort" };
	char u[37];
	size_t i;

	if (podcg__check_uid(uid) || qos > PODCG_BESTEFFORT)
		return -EINVAL;
	for (i = 0; i < sizeof(u) - 1; i++)
		u[i] = uid[i] == '-' ? '_' : tolower((unsigned char)uid[i]);
	u[36] = '\0';
	memset(names, 0, PODCG_NAMES * SL_NAME_MAX);
	if (qos == PODCG_GUARANTEED)
		snprintf(names[0], SL_NAME_MAX, "kubepods-pod%s.slice", u);
	else
		snprintf(names[0], SL_NAME_MAX, "kubepods-%s-pod%s.slice", qn[qos], u);
	snprintf(names[1], SL_NAME_MAX, "pod%s", uid);
	for (i = 4; names[1][i]; i++)
		names[1][i] = tolower((unsigned char)names[1][i]);
	return 0;
}

static int podcg__walk(const char *dir, const char names[PODCG_NAMES][SL_NAME_MAX], int depth,
		       char *buf, size_t len)
{
	struct dirent *de;
	int err = -ENOENT;
	DIR *d;

	if (depth < 0)
		return -ENOENT;
	d = opendir(dir);
	if (!d)
		return -errno;
	/* Names first at this level, then one level down: pods sit shallow,
	 * containers (which can be many) below them are never entered. */
	while ((de = readdir(d))) {
		if (de->d_type != DT_DIR)
			continue;
		for (int i = 0; i < PODCG_NAMES; i++)
			if (!strcmp(de->d_name, names[i])) {
				snprintf(buf, len, "%s/%s", dir, de->d_name);
				closedir(d);
				return 0;
			}
	}
	rewinddir(d);
	while (err == -ENOENT && (de = readdir(d))) {
		char sub[PATH_MAX];

		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		/* a pod cgroup never contains another pod */
		if (!strncmp(de->d_name, "pod", 3) || strstr(de->d_name, "-pod"))
			continue;
		if (snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name) >= (int)sizeof(sub))
			continue;
		err = podcg__walk(sub, names, depth - 1, buf, len);
		if (err && err != -ENOENT)
			err = -ENOENT;	/* an unreadable branch does not end the search */
	}
	closedir(d);
	return err;
}

int podcg__find(const char *root, const char names[PODCG_NAMES][SL_NAME_MAX], int max_depth,
		char *buf, size_t len)
{
	return podcg__walk(root, names, max_depth, buf, len);
}
