/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Pod -> cgroup. The kubelet names a pod's cgroup after its UID and QoS
 * class; the layout depends on the cgroup driver:
 *
 *   systemd:  kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<UID_>.slice
 *             kubepods.slice/kubepods-pod<UID_>.slice              (Guaranteed)
 *   cgroupfs: kubepods/burstable/pod<UID>, kubepods/pod<UID>       (Guaranteed)
 *
 * with UID_ the UID with '-' turned into '_'. Containers are cgroups below
 * it (cri-containerd-<id>.scope, crio-<id>.scope, or <id>), so registering
 * the pod cgroup governs every container through the ancestor walk. Where
 * the tree starts differs (kind nests it below the node container's
 * cgroup), so the pod cgroup is found by its name, not by a fixed path.
 */
#ifndef SLUICE_PODCG_H
#define SLUICE_PODCG_H

#include <stddef.h>
#include "sluice/sluice.h"

enum podcg_qos { PODCG_GUARANTEED = 0, PODCG_BURSTABLE = 1, PODCG_BESTEFFORT = 2 };

#define PODCG_NAMES	2	/* systemd, cgroupfs */

/* The names the pod cgroup has under each driver, NUL-padded to
 * SL_NAME_MAX (the key of sl_names). -EINVAL for a malformed UID or QoS. */
int podcg__names(const char *uid, enum podcg_qos qos, char names[PODCG_NAMES][SL_NAME_MAX]);
/* "Guaranteed", "Burstable", "BestEffort" (status.qosClass) or -EINVAL. */
int podcg__qos_parse(const char *s);
/* Search below ROOT (at most MAX_DEPTH levels) for a directory named one
 * of NAMES; its path into BUF. 0, -ENOENT, or another -errno. */
int podcg__find(const char *root, const char names[PODCG_NAMES][SL_NAME_MAX], int max_depth,
		char *buf, size_t len);

#endif
