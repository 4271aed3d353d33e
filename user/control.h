/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The daemon's control socket: one JSON request line per connection,
 * answered with JSON lines (a stream for `flows --follow`). Root only. */
#ifndef SLUICE_CONTROL_H
#define SLUICE_CONTROL_H

#include <stdbool.h>
#include <stddef.h>

#define SLUICE_CONTROL_SOCKET	"/run/sluice/sluiced.sock"

/* Server side: a listening socket (mode 0600) at PATH, replacing a stale one. */
int control__listen(const char *path);
/* Client side: send REQUEST (one JSON object) and call LINE_FN for every
 * answer line until the daemon closes; -ECONNREFUSED/-ENOENT: no daemon. */
int control__request(const char *path, const char *request,
		     int (*line_fn)(void *ctx, const char *line), void *ctx);

#endif
