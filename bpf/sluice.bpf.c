// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sluice datapath: tag sockets with the identity of the cgroup that created
 * them, decide connect()/sendmsg() against that identity's policy set, and
 * report every verdict and every governed TCP flow's lifecycle.
 *
 * Entry points are thin; the logic lives in the lib/ headers.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "sluice/sluice.h"
#include "lib/maps.h"
#include "lib/identity.h"
#include "lib/verdict.h"
#include "lib/events.h"

#define AF_INET		2
#define AF_INET6	10
#define SOCK_DGRAM	2
#define SOCK_RAW	3
#define IPPROTO_ICMP	1
#define IPPROTO_ICMPV6	58

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline void sl_tag_task(struct sl_sk_tag *tag)
{
	sl_current_task(tag);
}

/*
 * Identity of a socket at connect/sendmsg time. The tag from sock_create
 * wins; a socket without a live tag (created before sluice loaded, or by an
 * ungoverned process and handed over with SCM_RIGHTS) is governed by the
 * task that uses it, and gets tagged now so its lifecycle is tracked too.
 */
static __always_inline __u64 sl_sock_ident(struct bpf_sock *sk, struct sl_identity **id,
					   struct sl_sk_tag **tagp)
{
	struct sl_sk_tag *tag = NULL;
	__u64 ident;

	if (sk)
		tag = bpf_sk_storage_get(&sl_sk, sk, 0, 0);
	*id = sl_ident_of_tag(tag);
	if (*id) {
		*tagp = tag;
		return tag->ident_cgid;
	}
	ident = sl_ident_of_current(id);
	if (ident && sk && !tag) {
		tag = bpf_sk_storage_get(&sl_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!tag)
			sl_count((*id)->ring, SL_CNT_TAG_FAIL);
	}
	if (ident && tag)
		tag->ident_cgid = ident;
	*tagp = tag;
	return ident;
}

static __always_inline int sl_sock_addr(struct bpf_sock_addr *ctx, const __u8 *daddr,
					__u16 dport, __u8 type)
{
	struct bpf_sock *sk = ctx->sk;
	struct sl_identity *id = NULL;
	struct sl_sk_tag *tag = NULL;
	struct sl_decision d = {};
	struct sl_event *ev;
	bool tagged = false;
	void *rb;
	__u32 ring, set_id = 0;
	__u8 proto = ctx->protocol;
	__u64 ident;

	ident = sl_sock_ident(sk, &id, &tag);
	if (!id) {
		__u32 zero = 0;
		struct sl_meta *meta = bpf_map_lookup_elem(&sl_meta, &zero);

		if (!meta || !meta->observe_all)
			return 1;
		ring = 0;
		d.verdict = SL_VERDICT_ALLOW;
		d.rule_id = SL_RULE_UNGOVERNED;
		d.action = SL_ACTION_ALLOW;
	} else if (sl_addr_is_loopback(daddr) &&
		   bpf_get_netns_cookie(ctx) != bpf_get_netns_cookie(NULL)) {
		/* A pod talking to itself or its sidecar is not egress. */
		ring = id->ring;
		d.verdict = SL_VERDICT_ALLOW;
		d.rule_id = SL_RULE_LOOPBACK;
		d.action = SL_ACTION_ALLOW;
	} else {
		ring = id->ring;
		set_id = id->set_id;
		sl_decide(set_id, daddr, dport, proto, id->flags & SL_IDF_AUDIT, &d);
	}

	if (tag && type == SL_EV_CONNECT) {
		sl_tag_task(tag);
		tag->set_id = set_id;
		tag->rule_id = d.rule_id;
		tag->class = d.class;
		tagged = true;
	}
	sl_count(ring, sl_verdict_counter(d.verdict));

	ev = sl_event_reserve(ring, &rb);
	if (ev) {
		if (tagged)
			sl_event_task_of_tag(ev, tag);
		else
			sl_event_task(ev);
		ev->type = type;
		ev->verdict = d.verdict;
		ev->rule_id = d.rule_id;
		ev->class = d.class;
		ev->set_id = set_id;
		ev->ident_cgid = ident;
		ev->audit = id ? !!(id->flags & SL_IDF_AUDIT) : 0;
		ev->cookie = bpf_get_socket_cookie(ctx);
		ev->family = ctx->family;	/* the socket's family */
		ev->protocol = proto;
		ev->dport = dport;
		__builtin_memcpy(ev->daddr, daddr, SL_ADDR_LEN);
		sl_event_submit(ev, rb);
	}
	return d.verdict == SL_VERDICT_DENY ? 0 : 1;
}

static __always_inline int sl_sock_addr4(struct bpf_sock_addr *ctx, __u8 type)
{
	__u8 daddr[SL_ADDR_LEN];

	sl_v4_mapped(daddr, ctx->user_ip4);
	return sl_sock_addr(ctx, daddr, bpf_ntohs((__u16)ctx->user_port), type);
}

static __always_inline int sl_sock_addr6(struct bpf_sock_addr *ctx, __u8 type)
{
	__u32 daddr[4];

	/* user_ip6 allows 4-byte loads only */
	daddr[0] = ctx->user_ip6[0];
	daddr[1] = ctx->user_ip6[1];
	daddr[2] = ctx->user_ip6[2];
	daddr[3] = ctx->user_ip6[3];
	return sl_sock_addr(ctx, (__u8 *)daddr, bpf_ntohs((__u16)ctx->user_port), type);
}

SEC("cgroup/connect4")
int sl_connect4(struct bpf_sock_addr *ctx)
{
	return sl_sock_addr4(ctx, SL_EV_CONNECT);
}

SEC("cgroup/connect6")
int sl_connect6(struct bpf_sock_addr *ctx)
{
	return sl_sock_addr6(ctx, SL_EV_CONNECT);
}

SEC("cgroup/sendmsg4")
int sl_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sl_sock_addr4(ctx, SL_EV_SENDMSG);
}

SEC("cgroup/sendmsg6")
int sl_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sl_sock_addr6(ctx, SL_EV_SENDMSG);
}

/*
 * Sockets whose sends never meet a sock_addr hook: raw sockets, and ICMP
 * "ping" sockets (SOCK_DGRAM with IPPROTO_ICMP/ICMPV6, open to unprivileged
 * users through net.ipv4.ping_group_range), which carry any payload to any
 * host. A governed workload cannot have them.
 */
static __always_inline bool sl_sock_unhooked(struct bpf_sock *sk)
{
	if (sk->type == SOCK_RAW)
		return true;
	return sk->type == SOCK_DGRAM &&
	       (sk->protocol == IPPROTO_ICMP || sk->protocol == IPPROTO_ICMPV6);
}

/*
 * Tag every socket a governed cgroup creates, and refuse the ones that no
 * connect/sendmsg hook would ever see.
 */
SEC("cgroup/sock_create")
int sl_sock_create(struct bpf_sock *sk)
{
	struct sl_identity *id;
	struct sl_sk_tag *tag;
	struct sl_event *ev;
	__u8 verdict;
	__u64 ident;
	void *rb;

	ident = sl_ident_of_current(&id);
	if (!id)
		return 1;

	/* The task is written at connect, or at listen for the listener
	 * whose accepted sockets (clones of this tag) never connect: the
	 * helpers are not paid for every socket twice. */
	tag = bpf_sk_storage_get(&sl_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (tag)
		tag->ident_cgid = ident;
	else
		sl_count(id->ring, SL_CNT_TAG_FAIL);

	if (!sl_sock_unhooked(sk))
		return 1;

	verdict = (id->flags & SL_IDF_AUDIT) ? SL_VERDICT_AUDIT : SL_VERDICT_DENY;
	if (verdict == SL_VERDICT_DENY)
		sl_count(id->ring, SL_CNT_SOCK_DENY);
	sl_count(id->ring, sl_verdict_counter(verdict));
	ev = sl_event_reserve(id->ring, &rb);
	if (ev) {
		sl_event_task(ev);
		ev->type = SL_EV_SOCK_CREATE;
		ev->verdict = verdict;
		ev->rule_id = SL_RULE_RAW_SOCKET;
		ev->set_id = id->set_id;
		ev->ident_cgid = ident;
		ev->audit = !!(id->flags & SL_IDF_AUDIT);
		ev->cookie = bpf_get_socket_cookie(sk);
		ev->family = sk->family;
		ev->protocol = sk->protocol;
		ev->sock_type = sk->type;
		sl_event_submit(ev, rb);
	}
	return verdict == SL_VERDICT_DENY ? 0 : 1;
}

static __always_inline void sl_ops_addrs(struct bpf_sock_ops *ctx, struct sl_event *ev)
{
	__u32 rport;

	ev->family = ctx->family;
	ev->sport = (__u16)ctx->local_port;			/* host order */
	/* remote_port is the __be16 shifted into the upper half since
	 * kernel 5.x; older kernels left it in the lower. */
	rport = ctx->remote_port;
	ev->dport = bpf_ntohs((__u16)(rport >> 16 ? rport >> 16 : rport));
	if (ctx->family == AF_INET) {
		sl_v4_mapped(ev->saddr, ctx->local_ip4);
		sl_v4_mapped(ev->daddr, ctx->remote_ip4);
	} else {
		__u32 *s = (__u32 *)ev->saddr, *d = (__u32 *)ev->daddr;

		s[0] = ctx->local_ip6[0];
		s[1] = ctx->local_ip6[1];
		s[2] = ctx->local_ip6[2];
		s[3] = ctx->local_ip6[3];
		d[0] = ctx->remote_ip6[0];
		d[1] = ctx->remote_ip6[1];
		d[2] = ctx->remote_ip6[2];
		d[3] = ctx->remote_ip6[3];
	}
}

static __always_inline void sl_ops_event(struct bpf_sock_ops *ctx, struct sl_sk_tag *tag,
					 struct sl_identity *id, __u8 type)
{
	void *rb;
	struct sl_event *ev = sl_event_reserve(id->ring, &rb);

	if (!ev)
		return;
	ev->type = type;
	ev->verdict = SL_VERDICT_ALLOW;
	ev->ident_cgid = tag->ident_cgid;
	ev->set_id = tag->set_id;
	ev->rule_id = tag->rule_id;
	ev->class = tag->class;
	ev->cgroup_id = tag->cgroup_id;
	ev->pid = tag->pid;
	ev->tid = tag->tid;
	ev->uid = tag->uid;
	__builtin_memcpy(ev->comm, tag->comm, sizeof(ev->comm));
	ev->cookie = bpf_get_socket_cookie(ctx);
	ev->protocol = 6;
	/* sock_type carries the direction for lifecycle records */
	ev->sock_type = (tag->state & SL_SKS_PASSIVE) ? 1 : 0;
	sl_ops_addrs(ctx, ev);
	if (type == SL_EV_CLOSE) {
		__u64 acked = ctx->bytes_acked - tag->acked_base;
		__u64 rcvd = ctx->bytes_received - tag->recv_base;

		/* The FINs take a sequence number each and are counted. */
		if ((tag->state & SL_SKS_FIN_ACKED) && acked)
			acked--;
		if ((tag->state & SL_SKS_FIN_IN) && rcvd)
			rcvd--;
		ev->bytes_sent = acked;
		ev->bytes_received = rcvd;
		ev->duration_ns = ev->ts_ns - tag->est_ns;
	}
	sl_event_submit(ev, rb);
}

static __always_inline void sl_ops_established(struct bpf_sock_ops *ctx, bool passive)
{
	struct sl_identity *id;
	struct sl_sk_tag *tag;

	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return;
	tag = bpf_sk_storage_get(&sl_sk, sk, 0, 0);
	id = sl_ident_of_tag(tag);
	if (!id)
		return;
	tag->est_ns = bpf_ktime_get_ns();
	tag->acked_base = ctx->bytes_acked;
	tag->recv_base = ctx->bytes_received;
	tag->state = SL_SKS_TRACKED | (passive ? SL_SKS_PASSIVE : 0);
	if (passive) {
		/* no connect decided this socket */
		tag->set_id = id->set_id;
		tag->rule_id = SL_RULE_INBOUND;
		tag->class = SL_CLASS_NONE;
	}
	bpf_sock_ops_cb_flags_set(ctx, ctx->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
	sl_count(id->ring, SL_CNT_ESTABLISHED);
	sl_ops_event(ctx, tag, id, SL_EV_ESTABLISHED);
}

/* listen() runs in the listener's task: its accepted sockets report it. */
static __always_inline void sl_ops_listen(struct bpf_sock_ops *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct sl_sk_tag *tag;

	if (!sk)
		return;
	tag = bpf_sk_storage_get(&sl_sk, sk, 0, 0);
	if (tag && tag->ident_cgid)
		sl_tag_task(tag);
}

static __always_inline void sl_ops_state(struct bpf_sock_ops *ctx)
{
	__u32 old = ctx->args[0], new = ctx->args[1];
	struct sl_identity *id;
	struct sl_sk_tag *tag;

	struct bpf_sock *sk = ctx->sk;

	/* Most transitions of a connection change nothing we keep. */
	if (!sk || (new != BPF_TCP_CLOSE_WAIT && new != BPF_TCP_CLOSING &&
		    new != BPF_TCP_FIN_WAIT2 && new != BPF_TCP_CLOSE))
		return;
	tag = bpf_sk_storage_get(&sl_sk, sk, 0, 0);
	if (!tag || !(tag->state & SL_SKS_TRACKED))
		return;
	switch (new) {
	case BPF_TCP_CLOSE_WAIT:
	case BPF_TCP_CLOSING:
		tag->state |= SL_SKS_FIN_IN;
		break;
	case BPF_TCP_FIN_WAIT2:
		tag->state |= SL_SKS_FIN_ACKED;
		break;
	case BPF_TCP_CLOSE:
		/* FIN_WAIT2 ends in TIME_WAIT on the peer's FIN; LAST_ACK
		 * and CLOSING end when our FIN is acknowledged. */
		if (old == BPF_TCP_FIN_WAIT2)
			tag->state |= SL_SKS_FIN_IN;
		if (old == BPF_TCP_LAST_ACK || old == BPF_TCP_CLOSING)
			tag->state |= SL_SKS_FIN_ACKED;
		id = sl_ident_of_tag(tag);
		if (!id)
			break;
		sl_count(id->ring, SL_CNT_CLOSE);
		sl_ops_event(ctx, tag, id, SL_EV_CLOSE);
		tag->state = 0;
		break;
	}
}

SEC("sockops")
int sl_sockops(struct bpf_sock_ops *ctx)
{
	switch (ctx->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		sl_ops_established(ctx, false);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		sl_ops_established(ctx, true);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		sl_ops_state(ctx);
		break;
	case BPF_SOCK_OPS_TCP_LISTEN_CB:
		sl_ops_listen(ctx);
		break;
	}
	return 1;
}

/*
 * The flows a newly started reader cannot have seen: every socket whose tag
 * says its established record was sent and no close yet, written as the
 * ESTABLISHED record it had (time, task, verdict and addresses as then),
 * one struct sl_event per socket, to whoever reads the iterator. A
 * restarted sluiced joins gateway records of long-lived connections (HTTP/2,
 * SSE, keep-alive) opened before it with these.
 */
SEC("iter/bpf_sk_storage_map")
int sl_iter_flows(struct bpf_iter__bpf_sk_storage_map *ctx)
{
	struct sl_sk_tag *tag = ctx->value;
	struct sock *sk = ctx->sk;
	struct sl_event ev = {};

	if (!sk || !tag || !(tag->state & SL_SKS_TRACKED))
		return 0;
	ev.type = SL_EV_ESTABLISHED;
	ev.ts_ns = tag->est_ns;
	ev.verdict = SL_VERDICT_ALLOW;
	ev.ident_cgid = tag->ident_cgid;
	ev.set_id = tag->set_id;
	ev.rule_id = tag->rule_id;
	ev.class = tag->class;
	ev.cgroup_id = tag->cgroup_id;
	ev.pid = tag->pid;
	ev.tid = tag->tid;
	ev.uid = tag->uid;
	__builtin_memcpy(ev.comm, tag->comm, sizeof(ev.comm));
	ev.cookie = bpf_get_socket_cookie(sk);
	ev.protocol = 6;
	ev.sock_type = (tag->state & SL_SKS_PASSIVE) ? 1 : 0;
	ev.family = sk->__sk_common.skc_family;
	ev.sport = sk->__sk_common.skc_num;
	ev.dport = bpf_ntohs(sk->__sk_common.skc_dport);
	if (ev.family == AF_INET) {
		sl_v4_mapped(ev.saddr, sk->__sk_common.skc_rcv_saddr);
		sl_v4_mapped(ev.daddr, sk->__sk_common.skc_daddr);
	} else {
		__builtin_memcpy(ev.saddr, &sk->__sk_common.skc_v6_rcv_saddr, SL_ADDR_LEN);
		__builtin_memcpy(ev.daddr, &sk->__sk_common.skc_v6_daddr, SL_ADDR_LEN);
	}
	bpf_seq_write(ctx->meta->seq, &ev, sizeof(ev));
	return 0;
}

/* On hybrid hosts the v1 hierarchies fire the same tracepoints, with ids
 * numbered on their own that can equal a v2 cgroup's: only the default
 * (v2) hierarchy, id 0, is ours. */
static __always_inline bool sl_cgroup_is_v2(struct cgroup *cgrp)
{
	return BPF_CORE_READ(cgrp, root, hierarchy_id) == 0;
}

/* NAME (NUL-terminated, at most SL_NAME_MAX bytes) is PREFIX*SUFFIX. */
static __always_inline bool sl_glob_match(const char *name, __u32 len, const struct sl_glob *g)
{
	__u32 plen = g->plen, slen = g->slen;

	if (plen > SL_GLOB_PART_LEN || slen > SL_GLOB_PART_LEN || plen + slen > len)
		return false;
	for (__u32 i = 0; i < SL_GLOB_PART_LEN; i++) {
		if (i >= plen)
			break;
		if (name[i & (SL_NAME_MAX - 1)] != g->prefix[i])
			return false;
	}
	for (__u32 i = 0; i < SL_GLOB_PART_LEN; i++) {
		if (i >= slen)
			break;
		if (name[(len - slen + i) & (SL_NAME_MAX - 1)] != g->suffix[i])
			return false;
	}
	return true;
}

/*
 * A cgroup is being created. If its name was announced (sl_names), or its
 * parent has patterns and its name matches one, register it now: the
 * tracepoint fires before the directory is made visible, so no process can
 * be in it yet and its first socket already meets its policy.
 */
SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(sl_cgroup_mkdir, struct cgroup *cgrp, const char *path)
{
	struct sl_name_key nk = {};
	struct sl_identity *named;
	struct sl_globs *globs;
	__u64 parent, id;
	int len;

	if (!sl_cgroup_is_v2(cgrp))
		return 0;
	id = BPF_CORE_READ(cgrp, kn, id);
	len = bpf_probe_read_kernel_str(nk.name, sizeof(nk.name), BPF_CORE_READ(cgrp, kn, name));
	if (len <= 1 || len >= SL_NAME_MAX)
		return 0;
	named = bpf_map_lookup_elem(&sl_names, &nk);
	if (named) {
		bpf_map_update_elem(&sl_ident, &id, named, BPF_NOEXIST);
		return 0;
	}
	parent = BPF_CORE_READ(cgrp, self.parent, cgroup, kn, id);
	globs = bpf_map_lookup_elem(&sl_globs, &parent);
	if (!globs)
		return 0;
	len--;	/* without the NUL */
	for (int i = 0; i < SL_MAX_GLOBS; i++) {
		if (i >= globs->n)
			break;
		if (!sl_glob_match(nk.name, len, &globs->g[i]))
			continue;
		bpf_map_update_elem(&sl_ident, &id, &globs->g[i].ident, BPF_NOEXIST);
		break;
	}
	return 0;
}

/* A removed cgroup's identity goes with it: nothing grows without bound,
 * whoever registered it. */
SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(sl_cgroup_rmdir, struct cgroup *cgrp, const char *path)
{
	__u64 id;

	if (!sl_cgroup_is_v2(cgrp))
		return 0;
	id = BPF_CORE_READ(cgrp, kn, id);
	bpf_map_delete_elem(&sl_ident, &id);
	return 0;
}

/*
 * `sluice explain`: the same identity walk and decision as connect4/6, run
 * by BPF_PROG_TEST_RUN against the live maps. It is a tc program only
 * because syscall programs are sleepable and may not use LPM tries: the
 * request travels as the packet payload after a dummy Ethernet header and
 * the answer is written back into it. It is never attached.
 */
SEC("tc")
int sl_explain(struct __sk_buff *skb)
{
	struct sl_identity *id = NULL;
	struct sl_explain_ctx c;
	struct sl_decision d = {};
	__u64 cg = 0;

	if (bpf_skb_load_bytes(skb, SL_EXPLAIN_OFF, &c, sizeof(c)))
		return 2;
	for (int i = 0; i < SL_MAX_CGROUP_DEPTH; i++) {
		cg = c.cgids[i];
		if (!cg)
			break;
		id = bpf_map_lookup_elem(&sl_ident, &cg);
		if (id)
			break;
	}
	if (!id) {
		c.governed = 0;
		c.verdict = SL_VERDICT_ALLOW;
		c.rule_id = SL_RULE_UNGOVERNED;
		c.action = SL_ACTION_ALLOW;
	} else {
		c.governed = 1;
		c.ident_cgid = cg;
		c.set_id = id->set_id;
		c.flags = id->flags;
		if (c.own_netns && sl_addr_is_loopback(c.addr)) {
			d.verdict = SL_VERDICT_ALLOW;
			d.rule_id = SL_RULE_LOOPBACK;
			d.action = SL_ACTION_ALLOW;
		} else {
			sl_decide(id->set_id, c.addr, c.port, c.proto,
				  id->flags & SL_IDF_AUDIT, &d);
		}
		c.verdict = d.verdict;
		c.rule_id = d.rule_id;
		c.class = d.class;
		c.action = d.action;
	}
	if (bpf_skb_store_bytes(skb, SL_EXPLAIN_OFF, &c, sizeof(c), 0))
		return 2;
	return 0;
}
