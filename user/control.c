// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include "control.h"

static int control__addr(const char *path, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	strcpy(sa->sun_path, path);
	return 0;
}

int control__listen(const char *path)
{
	struct sockaddr_un sa;
	char dir[sizeof(sa.sun_path)], *slash;
	int fd, err;

	err = control__addr(path, &sa);
	if (err)
		return err;
	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (mkdir(dir, 0700) && errno != EEXIST)
			return -errno;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* A socket file left by a killed daemon: nobody answers on it. */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		close(fd);
		return -EADDRINUSE;
	}
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || chmod(path, 0600) || listen(fd, 16)) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

int control__request(const char *path, const char *request,
		     int (*line_fn)(void *ctx, const char *line), void *ctx)
{
	struct sockaddr_un sa;
	size_t len = 0, cap = 65536;
	char *buf;
	int fd, err = 0;
	ssize_t n;

	err = control__addr(path, &sa);
	if (err)
		return err;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		err = -errno;
		close(fd);
		return err;
	}
	buf = malloc(cap);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	/* One write, and no SIGPIPE if the daemon went away meanwhile. */
	len = snprintf(buf, cap, "%s\n", request);
	if (len >= cap || send(fd, buf, len, MSG_NOSIGNAL) != (ssize_t)len) {
		err = len >= cap ? -E2BIG : -errno;
		free(buf);
		close(fd);
		return err;
	}
	len = 0;
	while ((n = read(fd, buf + len, cap - len - 1)) > 0) {
		char *start = buf, *nl;

		len += n;
		buf[len] = '\0';
		while ((nl = memchr(start, '\n', buf + len - start))) {
			*nl = '\0';
			if (line_fn(ctx, start)) {
				err = 0;
				goto out;
			}
			start = nl + 1;
		}
		len -= start - buf;
		memmove(buf, start, len);
		if (len == cap - 1) {
			char *nb = realloc(buf, cap * 2);

			if (!nb) {
				err = -ENOMEM;
				goto out;
			}
			buf = nb;
			cap *= 2;
		}
	}
	if (n < 0)
		err = -errno;
out:
	free(buf);
	close(fd);
	return err;
}
