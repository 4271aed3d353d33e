// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include <errno.h>
#include <glob.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cjson/cJSON.h>
#include "gwsrc.h"
#include "httpd.h"
#include "tail.h"

#define GWSRC_REASONS	32
#define GWSRC_MAX_FILES	1024	/* files followed at once, all patterns */
#define GWSRC_GLOB_EVERY 4	/* polls between two glob scans (~1 s) */
#define GWSRC_GONE_SCANS 5	/* scans a match may be missing before it is let go */

struct gwfile {
	struct gwsrc *g;
	char *path;
	char *state;		/* state file, or NULL */
	struct tail *t;
	struct cri_joiner cri;
	int pattern;		/* index of the pattern that found it, or -1 */
	unsigned int unseen;	/* scans in a row without a match */
};

struct reason {
	const char *why;	/* static strings from the parsers */
	const char *source;	/* "file", "otlp" */
	uint64_t n;
};

struct gwsrc {
	struct gwfile *files;
	size_t nfiles, cap;
	char **patterns;	/* --gateway-log values with glob characters */
	size_t npatterns;
	char *state_dir;
	unsigned long polls;
	uint64_t files_dropped;	/* matches past GWSRC_MAX_FILES */
	enum gw_format format;
	struct gw_keymap km;
	gwsrc_record_fn fn;
	void *ctx;
	uint64_t lines, records, otlp_records, skipped;
	struct reason reasons[GWSRC_REASONS];
	uint64_t reasons_other;
};

static void gwsrc__count(struct gwsrc *g, const char *source, const char *why)
{
	size_t i;

	for (i = 0; i < GWSRC_REASONS && g->reasons[i].why; i++)
		if (g->reasons[i].why == why && g->reasons[i].source == source) {
			g->reasons[i].n++;
			return;
		}
	if (i == GWSRC_REASONS) {
		g->reasons_other++;
		return;
	}
	g->reasons[i] = (struct reason){ .why = why ? why : "unknown", .source = source, .n = 1 };
}

/* One access-log line: a record, a line of another kind (skipped), or a
 * malformed one (counted by reason). CRI_TIME stands in for a missing time. */
static void gwsrc__line(struct gwsrc *g, const char *source, const char *line, size_t len,
			uint64_t cri_time)
{
	struct gw_record r;
	const char *why = NULL;
	int err;

	err = gateway__parse_line(g->format, &g->km, line, len, &r, &why);
	if (err == -ENOMSG) {
		g->skipped++;
		return;
	}
	if (err) {
		gwsrc__count(g, source, why);
		return;
	}
	if (!r.time_ns)
		r.time_ns = cri_time;
	g->records++;
	g->fn(g->ctx, &r);
}

static int gwsrc__cri_line(void *ctx, const char *line, size_t len, const struct cri_meta *m)
{
	struct gwfile *f = ctx;

	gwsrc__line(f->g, "file", line, len, m->time_ns);
	return 0;
}

/* Kubernetes CRI log framing: "<RFC3339Nano> stdout|stderr P|F <text>". */
static bool gwsrc__is_cri(const char *line, size_t len)
{
	const char *sp = memchr(line, ' ', len);

	if (!sp || sp == line || !(line[0] >= '0' && line[0] <= '9'))
		return false;
	len -= sp + 1 - line;
	sp++;
	return (len > 9 && (!strncmp(sp, "stdout P ", 9) || !strncmp(sp, "stdout F ", 9) ||
			    !strncmp(sp, "stderr P ", 9) || !strncmp(sp, "stderr F ", 9)));
}

static int gwsrc__file_line(void *ctx, const char *line, size_t len)
{
	struct gwfile *f = ctx;
	const char *why = NULL;

	f->g->lines++;
	if (gwsrc__is_cri(line, len)) {
		if (cri__feed(&f->cri, line, len, gwsrc__cri_line, f, &why) == -EBADMSG)
			gwsrc__count(f->g, "file", why);
		return 0;
	}
	gwsrc__line(f->g, "file", line, len, 0);
	return 0;
}

static bool gwsrc__is_pattern(const char *path)
{
	return strpbrk(path, "*?[") != NULL;
}

/* Follow PATH. FROM_END: without a saved position, skip what it holds (a
 * file that was there before us, found by a pattern). 0 or -errno. */
static int gwsrc__add(struct gwsrc *g, const char *path, int pattern, bool from_end)
{
	struct tail_opts to = { .path = path, .rotate_grace_ms = -1, .from_end = from_end };
	struct gwfile *f;
	int rc;

	if (g->nfiles == GWSRC_MAX_FILES) {
		g->files_dropped++;
		return -ENOSPC;
	}
	if (g->nfiles == g->cap) {
		size_t cap = g->cap ? g->cap * 2 : 8;
		struct gwfile *v = realloc(g->files, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		/* The tails' callbacks hold pointers to their gwfile. */
		for (size_t i = 0; i < g->nfiles; i++)
			tail__set_ctx(v[i].t, &v[i]);
		g->files = v;
		g->cap = cap;
	}
	f = &g->files[g->nfiles];
	memset(f, 0, sizeof(*f));
	f->g = g;
	f->pattern = pattern;
	f->path = strdup(path);
	if (!f->path)
		return -ENOMEM;
	cri__init(&f->cri);
	rc = tail__open(&to, gwsrc__file_line, f, &f->t);
	if (rc) {
		free(f->path);
		return rc;
	}
	g->nfiles++;
	if (g->state_dir) {
		char name[4096], *s;

		/* one state file per log, named after its path */
		snprintf(name, sizeof(name), "%s", path);
		for (s = name; *s; s++)
			if (*s == '/')
				*s = '_';
		if (asprintf(&f->state, "%s/%s.pos", g->state_dir, name) < 0)
			f->state = NULL;
		if (f->state && !tail__load_state(f->t, f->state))
			from_end = false;	/* resumed where it was */
	}
	/* "From the end" is from now, not from the first timer tick: a line
	 * written in between is new. Nothing is delivered by this poll. */
	if (from_end)
		tail__poll(f->t);
	return 0;
}

static void gwsrc__drop(struct gwsrc *g, size_t i)
{
	struct gwfile *f = &g->files[i];

	tail__close(f->t);
	cri__free(&f->cri);
	if (f->state)
		unlink(f->state);	/* the file is gone for good */
	free(f->path);
	free(f->state);
	g->files[i] = g->files[--g->nfiles];
	if (i < g->nfiles)
		tail__set_ctx(g->files[i].t, &g->files[i]);
}

/* New matches are followed, from their start unless they were there at the
 * first scan; files no pattern has matched for GWSRC_GONE_SCANS scans (a
 * deleted pod's logs) are read to their end and let go. */
static void gwsrc__scan(struct gwsrc *g, bool first)
{
	for (size_t i = 0; i < g->nfiles; i++)
		if (g->files[i].pattern >= 0)
			g->files[i].unseen++;
	for (size_t pi = 0; pi < g->npatterns; pi++) {
		glob_t gl;

		if (glob(g->patterns[pi], GLOB_NOSORT, NULL, &gl))
			continue;	/* GLOB_NOMATCH and errors: nothing now */
		for (size_t m = 0; m < gl.gl_pathc; m++) {
			size_t i;

			for (i = 0; i < g->nfiles; i++)
				if (!strcmp(g->files[i].path, gl.gl_pathv[m]))
					break;
			if (i < g->nfiles)
				g->files[i].unseen = 0;
			else
				gwsrc__add(g, gl.gl_pathv[m], (int)pi, first);
		}
		globfree(&gl);
	}
	for (size_t i = 0; i < g->nfiles;) {
		if (g->files[i].pattern >= 0 && g->files[i].unseen >= GWSRC_GONE_SCANS) {
			tail__poll(g->files[i].t);
			gwsrc__drop(g, i);
			continue;
		}
		i++;
	}
}

int gwsrc__new(const struct gwsrc_opts *o, gwsrc_record_fn fn, void *ctx, struct gwsrc **out,
	       char *err, size_t errlen)
{
	struct gwsrc *g = calloc(1, sizeof(*g));
	const char *why = NULL;
	size_t i;
	int rc = 0;

	if (!g)
		return -ENOMEM;
	g->format = o->format;
	g->fn = fn;
	g->ctx = ctx;
	gateway__keymap_default(&g->km);
	if (o->keymap && gateway__keymap_parse(&g->km, o->keymap, &why)) {
		snprintf(err, errlen, "--gateway-keymap: %s", why ? why : "invalid");
		free(g);
		return -EINVAL;
	}
	if (o->state_dir && !(g->state_dir = strdup(o->state_dir))) {
		free(g);
		return -ENOMEM;
	}
	g->patterns = calloc(o->npaths ? o->npaths : 1, sizeof(*g->patterns));
	if (!g->patterns)
		rc = -ENOMEM;
	for (i = 0; i < o->npaths && !rc; i++) {
		if (gwsrc__is_pattern(o->paths[i])) {
			if (!(g->patterns[g->npatterns++] = strdup(o->paths[i])))
				rc = -ENOMEM;
			continue;
		}
		rc = gwsrc__add(g, o->paths[i], -1, false);
		if (rc)
			snprintf(err, errlen, "--gateway-log %s: %s", o->paths[i], strerror(-rc));
	}
	if (rc) {
		gwsrc__free(g);
		return rc;
	}
	gwsrc__scan(g, true);
	*out = g;
	return 0;
}

void gwsrc__free(struct gwsrc *g)
{
	if (!g)
		return;
	for (size_t i = 0; i < g->nfiles; i++) {
		tail__close(g->files[i].t);
		cri__free(&g->files[i].cri);
		free(g->files[i].path);
		free(g->files[i].state);
	}
	for (size_t i = 0; i < g->npatterns; i++)
		free(g->patterns[i]);
	free(g->patterns);
	free(g->state_dir);
	free(g->files);
	free(g);
}

int gwsrc__poll(struct gwsrc *g)
{
	if (g->npatterns && ++g->polls % GWSRC_GLOB_EVERY == 0)
		gwsrc__scan(g, false);
	for (size_t i = 0; i < g->nfiles; i++)
		tail__poll(g->files[i].t);
	return 0;
}

void gwsrc__save(struct gwsrc *g)
{
	for (size_t i = 0; i < g->nfiles; i++)
		if (g->files[i].state)
			tail__save_state(g->files[i].t, g->files[i].state);
}

static const char *otlp_str(const cJSON *anyvalue, char *buf, size_t len)
{
	const cJSON *v;

	if ((v = cJSON_GetObjectItem(anyvalue, "stringValue")) && cJSON_IsString(v))
		return v->valuestring;
	if ((v = cJSON_GetObjectItem(anyvalue, "intValue"))) {
		if (cJSON_IsString(v))
			return v->valuestring;
		if (cJSON_IsNumber(v)) {
			snprintf(buf, len, "%.0f", v->valuedouble);
			return buf;
		}
	}
	if ((v = cJSON_GetObjectItem(anyvalue, "doubleValue")) && cJSON_IsNumber(v)) {
		snprintf(buf, len, "%g", v->valuedouble);
		return buf;
	}
	return NULL;
}

/* One OTLP log record: its body when that is an access-log line, else its
 * attributes as the flat dotted keys of the JSON form. */
static void gwsrc__otlp_record(struct gwsrc *g, const cJSON *lr, int *accepted)
{
	const cJSON *body = cJSON_GetObjectItem(lr, "body"), *attrs, *a;
	const char *t = cJSON_GetStringValue(cJSON_GetObjectItem(lr, "timeUnixNano"));
	uint64_t ts = t ? strtoull(t, NULL, 10) : 0;
	char buf[64], *flat;
	const char *s = otlp_str(body, buf, sizeof(buf));
	cJSON *o;
	uint64_t before = g->records;

	if (s && *s && (*s != '{' || strstr(s, "src.addr") || strstr(s, "downstream"))) {
		gwsrc__line(g, "otlp", s, strlen(s), ts);
		*accepted += g->records > before;
		return;
	}
	attrs = cJSON_GetObjectItem(lr, "attributes");
	o = cJSON_CreateObject();
	cJSON_ArrayForEach(a, attrs) {
		const char *k = cJSON_GetStringValue(cJSON_GetObjectItem(a, "key"));
		const char *v = otlp_str(cJSON_GetObjectItem(a, "value"), buf, sizeof(buf));

		if (k && v)
			cJSON_AddStringToObject(o, k, v);
	}
	if (ts && !cJSON_GetObjectItem(o, "time")) {
		time_t sec = ts / 1000000000ULL;
		struct tm tm;
		char tb[64];

		gmtime_r(&sec, &tm);
		strftime(tb, sizeof(tb), "%Y-%m-%dT%H:%M:%S", &tm);
		snprintf(tb + strlen(tb), sizeof(tb) - strlen(tb), ".%09lluZ",
			 (unsigned long long)(ts % 1000000000ULL));
		cJSON_AddStringToObject(o, "time", tb);
	}
	flat = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (!flat)
		return;
	g->lines++;
	gwsrc__line(g, "otlp", flat, strlen(flat), ts);
	*accepted += g->records > before;
	free(flat);
}

int gwsrc__otlp(struct gwsrc *g, const char *body, size_t len, char *err, size_t errlen)
{
	cJSON *req = cJSON_ParseWithLength(body, len), *rl, *sl, *lr;
	int accepted = 0;

	if (!req || !cJSON_IsArray(cJSON_GetObjectItem(req, "resourceLogs"))) {
		snprintf(err, errlen, "not an OTLP JSON ExportLogsServiceRequest (no resourceLogs)");
		gwsrc__count(g, "otlp", "not an OTLP logs request");
		cJSON_Delete(req);
		return -EINVAL;
	}
	cJSON_ArrayForEach(rl, cJSON_GetObjectItem(req, "resourceLogs"))
		cJSON_ArrayForEach(sl, cJSON_GetObjectItem(rl, "scopeLogs"))
			cJSON_ArrayForEach(lr, cJSON_GetObjectItem(sl, "logRecords"))
				gwsrc__otlp_record(g, lr, &accepted);
	cJSON_Delete(req);
	g->otlp_records += accepted;
	return accepted;
}

void gwsrc__prom(const struct gwsrc *g, struct prom *p)
{
	size_t i;

	prom__help(p, "sluice_gateway_lines_total", "counter", "Gateway log lines read.");
	prom__sample(p, "sluice_gateway_lines_total", (double)g->lines, (char *)NULL);
	prom__help(p, "sluice_gateway_records_total", "counter", "Gateway decision records parsed.");
	prom__sample(p, "sluice_gateway_records_total", (double)g->records, (char *)NULL);
	prom__help(p, "sluice_gateway_lines_skipped_total", "counter",
		   "Lines that are not request records (other log targets).");
	prom__sample(p, "sluice_gateway_lines_skipped_total", (double)g->skipped, (char *)NULL);
	prom__help(p, "sluice_gateway_lines_rejected_total", "counter",
		   "Lines that could not be parsed, by source and reason.");
	for (i = 0; i < GWSRC_REASONS && g->reasons[i].why; i++)
		prom__sample(p, "sluice_gateway_lines_rejected_total", (double)g->reasons[i].n,
			     "source", g->reasons[i].source, "reason", g->reasons[i].why, NULL);
	if (g->reasons_other)
		prom__sample(p, "sluice_gateway_lines_rejected_total", (double)g->reasons_other,
			     "source", "any", "reason", "other", NULL);
	if (g->npatterns) {
		prom__help(p, "sluice_gateway_log_files", "gauge",
			   "Gateway log files followed, the --gateway-log patterns' matches included.");
		prom__sample(p, "sluice_gateway_log_files", (double)g->nfiles, (char *)NULL);
		prom__help(p, "sluice_gateway_log_files_dropped_total", "counter",
			   "Pattern matches not followed: too many files.");
		prom__sample(p, "sluice_gateway_log_files_dropped_total", (double)g->files_dropped,
			     (char *)NULL);
	}
	for (i = 0; i < g->nfiles; i++) {
		struct tail_stats ts;

		tail__stats(g->files[i].t, &ts);
		prom__sample(p, "sluice_gateway_log_rotations_total", (double)ts.rotations, "path",
			     g->files[i].path, NULL);
		prom__sample(p, "sluice_gateway_log_truncations_total", (double)ts.truncations, "path",
			     g->files[i].path, NULL);
		prom__sample(p, "sluice_gateway_lines_too_long_total", (double)ts.lines_too_long,
			     "path", g->files[i].path, NULL);
	}
}
