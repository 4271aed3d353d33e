/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Cross-node lookups: the daemon that reads a gateway record whose peer it
 * has no flow for asks the other nodes' daemons, as Hubble Relay asks each
 * node's Hubble server.
 *
 * Server side (the daemon's HTTP handler): POST /v1/flows/lookup with
 *	{"lookups":[{"peer":"10.244.1.7:41234","start_ns":"1764300000123456789"}]}
 * is answered with one result per lookup, in order, null when not found:
 *	{"node":"node-b","results":[{...flow...}, null]}
 * 64-bit numbers are strings: JSON numbers are doubles. peer__serve() does
 * the decoding and the encoding around a lookup callback.
 *
 * Client side: records handed to peer__ask() are batched per peer (one
 * request carries up to PEER_BATCH lookups) and sent to every peer at once;
 * the first peer with the flow answers the record, and when every peer has
 * answered without it, or could not be reached after its retries with
 * backoff, the record ends without a flow. Every outcome is counted per
 * peer. Runs from the daemon's epoll loop: one fd, no threads; DONE is
 * called from peer__run() only.
 */
#ifndef SLUICE_PEER_H
#define SLUICE_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "correlate.h"
#include "gateway.h"

#define PEER_BATCH		256	/* lookups per request */
#define PEER_MAX_LOOKUPS	4096	/* per request served */
#define PEER_PATH		"/v1/flows/lookup"

struct peer;

struct peer_opts {
	const char *token_file;		/* bearer token sent; re-read when it changes */
	const char *ca_file;		/* PEM: verify peers against it (https://) */
	const char *cert_file;		/* PEM client certificate, with key_file: mTLS */
	const char *key_file;
	unsigned attempts;		/* per batch and peer; 0: 5 */
	unsigned backoff_base_ms;	/* 0: 200 */
	unsigned backoff_max_ms;	/* 0: 5000 */
	unsigned timeout_ms;		/* one request; 0: 5000 */
	unsigned min_age_ms;		/* ask once the record's end is this old; 0: 200 */
	size_t max_queue;		/* records waiting per peer; 0: 16384 */
};

/* FI: the flow a peer found (FI->node names it; valid during the call), or
 * NULL with WHY saying whom were asked and what they said. */
typedef void (*peer_done_fn)(void *ctx, const struct gw_record *r,
			     const struct corr_flow_info *fi, const char *why);

/* 0, or -errno with ERR naming the file that could not be read. */
int peer__new(const struct peer_opts *o, peer_done_fn done, void *ctx, struct peer **out,
	      char *err, size_t errlen);
void peer__free(struct peer *p);
/* Add NAME (a label for metrics and messages) at URL "http(s)://host:port",
 * or change its URL. 0, -EINVAL (bad URL, ERR says why), -ENOMEM. */
int peer__set(struct peer *p, const char *name, const char *url, char *err, size_t errlen);
/* Its waiting records are answered as if it had not got the flow. */
void peer__del(struct peer *p, const char *name);
size_t peer__count(const struct peer *p);
/* Copies R. 0, -ENOENT (no peers), -ENOSPC (a queue is full: counted),
 * -ENOMEM. */
int peer__ask(struct peer *p, const struct gw_record *r);
/* Records asked and not answered yet. */
size_t peer__waiting(const struct peer *p);
int peer__fd(const struct peer *p);
/* Call when peer__fd is readable. */
int peer__run(struct peer *p);

struct peer_stats {
	const char *name;
	const char *url;
	uint64_t requests;		/* HTTP requests sent */
	uint64_t retries;		/* of which repeats after a failure */
	uint64_t failures;		/* batches given up after every attempt */
	uint64_t errors_transport;	/* connect, TLS, timeout */
	uint64_t errors_auth;		/* 401, 403 */
	uint64_t errors_other;		/* other statuses, bad answers */
	uint64_t found;			/* lookups it had */
	uint64_t not_found;
	uint64_t unreachable;		/* lookups it could not be asked */
	uint64_t dropped;		/* lookups refused: its queue was full */
	uint64_t queued;		/* waiting now */
	bool up;			/* the last request was answered */
};

/* Calls FN once per peer. */
void peer__stats(const struct peer *p, void (*fn)(void *ctx, const struct peer_stats *st),
		 void *ctx);

/* ---------------------------------------------------------- server side */

/* Finds this node's flow of ADDR:PORT at START_NS: 0 with OUT filled
 * (valid until the next call), or -ENOENT. */
typedef int (*peer_lookup_fn)(void *ctx, const uint8_t addr[16], uint16_t port,
			      uint64_t start_ns, struct corr_flow_info *out);

/* Answers one request BODY: 0 with *OUT a malloc'd JSON answer, or -EINVAL
 * with ERR saying what is wrong (the whole request is refused), -ENOMEM. */
int peer__serve(const char *node, const char *body, size_t len, peer_lookup_fn fn, void *ctx,
		char **out, char *err, size_t errlen);

/* ---------------------------------------------------------- internals, for tests */

struct cJSON;
struct peer_flow {
	struct corr_flow_info fi;
	char node[64];
	char cgroup[512], pod_namespace[64], pod_name[256], service_account[256];
	char policy[256], rule[256];
	char *tools[64];
	char toolbuf[64][128];
};

/* FI as a JSON object (the strings of FI are copied). NULL: ENOMEM. */
struct cJSON *peer__flow_json(const struct corr_flow_info *fi);
/* A result object back into OUT (strings cut at its bounds). 0, -EINVAL. */
int peer__flow_parse(const struct cJSON *o, const char *node, struct peer_flow *out);

#endif
