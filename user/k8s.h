/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The Kubernetes side of sluiced: watches of this node's pods, namespaces
 * and the AgentPolicy / ClusterAgentPolicy objects, kept as a local store
 * the daemon's reconcile reads. Invalid policy objects are reported as
 * Kubernetes Events on the object; their last good version stays.
 */
#ifndef SLUICE_K8S_H
#define SLUICE_K8S_H

#include <stdbool.h>
#include <stddef.h>
#include "policy.h"

struct k8s;
struct cJSON;

struct k8s_opts {
	const char *node;		/* spec.nodeName of our pods */
	const char *kubeconfig;		/* NULL: in-cluster configuration */
	const char *sa_dir;		/* in-cluster: NULL = the standard directory */
	unsigned int stall_ms;		/* watch stall detection; 0: the client's default */
};

struct k8s_pod {
	char uid[40];
	char ns[64];
	char name[256];
	char sa[256];			/* spec.serviceAccountName */
	int qos;			/* enum podcg_qos, or -1 unknown */
	struct cJSON *labels;		/* metadata.labels (object) or NULL */
	struct cJSON *containers;	/* [{"name":..,"id":<runtime id without scheme>}] */
	char net_raw[64];		/* a container that may keep CAP_NET_RAW, or "" */
};

/* CHANGED runs (from k8s__run) whenever the store changed. */
int k8s__start(const struct k8s_opts *o, void (*changed)(void *ctx), void *ctx,
	       struct k8s **out, char *err, size_t errlen);
void k8s__stop(struct k8s *k);
int k8s__fd(const struct k8s *k);
int k8s__run(struct k8s *k);
/* Every watch has completed its first list. */
bool k8s__synced(const struct k8s *k);

/* The last good documents of the policy objects. */
size_t k8s__docs(const struct k8s *k, const struct pol_doc ***out);
struct compile_addr;
/* The ClusterIPs and endpoint addresses of service NS/NAME (a
 * compile_service_fn with the k8s as context). */
int k8s__service_addrs(const struct k8s *k, const char *ns, const char *name,
		       struct compile_addr **out, size_t *n);
/* Changes whenever a policy document, or a service's addresses, change. */
unsigned long k8s__policy_gen(const struct k8s *k);
size_t k8s__npods(const struct k8s *k);
const struct k8s_pod *k8s__pod(const struct k8s *k, size_t i);
const struct cJSON *k8s__ns_labels(const struct k8s *k, const char *ns);
/* Does DOC select POD (podSelector in the policy's namespace; for a
 * ClusterAgentPolicy, namespaceSelector and podSelector)? */
bool k8s__selects(const struct k8s *k, const struct pol_doc *doc, const struct k8s_pod *pod);

struct k8s_stats {
	unsigned long policies, invalid_policies, pods, namespaces, events_posted;
};
void k8s__stats(const struct k8s *k, struct k8s_stats *out);
/* JSON array of the policy objects: name, state, errors. Caller frees. */
struct cJSON *k8s__policies_json(const struct k8s *k);

#endif
