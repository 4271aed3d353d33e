/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Policy documents -> the map entries of one policy set. */
#ifndef SLUICE_COMPILE_H
#define SLUICE_COMPILE_H

#include <stddef.h>
#include <stdint.h>
#include <linux/types.h>
#include "sluice/sluice.h"
#include "policy.h"

/* One address an fqdn resolved to, as handed to the compiler. */
struct compile_addr {
	uint8_t addr[SL_ADDR_LEN];	/* v4 stored v4-mapped */
	int is_v4;
};

/* Resolver hook: fill *out (malloc'd array) with the current addresses of
 * NAME (including those kept for the grace period); return 0 or -errno.
 * An empty answer is not an error: the rule then matches nothing. */
typedef int (*compile_resolve_fn)(void *ctx, const char *fqdn,
				  struct compile_addr **out, size_t *n);

/* Service resolver (Kubernetes mode): the ClusterIPs and the endpoint
 * addresses of service NAMESPACE/NAME; 0 with n == 0 if unknown. */
typedef int (*compile_service_fn)(void *ctx, const char *ns, const char *name,
				  struct compile_addr **out, size_t *n);

struct compile_input {
	const struct pol_doc *const *docs;	/* the docs that select the workload */
	size_t ndocs;
	/* DNS servers (v4-mapped) allowed on port 53 tcp+udp with class dns
	 * unless a selecting doc says spec.dns: deny. */
	const struct compile_addr *resolvers;
	size_t nresolvers;
	compile_resolve_fn resolve;		/* may be NULL: fqdn rules then fail */
	void *resolve_ctx;
	/* may be NULL: service destinations are then skipped and counted in
	 * compiled.nskipped_services */
	compile_service_fn resolve_service;
	void *service_ctx;
};

/* One LPM entry; key.set_id is left 0: the applier fills it in. */
struct compile_entry {
	struct sl_lpm_key key;
	struct sl_lpm_val val;
};

/* The id of a set's I-th rule: ids are dense from SL_RULE_FIRST, so that a
 * set's names are found (and deleted) from its rule count alone. */
#define COMPILE_RULE_ID(i) ((uint32_t)SL_RULE_FIRST + (uint32_t)(i))

/* One rule id's names; rule ids are COMPILE_RULE_ID(index). */
struct compile_rule {
	uint32_t rule_id;
	struct sl_rule_meta meta;
};

/* An address that came from an fqdn, with the names (comma separated). */
struct compile_fqdn {
	uint8_t addr[SL_ADDR_LEN];
	char names[128];
};

struct compiled {
	struct compile_entry *entries;
	size_t nentries;
	struct compile_rule *rules;
	size_t nrules;
	struct compile_fqdn *fqdns;
	size_t nfqdns;
	uint32_t flags;			/* SL_IDF_AUDIT if every selecting doc is audit
					 * (enforce wins; see compile.c) */
	size_t nskipped_services;	/* service peers left out: they need
					 * --kubernetes; the caller may warn */
};

/* Build the entries of one set from IN. Returns 0, or -errno with a
 * message in ERR (e.g. more than SL_MAX_PORT_ENTRIES port entries under
 * one prefix, naming the prefix and the rules). */
int compile__build(const struct compile_input *in, struct compiled *out,
		   char *err, size_t errlen);
void compile__free(struct compiled *c);

#endif
