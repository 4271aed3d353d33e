/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Every map of the datapath, pinned by name under the loader's pin root
 * so that a restarted or second loader adopts them instead of starting
 * over. Names are sl_* and at most 15 characters: the kernel cuts longer
 * ones, and bpftool shows the cut name. */
#ifndef SL_BPF_MAPS_H
#define SL_BPF_MAPS_H

/* cgroup id of a registered cgroup -> its identity. No prealloc: an
 * update swaps in a new element under RCU, so a concurrent reader sees the
 * old value or the new, never a recycled one. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SL_MAX_IDENTITIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct sl_identity);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_ident SEC(".maps");

/* {set, address prefix} -> port entries of every rule covering it. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, SL_MAX_LPM_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_lpm_key);
	__type(value, struct sl_lpm_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_rules SEC(".maps");

/* The identity each socket was created under. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct sl_sk_tag);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_sk SEC(".maps");

struct sl_ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, SL_RING_SIZE);
};

/* One ring per reader: slot 0 for the node daemon, others for each
 * `sluice run`, so two readers never consume each other's events. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, SL_MAX_RINGS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct sl_ring);
} sl_rings SEC(".maps");

/* Per-CPU counters, ring * SL_CNT_MAX + enum sl_counter. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SL_COUNTERS_SIZE);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_counters SEC(".maps");

/* Userspace-only bookkeeping, pinned with the rest so that any reader of
 * the pins can name rules, sets and fqdn answers. The programs never read
 * them; they are declared here so one object creates and pins them all. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SL_MAX_RULES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_rmeta_key);
	__type(value, struct sl_rule_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_rmeta SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SL_MAX_SETS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct sl_set_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_sets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SL_MAX_LPM_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_fqdn_key);
	__type(value, struct sl_fqdn_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_fqdn SEC(".maps");

/* Parent cgroup -> patterns of children the kernel registers at mkdir. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct sl_globs);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_globs SEC(".maps");

/* Exact cgroup name -> identity to give it at mkdir (announced pods). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_name_key);
	__type(value, struct sl_identity);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_names SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sl_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_meta SEC(".maps");

#endif
