// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The floor of sluice's design, for `make bench`: the tag that sluice gives
 * every socket of a governed cgroup (socket-local storage of the size of
 * struct sl_sk_tag, created in cgroup/sock_create and freed with the
 * socket), and a cgroup/connect4 program that allows at once: what the
 * kernel's run-time statistics charge any connect4 program. Whatever these
 * cost, sluice cannot cost less.
 *
 * floor_connect4_event adds what the event contract costs by itself: one
 * ring record per connect, reserved, filled and submitted by sluice's own
 * code (bpf/lib/events.h), read by a reader on the other CPU (pipebench
 * drain), with no identity and no decision.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "sluice/sluice.h"

/* the names bpf/lib/events.h uses, one ring */
struct floor_ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, SL_RING_SIZE);
} floor_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct floor_ring);
} sl_rings SEC(".maps") = {
	.values = { [0] = &floor_ring },
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SL_COUNTERS_SIZE);
	__type(key, __u32);
	__type(value, __u64);
} sl_counters SEC(".maps");

#include "lib/events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct sl_sk_tag);
} floor_sk SEC(".maps");

SEC("cgroup/sock_create")
int floor_sock_create(struct bpf_sock *sk)
{
	struct sl_sk_tag *tag = bpf_sk_storage_get(&floor_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);

	if (tag)
		tag->ident_cgid = 1;
	return 1;
}

SEC("cgroup/connect4")
int floor_connect4(struct bpf_sock_addr *ctx)
{
	return 1;
}

SEC("cgroup/connect4")
int floor_connect4_event(struct bpf_sock_addr *ctx)
{
	struct sl_event *ev;
	void *rb;

	ev = sl_event_reserve(0, &rb);
	if (!ev)
		return 1;
	sl_event_task(ev);
	ev->type = SL_EV_CONNECT;
	ev->verdict = SL_VERDICT_ALLOW;
	ev->cookie = bpf_get_socket_cookie(ctx);
	ev->family = ctx->family;
	ev->protocol = ctx->protocol;
	ev->dport = bpf_ntohs((__u16)ctx->user_port);
	sl_v4_mapped(ev->daddr, ctx->user_ip4);
	sl_event_submit(ev, rb);
	return 1;
}
