/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* sluiced: the node daemon's state and its one event loop. */
#ifndef SLUICE_DAEMON_H
#define SLUICE_DAEMON_H

#include <stdbool.h>
#include <stdint.h>

struct daemon_opts {
	const char *policy_dir;
	const char *cgroup_root;	/* attach point; NULL: the cgroup2 mount */
	const char *pin_path;
	const char *events_path;	/* NULL: no event stream; "-": stdout */
	uint64_t events_max_size;
	unsigned int events_keep;
	const char *metrics_addr;	/* NULL: no HTTP server */
	const char *control_path;
	const char *resolv_conf;
	const char *node;
	bool observe_all;
	bool detach_on_exit;
	bool kubernetes;		/* policies and pods from the API server */
	const char *kubeconfig;		/* NULL: in-cluster configuration */
	const char *kube_sa_dir;	/* in-cluster credentials directory override */
	unsigned int kube_stall_ms;	/* watch stall detection (tests) */
	/* gateway decision logs to join with the kernel's flows */
	const char *gateway_logs[16];
	size_t ngateway_logs;
	const char *gateway_format;	/* agentgateway | envoy | auto */
	const char *gateway_keymap;
	const char *gateway_addrs[16];	/* listeners besides class gateway rules */
	size_t ngateway_addrs;
	const char *state_dir;		/* log positions; default /var/lib/sluice */
	const char *jwt_claim;		/* gateway identity key naming a workload */
	/* cross-node lookups: other nodes' daemons are asked for the flows
	 * of gateway records this node has none for */
	const char *peer_listen;	/* serve lookups of this node's flows */
	const char *peers[64];		/* other nodes' daemons, URLs */
	size_t npeers;
	const char *peer_token_file;	/* bearer token: sent, and required */
	const char *peer_tls_cert, *peer_tls_key, *peer_tls_ca;
	const char *peer_service;	/* "ns/name": peers are its endpoints */
	const char *local_prefixes[32];	/* CIDRs of this node's workloads */
	size_t nlocal_prefixes;
};

/* Runs until SIGTERM/SIGINT; returns the exit status. */
int daemon__run(const struct daemon_opts *opts);

#endif
