/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Which identity governs a socket or a task. */
#ifndef SL_BPF_IDENTITY_H
#define SL_BPF_IDENTITY_H

/*
 * The registered cgroup that governs the current task: its own cgroup or
 * the deepest registered ancestor. Registering a parent thus covers every
 * cgroup created below it from its first socket, with no userspace step.
 * Returns the registered cgroup id (0: ungoverned) and its identity.
 */
static __always_inline __u64 sl_ident_of_current(struct sl_identity **out)
{
	__u64 cg = bpf_get_current_cgroup_id();
	struct sl_identity *id;
	__u64 best = 0;

	id = bpf_map_lookup_elem(&sl_ident, &cg);
	if (id) {
		*out = id;
		return cg;
	}
	*out = NULL;
	for (int level = 0; level < SL_MAX_CGROUP_DEPTH; level++) {
		__u64 anc = bpf_get_current_ancestor_cgroup_id(level);

		if (!anc || anc == cg)
			break;
		id = bpf_map_lookup_elem(&sl_ident, &anc);
		if (id) {
			*out = id;
			best = anc;
		}
	}
	return best;
}

/* The identity a socket's tag names, if it is still registered. */
static __always_inline struct sl_identity *sl_ident_of_tag(const struct sl_sk_tag *tag)
{
	__u64 cg;

	if (!tag || !tag->ident_cgid)
		return NULL;
	cg = tag->ident_cgid;
	return bpf_map_lookup_elem(&sl_ident, &cg);
}

#endif
