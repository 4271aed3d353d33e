/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#include <stddef.h>

enum log_level { LOG_ERR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

void log__set_level(int level);
int log__level(void);
/* Route libbpf's messages through log__printf (debug ones only with -v). */
void log__init_libbpf(void);
void log__printf(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A message for the caller to report where it has the context: formatted
 * into ERR (ERRLEN bytes); nothing if ERR is NULL or ERRLEN 0. */
void log__errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define pr_err(...)	log__printf(LOG_ERR, __VA_ARGS__)
#define pr_warn(...)	log__printf(LOG_WARN, __VA_ARGS__)
#define pr_info(...)	log__printf(LOG_INFO, __VA_ARGS__)
#define pr_debug(...)	log__printf(LOG_DEBUG, __VA_ARGS__)

#endif
