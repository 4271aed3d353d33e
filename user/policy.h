/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* AgentPolicy / ClusterAgentPolicy: YAML or JSON -> checked model. */
#ifndef SLUICE_POLICY_H
#define SLUICE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum pol_kind { POL_AGENT = 0, POL_CLUSTER = 1 };
enum pol_mode { POL_ENFORCE = 0, POL_AUDIT = 1 };
enum pol_peer_kind { PEER_CIDR = 0, PEER_FQDN = 1, PEER_SERVICE = 2 };

struct pol_peer {
	enum pol_peer_kind kind;
	uint8_t addr[16];	/* PEER_CIDR: network address, v4 stored v4-mapped */
	uint8_t bits;		/* PEER_CIDR: prefix bits in the 128-bit (mapped) space */
	bool is_v4;
	char *fqdn;		/* PEER_FQDN: lower-case, no trailing dot */
	char *svc_name;		/* PEER_SERVICE */
	char *svc_namespace;
	int line, col;
};

struct pol_port {
	uint16_t port;		/* 0 = any port */
	uint16_t end_port;	/* == port unless a range */
	uint8_t proto;		/* SL_PROTO_TCP/UDP/SCTP; default TCP */
	int line, col;
};

struct pol_rule {
	char *name;
	uint8_t class;		/* enum sl_class; default SL_CLASS_OTHER */
	bool deny;		/* from egressDeny */
	struct pol_peer *to;
	size_t nto;
	struct pol_port *ports;	/* nports == 0: any port, any protocol */
	size_t nports;
	char **tools;
	size_t ntools;
	int line, col;
};

struct pol_label { char *key; char *value; };

struct pol_doc {
	enum pol_kind kind;
	char *name;
	char *namespace;	/* NULL for ClusterAgentPolicy */
	char *file;		/* where it came from */
	int line;		/* line of the document start */
	enum pol_mode mode;
	bool dns_deny;		/* spec.dns: deny */
	char **cgroup_paths;	/* spec.selector.cgroupPaths */
	size_t ncgroup_paths;
	struct pol_label *pod_labels;	/* spec.selector.podSelector.matchLabels */
	size_t npod_labels;
	struct pol_label *ns_labels;	/* spec.namespaceSelector.matchLabels (cluster) */
	size_t nns_labels;
	struct pol_rule *egress;	/* egress then egressDeny (deny = true) */
	size_t negress;
};

struct pol_diag {
	char *file;
	int line, col;		/* 1-based; 0 when unknown */
	char *msg;
};

struct pol_diags {
	struct pol_diag *v;
	size_t n;
};

struct pol_set {
	struct pol_doc *docs;
	size_t ndocs;
};

/* Parse every document of PATH (YAML, multi-document, or JSON: a single
 * object or an array of objects; chosen by content, not by name) and
 * append them to SET. All problems are appended to DIAGS with positions.
 * Returns 0, or -EINVAL if any diag was added (SET is then unchanged:
 * a file is taken whole or not at all), or another -errno (file I/O, also
 * reported in DIAGS). */
int policy__parse_file(const char *path, struct pol_set *set, struct pol_diags *diags);
/* Same, from memory; NAME is used in messages. */
int policy__parse_buf(const char *name, const char *buf, size_t len,
		      struct pol_set *set, struct pol_diags *diags);
/* "FILE:LINE:COL: message" per diag, one per line. */
void policy__print_diags(const struct pol_diags *diags, FILE *f);
void policy__diags_free(struct pol_diags *diags);
void policy__set_free(struct pol_set *set);
/* "namespace/name" or "name" into BUF. */
const char *policy__doc_id(const struct pol_doc *doc, char *buf, size_t len);

const char *policy__class_name(uint8_t class);	/* "llm", ... ; "none" */
int policy__class_parse(const char *s);		/* -EINVAL if unknown */

#endif
