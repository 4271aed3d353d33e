// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Kernel flows joined with gateway decision logs; see correlate.h.
 *
 * Memory is bounded by the options: flows (each pointing at a shared,
 * reference-counted description of its workload, so that a pod with a
 * thousand connections holds its cgroup path and tools list once), pending
 * gateway records, learnt upstreams, and a fixed bypass de-duplication
 * table. Every structure is a chained hash plus an intrusive list giving
 * the eviction order.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include "correlate.h"
#include "events.h"
#include "gateway.h"
#include "policy.h"

#define NS_PER_SEC		1000000000ull

/* Bounds on what one workload description copies from the caller. */
#define CORR_PATH_MAX		512
#define CORR_NAME_MAX		256
#define CORR_MAX_TOOLS		256
#define CORR_TOOL_MAX		128

#define CORR_MAX_GWADDRS	256
#define CORR_MAX_PREFIXES	32
#define CORR_DEDUP_SLOTS	4096	/* power of 2 */

#define container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))

/* ---- intrusive list ------------------------------------------------ */

struct lnode {
	struct lnode *prev, *next;
};

static void list__init(struct lnode *h)
{
	h->prev = h->next = h;
}

static bool list__empty(const struct lnode *h)
{
	return h->next == h;
}

static void list__del(struct lnode *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = n;
}

static void list__add_tail(struct lnode *h, struct lnode *n)
{
	n->prev = h->prev;
	n->next = h;
	h->prev->next = n;
	h->prev = n;
}

static void list__move_tail(struct lnode *h, struct lnode *n)
{
	list__del(n);
	list__add_tail(h, n);
}

/* ---- hashing ------------------------------------------------------- */

static uint64_t hash__mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

static uint64_t hash__bytes(uint64_t h, const void *p, size_t n)
{
	const unsigned char *s = p;

	for (size_t i = 0; i < n; i++) {
		h ^= s[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static uint64_t hash__addr(const uint8_t addr[SL_ADDR_LEN], uint16_t port)
{
	return hash__mix(hash__bytes(0xcbf29ce484222325ULL ^ port, addr, SL_ADDR_LEN));
}

static size_t pow2_at_least(size_t n)
{
	size_t p = 16;

	while (p < n)
		p <<= 1;
	return p;
}

/* ---- address sets (gateway listeners, learnt upstreams) -------------- */

struct ap_ent {
	struct ap_ent *hnext;
	struct lnode lru;
	uint8_t addr[SL_ADDR_LEN];
	uint16_t port;
};

struct apset {
	struct ap_ent **b;
	size_t mask;
	size_t n, cap;
	bool evict;		/* full: drop the least recently seen; else -ENOSPC */
	struct lnode lru;
};

static int apset__init(struct apset *s, size_t cap, bool evict)
{
	s->mask = pow2_at_least(cap ? cap : 1) - 1;
	s->b = calloc(s->mask + 1, sizeof(*s->b));
	s->n = 0;
	s->cap = cap;
	s->evict = evict;
	list__init(&s->lru);
	return s->b ? 0 : -ENOMEM;
}

static struct ap_ent **apset__slot(struct apset *s, const uint8_t addr[SL_ADDR_LEN], uint16_t port)
{
	struct ap_ent **pp = &s->b[hash__addr(addr, port) & s->mask];

	for (; *pp; pp = &(*pp)->hnext)
		if ((*pp)->port == port && !memcmp((*pp)->addr, addr, SL_ADDR_LEN))
			break;
	return pp;
}

static bool apset__has(struct apset *s, const uint8_t addr[SL_ADDR_LEN], uint16_t port)
{
	return s->n && *apset__slot(s, addr, port);
}

static void apset__remove(struct apset *s, struct ap_ent *e)
{
	struct ap_ent **pp = apset__slot(s, e->addr, e->port);

	*pp = e->hnext;
	list__del(&e->lru);
	free(e);
	s->n--;
}

static int apset__add(struct apset *s, const uint8_t addr[SL_ADDR_LEN], uint16_t port)
{
	struct ap_ent **pp = apset__slot(s, addr, port), *e;

	if (*pp) {
		list__move_tail(&s->lru, &(*pp)->lru);
		return 0;
	}
	if (!s->cap)
		return -ENOSPC;
	if (s->n >= s->cap) {
		if (!s->evict)
			return -ENOSPC;
		apset__remove(s, container_of(s->lru.next, struct ap_ent, lru));
		pp = apset__slot(s, addr, port);
	}
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	memcpy(e->addr, addr, SL_ADDR_LEN);
	e->port = port;
	e->hnext = NULL;
	*pp = e;
	list__add_tail(&s->lru, &e->lru);
	s->n++;
	return 0;
}

static void apset__free(struct apset *s)
{
	while (!list__empty(&s->lru)) {
		struct ap_ent *e = container_of(s->lru.next, struct ap_ent, lru);

		list__del(&e->lru);
		free(e);
	}
	free(s->b);
	s->b = NULL;
}

/* ---- the correlator -------------------------------------------------- */

/* A workload description shared by the flows that carry it. */
struct ident {
	struct ident *hnext;
	uint64_t hash;
	unsigned long refs;
	uint8_t class;
	bool has_gateway;
	bool tools_listed;
	size_t ntools;
	const char *cgroup, *pod_namespace, *pod_name, *service_account, *policy, *rule;
	const char **tools;	/* strings follow the struct and this array */
};

struct flow {
	struct corr_flow_info info;
	struct flow *hnext;
	struct lnode lru;	/* c->open or c->closed */
	struct ident *id;
};

struct pending {
	struct lnode node;
	uint64_t deadline;
	struct gw_record r;
};

struct prefix {
	uint8_t addr[SL_ADDR_LEN];
	unsigned int bits;
};

struct dedup {
	uint64_t key;
	uint64_t t;
};

struct correlate {
	struct corr_opts o;
	char node[64];
	char jwt_claim[GW_KM_KEYLEN];
	corr_emit_fn emit;
	void *ctx;
	corr_ask_fn ask;
	void *ask_ctx;
	uint64_t now;		/* latest time seen (tick or kernel event) */

	struct flow **fb;	/* by source ip:port */
	size_t fmask;
	size_t nflows, nopen;
	/* Open flows in order of last use; closed flows in order of close, so
	 * that the head is both the next to expire and the first to evict. */
	struct lnode open, closed;

	struct ident **ib;
	size_t imask;
	size_t nidents;

	struct lnode pend;
	size_t npend;

	struct apset gwaddrs;
	struct apset upstreams;
	struct prefix prefixes[CORR_MAX_PREFIXES];
	size_t nprefixes;
	struct dedup *dedup;

	struct corr_stats st;
};

void correlate__opts_default(struct corr_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->max_flows = 65536;
	o->generations = 4;
	o->retention_ns = 600 * NS_PER_SEC;
	o->tolerance_ns = NS_PER_SEC;
	o->max_pending = 1024;
	o->max_upstreams = 4096;
	o->bypass_dedup_ns = 60 * NS_PER_SEC;
}

const char *correlate__finding_name(enum corr_finding kind)
{
	switch (kind) {
	case CORR_F_BYPASS: return "bypass";
	case CORR_F_IDENTITY_MISMATCH: return "identity_mismatch";
	case CORR_F_UNATTRIBUTED: return "unattributed";
	case CORR_F_POLICY_DRIFT: return "policy_drift";
	default: return "unknown";
	}
}

struct correlate *correlate__new(const struct corr_opts *opts, corr_emit_fn emit, void *ctx)
{
	struct corr_opts def;
	struct correlate *c;

	if (!opts) {
		correlate__opts_default(&def);
		opts = &def;
	}
	if (!emit || !opts->max_flows || opts->max_flows > (1u << 24) || !opts->generations ||
	    opts->max_pending > (1u << 20) || opts->max_upstreams > (1u << 20) ||
	    (opts->jwt_claim && strlen(opts->jwt_claim) >= GW_KM_KEYLEN)) {
		errno = EINVAL;
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		errno = ENOMEM;
		return NULL;
	}
	c->o = *opts;
	snprintf(c->node, sizeof(c->node), "%s", opts->node ? opts->node : "");
	c->o.node = c->node;
	snprintf(c->jwt_claim, sizeof(c->jwt_claim), "%s", opts->jwt_claim ? opts->jwt_claim : "");
	c->o.jwt_claim = opts->jwt_claim ? c->jwt_claim : NULL;
	c->emit = emit;
	c->ctx = ctx;
	list__init(&c->open);
	list__init(&c->closed);
	list__init(&c->pend);
	list__init(&c->gwaddrs.lru);
	list__init(&c->upstreams.lru);
	c->fmask = pow2_at_least(opts->max_flows) - 1;
	c->imask = c->fmask;
	c->fb = calloc(c->fmask + 1, sizeof(*c->fb));
	c->ib = calloc(c->imask + 1, sizeof(*c->ib));
	if (opts->bypass_dedup_ns)
		c->dedup = calloc(CORR_DEDUP_SLOTS, sizeof(*c->dedup));
	if (!c->fb || !c->ib || (opts->bypass_dedup_ns && !c->dedup) ||
	    apset__init(&c->gwaddrs, CORR_MAX_GWADDRS, false) ||
	    apset__init(&c->upstreams, opts->max_upstreams, true)) {
		correlate__free(c);
		errno = ENOMEM;
		return NULL;
	}
	return c;
}

/* ---- workload descriptions ------------------------------------------- */

static const char *str__or_empty(const char *s)
{
	return s ? s : "";
}

static size_t str__cut(const char *s, size_t max)
{
	return s ? strnlen(s, max - 1) : 0;
}

/* The fields of META as they will be stored, with their cut lengths. */
struct ident_key {
	const char *s[6];
	size_t len[6];
	uint8_t class;
	bool has_gateway, tools_listed;
	size_t ntools;
	const char *const *tools;
};

static void ident__key(struct ident_key *k, const struct corr_flow_meta *m, uint8_t class)
{
	static const size_t max[6] = { CORR_PATH_MAX, CORR_NAME_MAX, CORR_NAME_MAX,
				       CORR_NAME_MAX, CORR_NAME_MAX, CORR_NAME_MAX };

	memset(k, 0, sizeof(*k));
	k->class = class;
	k->s[0] = str__or_empty(m->cgroup);
	k->s[1] = str__or_empty(m->pod_namespace);
	k->s[2] = str__or_empty(m->pod_name);
	k->s[3] = str__or_empty(m->service_account);
	k->s[4] = str__or_empty(m->policy);
	k->s[5] = str__or_empty(m->rule);
	for (int i = 0; i < 6; i++)
		k->len[i] = str__cut(k->s[i], max[i]);
	k->has_gateway = m->has_gateway;
	/* A list cut short would turn allowed tools into drift: with more
	 * tools than kept, the list is not used at all. */
	k->tools_listed = m->tools_listed && m->ntools <= CORR_MAX_TOOLS &&
			  (m->tools || !m->ntools);
	if (k->tools_listed) {
		k->ntools = m->ntools;
		k->tools = m->tools;
	}
}

static uint64_t ident__hash(const struct ident_key *k)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	uint8_t flags[3] = { k->class, k->has_gateway, k->tools_listed };

	for (int i = 0; i < 6; i++)
		h = hash__bytes(hash__bytes(h, k->s[i], k->len[i]), "", 1);
	h = hash__bytes(h, flags, sizeof(flags));
	for (size_t i = 0; i < k->ntools; i++)
		h = hash__bytes(hash__bytes(h, str__or_empty(k->tools[i]),
					    str__cut(k->tools[i], CORR_TOOL_MAX)), "", 1);
	return hash__mix(h);
}

static bool str__eq_cut(const char *stored, const char *s, size_t len)
{
	return strlen(stored) == len && !memcmp(stored, s, len);
}

static bool ident__eq(const struct ident *id, const struct ident_key *k)
{
	const char *f[6] = { id->cgroup, id->pod_namespace, id->pod_name, id->service_account,
			     id->policy, id->rule };

	if (id->class != k->class || id->has_gateway != k->has_gateway ||
	    id->tools_listed != k->tools_listed || id->ntools != k->ntools)
		return false;
	for (int i = 0; i < 6; i++)
		if (!str__eq_cut(f[i], k->s[i], k->len[i]))
			return false;
	for (size_t i = 0; i < k->ntools; i++) {
		const char *t = str__or_empty(k->tools[i]);

		if (!str__eq_cut(id->tools[i], t, str__cut(t, CORR_TOOL_MAX)))
			return false;
	}
	return true;
}

static char *str__put(char **p, const char *s, size_t len)
{
	char *d = *p;

	memcpy(d, s, len);
	d[len] = '\0';
	*p += len + 1;
	return d;
}

static struct ident *ident__get(struct correlate *c, const struct corr_flow_meta *m, uint8_t class)
{
	struct ident_key k;
	struct ident *id;
	uint64_t h;
	size_t sz;
	char *p;

	ident__key(&k, m, class);
	h = ident__hash(&k);
	for (id = c->ib[h & c->imask]; id; id = id->hnext) {
		if (id->hash == h && ident__eq(id, &k)) {
			id->refs++;
			return id;
		}
	}
	sz = sizeof(*id) + k.ntools * sizeof(char *);
	for (int i = 0; i < 6; i++)
		sz += k.len[i] + 1;
	for (size_t i = 0; i < k.ntools; i++)
		sz += str__cut(k.tools[i], CORR_TOOL_MAX) + 1;
	id = malloc(sz);
	if (!id)
		return NULL;
	memset(id, 0, sizeof(*id));
	id->hash = h;
	id->refs = 1;
	id->class = k.class;
	id->has_gateway = k.has_gateway;
	id->tools_listed = k.tools_listed;
	id->ntools = k.ntools;
	id->tools = (const char **)(id + 1);
	p = (char *)(id->tools + k.ntools);
	id->cgroup = str__put(&p, k.s[0], k.len[0]);
	id->pod_namespace = str__put(&p, k.s[1], k.len[1]);
	id->pod_name = str__put(&p, k.s[2], k.len[2]);
	id->service_account = str__put(&p, k.s[3], k.len[3]);
	id->policy = str__put(&p, k.s[4], k.len[4]);
	id->rule = str__put(&p, k.s[5], k.len[5]);
	for (size_t i = 0; i < k.ntools; i++) {
		const char *t = str__or_empty(k.tools[i]);

		id->tools[i] = str__put(&p, t, str__cut(t, CORR_TOOL_MAX));
	}
	id->hnext = c->ib[h & c->imask];
	c->ib[h & c->imask] = id;
	c->nidents++;
	return id;
}

static void ident__put(struct correlate *c, struct ident *id)
{
	struct ident **pp;

	if (--id->refs)
		return;
	for (pp = &c->ib[id->hash & c->imask]; *pp != id; pp = &(*pp)->hnext)
		;
	*pp = id->hnext;
	c->nidents--;
	free(id);
}

/* The info fields that come from a workload description. */
static void info__from_ident(struct corr_flow_info *fi, const struct ident *id)
{
	fi->class = id->class;
	fi->has_gateway = id->has_gateway;
	fi->tools_listed = id->tools_listed;
	fi->cgroup = id->cgroup;
	fi->pod_namespace = id->pod_namespace;
	fi->pod_name = id->pod_name;
	fi->service_account = id->service_account;
	fi->policy = id->policy;
	fi->rule = id->rule;
	fi->tools = id->tools;
	fi->ntools = id->ntools;
}

static void info__from_event(struct corr_flow_info *fi, const struct sl_event *ev)
{
	fi->cookie = ev->cookie;
	fi->cgroup_id = ev->cgroup_id;
	fi->ident_cgid = ev->ident_cgid;
	fi->pid = ev->pid;
	fi->uid = ev->uid;
	memcpy(fi->comm, ev->comm, sizeof(fi->comm));
	fi->comm[sizeof(fi->comm) - 1] = '\0';
	memcpy(fi->saddr, ev->saddr, SL_ADDR_LEN);
	memcpy(fi->daddr, ev->daddr, SL_ADDR_LEN);
	fi->sport = ev->sport;
	fi->dport = ev->dport;
	fi->family = ev->family;
	fi->protocol = ev->protocol;
	fi->type = ev->type;
	fi->verdict = ev->verdict;
}

/* ---- flow table -------------------------------------------------------- */

static bool flow__key_eq(const struct flow *f, const uint8_t addr[SL_ADDR_LEN], uint16_t port)
{
	return f->info.sport == port && !memcmp(f->info.saddr, addr, SL_ADDR_LEN);
}

static struct flow **flow__bucket(struct correlate *c, const uint8_t addr[SL_ADDR_LEN],
				  uint16_t port)
{
	return &c->fb[hash__addr(addr, port) & c->fmask];
}

static void flow__remove(struct correlate *c, struct flow *f)
{
	struct flow **pp = flow__bucket(c, f->info.saddr, f->info.sport);

	for (; *pp != f; pp = &(*pp)->hnext)
		;
	*pp = f->hnext;
	list__del(&f->lru);
	if (!f->info.close_ns)
		c->nopen--;
	c->nflows--;
	ident__put(c, f->id);
	free(f);
}

static void flow__set_closed(struct correlate *c, struct flow *f, uint64_t t, bool inferred)
{
	if (!f->info.close_ns) {
		c->nopen--;
		list__move_tail(&c->closed, &f->lru);
	}
	f->info.close_ns = t ? t : 1;
	f->info.close_inferred = inferred;
}

static void flows__expire(struct correlate *c, uint64_t now)
{
	while (!list__empty(&c->closed)) {
		struct flow *f = container_of(c->closed.next, struct flow, lru);

		if (now < c->o.retention_ns || f->info.close_ns >= now - c->o.retention_ns)
			break;
		flow__remove(c, f);
		c->st.expired++;
	}
}

static void flows__make_room(struct correlate *c)
{
	while (c->nflows >= c->o.max_flows) {
		if (!list__empty(&c->closed)) {
			flow__remove(c, container_of(c->closed.next, struct flow, lru));
			c->st.evicted_closed++;
		} else {
			flow__remove(c, container_of(c->open.next, struct flow, lru));
			c->st.evicted_open++;
		}
	}
}

static void corr__advance(struct correlate *c, uint64_t t)
{
	if (t > c->now)
		c->now = t;
}

static bool corr__is_gateway_dst(struct correlate *c, uint8_t class, const uint8_t daddr[SL_ADDR_LEN],
				 uint16_t dport)
{
	return class == SL_CLASS_GATEWAY || apset__has(&c->gwaddrs, daddr, dport) ||
	       apset__has(&c->gwaddrs, daddr, 0);
}

static uint8_t corr__class(const struct sl_event *ev, const struct corr_flow_meta *meta)
{
	return meta->class ? meta->class : ev->class;
}

static void pending__retry(struct correlate *c, const uint8_t addr[SL_ADDR_LEN], uint16_t port);

static struct flow *flow__insert(struct correlate *c, const struct sl_event *ev,
				 const struct corr_flow_meta *meta, uint64_t est, uint64_t close)
{
	struct flow **b = flow__bucket(c, ev->saddr, ev->sport), *f, *oldest = NULL;
	unsigned int gens = 0;

	for (f = *b; f; f = f->hnext) {
		if (!flow__key_eq(f, ev->saddr, ev->sport))
			continue;
		gens++;
		if (!oldest || f->info.established_ns < oldest->info.established_ns)
			oldest = f;
		/* The same 4-tuple cannot be open twice: a lost close event
		 * is bounded by the next flow on it. */
		if (!f->info.close_ns && f->info.dport == ev->dport &&
		    !memcmp(f->info.daddr, ev->daddr, SL_ADDR_LEN) && f->info.established_ns <= est)
			flow__set_closed(c, f, est, true);
	}
	if (gens >= c->o.generations) {
		flow__remove(c, oldest);
		c->st.superseded++;
	}
	flows__make_room(c);
	f = calloc(1, sizeof(*f));
	if (!f)
		goto nomem;
	f->id = ident__get(c, meta, corr__class(ev, meta));
	if (!f->id) {
		free(f);
		goto nomem;
	}
	info__from_event(&f->info, ev);
	info__from_ident(&f->info, f->id);
	f->info.type = SL_EV_ESTABLISHED;
	f->info.established_ns = est;
	f->info.close_ns = close;
	b = flow__bucket(c, ev->saddr, ev->sport);
	f->hnext = *b;
	*b = f;
	list__add_tail(close ? &c->closed : &c->open, &f->lru);
	if (!close)
		c->nopen++;
	c->nflows++;
	c->st.flows_added++;
	return f;
nomem:
	c->st.nomem++;
	return NULL;
}

static struct flow *flow__by_cookie(struct correlate *c, const struct sl_event *ev)
{
	struct flow *f;

	for (f = *flow__bucket(c, ev->saddr, ev->sport); f; f = f->hnext)
		if (f->info.cookie == ev->cookie && flow__key_eq(f, ev->saddr, ev->sport))
			return f;
	return NULL;
}

int correlate__flow(struct correlate *c, const struct sl_event *ev, const struct corr_flow_meta *meta)
{
	uint64_t t;
	struct flow *f;

	if (!meta)
		return -EINVAL;
	if (ev->type != SL_EV_ESTABLISHED && ev->type != SL_EV_CLOSE)
		return 0;
	t = meta->time_ns;
	/* Accepted connections: the gateway's side of a flow, or inbound
	 * traffic; the agent's side is the one that connected. */
	if (ev->sock_type)
		return 0;
	corr__advance(c, t);
	flows__expire(c, c->now);
	f = flow__by_cookie(c, ev);
	if (ev->type == SL_EV_ESTABLISHED) {
		if (f)
			return 0;	/* seen already */
		if (!corr__is_gateway_dst(c, corr__class(ev, meta), ev->daddr, ev->dport))
			return 0;
		if (!flow__insert(c, ev, meta, t, 0))
			return -ENOMEM;
	} else if (f) {
		flow__set_closed(c, f, t, false);
		return 0;
	} else {
		/* Its established event was lost or evicted: the close
		 * carries the duration, which gives the lifetime back. */
		if (!corr__is_gateway_dst(c, corr__class(ev, meta), ev->daddr, ev->dport))
			return 0;
		if (!flow__insert(c, ev, meta, ev->duration_ns < t ? t - ev->duration_ns : 0,
				  t ? t : 1))
			return -ENOMEM;
	}
	pending__retry(c, ev->saddr, ev->sport);
	return 0;
}

/* The flow of SOURCE ip:port whose lifetime holds START within the
 * tolerance; where lifetimes of reused ports overlap through the tolerance,
 * the one holding START exactly, else the nearest, else the newest. */
static struct flow *flow__join(struct correlate *c, const uint8_t addr[SL_ADDR_LEN], uint16_t port,
			       uint64_t start)
{
	struct flow *f, *best = NULL;
	uint64_t best_d = UINT64_MAX;

	for (f = *flow__bucket(c, addr, port); f; f = f->hnext) {
		uint64_t lo = f->info.established_ns;
		uint64_t hi = f->info.close_ns ? f->info.close_ns : UINT64_MAX;
		uint64_t d = start < lo ? lo - start : start > hi ? start - hi : 0;

		if (!flow__key_eq(f, addr, port) || d > c->o.tolerance_ns)
			continue;
		if (d < best_d || (d == best_d && f->info.established_ns > best->info.established_ns)) {
			best = f;
			best_d = d;
		}
	}
	return best;
}

/* ---- findings from a joined gateway record ----------------------------- */

static void corr__emit_finding(struct correlate *c, struct corr_record *rec, enum corr_finding k,
			       unsigned int *mask)
{
	rec->type = CORR_FINDING;
	rec->finding = k;
	c->st.findings[k]++;
	if (mask)
		*mask |= 1u << k;
	c->emit(c->ctx, rec);
}

static void corr__copy(char *dst, size_t dlen, const char *s, size_t n)
{
	if (n >= dlen)
		n = dlen - 1;
	memcpy(dst, s, n);
	dst[n] = '\0';
}

/* spiffe://TD/ns/NS/sa/SA (Istio's and agentgateway's form). */
static bool claim__spiffe(const char *v, struct corr_record *rec)
{
	const char *p, *ns, *nse, *sa;

	if (strncmp(v, "spiffe://", 9))
		return false;
	p = strchr(v + 9, '/');
	if (!p || strncmp(p, "/ns/", 4))
		return false;
	ns = p + 4;
	nse = strchr(ns, '/');
	if (!nse || nse == ns || strncmp(nse, "/sa/", 4))
		return false;
	sa = nse + 4;
	if (!*sa || strchr(sa, '/'))
		return false;
	corr__copy(rec->claimed_namespace, sizeof(rec->claimed_namespace), ns, (size_t)(nse - ns));
	corr__copy(rec->claimed_sa, sizeof(rec->claimed_sa), sa, strlen(sa));
	return true;
}

/* A workload-naming JWT claim: Kubernetes' "system:serviceaccount:NS:SA",
 * "NS/SA", or a bare name. */
static bool claim__jwt(const char *v, struct corr_record *rec)
{
	static const char sapfx[] = "system:serviceaccount:";
	const char *sep;

	if (!strncmp(v, sapfx, sizeof(sapfx) - 1)) {
		v += sizeof(sapfx) - 1;
		sep = strchr(v, ':');
	} else {
		sep = strchr(v, '/');
	}
	if (sep) {
		if (sep == v || !sep[1] || strchr(sep + 1, sep[0]))
			return false;
		corr__copy(rec->claimed_namespace, sizeof(rec->claimed_namespace), v, (size_t)(sep - v));
		v = sep + 1;
	}
	if (!*v)
		return false;
	corr__copy(rec->claimed_sa, sizeof(rec->claimed_sa), v, strlen(v));
	return true;
}

/* "/agents.slice/research-agent.service" -> "research-agent": systemd
 * units are the standalone form of a named workload. */
static void cgroup__derived_name(const char *path, char *out, size_t len)
{
	static const char *const sfx[] = { ".service", ".scope", ".slice" };
	const char *b = strrchr(path, '/');
	size_t n;

	b = b ? b + 1 : path;
	n = strlen(b);
	for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
		size_t sl = strlen(sfx[i]);

		if (n > sl && !strcmp(b + n - sl, sfx[i])) {
			n -= sl;
			break;
		}
	}
	corr__copy(out, len, b, n);
}

static void corr__check_identity(struct correlate *c, struct corr_record *rec, unsigned int *mask)
{
	const struct gw_record *r = rec->gw;
	const struct corr_flow_info *fi = rec->flow;
	const char *via = r->identity_key[0] ? r->identity_key : "identity";
	bool parsed = false, mismatch = false;
	int compared = 0;
	char detail[768];

	rec->claimed_namespace[0] = rec->claimed_sa[0] = '\0';
	rec->seen_namespace[0] = rec->seen_name[0] = '\0';
	if (r->identity[0]) {
		parsed = claim__spiffe(r->identity, rec);
		if (!parsed && c->o.jwt_claim && !strcmp(r->identity_key, c->o.jwt_claim))
			parsed = claim__jwt(r->identity, rec);
	}
	if (!parsed) {
		c->st.identity_unchecked++;
		return;
	}
	if (fi->pod_namespace[0]) {
		rec->basis = "pod";
		corr__copy(rec->seen_namespace, sizeof(rec->seen_namespace), fi->pod_namespace,
			   strlen(fi->pod_namespace));
		corr__copy(rec->seen_name, sizeof(rec->seen_name), fi->service_account,
			   strlen(fi->service_account));
		if (rec->claimed_namespace[0]) {
			compared++;
			mismatch |= strcmp(rec->claimed_namespace, rec->seen_namespace) != 0;
		}
		if (rec->seen_name[0]) {
			compared++;
			mismatch |= strcmp(rec->claimed_sa, rec->seen_name) != 0;
		}
		snprintf(detail, sizeof(detail),
			 "the gateway's %s claims %s%s%s, the kernel saw pod %s/%s with service account %s",
			 via, rec->claimed_namespace, rec->claimed_namespace[0] ? "/" : "",
			 rec->claimed_sa, fi->pod_namespace, fi->pod_name[0] ? fi->pod_name : "?",
			 rec->seen_name[0] ? rec->seen_name : "(unknown)");
	} else if (fi->cgroup[0]) {
		rec->basis = "cgroup";
		cgroup__derived_name(fi->cgroup, rec->seen_name, sizeof(rec->seen_name));
		if (rec->seen_name[0]) {
			compared++;
			mismatch = strcmp(rec->claimed_sa, rec->seen_name) != 0;
		}
		snprintf(detail, sizeof(detail),
			 "the gateway's %s claims %s, the kernel saw no pod: compared with the name %s "
			 "derived from cgroup %s (namespace not checked)",
			 via, rec->claimed_sa, rec->seen_name, fi->cgroup);
	}
	if (!compared) {
		c->st.identity_unchecked++;
		return;
	}
	if (!mismatch)
		return;
	rec->detail = detail;
	corr__emit_finding(c, rec, CORR_F_IDENTITY_MISMATCH, mask);
	rec->detail = NULL;
}

static bool corr__tool_listed(const struct corr_flow_info *fi, const struct gw_record *r)
{
	size_t tl = strlen(r->mcp_target);

	for (size_t i = 0; i < fi->ntools; i++) {
		const char *t = fi->tools[i];

		if (!strcmp(t, "*") || !strcmp(t, r->tool))
			return true;
		/* "target/tool" names a tool of one MCP target only. */
		if (tl && !strncmp(t, r->mcp_target, tl) && t[tl] == '/' && !strcmp(t + tl + 1, r->tool))
			return true;
	}
	return false;
}

static bool corr__authz_refusal(const struct gw_record *r)
{
	return r->status >= 400 && r->status < 500 &&
	       (!strcmp(r->reason, "MCP") || !strcmp(r->reason, "Authorization") ||
		!strncmp(r->reason, "rbac_access_denied", 18));
}

static void corr__check_drift(struct correlate *c, struct corr_record *rec, unsigned int *mask)
{
	const struct gw_record *r = rec->gw;
	const struct corr_flow_info *fi = rec->flow;
	char detail[512];
	bool listed;

	if (strcmp(r->mcp_method, "tools/call") || !r->tool[0] || !fi->tools_listed)
		return;
	listed = corr__tool_listed(fi, r);
	if (r->status >= 200 && r->status < 300 && !listed) {
		rec->basis = "allowed_unlisted";
		snprintf(detail, sizeof(detail),
			 "the gateway allowed tools/call %s (status %d), which policy %s does not list",
			 r->tool, r->status, fi->policy[0] ? fi->policy : "(unknown)");
	} else if (listed && corr__authz_refusal(r)) {
		rec->basis = "refused_listed";
		snprintf(detail, sizeof(detail),
			 "the gateway refused tools/call %s (status %d, %s), which policy %s lists",
			 r->tool, r->status, r->reason, fi->policy[0] ? fi->policy : "(unknown)");
	} else {
		return;
	}
	rec->detail = detail;
	corr__emit_finding(c, rec, CORR_F_POLICY_DRIFT, mask);
	rec->detail = NULL;
}

static void corr__joined_info(struct correlate *c, const struct gw_record *r,
			      const struct corr_flow_info *fi, struct corr_result *out)
{
	struct corr_record rec = { .type = CORR_GATEWAY, .time_ns = r->time_ns, .gw = r,
				   .flow = fi };
	unsigned int mask = 0;

	c->st.joined++;
	c->emit(c->ctx, &rec);
	corr__check_identity(c, &rec, &mask);
	corr__check_drift(c, &rec, &mask);
	if (out) {
		out->status = CORR_JOINED;
		out->flow = fi;
		out->findings |= mask;
	}
}

static void corr__joined(struct correlate *c, const struct gw_record *r, struct flow *f,
			 struct corr_result *out)
{
	if (!f->info.close_ns)
		list__move_tail(&c->open, &f->lru);
	corr__joined_info(c, r, &f->info, out);
}

/* ---- gateway records --------------------------------------------------- */

static uint64_t gw__start(const struct gw_record *r)
{
	return r->duration_ns < r->time_ns ? r->time_ns - r->duration_ns : 0;
}

static void corr__unattributed_why(struct correlate *c, const struct gw_record *r, const char *why,
				   unsigned int *mask)
{
	struct corr_record rec = { .time_ns = r->time_ns, .gw = r };
	char detail[512];

	snprintf(detail, sizeof(detail),
		 "no kernel flow to a gateway listener from %s around the request start%s%s",
		 r->peer, why ? ": " : "", why ? why : "");
	rec.detail = detail;
	c->st.unattributed++;
	corr__emit_finding(c, &rec, CORR_F_UNATTRIBUTED, mask);
}

static void corr__unattributed(struct correlate *c, const struct gw_record *r, unsigned int *mask)
{
	corr__unattributed_why(c, r, NULL, mask);
}

/* No local flow by the record's deadline: the other nodes may have it. */
static bool corr__ask(struct correlate *c, const struct gw_record *r)
{
	if (!c->ask || c->ask(c->ask_ctx, r))
		return false;
	c->st.asked++;
	return true;
}

/* Asked of the other nodes, or declared here: which of the two. */
static enum corr_status corr__no_local_flow(struct correlate *c, const struct gw_record *r,
					    unsigned int *mask)
{
	if (corr__ask(c, r))
		return CORR_ASKED;
	corr__unattributed(c, r, mask);
	return CORR_UNATTRIBUTED;
}

static void pending__drop(struct correlate *c, struct pending *p)
{
	list__del(&p->node);
	c->npend--;
	free(p);
}

static void pending__retry(struct correlate *c, const uint8_t addr[SL_ADDR_LEN], uint16_t port)
{
	struct lnode *n, *next;

	for (n = c->pend.next; n != &c->pend; n = next) {
		struct pending *p = container_of(n, struct pending, node);
		struct flow *f;

		next = n->next;
		if (p->r.peer_port != port || memcmp(p->r.peer_addr, addr, SL_ADDR_LEN))
			continue;
		f = flow__join(c, addr, port, gw__start(&p->r));
		if (!f)
			continue;
		c->st.joined_late++;
		/* Unlinked first: the callback may look at the stats. */
		list__del(&p->node);
		c->npend--;
		corr__joined(c, &p->r, f, NULL);
		free(p);
	}
}

static bool addr__in_prefix(const uint8_t a[SL_ADDR_LEN], const struct prefix *p)
{
	unsigned int full = p->bits / 8, rest = p->bits % 8;

	if (memcmp(a, p->addr, full))
		return false;
	return !rest || !((a[full] ^ p->addr[full]) & (uint8_t)(0xff << (8 - rest)));
}

static bool corr__is_local(struct correlate *c, const uint8_t a[SL_ADDR_LEN])
{
	if (!c->nprefixes)
		return true;
	for (size_t i = 0; i < c->nprefixes; i++)
		if (addr__in_prefix(a, &c->prefixes[i]))
			return true;
	return false;
}

static bool addr__is_v4mapped(const uint8_t a[SL_ADDR_LEN])
{
	static const uint8_t pfx[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	return !memcmp(a, pfx, sizeof(pfx));
}

/* Loopback is per network namespace: the gateway's 127.0.0.1 is not an
 * agent's. */
static bool addr__is_host_local(const uint8_t a[SL_ADDR_LEN])
{
	static const uint8_t any[SL_ADDR_LEN], lo6[SL_ADDR_LEN] = { [15] = 1 };

	if (!memcmp(a, any, SL_ADDR_LEN) || !memcmp(a, lo6, SL_ADDR_LEN))
		return true;
	return addr__is_v4mapped(a) && (a[12] == 127 || !memcmp(a + 12, any, 4));
}

/* An upstream of the gateway: an IP endpoint is learnt here, a host name
 * is the caller's to resolve (correlate__upstream_add). */
static void corr__learn_endpoint(struct correlate *c, const struct gw_record *r,
				 struct corr_result *out)
{
	struct gw_record ep;

	if (!r->endpoint[0] || !c->o.max_upstreams)
		return;
	memset(&ep.peer_addr, 0, sizeof(ep.peer_addr));
	if (gateway__parse_peer(r->endpoint, strlen(r->endpoint), &ep)) {
		if (out && strchr(r->endpoint, ':'))
			out->endpoint_is_name = true;
		return;
	}
	if (addr__is_host_local(ep.peer_addr) ||
	    corr__is_gateway_dst(c, SL_CLASS_NONE, ep.peer_addr, ep.peer_port))
		return;
	if (apset__add(&c->upstreams, ep.peer_addr, ep.peer_port) == -ENOMEM)
		c->st.nomem++;
}

int correlate__gateway(struct correlate *c, const struct gw_record *r, struct corr_result *out)
{
	enum corr_status st;
	struct pending *p;
	struct flow *f;

	if (out)
		memset(out, 0, sizeof(*out));
	if (!r->time_ns || !r->peer_port)
		return -EINVAL;
	c->st.gateway_records++;
	corr__learn_endpoint(c, r, out);
	if (!corr__is_local(c, r->peer_addr)) {
		c->st.foreign++;
		if (out)
			out->status = corr__ask(c, r) ? CORR_ASKED : CORR_FOREIGN;
		return 0;
	}
	f = flow__join(c, r->peer_addr, r->peer_port, gw__start(r));
	if (f) {
		corr__joined(c, r, f, out);
		return 0;
	}
	/* The established event may still be on its way, unless the clock
	 * is already past the time it could have come by. */
	if (c->now > r->time_ns + c->o.tolerance_ns || !c->o.max_pending) {
		st = corr__no_local_flow(c, r, out ? &out->findings : NULL);
		if (out)
			out->status = st;
		return 0;
	}
	if (c->npend >= c->o.max_pending) {
		struct pending *old = container_of(c->pend.next, struct pending, node);

		c->st.pending_overflow++;
		list__del(&old->node);
		c->npend--;
		corr__no_local_flow(c, &old->r, NULL);
		free(old);
	}
	p = malloc(sizeof(*p));
	if (!p) {
		c->st.nomem++;
		st = corr__no_local_flow(c, r, out ? &out->findings : NULL);
		if (out)
			out->status = st;
		return 0;
	}
	p->r = *r;
	p->deadline = r->time_ns + c->o.tolerance_ns;
	list__add_tail(&c->pend, &p->node);
	c->npend++;
	if (out)
		out->status = CORR_PENDING;
	return 0;
}

void correlate__tick(struct correlate *c, uint64_t now_ns)
{
	struct lnode *n, *next;

	corr__advance(c, now_ns);
	flows__expire(c, c->now);
	for (n = c->pend.next; n != &c->pend; n = next) {
		struct pending *p = container_of(n, struct pending, node);

		next = n->next;
		if (p->deadline >= c->now)
			continue;
		list__del(&p->node);
		c->npend--;
		corr__no_local_flow(c, &p->r, NULL);
		free(p);
	}
}

/* ---- bypass --------------------------------------------------------------- */

static bool corr__dedup(struct correlate *c, const struct sl_event *ev, uint64_t t)
{
	uint64_t k = hash__mix(hash__bytes(ev->cgroup_id ^ ((uint64_t)ev->dport << 48) ^
					   ((uint64_t)ev->verdict << 40), ev->daddr, SL_ADDR_LEN));
	struct dedup *d;

	if (!c->dedup)
		return false;
	d = &c->dedup[k & (CORR_DEDUP_SLOTS - 1)];
	/* Signed: events a little out of order count as within the window. */
	if (d->key == k && d->t && (int64_t)(t - d->t) < (int64_t)c->o.bypass_dedup_ns)
		return true;
	d->key = k;
	d->t = t ? t : 1;
	return false;
}

int correlate__connect(struct correlate *c, const struct sl_event *ev,
		       const struct corr_flow_meta *meta)
{
	struct corr_record rec = { 0 };
	struct corr_flow_info fi = { 0 };
	char detail[512], dst[64];
	const char *cls;
	uint8_t class;

	if (!meta)
		return -EINVAL;
	if (ev->type != SL_EV_CONNECT && ev->type != SL_EV_SENDMSG)
		return 0;
	class = corr__class(ev, meta);
	corr__advance(c, meta->time_ns);
	if (!meta->has_gateway || ev->rule_id == SL_RULE_LOOPBACK ||
	    corr__is_gateway_dst(c, class, ev->daddr, ev->dport))
		return 0;
	if (class == SL_CLASS_LLM || class == SL_CLASS_TOOL || class == SL_CLASS_AGENT)
		rec.basis = "class";
	else if (apset__has(&c->upstreams, ev->daddr, ev->dport))
		rec.basis = "upstream";
	else
		return 0;
	if (corr__dedup(c, ev, meta->time_ns)) {
		c->st.bypass_suppressed++;
		return 0;
	}
	info__from_event(&fi, ev);
	fi.established_ns = meta->time_ns;
	fi.class = class;
	fi.has_gateway = true;
	fi.cgroup = str__or_empty(meta->cgroup);
	fi.pod_namespace = str__or_empty(meta->pod_namespace);
	fi.pod_name = str__or_empty(meta->pod_name);
	fi.service_account = str__or_empty(meta->service_account);
	fi.policy = str__or_empty(meta->policy);
	fi.rule = str__or_empty(meta->rule);
	fi.tools_listed = false;
	events__format_addr(ev->daddr, ev->dport, 1, dst, sizeof(dst));
	cls = policy__class_name(class);
	if (rec.basis[0] == 'c')
		snprintf(detail, sizeof(detail),
			 "a workload whose policy names a gateway %s %s (class %s) directly (%s)",
			 ev->type == SL_EV_SENDMSG ? "sent to" : "connected to", dst, cls,
			 events__verdict_name(ev->verdict));
	else
		snprintf(detail, sizeof(detail),
			 "a workload whose policy names a gateway %s %s, an upstream the gateway "
			 "uses, directly (%s)",
			 ev->type == SL_EV_SENDMSG ? "sent to" : "connected to", dst,
			 events__verdict_name(ev->verdict));
	rec.time_ns = meta->time_ns;
	rec.flow = &fi;
	rec.detail = detail;
	corr__emit_finding(c, &rec, CORR_F_BYPASS, NULL);
	return 0;
}

/* ---- configuration ----------------------------------------------------- */

int correlate__gateway_addr(struct correlate *c, const uint8_t addr[SL_ADDR_LEN], uint16_t port)
{
	return apset__add(&c->gwaddrs, addr, port);
}

int correlate__upstream_add(struct correlate *c, const uint8_t addr[SL_ADDR_LEN], uint16_t port)
{
	if (addr__is_host_local(addr))
		return 0;
	return apset__add(&c->upstreams, addr, port) == -ENOMEM ? -ENOMEM : 0;
}

int correlate__local_prefix(struct correlate *c, const uint8_t addr[SL_ADDR_LEN], unsigned int bits)
{
	struct prefix *p;

	if (bits > 128)
		return -EINVAL;
	if (c->nprefixes >= CORR_MAX_PREFIXES)
		return -ENOSPC;
	p = &c->prefixes[c->nprefixes++];
	memset(p, 0, sizeof(*p));
	memcpy(p->addr, addr, (bits + 7) / 8);
	if (bits % 8)
		p->addr[bits / 8] &= (uint8_t)(0xff << (8 - bits % 8));
	p->bits = bits;
	return 0;
}

void correlate__set_ask(struct correlate *c, corr_ask_fn ask, void *ctx)
{
	c->ask = ask;
	c->ask_ctx = ctx;
}

void correlate__remote_done(struct correlate *c, const struct gw_record *r,
			    const struct corr_flow_info *fi, const char *why)
{
	if (!fi) {
		corr__unattributed_why(c, r, why ? why : "no other node has it", NULL);
		return;
	}
	c->st.remote_joined++;
	corr__joined_info(c, r, fi, NULL);
}

int correlate__lookup(struct correlate *c, const uint8_t addr[SL_ADDR_LEN], uint16_t port,
		      uint64_t start_ns, struct corr_flow_info *out)
{
	struct flow *f;

	c->st.lookups++;
	f = flow__join(c, addr, port, start_ns);
	if (!f)
		return -ENOENT;
	c->st.lookups_found++;
	*out = f->info;
	out->node = c->node;
	return 0;
}

void correlate__stats(const struct correlate *c, struct corr_stats *st)
{
	*st = c->st;
	st->flows = c->nflows;
	st->flows_open = c->nopen;
	st->pending = c->npend;
	st->upstreams = c->upstreams.n;
	st->idents = c->nidents;
}

void correlate__free(struct correlate *c)
{
	if (!c)
		return;
	while (!list__empty(&c->pend))
		pending__drop(c, container_of(c->pend.next, struct pending, node));
	if (c->fb) {
		while (!list__empty(&c->open))
			flow__remove(c, container_of(c->open.next, struct flow, lru));
		while (!list__empty(&c->closed))
			flow__remove(c, container_of(c->closed.next, struct flow, lru));
	}
	apset__free(&c->gwaddrs);
	apset__free(&c->upstreams);
	free(c->dedup);
	free(c->fb);
	free(c->ib);
	free(c);
}

/* ---- rendering ------------------------------------------------------------ */

/* A bounded JSON writer: on overflow it remembers and the caller fails. */
struct jw {
	char *p;
	size_t len, off;
	bool overflow;
};

static void jw_raw(struct jw *w, const char *s, size_t n)
{
	if (w->overflow || w->off + n >= w->len) {
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

/* "KEY": with the comma a member needs unless it opens its object, so
 * that the helpers below compose in any order. */
static void jw_key(struct jw *w, const char *key)
{
	if (!w->overflow && w->off && w->p[w->off - 1] != '{')
		jw_raw(w, ",", 1);
	jw_raw(w, "\"", 1);
	jw_lit(w, key);
	jw_raw(w, "\":", 2);
}

static bool jw_plain(unsigned char ch)
{
	return ch >= 0x20 && ch != 0x7f && ch != '"' && ch != '\\';
}

static void jw_str(struct jw *w, const char *s)
{
	static const char hex[] = "0123456789abcdef";

	jw_raw(w, "\"", 1);
	while (*s) {
		const char *run = s;

		/* Runs of plain bytes in one copy: most strings are all plain. */
		while (jw_plain((unsigned char)*s))
			s++;
		if (s > run)
			jw_raw(w, run, (size_t)(s - run));
		if (!*s)
			break;
		if (*s == '"' || *s == '\\') {
			char e[2] = { '\\', *s };

			jw_raw(w, e, 2);
		} else {
			unsigned char ch = (unsigned char)*s;
			char e[6] = { '\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15] };

			jw_raw(w, e, 6);
		}
		s++;
	}
	jw_raw(w, "\"", 1);
}

/* A string member; null for NULL or "". */
static void jw_kstr(struct jw *w, const char *key, const char *val)
{
	jw_key(w, key);
	if (val && *val)
		jw_str(w, val);
	else
		jw_lit(w, "null");
}

static void jw_u64(struct jw *w, uint64_t v)
{
	char b[20];
	size_t i = sizeof(b);

	do
		b[--i] = (char)('0' + v % 10);
	while ((v /= 10));
	jw_raw(w, b + i, sizeof(b) - i);
}

static void jw_ku64(struct jw *w, const char *key, uint64_t v)
{
	jw_key(w, key);
	jw_u64(w, v);
}

/* RFC 3339 UTC with ns, or null for 0. */
static void jw_ktime(struct jw *w, const char *key, uint64_t ns)
{
	char t[64];

	jw_key(w, key);
	if (!ns) {
		jw_lit(w, "null");
		return;
	}
	events__format_time(0, ns, t, sizeof(t));
	jw_raw(w, "\"", 1);
	jw_lit(w, t);
	jw_raw(w, "\"", 1);
}

static void jw_kaddr(struct jw *w, const char *key, const uint8_t addr[SL_ADDR_LEN], uint16_t port)
{
	char a[64];

	events__format_addr(addr, port, 1, a, sizeof(a));
	jw_kstr(w, key, a);
}

static int jw_done(struct jw *w)
{
	return w->overflow ? -ENOSPC : (int)w->off;
}

static const char *gw__format_name(enum gw_format f)
{
	switch (f) {
	case GW_AGENTGATEWAY: return "agentgateway";
	case GW_ENVOY: return "envoy";
	default: return NULL;
	}
}

/* The gateway's own fields, as members of an open object. */
static void jw_gateway_fields(struct jw *w, const struct gw_record *r)
{
	jw_kstr(w, "format", gw__format_name(r->format));
	jw_kstr(w, "name", r->gateway);
	jw_kstr(w, "route", r->route);
	jw_kstr(w, "endpoint", r->endpoint);
	jw_kstr(w, "peer", r->peer);
	jw_kstr(w, "protocol", r->protocol);
	jw_key(w, "status");
	if (r->status)
		jw_fmt(w, "%d", r->status);
	else
		jw_lit(w, "null");
	jw_kstr(w, "reason", r->reason);
	jw_kstr(w, "error", r->error);
	jw_kstr(w, "http_method", r->http_method);
	jw_kstr(w, "http_path", r->http_path);
	jw_kstr(w, "mcp_method", r->mcp_method);
	jw_kstr(w, "mcp_target", r->mcp_target);
	jw_kstr(w, "tool", r->tool);
	jw_kstr(w, "a2a_method", r->a2a_method);
	jw_kstr(w, "model", r->model);
	jw_kstr(w, "identity", r->identity);
	jw_kstr(w, "identity_key", r->identity[0] ? r->identity_key : NULL);
	jw_kstr(w, "request_id", r->request_id);
	jw_kstr(w, "session", r->session);
	if (r->flags & GW_F_TRUNCATED) {
		jw_key(w, "truncated");
		jw_lit(w, "true");
	}
}

static const char *class__name_or_null(uint8_t class)
{
	return class ? policy__class_name(class) : NULL;
}

/* "policy", "rule", "class", "workload", "process" of a kernel record, as
 * the flow records write them (plus the pod's names). */
static void jw_workload(struct jw *w, const struct correlate *c, const struct corr_flow_info *fi)
{
	if (!fi) {
		jw_kstr(w, "policy", NULL);
		jw_kstr(w, "rule", NULL);
		jw_kstr(w, "class", NULL);
		jw_kstr(w, "workload", NULL);
		jw_kstr(w, "process", NULL);
		return;
	}
	jw_kstr(w, "policy", fi->policy);
	jw_kstr(w, "rule", fi->rule);
	jw_kstr(w, "class", class__name_or_null(fi->class));
	jw_key(w, "workload");
	jw_lit(w, "{");
	jw_kstr(w, "namespace", fi->pod_namespace);
	jw_kstr(w, "pod", fi->pod_name);
	jw_kstr(w, "service_account", fi->service_account);
	jw_kstr(w, "cgroup", fi->cgroup);
	jw_ku64(w, "cgroup_id", fi->cgroup_id);
	/* The kernel that saw it: another node's, when one was asked. */
	jw_kstr(w, "node", fi->node && fi->node[0] ? fi->node : c->node);
	if (fi->ident_cgid && fi->ident_cgid != fi->cgroup_id)
		jw_ku64(w, "identity_cgroup_id", fi->ident_cgid);
	jw_lit(w, "}");
	jw_key(w, "process");
	if (fi->pid) {
		jw_fmt(w, "{\"pid\":%u,\"comm\":", fi->pid);
		jw_str(w, fi->comm);
		jw_fmt(w, ",\"uid\":%u}", fi->uid);
	} else {
		jw_lit(w, "null");
	}
}

static const char *family__name(uint8_t f)
{
	return f == AF_INET ? "ipv4" : f == AF_INET6 ? "ipv6" : "other";
}

static void jw_head(struct jw *w, const struct correlate *c, uint64_t t, const char *type)
{
	jw_lit(w, "{");
	jw_ktime(w, "time", t);
	jw_kstr(w, "node", c->node);
	jw_kstr(w, "type", type);
}

int correlate__render_gateway(const struct correlate *c, const struct corr_record *rec, char *buf,
			      size_t len)
{
	struct jw w = { .p = buf, .len = len };
	const struct corr_flow_info *fi = rec->flow;
	const struct gw_record *r = rec->gw;

	if (rec->type != CORR_GATEWAY || !r || !fi)
		return -EINVAL;
	jw_head(&w, c, rec->time_ns, "gateway");
	jw_ktime(&w, "start", gw__start(r));
	jw_ku64(&w, "duration_ns", r->duration_ns);
	jw_key(&w, "gateway");
	jw_lit(&w, "{");
	jw_gateway_fields(&w, r);
	jw_lit(&w, "}");
	jw_workload(&w, c, fi);
	jw_key(&w, "socket");
	jw_lit(&w, "{");
	jw_ku64(&w, "cookie", fi->cookie);
	jw_kstr(&w, "family", family__name(fi->family));
	jw_kstr(&w, "protocol", "tcp");
	jw_ktime(&w, "established", fi->established_ns);
	jw_ktime(&w, "close", fi->close_ns);
	if (fi->close_inferred) {
		jw_key(&w, "close_inferred");
		jw_lit(&w, "true");
	}
	jw_lit(&w, "}");
	jw_kaddr(&w, "src", fi->saddr, fi->sport);
	jw_kaddr(&w, "dst", fi->daddr, fi->dport);
	jw_lit(&w, "}");
	return jw_done(&w);
}

int correlate__render_finding(const struct correlate *c, const struct corr_record *rec, char *buf,
			      size_t len)
{
	struct jw w = { .p = buf, .len = len };
	const struct corr_flow_info *fi = rec->flow;
	const struct gw_record *r = rec->gw;
	bool cg;

	if (rec->type != CORR_FINDING || rec->finding >= CORR_F_MAX ||
	    (rec->finding != CORR_F_BYPASS && !r) ||
	    (rec->finding != CORR_F_UNATTRIBUTED && !fi))
		return -EINVAL;
	jw_head(&w, c, rec->time_ns, "finding");
	jw_kstr(&w, "finding", correlate__finding_name(rec->finding));
	jw_kstr(&w, "detail", rec->detail);
	jw_kstr(&w, "basis", rec->basis);
	jw_workload(&w, c, fi);

	switch (rec->finding) {
	case CORR_F_BYPASS:
		jw_kaddr(&w, "dst", fi->daddr, fi->dport);
		jw_kstr(&w, "verdict", events__verdict_name(fi->verdict));
		break;
	case CORR_F_IDENTITY_MISMATCH:
		cg = rec->basis && !strcmp(rec->basis, "cgroup");
		jw_key(&w, "claimed");
		jw_lit(&w, "{");
		jw_kstr(&w, "value", r->identity);
		jw_kstr(&w, "key", r->identity_key);
		jw_kstr(&w, "namespace", rec->claimed_namespace);
		jw_kstr(&w, "service_account", rec->claimed_sa);
		jw_lit(&w, "}");
		jw_key(&w, "seen");
		jw_lit(&w, "{");
		jw_kstr(&w, "namespace", rec->seen_namespace);
		jw_kstr(&w, cg ? "name" : "service_account", rec->seen_name);
		jw_lit(&w, "}");
		break;
	case CORR_F_POLICY_DRIFT:
		jw_kstr(&w, "tool", r->tool);
		jw_key(&w, "policy_tools");
		jw_lit(&w, "[");
		for (size_t i = 0; i < fi->ntools; i++) {
			if (i)
				jw_lit(&w, ",");
			jw_str(&w, fi->tools[i]);
		}
		jw_lit(&w, "]");
		break;
	case CORR_F_UNATTRIBUTED:
		jw_kstr(&w, "peer", r->peer);
		break;
	default:
		break;
	}

	jw_key(&w, "evidence");
	jw_lit(&w, "{");
	if (r) {
		jw_key(&w, "gateway");
		jw_lit(&w, "{");
		jw_ktime(&w, "time", r->time_ns);
		jw_ktime(&w, "start", gw__start(r));
		jw_ku64(&w, "duration_ns", r->duration_ns);
		jw_gateway_fields(&w, r);
		jw_lit(&w, "}");
	}
	if (fi && rec->finding == CORR_F_BYPASS) {
		jw_key(&w, "connect");
		jw_lit(&w, "{");
		jw_kstr(&w, "type", events__type_name(fi->type));
		jw_ktime(&w, "time", fi->established_ns);
		jw_kstr(&w, "verdict", events__verdict_name(fi->verdict));
		jw_kstr(&w, "rule", fi->rule);
		jw_kstr(&w, "class", class__name_or_null(fi->class));
		jw_kaddr(&w, "dst", fi->daddr, fi->dport);
		jw_ku64(&w, "cookie", fi->cookie);
		jw_lit(&w, "}");
	} else if (fi) {
		jw_key(&w, "flow");
		jw_lit(&w, "{");
		jw_ku64(&w, "cookie", fi->cookie);
		jw_kaddr(&w, "src", fi->saddr, fi->sport);
		jw_kaddr(&w, "dst", fi->daddr, fi->dport);
		jw_ktime(&w, "established", fi->established_ns);
		jw_ktime(&w, "close", fi->close_ns);
		jw_lit(&w, "}");
	}
	jw_lit(&w, "}}");
	return jw_done(&w);
}

int correlate__render(const struct correlate *c, const struct corr_record *rec, char *buf, size_t len)
{
	return rec->type == CORR_GATEWAY ? correlate__render_gateway(c, rec, buf, len)
					 : correlate__render_finding(c, rec, buf, len);
}
