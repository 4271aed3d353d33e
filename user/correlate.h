/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Correlation: kernel flow records joined with gateway decision-log records
 * (design/gateway-and-agents.md, "What to join on"), and the findings the
 * join makes visible. Pure logic: no I/O, no clock reads, no printing; the
 * caller feeds kernel events, gateway records and the time.
 *
 * - Flow table: ESTABLISHED/CLOSE records of outgoing TCP flows whose
 *   destination is a gateway listener (rule class gateway, or an address
 *   given to correlate__gateway_addr()), keyed by the SOURCE ip:port, each
 *   with its lifetime [established, close]. A source port is reused over
 *   time, so a key keeps a few generations. Closed flows stay for a
 *   retention window so that late log lines still join; the table is
 *   bounded, evicting the oldest closed flows first (counted).
 * - correlate__gateway(): the flow whose source is the record's peer and
 *   whose lifetime holds the request start (end - duration), within a
 *   tolerance. A joined record is emitted as a "gateway" record with the
 *   kernel's workload, process, socket and policy; then the findings
 *   identity_mismatch and policy_drift are checked. A record that joins no
 *   flow waits (the established event may come after the log line) and
 *   becomes an "unattributed" finding once correlate__tick() passes its
 *   end time + tolerance without a flow turning up.
 * - correlate__connect(): a connect (or unconnected sendmsg) of an identity
 *   whose policy names a gateway, to a destination of class llm, tool or
 *   agent, or to an upstream the gateway itself was seen using (its
 *   "endpoint" / "upstream_host"), is a "bypass" finding, allowed or not.
 *
 * Times are CLOCK_REALTIME ns throughout: the caller converts the kernel's
 * monotonic ts_ns (events_render.mono_to_real_ns) before passing it in
 * corr_flow_meta.time_ns. Addresses are 16 bytes, IPv4 v4-mapped, as in
 * struct sl_event and struct gw_record.
 *
 * Results go to the emit callback given to correlate__new(), synchronously,
 * from inside the call that produced them; the record and everything it
 * points to are valid only during the callback. The callback must not call
 * back into the same correlator except for the render functions and
 * correlate__stats().
 */
#ifndef SLUICE_CORRELATE_H
#define SLUICE_CORRELATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <linux/types.h>
#include "sluice/sluice.h"

struct gw_record;
struct correlate;

enum corr_type {
	CORR_GATEWAY = 0,	/* a gateway record joined with its flow */
	CORR_FINDING = 1,
};

enum corr_finding {
	CORR_F_BYPASS = 0,
	CORR_F_IDENTITY_MISMATCH,
	CORR_F_UNATTRIBUTED,
	CORR_F_POLICY_DRIFT,
	CORR_F_MAX
};

/* What userspace knows about the workload of a kernel record. Strings may
 * be NULL or "" (unknown); they are copied (cut at internal bounds). */
struct corr_flow_meta {
	uint64_t time_ns;		/* the event's ts_ns as CLOCK_REALTIME */
	const char *cgroup;		/* workload cgroup path */
	const char *pod_namespace;	/* empty outside Kubernetes */
	const char *pod_name;
	const char *service_account;
	const char *policy;		/* governing policy, "ns/name" */
	const char *rule;		/* deciding rule */
	uint8_t class;			/* enum sl_class of the rule; 0: ev->class */
	bool has_gateway;		/* the identity's policies have a class gateway rule */
	bool tools_listed;		/* they list MCP tools; false: no drift check */
	const char *const *tools;	/* the allowed tools ("*": any) */
	size_t ntools;
};

/* The kernel side of a record, as rendered. Strings are never NULL ("" for
 * unknown). */
struct corr_flow_info {
	uint64_t cookie;
	uint64_t cgroup_id;
	uint64_t ident_cgid;
	uint64_t established_ns;	/* bypass: the connect's time */
	uint64_t close_ns;		/* 0: open */
	uint32_t pid;
	uint32_t uid;
	char comm[SL_COMM_LEN];
	uint8_t saddr[SL_ADDR_LEN];	/* unset for a connect */
	uint8_t daddr[SL_ADDR_LEN];
	uint16_t sport;
	uint16_t dport;
	uint8_t family;			/* AF_INET / AF_INET6 */
	uint8_t protocol;
	uint8_t type;			/* enum sl_event_type that created it */
	uint8_t verdict;		/* enum sl_verdict */
	uint8_t class;			/* enum sl_class */
	bool close_inferred;		/* close_ns taken from a later flow on the same 4-tuple */
	const char *node;		/* whose kernel saw it; NULL or "": this node */
	bool has_gateway;
	bool tools_listed;
	const char *cgroup;
	const char *pod_namespace;
	const char *pod_name;
	const char *service_account;
	const char *policy;
	const char *rule;
	const char *const *tools;
	size_t ntools;
};

/* One emitted record; see the top of the file for its lifetime. */
struct corr_record {
	enum corr_type type;
	enum corr_finding finding;	/* CORR_FINDING */
	uint64_t time_ns;		/* the gateway line's end time, or the connect's */
	const struct gw_record *gw;	/* NULL for bypass */
	const struct corr_flow_info *flow; /* joined flow, or the connect (bypass); NULL: unattributed */
	const char *detail;		/* finding: one sentence saying why */
	/* finding: bypass "class" | "upstream"; policy_drift "allowed_unlisted" |
	 * "refused_listed"; identity_mismatch "pod" | "cgroup" (what the claim
	 * was compared with) */
	const char *basis;
	/* identity_mismatch: the claim parsed, and what the kernel saw ("" unknown) */
	char claimed_namespace[64];
	char claimed_sa[256];
	char seen_namespace[64];
	char seen_name[256];		/* service account, or the cgroup-derived name */
};

typedef void (*corr_emit_fn)(void *ctx, const struct corr_record *rec);

struct corr_opts {
	const char *node;		/* "node" of rendered records */
	size_t max_flows;		/* flows kept, all generations */
	unsigned int generations;	/* flows kept per source ip:port */
	uint64_t retention_ns;		/* closed flows kept this long after close */
	uint64_t tolerance_ns;		/* request start vs flow lifetime; unattributed delay */
	size_t max_pending;		/* gateway records waiting for their flow */
	size_t max_upstreams;		/* learnt gateway upstream ip:port */
	uint64_t bypass_dedup_ns;	/* one bypass per {cgroup, dst, verdict} per window; 0: all */
	/* gw_record.identity_key whose value names a workload (e.g. "jwt.sub"):
	 * "system:serviceaccount:NS:SA", "NS/SA" or "SA". NULL: only SPIFFE
	 * ids (spiffe://TD/ns/NS/sa/SA, from any key) are compared. */
	const char *jwt_claim;
};

struct corr_stats {
	uint64_t flows;			/* tracked now */
	uint64_t flows_open;
	uint64_t flows_added;
	uint64_t evicted_closed;	/* table full */
	uint64_t evicted_open;		/* table full and no closed flow left */
	uint64_t expired;		/* closed longer than the retention */
	uint64_t superseded;		/* more generations of one ip:port than kept */
	uint64_t gateway_records;
	uint64_t joined;
	uint64_t joined_late;		/* of which after waiting */
	uint64_t unattributed;
	uint64_t pending;		/* waiting now */
	uint64_t pending_overflow;	/* declared before their time: queue full */
	uint64_t foreign;		/* peer outside the local prefixes: not ours */
	uint64_t findings[CORR_F_MAX];
	uint64_t bypass_suppressed;	/* within bypass_dedup_ns of an equal one */
	uint64_t identity_unchecked;	/* claim absent, unparsed or nothing to compare */
	uint64_t upstreams;		/* learnt now */
	uint64_t idents;		/* distinct workload descriptions held */
	uint64_t asked;			/* handed to the other nodes' daemons */
	uint64_t remote_joined;		/* of which one of them had the flow */
	uint64_t lookups;		/* lookups of this node's flows by other nodes */
	uint64_t lookups_found;
	uint64_t nomem;
};

void correlate__opts_default(struct corr_opts *o);
/* OPTS NULL: defaults. NULL and errno (EINVAL, ENOMEM) on failure. */
struct correlate *correlate__new(const struct corr_opts *opts, corr_emit_fn emit, void *ctx);
void correlate__free(struct correlate *c);

/* ADDR:PORT (port 0: any) is a gateway listener. 0, -ENOSPC. */
int correlate__gateway_addr(struct correlate *c, const uint8_t addr[SL_ADDR_LEN], uint16_t port);
/* Peers in ADDR/BITS (128-bit, IPv4 v4-mapped: /104 + v4 bits) are this
 * node's; a gateway record from any other peer belongs to another node's
 * daemon and is neither joined nor declared unattributed. None given:
 * every peer is local. 0, -EINVAL, -ENOSPC. */
int correlate__local_prefix(struct correlate *c, const uint8_t addr[SL_ADDR_LEN], unsigned int bits);
/* An address the gateway uses as upstream (e.g. an endpoint host name the
 * caller resolved; IP endpoints are learnt from the records). 0, -ENOMEM. */
int correlate__upstream_add(struct correlate *c, const uint8_t addr[SL_ADDR_LEN], uint16_t port);

/* ESTABLISHED and CLOSE records (others are ignored): 0, -ENOMEM, or
 * -EINVAL without META. */
int correlate__flow(struct correlate *c, const struct sl_event *ev, const struct corr_flow_meta *meta);
/* CONNECT and SENDMSG records (others are ignored): may emit a bypass.
 * 0, or -EINVAL without META. */
int correlate__connect(struct correlate *c, const struct sl_event *ev,
		       const struct corr_flow_meta *meta);

enum corr_status {
	CORR_JOINED = 0,	/* emitted as a gateway record (and findings) */
	CORR_PENDING,		/* waiting for its flow until tick passes end + tolerance */
	CORR_UNATTRIBUTED,	/* declared at once (the pending queue was full) */
	CORR_FOREIGN,		/* peer of another node: ignored (nobody to ask) */
	CORR_ASKED,		/* peer of another node: handed to the ask callback */
};

struct corr_result {
	enum corr_status status;
	const struct corr_flow_info *flow;	/* JOINED: valid until the next call on c */
	unsigned int findings;			/* 1 << enum corr_finding, emitted now */
	bool endpoint_is_name;			/* endpoint is host:port: resolve and upstream_add */
};

/* R->time_ns (the CRI line's time when the log has none) and the peer must
 * be set: -EINVAL otherwise. OUT may be NULL. 0. */
int correlate__gateway(struct correlate *c, const struct gw_record *r, struct corr_result *out);
/* Declare pending records whose end + tolerance is before NOW_NS, drop
 * closed flows past the retention. Call about once a second. */
void correlate__tick(struct correlate *c, uint64_t now_ns);

/* One JSON object, no newline, into BUF: the length, -ENOSPC if BUF is too
 * small, -EINVAL if REC is not of that type. */
int correlate__render_gateway(const struct correlate *c, const struct corr_record *rec, char *buf,
			      size_t len);
int correlate__render_finding(const struct correlate *c, const struct corr_record *rec, char *buf,
			      size_t len);
/* Either, by REC->type. */
int correlate__render(const struct correlate *c, const struct corr_record *rec, char *buf, size_t len);

/* Across nodes. A record whose peer is not local (correlate__local_prefix),
 * or that joined no local flow by its deadline, is offered to ASK before it
 * is declared unattributed. ASK returns 0 when it takes the record (it
 * copies it): the caller then ends it with correlate__remote_done(), from
 * any later call but not from inside ASK. Otherwise it is declared here. */
typedef int (*corr_ask_fn)(void *ctx, const struct gw_record *r);
void correlate__set_ask(struct correlate *c, corr_ask_fn ask, void *ctx);
/* The answer for an asked record: FI, the flow another node's daemon found
 * (FI->node names it), is joined and checked as a local flow is; NULL
 * makes it unattributed, WHY (or a default) saying who was asked. */
void correlate__remote_done(struct correlate *c, const struct gw_record *r,
			    const struct corr_flow_info *fi, const char *why);
/* Another node asks for this node's flow from ADDR:PORT whose lifetime
 * holds START_NS (within the tolerance). 0 with OUT filled (strings valid
 * until the next call on C), or -ENOENT. */
int correlate__lookup(struct correlate *c, const uint8_t addr[SL_ADDR_LEN], uint16_t port,
		      uint64_t start_ns, struct corr_flow_info *out);

void correlate__stats(const struct correlate *c, struct corr_stats *st);
const char *correlate__finding_name(enum corr_finding kind);	/* "bypass", ... */

#endif
