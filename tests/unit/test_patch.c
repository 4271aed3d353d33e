// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* datapath__patch_plan: a set brought from one version to the next in
 * place. Each plan is replayed one map operation at a time on a model of
 * the LPM trie, and after every operation every probe address must get the
 * old set's lookup result or the new one's: the kernel applies a batch one
 * element at a time, and connects run meanwhile. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compile.h"
#include "datapath.h"

#define SET_ID 0x5e7u
#define MAX_MODEL 4096
#define NPROBES 400

struct model {
	struct sl_lpm_key k[MAX_MODEL];
	struct sl_lpm_val v[MAX_MODEL];
	size_t n;
};

static bool key_eq(const struct sl_lpm_key *a, const struct sl_lpm_key *b)
{
	return a->prefixlen == b->prefixlen && a->set_id == b->set_id &&
	       !memcmp(a->addr, b->addr, SL_ADDR_LEN);
}

static void model_put(struct model *m, const struct sl_lpm_key *k, const struct sl_lpm_val *v)
{
	for (size_t i = 0; i < m->n; i++)
		if (key_eq(&m->k[i], k)) {
			m->v[i] = *v;
			return;
		}
	assert_true(m->n < MAX_MODEL);
	m->k[m->n] = *k;
	m->v[m->n++] = *v;
}

static void model_del(struct model *m, const struct sl_lpm_key *k)
{
	for (size_t i = 0; i < m->n; i++)
		if (key_eq(&m->k[i], k)) {
			m->k[i] = m->k[--m->n];
			m->v[i] = m->v[m->n];
			return;
		}
	fail_msg("deleting a key the set does not have");
}

static bool covers(const struct sl_lpm_key *k, const uint8_t addr[SL_ADDR_LEN])
{
	unsigned int bits = k->prefixlen - SL_LPM_SET_BITS, full = bits / 8, rest = bits % 8;

	if (memcmp(k->addr, addr, full))
		return false;
	return !rest || !((k->addr[full] ^ addr[full]) & (0xff00 >> rest));
}

/* The longest prefix of SET_ID covering ADDR, as the kernel's trie finds it. */
static const struct sl_lpm_val *model_lookup(const struct model *m, const uint8_t *addr)
{
	const struct sl_lpm_val *best = NULL;
	uint32_t best_len = 0;

	for (size_t i = 0; i < m->n; i++)
		if (m->k[i].set_id == htonl(SET_ID) && covers(&m->k[i], addr) &&
		    (!best || m->k[i].prefixlen > best_len)) {
			best = &m->v[i];
			best_len = m->k[i].prefixlen;
		}
	return best;
}

static bool val_eq(const struct sl_lpm_val *a, const struct sl_lpm_val *b)
{
	if (!a || !b)
		return a == b;
	return a->n == b->n && !memcmp(a->e, b->e, a->n * sizeof(a->e[0]));
}

static void model_from(struct model *m, const struct compiled *c)
{
	m->n = 0;
	for (size_t i = 0; i < c->nentries; i++) {
		struct sl_lpm_key k = c->entries[i].key;

		k.set_id = htonl(SET_ID);
		model_put(m, &k, &c->entries[i].val);
	}
}

/* ---- random policies in 10.0.0.0/16, nested prefixes ------------------ */

struct rnd {
	uint64_t s;
};

static uint32_t rnd_next(struct rnd *r)
{
	r->s = r->s * 6364136223846793005ULL + 1442695040888963407ULL;
	return (uint32_t)(r->s >> 33);
}

static const unsigned int lens[] = { 16, 20, 24, 26, 28, 30, 32 };

static void rnd_cidr(struct rnd *r, char *buf, size_t len)
{
	unsigned int l = lens[rnd_next(r) % (sizeof(lens) / sizeof(lens[0]))];
	uint32_t a = 0x0a000000u | (rnd_next(r) & 0x0fffu);	/* a small space: they nest */

	a &= l ? ~0u << (32 - l) : 0;
	snprintf(buf, len, "%u.%u.%u.%u/%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255, l);
}

struct pol {
	char cidr[64][2][32];
	unsigned int ncidr[64];
	unsigned int port[64];
	unsigned int nrules;
};

static void pol_random(struct rnd *r, struct pol *p)
{
	p->nrules = 8 + rnd_next(r) % 24;
	for (unsigned int i = 0; i < p->nrules; i++) {
		p->ncidr[i] = 1 + rnd_next(r) % 2;
		for (unsigned int j = 0; j < p->ncidr[i]; j++)
			rnd_cidr(r, p->cidr[i][j], sizeof(p->cidr[i][j]));
		p->port[i] = rnd_next(r) % 3 ? 80 + rnd_next(r) % 4 : 0;
	}
}

/* The next version: some destinations and ports changed, rules added or
 * removed at the end (the names of the rules both have stay). */
static void pol_mutate(struct rnd *r, const struct pol *a, struct pol *b)
{
	*b = *a;
	for (unsigned int i = 0; i < b->nrules; i++) {
		if (rnd_next(r) % 3 == 0)
			rnd_cidr(r, b->cidr[i][0], sizeof(b->cidr[i][0]));
		if (rnd_next(r) % 6 == 0)
			b->port[i] = 80 + rnd_next(r) % 4;
	}
	if (rnd_next(r) % 2)
		b->nrules -= rnd_next(r) % 4;
	else
		for (unsigned int n = rnd_next(r) % 4; n && b->nrules < 64; n--) {
			unsigned int i = b->nrules++;

			b->ncidr[i] = 1;
			rnd_cidr(r, b->cidr[i][0], sizeof(b->cidr[i][0]));
			b->port[i] = 80;
		}
}

static void pol_compile(const struct pol *p, struct pol_set *set, struct compiled *c)
{
	static char text[65536];
	struct pol_diags d = { 0 };
	const struct pol_doc *docs[1];
	struct compile_input in = { 0 };
	char err[512];
	size_t off;

	off = (size_t)snprintf(text, sizeof(text),
			       "apiVersion: sluice.dev/v1alpha1\nkind: AgentPolicy\n"
			       "metadata: {name: p}\nspec:\n  selector: {cgroupPaths: [a]}\n"
			       "  dns: deny\n  egress:\n");
	for (unsigned int i = 0; i < p->nrules; i++) {
		off += (size_t)snprintf(text + off, sizeof(text) - off, "    - name: r%u\n      to: [", i);
		for (unsigned int j = 0; j < p->ncidr[i]; j++)
			off += (size_t)snprintf(text + off, sizeof(text) - off, "%s{cidr: %s}",
						j ? ", " : "", p->cidr[i][j]);
		off += (size_t)snprintf(text + off, sizeof(text) - off, "]\n");
		if (p->port[i])
			off += (size_t)snprintf(text + off, sizeof(text) - off,
						"      ports: [{port: %u}]\n", p->port[i]);
	}
	memset(set, 0, sizeof(*set));
	if (policy__parse_buf("t.yaml", text, off, set, &d))
		policy__print_diags(&d, stderr);
	policy__diags_free(&d);
	assert_int_equal(set->ndocs, 1);
	docs[0] = &set->docs[0];
	in.docs = docs;
	in.ndocs = 1;
	memset(c, 0, sizeof(*c));
	assert_int_equal(compile__build(&in, c, err, sizeof(err)), 0);
}

static void probes_for(struct rnd *r, const struct compiled *x, const struct compiled *y,
		       uint8_t (*pr)[SL_ADDR_LEN], size_t *n)
{
	const struct compiled *cs[2] = { x, y };

	*n = 0;
	/* each prefix's first, second and last address, then random ones */
	for (int s = 0; s < 2; s++)
		for (size_t i = 0; i < cs[s]->nentries && *n + 3 <= NPROBES / 2; i++) {
			const struct sl_lpm_key *k = &cs[s]->entries[i].key;
			unsigned int bits = k->prefixlen - SL_LPM_SET_BITS;
			uint32_t a, host = bits >= 128 ? 0 : (uint32_t)((1ULL << (128 - bits)) - 1);

			memcpy(&a, k->addr + 12, 4);
			a = ntohl(a);
			for (int v = 0; v < 3; v++) {
				uint32_t b = htonl(v == 0 ? a : v == 1 ? a + (host ? 1 : 0) : a | host);

				memcpy(pr[*n], k->addr, SL_ADDR_LEN);
				memcpy(pr[*n] + 12, &b, 4);
				(*n)++;
			}
		}
	while (*n < NPROBES) {
		uint32_t b = htonl(0x0a000000u | (rnd_next(r) & 0x1fffu));

		memset(pr[*n], 0, SL_ADDR_LEN);
		pr[*n][10] = pr[*n][11] = 0xff;
		memcpy(pr[*n] + 12, &b, 4);
		(*n)++;
	}
}

/* Replay PL on a model holding OLD (REVERSED: in the wrong order, the
 * control). The number of moments at which some probe got a result that
 * is neither OLD's nor NEW's; the final state is checked against NEW. */
static size_t replay(const struct dp_patch_plan *pl, const struct compiled *old,
		     const struct compiled *new, uint8_t (*pr)[SL_ADDR_LEN], size_t npr,
		     bool reversed)
{
	static struct model m, mo, mn;
	size_t bad = 0, nops = pl->nupd + pl->ndel;
	const struct sl_lpm_val *want_old[NPROBES], *want_new[NPROBES];

	model_from(&m, old);
	model_from(&mo, old);
	model_from(&mn, new);
	for (size_t p = 0; p < npr; p++) {
		want_old[p] = model_lookup(&mo, pr[p]);
		want_new[p] = model_lookup(&mn, pr[p]);
	}
	for (size_t op = 0; op < nops; op++) {
		/* the control: deletions first, shortest first, then writes
		 * shortest first */
		size_t i = reversed ? (op < pl->ndel ? op : nops - 1 - op) : op;
		bool is_del = reversed ? op < pl->ndel : op >= pl->nupd;

		if (is_del)
			model_del(&m, &pl->del_keys[reversed ? i : op - pl->nupd]);
		else
			model_put(&m, &pl->upd_keys[i], &pl->upd_vals[i]);
		for (size_t p = 0; p < npr; p++) {
			const struct sl_lpm_val *got = model_lookup(&m, pr[p]);

			if (!val_eq(got, want_old[p]) && !val_eq(got, want_new[p])) {
				bad++;
				break;
			}
		}
	}
	for (size_t p = 0; p < npr; p++)
		assert_true(val_eq(model_lookup(&m, pr[p]), want_new[p]));
	assert_int_equal(m.n, mn.n);
	return bad;
}

static void test_plan_keeps_every_lookup_old_or_new(void **state)
{
	static uint8_t pr[NPROBES][SL_ADDR_LEN];
	struct rnd r = { .s = 0x5111ce };
	size_t control_bad = 0, total_ops = 0;

	(void)state;
	for (int trial = 0; trial < 60; trial++) {
		static struct pol a, b;
		struct pol_set sa, sb;
		struct compiled ca, cb;
		struct dp_set_state st;
		struct dp_patch_plan pl;
		size_t npr;

		pol_random(&r, &a);
		pol_mutate(&r, &a, &b);
		pol_compile(&a, &sa, &ca);
		pol_compile(&b, &sb, &cb);
		assert_int_equal(datapath__set_state(&ca, &st), 0);
		assert_int_equal(st.nentries, ca.nentries);
		assert_int_equal(st.nrules, ca.nrules);
		assert_int_equal(datapath__patch_plan(&st, &cb, SET_ID, &pl), 0);
		/* writes longest first, deletions shortest first */
		for (size_t i = 1; i < pl.nupd; i++)
			assert_true(pl.upd_keys[i - 1].prefixlen >= pl.upd_keys[i].prefixlen);
		for (size_t i = 1; i < pl.ndel; i++)
			assert_true(pl.del_keys[i - 1].prefixlen <= pl.del_keys[i].prefixlen);
		probes_for(&r, &ca, &cb, pr, &npr);
		assert_int_equal(replay(&pl, &ca, &cb, pr, npr, false), 0);
		control_bad += replay(&pl, &ca, &cb, pr, npr, true);
		total_ops += pl.nupd + pl.ndel;
		datapath__patch_plan_free(&pl);
		datapath__set_state_free(&st);
		compile__free(&ca);
		compile__free(&cb);
		policy__set_free(&sa);
		policy__set_free(&sb);
	}
	/* the same changes in the wrong order do show other verdicts: the
	 * replay can tell */
	assert_true(total_ops > 100);
	assert_true(control_bad > 0);
}

/* Nothing changed: nothing to write. Only a changed value is written. */
static void test_plan_writes_only_the_difference(void **state)
{
	struct rnd r = { .s = 7 };
	static struct pol a, b;
	struct pol_set sa, sb;
	struct compiled ca, cb;
	struct dp_set_state st;
	struct dp_patch_plan pl;

	(void)state;
	pol_random(&r, &a);
	pol_compile(&a, &sa, &ca);
	assert_int_equal(datapath__set_state(&ca, &st), 0);
	assert_int_equal(datapath__patch_plan(&st, &ca, SET_ID, &pl), 0);
	assert_int_equal(pl.nupd, 0);
	assert_int_equal(pl.ndel, 0);
	datapath__patch_plan_free(&pl);

	/* one rule's port: the entries under its prefixes change, no more */
	b = a;
	b.ncidr[0] = 1;
	snprintf(b.cidr[0][0], sizeof(b.cidr[0][0]), "10.9.9.9/32");
	b.port[0] = 4242;
	pol_compile(&b, &sb, &cb);
	assert_int_equal(datapath__patch_plan(&st, &cb, SET_ID, &pl), 0);
	assert_true(pl.nupd >= 1);
	assert_true(pl.nupd + pl.ndel < ca.nentries + cb.nentries);
	for (size_t i = 0; i < pl.nupd; i++)
		assert_int_equal(pl.upd_keys[i].set_id, htonl(SET_ID));
	datapath__patch_plan_free(&pl);

	/* to and from an empty set: everything written, everything deleted */
	{
		struct compiled empty = { 0 };
		struct dp_set_state est;

		assert_int_equal(datapath__patch_plan(&st, &empty, SET_ID, &pl), 0);
		assert_int_equal(pl.nupd, 0);
		assert_int_equal(pl.ndel, ca.nentries);
		datapath__patch_plan_free(&pl);
		assert_int_equal(datapath__set_state(&empty, &est), 0);
		assert_true(est.valid);
		assert_int_equal(datapath__patch_plan(&est, &ca, SET_ID, &pl), 0);
		assert_int_equal(pl.nupd, ca.nentries);
		assert_int_equal(pl.ndel, 0);
		datapath__patch_plan_free(&pl);
		datapath__set_state_free(&est);
	}

	/* an entry that is not a prefix of this map is refused, not indexed */
	{
		uint32_t good = cb.entries[0].key.prefixlen;

		cb.entries[0].key.prefixlen = SL_LPM_SET_BITS - 1;
		assert_int_equal(datapath__patch_plan(&st, &cb, SET_ID, &pl), -EINVAL);
		cb.entries[0].key.prefixlen = SL_LPM_SET_BITS + 129;
		assert_int_equal(datapath__patch_plan(&st, &cb, SET_ID, &pl), -EINVAL);
		cb.entries[0].key.prefixlen = good;
	}

	/* an unknown state cannot be patched */
	datapath__set_state_free(&st);
	assert_int_equal(datapath__patch_plan(&st, &cb, SET_ID, &pl), -ENOENT);
	compile__free(&ca);
	compile__free(&cb);
	policy__set_free(&sa);
	policy__set_free(&sb);
}

/* A patch keeps rule ids: the rules both versions have must keep their
 * names. Added at the end: kept. Renamed, reclassed or shifted: not. */
static void test_rules_kept(void **state)
{
	struct rnd r = { .s = 99 };
	static struct pol a, b;
	struct pol_set sa, sb;
	struct compiled ca, cb;
	struct dp_set_state st;

	(void)state;
	pol_random(&r, &a);
	pol_compile(&a, &sa, &ca);
	assert_int_equal(datapath__set_state(&ca, &st), 0);
	assert_true(datapath__rules_kept(&st, &ca));

	b = a;					/* one more rule at the end */
	b.ncidr[b.nrules] = 1;
	snprintf(b.cidr[b.nrules][0], sizeof(b.cidr[0][0]), "10.9.9.9/32");
	b.port[b.nrules++] = 80;
	pol_compile(&b, &sb, &cb);
	assert_true(datapath__rules_kept(&st, &cb));
	compile__free(&cb);
	policy__set_free(&sb);

	b = a;					/* the last rule gone */
	b.nrules--;
	pol_compile(&b, &sb, &cb);
	assert_true(datapath__rules_kept(&st, &cb));
	compile__free(&cb);
	policy__set_free(&sb);

	/* a rule renamed: its id would name another rule */
	cb = ca;
	cb.rules = calloc(ca.nrules, sizeof(*cb.rules));
	assert_non_null(cb.rules);
	memcpy(cb.rules, ca.rules, ca.nrules * sizeof(*cb.rules));
	snprintf(cb.rules[1].meta.rule, sizeof(cb.rules[1].meta.rule), "r1b");
	assert_false(datapath__rules_kept(&st, &cb));
	assert_int_equal(datapath__set_patch(NULL, 1, &st, &cb, "p", NULL), -ESTALE);
	assert_true(st.valid);
	memcpy(cb.rules, ca.rules, ca.nrules * sizeof(*cb.rules));
	cb.rules[2].meta.class = (uint8_t)(cb.rules[2].meta.class + 1);
	assert_false(datapath__rules_kept(&st, &cb));
	memcpy(cb.rules, ca.rules, ca.nrules * sizeof(*cb.rules));
	snprintf(cb.rules[0].meta.policy, sizeof(cb.rules[0].meta.policy), "other/p");
	assert_false(datapath__rules_kept(&st, &cb));
	free(cb.rules);

	datapath__set_state_free(&st);
	assert_false(datapath__rules_kept(&st, &ca));
	compile__free(&ca);
	policy__set_free(&sa);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plan_keeps_every_lookup_old_or_new),
		cmocka_unit_test(test_plan_writes_only_the_difference),
		cmocka_unit_test(test_rules_kept),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
