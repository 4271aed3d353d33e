// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* fqdn cache: resolv.conf, DNS message parsing, TTL/refresh/grace logic
 * with scripted answers, and one run against a real dnsmasq (root). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fqdn.h"

#define NSEC	1000000000ULL
#define T0	(1000 * NSEC)

/* ---- helpers -------------------------------------------------------- */

static struct compile_addr mk(const char *s)
{
	struct compile_addr a = { 0 };
	struct in_addr in4;

	if (inet_pton(AF_INET, s, &in4) == 1) {
		a.addr[10] = a.addr[11] = 0xff;
		memcpy(&a.addr[12], &in4, 4);
		a.is_v4 = 1;
	} else {
		assert_int_equal(inet_pton(AF_INET6, s, a.addr), 1);
	}
	return a;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NSEC + (uint64_t)ts.tv_nsec;
}

static bool has_addr(const struct compile_addr *v, size_t n, const char *s)
{
	struct compile_addr a = mk(s);

	for (size_t i = 0; i < n; i++)
		if (!memcmp(v[i].addr, a.addr, 16) && v[i].is_v4 == a.is_v4)
			return true;
	return false;
}

static size_t naddrs(struct fqdn_cache *c, const char *name)
{
	struct compile_addr *v = NULL;
	size_t n = 0;

	assert_int_equal(fqdn__addrs(c, name, &v, &n), 0);
	free(v);
	return n;
}

static bool cache_has(struct fqdn_cache *c, const char *name, const char *s)
{
	struct compile_addr *v = NULL;
	size_t n = 0;
	bool r;

	assert_int_equal(fqdn__addrs(c, name, &v, &n), 0);
	r = has_addr(v, n, s);
	free(v);
	return r;
}

static char tmpdir[64];

static void ensure_tmpdir(void)
{
	if (!tmpdir[0]) {
		snprintf(tmpdir, sizeof(tmpdir), "/tmp/sluice-fqdn-XXXXXX");
		assert_non_null(mkdtemp(tmpdir));
	}
}

static const char *write_tmp(const char *name, const char *text)
{
	static char path[128];
	FILE *f;

	ensure_tmpdir();
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

/* ---- DNS wire format, built by hand --------------------------------- */

struct wire {
	uint8_t b[8192];
	size_t n;
	uint16_t an, ns;
};

static void w_u8(struct wire *w, uint8_t v) { w->b[w->n++] = v; }
static void w_u16(struct wire *w, uint16_t v) { w_u8(w, v >> 8); w_u8(w, v & 0xff); }
static void w_u32(struct wire *w, uint32_t v) { w_u16(w, v >> 16); w_u16(w, v & 0xffff); }

static void w_name(struct wire *w, const char *name)
{
	while (*name) {
		const char *dot = strchr(name, '.');
		size_t l = dot ? (size_t)(dot - name) : strlen(name);

		w_u8(w, (uint8_t)l);
		memcpy(&w->b[w->n], name, l);
		w->n += l;
		name += l + (dot ? 1 : 0);
	}
	w_u8(w, 0);
}

static void w_start(struct wire *w, int rcode, const char *qname, int qtype)
{
	memset(w, 0, sizeof(*w));
	w_u16(w, 0x1234);
	w_u16(w, 0x8180 | rcode);	/* QR RD RA */
	w_u16(w, 1);
	w_u16(w, 0);
	w_u16(w, 0);
	w_u16(w, 0);
	w_name(w, qname);
	w_u16(w, qtype);
	w_u16(w, ns_c_in);
}

static void w_rr(struct wire *w, bool auth, const char *owner, int type,
		 uint32_t ttl, const void *rd, uint16_t rdlen)
{
	if (owner)
		w_name(w, owner);
	else
		w_u16(w, 0xc00c);	/* pointer to the question name */
	w_u16(w, type);
	w_u16(w, ns_c_in);
	w_u32(w, ttl);
	w_u16(w, rdlen);
	memcpy(&w->b[w->n], rd, rdlen);
	w->n += rdlen;
	if (auth)
		w->ns++;
	else
		w->an++;
}

static void w_addr(struct wire *w, const char *owner, uint32_t ttl, const char *s)
{
	uint8_t rd[16];

	if (inet_pton(AF_INET, s, rd) == 1) {
		w_rr(w, false, owner, ns_t_a, ttl, rd, 4);
	} else {
		assert_int_equal(inet_pton(AF_INET6, s, rd), 1);
		w_rr(w, false, owner, ns_t_aaaa, ttl, rd, 16);
	}
}

static void w_cname(struct wire *w, const char *owner, uint32_t ttl,
		    const char *target)
{
	struct wire t = { .n = 0 };

	w_name(&t, target);
	w_rr(w, false, owner, ns_t_cname, ttl, t.b, (uint16_t)t.n);
}

static void w_soa(struct wire *w, const char *zone, uint32_t ttl,
		  uint32_t minimum)
{
	struct wire t = { .n = 0 };

	w_name(&t, "ns1.example");
	w_name(&t, "hostmaster.example");
	w_u32(&t, 1);		/* serial */
	w_u32(&t, 3600);	/* refresh */
	w_u32(&t, 600);		/* retry */
	w_u32(&t, 86400);	/* expire */
	w_u32(&t, minimum);
	w_rr(w, true, zone, ns_t_soa, ttl, t.b, (uint16_t)t.n);
}

static size_t w_end(struct wire *w)
{
	w->b[6] = w->an >> 8;
	w->b[7] = w->an & 0xff;
	w->b[8] = w->ns >> 8;
	w->b[9] = w->ns & 0xff;
	return w->n;
}

/* ---- resolv.conf ---------------------------------------------------- */

static void test_resolv_conf(void **state)
{
	struct fqdn_resolver_conf conf;
	const char *p;

	p = write_tmp("resolv.conf",
		      "# generated\n"
		      "; also a comment\n"
		      "search example.com corp.example\n"
		      "options timeout:2 attempts:3 edns0\n"
		      "nameserver 10.1.2.3\n"
		      "garbage line here\n"
		      "nameserver\n"
		      "nameserver not-an-address\n"
		      "nameserverx 9.9.9.9\n"
		      "nameserver 2001:db8::53 # trailing comment\n"
		      "nameserver fe80::1%1\n"
		      "nameserver 10.9.9.9\n");
	assert_int_equal(fqdn__parse_resolv_conf(p, &conf), 0);
	assert_int_equal(conf.nservers, 3);	/* MAXNS: the 4th is ignored */
	assert_true(has_addr(&conf.servers[0], 1, "10.1.2.3"));
	assert_true(conf.servers[0].is_v4);
	assert_true(has_addr(&conf.servers[1], 1, "2001:db8::53"));
	assert_false(conf.servers[1].is_v4);
	assert_true(has_addr(&conf.servers[2], 1, "fe80::1"));
	assert_int_equal(conf.scope_ids[2], 1);
	assert_int_equal(conf.port, 0);

	p = write_tmp("empty.conf", "options rotate\n");
	assert_int_equal(fqdn__parse_resolv_conf(p, &conf), 0);
	assert_int_equal(conf.nservers, 0);

	assert_int_equal(fqdn__parse_resolv_conf("/nonexistent/resolv.conf", &conf),
			 -ENOENT);
	errno = 0;
	assert_null(fqdn__new("/nonexistent/resolv.conf", 0, 0));
	assert_int_equal(errno, ENOENT);
}

static void test_new_resolvers(void **state)
{
	const struct compile_addr *srv;
	struct fqdn_cache *c;
	const char *p;
	size_t n;

	p = write_tmp("one.conf", "nameserver 127.0.53.99\n");
	c = fqdn__new(p, 0, 0);
	assert_non_null(c);
	fqdn__resolvers(c, &srv, &n);
	assert_int_equal(n, 1);
	assert_true(has_addr(srv, n, "127.0.53.99"));
	assert_int_equal(fqdn__next_deadline(c), UINT64_MAX);
	fqdn__free(c);

	/* No nameserver line: 127.0.0.1, as glibc. */
	p = write_tmp("none.conf", "search x\n");
	c = fqdn__new(p, 0, 0);
	assert_non_null(c);
	fqdn__resolvers(c, &srv, &n);
	assert_int_equal(n, 1);
	assert_true(has_addr(srv, n, "127.0.0.1"));
	fqdn__free(c);

	c = fqdn__new(NULL, 0, 0);	/* the system's own */
	assert_non_null(c);
	fqdn__free(c);
}

/* ---- message parsing ------------------------------------------------ */

static void test_parse_a_aaaa(void **state)
{
	struct fqdn_answer a;
	struct wire w;

	w_start(&w, ns_r_noerror, "api.example", ns_t_a);
	w_addr(&w, "api.example", 300, "192.0.2.1");
	w_addr(&w, NULL, 60, "192.0.2.2");		/* compressed owner */
	w_addr(&w, "API.Example", 90, "192.0.2.1");	/* dup, case */
	assert_int_equal(fqdn__parse_answer(w.b, w_end(&w), "api.example.", &a), 0);
	assert_int_equal(a.n, 2);
	assert_true(has_addr(a.addrs, a.n, "192.0.2.1"));
	assert_true(has_addr(a.addrs, a.n, "192.0.2.2"));
	assert_true(a.addrs[0].is_v4);
	assert_int_equal(a.addrs[0].addr[10], 0xff);
	assert_int_equal(a.ttls[0], 90);		/* lowest of the dups */
	assert_int_equal(a.ttl, 60);
	assert_int_equal(a.rcode, ns_r_noerror);

	w_start(&w, ns_r_noerror, "api.example", ns_t_aaaa);
	w_addr(&w, "api.example", 120, "2001:db8::1");
	assert_int_equal(fqdn__parse_answer(w.b, w_end(&w), "api.example", &a), 0);
	assert_int_equal(a.n, 1);
	assert_false(a.addrs[0].is_v4);
	assert_true(has_addr(a.addrs, a.n, "2001:db8::1"));
	assert_int_equal(a.ttl, 120);
}

static void test_parse_cname_chain(void **state)
{
	struct fqdn_answer a;
	struct wire w;

	/* api -> edge (ttl 30) -> lb (ttl 600) -> A ttl 300: min 30. An
	 * unrelated A record rides along and must be ignored. */
	w_start(&w, ns_r_noerror, "api.example", ns_t_a);
	w_cname(&w, "api.example", 30, "edge.cdn.example");
	w_cname(&w, "edge.cdn.example", 600, "lb.cdn.example");
	w_addr(&w, "lb.cdn.example", 300, "198.51.100.7");
	w_addr(&w, "evil.example", 300, "203.0.113.66");
	assert_int_equal(fqdn__parse_answer(w.b, w_end(&w), "api.example", &a), 0);
	assert_int_equal(a.n, 1);
	assert_true(has_addr(a.addrs, a.n, "198.51.100.7"));
	assert_int_equal(a.ttl, 30);

	/* Same chain, records in reverse order. */
	w_start(&w, ns_r_noerror, "api.example", ns_t_a);
	w_addr(&w, "lb.cdn.example", 20, "198.51.100.7");
	w_cname(&w, "edge.cdn.example", 600, "lb.cdn.example");
	w_cname(&w, "api.example", 30, "edge.cdn.example");
	assert_int_equal(fqdn__parse_answer(w.b, w_end(&w), "api.example", &a), 0);
	assert_int_equal(a.n, 1);
	assert_int_equal(a.ttl, 20);

	/* A CNAME loop ends without addresses and without hanging. */
	w_start(&w, ns_r_noerror, "a.example", ns_t_a);
	w_cname(&w, "a.example", 50, "b.example");
	w_cname(&w, "b.example", 40, "a.example");
	assert_int_equal(fqdn__parse_answer(w.b, w_end(&w), "a.example", &a), 0);
	assert_int_equal(a.n, 0);
	assert_int_equal(a.ttl, FQDN_NEG_TTL_S);
}

static void test_parse_negative_and_errors(void **state)
{
	struct fqdn_answer a;
	struct wire w;
	size_t len;

	/* NXDOMAIN: negative TTL = min(SOA ttl, SOA minimum). */
	w_start(&w, ns_r_nxdomain, "nx.example", ns_t_a);
	w_soa(&w, "example", 900, 60);
	assert_int_equal(fqdn__parse_answer(w.b, w_end(&w), "nx.example", &a), 0);
	assert_int_equal(a.n, 0);
	assert_int_equal(a.ttl, 60);
	assert_int_equal(a.rcode, ns_r_nxdomain);

	w_start(&w, ns_r_noerror, "v4only.example", ns_t_aaaa);
	w_soa(&w, "example", 45, 3600);
	assert_int_equal(fqdn__parse_answer(w.b, w_end(&w), "v4only.example", &a), 0);
	assert_int_equal(a.n, 0);
	assert_int_equal(a.ttl, 45);

	/* NODATA without SOA */
	w_start(&w, ns_r_noerror, "x.example", ns_t_aaaa);
	assert_int_equal(fqdn__parse_answer(w.b, w_end(&w), "x.example", &a), 0);
	assert_int_equal(a.ttl, FQDN_NEG_TTL_S);

	w_start(&w, ns_r_servfail, "x.example", ns_t_a);
	assert_int_equal(fqdn__parse_answer(w.b, w_end(&w), "x.example", &a), -EAGAIN);
	w_start(&w, ns_r_refused, "x.example", ns_t_a);
	assert_int_equal(fqdn__parse_answer(w.b, w_end(&w), "x.example", &a), -EPROTO);

	/* Malformed: short, bad rdlength, cut in the middle. */
	assert_int_equal(fqdn__parse_answer((const uint8_t *)"\x12\x34", 2,
					    "x.example", &a), -EBADMSG);
	w_start(&w, ns_r_noerror, "x.example", ns_t_a);
	w_rr(&w, false, "x.example", ns_t_a, 10, "\1\2\3\4\5", 5);
	assert_int_equal(fqdn__parse_answer(w.b, w_end(&w), "x.example", &a), -EBADMSG);
	w_start(&w, ns_r_noerror, "x.example", ns_t_a);
	w_addr(&w, "x.example", 10, "192.0.2.1");
	len = w_end(&w);
	assert_int_equal(fqdn__parse_answer(w.b, len - 2, "x.example", &a), -EBADMSG);
}

static void test_parse_truncated(void **state)
{
	struct fqdn_answer a;
	struct wire w;
	char ip[32];

	w_start(&w, ns_r_noerror, "many.example", ns_t_a);
	for (int i = 0; i < FQDN_MAX_ADDRS + 6; i++) {
		snprintf(ip, sizeof(ip), "10.0.%d.%d", i / 200, i % 200 + 1);
		w_addr(&w, NULL, 100, ip);
	}
	assert_int_equal(fqdn__parse_answer(w.b, w_end(&w), "many.example", &a), 0);
	assert_int_equal(a.n, FQDN_MAX_ADDRS);
	assert_int_equal(a.truncated, 6);
}

/* ---- scripted transport --------------------------------------------- */

struct sc_entry {
	char name[64];
	int type;		/* ns_t_a, ns_t_aaaa; 0: both */
	int rcode;
	int err;		/* transport failure */
	const char *addrs[4];
	uint32_t ttl;
	const char *cname;	/* name -> cname, addresses owned by cname */
	uint32_t cname_ttl;
	uint32_t soa_min;	/* for empty answers; 0: no SOA */
};

struct script {
	struct sc_entry e[16];
	size_t n;
	int calls;
};

static struct sc_entry *sc_set(struct script *s, const char *name, int type)
{
	struct sc_entry *e = NULL;

	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->e[i].name, name) && s->e[i].type == type)
			e = &s->e[i];
	if (!e) {
		assert_true(s->n < 16);
		e = &s->e[s->n++];
	}
	memset(e, 0, sizeof(*e));
	snprintf(e->name, sizeof(e->name), "%s", name);
	e->type = type;
	return e;
}

static int sc_transport(void *ctx, const char *name, int type, uint8_t *buf,
			size_t cap)
{
	struct script *s = ctx;
	const struct sc_entry *e = NULL;
	const char *owner;
	struct wire w;
	size_t len;

	s->calls++;
	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->e[i].name, name) &&
		    (s->e[i].type == type || (!s->e[i].type && !e)))
			e = &s->e[i];
	if (e && e->err)
		return e->err;
	w_start(&w, e ? e->rcode : ns_r_noerror, name, type);
	if (e) {
		owner = name;
		if (e->cname) {
			w_cname(&w, name, e->cname_ttl, e->cname);
			owner = e->cname;
		}
		for (int i = 0; i < 4 && e->addrs[i]; i++) {
			bool v6 = strchr(e->addrs[i], ':') != NULL;

			if (v6 == (type == ns_t_aaaa))
				w_addr(&w, owner, e->ttl, e->addrs[i]);
		}
		if (!w.an && e->soa_min)
			w_soa(&w, "test", 3600, e->soa_min);
	}
	len = w_end(&w);
	assert_true(len <= cap);
	memcpy(buf, w.b, len);
	return (int)len;
}

static struct fqdn_cache *scripted(struct script *s)
{
	struct fqdn_resolver_conf conf = { .nservers = 1 };
	struct fqdn_cache *c;

	memset(s, 0, sizeof(*s));
	conf.servers[0] = mk("127.0.53.99");	/* never used */
	c = fqdn__new_conf(&conf, 300, 5);
	assert_non_null(c);
	fqdn__set_transport(c, sc_transport, s);
	return c;
}

/* ---- cache logic ---------------------------------------------------- */

static void test_refresh_schedule(void **state)
{
	struct script s;
	struct fqdn_cache *c = scripted(&s);
	struct sc_entry *e;
	struct fqdn_stats st;
	bool ch;

	e = sc_set(&s, "api.test", ns_t_a);
	e->addrs[0] = "10.0.0.1";
	e->addrs[1] = "10.0.0.2";
	e->ttl = 100;
	e = sc_set(&s, "api.test", ns_t_aaaa);
	e->addrs[0] = "2001:db8::1";
	e->ttl = 50;

	assert_int_equal(fqdn__add(c, "api.test"), 0);
	assert_int_equal(fqdn__add(c, "API.test."), 0);	/* same name */
	assert_int_equal(fqdn__next_deadline(c), 0);	/* due at once */
	assert_int_equal(fqdn__refresh_due(c, T0, &ch), 0);
	assert_true(ch);
	assert_int_equal(s.calls, 2);
	assert_int_equal(naddrs(c, "api.test"), 3);
	/* 80% of the lowest TTL */
	assert_int_equal(fqdn__next_deadline(c), T0 + 40 * NSEC);

	assert_int_equal(fqdn__refresh_due(c, T0 + 39 * NSEC, &ch), 0);
	assert_false(ch);
	assert_int_equal(s.calls, 2);

	assert_int_equal(fqdn__refresh_due(c, T0 + 40 * NSEC, &ch), 0);
	assert_false(ch);
	assert_int_equal(s.calls, 4);
	assert_int_equal(fqdn__next_deadline(c), T0 + 80 * NSEC);
	fqdn__stats(c, &st);
	assert_int_equal(st.queries, 4);
	assert_int_equal(st.failures, 0);
	fqdn__free(c);
}

static void test_grace_then_drop(void **state)
{
	struct script s;
	struct fqdn_cache *c = scripted(&s);
	struct sc_entry *e;
	struct fqdn_stats st;
	bool ch;

	e = sc_set(&s, "api.test", ns_t_a);
	e->addrs[0] = "10.0.0.1";
	e->ttl = 100;
	assert_int_equal(fqdn__add(c, "api.test"), 0);
	assert_int_equal(fqdn__refresh_due(c, T0, &ch), 0);
	assert_true(ch);
	/* AAAA had no records: its negative TTL does not shorten the A one */
	assert_int_equal(fqdn__next_deadline(c), T0 + 80 * NSEC);

	e->addrs[0] = "10.0.0.3";	/* the name moves */
	assert_int_equal(fqdn__refresh_due(c, T0 + 80 * NSEC, &ch), 0);
	assert_true(ch);
	assert_int_equal(naddrs(c, "api.test"), 2);
	assert_true(cache_has(c, "api.test", "10.0.0.1"));	/* in grace */
	assert_true(cache_has(c, "api.test", "10.0.0.3"));
	assert_int_equal(fqdn__next_deadline(c), T0 + 160 * NSEC);

	/* 10.0.0.1 expired at T0+100 and is kept until T0+400. */
	assert_int_equal(fqdn__refresh_due(c, T0 + 399 * NSEC, &ch), 0);
	assert_false(ch);
	assert_true(cache_has(c, "api.test", "10.0.0.1"));
	assert_int_equal(fqdn__next_deadline(c), T0 + 400 * NSEC);
	assert_int_equal(fqdn__refresh_due(c, T0 + 400 * NSEC, &ch), 0);
	assert_true(ch);
	assert_int_equal(naddrs(c, "api.test"), 1);
	assert_true(cache_has(c, "api.test", "10.0.0.3"));
	fqdn__stats(c, &st);
	assert_int_equal(st.dropped, 1);
	fqdn__free(c);
}

static void test_failure_keeps_addrs(void **state)
{
	struct script s;
	struct fqdn_cache *c = scripted(&s);
	struct sc_entry *e;
	uint64_t t, prev;
	uint32_t backoffs[] = { 5, 10, 20, 40, 60, 60 };
	bool ch;

	e = sc_set(&s, "api.test", 0);
	e->addrs[0] = "10.0.0.1";
	e->ttl = 20;
	assert_int_equal(fqdn__add(c, "api.test"), 0);
	assert_int_equal(fqdn__refresh_due(c, T0, &ch), 0);
	assert_true(ch);

	e->err = -ETIMEDOUT;
	t = T0 + 16 * NSEC;
	for (size_t i = 0; i < sizeof(backoffs) / sizeof(backoffs[0]); i++) {
		assert_int_equal(fqdn__refresh_due(c, t, &ch), -EAGAIN);
		assert_false(ch);
		assert_true(cache_has(c, "api.test", "10.0.0.1"));
		prev = t;
		t = fqdn__next_deadline(c);
		assert_int_equal(t, prev + backoffs[i] * NSEC);
	}
	/* queries at T0+211 and T0+271 fail; the next would be at T0+331,
	 * after the grace end T0+320 (expiry T0+20, grace 300 s) */
	assert_int_equal(t, T0 + 211 * NSEC);
	assert_int_equal(fqdn__refresh_due(c, t, &ch), -EAGAIN);
	assert_int_equal(fqdn__next_deadline(c), T0 + 271 * NSEC);
	assert_int_equal(fqdn__refresh_due(c, T0 + 271 * NSEC, &ch), -EAGAIN);
	assert_false(ch);
	assert_int_equal(fqdn__next_deadline(c), T0 + 320 * NSEC);
	assert_int_equal(fqdn__refresh_due(c, T0 + 320 * NSEC, &ch), 0);
	assert_true(ch);
	assert_int_equal(naddrs(c, "api.test"), 0);

	/* Recovery resets the backoff. */
	e->err = 0;
	assert_int_equal(fqdn__refresh_due(c, T0 + 331 * NSEC, &ch), 0);
	assert_true(ch);
	assert_int_equal(naddrs(c, "api.test"), 1);
	assert_int_equal(fqdn__next_deadline(c), T0 + 347 * NSEC);
	fqdn__free(c);
}

static void test_nxdomain_keeps_grace(void **state)
{
	struct script s;
	struct fqdn_cache *c = scripted(&s);
	struct sc_entry *e;
	struct fqdn_stats st;
	bool ch;

	e = sc_set(&s, "api.test", 0);
	e->addrs[0] = "10.0.0.1";
	e->ttl = 60;
	assert_int_equal(fqdn__add(c, "api.test"), 0);
	assert_int_equal(fqdn__refresh_due(c, T0, &ch), 0);
	assert_true(ch);

	e = sc_set(&s, "api.test", 0);
	e->rcode = ns_r_nxdomain;
	e->soa_min = 10;
	assert_int_equal(fqdn__refresh_due(c, T0 + 48 * NSEC, &ch), 0);
	assert_false(ch);
	assert_true(cache_has(c, "api.test", "10.0.0.1"));
	assert_int_equal(fqdn__next_deadline(c), T0 + 56 * NSEC);	/* 80% of 10 */
	fqdn__stats(c, &st);
	assert_int_equal(st.negative, 3);	/* first AAAA, then A and AAAA */
	assert_int_equal(st.failures, 0);

	/* Still there after expiry (T0+60), gone at T0+360. */
	assert_int_equal(fqdn__refresh_due(c, T0 + 359 * NSEC, &ch), 0);
	assert_false(ch);
	assert_true(cache_has(c, "api.test", "10.0.0.1"));
	assert_int_equal(fqdn__refresh_due(c, T0 + 360 * NSEC, &ch), 0);
	assert_true(ch);
	assert_int_equal(naddrs(c, "api.test"), 0);
	fqdn__free(c);
}

static void test_dead_resolver_round(void **state)
{
	struct script s;
	struct fqdn_cache *c = scripted(&s);
	struct fqdn_stats st;
	bool ch;

	sc_set(&s, "a.test", 0)->err = -ETIMEDOUT;
	sc_set(&s, "b.test", 0)->err = -ETIMEDOUT;
	assert_int_equal(fqdn__add(c, "a.test"), 0);
	assert_int_equal(fqdn__add(c, "b.test"), 0);
	/* One timeout ends the round's network work: a daemon must not wait
	 * out every name's timeouts in turn. */
	assert_int_equal(fqdn__refresh_due(c, T0, &ch), -EAGAIN);
	assert_false(ch);
	assert_int_equal(s.calls, 1);
	fqdn__stats(c, &st);
	assert_int_equal(st.queries, 1);
	assert_int_equal(st.failures, 1);
	assert_int_equal(fqdn__next_deadline(c), T0 + 5 * NSEC);
	/* The next round tries again. */
	assert_int_equal(fqdn__refresh_due(c, T0 + 5 * NSEC, &ch), -EAGAIN);
	assert_int_equal(s.calls, 2);
	fqdn__free(c);
}

static void test_partial_failure(void **state)
{
	struct script s;
	struct fqdn_cache *c = scripted(&s);
	struct sc_entry *e;
	bool ch;

	e = sc_set(&s, "api.test", ns_t_a);
	e->addrs[0] = "10.0.0.1";
	e->ttl = 100;
	sc_set(&s, "api.test", ns_t_aaaa)->rcode = ns_r_servfail;
	assert_int_equal(fqdn__add(c, "api.test"), 0);
	assert_int_equal(fqdn__refresh_due(c, T0, &ch), -EAGAIN);
	assert_true(ch);
	assert_int_equal(s.calls, 2);	/* a SERVFAIL is no dead resolver */
	assert_true(cache_has(c, "api.test", "10.0.0.1"));
	assert_int_equal(fqdn__next_deadline(c), T0 + 5 * NSEC);
	fqdn__free(c);
}

static void test_cname_and_min_ttl(void **state)
{
	struct script s;
	struct fqdn_cache *c = scripted(&s);
	struct sc_entry *e;
	bool ch;

	e = sc_set(&s, "www.test", ns_t_a);
	e->cname = "edge.cdn.test";
	e->cname_ttl = 30;
	e->addrs[0] = "10.0.0.9";
	e->ttl = 300;
	assert_int_equal(fqdn__add(c, "www.test"), 0);
	assert_int_equal(fqdn__refresh_due(c, T0, &ch), 0);
	assert_true(cache_has(c, "www.test", "10.0.0.9"));
	assert_int_equal(fqdn__next_deadline(c), T0 + 24 * NSEC);

	/* TTL 0 is raised to min_ttl (5 s): refresh at 4 s. */
	e->cname = NULL;
	e->ttl = 0;
	assert_int_equal(fqdn__refresh_due(c, T0 + 24 * NSEC, &ch), 0);
	assert_int_equal(fqdn__next_deadline(c), T0 + 28 * NSEC);
	fqdn__free(c);
}

static void test_bounds(void **state)
{
	struct script s;
	struct fqdn_cache *c = scripted(&s);
	struct compile_addr v[FQDN_MAX_ADDRS + 6], one;
	struct fqdn_stats st;
	char ip[32];
	bool ch;

	for (int i = 0; i < FQDN_MAX_ADDRS + 6; i++) {
		snprintf(ip, sizeof(ip), "10.1.%d.%d", i / 200, i % 200 + 1);
		v[i] = mk(ip);
	}
	assert_int_equal(fqdn__inject(c, "big.test", v, FQDN_MAX_ADDRS + 6, 100,
				      T0, &ch), 0);
	assert_true(ch);
	assert_int_equal(naddrs(c, "big.test"), FQDN_MAX_ADDRS);
	fqdn__stats(c, &st);
	assert_int_equal(st.truncated, 6);

	/* Full of current addresses: a new one is not kept. */
	one = mk("10.2.0.1");
	assert_int_equal(fqdn__inject(c, "big.test", &one, 1, 100, T0 + NSEC, &ch), 0);
	assert_false(ch);
	assert_false(cache_has(c, "big.test", "10.2.0.1"));
	fqdn__stats(c, &st);
	assert_int_equal(st.truncated, 7);

	/* Once they only live on in grace, the new one takes a slot. */
	assert_int_equal(fqdn__inject(c, "big.test", &one, 1, 100, T0 + 150 * NSEC,
				      &ch), 0);
	assert_true(ch);
	assert_true(cache_has(c, "big.test", "10.2.0.1"));
	assert_int_equal(naddrs(c, "big.test"), FQDN_MAX_ADDRS);
	fqdn__free(c);
}

static void test_names(void **state)
{
	struct script s;
	struct fqdn_cache *c = scripted(&s);
	struct compile_addr *v;
	char longname[300];
	size_t n;

	assert_int_equal(fqdn__add(c, ""), -EINVAL);
	assert_int_equal(fqdn__add(c, "."), -EINVAL);
	assert_int_equal(fqdn__add(c, "*.openai.com"), -EINVAL);
	assert_int_equal(fqdn__add(c, "a..b"), -EINVAL);
	assert_int_equal(fqdn__add(c, "a b.test"), -EINVAL);
	memset(longname, 'a', 64);
	strcpy(longname + 64, ".test");
	assert_int_equal(fqdn__add(c, longname), -EINVAL);	/* label > 63 */
	for (int i = 0; i < 127; i++)
		memcpy(longname + 2 * i, "a.", 2);
	strcpy(longname + 254, "a");
	assert_int_equal(fqdn__add(c, longname), -EINVAL);	/* > 253 */

	assert_int_equal(fqdn__add(c, "Api.OpenAI.com."), 0);
	assert_int_equal(fqdn__addrs(c, "api.openai.com", &v, &n), 0);
	assert_int_equal(n, 0);
	assert_null(v);
	assert_int_equal(fqdn__addrs(c, "other.test", &v, &n), -ENOENT);
	assert_int_equal(fqdn__remove(c, "API.openai.com"), 0);
	assert_int_equal(fqdn__remove(c, "api.openai.com"), -ENOENT);
	assert_int_equal(fqdn__next_deadline(c), UINT64_MAX);
	fqdn__free(c);
}

static void test_lookup_addr(void **state)
{
	struct script s;
	struct fqdn_cache *c = scripted(&s);
	struct compile_addr ab[2] = { mk("10.0.0.1"), mk("10.0.0.2") };
	struct timespec rt, mt;
	uint64_t exp, grace;
	int64_t off;
	char names[128];

	assert_int_equal(fqdn__inject(c, "a.test", ab, 2, 100, T0, NULL), 0);
	assert_int_equal(fqdn__inject(c, "b.test", ab, 1, 200, T0, NULL), 0);
	assert_int_equal(fqdn__lookup_addr(c, ab[0].addr, names, sizeof(names),
					   &exp, &grace), 0);
	assert_string_equal(names, "a.test,b.test");
	assert_int_equal(grace - exp, 300 * NSEC);
	clock_gettime(CLOCK_MONOTONIC, &mt);
	clock_gettime(CLOCK_REALTIME, &rt);
	off = (int64_t)(rt.tv_sec * NSEC + rt.tv_nsec) -
	      (int64_t)(mt.tv_sec * NSEC + mt.tv_nsec);
	assert_true(llabs((int64_t)exp - (int64_t)(T0 + 200 * NSEC) - off) <
		    (int64_t)NSEC);

	assert_int_equal(fqdn__lookup_addr(c, ab[1].addr, names, sizeof(names),
					   &exp, NULL), 0);
	assert_string_equal(names, "a.test");
	assert_int_equal(fqdn__lookup_addr(c, ab[0].addr, names, 8, NULL, NULL),
			 -ENOSPC);
	assert_string_equal(names, "a.test");
	assert_int_equal(fqdn__lookup_addr(c, mk("10.9.9.9").addr, names,
					   sizeof(names), NULL, NULL), -ENOENT);
	fqdn__free(c);
}

static void test_resolve_cb(void **state)
{
	compile_resolve_fn fn = fqdn__resolve_cb;
	struct script s;
	struct fqdn_cache *c = scripted(&s);
	struct compile_addr *v;
	struct sc_entry *e;
	size_t n;
	bool ch;

	e = sc_set(&s, "api.test", 0);
	e->addrs[0] = "10.0.0.1";
	e->addrs[1] = "2001:db8::7";
	e->ttl = 100;
	sc_set(&s, "down.test", 0)->err = -ETIMEDOUT;

	assert_int_equal(fn(c, "api.test", &v, &n), 0);
	assert_int_equal(s.calls, 2);
	assert_int_equal(n, 2);
	assert_true(has_addr(v, n, "10.0.0.1"));
	assert_true(has_addr(v, n, "2001:db8::7"));
	free(v);
	assert_int_equal(fn(c, "api.test", &v, &n), 0);	/* cached */
	assert_int_equal(s.calls, 2);
	free(v);

	/* Resolver down: the rule matches nothing for now, no error. */
	assert_int_equal(fn(c, "down.test", &v, &n), 0);
	assert_int_equal(n, 0);
	assert_null(v);
	assert_int_equal(s.calls, 3);
	assert_int_equal(fn(c, "down.test", &v, &n), 0);
	assert_int_equal(s.calls, 3);

	assert_int_equal(fn(c, "*.bad", &v, &n), -EINVAL);

	/* The additions made during compile are reported once. */
	assert_int_equal(fqdn__refresh_due(c, 0, &ch), 0);
	assert_true(ch);
	fqdn__free(c);
}

/* A server that never answers: one refresh round waits out one query's
 * timeouts (about 2 s here), not every name's. */
static void test_silent_server(void **state)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct fqdn_resolver_conf conf = { .nservers = 1 };
	socklen_t slen = sizeof(sa);
	struct fqdn_cache *c;
	struct fqdn_stats st;
	uint64_t t0, took;
	int fd;

	fd = socket(AF_INET, SOCK_DGRAM, 0);
	assert_true(fd >= 0);
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &slen), 0);
	conf.servers[0] = mk("127.0.0.1");
	conf.port = ntohs(sa.sin_port);
	c = fqdn__new_conf(&conf, 300, 5);
	assert_non_null(c);
	assert_int_equal(fqdn__add(c, "a.test"), 0);
	assert_int_equal(fqdn__add(c, "b.test"), 0);
	assert_int_equal(fqdn__add(c, "c.test"), 0);
	t0 = mono_ns();
	assert_int_equal(fqdn__refresh_due(c, t0, NULL), -EAGAIN);
	took = mono_ns() - t0;
	fqdn__stats(c, &st);
	assert_int_equal(st.queries, 1);
	assert_true(took >= 2 * NSEC && took < 5 * NSEC);
	fqdn__free(c);
	close(fd);
}

/* ---- real resolver: dnsmasq ----------------------------------------- */

#define DNSMASQ		"/usr/sbin/dnsmasq"
/* Unusual loopback addresses: 127.0.0.53 may be systemd-resolved's. */
#define DNS_V4		"127.0.53.53"
#define DNS_ALT_PORT	5354

struct real {
	int lock_fd;
	pid_t pid[2];
	char log[2][128];
	struct fqdn_cache *c;	/* freed by the teardown if a check fails */
};

static pid_t dnsmasq_start(const char *listen, int port, const char *log)
{
	char a_listen[64], a_port[32];
	pid_t pid;

	snprintf(a_listen, sizeof(a_listen), "--listen-address=%s", listen);
	snprintf(a_port, sizeof(a_port), "--port=%d", port);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		/* Never outlive the test, even if it crashes. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execl(DNSMASQ, DNSMASQ, "--no-daemon", "--conf-file=/dev/null",
		      "--no-resolv", "--no-hosts", "--user=root",
		      "--pid-file=", a_listen, a_port, "--bind-interfaces",
		      "--local-ttl=2",
		      "--address=/agent.test/127.0.0.77",
		      "--host-record=multi.test,127.0.0.78,::1,7",
		      "--cname=alias.test,multi.test,3",
		      "--local=/test/",	/* never forward: NODATA, NXDOMAIN */
		      "--log-facility=-",
		      (char *)NULL);
		_exit(127);
	}
	return pid;
}

static void dnsmasq_dump(const char *log)
{
	char line[256];
	FILE *f = fopen(log, "r");

	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		fprintf(stderr, "  dnsmasq: %s", line);
	fclose(f);
}

static int real_setup(void **state)
{
	struct real *r = calloc(1, sizeof(*r));

	if (!r)
		return -1;
	r->lock_fd = -1;
	*state = r;
	return 0;
}

static int real_teardown(void **state)
{
	struct real *r = *state;

	fqdn__free(r->c);
	for (int i = 0; i < 2; i++) {
		if (r->pid[i] <= 0)
			continue;
		kill(r->pid[i], SIGTERM);
		for (int k = 0; k < 50; k++) {
			if (waitpid(r->pid[i], NULL, WNOHANG) == r->pid[i]) {
				r->pid[i] = 0;
				break;
			}
			usleep(20000);
		}
		if (r->pid[i] > 0) {
			kill(r->pid[i], SIGKILL);
			waitpid(r->pid[i], NULL, 0);
		}
		unlink(r->log[i]);
	}
	if (r->lock_fd >= 0)
		close(r->lock_fd);
	free(r);
	return 0;
}

/* Some containers run without IPv6 on lo. */
static bool have_v6_loopback(void)
{
	struct sockaddr_in6 sa = { .sin6_family = AF_INET6,
				   .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	int fd = socket(AF_INET6, SOCK_DGRAM, 0);
	bool ok;

	if (fd < 0)
		return false;
	ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

static uint64_t real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * NSEC + (uint64_t)ts.tv_nsec;
}

/* Wait until the server answers NAME. */
static void wait_ready(struct fqdn_cache *c, const char *name, const char *log)
{
	for (int i = 0; i < 50; i++) {
		if (fqdn__resolve_now(c, name) == 0 && naddrs(c, name) > 0)
			return;
		usleep(100000);
	}
	dnsmasq_dump(log);
	fail_msg("dnsmasq did not answer %s", name);
}

static void test_real_dnsmasq(void **state)
{
	struct real *r = *state;
	struct fqdn_resolver_conf conf = { .nservers = 1, .port = DNS_ALT_PORT };
	const char *ci = getenv("CI");
	bool in_ci = ci && !strcmp(ci, "true");
	struct compile_addr *v;
	struct fqdn_stats st;
	struct fqdn_cache *c = NULL;
	uint64_t exp, grace, now, dl;
	const char *p, *alt;
	char names[128];
	size_t n;

	if (geteuid() != 0 || access(DNSMASQ, X_OK) != 0) {
		const char *why = geteuid() != 0 ? "needs root" :
				  DNSMASQ " missing (apt-get install dnsmasq-base)";

		if (in_ci)
			fail_msg("real dnsmasq test cannot run under CI: %s", why);
		fprintf(stderr, "\n*** SKIPPED: fqdn real-resolver test against "
			"dnsmasq (%s) ***\n\n", why);
		skip();
	}

	/* Fixed addresses and ports: two runs at once (two builds in one
	 * tree) would collide, so they take turns. */
	r->lock_fd = open("/tmp/sluice-test-fqdn-dnsmasq.lock",
			  O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	assert_true(r->lock_fd >= 0);
	assert_int_equal(flock(r->lock_fd, LOCK_EX), 0);

	ensure_tmpdir();
	snprintf(r->log[0], sizeof(r->log[0]), "%s/dnsmasq-v4.log", tmpdir);
	snprintf(r->log[1], sizeof(r->log[1]), "%s/dnsmasq-alt.log", tmpdir);
	r->pid[0] = dnsmasq_start(DNS_V4, 53, r->log[0]);
	/* The second server tests a port other than 53, over v6 if it can. */
	alt = have_v6_loopback() ? "::1" : "127.0.53.54";
	r->pid[1] = dnsmasq_start(alt, DNS_ALT_PORT, r->log[1]);

	/* v4 server on port 53, named by a custom resolv.conf */
	p = write_tmp("resolv-dnsmasq.conf", "nameserver " DNS_V4 "\n");
	c = r->c = fqdn__new(p, 300, 1);
	assert_non_null(c);
	wait_ready(c, "agent.test", r->log[0]);

	assert_int_equal(fqdn__addrs(c, "agent.test", &v, &n), 0);
	assert_int_equal(n, 1);
	assert_true(has_addr(v, n, "127.0.0.77"));
	assert_true(v[0].is_v4);
	free(v);
	/* --local-ttl=2: the answer expires ~2 s from now */
	now = real_ns();
	assert_int_equal(fqdn__lookup_addr(c, mk("127.0.0.77").addr, names,
					   sizeof(names), &exp, &grace), 0);
	assert_string_equal(names, "agent.test");
	assert_true(exp > now + NSEC && exp <= now + 2 * NSEC + NSEC / 10);
	assert_int_equal(grace - exp, 300 * NSEC);

	assert_int_equal(fqdn__resolve_now(c, "multi.test"), 0);
	assert_int_equal(fqdn__addrs(c, "multi.test", &v, &n), 0);
	assert_int_equal(n, 2);
	assert_true(has_addr(v, n, "127.0.0.78"));
	assert_true(has_addr(v, n, "::1"));
	free(v);

	/* NXDOMAIN: no addresses, no error */
	assert_int_equal(fqdn__resolve_now(c, "host.nx.test"), 0);
	assert_int_equal(naddrs(c, "host.nx.test"), 0);
	/* No upstream for this one: dnsmasq refuses. That is a failure, but
	 * a fast one: the names after it in the round are still queried. */
	assert_int_equal(fqdn__resolve_now(c, "unknown.invalid"), -EAGAIN);
	assert_int_equal(naddrs(c, "unknown.invalid"), 0);
	assert_int_equal(fqdn__add(c, "late.agent.test"), 0);
	assert_int_equal(fqdn__refresh_due(c, mono_ns() + 10 * NSEC, NULL), -EAGAIN);
	assert_true(cache_has(c, "late.agent.test", "127.0.0.77"));
	fqdn__stats(c, &st);
	assert_true(st.negative >= 2);
	assert_true(st.failures >= 1);
	fqdn__free(c);
	r->c = NULL;

	/* CNAME (ttl 3) to a host-record (ttl 7): the chain's min, 3 s. */
	c = r->c = fqdn__new(p, 300, 1);
	assert_non_null(c);
	now = mono_ns();
	assert_int_equal(fqdn__resolve_now(c, "alias.test"), 0);
	assert_int_equal(fqdn__addrs(c, "alias.test", &v, &n), 0);
	assert_int_equal(n, 2);
	assert_true(has_addr(v, n, "127.0.0.78"));
	free(v);
	dl = fqdn__next_deadline(c);
	assert_true(dl >= now + 24 * NSEC / 10 && dl < mono_ns() + 24 * NSEC / 10 + 1);
	fqdn__free(c);
	r->c = NULL;

	/* the other server, on another port, through fqdn__new_conf */
	conf.servers[0] = mk(alt);
	c = r->c = fqdn__new_conf(&conf, 300, 1);
	assert_non_null(c);
	wait_ready(c, "agent.test", r->log[1]);
	assert_true(cache_has(c, "agent.test", "127.0.0.77"));
	fqdn__free(c);
	r->c = NULL;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_resolv_conf),
		cmocka_unit_test(test_new_resolvers),
		cmocka_unit_test(test_parse_a_aaaa),
		cmocka_unit_test(test_parse_cname_chain),
		cmocka_unit_test(test_parse_negative_and_errors),
		cmocka_unit_test(test_parse_truncated),
		cmocka_unit_test(test_refresh_schedule),
		cmocka_unit_test(test_grace_then_drop),
		cmocka_unit_test(test_failure_keeps_addrs),
		cmocka_unit_test(test_nxdomain_keeps_grace),
		cmocka_unit_test(test_dead_resolver_round),
		cmocka_unit_test(test_partial_failure),
		cmocka_unit_test(test_cname_and_min_ttl),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_lookup_addr),
		cmocka_unit_test(test_resolve_cb),
		cmocka_unit_test(test_silent_server),
		cmocka_unit_test_setup_teardown(test_real_dnsmasq, real_setup,
						real_teardown),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);

	if (tmpdir[0]) {
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			rc = rc ? rc : 1;
	}
	return rc;
}
