/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* cgroup v2: where it is mounted, ids, paths, creation and removal. */
#ifndef SLUICE_CGROUP_H
#define SLUICE_CGROUP_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The cgroup2 mount point, from /proc/self/mountinfo (cached). */
int cgroup__mount(char *buf, size_t len);
/* Absolute path of PATH: a path under the cgroup2 mount is kept, any
 * other ("/a/b" as in /proc/PID/cgroup, or "a/b") is taken below it. */
int cgroup__abspath(const char *path, char *buf, size_t len);
/* The cgroup id (kernfs inode number) of an absolute cgroup path. */
int cgroup__id(const char *abspath, uint64_t *id);
/* Ids of ABSPATH and its ancestors up to the mount, deepest first,
 * 0-terminated; at most MAX entries including the terminator. */
int cgroup__ancestry(const char *abspath, uint64_t *ids, size_t max);
/* Path of a cgroup by id, relative to the mount ("/a/b"), or -ENOENT. */
int cgroup__path_of(uint64_t id, char *buf, size_t len);
int cgroup__mkdir(const char *abspath);
/* Kill what is left in ABSPATH (cgroup.kill), then remove it and its children. */
int cgroup__remove(const char *abspath);
int cgroup__attach_pid(const char *abspath, pid_t pid);
/* 1 if the cgroup (or a descendant) has processes, 0 if not, -errno. */
int cgroup__populated(const char *abspath);

#endif
