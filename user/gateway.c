// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Gateway access-log lines -> normalized records; CRI log framing. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include "gateway.h"

/* ---- small helpers -------------------------------------------------- */

static bool gw_ws(char c)
{
	return c == ' ' || c == '\t';
}

static bool gw_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Copy N bytes of SRC into DST (size DSTSZ) as a string. A value that does
 * not fit is cut on a UTF-8 character boundary, so that records stay valid
 * text for the JSON writer downstream, and the record is flagged. */
static void gw_copy(char *dst, size_t dstsz, const char *src, size_t n, uint32_t *flags)
{
	if (n >= dstsz) {
		n = dstsz - 1;
		while (n > 0 && ((unsigned char)src[n] & 0xc0) == 0x80)
			n--;
		*flags |= GW_F_TRUNCATED;
	}
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/* Unsigned decimal of exactly LEN digits (LEN <= 9). */
static int gw_num(const char *s, size_t len, unsigned int *v)
{
	unsigned int x = 0;

	if (len == 0 || len > 9)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (!gw_digit(s[i]))
			return -EINVAL;
		x = x * 10 + (unsigned int)(s[i] - '0');
	}
	*v = x;
	return 0;
}

/* ---- time, duration, address ---------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil): no timegm(), no TZ, no locale. */
static int64_t gw_days(int64_t y, unsigned int m, unsigned int d)
{
	int64_t era;
	unsigned int yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned int)(y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static unsigned int gw_mdays(unsigned int y, unsigned int m)
{
	static const unsigned char md[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

	return md[m - 1] + (m == 2 && leap);
}

int gateway__parse_time(const char *s, size_t len, uint64_t *ns)
{
	unsigned int Y, M, D, h, mi, sec, oh = 0, om = 0;
	uint64_t frac = 0, scale = 100000000;
	int64_t days, t;
	size_t i = 19;
	int sign = 0;

	if (len < 20 || s[4] != '-' || s[7] != '-' || s[13] != ':' || s[16] != ':' ||
	    (s[10] != 'T' && s[10] != 't' && s[10] != ' '))
		return -EINVAL;
	if (gw_num(s, 4, &Y) || gw_num(s + 5, 2, &M) || gw_num(s + 8, 2, &D) ||
	    gw_num(s + 11, 2, &h) || gw_num(s + 14, 2, &mi) || gw_num(s + 17, 2, &sec))
		return -EINVAL;
	if (Y < 1970 || M < 1 || M > 12 || D < 1 || D > gw_mdays(Y, M) || h > 23 || mi > 59 ||
	    sec > 60)
		return -EINVAL;
	if (s[i] == '.' || s[i] == ',') {
		size_t start = ++i;

		/* Digits beyond ns are read and dropped, not rounded: a later
		 * end time must never sort before an earlier one. */
		for (; i < len && gw_digit(s[i]); i++) {
			frac += (uint64_t)(s[i] - '0') * scale;
			scale /= 10;
		}
		if (i == start)
			return -EINVAL;
	}
	if (i == len)
		return -EINVAL;	/* RFC 3339 has an offset; without one the zone is a guess */
	if ((s[i] == 'Z' || s[i] == 'z') && i + 1 == len) {
		sign = 0;
	} else if ((s[i] == '+' || s[i] == '-') &&
		   ((i + 6 == len && s[i + 3] == ':' && !gw_num(s + i + 4, 2, &om)) ||
		    (i + 5 == len && !gw_num(s + i + 3, 2, &om))) &&
		   !gw_num(s + i + 1, 2, &oh) && oh < 24 && om < 60) {
		/* "+HHMM" too: Envoy's %z. */
		sign = s[i] == '+' ? 1 : -1;
	} else {
		return -EINVAL;
	}
	days = gw_days(Y, M, D);
	t = days * 86400 + h * 3600 + mi * 60 + sec - sign * (int64_t)(oh * 3600 + om * 60);
	if (t < 0)
		return -EINVAL;
	*ns = (uint64_t)t * 1000000000ull + frac;
	return 0;
}

/* A decimal "I[.F]" as a value in units of UNIT ns: exact for every F
 * that ns can hold. */
static int gw_decimal(const char *s, size_t len, size_t *used, uint64_t unit, uint64_t *ns)
{
	uint64_t ip = 0, fp = 0, fscale = 1;
	size_t i = 0;

	for (; i < len && gw_digit(s[i]); i++) {
		if (ip > (UINT64_MAX - 9) / 10)
			return -EINVAL;
		ip = ip * 10 + (uint64_t)(s[i] - '0');
	}
	if (i == 0)
		return -EINVAL;
	if (i < len && s[i] == '.') {
		size_t start = ++i;

		for (; i < len && gw_digit(s[i]); i++) {
			if (fscale < 1000000000000000000ull) {
				fp = fp * 10 + (uint64_t)(s[i] - '0');
				fscale *= 10;
			}
		}
		if (i == start)
			return -EINVAL;
	}
	if (unit && ip > (UINT64_MAX - unit) / unit)
		return -EINVAL;
	*ns = ip * unit + (fscale > 1 ? (uint64_t)((unsigned __int128)fp * unit / fscale) : 0);
	*used = i;
	return 0;
}

int gateway__parse_duration(const char *s, size_t len, uint64_t unit_ns, uint64_t *ns)
{
	static const struct { const char *u; uint64_t ns; } units[] = {
		{ "ns", 1 }, { "us", 1000 }, { "\xc2\xb5s", 1000 }, { "\xce\xbcs", 1000 },
		{ "ms", 1000000 }, { "s", 1000000000ull }, { "m", 60000000000ull },
		{ "h", 3600000000000ull },
	};
	uint64_t unit = unit_ns ? unit_ns : 1000000;
	size_t num, used;

	/* The unit must be known before the number is scaled. */
	for (num = 0; num < len && (gw_digit(s[num]) || s[num] == '.'); num++)
		;
	if (num < len) {
		size_t ul = len - num;
		size_t k;

		for (k = 0; k < sizeof(units) / sizeof(units[0]); k++)
			if (strlen(units[k].u) == ul && !memcmp(s + num, units[k].u, ul))
				break;
		if (k == sizeof(units) / sizeof(units[0]))
			return -EINVAL;
		unit = units[k].ns;
	}
	if (gw_decimal(s, num, &used, unit, ns) || used != num)
		return -EINVAL;
	return 0;
}

/* A time value: RFC 3339, or an epoch number whose unit follows from its
 * size (s, ms, us or ns: each is three decades apart from the next in any
 * year between 1973 and 5138), for Envoy maps such as %START_TIME(%s.%3f)%. */
static int gw_parse_when(const char *s, size_t len, uint64_t *ns)
{
	size_t idigits = 0, used;
	uint64_t unit;

	while (idigits < len && gw_digit(s[idigits]))
		idigits++;
	if (idigits == 0 || (idigits < len && s[idigits] != '.'))
		return gateway__parse_time(s, len, ns);
	unit = idigits <= 11 ? 1000000000ull : idigits <= 14 ? 1000000ull :
	       idigits <= 17 ? 1000ull : 1;
	if (gw_decimal(s, len, &used, unit, ns) || used != len)
		return -EINVAL;
	return 0;
}

int gateway__parse_peer(const char *s, size_t len, struct gw_record *out)
{
	char host[INET6_ADDRSTRLEN + 1], ip[INET6_ADDRSTRLEN];
	const char *hs, *he, *ps, *pct;
	unsigned int port;
	uint8_t a[16];
	bool v4;

	if (len == 0)
		return -EINVAL;
	if (s[0] == '[') {
		he = memchr(s, ']', len);
		if (!he || he + 1 >= s + len || he[1] != ':')
			return -EINVAL;
		hs = s + 1;
		ps = he + 2;
		/* A zone only means something on the host that wrote it, and
		 * the flow records carry none. */
		pct = memchr(hs, '%', (size_t)(he - hs));
		if (pct)
			he = pct;
		v4 = false;
	} else {
		const char *c = memrchr(s, ':', len);

		if (!c)
			return -EINVAL;
		hs = s;
		he = c;
		ps = c + 1;
		v4 = true;
	}
	if ((size_t)(he - hs) >= sizeof(host) || he == hs)
		return -EINVAL;
	memcpy(host, hs, (size_t)(he - hs));
	host[he - hs] = '\0';
	if ((size_t)(s + len - ps) > 5 || gw_num(ps, (size_t)(s + len - ps), &port) ||
	    port == 0 || port > 65535)
		return -EINVAL;
	memset(a, 0, sizeof(a));
	if (v4) {
		if (inet_pton(AF_INET, host, a + 12) != 1)
			return -EINVAL;
		a[10] = a[11] = 0xff;
	} else {
		static const uint8_t pfx[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

		if (inet_pton(AF_INET6, host, a) != 1)
			return -EINVAL;
		/* A dual-stack listener sees an IPv4 client as ::ffff:a.b.c.d;
		 * the client's own socket, which the flow records describe, is
		 * IPv4. */
		v4 = !memcmp(a, pfx, sizeof(pfx));
	}
	if (v4) {
		inet_ntop(AF_INET, a + 12, ip, sizeof(ip));
		snprintf(out->peer, sizeof(out->peer), "%s:%u", ip, port);
	} else {
		inet_ntop(AF_INET6, a, ip, sizeof(ip));
		snprintf(out->peer, sizeof(out->peer), "[%s]:%u", ip, port);
	}
	memcpy(out->peer_addr, a, sizeof(a));
	out->peer_port = (uint16_t)port;
	out->peer_v4 = v4;
	return 0;
}

/* ---- key map -------------------------------------------------------- */

static const char *const gw_key_names[GW_K_MAX] = {
	[GW_K_PEER] = "peer",
	[GW_K_TIME] = "time",
	[GW_K_START_TIME] = "start_time",
	[GW_K_DURATION] = "duration",
	[GW_K_STATUS] = "status",
	[GW_K_PROTOCOL] = "protocol",
	[GW_K_MCP_METHOD] = "mcp_method",
	[GW_K_MCP_TARGET] = "mcp_target",
	[GW_K_TOOL] = "tool",
	[GW_K_A2A_METHOD] = "a2a_method",
	[GW_K_MODEL] = "model",
	[GW_K_ENDPOINT] = "endpoint",
	[GW_K_IDENTITY] = "identity",
	[GW_K_REASON] = "reason",
	[GW_K_ERROR] = "error",
	[GW_K_ROUTE] = "route",
	[GW_K_GATEWAY] = "gateway",
	[GW_K_REQUEST_ID] = "request_id",
	[GW_K_SESSION] = "session",
	[GW_K_HTTP_METHOD] = "http_method",
	[GW_K_HTTP_PATH] = "http_path",
};

/* agentgateway's keys (design/gateway-and-agents.md) and Envoy's documented
 * MCP example. The two gateways never write the same line, so the order
 * between their keys matters only for the peer, where Envoy's rank by
 * trust: the direct address is the TCP peer, the other may come from
 * X-Forwarded-For or the PROXY protocol. */
static const struct gw_keymap gw_default_map = {
	.keys = {
		[GW_K_PEER] = { "downstream_direct_remote_address", "downstream_remote_address",
				"src.addr" },
		[GW_K_TIME] = { "time" },
		[GW_K_START_TIME] = { "start_time" },
		[GW_K_DURATION] = { "duration" },
		[GW_K_STATUS] = { "http.status", "response_code" },
		[GW_K_PROTOCOL] = { "protocol" },
		[GW_K_MCP_METHOD] = { "mcp.method.name", "mcp.method" },
		[GW_K_MCP_TARGET] = { "mcp.target", "mcp.provider.name" },
		[GW_K_TOOL] = { "gen_ai.tool.name", "mcp.tool.name" },
		[GW_K_A2A_METHOD] = { "a2a.method" },
		[GW_K_MODEL] = { "gen_ai.request.model", "llm.request.model", "gen_ai.response.model",
				 "llm.response.model" },
		[GW_K_ENDPOINT] = { "endpoint", "upstream_host" },
		[GW_K_IDENTITY] = { "src.identity", "jwt.sub" },
		[GW_K_REASON] = { "reason", "response_code_details" },
		[GW_K_ERROR] = { "error", "mcp.error.message" },
		[GW_K_ROUTE] = { "route", "route_name" },
		[GW_K_GATEWAY] = { "gateway" },
		[GW_K_REQUEST_ID] = { "x-request-id", "trace.id" },
		[GW_K_SESSION] = { "mcp.session.id" },
		[GW_K_HTTP_METHOD] = { "http.method", "method" },
		[GW_K_HTTP_PATH] = { "http.path", "path" },
	},
	.duration_unit_ns = 1000000,
};

static int gw_keys_set(struct gw_keymap *km, enum gw_key k, const char *keys, size_t len)
{
	char tmp[GW_KM_ALT][GW_KM_KEYLEN];
	size_t n = 0, i = 0;

	memset(tmp, 0, sizeof(tmp));
	while (i <= len) {
		size_t e = i;

		while (e < len && keys[e] != '|')
			e++;
		if (e == i || n == GW_KM_ALT)
			return -EINVAL;
		if (e - i >= GW_KM_KEYLEN)
			return -ENAMETOOLONG;
		memcpy(tmp[n++], keys + i, e - i);
		i = e + 1;
	}
	memcpy(km->keys[k], tmp, sizeof(tmp));
	return 0;
}

void gateway__keymap_default(struct gw_keymap *km)
{
	*km = gw_default_map;
}

static int gw_keymap_set_n(struct gw_keymap *km, const char *name, size_t nlen,
			   const char *keys, size_t klen)
{
	static const struct { const char *n; uint64_t ns; } units[] = {
		{ "ns", 1 }, { "us", 1000 }, { "ms", 1000000 }, { "s", 1000000000ull },
	};

	if (nlen == strlen("duration_unit") && !memcmp(name, "duration_unit", nlen)) {
		for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
			if (strlen(units[i].n) == klen && !memcmp(keys, units[i].n, klen)) {
				km->duration_unit_ns = units[i].ns;
				return 0;
			}
		}
		return -EINVAL;
	}
	for (int k = 0; k < GW_K_MAX; k++)
		if (strlen(gw_key_names[k]) == nlen && !memcmp(name, gw_key_names[k], nlen))
			return gw_keys_set(km, k, keys, klen);
	return -EINVAL;
}

int gateway__keymap_set(struct gw_keymap *km, const char *name, const char *keys)
{
	return gw_keymap_set_n(km, name, strlen(name), keys, strlen(keys));
}

int gateway__keymap_parse(struct gw_keymap *km, const char *spec, const char **why)
{
	const char *p = spec;
	const char *dummy;

	if (!why)
		why = &dummy;
	while (*p) {
		const char *e = strchrnul(p, ',');
		const char *eq = memchr(p, '=', (size_t)(e - p));
		int err;

		if (!eq) {
			*why = "expected name=key|key";
			return -EINVAL;
		}
		err = gw_keymap_set_n(km, p, (size_t)(eq - p), eq + 1, (size_t)(e - eq - 1));
		if (err) {
			*why = err == -ENAMETOOLONG ? "key too long" :
			       "unknown field, unknown unit, empty key or too many keys";
			return err;
		}
		p = *e ? e + 1 : e;
	}
	return 0;
}

/* ---- one line's fields, whatever the form ---------------------------- */

#define GW_MAX_FIELDS	160

struct gw_field {
	const char *k, *v;
	size_t klen, vlen;
	bool quoted;		/* v is a JSON string literal, quotes included */
};

#define GW_JSON_SLOTS	128	/* power of 2; an index of a line's top-level members */

struct gw_src {
	cJSON *json;		/* JSON form, or NULL */
	struct gw_field *f;	/* text form */
	size_t nf;
	bool indexed;		/* slots hold every top-level member */
	bool nested;		/* some member is an object: dotted keys may nest */
	cJSON *slots[GW_JSON_SLOTS];
};

static uint32_t gw_hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

/* Each key of the map is looked up in every line, most of them absent: a
 * hash of the members instead of cJSON's list walk per key. */
static void gw_json_index(struct gw_src *src)
{
	size_t n = 0;
	cJSON *it;

	memset(src->slots, 0, sizeof(src->slots));
	cJSON_ArrayForEach(it, src->json) {
		uint32_t h;

		if (cJSON_IsObject(it))
			src->nested = true;
		if (!it->string || ++n > GW_JSON_SLOTS / 2)
			return;		/* indexed stays false: the list walk */
		h = gw_hash(it->string);
		while (src->slots[h & (GW_JSON_SLOTS - 1)]) {
			/* The first of duplicate keys wins, as in cJSON. */
			if (!strcmp(src->slots[h & (GW_JSON_SLOTS - 1)]->string, it->string))
				break;
			h++;
		}
		if (!src->slots[h & (GW_JSON_SLOTS - 1)])
			src->slots[h & (GW_JSON_SLOTS - 1)] = it;
	}
	src->indexed = true;
}

static cJSON *gw_json_top(const struct gw_src *src, const char *key)
{
	uint32_t h = gw_hash(key);
	cJSON *it;

	while ((it = src->slots[h & (GW_JSON_SLOTS - 1)])) {
		if (!strcmp(it->string, key))
			return it;
		h++;
	}
	return NULL;
}

static cJSON *gw_json_find(cJSON *obj, const char *key)
{
	cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
	char head[GW_KM_KEYLEN];

	if (it)
		return it;
	/* Configs that nest ({"mcp":{"method":...}}): try each dot as a
	 * level boundary. */
	for (const char *dot = strchr(key, '.'); dot; dot = strchr(dot + 1, '.')) {
		cJSON *child;

		if ((size_t)(dot - key) >= sizeof(head))
			break;
		memcpy(head, key, (size_t)(dot - key));
		head[dot - key] = '\0';
		child = cJSON_GetObjectItemCaseSensitive(obj, head);
		if (cJSON_IsObject(child) && (it = gw_json_find(child, dot + 1)))
			return it;
	}
	return NULL;
}

/* The value of KEY as text into DST. true if present and not null, "" or
 * "-" (Envoy's "no value"). Objects and arrays count as absent: no field of
 * the record is structured. */
static bool gw_get(const struct gw_src *src, const char *key, char *dst, size_t dstsz,
		   uint32_t *flags)
{
	dst[0] = '\0';
	if (src->json) {
		cJSON *it = src->indexed ? gw_json_top(src, key) : NULL;

		if (!src->indexed || (!it && src->nested))
			it = gw_json_find(src->json, key);

		if (cJSON_IsString(it)) {
			gw_copy(dst, dstsz, it->valuestring, strlen(it->valuestring), flags);
		} else if (cJSON_IsNumber(it)) {
			double d = it->valuedouble;

			if (d > -9007199254740992.0 && d < 9007199254740992.0 &&
			    (double)(long long)d == d)
				snprintf(dst, dstsz, "%lld", (long long)d);
			else
				snprintf(dst, dstsz, "%.17g", d);
		} else if (cJSON_IsBool(it)) {
			snprintf(dst, dstsz, "%s", cJSON_IsTrue(it) ? "true" : "false");
		}
	} else {
		size_t klen = strlen(key);

		for (size_t i = 0; i < src->nf; i++) {
			const struct gw_field *f = &src->f[i];
			cJSON *s;

			if (f->klen != klen || memcmp(f->k, key, klen))
				continue;
			if (!f->quoted) {
				gw_copy(dst, dstsz, f->v, f->vlen, flags);
				break;
			}
			/* Rare (fields added by CEL): let cJSON undo the escapes. */
			s = cJSON_ParseWithLength(f->v, f->vlen);
			if (cJSON_IsString(s))
				gw_copy(dst, dstsz, s->valuestring, strlen(s->valuestring), flags);
			else
				gw_copy(dst, dstsz, f->v, f->vlen, flags);
			cJSON_Delete(s);
			break;
		}
	}
	if (!strcmp(dst, "-"))
		dst[0] = '\0';
	return dst[0] != '\0';
}

/* The first present key of field K. KEYOUT (if not NULL) gets its name. */
static bool gw_get_field(const struct gw_src *src, const struct gw_keymap *km, enum gw_key k,
			 char *dst, size_t dstsz, uint32_t *flags, char *keyout)
{
	for (int i = 0; i < GW_KM_ALT && km->keys[k][i][0]; i++) {
		uint32_t fl = 0;

		if (gw_get(src, km->keys[k][i], dst, dstsz, &fl)) {
			*flags |= fl;
			if (keyout)
				snprintf(keyout, GW_KM_KEYLEN, "%s", km->keys[k][i]);
			return true;
		}
	}
	return false;
}

/* ---- agentgateway text form ----------------------------------------- */

/* Keys agentgateway writes (v1.4 and older builds). */
static const char *const gw_ag_keys[] = {
	"gateway", "listener", "route", "route_rule", "endpoint", "protocol", "src.addr",
	"src.identity", "tls.sni", "http.method", "http.host", "http.path", "http.version",
	"http.status", "jwt.sub", "trace.id", "span.id", "error", "reason", "duration", "time",
	"mcp.method.name", "mcp.method", "mcp.target", "mcp.resource", "mcp.resource.type",
	"mcp.resource.uri", "mcp.resource.name", "gen_ai.tool.name", "gen_ai.prompt.name",
	"mcp.session.id", "mcp.error.code", "mcp.error.message", "a2a.method",
	"a2a.response.outcome", "a2a.task.state", "a2a.context.id", "gen_ai.operation.name",
	"gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model",
	"gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.request.temperature",
	"gen_ai.request.max_tokens", "llm.provider", "llm.request.model", "llm.request.tokens",
	"llm.response.model", "llm.response.tokens",
};

/* Keys whose values are prose (error messages): inside them only a known
 * key starts the next field. */
static bool gw_prose_key(const char *k, size_t klen)
{
	return (klen == 5 && !memcmp(k, "error", 5)) ||
	       (klen == 17 && !memcmp(k, "mcp.error.message", 17));
}

static bool gw_known_key(const struct gw_keymap *km, const char *k, size_t klen)
{
	/* Called per token of every line: the first byte rules most out. */
	for (size_t i = 0; i < sizeof(gw_ag_keys) / sizeof(gw_ag_keys[0]); i++)
		if (gw_ag_keys[i][0] == k[0] && !strncmp(gw_ag_keys[i], k, klen) &&
		    !gw_ag_keys[i][klen])
			return true;
	for (int f = 0; f < GW_K_MAX; f++)
		for (int i = 0; i < GW_KM_ALT && km->keys[f][i][0]; i++)
			if (km->keys[f][i][0] == k[0] && !strncmp(km->keys[f][i], k, klen) &&
			    !km->keys[f][i][klen])
				return true;
	return false;
}

/* Length of the key if the token [S, E) reads "KEY=...", else 0. The key
 * grammar: [A-Za-z_][A-Za-z0-9_.-]*, not ending in '.' or '-', shorter
 * than GW_KM_KEYLEN. */
static size_t gw_key_len(const char *s, const char *e)
{
	size_t n = 0;

	if (s == e || !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
		return 0;
	for (n = 1; s + n < e && s[n] != '='; n++) {
		char c = s[n];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || gw_digit(c) ||
		      c == '_' || c == '.' || c == '-'))
			return 0;
	}
	if (s + n == e || n >= GW_KM_KEYLEN || s[n - 1] == '.' || s[n - 1] == '-')
		return 0;
	return n;
}

/* End of a JSON string literal starting at Q ('"'), if it is followed by
 * a blank or the end of the line; else NULL. */
static const char *gw_quoted_end(const char *q, const char *end)
{
	for (const char *p = q + 1; p < end; p++) {
		if (*p == '\\') {
			p++;
			continue;
		}
		if (*p == '"' && (p + 1 == end || gw_ws(p[1])))
			return p + 1;
	}
	return NULL;
}

/*
 * The tokenizer rule. Fields are "key=value" separated by blanks, and a
 * value runs up to the blank before the next field. A blank-separated token
 * starts the next field only if it reads KEY=... with KEY in the key
 * grammar (gw_key_len) and
 *   - KEY is one agentgateway writes or one the key map names, or
 *   - the current value is not prose (error, mcp.error.message).
 * Any other token continues the current value, blank included. So
 * "error=authentication failure: no bearer token found duration=0ms" gives
 * error="authentication failure: no bearer token found", and an error text
 * that holds "status=503" stays whole, while an unknown field (added by the
 * operator's config) after an ordinary value still splits. A value that
 * starts with '"' and is a JSON string literal ending at a blank (what CEL
 * fields look like) is taken whole, blanks and '=' included. An empty value
 * ("llm.request.model= llm...") is empty.
 */
static int gw_text_fields(const struct gw_keymap *km, const char *p, const char *end,
			  struct gw_field *f, size_t *nf, uint32_t *flags)
{
	size_t n = 0;
	bool cur = false, dropped = false;

	while (p < end) {
		const char *ts, *te;
		size_t klen;
		bool start;

		while (p < end && gw_ws(*p))
			p++;
		if (p == end)
			break;
		ts = p;
		te = ts;
		while (te < end && !gw_ws(*te))
			te++;
		klen = gw_key_len(ts, te);
		start = klen && (!cur || gw_known_key(km, ts, klen) ||
				 (!dropped && !gw_prose_key(f[n - 1].k, f[n - 1].klen)));
		if (!start) {
			if (!cur)
				return -EBADMSG;
			if (!dropped)
				f[n - 1].vlen = (size_t)(te - f[n - 1].v);
			p = te;
			continue;
		}
		if (n == GW_MAX_FIELDS) {
			/* Past the cap: skip fields, keep the ones read. */
			*flags |= GW_F_TRUNCATED;
			dropped = cur = true;
			p = te;
			continue;
		}
		dropped = false;
		cur = true;
		f[n] = (struct gw_field){ .k = ts, .klen = klen, .v = ts + klen + 1 };
		f[n].vlen = (size_t)(te - f[n].v);
		if (f[n].vlen && *f[n].v == '"') {
			const char *qe = gw_quoted_end(f[n].v, end);

			if (qe) {
				f[n].vlen = (size_t)(qe - f[n].v);
				f[n].quoted = true;
				te = qe;
			}
		}
		n++;
		p = te;
	}
	*nf = n;
	return 0;
}

static bool gw_level(const char *s, size_t len)
{
	static const char *const levels[] = { "trace", "debug", "info", "warn", "warning", "error" };

	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (strlen(levels[i]) == len && !strncasecmp(levels[i], s, len))
			return true;
	return false;
}

/* ---- records -------------------------------------------------------- */

/* Everything after the source is known: the same for all forms. */
static int gw_fill(const struct gw_src *src, const struct gw_keymap *km, uint64_t line_time,
		   struct gw_record *out, const char **why)
{
	char v[256];
	uint32_t fl = 0;
	uint64_t start = 0;
	bool have_start = false;

	if (!gw_get_field(src, km, GW_K_PEER, v, sizeof(v), &fl, NULL)) {
		*why = "no peer address";
		return -EBADMSG;
	}
	if (gateway__parse_peer(v, strlen(v), out)) {
		/* Envoy's internal listeners and unix-socket listeners have
		 * peers that are no TCP address: nothing for the kernel side to
		 * meet, and the outer hop of the same request has the agent. */
		if (!strncmp(v, "envoy://", 8) || v[0] == '/' || v[0] == '@' ||
		    !strncmp(v, "unix:", 5)) {
			*why = "peer is not an IP address (internal listener or unix socket)";
			return -ENOMSG;
		}
		*why = "bad peer address";
		return -EBADMSG;
	}

	if (gw_get_field(src, km, GW_K_DURATION, v, sizeof(v), &fl, NULL) &&
	    gateway__parse_duration(v, strlen(v), km->duration_unit_ns, &out->duration_ns)) {
		*why = "bad duration";
		return -EBADMSG;
	}
	if (line_time) {
		out->time_ns = line_time;
	} else if (gw_get_field(src, km, GW_K_TIME, v, sizeof(v), &fl, NULL)) {
		if (gw_parse_when(v, strlen(v), &out->time_ns)) {
			*why = "bad time";
			return -EBADMSG;
		}
	} else if (gw_get_field(src, km, GW_K_START_TIME, v, sizeof(v), &fl, NULL)) {
		if (gw_parse_when(v, strlen(v), &start)) {
			*why = "bad start time";
			return -EBADMSG;
		}
		have_start = true;
	}
	if (have_start) {
		out->time_ns = start + out->duration_ns;
		out->flags |= GW_F_TIME_FROM_START;
	}

	if (gw_get_field(src, km, GW_K_STATUS, v, sizeof(v), &fl, NULL)) {
		char *e;
		long st;

		errno = 0;
		st = strtol(v, &e, 10);
		if (errno || *e || e == v || st < 0 || st > 999) {
			*why = "bad status";
			return -EBADMSG;
		}
		out->status = (int)st;
	}

#define GW_STR(k, field) gw_get_field(src, km, k, out->field, sizeof(out->field), &fl, NULL)
	GW_STR(GW_K_PROTOCOL, protocol);
	GW_STR(GW_K_MCP_METHOD, mcp_method);
	GW_STR(GW_K_MCP_TARGET, mcp_target);
	GW_STR(GW_K_TOOL, tool);
	GW_STR(GW_K_A2A_METHOD, a2a_method);
	GW_STR(GW_K_MODEL, model);
	GW_STR(GW_K_ENDPOINT, endpoint);
	GW_STR(GW_K_REASON, reason);
	GW_STR(GW_K_ERROR, error);
	GW_STR(GW_K_ROUTE, route);
	GW_STR(GW_K_GATEWAY, gateway);
	GW_STR(GW_K_REQUEST_ID, request_id);
	GW_STR(GW_K_SESSION, session);
	GW_STR(GW_K_HTTP_METHOD, http_method);
	GW_STR(GW_K_HTTP_PATH, http_path);
#undef GW_STR
	gw_get_field(src, km, GW_K_IDENTITY, out->identity, sizeof(out->identity), &fl,
		     out->identity_key);

	/* Older agentgateway builds: mcp.resource=tool mcp.resource.name=X. */
	if (!out->tool[0] && (gw_get(src, "mcp.resource.type", v, sizeof(v), &fl) ||
			      gw_get(src, "mcp.resource", v, sizeof(v), &fl)) && !strcmp(v, "tool"))
		gw_get(src, "mcp.resource.name", out->tool, sizeof(out->tool), &fl);
	/* Envoy's "served by the upstream" is agentgateway's absent reason. */
	if (!strcmp(out->reason, "via_upstream"))
		out->reason[0] = '\0';

	if (!out->protocol[0]) {
		const char *p = "http";

		if (out->mcp_method[0] || out->tool[0] || out->mcp_target[0])
			p = "mcp";
		else if (out->a2a_method[0])
			p = "a2a";
		else if (out->model[0] || gw_get(src, "gen_ai.operation.name", v, sizeof(v), &fl) ||
			 gw_get(src, "gen_ai.provider.name", v, sizeof(v), &fl) ||
			 gw_get(src, "llm.provider", v, sizeof(v), &fl))
			p = "llm";
		snprintf(out->protocol, sizeof(out->protocol), "%s", p);
		out->flags |= GW_F_PROTOCOL_INFERRED;
	}
	out->flags |= fl;
	return 0;
}

static int gw_parse_json(enum gw_format fmt, const struct gw_keymap *km, const char *s,
			 size_t len, struct gw_record *out, const char **why)
{
	const char *end = NULL;
	struct gw_src src = { 0 };
	cJSON *scope;
	int err;

	src.json = cJSON_ParseWithLengthOpts(s, len, &end, false);
	if (!src.json) {
		*why = "bad json";
		return -EBADMSG;
	}
	while (end && end < s + len && (gw_ws(*end) || *end == '\r' || *end == '\n'))
		end++;
	if (!end || end != s + len) {
		*why = "bad json";
		err = -EBADMSG;
		goto out;
	}
	if (!cJSON_IsObject(src.json)) {
		*why = "not a JSON object";
		err = -EBADMSG;
		goto out;
	}
	scope = cJSON_GetObjectItemCaseSensitive(src.json, "scope");
	if (!scope)
		scope = cJSON_GetObjectItemCaseSensitive(src.json, "target");
	if (fmt == GW_AUTO)
		fmt = scope ? GW_AGENTGATEWAY : GW_ENVOY;
	if (fmt == GW_AGENTGATEWAY && scope &&
	    !(cJSON_IsString(scope) && !strcmp(scope->valuestring, "request"))) {
		*why = "not a request record";
		err = -ENOMSG;
		goto out;
	}
	out->format = fmt;
	gw_json_index(&src);
	err = gw_fill(&src, km, 0, out, why);
out:
	cJSON_Delete(src.json);
	return err;
}

static int gw_parse_text(const struct gw_keymap *km, const char *s, size_t len,
			 struct gw_record *out, const char **why)
{
	struct gw_field f[GW_MAX_FIELDS];
	const char *p = s, *end = s + len, *te;
	struct gw_src src = { .f = f };
	uint64_t t = 0;
	bool prefix = false;
	uint32_t fl = 0;

#define GW_NEXT() do { p = te; while (p < end && gw_ws(*p)) p++; \
		       for (te = p; te < end && !gw_ws(*te); te++) ; } while (0)
	te = p;
	GW_NEXT();
	if (!gateway__parse_time(p, (size_t)(te - p), &t)) {
		prefix = true;
		GW_NEXT();
	}
	if (gw_level(p, (size_t)(te - p))) {
		prefix = true;
		GW_NEXT();
	}
#undef GW_NEXT
	if ((size_t)(te - p) == 7 && !memcmp(p, "request", 7)) {
		p = te;
	} else if (prefix) {
		*why = "not a request record";
		return -ENOMSG;
	} else if (!gw_key_len(p, te)) {
		*why = "unrecognized line";
		return -EBADMSG;
	}
	/* else: bare fields, as the docs quote fragments of request lines */
	if (gw_text_fields(km, p, end, f, &src.nf, &fl)) {
		*why = "text before the first key=value";
		return -EBADMSG;
	}
	out->format = GW_AGENTGATEWAY;
	out->flags |= fl;
	return gw_fill(&src, km, t, out, why);
}

int gateway__parse_line(enum gw_format fmt, const struct gw_keymap *km, const char *line,
			size_t len, struct gw_record *out, const char **why)
{
	const char *dummy;

	if (!why)
		why = &dummy;
	*why = NULL;
	memset(out, 0, sizeof(*out));
	if (!km)
		km = &gw_default_map;
	while (len && (gw_ws(line[len - 1]) || line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	while (len && gw_ws(*line)) {
		line++;
		len--;
	}
	if (!len) {
		*why = "empty line";
		return -ENOMSG;
	}
	if (line[0] == '{')
		return gw_parse_json(fmt, km, line, len, out, why);
	/* Envoy's own log lines share its container log:
	 * "[2025-10-08 10:42:11.430][1][info][main] ..." */
	if (fmt != GW_AGENTGATEWAY && len > 5 && line[0] == '[' && gw_digit(line[1]) &&
	    gw_digit(line[2]) && gw_digit(line[3]) && gw_digit(line[4]) && line[5] == '-') {
		*why = "not a request record";
		return -ENOMSG;
	}
	if (fmt == GW_ENVOY) {
		*why = "not a JSON object";
		return -EBADMSG;
	}
	return gw_parse_text(km, line, len, out, why);
}

/* ---- CRI framing ----------------------------------------------------- */

void cri__init(struct cri_joiner *j)
{
	memset(j, 0, sizeof(*j));
}

static void cri_part_reset(struct cri_part *p)
{
	/* A buffer grown by one huge line is not kept for the rest of the
	 * daemon's life. */
	if (p->cap > 65536) {
		free(p->buf);
		p->buf = NULL;
		p->cap = 0;
	}
	p->len = 0;
	p->fragments = 0;
	p->truncated = false;
	p->time_ns = 0;
}

static int cri_append(struct cri_part *p, const char *s, size_t n)
{
	if (p->len + n > CRI_MAX_LINE) {
		n = CRI_MAX_LINE - p->len;
		p->truncated = true;
	}
	if (p->len + n + 1 > p->cap) {
		size_t cap = p->cap ? p->cap : 256;
		char *b;

		while (cap < p->len + n + 1)
			cap *= 2;
		if (cap > CRI_MAX_LINE + 1)
			cap = CRI_MAX_LINE + 1;
		b = realloc(p->buf, cap);
		if (!b)
			return -ENOMEM;
		p->buf = b;
		p->cap = cap;
	}
	memcpy(p->buf + p->len, s, n);
	p->len += n;
	p->buf[p->len] = '\0';
	return 0;
}

int cri__feed(struct cri_joiner *j, const char *line, size_t len, cri_line_fn cb, void *ctx,
	      const char **why)
{
	const char *end, *ts, *te, *ss, *se, *gs, *ge, *content;
	const char *dummy;
	struct cri_part *p;
	struct cri_meta m;
	uint64_t t;
	int stream, err;
	bool partial;

	if (!why)
		why = &dummy;
	if (len && line[len - 1] == '\n')
		len--;
	end = line + len;
	ts = line;
	te = memchr(ts, ' ', len);
	if (!te)
		goto bad;
	ss = te + 1;
	se = memchr(ss, ' ', (size_t)(end - ss));
	if (!se)
		goto bad;
	gs = se + 1;
	for (ge = gs; ge < end && *ge != ' '; ge++)
		;
	content = ge < end ? ge + 1 : end;
	if (gateway__parse_time(ts, (size_t)(te - ts), &t))
		goto bad;
	if (se - ss == 6 && !memcmp(ss, "stdout", 6))
		stream = 0;
	else if (se - ss == 6 && !memcmp(ss, "stderr", 6))
		stream = 1;
	else
		goto bad;
	/* Tags are ':'-separated; the first says partial or full. */
	if (ge == gs || (*gs != 'P' && *gs != 'F') || (ge - gs > 1 && gs[1] != ':'))
		goto bad;
	partial = *gs == 'P';

	p = &j->part[stream];
	if (!p->fragments)
		p->time_ns = t;
	err = cri_append(p, content, (size_t)(end - content));
	if (err)
		return err;
	p->fragments++;
	if (partial) {
		j->st.fragments++;
		return 0;
	}
	m = (struct cri_meta){ .time_ns = p->time_ns, .stream = stream, .truncated = p->truncated,
			       .fragments = p->fragments };
	j->st.lines++;
	if (p->truncated)
		j->st.truncated++;
	err = cb(ctx, p->buf, p->len, &m);
	cri_part_reset(p);
	return err < 0 ? err : 0;
bad:
	j->st.malformed++;
	*why = "not a CRI log line";
	return -EBADMSG;
}

void cri__reset(struct cri_joiner *j)
{
	for (int i = 0; i < 2; i++)
		cri_part_reset(&j->part[i]);
}

void cri__free(struct cri_joiner *j)
{
	for (int i = 0; i < 2; i++)
		free(j->part[i].buf);
	memset(j, 0, sizeof(*j));
}
