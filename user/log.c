// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* One logger: messages to stderr, prefixed, level checked before formatting. */
#include <stdarg.h>
#include <stdio.h>
#include <bpf/libbpf.h>
#include "log.h"

static int log_level = LOG_WARN;

void log__errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

void log__set_level(int level)
{
	log_level = level;
}

int log__level(void)
{
	return log_level;
}

static void log__vprintf(int level, const char *fmt, va_list ap)
{
	static const char *const prefix[] = { "error: ", "warning: ", "", "debug: " };

	if (level > log_level)
		return;
	fprintf(stderr, "sluice: %s", prefix[level]);
	vfprintf(stderr, fmt, ap);
}

void log__printf(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log__vprintf(level, fmt, ap);
	va_end(ap);
}

static int log__libbpf(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	/* libbpf's warnings precede the error we report ourselves: keep
	 * them for -v so that one failure is not told three times. */
	if (level == LIBBPF_DEBUG || level == LIBBPF_INFO || level == LIBBPF_WARN)
		level = LIBBPF_DEBUG;
	if (log_level < LOG_DEBUG)
		return 0;
	fprintf(stderr, "libbpf: ");
	return vfprintf(stderr, fmt, ap);
}

void log__init_libbpf(void)
{
	libbpf_set_print(log__libbpf);
}
