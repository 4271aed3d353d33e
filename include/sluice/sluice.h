/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The whole kernel/user contract of sluice: map keys and values, event
 * records and the enums they carry. Included by the BPF sources (after
 * vmlinux.h) and by user/ (after <linux/types.h>). Nothing here may depend
 * on anything beyond the basic __u8.._u64 types; every struct has explicit
 * padding and a size assert so that both sides agree byte for byte.
 */
#ifndef SLUICE_SLUICE_H
#define SLUICE_SLUICE_H

#ifndef __bpf__
#include <linux/types.h>	/* the BPF side has them from vmlinux.h */
#endif

#define SL_ADDR_LEN		16
/* Port entries stored inline in one LPM value: every rule whose prefix
 * covers the entry's prefix is folded in by the compiler, so one lookup
 * decides. The compiler rejects a policy set that needs more. */
#define SL_MAX_PORT_ENTRIES	16
/* Bound on the ancestor walk from a cgroup to its nearest registered
 * ancestor. Kubernetes pod containers sit at level 4-5. */
#define SL_MAX_CGROUP_DEPTH	16
/* Event rings: slot 0 is the node daemon's, the others belong to
 * `sluice run` instances, each reading only its own workload's events. */
#define SL_MAX_RINGS		64
#define SL_RING_SIZE		(1U << 21)	/* 2 MiB per ring */
/* The programs wake a reader only when its ring is 1/8 full: readers poll
 * at least this often. */
#define SL_READER_POLL_MS	10
#define SL_NAME_LEN		64
#define SL_COMM_LEN		16
#define SL_MAX_IDENTITIES	65536
#define SL_MAX_LPM_ENTRIES	262144
#define SL_MAX_RULES		262144
#define SL_MAX_SETS		4096

/* prefixlen of an LPM key counts the set id too: 32 + address bits, with
 * IPv4 stored v4-mapped (::ffff:a.b.c.d), so an IPv4 /8 is 32 + 96 + 8. */
#define SL_LPM_SET_BITS		32
#define SL_LPM_V4_BASE		(SL_LPM_SET_BITS + 96)

enum sl_verdict {
	SL_VERDICT_ALLOW	= 0,
	SL_VERDICT_DENY		= 1,
	SL_VERDICT_AUDIT	= 2,	/* would be denied; allowed: mode audit */
};

enum sl_event_type {
	SL_EV_SOCK_CREATE	= 1,
	SL_EV_CONNECT		= 2,
	SL_EV_SENDMSG		= 3,
	SL_EV_ESTABLISHED	= 4,
	SL_EV_CLOSE		= 5,
};

enum sl_class {
	SL_CLASS_NONE		= 0,
	SL_CLASS_LLM		= 1,
	SL_CLASS_TOOL		= 2,
	SL_CLASS_AGENT		= 3,
	SL_CLASS_GATEWAY	= 4,
	SL_CLASS_DNS		= 5,
	SL_CLASS_OTHER		= 6,
	SL_CLASS_MAX,
};

enum sl_action {
	SL_ACTION_ALLOW		= 0,
	SL_ACTION_DENY		= 1,	/* ClusterAgentPolicy egressDeny: beats allows */
};

/* Rule ids below SL_RULE_FIRST are reserved and carry no sl_rmeta entry. */
enum sl_rule_id {
	SL_RULE_DEFAULT_DENY	= 0,	/* nothing matched */
	SL_RULE_LOOPBACK	= 1,	/* loopback inside the workload's own netns */
	SL_RULE_UNGOVERNED	= 2,	/* no identity: observe-all only */
	SL_RULE_RAW_SOCKET	= 3,	/* sock_create of a raw socket refused */
	SL_RULE_INBOUND		= 4,	/* accepted connection: no egress verdict */
	SL_RULE_FIRST		= 16,
};

/* sl_identity.flags */
#define SL_IDF_AUDIT		(1U << 0)	/* mode audit: report, never refuse */
#define SL_IDF_DAEMON		(1U << 1)	/* registered by sluiced (reconciled on restart) */
#define SL_IDF_KERNEL		(1U << 2)	/* registered by sl_cgroup_mkdir from a glob */

enum sl_counter {
	SL_CNT_ALLOW = 0,
	SL_CNT_DENY,
	SL_CNT_AUDIT,
	SL_CNT_SOCK_DENY,	/* raw sockets refused */
	SL_CNT_ESTABLISHED,
	SL_CNT_CLOSE,
	SL_CNT_EV_LOST_FULL,	/* ring reservation failed: reader too slow */
	SL_CNT_EV_LOST_NORING,	/* identity's ring slot has no ring */
	SL_CNT_TAG_FAIL,	/* socket storage could not be created */
	SL_CNT_MAX,
};
/* sl_counters is indexed by ring * SL_CNT_MAX + counter, so every reader
 * can check its own events against its own counters. */
#define SL_COUNTERS_SIZE	(SL_MAX_RINGS * SL_CNT_MAX)

/* Protocol numbers as in IPPROTO_*; 0 in a port entry matches any. */
#define SL_PROTO_ANY		0
#define SL_PROTO_TCP		6
#define SL_PROTO_UDP		17
#define SL_PROTO_SCTP		132

/* sl_rules (LPM trie) key */
struct sl_lpm_key {
	__u32 prefixlen;
	__u32 set_id;		/* big-endian: it is part of the matched prefix */
	__u8 addr[SL_ADDR_LEN];
};

struct sl_port_entry {
	__u16 port_lo;		/* host order; 0..65535 with port_hi for ranges */
	__u16 port_hi;
	__u8 proto;		/* SL_PROTO_* */
	__u8 action;		/* enum sl_action */
	__u8 class;		/* enum sl_class */
	__u8 _pad;
	__u32 rule_id;		/* sl_rmeta key with the set id */
};

struct sl_lpm_val {
	__u32 n;		/* entries used */
	__u32 _pad;
	struct sl_port_entry e[SL_MAX_PORT_ENTRIES];
};

/* sl_ident: cgroup id (the registered cgroup) -> identity */
struct sl_identity {
	__u32 set_id;		/* host order; 0 = registered but no rules */
	__u32 flags;		/* SL_IDF_* */
	__u32 ring;		/* slot in sl_rings for its events */
	__u32 owner_pid;	/* process that registered it (informational) */
};

/* sl_sk (socket-local storage, BPF_F_CLONE so accepted sockets inherit it).
 * The process fields are those of the task that connected: sockops
 * callbacks often run in softirq context where "current" is anybody. */
struct sl_sk_tag {
	__u64 ident_cgid;	/* registered cgroup the socket belongs to */
	__u64 cgroup_id;	/* task's cgroup at connect */
	__u64 est_ns;		/* established time, for close duration */
	__u64 acked_base;	/* bytes_acked at established (the SYN) */
	__u64 recv_base;	/* bytes_received at established */
	__u32 state;		/* SL_SKS_* */
	__u32 pid;
	__u32 tid;
	__u32 uid;
	char comm[SL_COMM_LEN];
	__u32 set_id;		/* the verdict at connect, for lifecycle records */
	__u32 rule_id;
	__u8 class;
	__u8 _pad[7];
};
#define SL_SKS_TRACKED		(1U << 0)	/* established event sent */
#define SL_SKS_FIN_OUT		(1U << 1)	/* we sent a FIN */
#define SL_SKS_FIN_IN		(1U << 2)	/* peer's FIN received */
#define SL_SKS_FIN_ACKED	(1U << 3)	/* our FIN was acknowledged */
#define SL_SKS_PASSIVE		(1U << 4)	/* accepted, not connected */

/* sl_rmeta: {set, rule} -> names, so that any reader of the pins (status,
 * explain, another process's events) can name the deciding rule. */
struct sl_rmeta_key {
	__u32 set_id;
	__u32 rule_id;
};

struct sl_rule_meta {
	char policy[SL_NAME_LEN];	/* "namespace/name" or "name" */
	char rule[SL_NAME_LEN];
	__u8 class;
	__u8 action;
	__u8 _pad[6];
};

/* sl_sets: set id -> who owns it */
struct sl_set_info {
	__u32 owner_pid;
	__u32 nrules;
	__u64 nentries;
	__u64 created_ns;	/* CLOCK_MONOTONIC */
	char policies[128];	/* selecting policies, comma separated */
};

/* sl_fqdn: {set, addr} -> the names an address came from, for explain */
struct sl_fqdn_key {
	__u32 set_id;
	__u8 addr[SL_ADDR_LEN];
};

struct sl_fqdn_val {
	char names[128];	/* comma separated */
};

/* Ring buffer record, one per verdict or lifecycle step. */
struct sl_event {
	__u64 ts_ns;		/* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u64 cgroup_id;	/* the task's current cgroup */
	__u64 ident_cgid;	/* the identity that governed (0: none) */
	__u64 cookie;		/* socket cookie, equal in every hook */
	__u64 bytes_sent;	/* close: payload bytes */
	__u64 bytes_received;
	__u64 duration_ns;	/* close: established -> close */
	__u32 pid;
	__u32 tid;
	__u32 uid;
	__u32 set_id;
	__u32 rule_id;
	__u16 sport;		/* host order */
	__u16 dport;		/* host order */
	__u8 type;		/* enum sl_event_type */
	__u8 verdict;		/* enum sl_verdict */
	__u8 family;		/* AF_INET or AF_INET6 of the socket */
	__u8 protocol;		/* IPPROTO_* */
	__u8 class;		/* enum sl_class */
	__u8 audit;		/* identity in audit mode */
	__u8 sock_type;		/* SOCK_* (sock_create) */
	__u8 _pad;
	__u8 saddr[SL_ADDR_LEN];	/* v4 as v4-mapped */
	__u8 daddr[SL_ADDR_LEN];
	char comm[SL_COMM_LEN];
};

/* sl_globs: cgroup id of a parent -> patterns for its direct children.
 * A cgroup created below the parent whose name is PREFIX*SUFFIX gets the
 * pattern's identity from the kernel at mkdir time, before any process can
 * be put in it; userspace confirms or corrects it afterwards. */
#define SL_GLOB_PART_LEN	32
#define SL_MAX_GLOBS		4
#define SL_NAME_MAX		128	/* power of 2; longer cgroup names never match */

struct sl_glob {
	char prefix[SL_GLOB_PART_LEN];
	char suffix[SL_GLOB_PART_LEN];
	__u8 plen;
	__u8 slen;
	__u8 _pad[6];
	struct sl_identity ident;
};

struct sl_globs {
	__u32 n;		/* patterns used, most specific first */
	__u32 _pad;
	struct sl_glob g[SL_MAX_GLOBS];
};

/* sl_names: exact cgroup name -> identity, for cgroups announced before
 * they exist (a pod's cgroup is named after its UID, and the API server
 * tells of a pod before the kubelet creates its cgroup). Checked by
 * sl_cgroup_mkdir before the glob patterns. */
struct sl_name_key {
	char name[SL_NAME_MAX];	/* NUL-padded */
};

/* sl_meta[0]: what the pinned datapath is attached to, for adopters. */
struct sl_meta {
	__u64 attach_cgid;	/* cgroup the programs are attached to */
	__u64 loaded_realtime_ns;
	__u32 abi;		/* SL_ABI_VERSION of the loader */
	__u32 loader_pid;
	__u32 observe_all;	/* events for ungoverned sockets into ring 0 */
	__u32 _pad;
};
#define SL_ABI_VERSION		4

/* Request and answer of the test-run program sl_explain, carried at
 * SL_EXPLAIN_OFF in the test packet: userspace fills the request, the kernel
 * runs the same helpers as connect4/6 against the live maps and writes the
 * answer back. */
#define SL_EXPLAIN_OFF		14	/* after a dummy Ethernet header */
struct sl_explain_ctx {
	/* in */
	__u64 cgids[SL_MAX_CGROUP_DEPTH];	/* cgroup, parent, ... (0-terminated) */
	__u8 addr[SL_ADDR_LEN];			/* v4 as v4-mapped */
	__u16 port;
	__u8 proto;
	__u8 own_netns;				/* 1: workload's own netns (pod) */
	/* out */
	__u8 governed;
	__u8 verdict;
	__u8 class;
	__u8 action;
	__u32 set_id;
	__u32 rule_id;
	__u32 flags;
	__u32 _pad;
	__u64 ident_cgid;
};
#ifndef __bpf__
_Static_assert(sizeof(struct sl_lpm_key) == 24, "sl_lpm_key");
_Static_assert(sizeof(struct sl_port_entry) == 12, "sl_port_entry");
_Static_assert(sizeof(struct sl_lpm_val) == 8 + 12 * SL_MAX_PORT_ENTRIES, "sl_lpm_val");
_Static_assert(sizeof(struct sl_identity) == 16, "sl_identity");
_Static_assert(sizeof(struct sl_sk_tag) == 88, "sl_sk_tag");
_Static_assert(sizeof(struct sl_rmeta_key) == 8, "sl_rmeta_key");
_Static_assert(sizeof(struct sl_rule_meta) == 136, "sl_rule_meta");
_Static_assert(sizeof(struct sl_set_info) == 152, "sl_set_info");
_Static_assert(sizeof(struct sl_fqdn_key) == 20, "sl_fqdn_key");
_Static_assert(sizeof(struct sl_fqdn_val) == 128, "sl_fqdn_val");
_Static_assert(sizeof(struct sl_event) == 136, "sl_event");
#endif

#ifndef __bpf__
_Static_assert(sizeof(struct sl_meta) == 32, "sl_meta");
_Static_assert(sizeof(struct sl_glob) == 88, "sl_glob");
_Static_assert(sizeof(struct sl_name_key) == SL_NAME_MAX, "sl_name_key");
_Static_assert(sizeof(struct sl_globs) == 8 + 88 * SL_MAX_GLOBS, "sl_globs");
_Static_assert(sizeof(struct sl_explain_ctx) == 8 * SL_MAX_CGROUP_DEPTH + 48, "sl_explain_ctx");
#endif

#endif /* SLUICE_SLUICE_H */
