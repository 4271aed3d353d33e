/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The decision itself: identity -> set -> prefix -> port entry. Shared by
 * the sock_addr entry points and the sl_explain test-run program, so
 * `sluice explain` runs this exact code against the live maps. */
#ifndef SL_BPF_VERDICT_H
#define SL_BPF_VERDICT_H

struct sl_decision {
	__u32 rule_id;
	__u8 verdict;		/* enum sl_verdict */
	__u8 class;
	__u8 action;
	__u8 _pad;
};

static __always_inline bool sl_addr_is_loopback(const __u8 *a)
{
	/* ::ffff:127.0.0.0/104 */
	if (a[10] == 0xff && a[11] == 0xff) {
		for (int i = 0; i < 10; i++)
			if (a[i])
				return false;
		return a[12] == 127;
	}
	/* ::1 */
	for (int i = 0; i < 15; i++)
		if (a[i])
			return false;
	return a[15] == 1;
}

static __always_inline bool sl_port_match(const struct sl_port_entry *e,
					  __u16 port, __u8 proto)
{
	if (e->proto != SL_PROTO_ANY && e->proto != proto)
		return false;
	return port >= e->port_lo && port <= e->port_hi;
}

/*
 * Longest-prefix match on {set, address}, then the first port entry that
 * matches. The compiler folds every covering rule into each prefix and puts
 * deny entries first, so the first match is the answer.
 */
static __always_inline void sl_decide(__u32 set_id, const __u8 *addr, __u16 port,
				      __u8 proto, bool audit, struct sl_decision *d)
{
	struct sl_lpm_key key = {
		.prefixlen = SL_LPM_SET_BITS + 128,
		.set_id = bpf_htonl(set_id),
	};
	struct sl_lpm_val *val;

	__builtin_memcpy(key.addr, addr, SL_ADDR_LEN);
	d->rule_id = SL_RULE_DEFAULT_DENY;
	d->class = SL_CLASS_NONE;
	d->action = SL_ACTION_DENY;

	val = set_id ? bpf_map_lookup_elem(&sl_rules, &key) : NULL;
	if (val) {
		for (int i = 0; i < SL_MAX_PORT_ENTRIES; i++) {
			const struct sl_port_entry *e = &val->e[i];

			if (i >= val->n)
				break;
			if (!sl_port_match(e, port, proto))
				continue;
			d->rule_id = e->rule_id;
			d->class = e->class;
			d->action = e->action;
			break;
		}
	}
	if (d->action == SL_ACTION_ALLOW)
		d->verdict = SL_VERDICT_ALLOW;
	else
		d->verdict = audit ? SL_VERDICT_AUDIT : SL_VERDICT_DENY;
}

#endif
