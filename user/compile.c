// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Policy documents -> the LPM entries, rule names and fqdn records of one
 * policy set.
 *
 * The kernel does one longest-prefix lookup and then scans the port
 * entries of that one value, taking the first match. So the value of
 * each prefix must already hold everything that applies to addresses
 * under it: the entries of its own rules and of every rule on a shorter
 * prefix covering it. Deny entries go first so that an egressDeny beats
 * any allow, whichever prefix each came from.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compile.h"

/* A port entry with where it came from, for ordering and dedupe. */
struct pent {
	struct sl_port_entry e;
	uint32_t seq;		/* position within its rule */
};

struct rinfo {
	size_t first, n;	/* its port entries in the flat array */
};

/* One address prefix attached to one rule. */
struct item {
	uint8_t addr[SL_ADDR_LEN];
	uint8_t bits;		/* in the 128-bit, v4-mapped space */
	uint32_t rule;		/* index into out->rules */
};

/* A distinct prefix with its own (not yet covering) entries. */
struct pfx {
	uint8_t addr[SL_ADDR_LEN];
	uint8_t bits;
	size_t item_lo, item_hi;	/* its items */
	size_t own_lo, own_n;		/* its own normalized entries */
};

struct rname {
	const char *name;
	size_t order;		/* first use, for messages */
	uint32_t rule;
	struct compile_addr *addrs;
	size_t n;
};

struct fqrec {
	uint8_t addr[SL_ADDR_LEN];
	const char *name;
	size_t order;
};

struct cbuild {
	const struct compile_input *in;
	struct compiled *out;
	char *err;
	size_t errlen;
	struct pent *pents;	/* per rule, flat */
	size_t npents;
	struct rinfo *rinfo;
	struct item *items;
	size_t nitems, citems;
	struct rname *names;
	size_t nnames;
	struct fqrec *fq;
	size_t nfq, cfq;
	struct pfx *pfx;
	size_t npfx;
	struct pent *own;	/* normalized own entries of every prefix */
	size_t nown;
	uint32_t *hash;		/* pfx index + 1; 0 = empty */
	size_t hmask;
};

static void __attribute__((format(printf, 2, 3)))
cerr(struct cbuild *b, const char *fmt, ...)
{
	va_list ap;

	if (!b->err || !b->errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(b->err, b->errlen, fmt, ap);
	va_end(ap);
}

static void mask(uint8_t out[SL_ADDR_LEN], const uint8_t in[SL_ADDR_LEN], unsigned int bits)
{
	for (unsigned int i = 0; i < SL_ADDR_LEN; i++) {
		unsigned int lo = i * 8;

		if (bits >= lo + 8)
			out[i] = in[i];
		else if (bits <= lo)
			out[i] = 0;
		else
			out[i] = in[i] & (uint8_t)(0xff << (8 - (bits - lo)));
	}
}

static bool is_v4_mapped(const uint8_t a[SL_ADDR_LEN])
{
	static const uint8_t pfx[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	return !memcmp(a, pfx, sizeof(pfx));
}

/* "10.0.0.0/8" for v4-mapped prefixes of 96 bits or more, else IPv6. */
static const char *pfx_str(char *buf, size_t len, const uint8_t a[SL_ADDR_LEN], unsigned int bits)
{
	char s[INET6_ADDRSTRLEN];

	if (bits >= 96 && is_v4_mapped(a)) {
		inet_ntop(AF_INET, a + 12, s, sizeof(s));
		snprintf(buf, len, "%s/%u", s, bits - 96);
	} else {
		inet_ntop(AF_INET6, a, s, sizeof(s));
		snprintf(buf, len, "%s/%u", s, bits);
	}
	return buf;
}

static int push(void **v, size_t *n, size_t *cap, size_t size)
{
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 64;
		void *nv = realloc(*v, c * size);

		if (!nv)
			return -ENOMEM;
		*v = nv;
		*cap = c;
	}
	(*n)++;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Rules and their port entries                                         */

/* Cut to fit: "namespace/name" may exceed sl_rule_meta.policy (63); the
 * map field is fixed by the kernel ABI. */
static void str_copy(char *dst, size_t size, const char *src)
{
	size_t len = strlen(src);

	if (len >= size)
		len = size - 1;
	memcpy(dst, src, len);
	dst[len] = '\0';
}

/* B->pents is sized by the caller: growing it per rule is quadratic. */
static void rule__add(struct cbuild *b, const char *policy, const char *name, uint8_t class,
		     uint8_t action, const struct pol_port *ports, size_t nports)
{
	struct compiled *o = b->out;
	uint32_t idx = (uint32_t)o->nrules;
	struct compile_rule *r = &o->rules[o->nrules++];
	struct rinfo *ri = &b->rinfo[idx];
	size_t need = nports ? nports : 1;

	r->rule_id = COMPILE_RULE_ID(idx);
	str_copy(r->meta.policy, sizeof(r->meta.policy), policy);
	str_copy(r->meta.rule, sizeof(r->meta.rule), name ? name : "");
	r->meta.class = class;
	r->meta.action = action;
	ri->first = b->npents;
	ri->n = need;
	for (size_t i = 0; i < need; i++) {
		struct pent *p = &b->pents[b->npents++];

		memset(p, 0, sizeof(*p));
		p->seq = (uint32_t)i;
		p->e.action = action;
		p->e.class = class;
		p->e.rule_id = r->rule_id;
		if (!nports || !ports[i].port) {
			/* No ports: any port; port 0: any port of the protocol. */
			p->e.port_lo = 0;
			p->e.port_hi = 65535;
			p->e.proto = nports ? ports[i].proto : SL_PROTO_ANY;
		} else {
			p->e.port_lo = ports[i].port;
			p->e.port_hi = ports[i].end_port >= ports[i].port ? ports[i].end_port :
				ports[i].port;
			p->e.proto = ports[i].proto;
		}
	}
}

static int item__add(struct cbuild *b, const uint8_t addr[SL_ADDR_LEN], unsigned int bits,
		     uint32_t rule)
{
	struct item *it;

	if (push((void **)&b->items, &b->nitems, &b->citems, sizeof(*it)))
		return -ENOMEM;
	it = &b->items[b->nitems - 1];
	/* Masked again: docs may come from elsewhere than the parser. */
	mask(it->addr, addr, bits);
	it->bits = (uint8_t)bits;
	it->rule = rule;
	return 0;
}

/* ------------------------------------------------------------------ */
/* fqdn resolution: each distinct name once                             */

static int rname__cmp(const void *a, const void *b)
{
	const struct rname *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	if (c)
		return c;
	return x->order < y->order ? -1 : x->order > y->order;
}

static int rname__key_cmp(const void *key, const void *elt)
{
	return strcmp(key, ((const struct rname *)elt)->name);
}

static int names__resolve(struct cbuild *b)
{
	const struct compile_input *in = b->in;
	size_t n = 0, u = 0;
	uint32_t rule = 0;

	for (size_t d = 0; d < in->ndocs; d++)
		for (size_t r = 0; r < in->docs[d]->negress; r++)
			for (size_t t = 0; t < in->docs[d]->egress[r].nto; t++)
				n += in->docs[d]->egress[r].to[t].kind == PEER_FQDN;
	if (!n)
		return 0;
	if (!in->resolve) {
		cerr(b, "fqdn destinations need a resolver, and none was given");
		return -EINVAL;
	}
	if (!(b->names = calloc(n, sizeof(*b->names))))
		return -ENOMEM;
	for (size_t d = 0; d < in->ndocs; d++)
		for (size_t r = 0; r < in->docs[d]->negress; r++, rule++)
			for (size_t t = 0; t < in->docs[d]->egress[r].nto; t++) {
				const struct pol_peer *pe = &in->docs[d]->egress[r].to[t];

				if (pe->kind != PEER_FQDN || !pe->fqdn)
					continue;
				b->names[b->nnames] = (struct rname){
					.name = pe->fqdn, .order = b->nnames, .rule = rule,
				};
				b->nnames++;
			}
	qsort(b->names, b->nnames, sizeof(*b->names), rname__cmp);
	for (size_t i = 0; i < b->nnames; i++)
		if (!u || strcmp(b->names[i].name, b->names[u - 1].name))
			b->names[u++] = b->names[i];
	b->nnames = u;

	for (size_t i = 0; i < b->nnames; i++) {
		struct rname *rn = &b->names[i];
		int err = in->resolve(in->resolve_ctx, rn->name, &rn->addrs, &rn->n);

		if (err) {
			const struct sl_rule_meta *m = &b->out->rules[rn->rule].meta;

			rn->addrs = NULL;
			rn->n = 0;
			cerr(b, "cannot resolve %s (rule %s of %s): %s", rn->name, m->rule,
			     m->policy, strerror(err < 0 ? -err : err));
			return err < 0 ? err : -err;
		}
		if (!rn->addrs)
			rn->n = 0;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Port entry lists                                                     */

static int pent__cmp_key(const void *a, const void *b)
{
	const struct pent *x = a, *y = b;

	if (x->e.port_lo != y->e.port_lo)
		return x->e.port_lo < y->e.port_lo ? -1 : 1;
	if (x->e.port_hi != y->e.port_hi)
		return x->e.port_hi < y->e.port_hi ? -1 : 1;
	if (x->e.proto != y->e.proto)
		return x->e.proto < y->e.proto ? -1 : 1;
	if (x->e.action != y->e.action)
		return x->e.action < y->e.action ? -1 : 1;
	if (x->e.rule_id != y->e.rule_id)
		return x->e.rule_id < y->e.rule_id ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Scan order: deny first, then by rule id, then as written in the rule. */
static int pent__cmp_order(const void *a, const void *b)
{
	const struct pent *x = a, *y = b;

	if (x->e.action != y->e.action)
		return x->e.action == SL_ACTION_DENY ? -1 : 1;
	if (x->e.rule_id != y->e.rule_id)
		return x->e.rule_id < y->e.rule_id ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static bool pent__shadows(const struct sl_port_entry *d, const struct sl_port_entry *a)
{
	return d->port_lo <= a->port_lo && d->port_hi >= a->port_hi &&
	       (d->proto == SL_PROTO_ANY || d->proto == a->proto);
}

/*
 * Sort V into scan order, drop duplicates (same ports, protocol and action:
 * the lowest rule id names the match) and allows that a deny fully covers
 * (they can never match; dropping them leaves room under the cap).
 * Returns the new count.
 */
static size_t pents__normalize(struct pent *v, size_t n)
{
	size_t u = 0, ndeny = 0, k = 0;

	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), pent__cmp_key);
	for (size_t i = 0; i < n; i++) {
		if (u && v[i].e.port_lo == v[u - 1].e.port_lo &&
		    v[i].e.port_hi == v[u - 1].e.port_hi && v[i].e.proto == v[u - 1].e.proto &&
		    v[i].e.action == v[u - 1].e.action)
			continue;
		v[u++] = v[i];
	}
	qsort(v, u, sizeof(*v), pent__cmp_order);
	while (ndeny < u && v[ndeny].e.action == SL_ACTION_DENY)
		ndeny++;
	for (size_t i = 0; i < u; i++) {
		bool dead = false;

		for (size_t j = 0; i >= ndeny && j < ndeny && !dead; j++)
			dead = pent__shadows(&v[j].e, &v[i].e);
		if (!dead)
			v[k++] = v[i];
	}
	return k;
}

/* "agents/p:openai, agents/p:docs, ..." for the rules in V, into the error. */
static void too_many(struct cbuild *b, const struct pfx *p, const struct pent *v, size_t n)
{
	char ps[64], list[768] = "";
	size_t o = 0;

	for (size_t i = 0; i < n && o < sizeof(list) - 1; i++) {
		const struct sl_rule_meta *m;
		bool seen = false;

		for (size_t j = 0; j < i && !seen; j++)
			seen = v[j].e.rule_id == v[i].e.rule_id;
		if (seen)
			continue;
		m = &b->out->rules[v[i].e.rule_id - SL_RULE_FIRST].meta;
		o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s:%s", o ? ", " : "",
				      m->policy, m->rule);
	}
	cerr(b, "%s needs %zu port entries, more than the %d one address prefix can hold; "
	     "rules covering it: %s; merge their port ranges or split the destinations",
	     pfx_str(ps, sizeof(ps), p->addr, p->bits), n, SL_MAX_PORT_ENTRIES, list);
}

/* ------------------------------------------------------------------ */
/* Prefixes                                                             */

static int item__cmp(const void *a, const void *b)
{
	const struct item *x = a, *y = b;
	int c = memcmp(x->addr, y->addr, SL_ADDR_LEN);

	if (c)
		return c;
	if (x->bits != y->bits)
		return x->bits < y->bits ? -1 : 1;
	return x->rule < y->rule ? -1 : x->rule > y->rule;
}

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

static size_t pfx__hash(const uint8_t a[SL_ADDR_LEN], uint8_t bits)
{
	uint64_t hi, lo;

	memcpy(&hi, a, 8);
	memcpy(&lo, a + 8, 8);
	return (size_t)mix64(hi ^ mix64(lo ^ ((uint64_t)bits << 56)));
}

static int hash__build(struct cbuild *b)
{
	size_t cap = 16;

	while (cap < b->npfx * 2)
		cap <<= 1;
	if (!(b->hash = calloc(cap, sizeof(*b->hash))))
		return -ENOMEM;
	b->hmask = cap - 1;
	for (size_t i = 0; i < b->npfx; i++) {
		size_t h = pfx__hash(b->pfx[i].addr, b->pfx[i].bits) & b->hmask;

		while (b->hash[h])
			h = (h + 1) & b->hmask;
		b->hash[h] = (uint32_t)i + 1;
	}
	return 0;
}

static const struct pfx *hash__find(const struct cbuild *b, const uint8_t a[SL_ADDR_LEN],
				    uint8_t bits)
{
	for (size_t h = pfx__hash(a, bits) & b->hmask; b->hash[h]; h = (h + 1) & b->hmask) {
		const struct pfx *p = &b->pfx[b->hash[h] - 1];

		if (p->bits == bits && !memcmp(p->addr, a, SL_ADDR_LEN))
			return p;
	}
	return NULL;
}

/* Items sorted and deduplicated -> distinct prefixes, each with its own
 * entries already normalized, so that merging covering prefixes later
 * handles at most (129 * SL_MAX_PORT_ENTRIES) entries per prefix. */
static int prefixes__build(struct cbuild *b)
{
	size_t u = 0;

	if (!b->nitems)
		return 0;
	qsort(b->items, b->nitems, sizeof(*b->items), item__cmp);
	for (size_t i = 0; i < b->nitems; i++)
		if (!u || item__cmp(&b->items[i], &b->items[u - 1]))
			b->items[u++] = b->items[i];
	b->nitems = u;
	if (!(b->pfx = calloc(b->nitems, sizeof(*b->pfx))))
		return -ENOMEM;
	for (size_t i = 0; i < b->nitems;) {
		struct pfx *p = &b->pfx[b->npfx++];
		size_t j = i;

		memcpy(p->addr, b->items[i].addr, SL_ADDR_LEN);
		p->bits = b->items[i].bits;
		while (j < b->nitems && b->items[j].bits == p->bits &&
		       !memcmp(b->items[j].addr, p->addr, SL_ADDR_LEN))
			j++;
		p->item_lo = i;
		p->item_hi = j;
		i = j;
	}
	if (!(b->own = calloc(b->npfx * SL_MAX_PORT_ENTRIES, sizeof(*b->own))))
		return -ENOMEM;
	for (size_t i = 0; i < b->npfx; i++) {
		struct pfx *p = &b->pfx[i];
		struct pent *v = NULL;
		size_t n = 0;

		for (size_t k = p->item_lo; k < p->item_hi; k++)
			n += b->rinfo[b->items[k].rule].n;
		if (!(v = malloc(n * sizeof(*v))))
			return -ENOMEM;
		n = 0;
		for (size_t k = p->item_lo; k < p->item_hi; k++) {
			const struct rinfo *ri = &b->rinfo[b->items[k].rule];

			memcpy(v + n, b->pents + ri->first, ri->n * sizeof(*v));
			n += ri->n;
		}
		n = pents__normalize(v, n);
		if (n > SL_MAX_PORT_ENTRIES) {
			too_many(b, p, v, n);
			free(v);
			return -E2BIG;
		}
		p->own_lo = b->nown;
		p->own_n = n;
		memcpy(b->own + b->nown, v, n * sizeof(*v));
		b->nown += n;
		free(v);
	}
	return hash__build(b);
}

/* The value of each prefix: its own entries and those of every shorter
 * prefix present that covers it. Only prefix lengths that occur are
 * looked up, so 100k host routes cost one probe each. */
static int entries__build(struct cbuild *b)
{
	bool present[129] = { false };
	uint8_t lens[129];
	size_t nlens = 0;
	struct pent *v;
	struct compiled *o = b->out;

	if (!b->npfx)
		return 0;
	for (size_t i = 0; i < b->npfx; i++)
		present[b->pfx[i].bits] = true;
	for (unsigned int l = 0; l <= 128; l++)
		if (present[l])
			lens[nlens++] = (uint8_t)l;
	if (!(v = malloc(nlens * SL_MAX_PORT_ENTRIES * sizeof(*v))))
		return -ENOMEM;
	if (!(o->entries = calloc(b->npfx, sizeof(*o->entries)))) {
		free(v);
		return -ENOMEM;
	}
	for (size_t i = 0; i < b->npfx; i++) {
		const struct pfx *p = &b->pfx[i];
		struct compile_entry *ce = &o->entries[o->nentries];
		size_t n = 0;

		for (size_t l = 0; l < nlens && lens[l] <= p->bits; l++) {
			const struct pfx *c = p;
			uint8_t a[SL_ADDR_LEN];

			if (lens[l] < p->bits) {
				mask(a, p->addr, lens[l]);
				if (!(c = hash__find(b, a, lens[l])))
					continue;
			}
			memcpy(v + n, b->own + c->own_lo, c->own_n * sizeof(*v));
			n += c->own_n;
		}
		n = pents__normalize(v, n);
		if (n > SL_MAX_PORT_ENTRIES) {
			too_many(b, p, v, n);
			free(v);
			return -E2BIG;
		}
		ce->key.prefixlen = SL_LPM_SET_BITS + p->bits;
		ce->key.set_id = 0;
		memcpy(ce->key.addr, p->addr, SL_ADDR_LEN);
		ce->val.n = (uint32_t)n;
		for (size_t k = 0; k < n; k++)
			ce->val.e[k] = v[k].e;
		o->nentries++;
	}
	free(v);
	return 0;
}

/* ------------------------------------------------------------------ */
/* fqdn records                                                         */

static int fqrec__cmp(const void *a, const void *b)
{
	const struct fqrec *x = a, *y = b;
	int c = memcmp(x->addr, y->addr, SL_ADDR_LEN);

	if (c)
		return c;
	return x->order < y->order ? -1 : x->order > y->order;
}

static bool names_has(const char *list, const char *name)
{
	size_t len = strlen(name);

	for (const char *s = list; *s;) {
		const char *comma = strchr(s, ',');
		size_t l = comma ? (size_t)(comma - s) : strlen(s);

		if (l == len && !memcmp(s, name, len))
			return true;
		if (!comma)
			break;
		s = comma + 1;
	}
	return false;
}

/* Whole names only, so a reader never sees half a name; a single name
 * longer than the field is cut to fit. */
static void names_add(char *list, size_t size, const char *name)
{
	size_t o = strlen(list), len = strlen(name);

	if (names_has(list, name))
		return;
	if (!o) {
		if (len > size - 1)
			len = size - 1;
		memcpy(list, name, len);
		list[len] = '\0';
		return;
	}
	if (o + 1 + len < size) {
		list[o] = ',';
		memcpy(list + o + 1, name, len + 1);
	}
}

static int fqdns__build(struct cbuild *b)
{
	struct compiled *o = b->out;

	if (!b->nfq)
		return 0;
	qsort(b->fq, b->nfq, sizeof(*b->fq), fqrec__cmp);
	if (!(o->fqdns = calloc(b->nfq, sizeof(*o->fqdns))))
		return -ENOMEM;
	for (size_t i = 0; i < b->nfq; i++) {
		struct compile_fqdn *f;

		if (!o->nfqdns || memcmp(o->fqdns[o->nfqdns - 1].addr, b->fq[i].addr, SL_ADDR_LEN)) {
			f = &o->fqdns[o->nfqdns++];
			memcpy(f->addr, b->fq[i].addr, SL_ADDR_LEN);
		}
		f = &o->fqdns[o->nfqdns - 1];
		names_add(f->names, sizeof(f->names), b->fq[i].name);
	}
	return 0;
}

/* ------------------------------------------------------------------ */

static int collect(struct cbuild *b)
{
	const struct compile_input *in = b->in;
	struct compiled *o = b->out;
	/* with no document (sluice run without --policy) DNS still works */
	bool dns = in->nresolvers;
	size_t nrules = 0, npents = 0;
	uint32_t rule = 0;
	int err;

	for (size_t d = 0; d < in->ndocs; d++) {
		const struct pol_doc *doc = in->docs[d];

		nrules += doc->negress;
		for (size_t r = 0; r < doc->negress; r++)
			npents += doc->egress[r].nports ? doc->egress[r].nports : 1;
		if (doc->dns_deny)
			dns = false;
	}
	nrules += dns;
	npents += 2 * dns;
	o->rules = calloc(nrules ? nrules : 1, sizeof(*o->rules));
	b->rinfo = calloc(nrules ? nrules : 1, sizeof(*b->rinfo));
	b->pents = calloc(npents ? npents : 1, sizeof(*b->pents));
	if (!o->rules || !b->rinfo || !b->pents)
		return -ENOMEM;

	/* Rule ids are dense, in document then rule order. */
	for (size_t d = 0; d < in->ndocs; d++) {
		const struct pol_doc *doc = in->docs[d];
		char id[320];	/* 63 + 1 + 253 */

		policy__doc_id(doc, id, sizeof(id));
		for (size_t r = 0; r < doc->negress; r++) {
			const struct pol_rule *pr = &doc->egress[r];

			rule__add(b, id, pr->name, pr->class,
				  pr->deny ? SL_ACTION_DENY : SL_ACTION_ALLOW, pr->ports, pr->nports);
		}
	}
	if (dns) {
		const struct pol_port p53[] = {
			{ .port = 53, .end_port = 53, .proto = SL_PROTO_UDP },
			{ .port = 53, .end_port = 53, .proto = SL_PROTO_TCP },
		};

		rule__add(b, "(implicit)", "dns", SL_CLASS_DNS, SL_ACTION_ALLOW, p53, 2);
	}

	err = names__resolve(b);
	if (err)
		return err;

	for (size_t d = 0; d < in->ndocs; d++) {
		const struct pol_doc *doc = in->docs[d];

		for (size_t r = 0; r < doc->negress; r++, rule++) {
			const struct pol_rule *pr = &doc->egress[r];

			for (size_t t = 0; t < pr->nto; t++) {
				const struct pol_peer *pe = &pr->to[t];
				const struct rname *rn;

				switch (pe->kind) {
				case PEER_CIDR:
					if (item__add(b, pe->addr, pe->bits > 128 ? 128 : pe->bits, rule))
						return -ENOMEM;
					break;
				case PEER_FQDN:
					if (!pe->fqdn)
						break;
					rn = bsearch(pe->fqdn, b->names, b->nnames, sizeof(*b->names),
						     rname__key_cmp);
					for (size_t k = 0; rn && k < rn->n; k++) {
						struct fqrec *f;

						if (item__add(b, rn->addrs[k].addr, 128, rule) ||
						    push((void **)&b->fq, &b->nfq, &b->cfq, sizeof(*f)))
							return -ENOMEM;
						f = &b->fq[b->nfq - 1];
						memcpy(f->addr, rn->addrs[k].addr, SL_ADDR_LEN);
						f->name = rn->name;
						f->order = b->nfq - 1;
					}
					break;
				case PEER_SERVICE: {
					struct compile_addr *sa = NULL;
					size_t ns = 0;
					int e;

					/* Needs the cluster's endpoints; the caller
					 * decides whether a skip deserves a warning. */
					if (!in->resolve_service) {
						o->nskipped_services++;
						break;
					}
					/* ClusterIP and endpoints both: a socket-LB may
					 * rewrite the ClusterIP before our hook runs */
					e = in->resolve_service(in->service_ctx, pe->svc_namespace,
								pe->svc_name, &sa, &ns);
					for (size_t k = 0; !e && k < ns; k++)
						if (item__add(b, sa[k].addr, 128, rule)) {
							free(sa);
							return -ENOMEM;
						}
					free(sa);
					break;
				}
				}
			}
		}
	}
	for (size_t i = 0; dns && i < in->nresolvers; i++)
		if (item__add(b, in->resolvers[i].addr, 128, rule))
			return -ENOMEM;
	return 0;
}

int compile__build(const struct compile_input *in, struct compiled *out,
		   char *err, size_t errlen)
{
	struct cbuild b = { .in = in, .out = out, .err = err, .errlen = errlen };
	size_t naudit = 0;
	int rc;

	memset(out, 0, sizeof(*out));
	if (err && errlen)
		err[0] = '\0';
	rc = collect(&b);
	if (!rc)
		rc = prefixes__build(&b);
	if (!rc)
		rc = entries__build(&b);
	if (!rc)
		rc = fqdns__build(&b);
	if (rc == -ENOMEM)
		cerr(&b, "out of memory");

	/*
	 * Audit is per workload in this slice, not per rule. Enforce wins:
	 * one enforcing policy is a promise to block that another policy
	 * saying "audit" must not silently break, so the workload is in
	 * audit only when every policy selecting it is.
	 */
	for (size_t d = 0; d < in->ndocs; d++)
		naudit += in->docs[d]->mode == POL_AUDIT;
	if (in->ndocs && naudit == in->ndocs)
		out->flags |= SL_IDF_AUDIT;

	for (size_t i = 0; i < b.nnames; i++)
		free(b.names[i].addrs);
	free(b.names);
	free(b.pents);
	free(b.rinfo);
	free(b.items);
	free(b.fq);
	free(b.pfx);
	free(b.own);
	free(b.hash);
	if (rc)
		compile__free(out);
	return rc;
}

void compile__free(struct compiled *c)
{
	free(c->entries);
	free(c->rules);
	free(c->fqdns);
	memset(c, 0, sizeof(*c));
}
