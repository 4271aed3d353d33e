/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Where gateway decision records come from: access-log files followed like
 * `tail -F` (plain, or Kubernetes CRI log files, detected per line), with
 * their positions kept across restarts, and OTLP/HTTP JSON log exports.
 * Every line that does not become a record is counted by reason.
 */
#ifndef SLUICE_GWSRC_H
#define SLUICE_GWSRC_H

#include <stddef.h>
#include <stdint.h>
#include "gateway.h"

struct gwsrc;
struct prom;

struct gwsrc_opts {
	const char *const *paths;	/* access logs to follow */
	size_t npaths;
	enum gw_format format;
	const char *keymap;		/* gateway__keymap_parse() spec, or NULL */
	const char *state_dir;		/* positions kept here; NULL: none kept */
};

typedef void (*gwsrc_record_fn)(void *ctx, struct gw_record *r);

int gwsrc__new(const struct gwsrc_opts *o, gwsrc_record_fn fn, void *ctx, struct gwsrc **out,
	       char *err, size_t errlen);
void gwsrc__free(struct gwsrc *g);
/* Read what the files have new; 0. */
int gwsrc__poll(struct gwsrc *g);
/* Keep every file's position (after records were handled). */
void gwsrc__save(struct gwsrc *g);
/* An OTLP/HTTP JSON ExportLogsServiceRequest: each log record (its body a
 * log line, or its attributes the flat keys of the JSON form). Returns how
 * many records were accepted, or -EINVAL with ERR for a body that is not
 * such a request. */
int gwsrc__otlp(struct gwsrc *g, const char *body, size_t len, char *err, size_t errlen);
/* gateway metrics: lines read, records, lines skipped/rejected by reason. */
void gwsrc__prom(const struct gwsrc *g, struct prom *p);

#endif
