/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Gateway decision logs, the input side of the correlation: one access-log
 * line of an AI gateway -> one normalized record (struct gw_record), and the
 * CRI container-log framing that Kubernetes wraps around those lines.
 *
 * Readers:
 * - agentgateway, text form: "<RFC3339>\t<level>\trequest k=v k=v ...". The
 *   time and level are optional (kubectl without --timestamps, or the
 *   docs' copies); tabs or spaces separate them. Values may hold spaces;
 *   see gateway.c (gw_text_fields) for the tokenizer rule.
 * - agentgateway, JSON form: one flat object per line, literal dotted keys
 *   ("src.addr"), "scope":"request" for request records.
 * - Envoy / Envoy AI Gateway: whatever JSON map the operator configured;
 *   struct gw_keymap says which key holds what. Envoy's text access-log
 *   format has no fixed schema and is not read.
 *
 * GW_AUTO decides per line: a JSON object with a "scope" (or "target") key
 * is agentgateway's, any other object Envoy's, any other text agentgateway's
 * text form. One key map serves all three: its default lists agentgateway's
 * and Envoy's documented keys side by side (they never meet in one line).
 *
 * Results: 0 and a record; -ENOMSG for a line that is no request record
 * (another log target, Envoy's own "[date][thread][level]" lines, an
 * internal-listener hop, a blank line): skipped, not an error; -EBADMSG for
 * a line that cannot be read; *why then names the cause (a static string).
 *
 * Library code: no printing, no global state, no allocation beyond cJSON's
 * while a JSON line is parsed.
 */
#ifndef SLUICE_GATEWAY_H
#define SLUICE_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gw_format { GW_AUTO, GW_AGENTGATEWAY, GW_ENVOY };

/* What a record field is read from; the names are those of
 * gateway__keymap_set(). */
enum gw_key {
	GW_K_PEER,		/* TCP peer ip:port */
	GW_K_TIME,		/* request end (RFC 3339 or epoch number) */
	GW_K_START_TIME,	/* request start; end = start + duration */
	GW_K_DURATION,		/* "3ms", "1.2s", or a number in duration_unit_ns */
	GW_K_STATUS,
	GW_K_PROTOCOL,
	GW_K_MCP_METHOD,
	GW_K_MCP_TARGET,
	GW_K_TOOL,
	GW_K_A2A_METHOD,
	GW_K_MODEL,
	GW_K_ENDPOINT,
	GW_K_IDENTITY,
	GW_K_REASON,
	GW_K_ERROR,
	GW_K_ROUTE,
	GW_K_GATEWAY,
	GW_K_REQUEST_ID,
	GW_K_SESSION,
	GW_K_HTTP_METHOD,
	GW_K_HTTP_PATH,
	GW_K_MAX
};

#define GW_KM_ALT	6	/* keys tried per field */
#define GW_KM_KEYLEN	64	/* a key, NUL included */

/*
 * For each field, keys tried in order: the first one present with a value
 * that is not null, "" or "-" wins. A dotted key that is not found as such
 * is also looked up as a path through nested JSON objects ("mcp.method.name"
 * finds {"mcp":{"method":{"name":...}}}).
 */
struct gw_keymap {
	char keys[GW_K_MAX][GW_KM_ALT][GW_KM_KEYLEN];	/* "" ends a list */
	uint64_t duration_unit_ns;	/* for a duration without unit; 0: ms */
};

#define GW_F_TIME_FROM_START	(1u << 0)  /* time_ns = start + duration (Envoy) */
#define GW_F_PROTOCOL_INFERRED	(1u << 1)  /* no protocol key; taken from the fields */
#define GW_F_TRUNCATED		(1u << 2)  /* a value did not fit its field */

struct gw_record {
	uint64_t time_ns;	/* request end, CLOCK_REALTIME ns; 0: the line has no time
				 * (use the CRI time of the line) */
	uint64_t duration_ns;	/* start = time_ns - duration_ns */
	char peer[64];		/* "ip:port" / "[v6]:port", inet_ntop form; a v4-mapped
				 * IPv6 peer is written as IPv4 */
	uint8_t peer_addr[16];	/* IPv4 as v4-mapped IPv6 */
	uint16_t peer_port;
	bool peer_v4;
	enum gw_format format;	/* the reader that took the line */
	int status;		/* HTTP status; 0 if absent (or Envoy's "no response") */
	uint32_t flags;		/* GW_F_* */
	char protocol[16];	/* mcp, llm, a2a, http, ... */
	char mcp_method[64];
	char mcp_target[128];	/* agentgateway mcp.target, Envoy mcp.provider.name */
	char tool[128];
	char a2a_method[64];
	char model[128];
	char endpoint[256];	/* upstream host:port */
	char identity[256];	/* SPIFFE id or JWT claim ... */
	char identity_key[GW_KM_KEYLEN]; /* ... and the key it came from */
	char reason[128];	/* agentgateway reason; Envoy response_code_details, which
				 * does not fit 32 ("via_upstream" reads as none) */
	char error[256];
	char route[128];
	char gateway[128];
	char request_id[128];	/* x-request-id, or trace.id */
	char session[128];	/* mcp.session.id */
	char http_method[16];
	char http_path[256];
};

/* The default map: agentgateway's keys and the Envoy documentation's. */
void gateway__keymap_default(struct gw_keymap *km);
/* Replace the keys of field NAME ("peer", "start_time", "tool", ...) with
 * KEYS, '|'-separated, in order of preference; "duration_unit" takes
 * ns|us|ms|s. -EINVAL: unknown name, empty key, or too many; -ENAMETOOLONG. */
int gateway__keymap_set(struct gw_keymap *km, const char *name, const char *keys);
/* SPEC: "name=k1|k2,name=k3", applied on top of what KM holds. On error
 * *why says what was wrong (static) and KM may be partly changed. */
int gateway__keymap_parse(struct gw_keymap *km, const char *spec, const char **why);

/* Parse one line (a trailing newline is ignored). KM NULL: the default map.
 * See the top of this file for the results. */
int gateway__parse_line(enum gw_format fmt, const struct gw_keymap *km, const char *line,
			size_t len, struct gw_record *out, const char **why);

/* RFC 3339 ("2025-07-10T18:10:46.547567Z", offsets, 'T' or ' ', up to ns)
 * -> CLOCK_REALTIME ns. 0 or -EINVAL. */
int gateway__parse_time(const char *s, size_t len, uint64_t *ns);
/* "3ms", "2603ms", "1.2s", "12.5µs", "100ns", "1m"; a bare number is in
 * UNIT_NS (0: ms). 0 or -EINVAL. */
int gateway__parse_duration(const char *s, size_t len, uint64_t unit_ns, uint64_t *ns);
/* "1.2.3.4:80", "[::1]:80" (a "%zone" is dropped) -> the fields of OUT's
 * peer. 0 or -EINVAL. */
int gateway__parse_peer(const char *s, size_t len, struct gw_record *out);

/*
 * CRI container logs (/var/log/pods/<ns>_<pod>_<uid>/<container>/N.log):
 * "<RFC3339Nano> stdout|stderr P|F <content>". The runtime splits long
 * lines into P (partial) fragments ended by an F fragment; the joiner glues
 * them back, separately per stream (stdout and stderr fragments may
 * interleave). A joined line longer than CRI_MAX_LINE is cut there and
 * delivered with truncated set (and counted).
 */
#define CRI_MAX_LINE	(1u << 20)

struct cri_meta {
	uint64_t time_ns;	/* the first fragment's time, CLOCK_REALTIME ns */
	int stream;		/* 0 stdout, 1 stderr */
	bool truncated;
	unsigned int fragments;	/* 1 for an unsplit line */
};

/* LINE is NUL-terminated (line[len] == 0) and valid during the call. A
 * negative return stops cri__feed(), which returns it. */
typedef int (*cri_line_fn)(void *ctx, const char *line, size_t len, const struct cri_meta *m);

struct cri_stats {
	uint64_t lines;		/* delivered */
	uint64_t fragments;	/* P fragments joined */
	uint64_t truncated;	/* delivered cut at CRI_MAX_LINE */
	uint64_t malformed;	/* not CRI framing; dropped */
};

struct cri_part {
	char *buf;
	size_t len, cap;
	uint64_t time_ns;
	unsigned int fragments;
	bool truncated;
};

struct cri_joiner {
	struct cri_part part[2];	/* stdout, stderr */
	struct cri_stats st;
};

void cri__init(struct cri_joiner *j);
/* One line of the file (no newline needed). 0; -EBADMSG for a line that is
 * not CRI framing (counted, dropped; *why if WHY); -ENOMEM; or the callback's
 * negative return. */
int cri__feed(struct cri_joiner *j, const char *line, size_t len, cri_line_fn cb, void *ctx,
	      const char **why);
/* Forget partial lines (the file was rotated or truncated under them). */
void cri__reset(struct cri_joiner *j);
void cri__free(struct cri_joiner *j);

#endif
