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
 * code (bpf/lib/events.h), read as sluice's readers read (pipebench
 * drain), with no identity and no decision. floor_connect4_perf writes the
 * same record through the kernel's other transport, a perf event array
 * (per-CPU buffers, one copy), to show which one costs less.
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

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(int));
	__uint(value_size, sizeof(int));
} floor_perf SEC(".maps");

/* the record is built here, then copied into the perf buffer */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sl_event);
} floor_scratch SEC(".maps");

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

/* what sluice writes into an allowed connect's record */
static __always_inline void floor_fill(struct sl_event *ev, struct bpf_sock_addr *ctx)
{
	sl_event_task(ev);
	ev->type = SL_EV_CONNECT;
	ev->verdict = SL_VERDICT_ALLOW;
	ev->cookie = bpf_get_socket_cookie(ctx);
	ev->family = ctx->family;
	ev->protocol = ctx->protocol;
	ev->dport = bpf_ntohs((__u16)ctx->user_port);
	sl_v4_mapped(ev->daddr, ctx->user_ip4);
}

SEC("cgroup/connect4")
int floor_connect4_event(struct bpf_sock_addr *ctx)
{
	struct sl_event *ev;
	void *rb;

	ev = sl_event_reserve(0, &rb);
	if (!ev)
		return 1;
	floor_fill(ev, ctx);
	sl_event_submit(ev, rb);
	return 1;
}

SEC("cgroup/connect4")
int floor_connect4_perf(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	struct sl_event *ev = bpf_map_lookup_elem(&floor_scratch, &zero);

	if (!ev)
		return 1;
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ts_ns = bpf_ktime_get_ns();
	floor_fill(ev, ctx);
	if (bpf_perf_event_output(ctx, &floor_perf, BPF_F_CURRENT_CPU, ev, sizeof(*ev)))
		sl_count(0, SL_CNT_EV_LOST_FULL);
	return 1;
}
