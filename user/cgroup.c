// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cgroup v2 plumbing. The mount is found, never assumed: hybrid hosts have
 * it at /sys/fs/cgroup/unified, Kubernetes nodes at /sys/fs/cgroup. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include "cgroup.h"

static char cg_mount[PATH_MAX];

int cgroup__mount(char *buf, size_t len)
{
	char line[4096];
	FILE *f;

	if (!cg_mount[0]) {
		f = fopen("/proc/self/mountinfo", "re");
		if (!f)
			return -errno;
		/* id parent maj:min root mountpoint opts... - fstype src opts */
		while (fgets(line, sizeof(line), f)) {
			char *sep = strstr(line, " - ");
			char mnt[PATH_MAX];

			if (!sep || strncmp(sep + 3, "cgroup2 ", 8))
				continue;
			if (sscanf(line, "%*s %*s %*s %*s %4095s", mnt) == 1) {
				snprintf(cg_mount, sizeof(cg_mount), "%s", mnt);
				break;
			}
		}
		fclose(f);
		if (!cg_mount[0])
			return -ENOENT;
	}
	if (snprintf(buf, len, "%s", cg_mount) >= (int)len)
		return -ENAMETOOLONG;
	return 0;
}

int cgroup__abspath(const char *path, char *buf, size_t len)
{
	char mnt[PATH_MAX];
	size_t mlen;
	int err;

	err = cgroup__mount(mnt, sizeof(mnt));
	if (err)
		return err;
	mlen = strlen(mnt);
	/* A full path under the mount is kept; anything else, "/a/b" as
	 * /proc/PID/cgroup shows it included, is below the mount. */
	if (!strncmp(path, mnt, mlen) && (path[mlen] == '/' || !path[mlen])) {
		if (snprintf(buf, len, "%s", path) >= (int)len)
			return -ENAMETOOLONG;
		return 0;
	}
	while (*path == '/')
		path++;
	if (snprintf(buf, len, "%s%s%s", mnt, *path ? "/" : "", path) >= (int)len)
		return -ENAMETOOLONG;
	return 0;
}

int cgroup__id(const char *abspath, uint64_t *id)
{
	struct stat st;

	/* On cgroup2 the inode number is the kernfs id that
	 * bpf_get_current_cgroup_id() returns. */
	if (stat(abspath, &st))
		return -errno;
	*id = st.st_ino;
	return 0;
}

int cgroup__ancestry(const char *abspath, uint64_t *ids, size_t max)
{
	char mnt[PATH_MAX], p[PATH_MAX];
	size_t n = 0, mlen;
	int err;

	err = cgroup__mount(mnt, sizeof(mnt));
	if (err)
		return err;
	mlen = strlen(mnt);
	if (strncmp(abspath, mnt, mlen) || (abspath[mlen] && abspath[mlen] != '/'))
		return -EINVAL;
	snprintf(p, sizeof(p), "%s", abspath);
	for (;;) {
		char *slash;

		if (n + 1 >= max)
			return -E2BIG;
		err = cgroup__id(p, &ids[n]);
		if (err)
			return err;
		n++;
		if (strlen(p) <= mlen)
			break;
		slash = strrchr(p, '/');
		if (!slash || slash - p < (ptrdiff_t)mlen)
			break;
		*slash = '\0';
		if (strlen(p) < mlen)
			snprintf(p, sizeof(p), "%s", mnt);
	}
	ids[n] = 0;
	return 0;
}

int cgroup__path_of(uint64_t id, char *buf, size_t len)
{
	struct {
		struct file_handle fh;
		uint64_t id;
	} h = { .fh = { .handle_bytes = sizeof(uint64_t), .handle_type = 0xfe /* FILEID_KERNFS */ } };
	char mnt[PATH_MAX], link[64], target[PATH_MAX];
	int mfd, fd, err;
	ssize_t n;
	size_t mlen;

	err = cgroup__mount(mnt, sizeof(mnt));
	if (err)
		return err;
	memcpy(h.fh.f_handle, &id, sizeof(id));
	mfd = open(mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (mfd < 0)
		return -errno;
	fd = open_by_handle_at(mfd, &h.fh, O_RDONLY | O_CLOEXEC);
	err = fd < 0 ? -errno : 0;
	close(mfd);
	if (err)
		return err == -ESTALE ? -ENOENT : err;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof(target) - 1);
	err = n < 0 ? -errno : 0;
	close(fd);
	if (err)
		return err;
	target[n] = '\0';
	mlen = strlen(mnt);
	if (strncmp(target, mnt, mlen))
		return -EINVAL;
	if (snprintf(buf, len, "%s", target[mlen] ? target + mlen : "/") >= (int)len)
		return -ENAMETOOLONG;
	return 0;
}

int cgroup__mkdir(const char *abspath)
{
	if (mkdir(abspath, 0755) && errno != EEXIST)
		return -errno;
	return 0;
}

static int cgroup__write(const char *dir, const char *file, const char *val)
{
	char p[PATH_MAX];
	int fd, err = 0;

	snprintf(p, sizeof(p), "%s/%s", dir, file);
	fd = open(p, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, val, strlen(val)) < 0)
		err = -errno;
	close(fd);
	return err;
}

int cgroup__attach_pid(const char *abspath, pid_t pid)
{
	char v[32];

	snprintf(v, sizeof(v), "%d", (int)pid);
	return cgroup__write(abspath, "cgroup.procs", v);
}

int cgroup__populated(const char *abspath)
{
	char p[PATH_MAX], line[128];
	int populated = -ENOENT;
	FILE *f;

	snprintf(p, sizeof(p), "%s/cgroup.events", abspath);
	f = fopen(p, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "populated ", 10))
			populated = atoi(line + 10) != 0;
	fclose(f);
	return populated;
}

static int cgroup__rmtree(const char *abspath)
{
	struct dirent *de;
	int err = 0;
	DIR *d;

	d = opendir(abspath);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d))) {
		char sub[PATH_MAX];

		if (de->d_type != DT_DIR || !strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (snprintf(sub, sizeof(sub), "%s/%s", abspath, de->d_name) >= (int)sizeof(sub))
			continue;
		if (!err)
			err = cgroup__rmtree(sub);
	}
	closedir(d);
	if (!err && rmdir(abspath) && errno != ENOENT)
		err = -errno;
	return err;
}

int cgroup__remove(const char *abspath)
{
	struct timespec ts = { 0, 5 * 1000 * 1000 };
	int i, pop;

	/* What CMD left running goes with its cgroup, as with a systemd
	 * scope: otherwise the cgroup could not be removed. */
	pop = cgroup__populated(abspath);
	if (pop == -ENOENT)
		return 0;
	if (pop > 0) {
		cgroup__write(abspath, "cgroup.kill", "1");
		for (i = 0; i < 400 && cgroup__populated(abspath) > 0; i++)
			nanosleep(&ts, NULL);
	}
	return cgroup__rmtree(abspath);
}
