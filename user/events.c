// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Flow records. Rendering is hand-written rather than built with cJSON
 * trees: it runs once per kernel event and must keep up with the ring.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include "cgroup.h"
#include "datapath.h"
#include "events.h"
#include "policy.h"

#define NAMES_BUCKETS_MIN	1024	/* grows with the entries, to one per bucket */
#define NAMES_MAX		65536

/* Every rule of every set has one: kept small (10k rules, 0.6 MiB). */
struct name_ent {
	struct name_ent *next;
	uint64_t key;		/* set << 32 | rule, or cgroup id */
	int kind;		/* 0 rule, 1 set, 2 cgroup */
	uint8_t class;		/* rule */
	uint8_t action;
	const char *policy;	/* rule: interned, the rules of a policy share it */
	char text[];		/* rule: name; set: policies; cgroup: path; sized to fit */
};

#define NAME_TEXT_MAX	256	/* longer texts are cut */
#define POL_BUCKETS	64

struct pol_str {
	struct pol_str *next;
	char s[];
};

struct events_names {
	struct name_ent **b;
	size_t nb;		/* buckets, a power of 2 */
	unsigned int bits;
	size_t n;
	struct pol_str *pols[POL_BUCKETS];
	struct sl_rule_meta scratch;	/* what events__rule() returns */
	const struct name_ent *scratch_of;	/* the entry it holds, or NULL */
};

static const char *names__intern(struct events_names *n, const char *s)
{
	uint32_t h = 2166136261u;
	struct pol_str *p;
	size_t len = strnlen(s, SL_NAME_LEN - 1);

	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)s[i]) * 16777619u;
	for (p = n->pols[h % POL_BUCKETS]; p; p = p->next)
		if (!strncmp(p->s, s, len) && !p->s[len])
			return p->s;
	p = calloc(1, sizeof(*p) + len + 1);
	if (!p)
		return NULL;
	memcpy(p->s, s, len);
	p->next = n->pols[h % POL_BUCKETS];
	n->pols[h % POL_BUCKETS] = p;
	return p->s;
}

static size_t names__slot(uint64_t key, int kind, unsigned int bits)
{
	key ^= (uint64_t)kind * 0x9e3779b97f4a7c15ULL;
	key *= 0xff51afd7ed558ccdULL;
	return (size_t)(key >> (64 - bits));
}

static size_t names__hash(const struct events_names *n, uint64_t key, int kind)
{
	return names__slot(key, kind, n->bits);
}

static struct name_ent *names__find(struct events_names *n, uint64_t key, int kind)
{
	struct name_ent *e;

	for (e = n->b[names__hash(n, key, kind)]; e; e = e->next)
		if (e->key == key && e->kind == kind)
			return e;
	return NULL;
}

static void names__clear(struct events_names *n)
{
	for (size_t i = 0; i < n->nb; i++) {
		while (n->b[i]) {
			struct name_ent *e = n->b[i];

			n->b[i] = e->next;
			free(e);
		}
	}
	n->n = 0;
	n->scratch_of = NULL;
	for (size_t i = 0; i < POL_BUCKETS; i++) {
		while (n->pols[i]) {
			struct pol_str *p = n->pols[i];

			n->pols[i] = p->next;
			free(p);
		}
	}
}

/* Registering the names of a 10k-rule set must not walk long chains: it
 * happens before the set is put in force. */
static void names__grow(struct events_names *n)
{
	size_t nb = n->nb * 2;
	struct name_ent **b;

	if (n->n < n->nb || nb > NAMES_MAX)
		return;
	b = calloc(nb, sizeof(*b));
	if (!b)
		return;		/* longer chains, still correct */
	for (size_t i = 0; i < n->nb; i++) {
		while (n->b[i]) {
			struct name_ent *e = n->b[i];
			size_t h = names__slot(e->key, e->kind, n->bits + 1);

			n->b[i] = e->next;
			e->next = b[h];
			b[h] = e;
		}
	}
	free(n->b);
	n->b = b;
	n->nb = nb;
	n->bits++;
}

static void names__link(struct events_names *n, struct name_ent *e)
{
	size_t h;

	names__grow(n);
	h = names__hash(n, e->key, e->kind);
	e->next = n->b[h];
	n->b[h] = e;
	n->n++;
}

/* Bounded: a long-running reader sees many cgroups come and go. */
static void names__room(struct events_names *n)
{
	if (n->n >= NAMES_MAX)
		names__clear(n);
}

static void names__unlink(struct events_names *n, struct name_ent *e);

static struct name_ent *names__add_rule(struct events_names *n, uint64_t key,
				       const struct sl_rule_meta *meta)
{
	size_t len = strnlen(meta->rule, sizeof(meta->rule) - 1);
	struct name_ent *e = names__find(n, key, 0);
	const char *pol;

	if (e && e->policy && !strncmp(e->policy, meta->policy, sizeof(meta->policy)) &&
	    !strncmp(e->text, meta->rule, len) && !e->text[len]) {
		e->class = meta->class;
		e->action = meta->action;
		if (n->scratch_of == e)
			n->scratch_of = NULL;
		return e;
	}
	if (e)
		names__unlink(n, e);
	names__room(n);
	pol = names__intern(n, meta->policy);
	e = pol ? calloc(1, sizeof(*e) + len + 1) : NULL;
	if (!e)
		return NULL;
	e->key = key;
	e->kind = 0;
	e->class = meta->class;
	e->action = meta->action;
	e->policy = pol;
	memcpy(e->text, meta->rule, len);
	names__link(n, e);
	return e;
}

static const struct sl_rule_meta *names__meta(struct events_names *n, const struct name_ent *e)
{
	struct sl_rule_meta *m = &n->scratch;

	/* Records of one rule come in runs: the copy is kept. */
	if (n->scratch_of == e)
		return m;
	memset(m, 0, sizeof(*m));
	memcpy(m->policy, e->policy, strnlen(e->policy, sizeof(m->policy) - 1));
	memcpy(m->rule, e->text, strnlen(e->text, sizeof(m->rule) - 1));
	m->class = e->class;
	m->action = e->action;
	n->scratch_of = e;
	return m;
}

static void names__unlink(struct events_names *n, struct name_ent *e)
{
	struct name_ent **pp = &n->b[names__hash(n, e->key, e->kind)];

	while (*pp != e)
		pp = &(*pp)->next;
	*pp = e->next;
	n->n--;
	if (n->scratch_of == e)
		n->scratch_of = NULL;
	free(e);
}

/* A set's or a cgroup's text, cut at NAME_TEXT_MAX - 1 bytes. */
static struct name_ent *names__put_text(struct events_names *n, uint64_t key, int kind,
					const char *text)
{
	size_t len = strnlen(text, NAME_TEXT_MAX - 1);
	struct name_ent *e = names__find(n, key, kind);

	if (e && !strncmp(e->text, text, len) && !e->text[len])
		return e;
	if (e)
		names__unlink(n, e);
	names__room(n);
	e = calloc(1, sizeof(*e) + len + 1);
	if (!e)
		return NULL;
	e->key = key;
	e->kind = kind;
	memcpy(e->text, text, len);
	names__link(n, e);
	return e;
}

int events__render_init(struct events_render *r, struct datapath *dp, const char *node)
{
	struct timespec rt, mono;

	memset(r, 0, sizeof(*r));
	r->dp = dp;
	if (node)
		snprintf(r->node, sizeof(r->node), "%s", node);
	else if (gethostname(r->node, sizeof(r->node) - 1))
		snprintf(r->node, sizeof(r->node), "unknown");
	/* Kernel timestamps are CLOCK_MONOTONIC: convert with one offset
	 * taken now (a later clock step shifts what we print, not order). */
	clock_gettime(CLOCK_REALTIME, &rt);
	clock_gettime(CLOCK_MONOTONIC, &mono);
	r->mono_to_real_ns = ((int64_t)rt.tv_sec - mono.tv_sec) * 1000000000LL +
			     (rt.tv_nsec - mono.tv_nsec);
	r->names = calloc(1, sizeof(*r->names));
	if (!r->names)
		return -ENOMEM;
	r->names->b = calloc(NAMES_BUCKETS_MIN, sizeof(*r->names->b));
	if (!r->names->b) {
		free(r->names);
		r->names = NULL;
		return -ENOMEM;
	}
	r->names->nb = NAMES_BUCKETS_MIN;
	r->names->bits = __builtin_ctz(NAMES_BUCKETS_MIN);
	return 0;
}

void events__render_free(struct events_render *r)
{
	if (!r->names)
		return;
	names__clear(r->names);
	free(r->names->b);
	free(r->names);
	r->names = NULL;
}

int events__names_add_set(struct events_render *r, uint32_t set_id, const char *policies)
{
	return names__put_text(r->names, set_id, 1, policies ? policies : "") ? 0 : -ENOMEM;
}

int events__names_add_rule(struct events_render *r, uint32_t set_id, uint32_t rule_id,
			   const struct sl_rule_meta *meta)
{
	return names__add_rule(r->names, (uint64_t)set_id << 32 | rule_id, meta) ? 0 : -ENOMEM;
}

int events__names_add_compiled(struct events_render *r, uint32_t set_id, const char *policies,
			       const struct compiled *c, size_t from)
{
	int err = events__names_add_set(r, set_id, policies);

	for (size_t i = from; i < c->nrules; i++)
		err = events__names_add_rule(r, set_id, c->rules[i].rule_id, &c->rules[i].meta) ?: err;
	return err;
}

static const struct sl_rule_meta *events__rule(struct events_render *r, uint32_t set_id,
					       uint32_t rule_id)
{
	uint64_t key = (uint64_t)set_id << 32 | rule_id;
	struct name_ent *e = names__find(r->names, key, 0);
	struct sl_rule_meta meta;

	if (e)
		return names__meta(r->names, e);
	if (!r->dp || datapath__rule_meta(r->dp, set_id, rule_id, &meta))
		return NULL;
	e = names__add_rule(r->names, key, &meta);
	return e ? names__meta(r->names, e) : NULL;
}

const struct sl_rule_meta *events__rule_meta(struct events_render *r, uint32_t set_id,
					     uint32_t rule_id)
{
	return events__rule(r, set_id, rule_id);
}

static const char *events__set_policies(struct events_render *r, uint32_t set_id)
{
	struct name_ent *e = names__find(r->names, set_id, 1);
	struct sl_set_info info;

	if (e)
		return e->text;
	if (!r->dp || datapath__set_info(r->dp, set_id, &info))
		return NULL;
	e = names__put_text(r->names, set_id, 1, info.policies);
	return e ? e->text : NULL;
}

static const char *events__cgroup_path(struct events_render *r, uint64_t id);

const char *events__cgroup_name(struct events_render *r, uint64_t id)
{
	return events__cgroup_path(r, id);
}

const char *events__set_name(struct events_render *r, uint32_t set_id)
{
	return events__set_policies(r, set_id);
}

static const char *events__cgroup_path(struct events_render *r, uint64_t id)
{
	struct name_ent *e = names__find(r->names, id, 2);
	char p[PATH_MAX];

	if (e)
		return e->text[0] ? e->text : NULL;
	/* A cgroup gone before we read its event keeps no name; the id
	 * still identifies it. */
	if (cgroup__path_of(id, p, sizeof(p)))
		p[0] = '\0';
	e = names__put_text(r->names, id, 2, p);
	return e && e->text[0] ? e->text : NULL;
}

void events__format_time(int64_t mono_to_real_ns, uint64_t ts_ns, char *buf, size_t len)
{
	/* Records come in bursts of the same second: its text is kept. */
	static __thread struct { time_t sec; size_t n; char text[32]; } last = { .sec = -1 };
	int64_t t = (int64_t)ts_ns + mono_to_real_ns;
	time_t sec = t / 1000000000LL;
	long ns = (long)(t % 1000000000LL);
	char frac[12];

	if (sec != last.sec) {
		struct tm tm;

		gmtime_r(&sec, &tm);
		last.n = strftime(last.text, sizeof(last.text), "%Y-%m-%dT%H:%M:%S", &tm);
		last.sec = sec;
	}
	frac[0] = '.';
	for (int i = 9; i >= 1; i--, ns /= 10)
		frac[i] = (char)('0' + ns % 10);
	frac[10] = 'Z';
	frac[11] = '\0';
	if (len < last.n + sizeof(frac)) {
		snprintf(buf, len, "%s%s", last.text, frac);
		return;
	}
	memcpy(buf, last.text, last.n);
	memcpy(buf + last.n, frac, sizeof(frac));
}

static bool events__is_mapped(const uint8_t a[16])
{
	static const uint8_t pfx[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	return !memcmp(a, pfx, sizeof(pfx));
}

void events__format_addr(const uint8_t addr[16], uint16_t port, int v4, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	if (v4 && events__is_mapped(addr) && len >= sizeof("255.255.255.255:65535")) {
		/* The common case, without inet_ntop and printf. */
		char *p = buf;

		for (int i = 12; i < 16; i++) {
			unsigned int b = addr[i];

			if (b >= 100)
				*p++ = (char)('0' + b / 100);
			if (b >= 10)
				*p++ = (char)('0' + b / 10 % 10);
			*p++ = (char)('0' + b % 10);
			*p++ = i < 15 ? '.' : ':';
		}
		{
			char d[5];
			int n = 0;

			do
				d[n++] = (char)('0' + port % 10);
			while ((port /= 10));
			while (n)
				*p++ = d[--n];
		}
		*p = '\0';
	} else if (v4 && events__is_mapped(addr)) {
		inet_ntop(AF_INET, addr + 12, ip, sizeof(ip));
		snprintf(buf, len, "%s:%u", ip, port);
	} else {
		inet_ntop(AF_INET6, addr, ip, sizeof(ip));
		snprintf(buf, len, "[%s]:%u", ip, port);
	}
}

const char *events__type_name(uint8_t type)
{
	switch (type) {
	case SL_EV_SOCK_CREATE: return "sock_create";
	case SL_EV_CONNECT: return "connect";
	case SL_EV_SENDMSG: return "sendmsg";
	case SL_EV_ESTABLISHED: return "established";
	case SL_EV_CLOSE: return "close";
	default: return "unknown";
	}
}

const char *events__verdict_name(uint8_t verdict)
{
	switch (verdict) {
	case SL_VERDICT_ALLOW: return "allow";
	case SL_VERDICT_DENY: return "deny";
	case SL_VERDICT_AUDIT: return "audit";
	default: return "unknown";
	}
}

const char *events__reserved_rule(uint32_t rule_id)
{
	switch (rule_id) {
	case SL_RULE_DEFAULT_DENY: return "default-deny";
	case SL_RULE_LOOPBACK: return "loopback";
	case SL_RULE_UNGOVERNED: return "ungoverned";
	case SL_RULE_RAW_SOCKET: return "raw-socket";
	case SL_RULE_INBOUND: return "inbound";
	default: return NULL;
	}
}

/* A bounded JSON writer: on overflow it remembers and the caller fails. */
struct jw {
	char *p;
	size_t len, off;
	bool overflow;
};

static void jw_raw(struct jw *w, const char *s, size_t n)
{
	if (w->off + n >= w->len) {
		w->overflow = true;
		return;
	}
	memcpy(w->p + w->off, s, n);
	w->off += n;
	w->p[w->off] = '\0';
}

static void jw_lit(struct jw *w, const char *s)
{
	jw_raw(w, s, strlen(s));
}

static void jw_fmt(struct jw *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jw_fmt(struct jw *w, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (w->overflow)
		return;
	va_start(ap, fmt);
	n = vsnprintf(w->p + w->off, w->len - w->off, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= w->len - w->off)
		w->overflow = true;
	else
		w->off += n;
}

static void jw_str(struct jw *w, const char *s, size_t max)
{
	static const char hex[] = "0123456789abcdef";
	size_t i;

	jw_raw(w, "\"", 1);
	for (i = 0; i < max && s[i]; i++) {
		unsigned char c = s[i];
		char esc[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };

		if (c == '"' || c == '\\') {
			char e2[2] = { '\\', (char)c };

			jw_raw(w, e2, 2);
		} else if (c < 0x20 || c == 0x7f) {
			jw_raw(w, esc, 6);
		} else {
			jw_raw(w, (const char *)&c, 1);
		}
	}
	jw_raw(w, "\"", 1);
}

static void jw_key_str(struct jw *w, const char *key, const char *val)
{
	jw_fmt(w, ",\"%s\":", key);
	if (val)
		jw_str(w, val, SIZE_MAX);
	else
		jw_lit(w, "null");
}

static const char *events__proto_name(uint8_t p)
{
	switch (p) {
	case 6: return "tcp";
	case 17: return "udp";
	case 132: return "sctp";
	case 1: return "icmp";
	case 58: return "icmpv6";
	case 255: return "raw";
	default: return NULL;
	}
}

int events__render(struct events_render *r, const struct sl_event *ev, char *buf, size_t len)
{
	struct jw w = { .p = buf, .len = len };
	const struct sl_rule_meta *meta = NULL;
	const char *policy = NULL, *rule, *cgpath, *proto;
	char t[64], a[64];
	bool v4 = ev->family == AF_INET;
	bool governed = ev->ident_cgid != 0;

	rule = events__reserved_rule(ev->rule_id);
	if (!rule) {
		meta = events__rule(r, ev->set_id, ev->rule_id);
		rule = meta ? meta->rule : NULL;
		policy = meta ? meta->policy : NULL;
	}
	if (!policy && governed)
		policy = events__set_policies(r, ev->set_id);

	events__format_time(r->mono_to_real_ns, ev->ts_ns, t, sizeof(t));
	jw_lit(&w, "{\"time\":\"");
	jw_lit(&w, t);
	jw_lit(&w, "\"");
	jw_key_str(&w, "node", r->node);
	jw_key_str(&w, "type", events__type_name(ev->type));
	jw_key_str(&w, "verdict", events__verdict_name(ev->verdict));
	jw_key_str(&w, "mode", !governed ? "observe" : ev->audit ? "audit" : "enforce");
	jw_key_str(&w, "policy", policy && *policy ? policy : NULL);
	jw_key_str(&w, "rule", rule);
	jw_key_str(&w, "class", meta ? policy__class_name(meta->class) :
		   ev->class ? policy__class_name(ev->class) : NULL);

	cgpath = ev->cgroup_id ? events__cgroup_path(r, ev->cgroup_id) : NULL;
	jw_lit(&w, ",\"workload\":{\"cgroup\":");
	if (cgpath)
		jw_str(&w, cgpath, SIZE_MAX);
	else
		jw_lit(&w, "null");
	jw_fmt(&w, ",\"cgroup_id\":%llu", (unsigned long long)ev->cgroup_id);
	if (governed && ev->ident_cgid != ev->cgroup_id)
		jw_fmt(&w, ",\"identity_cgroup_id\":%llu", (unsigned long long)ev->ident_cgid);
	if (governed && r->workload) {
		struct events_workload wl = {};

		if (!r->workload(r->workload_ctx, ev->ident_cgid, cgpath, &wl) && wl.pod) {
			jw_key_str(&w, "namespace", wl.ns);
			jw_key_str(&w, "pod", wl.pod);
			if (wl.container)
				jw_key_str(&w, "container", wl.container);
			jw_key_str(&w, "service_account", wl.sa);
		}
	}
	jw_lit(&w, "}");

	if (ev->pid) {
		jw_fmt(&w, ",\"process\":{\"pid\":%u,\"tid\":%u,\"comm\":", ev->pid, ev->tid);
		jw_str(&w, ev->comm, sizeof(ev->comm));
		jw_fmt(&w, ",\"uid\":%u}", ev->uid);
	} else {
		jw_lit(&w, ",\"process\":null");
	}

	proto = events__proto_name(ev->protocol);
	jw_fmt(&w, ",\"socket\":{\"cookie\":%llu,\"family\":\"%s\",\"protocol\":",
	       (unsigned long long)ev->cookie, v4 ? "ipv4" : ev->family == AF_INET6 ? "ipv6" : "other");
	if (proto)
		jw_fmt(&w, "\"%s\"", proto);
	else
		jw_fmt(&w, "%u", ev->protocol);
	if (ev->type == SL_EV_SOCK_CREATE)
		jw_lit(&w, ev->sock_type == 2 ? ",\"type\":\"dgram\"" : ",\"type\":\"raw\"");
	jw_lit(&w, "}");

	switch (ev->type) {
	case SL_EV_ESTABLISHED:
	case SL_EV_CLOSE:
		jw_key_str(&w, "direction", ev->sock_type ? "in" : "out");
		events__format_addr(ev->saddr, ev->sport, v4, a, sizeof(a));
		jw_key_str(&w, "src", a);
		events__format_addr(ev->daddr, ev->dport, v4, a, sizeof(a));
		jw_key_str(&w, "dst", a);
		if (ev->type == SL_EV_CLOSE)
			jw_fmt(&w, ",\"bytes_sent\":%llu,\"bytes_received\":%llu,\"duration_ns\":%llu",
			       (unsigned long long)ev->bytes_sent,
			       (unsigned long long)ev->bytes_received,
			       (unsigned long long)ev->duration_ns);
		break;
	case SL_EV_CONNECT:
	case SL_EV_SENDMSG:
		events__format_addr(ev->daddr, ev->dport, v4, a, sizeof(a));
		jw_key_str(&w, "dst", a);
		break;
	}
	jw_lit(&w, "}");
	return w.overflow ? -ENOSPC : (int)w.off;
}
