// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* fqdn destinations: resolve, refresh, keep for a grace period. */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include "fqdn.h"

#define NSEC			1000000000ULL
#define FQDN_BUF_SIZE		65536	/* largest DNS message (TCP) */
#define FQDN_MAX_CHAIN		16	/* CNAME hops followed */

struct fqdn_addr {
	struct compile_addr a;
	uint64_t expires_ns;	/* end of the latest answer that held it */
};

struct fqdn_name {
	char name[FQDN_NAME_MAX + 1];
	struct fqdn_addr addrs[FQDN_MAX_ADDRS];
	size_t naddrs;
	uint64_t refresh_ns;	/* next query; 0: at once */
	uint32_t backoff_s;	/* last failure backoff; 0 after a success */
	bool attempted;		/* queried at least once */
};

struct fqdn_cache {
	struct __res_state res;
	bool res_init;
	struct fqdn_resolver_conf conf;
	uint64_t grace_ns;
	uint32_t min_ttl_s;
	struct fqdn_name **names;
	size_t nnames, cap;
	struct fqdn_stats stats;
	/* Set when a query timed out on every server: the rest of that
	 * refresh round is failed without waiting out the same timeouts. */
	bool round_dead;
	/* A set changed outside fqdn__refresh_due: it reports that too, so
	 * the maps cannot miss a drop done by fqdn__resolve_now. */
	bool pending;
	fqdn_transport_fn xport;
	void *xport_ctx;
	uint8_t *buf;
};

/* ---- resolv.conf ---------------------------------------------------- */

static int fqdn_parse_ns(char *tok, struct fqdn_resolver_conf *out)
{
	struct compile_addr *a = &out->servers[out->nservers];
	struct in_addr in4;
	struct in6_addr in6;
	uint32_t scope = 0;
	char *pct;

	memset(a, 0, sizeof(*a));
	/* inet_aton, not inet_pton: glibc's own parser accepts "127.1". */
	if (inet_aton(tok, &in4)) {
		a->addr[10] = 0xff;
		a->addr[11] = 0xff;
		memcpy(&a->addr[12], &in4, 4);
		a->is_v4 = 1;
	} else {
		pct = strchr(tok, '%');
		if (pct) {
			*pct++ = '\0';
			scope = if_nametoindex(pct);
			if (!scope) {
				char *end;
				unsigned long v = strtoul(pct, &end, 10);

				if (*pct && !*end && v <= UINT32_MAX)
					scope = (uint32_t)v;
			}
		}
		if (inet_pton(AF_INET6, tok, &in6) != 1)
			return 0;	/* glibc skips what it cannot parse */
		memcpy(a->addr, &in6, 16);
	}
	out->scope_ids[out->nservers] = scope;
	out->nservers++;
	return 0;
}

int fqdn__parse_resolv_conf(const char *path, struct fqdn_resolver_conf *out)
{
	char *line = NULL, *save, *tok;
	size_t cap = 0;
	int err = 0;
	FILE *f;

	memset(out, 0, sizeof(*out));
	f = fopen(path, "re");
	if (!f)
		return -errno;
	errno = 0;
	while (getline(&line, &cap, f) > 0) {
		tok = strtok_r(line, " \t\r\n", &save);
		if (!tok || tok[0] == '#' || tok[0] == ';')
			continue;
		if (strcmp(tok, "nameserver") != 0)
			continue;
		tok = strtok_r(NULL, " \t\r\n", &save);
		if (!tok || out->nservers >= MAXNS)
			continue;
		fqdn_parse_ns(tok, out);
	}
	if (ferror(f))
		err = errno ? -errno : -EIO;
	free(line);
	fclose(f);
	return err;
}

/* ---- message parsing ------------------------------------------------ */

static void fqdn_strip_dot(char *s)
{
	size_t l = strlen(s);

	if (l && s[l - 1] == '.')
		s[l - 1] = '\0';
}

/* Negative TTL of RFC 2308: min(SOA ttl, SOA minimum). */
static uint32_t fqdn_neg_ttl(ns_msg *m)
{
	uint32_t best = UINT32_MAX;
	int count = ns_msg_count(*m, ns_s_ns);

	for (int i = 0; i < count; i++) {
		const unsigned char *p, *eom = ns_msg_end(*m);
		uint32_t minimum;
		ns_rr rr;
		int k;

		if (ns_parserr(m, ns_s_ns, i, &rr) < 0)
			break;
		if (ns_rr_type(rr) != ns_t_soa || ns_rr_class(rr) != ns_c_in)
			continue;
		p = ns_rr_rdata(rr);
		eom = p + ns_rr_rdlen(rr) < eom ? p + ns_rr_rdlen(rr) : eom;
		for (k = 0; k < 2; k++) {	/* mname, rname */
			int sk = dn_skipname(p, eom);

			if (sk < 0)
				break;
			p += sk;
		}
		if (k < 2 || eom - p < 20)
			continue;
		minimum = ns_get32(p + 16);
		if (ns_rr_ttl(rr) < minimum)
			minimum = ns_rr_ttl(rr);
		if (minimum < best)
			best = minimum;
	}
	return best == UINT32_MAX ? FQDN_NEG_TTL_S : best;
}

static void fqdn_answer_add(struct fqdn_answer *out, const uint8_t *a16,
			    int is_v4, uint32_t ttl)
{
	for (size_t i = 0; i < out->n; i++) {
		if (!memcmp(out->addrs[i].addr, a16, 16)) {
			if (ttl < out->ttls[i])
				out->ttls[i] = ttl;
			return;
		}
	}
	if (out->n == FQDN_MAX_ADDRS) {
		out->truncated++;
		return;
	}
	memcpy(out->addrs[out->n].addr, a16, 16);
	out->addrs[out->n].is_v4 = is_v4;
	out->ttls[out->n] = ttl;
	out->n++;
}

int fqdn__parse_answer(const uint8_t *msg, size_t len, const char *qname,
		       struct fqdn_answer *out)
{
	/* The chain of names from QNAME through CNAMEs, with the TTL of the
	 * CNAME that led to each (the lowest along the way). */
	char chain[FQDN_MAX_CHAIN + 1][NS_MAXDNAME];
	uint32_t chain_ttl[FQDN_MAX_CHAIN + 1];
	size_t nchain = 1;
	int count, rcode;
	bool grew;
	ns_msg m;
	ns_rr rr;

	memset(out, 0, sizeof(*out));
	if (len > FQDN_BUF_SIZE || ns_initparse(msg, (int)len, &m) < 0)
		return -EBADMSG;
	rcode = ns_msg_getflag(m, ns_f_rcode);
	out->rcode = rcode;
	if (rcode == ns_r_servfail)
		return -EAGAIN;
	if (rcode != ns_r_noerror && rcode != ns_r_nxdomain)
		return -EPROTO;

	snprintf(chain[0], sizeof(chain[0]), "%s", qname);
	fqdn_strip_dot(chain[0]);
	chain_ttl[0] = UINT32_MAX;
	count = ns_msg_count(m, ns_s_an);

	/* Answers are normally in chain order, but nothing requires it:
	 * pass over the section until the chain stops growing. */
	do {
		grew = false;
		for (int i = 0; i < count && nchain <= FQDN_MAX_CHAIN; i++) {
			char target[NS_MAXDNAME];
			char owner[NS_MAXDNAME];
			size_t j;

			if (ns_parserr(&m, ns_s_an, i, &rr) < 0)
				return -EBADMSG;
			if (ns_rr_type(rr) != ns_t_cname ||
			    ns_rr_class(rr) != ns_c_in)
				continue;
			snprintf(owner, sizeof(owner), "%s", ns_rr_name(rr));
			fqdn_strip_dot(owner);
			if (strcasecmp(owner, chain[nchain - 1]) != 0)
				continue;
			if (ns_name_uncompress(ns_msg_base(m), ns_msg_end(m),
					       ns_rr_rdata(rr), target,
					       sizeof(target)) < 0)
				return -EBADMSG;
			fqdn_strip_dot(target);
			for (j = 0; j < nchain; j++)
				if (!strcasecmp(chain[j], target))
					break;
			if (j < nchain)
				continue;	/* loop */
			memcpy(chain[nchain], target, sizeof(target));
			chain_ttl[nchain] = chain_ttl[nchain - 1] < ns_rr_ttl(rr) ?
					    chain_ttl[nchain - 1] : ns_rr_ttl(rr);
			nchain++;
			grew = true;
		}
	} while (grew && nchain <= FQDN_MAX_CHAIN);

	for (int i = 0; i < count; i++) {
		uint8_t a16[16] = { 0 };
		char owner[NS_MAXDNAME];
		uint32_t ttl;
		size_t j;
		int type;

		if (ns_parserr(&m, ns_s_an, i, &rr) < 0)
			return -EBADMSG;
		type = ns_rr_type(rr);
		if (ns_rr_class(rr) != ns_c_in ||
		    (type != ns_t_a && type != ns_t_aaaa))
			continue;
		if ((type == ns_t_a && ns_rr_rdlen(rr) != 4) ||
		    (type == ns_t_aaaa && ns_rr_rdlen(rr) != 16))
			return -EBADMSG;
		snprintf(owner, sizeof(owner), "%s", ns_rr_name(rr));
		fqdn_strip_dot(owner);
		for (j = 0; j < nchain; j++)
			if (!strcasecmp(chain[j], owner))
				break;
		if (j == nchain)
			continue;	/* not ours: never trust extra records */
		ttl = ns_rr_ttl(rr) < chain_ttl[j] ? ns_rr_ttl(rr) : chain_ttl[j];
		if (type == ns_t_a) {
			a16[10] = a16[11] = 0xff;
			memcpy(&a16[12], ns_rr_rdata(rr), 4);
		} else {
			memcpy(a16, ns_rr_rdata(rr), 16);
		}
		fqdn_answer_add(out, a16, type == ns_t_a, ttl);
	}

	if (out->n) {
		out->ttl = UINT32_MAX;
		for (size_t i = 0; i < out->n; i++)
			if (out->ttls[i] < out->ttl)
				out->ttl = out->ttls[i];
	} else {
		out->ttl = fqdn_neg_ttl(&m);
		/* The CNAMEs were cacheable only that long too. */
		if (chain_ttl[nchain - 1] < out->ttl)
			out->ttl = chain_ttl[nchain - 1];
	}
	return 0;
}

/* ---- cache ---------------------------------------------------------- */

/* Lower-case, no trailing dot, labels of 1..63 letters, digits, '-', '_'. */
static int fqdn_normalize(const char *in, char out[FQDN_NAME_MAX + 1])
{
	size_t len, label = 0;

	if (!in)
		return -EINVAL;
	len = strlen(in);
	if (len && in[len - 1] == '.')
		len--;
	if (len == 0 || len > FQDN_NAME_MAX)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)in[i];

		if (ch == '.') {
			if (label == 0)
				return -EINVAL;
			label = 0;
		} else if (isalnum(ch) || ch == '-' || ch == '_') {
			if (++label > 63)
				return -EINVAL;
		} else {
			return -EINVAL;
		}
		out[i] = (char)tolower(ch);
	}
	if (label == 0)
		return -EINVAL;
	out[len] = '\0';
	return 0;
}

static struct fqdn_name *fqdn_find(const struct fqdn_cache *c, const char *norm,
				   size_t *idx)
{
	for (size_t i = 0; i < c->nnames; i++) {
		if (!strcmp(c->names[i]->name, norm)) {
			if (idx)
				*idx = i;
			return c->names[i];
		}
	}
	return NULL;
}

static int fqdn_get(struct fqdn_cache *c, const char *name, bool create,
		    struct fqdn_name **out)
{
	char norm[FQDN_NAME_MAX + 1];
	struct fqdn_name *e;
	int err;

	err = fqdn_normalize(name, norm);
	if (err)
		return err;
	e = fqdn_find(c, norm, NULL);
	if (e || !create) {
		*out = e;
		return e ? 0 : -ENOENT;
	}
	if (c->nnames == FQDN_MAX_NAMES)
		return -ENOSPC;
	if (c->nnames == c->cap) {
		size_t ncap = c->cap ? c->cap * 2 : 16;
		struct fqdn_name **n = reallocarray(c->names, ncap, sizeof(*n));

		if (!n)
			return -ENOMEM;
		c->names = n;
		c->cap = ncap;
	}
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	memcpy(e->name, norm, sizeof(norm));
	c->names[c->nnames++] = e;
	*out = e;
	return 0;
}

static uint32_t fqdn_eff_ttl(const struct fqdn_cache *c, uint32_t ttl)
{
	if (ttl > FQDN_MAX_TTL_S)
		ttl = FQDN_MAX_TTL_S;
	return ttl < c->min_ttl_s ? c->min_ttl_s : ttl;
}

static bool fqdn_put_addr(struct fqdn_cache *c, struct fqdn_name *e,
			  const struct compile_addr *a, uint64_t expires,
			  uint64_t now)
{
	size_t victim = SIZE_MAX;

	for (size_t i = 0; i < e->naddrs; i++) {
		if (!memcmp(e->addrs[i].a.addr, a->addr, 16)) {
			/* Clients may hold the longer of two answers. */
			if (expires > e->addrs[i].expires_ns)
				e->addrs[i].expires_ns = expires;
			return false;
		}
	}
	if (e->naddrs < FQDN_MAX_ADDRS) {
		e->addrs[e->naddrs].a = *a;
		e->addrs[e->naddrs].a.is_v4 = !!a->is_v4;
		e->addrs[e->naddrs].expires_ns = expires;
		e->naddrs++;
		return true;
	}
	/* Full: a current address outranks one only kept for grace. */
	for (size_t i = 0; i < e->naddrs; i++)
		if (e->addrs[i].expires_ns <= now &&
		    (victim == SIZE_MAX ||
		     e->addrs[i].expires_ns < e->addrs[victim].expires_ns))
			victim = i;
	c->stats.truncated++;
	if (victim == SIZE_MAX)
		return false;
	e->addrs[victim].a = *a;
	e->addrs[victim].a.is_v4 = !!a->is_v4;
	e->addrs[victim].expires_ns = expires;
	return true;
}

static bool fqdn_prune(struct fqdn_cache *c, struct fqdn_name *e, uint64_t now)
{
	bool changed = false;
	size_t j = 0;

	for (size_t i = 0; i < e->naddrs; i++) {
		if (e->addrs[i].expires_ns + c->grace_ns <= now) {
			c->stats.dropped++;
			changed = true;
			continue;
		}
		e->addrs[j++] = e->addrs[i];
	}
	e->naddrs = j;
	return changed;
}

static bool fqdn_apply(struct fqdn_cache *c, struct fqdn_name *e,
		       const struct fqdn_answer *ans, uint64_t now)
{
	bool changed = false;

	c->stats.truncated += ans->truncated;
	for (size_t i = 0; i < ans->n; i++) {
		uint64_t exp = now + fqdn_eff_ttl(c, ans->ttls[i]) * NSEC;

		changed |= fqdn_put_addr(c, e, &ans->addrs[i], exp, now);
	}
	return changed;
}

static void fqdn_schedule_ok(struct fqdn_cache *c, struct fqdn_name *e,
			     uint32_t ttl, uint64_t now)
{
	/* Refresh at 80% of the TTL: the new answer arrives before the old
	 * one expires, so a stable address never goes into grace. */
	e->refresh_ns = now + fqdn_eff_ttl(c, ttl) * (NSEC / 10 * 8);
	e->backoff_s = 0;
}

static void fqdn_schedule_fail(struct fqdn_cache *c, struct fqdn_name *e,
			       uint64_t now)
{
	uint32_t b = e->backoff_s ? e->backoff_s * 2 : c->min_ttl_s;

	if (b > FQDN_RETRY_MAX_S)
		b = FQDN_RETRY_MAX_S;
	if (b == 0)
		b = 1;
	e->backoff_s = b;
	e->refresh_ns = now + b * NSEC;
}

static uint64_t fqdn_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NSEC + (uint64_t)ts.tv_nsec;
}

static int fqdn_query(struct fqdn_cache *c, const char *name, int type,
		      struct fqdn_answer *ans)
{
	uint8_t q[NS_PACKETSZ];
	int qlen, len, err;
	bool slow = false;

	c->stats.queries++;
	if (c->xport) {
		len = c->xport(c->xport_ctx, name, type, c->buf, FQDN_BUF_SIZE);
		slow = len == -ETIMEDOUT;
	} else {
		uint64_t t0 = fqdn_mono_ns();

		qlen = res_nmkquery(&c->res, ns_o_query, name, ns_c_in, type,
				    NULL, 0, NULL, q, sizeof(q));
		if (qlen < 0) {
			c->stats.queries--;
			return -EINVAL;
		}
		/* res_nsend tries each server RETRY times, RETRANS apart,
		 * and moves on after SERVFAIL/REFUSED: -1 means that no
		 * server gave a usable answer. */
		len = res_nsend(&c->res, q, qlen, c->buf, FQDN_BUF_SIZE);
		/* errno does not tell a timeout from refusals; the clock
		 * does, and only the slow failures need cutting short. */
		slow = fqdn_mono_ns() - t0 >= NSEC;
	}
	if (len < 0) {
		c->stats.failures++;
		if (slow)
			c->round_dead = true;
		return -EAGAIN;
	}
	if (len > FQDN_BUF_SIZE)
		len = FQDN_BUF_SIZE;
	err = fqdn__parse_answer(c->buf, (size_t)len, name, ans);
	if (err)
		c->stats.failures++;
	else if (ans->n == 0)
		c->stats.negative++;
	return err;
}

/* Query A and AAAA for E and apply what came back. */
static int fqdn_resolve(struct fqdn_cache *c, struct fqdn_name *e, uint64_t now,
			bool *changed)
{
	struct fqdn_answer a4, a6;
	int e4, e6;
	bool ch = false;

	e->attempted = true;
	if (c->round_dead) {
		e4 = e6 = -EAGAIN;
	} else {
		e4 = fqdn_query(c, e->name, ns_t_a, &a4);
		e6 = c->round_dead ? -EAGAIN : fqdn_query(c, e->name, ns_t_aaaa, &a6);
	}
	/* A family that answered is applied even if the other failed; what
	 * the failed one had stays until its own expiry + grace. */
	if (!e4)
		ch |= fqdn_apply(c, e, &a4, now);
	if (!e6)
		ch |= fqdn_apply(c, e, &a6, now);
	if (!e4 && !e6) {
		uint32_t ttl;

		if (a4.n && a6.n)
			ttl = a4.ttl < a6.ttl ? a4.ttl : a6.ttl;
		else if (a4.n || a6.n)
			ttl = a4.n ? a4.ttl : a6.ttl;
		else
			ttl = a4.ttl < a6.ttl ? a4.ttl : a6.ttl;
		fqdn_schedule_ok(c, e, ttl, now);
	} else {
		fqdn_schedule_fail(c, e, now);
	}
	ch |= fqdn_prune(c, e, now);
	if (changed)
		*changed = ch;
	return e4 ? e4 : e6;
}

/* Point C->res at C->conf's servers. glibc keeps v4 servers in
 * nsaddr_list and v6 ones in malloc'd _u._ext.nsaddrs (with nsaddr_list's
 * family 0), which res_nclose frees; a changed list is noticed by
 * res_send, which rebuilds its copies when _u._ext.nscount is 0. */
static int fqdn_res_override(struct fqdn_cache *c)
{
	struct __res_state *r = &c->res;
	uint16_t port = htons(c->conf.port ? c->conf.port : NAMESERVER_PORT);
	const struct fqdn_resolver_conf *conf = &c->conf;
	struct fqdn_resolver_conf lo = { .nservers = 1 };

	if (conf->nservers == 0) {
		/* As glibc does for a resolv.conf without nameserver. */
		lo.servers[0].addr[10] = lo.servers[0].addr[11] = 0xff;
		lo.servers[0].addr[12] = 127;
		lo.servers[0].addr[15] = 1;
		lo.servers[0].is_v4 = 1;
		lo.port = c->conf.port;
		c->conf = lo;
	}
	for (int i = 0; i < MAXNS; i++) {
		free(r->_u._ext.nsaddrs[i]);
		r->_u._ext.nsaddrs[i] = NULL;
		r->_u._ext.nssocks[i] = -1;
		memset(&r->nsaddr_list[i], 0, sizeof(r->nsaddr_list[i]));
	}
	/* Counted as filled, so that res_nclose frees what is there. */
	r->nscount = 0;
	r->_u._ext.nscount = 0;
	for (size_t i = 0; i < conf->nservers; i++) {
		const struct compile_addr *a = &conf->servers[i];

		if (a->is_v4) {
			r->nsaddr_list[i].sin_family = AF_INET;
			r->nsaddr_list[i].sin_port = port;
			memcpy(&r->nsaddr_list[i].sin_addr, &a->addr[12], 4);
		} else {
			struct sockaddr_in6 *s6 = calloc(1, sizeof(*s6));

			if (!s6)
				return -ENOMEM;
			s6->sin6_family = AF_INET6;
			s6->sin6_port = port;
			s6->sin6_scope_id = conf->scope_ids[i];
			memcpy(&s6->sin6_addr, a->addr, 16);
			r->_u._ext.nsaddrs[i] = s6;
		}
		r->nscount = (int)i + 1;
	}
	return 0;
}

static struct fqdn_cache *fqdn_new(const struct fqdn_resolver_conf *conf,
				   bool override, uint32_t grace_s,
				   uint32_t min_ttl_s)
{
	struct fqdn_cache *c = calloc(1, sizeof(*c));
	int err = -ENOMEM;

	if (!c)
		goto fail;
	c->conf = *conf;
	c->grace_ns = (uint64_t)(grace_s ? grace_s : FQDN_DEFAULT_GRACE_S) * NSEC;
	c->min_ttl_s = min_ttl_s ? min_ttl_s : FQDN_DEFAULT_MIN_TTL_S;
	c->buf = malloc(FQDN_BUF_SIZE);
	if (!c->buf)
		goto fail;
	/* The state is zeroed, so res_ninit takes no "preinit" values. */
	if (res_ninit(&c->res) != 0) {
		err = errno ? -errno : -EIO;
		goto fail;
	}
	c->res_init = true;
	/* A dead resolver must not stall the daemon for long: 1 s timeout,
	 * 2 tries per server (glibc defaults: 5 s, 2). */
	c->res.retrans = 1;
	c->res.retry = 2;
	if (override) {
		err = fqdn_res_override(c);
		if (err)
			goto fail;
	}
	return c;
fail:
	fqdn__free(c);
	errno = -err;
	return NULL;
}

struct fqdn_cache *fqdn__new(const char *resolv_conf_path, uint32_t grace_s,
			     uint32_t min_ttl_s)
{
	struct fqdn_resolver_conf conf;
	int err;

	err = fqdn__parse_resolv_conf(resolv_conf_path ? resolv_conf_path :
				      _PATH_RESCONF, &conf);
	/* glibc runs without /etc/resolv.conf (127.0.0.1); so do we. */
	if (err == -ENOENT && !resolv_conf_path)
		err = 0;
	if (err) {
		errno = -err;
		return NULL;
	}
	if (!resolv_conf_path && conf.nservers == 0) {
		conf.nservers = 1;
		conf.servers[0].addr[10] = conf.servers[0].addr[11] = 0xff;
		conf.servers[0].addr[12] = 127;
		conf.servers[0].addr[15] = 1;
		conf.servers[0].is_v4 = 1;
	}
	return fqdn_new(&conf, resolv_conf_path != NULL, grace_s, min_ttl_s);
}

struct fqdn_cache *fqdn__new_conf(const struct fqdn_resolver_conf *conf,
				  uint32_t grace_s, uint32_t min_ttl_s)
{
	if (!conf || conf->nservers > MAXNS) {
		errno = EINVAL;
		return NULL;
	}
	return fqdn_new(conf, true, grace_s, min_ttl_s);
}

void fqdn__free(struct fqdn_cache *c)
{
	if (!c)
		return;
	if (c->res_init)
		res_nclose(&c->res);
	for (size_t i = 0; i < c->nnames; i++)
		free(c->names[i]);
	free(c->names);
	free(c->buf);
	free(c);
}

void fqdn__resolvers(const struct fqdn_cache *c,
		     const struct compile_addr **out, size_t *n)
{
	*out = c->conf.servers;
	*n = c->conf.nservers;
}

int fqdn__add(struct fqdn_cache *c, const char *name)
{
	struct fqdn_name *e;

	return fqdn_get(c, name, true, &e);
}

int fqdn__remove(struct fqdn_cache *c, const char *name)
{
	char norm[FQDN_NAME_MAX + 1];
	size_t idx;
	int err;

	err = fqdn_normalize(name, norm);
	if (err)
		return err;
	if (!fqdn_find(c, norm, &idx))
		return -ENOENT;
	if (c->names[idx]->naddrs)
		c->pending = true;
	free(c->names[idx]);
	c->names[idx] = c->names[--c->nnames];
	return 0;
}

int fqdn__refresh_due(struct fqdn_cache *c, uint64_t now_ns, bool *changed)
{
	bool any = false;
	int first = 0;

	c->round_dead = false;
	for (size_t i = 0; i < c->nnames; i++) {
		struct fqdn_name *e = c->names[i];
		bool ch = false;

		if (e->refresh_ns <= now_ns) {
			int err = fqdn_resolve(c, e, now_ns, &ch);

			if (err && !first)
				first = err;
		} else {
			ch = fqdn_prune(c, e, now_ns);
		}
		any |= ch;
	}
	c->round_dead = false;
	any |= c->pending;
	c->pending = false;
	if (changed)
		*changed = any;
	return first;
}

int fqdn__resolve_now(struct fqdn_cache *c, const char *name)
{
	struct fqdn_name *e;
	bool ch = false;
	int err;

	err = fqdn_get(c, name, true, &e);
	if (err)
		return err;
	c->round_dead = false;
	err = fqdn_resolve(c, e, fqdn_mono_ns(), &ch);
	c->pending |= ch;
	return err;
}

int fqdn__addrs(struct fqdn_cache *c, const char *name,
		struct compile_addr **out, size_t *n)
{
	struct fqdn_name *e;
	int err;

	*out = NULL;
	*n = 0;
	err = fqdn_get(c, name, false, &e);
	if (err)
		return err;
	if (!e->naddrs)
		return 0;
	*out = calloc(e->naddrs, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	for (size_t i = 0; i < e->naddrs; i++)
		(*out)[i] = e->addrs[i].a;
	*n = e->naddrs;
	return 0;
}

int fqdn__resolve_cb(void *ctx, const char *fqdn, struct compile_addr **out,
		     size_t *n)
{
	struct fqdn_cache *c = ctx;
	struct fqdn_name *e;
	int err;

	*out = NULL;
	*n = 0;
	err = fqdn_get(c, fqdn, true, &e);
	if (err)
		return err;
	if (!e->attempted) {
		bool ch = false;

		c->round_dead = false;
		err = fqdn_resolve(c, e, fqdn_mono_ns(), &ch);
		c->pending |= ch;
		if (err == -ENOMEM)
			return err;
	}
	return fqdn__addrs(c, fqdn, out, n);
}

uint64_t fqdn__next_deadline(const struct fqdn_cache *c)
{
	uint64_t next = UINT64_MAX;

	for (size_t i = 0; i < c->nnames; i++) {
		const struct fqdn_name *e = c->names[i];

		if (e->refresh_ns < next)
			next = e->refresh_ns;
		for (size_t j = 0; j < e->naddrs; j++)
			if (e->addrs[j].expires_ns + c->grace_ns < next)
				next = e->addrs[j].expires_ns + c->grace_ns;
	}
	return next;
}

int fqdn__lookup_addr(const struct fqdn_cache *c, const uint8_t addr[16],
		      char *names, size_t len, uint64_t *expires_realtime_ns,
		      uint64_t *grace_until_realtime_ns)
{
	struct timespec rt;
	uint64_t latest = 0, mono;
	size_t used = 0;
	bool found = false, cut = false;
	int64_t off;

	if (names && len)
		names[0] = '\0';
	for (size_t i = 0; i < c->nnames; i++) {
		const struct fqdn_name *e = c->names[i];
		size_t j, l;

		for (j = 0; j < e->naddrs; j++)
			if (!memcmp(e->addrs[j].a.addr, addr, 16))
				break;
		if (j == e->naddrs)
			continue;
		found = true;
		if (e->addrs[j].expires_ns > latest)
			latest = e->addrs[j].expires_ns;
		l = strlen(e->name);
		if (!names)
			continue;
		if (used + (used ? 1 : 0) + l + 1 > len) {
			cut = true;
			continue;
		}
		if (used)
			names[used++] = ',';
		memcpy(names + used, e->name, l + 1);
		used += l;
	}
	if (!found)
		return -ENOENT;
	/* The cache keeps monotonic time; explain shows wall-clock time. */
	mono = fqdn_mono_ns();
	clock_gettime(CLOCK_REALTIME, &rt);
	off = (int64_t)((uint64_t)rt.tv_sec * NSEC + (uint64_t)rt.tv_nsec) -
	      (int64_t)mono;
	if (expires_realtime_ns)
		*expires_realtime_ns = (uint64_t)((int64_t)latest + off);
	if (grace_until_realtime_ns)
		*grace_until_realtime_ns =
			(uint64_t)((int64_t)(latest + c->grace_ns) + off);
	return cut ? -ENOSPC : 0;
}

void fqdn__set_transport(struct fqdn_cache *c, fqdn_transport_fn fn, void *ctx)
{
	c->xport = fn;
	c->xport_ctx = ctx;
}

void fqdn__stats(const struct fqdn_cache *c, struct fqdn_stats *out)
{
	*out = c->stats;
}

int fqdn__inject(struct fqdn_cache *c, const char *name,
		 const struct compile_addr *addrs, size_t n, uint32_t ttl_s,
		 uint64_t now_ns, bool *changed)
{
	struct fqdn_answer ans = { .ttl = ttl_s };
	struct fqdn_name *e;
	bool ch;
	int err;

	err = fqdn_get(c, name, true, &e);
	if (err)
		return err;
	for (size_t i = 0; i < n; i++)
		fqdn_answer_add(&ans, addrs[i].addr, !!addrs[i].is_v4, ttl_s);
	e->attempted = true;
	ch = fqdn_apply(c, e, &ans, now_ns);
	fqdn_schedule_ok(c, e, ttl_s, now_ns);
	ch |= fqdn_prune(c, e, now_ns);
	c->pending |= ch;
	if (changed)
		*changed = ch;
	return 0;
}

int fqdn__inject_error(struct fqdn_cache *c, const char *name, int err,
		       uint64_t now_ns)
{
	struct fqdn_name *e;
	int r;

	r = fqdn_get(c, name, true, &e);
	if (r)
		return r;
	e->attempted = true;
	c->stats.failures++;
	/* Addresses stay: only fqdn__refresh_due drops them, at grace end. */
	fqdn_schedule_fail(c, e, now_ns);
	return err;
}

int fqdn__arm_timerfd(const struct fqdn_cache *c, int tfd)
{
	uint64_t next = fqdn__next_deadline(c);
	struct itimerspec its = {};

	if (next != UINT64_MAX) {
		its.it_value.tv_sec = next / 1000000000ULL;
		its.it_value.tv_nsec = next % 1000000000ULL;
		/* all zero would disarm: a deadline at 0 is due now */
		if (!its.it_value.tv_sec && !its.it_value.tv_nsec)
			its.it_value.tv_nsec = 1;
	}
	return timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) ? -errno : 0;
}
