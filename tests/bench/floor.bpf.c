// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The floor of sluice's design, for `make bench`: the tag that sluice gives
 * every socket of a governed cgroup (socket-local storage of the size of
 * struct sl_sk_tag, created in cgroup/sock_create and freed with the
 * socket), and a cgroup/connect4 program that allows at once: what the
 * kernel's run-time statistics charge any connect4 program. Whatever these
 * cost, sluice cannot cost less.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "sluice/sluice.h"

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
