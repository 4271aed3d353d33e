/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Ring-buffer records -> flow records as JSON lines. */
#ifndef SLUICE_EVENTS_H
#define SLUICE_EVENTS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <linux/types.h>
#include "sluice/sluice.h"

struct datapath;

struct events_names;	/* caches of rule, set and cgroup names */

/* Kubernetes names of an identity (a pod cgroup), if known. */
struct events_workload {
	const char *ns, *pod, *sa;
	const char *container;		/* from the task's cgroup, or NULL */
};
/* CGROUP: the task's cgroup path (may be NULL). */
typedef int (*events_workload_fn)(void *ctx, uint64_t ident_cgid, const char *cgroup,
				  struct events_workload *out);

struct events_render {
	events_workload_fn workload;	/* optional */
	void *workload_ctx;
	char node[64];
	int64_t mono_to_real_ns;	/* CLOCK_REALTIME - CLOCK_MONOTONIC */
	struct datapath *dp;		/* rule and set names from the pins; may be NULL */
	struct events_names *names;
};

int events__render_init(struct events_render *r, struct datapath *dp, const char *node);
void events__render_free(struct events_render *r);
/* Write EV as one JSON object (no newline) into BUF; returns the length,
 * or -ENOSPC if BUF is too small. */
int events__render(struct events_render *r, const struct sl_event *ev, char *buf, size_t len);
/* Wall-clock time of a monotonic kernel timestamp, RFC 3339 with ns. */
void events__format_time(int64_t mono_to_real_ns, uint64_t ts_ns, char *buf, size_t len);
/* "1.2.3.4:80" or "[::1]:80"; v4-mapped shown as IPv4 when V4. */
void events__format_addr(const uint8_t addr[16], uint16_t port, int v4, char *buf, size_t len);
const char *events__type_name(uint8_t type);
const char *events__verdict_name(uint8_t verdict);
/* Name of a reserved rule id (< SL_RULE_FIRST), or NULL. */
const char *events__reserved_rule(uint32_t rule_id);
/* Remember the names of a set's rules without a map lookup (the process
 * that compiled the set knows them). POLICIES names the selecting ones. */
int events__names_add_set(struct events_render *r, uint32_t set_id, const char *policies);
/* The names of {SET_ID, RULE_ID} from the cache (or the pins), or NULL;
 * valid until the next call on R. */
const struct sl_rule_meta *events__rule_meta(struct events_render *r, uint32_t set_id,
					     uint32_t rule_id);
/* Cached: the path of cgroup ID below the mount (NULL if gone), and the
 * selecting policies of SET_ID. */
const char *events__cgroup_name(struct events_render *r, uint64_t id);
const char *events__set_name(struct events_render *r, uint32_t set_id);
int events__names_add_rule(struct events_render *r, uint32_t set_id, uint32_t rule_id,
			   const struct sl_rule_meta *meta);
struct compiled;
/* POLICIES for SET_ID and the names of C's rules from index FROM on: what
 * the process that wrote SET_ID from C knows without a map lookup. */
int events__names_add_compiled(struct events_render *r, uint32_t set_id, const char *policies,
			       const struct compiled *c, size_t from);

#endif
