/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The BPF datapath: load or adopt, attach, pin, and the map operations
 * everything else goes through. */
#ifndef SLUICE_DATAPATH_H
#define SLUICE_DATAPATH_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <linux/types.h>
#include "sluice/sluice.h"
#include "compile.h"

#define SLUICE_DEFAULT_PIN_PATH	"/sys/fs/bpf/sluice"
#define SLUICE_RUN_DIR		"/run/sluice"

enum dp_map {
	DP_IDENT, DP_RULES, DP_SK, DP_RINGS, DP_COUNTERS,
	DP_RMETA, DP_SETS, DP_FQDN, DP_GLOBS, DP_NAMES, DP_META, DP_MAP_N,
};

/* Program and link names as pinned: link_<name> and prog_explain. */
enum dp_prog {
	DP_SOCK_CREATE, DP_CONNECT4, DP_CONNECT6, DP_SENDMSG4, DP_SENDMSG6,
	DP_SOCKOPS,
	DP_CGROUP_MKDIR, DP_CGROUP_RMDIR,	/* tp_btf, not cgroup attachments */
	DP_PROG_ATTACHED_N,
};

struct datapath_opts {
	const char *pin_path;		/* NULL: SLUICE_DEFAULT_PIN_PATH */
	const char *cgroup_root;	/* absolute; NULL: the cgroup2 mount */
	bool observe_all;
	bool no_load;			/* adopt only; -ENOENT if not loaded */
	bool upgrade;			/* adopting: swap in this build's programs
					 * where they differ, without detaching */
};

struct datapath {
	char pin_path[PATH_MAX];
	char cgroup_root[PATH_MAX];
	int map_fd[DP_MAP_N];
	int explain_fd;
	int flows_fd;		/* the flow iterator program, or -1 */
	bool loaded_here;		/* we loaded the programs (vs adopted) */
	int upgraded;			/* programs replaced in place */
	bool keep;			/* release never tears down (the daemon's) */
	int users_fd;			/* shared flock while we use the pins */
	struct sluice_bpf *skel;
};

int datapath__open(struct datapath *dp, const struct datapath_opts *opts);
/* Drop our use; unless dp->keep, if nobody else uses the pins and no
 * identity is left, detach and unpin everything. */
void datapath__release(struct datapath *dp);
/* Detach and unpin everything at PIN_PATH, whoever uses it. */
int datapath__destroy(const char *pin_path);
bool datapath__pinned(const char *pin_path);

/* What a set holds in the kernel, kept by its writer so that the next
 * version can be written as the difference (datapath__set_patch) and the
 * set deleted without a walk of every set's entries (the trie holds them
 * all: 54 ms at 10k rules). Entries are packed in compile order, about 30
 * bytes each instead of the 268 of a key and value; rules' names are kept
 * as digests (8 bytes instead of 200). */
struct dp_set_state {
	bool valid;		/* false: unknown (adopted, or a patch failed) */
	uint8_t *ents;		/* per entry: bits, address, n, n port entries */
	size_t len;
	size_t nentries;
	uint32_t nrules;	/* names at COMPILE_RULE_ID(0 .. nrules - 1) */
	uint64_t *rule_digests;	/* of each rule's names (policy, rule, class, action) */
	uint8_t (*fqdns)[SL_ADDR_LEN];
	size_t nfqdns;
};

/* Entries a patch wrote and deleted. */
struct dp_patch_stats {
	size_t written;
	size_t deleted;
};

/* Write C as a new set; returns its id in *set_id. The set is not used by
 * anybody until an identity points at it. ST, if not NULL, is filled in
 * for datapath__set_patch() and datapath__set_del_state(). */
int datapath__set_add(struct datapath *dp, const struct compiled *c, const char *policies,
		      uint32_t *set_id, struct dp_set_state *st);
/* Do the rules ST and C both have (ids below both rule counts) keep their
 * names? Compared by a 64-bit digest of each rule's names. */
bool datapath__rules_kept(const struct dp_set_state *st, const struct compiled *c);
/* Bring SET_ID, as described by ST, to C in place: what changed is written,
 * longest prefixes first, then what went is deleted, shortest first, so a
 * lookup during the patch gets either the old or the new set's verdict.
 * -ESTALE if a rule both have changed its names (datapath__rules_kept): a
 * recorded rule id must keep naming the rule that decided. On any other
 * error ST is made unknown and the set is in some state between the two.
 * Either way the caller replaces the set with a new one. */
int datapath__set_patch(struct datapath *dp, uint32_t set_id, struct dp_set_state *st,
			const struct compiled *c, const char *policies,
			struct dp_patch_stats *stats);
/* The sl_rules writes and deletions that bring a set from ST to C, in the
 * order a patch applies them (writes longest prefix first, deletions
 * shortest first). Separate so that the order can be checked without a
 * kernel. 0, -ENOENT (ST unknown), -EINVAL (C not in compile order). */
struct dp_patch_plan {
	struct sl_lpm_key *upd_keys;
	struct sl_lpm_val *upd_vals;
	size_t nupd;
	struct sl_lpm_key *del_keys;
	size_t ndel;
};
int datapath__patch_plan(const struct dp_set_state *st, const struct compiled *c,
			 uint32_t set_id, struct dp_patch_plan *plan);
void datapath__patch_plan_free(struct dp_patch_plan *plan);
/* ST as datapath__set_add() would fill it in for C, without writing. */
int datapath__set_state(const struct compiled *c, struct dp_set_state *st);
/* Remove every entry of SET_ID (rules, names, info), found by a walk. */
int datapath__set_del(struct datapath *dp, uint32_t set_id);
/* The same, by the keys in ST (a walk if ST is NULL or unknown). */
int datapath__set_del_state(struct datapath *dp, uint32_t set_id, const struct dp_set_state *st);
void datapath__set_state_free(struct dp_set_state *st);
int datapath__ident_put(struct datapath *dp, uint64_t cgid, const struct sl_identity *id);
int datapath__ident_get(struct datapath *dp, uint64_t cgid, struct sl_identity *id);
int datapath__ident_del(struct datapath *dp, uint64_t cgid);
/* Every TCP flow the kernel has sent an ESTABLISHED record for and no
 * CLOSE yet, as that record (time, task, verdict, addresses as they were),
 * to FN; a non-zero return from FN stops. The count, or -ENOENT (a datapath
 * without the iterator), -errno. */
int datapath__flows(struct datapath *dp, int (*fn)(void *ctx, const struct sl_event *ev), void *ctx);
/* Create a ring buffer and put it in a free slot of sl_rings. */
int datapath__ring_add(struct datapath *dp, uint32_t *slot, int *ring_fd);
int datapath__ring_del(struct datapath *dp, uint32_t slot);
/* Sum of the per-CPU counters of RING. */
int datapath__counters(struct datapath *dp, uint32_t ring, uint64_t out[SL_CNT_MAX]);
int datapath__set_info(struct datapath *dp, uint32_t set_id, struct sl_set_info *info);
int datapath__rule_meta(struct datapath *dp, uint32_t set_id, uint32_t rule_id,
			struct sl_rule_meta *meta);
/* Run the kernel's own decision for C (see sl_explain in the BPF code). */
int datapath__explain(struct datapath *dp, struct sl_explain_ctx *c);
/* Remove identities whose registering process is gone and whose cgroup
 * is empty or gone, with their sets and rings. Returns how many. */
int datapath__gc(struct datapath *dp);

extern const char *const datapath_map_names[DP_MAP_N];
extern const char *const datapath_prog_names[DP_PROG_ATTACHED_N];

#endif
