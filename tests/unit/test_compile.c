// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* compile: policy documents -> LPM entries, rule names, fqdn records. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "compile.h"

/* ---- helpers -------------------------------------------------------- */

#define HDR(kind, name) "apiVersion: sluice.dev/v1alpha1\n"	\
			"kind: " kind "\n"			\
			"metadata: {name: " name "}\n"		\
			"spec:\n"				\
			"  selector: {cgroupPaths: [a]}\n"
#define AGENT(name)	HDR("AgentPolicy", name)
#define CLUSTER(name)	HDR("ClusterAgentPolicy", name)

struct fixture {
	struct pol_set set;
	const struct pol_doc *docs[8];
	struct compile_input in;
	struct compiled out;
	char err[1024];
};

/* Parse each text as one file; the docs, in order, select the workload. */
static struct fixture *fx_new(const char *const *texts)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct pol_diags d = { 0 };

	assert_non_null(f);
	for (size_t i = 0; texts[i]; i++) {
		int rc = policy__parse_buf("t.yaml", texts[i], strlen(texts[i]), &f->set, &d);

		if (rc)
			policy__print_diags(&d, stderr);
		assert_int_equal(rc, 0);
	}
	policy__diags_free(&d);
	assert_true(f->set.ndocs <= 8);
	for (size_t i = 0; i < f->set.ndocs; i++)
		f->docs[i] = &f->set.docs[i];
	f->in.docs = f->docs;
	f->in.ndocs = f->set.ndocs;
	return f;
}

static void fx_free(struct fixture *f)
{
	compile__free(&f->out);
	policy__set_free(&f->set);
	free(f);
}

static int fx_build(struct fixture *f)
{
	return compile__build(&f->in, &f->out, f->err, sizeof(f->err));
}

static struct compile_addr addr(const char *s)
{
	struct compile_addr a = { 0 };

	if (inet_pton(AF_INET, s, a.addr + 12) == 1) {
		a.addr[10] = a.addr[11] = 0xff;
		a.is_v4 = 1;
	} else {
		assert_int_equal(inet_pton(AF_INET6, s, a.addr), 1);
	}
	return a;
}

/* The entry for prefix S ("10.0.0.0/8", "2001:db8::/32"), or fail. */
static const struct compile_entry *entry(const struct compiled *c, const char *s)
{
	char a[64];
	const char *slash = strchr(s, '/');
	struct compile_addr ca;
	unsigned int bits;

	snprintf(a, sizeof(a), "%.*s", (int)(slash - s), s);
	ca = addr(a);
	bits = (unsigned int)atoi(slash + 1) + (ca.is_v4 ? 96 : 0);
	for (size_t i = 0; i < c->nentries; i++)
		if (c->entries[i].key.prefixlen == SL_LPM_SET_BITS + bits &&
		    !memcmp(c->entries[i].key.addr, ca.addr, 16))
			return &c->entries[i];
	fail_msg("no entry for %s", s);
	return NULL;
}

static void assert_pe(const struct sl_port_entry *e, unsigned int lo, unsigned int hi,
		      unsigned int proto, unsigned int action, unsigned int rule_id)
{
	assert_int_equal(e->port_lo, lo);
	assert_int_equal(e->port_hi, hi);
	assert_int_equal(e->proto, proto);
	assert_int_equal(e->action, action);
	assert_int_equal(e->rule_id, rule_id);
}

/* ---- tests ----------------------------------------------------------- */

static void test_prefix_lengths(void **state)
{
	const char *t[] = {
		AGENT("p")
		"  egress:\n"
		"    - name: v4\n"
		"      to: [{cidr: 10.0.0.0/8}, {cidr: 10.1.2.3}]\n"
		"    - name: v6\n"
		"      to: [{cidr: \"2001:db8::/32\"}, {cidr: \"::/0\"}]\n"
		"    - name: mapped\n"
		"      to: [{cidr: \"::ffff:192.168.0.0/112\"}]\n",
		NULL,
	};
	struct fixture *f = fx_new(t);
	const struct compile_entry *e;
	struct compile_addr a;

	assert_int_equal(fx_build(f), 0);
	assert_int_equal(f->out.nentries, 5);
	e = entry(&f->out, "10.0.0.0/8");
	assert_int_equal(e->key.prefixlen, 32 + 96 + 8);
	assert_int_equal(e->key.set_id, 0);
	a = addr("10.0.0.0");
	assert_memory_equal(e->key.addr, a.addr, 16);
	assert_int_equal(entry(&f->out, "10.1.2.3/32")->key.prefixlen, 32 + 128);
	assert_int_equal(entry(&f->out, "2001:db8::/32")->key.prefixlen, 32 + 32);
	assert_int_equal(entry(&f->out, "::/0")->key.prefixlen, 32);
	/* A mapped literal is the IPv4 prefix it spells. */
	assert_int_equal(entry(&f->out, "192.168.0.0/16")->key.prefixlen, 32 + 112);
	/* No ports: any port, any protocol; ::/0's identical entry is folded
	 * into the first rule's. */
	assert_int_equal(e->val.n, 1);
	assert_pe(&e->val.e[0], 0, 65535, SL_PROTO_ANY, SL_ACTION_ALLOW, SL_RULE_FIRST);
	fx_free(f);
}

static void test_union_of_covering_prefixes(void **state)
{
	const char *t[] = {
		AGENT("a")
		"  egress:\n"
		"    - name: wide\n"
		"      class: llm\n"
		"      to: [{cidr: 10.0.0.0/8}]\n"
		"      ports: [{port: 443}]\n",
		AGENT("b")
		"  egress:\n"
		"    - name: narrow\n"
		"      class: tool\n"
		"      to: [{cidr: 10.1.0.0/16}]\n"
		"      ports: [{port: 80}]\n"
		"    - name: host\n"
		"      to: [{cidr: 10.1.2.3/32}]\n"
		"      ports: [{port: 22}]\n",
		NULL,
	};
	struct fixture *f = fx_new(t);
	const struct compile_entry *e;

	assert_int_equal(fx_build(f), 0);
	assert_int_equal(f->out.nentries, 3);
	e = entry(&f->out, "10.0.0.0/8");
	assert_int_equal(e->val.n, 1);
	assert_pe(&e->val.e[0], 443, 443, SL_PROTO_TCP, SL_ACTION_ALLOW, 16);
	assert_int_equal(e->val.e[0].class, SL_CLASS_LLM);

	e = entry(&f->out, "10.1.0.0/16");
	assert_int_equal(e->val.n, 2);
	assert_pe(&e->val.e[0], 443, 443, SL_PROTO_TCP, SL_ACTION_ALLOW, 16);
	assert_pe(&e->val.e[1], 80, 80, SL_PROTO_TCP, SL_ACTION_ALLOW, 17);
	assert_int_equal(e->val.e[1].class, SL_CLASS_TOOL);

	e = entry(&f->out, "10.1.2.3/32");
	assert_int_equal(e->val.n, 3);
	assert_int_equal(e->val.e[0].rule_id, 16);
	assert_int_equal(e->val.e[1].rule_id, 17);
	assert_pe(&e->val.e[2], 22, 22, SL_PROTO_TCP, SL_ACTION_ALLOW, 18);
	fx_free(f);
}

static void test_deny_first(void **state)
{
	const char *t[] = {
		AGENT("a")
		"  egress:\n"
		"    - name: internal\n"
		"      to: [{cidr: 169.254.0.0/16}]\n"
		"      ports: [{port: 80}, {port: 8080, protocol: UDP}]\n"
		"    - name: all-web\n"
		"      to: [{cidr: 0.0.0.0/0}]\n"
		"      ports: [{port: 443}]\n",
		"apiVersion: sluice.dev/v1alpha1\n"
		"kind: ClusterAgentPolicy\n"
		"metadata: {name: guard}\n"
		"spec:\n"
		"  selector: {podSelector: {}}\n"
		"  egressDeny:\n"
		"    - name: metadata\n"
		"      to: [{cidr: 169.254.169.254/32}]\n"
		"    - name: no-udp\n"
		"      to: [{cidr: 169.254.0.0/16}]\n"
		"      ports: [{port: 1, endPort: 65535, protocol: UDP}]\n",
		NULL,
	};
	struct fixture *f = fx_new(t);
	const struct compile_entry *e;

	assert_int_equal(fx_build(f), 0);
	/* Rule ids: a's two rules, then guard's two denies. */
	assert_int_equal(f->out.nrules, 4);

	e = entry(&f->out, "0.0.0.0/0");
	assert_int_equal(e->val.n, 1);
	assert_pe(&e->val.e[0], 443, 443, SL_PROTO_TCP, SL_ACTION_ALLOW, 17);

	/* Deny first, whatever the prefix it came from; the UDP allow under
	 * a UDP deny can never match and is dropped. */
	e = entry(&f->out, "169.254.0.0/16");
	assert_int_equal(e->val.n, 3);
	assert_pe(&e->val.e[0], 1, 65535, SL_PROTO_UDP, SL_ACTION_DENY, 19);
	assert_pe(&e->val.e[1], 80, 80, SL_PROTO_TCP, SL_ACTION_ALLOW, 16);
	assert_pe(&e->val.e[2], 443, 443, SL_PROTO_TCP, SL_ACTION_ALLOW, 17);

	/* The metadata address: an any-port deny shadows every allow. */
	e = entry(&f->out, "169.254.169.254/32");
	assert_int_equal(e->val.n, 2);
	assert_pe(&e->val.e[0], 0, 65535, SL_PROTO_ANY, SL_ACTION_DENY, 18);
	assert_pe(&e->val.e[1], 1, 65535, SL_PROTO_UDP, SL_ACTION_DENY, 19);
	assert_int_equal(f->out.rules[2].meta.action, SL_ACTION_DENY);
	fx_free(f);
}

static void test_ports_and_dedupe(void **state)
{
	const char *t[] = {
		AGENT("a")
		"  egress:\n"
		"    - name: range\n"
		"      to: [{cidr: \"fd00::/8\"}]\n"
		"      ports: [{port: 8000, endPort: 8100, protocol: UDP}, {protocol: SCTP},"
		" {port: 53, protocol: UDP}]\n"
		"    - name: same\n"
		"      to: [{cidr: \"fd00::/8\"}, {cidr: \"fd00:1::/32\"}]\n"
		"      ports: [{port: 53, protocol: UDP}, {port: 8000, endPort: 8100, "
		"protocol: TCP}]\n",
		NULL,
	};
	struct fixture *f = fx_new(t);
	const struct compile_entry *e;

	assert_int_equal(fx_build(f), 0);
	e = entry(&f->out, "fd00::/8");
	assert_int_equal(e->val.n, 4);
	assert_pe(&e->val.e[0], 8000, 8100, SL_PROTO_UDP, SL_ACTION_ALLOW, 16);
	assert_pe(&e->val.e[1], 0, 65535, SL_PROTO_SCTP, SL_ACTION_ALLOW, 16);
	assert_pe(&e->val.e[2], 53, 53, SL_PROTO_UDP, SL_ACTION_ALLOW, 16);
	/* udp/53 again from "same": kept once, named by the first rule. */
	assert_pe(&e->val.e[3], 8000, 8100, SL_PROTO_TCP, SL_ACTION_ALLOW, 17);
	e = entry(&f->out, "fd00:1::/32");
	assert_int_equal(e->val.n, 4);
	assert_int_equal(e->val.e[2].rule_id, 16);
	fx_free(f);
}

static void test_too_many_port_entries(void **state)
{
	char big[4096];
	size_t o = 0;
	const char *t[] = { big, NULL };
	struct fixture *f;

	o += (size_t)snprintf(big + o, sizeof(big) - o, AGENT("a") "  egress:\n"
			      "    - name: wide\n      to: [{cidr: 10.0.0.0/8}]\n      ports:\n");
	for (int i = 0; i < 9; i++)
		o += (size_t)snprintf(big + o, sizeof(big) - o, "        - port: %d\n", 1000 + i);
	o += (size_t)snprintf(big + o, sizeof(big) - o,
			      "    - name: narrow\n      to: [{cidr: 10.2.0.0/16}]\n      ports:\n");
	for (int i = 0; i < 8; i++)
		o += (size_t)snprintf(big + o, sizeof(big) - o, "        - port: %d\n", 2000 + i);
	o += (size_t)snprintf(big + o, sizeof(big) - o,
			      "    - name: again\n      to: [{cidr: 10.3.0.0/16}]\n"
			      "      ports: [{port: 1000}]\n");
	f = fx_new(t);
	assert_int_equal(fx_build(f), -E2BIG);
	assert_string_equal(f->err, "10.2.0.0/16 needs 17 port entries, more than the 16 one "
			    "address prefix can hold; rules covering it: default/a:wide, "
			    "default/a:narrow; merge their port ranges or split the "
			    "destinations");
	assert_int_equal(f->out.nentries, 0);
	assert_null(f->out.entries);
	fx_free(f);

	/* 16 is fine, and so is a duplicate that dedupes below the cap. */
	big[0] = '\0';
	o = (size_t)snprintf(big, sizeof(big), AGENT("a") "  egress:\n"
			     "    - name: one\n      to: [{cidr: 10.0.0.0/8}]\n      ports:\n");
	for (int i = 0; i < 16; i++)
		o += (size_t)snprintf(big + o, sizeof(big) - o, "        - port: %d\n", 1000 + i);
	o += (size_t)snprintf(big + o, sizeof(big) - o,
			      "    - name: two\n      to: [{cidr: 10.0.0.0/16}]\n"
			      "      ports: [{port: 1000}]\n");
	f = fx_new(t);
	assert_int_equal(fx_build(f), 0);
	assert_int_equal(entry(&f->out, "10.0.0.0/16")->val.n, 16);
	fx_free(f);
}

/* ---- fqdn ------------------------------------------------------------ */

struct fake_dns {
	int calls;
	int fail;
};

static int fake_resolve(void *ctx, const char *fqdn, struct compile_addr **out, size_t *n)
{
	struct fake_dns *d = ctx;
	static const char *const api[] = { "192.0.2.1", "2001:db8::1" };
	static const char *const alt[] = { "192.0.2.1" };
	const char *const *v = NULL;
	size_t k = 0;

	d->calls++;
	*out = NULL;
	*n = 0;
	if (d->fail)
		return -d->fail;
	if (!strcmp(fqdn, "api.example.com")) {
		v = api;
		k = 2;
	} else if (!strcmp(fqdn, "alt.example.com")) {
		v = alt;
		k = 1;
	}
	if (!k)
		return 0;	/* NXDOMAIN: matches nothing */
	*out = calloc(k, sizeof(**out));
	assert_non_null(*out);
	for (size_t i = 0; i < k; i++)
		(*out)[i] = addr(v[i]);
	*n = k;
	return 0;
}

static const char fqdn_policy[] =
	AGENT("a")
	"  egress:\n"
	"    - name: api\n"
	"      class: llm\n"
	"      to: [{fqdn: api.example.com}, {fqdn: nowhere.example.com}]\n"
	"      ports: [{port: 443}]\n"
	"    - name: alt\n"
	"      to: [{fqdn: alt.example.com}, {fqdn: api.example.com}]\n"
	"      ports: [{port: 8443}]\n";

static void test_fqdn(void **state)
{
	const char *t[] = { fqdn_policy, NULL };
	struct fixture *f = fx_new(t);
	struct fake_dns dns = { 0 };
	const struct compile_entry *e;
	struct compile_addr a;

	f->in.resolve = fake_resolve;
	f->in.resolve_ctx = &dns;
	assert_int_equal(fx_build(f), 0);
	/* Each distinct name once. */
	assert_int_equal(dns.calls, 3);
	assert_int_equal(f->out.nentries, 2);
	e = entry(&f->out, "192.0.2.1/32");
	assert_int_equal(e->val.n, 2);
	assert_pe(&e->val.e[0], 443, 443, SL_PROTO_TCP, SL_ACTION_ALLOW, 16);
	assert_pe(&e->val.e[1], 8443, 8443, SL_PROTO_TCP, SL_ACTION_ALLOW, 17);
	e = entry(&f->out, "2001:db8::1/128");
	assert_int_equal(e->val.n, 2);

	/* Sorted by address (v4-mapped ::ffff:... first), names in rule order. */
	assert_int_equal(f->out.nfqdns, 2);
	a = addr("192.0.2.1");
	assert_memory_equal(f->out.fqdns[0].addr, a.addr, 16);
	assert_string_equal(f->out.fqdns[0].names, "api.example.com,alt.example.com");
	a = addr("2001:db8::1");
	assert_memory_equal(f->out.fqdns[1].addr, a.addr, 16);
	assert_string_equal(f->out.fqdns[1].names, "api.example.com");
	fx_free(f);

	/* No resolver: an error that says so. */
	f = fx_new(t);
	assert_int_equal(fx_build(f), -EINVAL);
	assert_string_equal(f->err, "fqdn destinations need a resolver, and none was given");
	fx_free(f);

	/* A failing resolver fails the build, naming the rule. */
	f = fx_new(t);
	dns.fail = EAGAIN;
	f->in.resolve = fake_resolve;
	f->in.resolve_ctx = &dns;
	assert_int_equal(fx_build(f), -EAGAIN);
	assert_string_equal(f->err, "cannot resolve alt.example.com (rule alt of default/a): "
			    "Resource temporarily unavailable");
	fx_free(f);
}

static int many_names_resolve(void *ctx, const char *fqdn, struct compile_addr **out,
			      size_t *n)
{
	*out = calloc(1, sizeof(**out));
	assert_non_null(*out);
	**out = addr("192.0.2.7");
	*n = 1;
	return 0;
}

static void test_fqdn_names_truncated(void **state)
{
	char buf[4096];
	size_t o;
	const char *t[] = { buf, NULL };
	struct fixture *f;

	o = (size_t)snprintf(buf, sizeof(buf), AGENT("a") "  egress:\n    - name: r\n      to:\n");
	for (int i = 0; i < 12; i++)
		o += (size_t)snprintf(buf + o, sizeof(buf) - o,
				      "        - fqdn: host-number-%02d.example.com\n", i);
	f = fx_new(t);
	f->in.resolve = many_names_resolve;
	assert_int_equal(fx_build(f), 0);
	assert_int_equal(f->out.nfqdns, 1);
	/* Whole names only, as many as fit in 127 characters. */
	assert_string_equal(f->out.fqdns[0].names,
			    "host-number-00.example.com,host-number-01.example.com,"
			    "host-number-02.example.com,host-number-03.example.com");
	fx_free(f);
}

/* ---- dns, ids, flags ---------------------------------------------------- */

static void test_implicit_dns(void **state)
{
	const char *t[] = {
		AGENT("a")
		"  egress:\n"
		"    - name: web\n"
		"      to: [{cidr: 10.0.0.0/8}]\n"
		"      ports: [{port: 443}]\n",
		NULL,
	};
	struct compile_addr res[] = { addr("10.0.0.53"), addr("fd00::53") };
	struct fixture *f = fx_new(t);
	const struct compile_entry *e;
	const struct compile_rule *r;

	f->in.resolvers = res;
	f->in.nresolvers = 2;
	assert_int_equal(fx_build(f), 0);
	assert_int_equal(f->out.nrules, 2);
	r = &f->out.rules[1];
	assert_int_equal(r->rule_id, SL_RULE_FIRST + 1);
	assert_string_equal(r->meta.policy, "(implicit)");
	assert_string_equal(r->meta.rule, "dns");
	assert_int_equal(r->meta.class, SL_CLASS_DNS);
	assert_int_equal(r->meta.action, SL_ACTION_ALLOW);

	/* The resolver inside 10/8 gets the web rule too. */
	e = entry(&f->out, "10.0.0.53/32");
	assert_int_equal(e->val.n, 3);
	assert_pe(&e->val.e[0], 443, 443, SL_PROTO_TCP, SL_ACTION_ALLOW, 16);
	assert_pe(&e->val.e[1], 53, 53, SL_PROTO_UDP, SL_ACTION_ALLOW, 17);
	assert_pe(&e->val.e[2], 53, 53, SL_PROTO_TCP, SL_ACTION_ALLOW, 17);
	assert_int_equal(e->val.e[1].class, SL_CLASS_DNS);
	e = entry(&f->out, "fd00::53/128");
	assert_int_equal(e->val.n, 2);
	fx_free(f);

	/* spec.dns: deny in any selecting doc: no implicit rule at all. */
	{
		const char *t2[] = {
			t[0],
			AGENT("b") "  dns: deny\n",
			NULL,
		};

		f = fx_new(t2);
		f->in.resolvers = res;
		f->in.nresolvers = 2;
		assert_int_equal(fx_build(f), 0);
		assert_int_equal(f->out.nrules, 1);
		assert_int_equal(f->out.nentries, 1);
		fx_free(f);
	}
}

static void test_rule_ids_and_meta(void **state)
{
	const char *t[] = {
		"apiVersion: sluice.dev/v1alpha1\n"
		"kind: AgentPolicy\n"
		"metadata: {name: research, namespace: agents}\n"
		"spec:\n"
		"  selector: {cgroupPaths: [a]}\n"
		"  mode: audit\n"
		"  egress:\n"
		"    - {name: llm, class: llm, to: [{cidr: 10.0.0.1}]}\n"
		"    - {name: svc, class: agent, to: [{service: {name: x}}, {service: {name: y}}]}\n",
		"apiVersion: sluice.dev/v1alpha1\n"
		"kind: ClusterAgentPolicy\n"
		"metadata: {name: guard}\n"
		"spec:\n"
		"  selector: {podSelector: {}}\n"
		"  mode: audit\n"
		"  egress: [{name: gw, class: gateway, to: [{cidr: 10.0.0.2}]}]\n"
		"  egressDeny: [{name: md, to: [{cidr: 169.254.169.254}]}]\n",
		NULL,
	};
	struct fixture *f = fx_new(t);
	static const struct { const char *policy, *rule; uint8_t class, action; } want[] = {
		{ "agents/research", "llm", SL_CLASS_LLM, SL_ACTION_ALLOW },
		{ "agents/research", "svc", SL_CLASS_AGENT, SL_ACTION_ALLOW },
		{ "guard", "gw", SL_CLASS_GATEWAY, SL_ACTION_ALLOW },
		{ "guard", "md", SL_CLASS_OTHER, SL_ACTION_DENY },
	};

	assert_int_equal(fx_build(f), 0);
	assert_int_equal(f->out.nrules, 4);
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(f->out.rules[i].rule_id, SL_RULE_FIRST + i);
		assert_string_equal(f->out.rules[i].meta.policy, want[i].policy);
		assert_string_equal(f->out.rules[i].meta.rule, want[i].rule);
		assert_int_equal(f->out.rules[i].meta.class, want[i].class);
		assert_int_equal(f->out.rules[i].meta.action, want[i].action);
	}
	/* Services need the cluster: skipped and counted. */
	assert_int_equal(f->out.nskipped_services, 2);
	assert_int_equal(f->out.nentries, 3);
	/* Every selecting doc is audit: the workload is. */
	assert_int_equal(f->out.flags, SL_IDF_AUDIT);
	compile__free(&f->out);

	/* One enforcing doc is enough to enforce. */
	f->set.docs[1].mode = POL_ENFORCE;
	assert_int_equal(fx_build(f), 0);
	assert_int_equal(f->out.flags, 0);
	compile__free(&f->out);

	/* Nothing selects: nothing at all, not even DNS. */
	f->in.ndocs = 0;
	assert_int_equal(fx_build(f), 0);
	assert_int_equal(f->out.nrules, 0);
	assert_int_equal(f->out.nentries, 0);
	assert_int_equal(f->out.flags, 0);
	fx_free(f);
}

static void test_deterministic(void **state)
{
	const char *t1[] = {
		AGENT("a")
		"  egress:\n"
		"    - name: r\n"
		"      to: [{cidr: 10.9.0.0/16}, {cidr: \"2001:db8::/48\"}, {cidr: 10.0.0.0/8},"
		" {cidr: 192.0.2.1}]\n"
		"      ports: [{port: 443}]\n",
		NULL,
	};
	const char *t2[] = {
		AGENT("a")
		"  egress:\n"
		"    - name: r\n"
		"      to: [{cidr: 192.0.2.1}, {cidr: 10.0.0.0/8}, {cidr: 10.9.0.0/16},"
		" {cidr: \"2001:db8::/48\"}, {cidr: 10.0.0.0/8}]\n"
		"      ports: [{port: 443}]\n",
		NULL,
	};
	struct fixture *f1 = fx_new(t1), *f2 = fx_new(t2);

	assert_int_equal(fx_build(f1), 0);
	assert_int_equal(fx_build(f2), 0);
	assert_int_equal(f1->out.nentries, 4);
	assert_int_equal(f2->out.nentries, 4);
	assert_memory_equal(f1->out.entries, f2->out.entries,
			    4 * sizeof(struct compile_entry));
	/* Sorted by address, then length. */
	for (size_t i = 1; i < 4; i++) {
		const struct compile_entry *a = &f1->out.entries[i - 1], *b = &f1->out.entries[i];
		int c = memcmp(a->key.addr, b->key.addr, 16);

		assert_true(c < 0 || (c == 0 && a->key.prefixlen < b->key.prefixlen));
	}
	compile__free(&f1->out);
	assert_int_equal(fx_build(f1), 0);
	assert_memory_equal(f1->out.entries, f2->out.entries,
			    4 * sizeof(struct compile_entry));
	fx_free(f1);
	fx_free(f2);
}

/* 100k rules, each its own /32, plus one wide rule covering them all:
 * every entry folds in the wide rule. No timing assert; it is printed. */
static void test_100k_rules(void **state)
{
	const size_t n = 100000;
	struct pol_doc doc = { 0 };
	const struct pol_doc *docs[] = { &doc };
	struct compile_input in = { .docs = docs, .ndocs = 1 };
	struct compiled out;
	struct pol_port p443 = { .port = 443, .end_port = 443, .proto = SL_PROTO_TCP };
	struct timespec t0, t1;
	char err[256];

	doc.name = "big";
	doc.namespace = "default";
	doc.negress = n + 1;
	doc.egress = calloc(n + 1, sizeof(*doc.egress));
	assert_non_null(doc.egress);
	for (size_t i = 0; i <= n; i++) {
		struct pol_rule *r = &doc.egress[i];

		r->name = "r";
		r->class = SL_CLASS_OTHER;
		r->to = calloc(1, sizeof(*r->to));
		assert_non_null(r->to);
		r->nto = 1;
		r->to->kind = PEER_CIDR;
		r->to->addr[10] = r->to->addr[11] = 0xff;
		r->to->addr[12] = 10;
		if (i < n) {
			r->to->addr[13] = (uint8_t)(i >> 16);
			r->to->addr[14] = (uint8_t)(i >> 8);
			r->to->addr[15] = (uint8_t)i;
			r->to->bits = 128;
			r->ports = &p443;
			r->nports = 1;
		} else {
			r->to->bits = 104;	/* 10.0.0.0/8, any port */
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(compile__build(&in, &out, err, sizeof(err)), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	print_message("compile of %zu rules: %.3f s\n", n + 1,
		      (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	assert_int_equal(out.nrules, n + 1);
	assert_int_equal(out.nentries, n + 1);
	assert_int_equal(out.entries[0].key.prefixlen, 32 + 104);
	assert_int_equal(out.entries[1].val.n, 2);
	assert_int_equal(out.entries[1].val.e[0].rule_id, SL_RULE_FIRST);
	assert_int_equal(out.entries[1].val.e[1].rule_id, SL_RULE_FIRST + n);
	assert_int_equal(out.entries[n].val.e[0].rule_id, SL_RULE_FIRST + n - 1);
	compile__free(&out);
	for (size_t i = 0; i <= n; i++)
		free(doc.egress[i].to);
	free(doc.egress);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_prefix_lengths),
		cmocka_unit_test(test_union_of_covering_prefixes),
		cmocka_unit_test(test_deny_first),
		cmocka_unit_test(test_ports_and_dedupe),
		cmocka_unit_test(test_too_many_port_entries),
		cmocka_unit_test(test_fqdn),
		cmocka_unit_test(test_fqdn_names_truncated),
		cmocka_unit_test(test_implicit_dns),
		cmocka_unit_test(test_rule_ids_and_meta),
		cmocka_unit_test(test_deterministic),
		cmocka_unit_test(test_100k_rules),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
