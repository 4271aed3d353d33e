/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Counters and ring records. Every verdict is counted; every record that
 * cannot be written is counted as lost with its reason, per ring, so a
 * reader can check what it got against what the kernel produced. */
#ifndef SL_BPF_EVENTS_H
#define SL_BPF_EVENTS_H

static __always_inline void sl_count(__u32 ring, __u32 cnt)
{
	__u32 idx = ring * SL_CNT_MAX + cnt;
	__u64 *v;

	if (ring >= SL_MAX_RINGS)
		return;
	v = bpf_map_lookup_elem(&sl_counters, &idx);
	if (v)
		*v += 1;
}

static __always_inline __u32 sl_verdict_counter(__u8 verdict)
{
	switch (verdict) {
	case SL_VERDICT_ALLOW:
		return SL_CNT_ALLOW;
	case SL_VERDICT_AUDIT:
		return SL_CNT_AUDIT;
	default:
		return SL_CNT_DENY;
	}
}

/* Reserve a zeroed record in RING's ring buffer, or count the loss. */
static __always_inline struct sl_event *sl_event_reserve(__u32 ring, void **rbp)
{
	struct sl_event *ev;
	void *rb;

	rb = bpf_map_lookup_elem(&sl_rings, &ring);
	if (!rb) {
		sl_count(ring, SL_CNT_EV_LOST_NORING);
		return NULL;
	}
	ev = bpf_ringbuf_reserve(rb, sizeof(*ev), 0);
	if (!ev) {
		sl_count(ring, SL_CNT_EV_LOST_FULL);
		return NULL;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ts_ns = bpf_ktime_get_ns();
	*rbp = rb;
	return ev;
}

#define sl_current_task(p)						\
	do {								\
		__u64 __pid_tgid = bpf_get_current_pid_tgid();		\
									\
		(p)->pid = __pid_tgid >> 32;				\
		(p)->tid = (__u32)__pid_tgid;				\
		(p)->uid = (__u32)bpf_get_current_uid_gid();		\
		(p)->cgroup_id = bpf_get_current_cgroup_id();		\
		bpf_get_current_comm((p)->comm, sizeof((p)->comm));	\
	} while (0)

/*
 * Submit without waking the reader unless the ring is filling up: a wakeup
 * is an irq_work self-interrupt per event (a VM exit on most clouds) and
 * was a third of the connect cost. Readers poll every SL_READER_POLL_MS
 * anyway, so a record waits at most that long.
 */
/* RB: the ring sl_event_reserve() took EV from. */
static __always_inline void sl_event_submit(struct sl_event *ev, void *rb)
{
	__u64 flags = BPF_RB_NO_WAKEUP;

	if (bpf_ringbuf_query(rb, BPF_RB_AVAIL_DATA) > SL_RING_SIZE / 8)
		flags = BPF_RB_FORCE_WAKEUP;
	bpf_ringbuf_submit(ev, flags);
}

static __always_inline void sl_event_task(struct sl_event *ev)
{
	sl_current_task(ev);
}

/* The task the tag has just been given: the helpers are not called twice. */
static __always_inline void sl_event_task_of_tag(struct sl_event *ev, const struct sl_sk_tag *tag)
{
	ev->pid = tag->pid;
	ev->tid = tag->tid;
	ev->uid = tag->uid;
	ev->cgroup_id = tag->cgroup_id;
	__builtin_memcpy(ev->comm, tag->comm, sizeof(ev->comm));
}

static __always_inline void sl_v4_mapped(__u8 *dst, __u32 ip4_be)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &ip4_be, 4);
}

#endif
