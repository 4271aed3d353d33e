/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * fqdn destinations: a cache of the addresses of the names that policies
 * name. There is no DNS proxy: sluice resolves the names itself through the
 * system's resolvers, refreshes each name at ~80% of its TTL and keeps the
 * addresses of an answer that stopped being current for a grace period, so
 * that connections made while they were current are not cut.
 *
 * Time: every call that decides something takes CLOCK_MONOTONIC ns as a
 * parameter (tests drive it); only fqdn__resolve_now() and the compile
 * callback read the clock themselves.
 *
 * Resolvers: fqdn__new(NULL, ...) uses /etc/resolv.conf as res_ninit() reads
 * it. With a path, the nameservers of that file replace those of
 * /etc/resolv.conf (on port 53; resolv.conf has no port syntax). To point
 * sluice at a test server, run it on port 53 of a spare loopback address
 * (e.g. 127.0.53.53) and name that address in the file, or use
 * fqdn__new_conf() with fqdn_resolver_conf.port set. The file is read once:
 * a changed resolv.conf takes a new cache.
 *
 * A cache is not thread-safe: one thread owns it.
 */
#ifndef SLUICE_FQDN_H
#define SLUICE_FQDN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <resolv.h>
#include "compile.h"

#define FQDN_MAX_ADDRS		64	/* per name, current and in grace */
#define FQDN_MAX_NAMES		4096
#define FQDN_NAME_MAX		253	/* presentation form, no trailing dot */
#define FQDN_DEFAULT_GRACE_S	300
#define FQDN_DEFAULT_MIN_TTL_S	5
#define FQDN_MAX_TTL_S		86400	/* refresh at least daily */
#define FQDN_NEG_TTL_S		30	/* empty answer without an SOA */
#define FQDN_RETRY_MAX_S	60	/* failure backoff ceiling */

struct fqdn_cache;

struct fqdn_resolver_conf {
	struct compile_addr servers[MAXNS];
	uint32_t scope_ids[MAXNS];	/* v6 link-local "%eth0"; else 0 */
	size_t nservers;
	uint16_t port;			/* host order; 0 = 53 */
};

struct fqdn_stats {
	uint64_t queries;	/* DNS queries sent (A and AAAA each count) */
	uint64_t failures;	/* timeout, SERVFAIL, REFUSED, malformed */
	uint64_t negative;	/* NXDOMAIN or no records of the type */
	uint64_t truncated;	/* addresses not kept: FQDN_MAX_ADDRS reached */
	uint64_t dropped;	/* addresses removed at the end of their grace */
};

/* One parsed answer. For n == 0 (NXDOMAIN, NODATA) ttl is the negative TTL:
 * min(SOA ttl, SOA minimum) or FQDN_NEG_TTL_S without an SOA. */
struct fqdn_answer {
	struct compile_addr addrs[FQDN_MAX_ADDRS];
	uint32_t ttls[FQDN_MAX_ADDRS];	/* min of the record's and the chain's */
	size_t n;
	size_t truncated;		/* A/AAAA records past FQDN_MAX_ADDRS */
	uint32_t ttl;			/* min over addrs, or the negative TTL */
	int rcode;			/* ns_r_* of the message */
};

/* Read the nameserver lines of a resolv.conf (v4 and v6, "%scope" kept,
 * up to MAXNS as glibc does); other lines are ignored. Returns 0 (even with
 * no nameserver: glibc then uses 127.0.0.1, and so does fqdn__new) or
 * -errno of fopen/read, e.g. -ENOENT. */
int fqdn__parse_resolv_conf(const char *path, struct fqdn_resolver_conf *out);

/* Parse a DNS response to a query for QNAME (A or AAAA). CNAMEs are
 * followed from QNAME; A/AAAA records owned by a name of that chain are
 * taken, their TTL lowered to the chain's. Returns 0 for NOERROR and
 * NXDOMAIN (out->n may be 0), -EAGAIN for SERVFAIL, -EPROTO for any other
 * rcode, -EBADMSG if the message does not parse. */
int fqdn__parse_answer(const uint8_t *msg, size_t len, const char *qname,
		       struct fqdn_answer *out);

/* NULL path: /etc/resolv.conf. grace_s 0 means FQDN_DEFAULT_GRACE_S,
 * min_ttl_s 0 means FQDN_DEFAULT_MIN_TTL_S; TTLs below it are raised to it.
 * Returns NULL with errno set on failure. */
struct fqdn_cache *fqdn__new(const char *resolv_conf_path, uint32_t grace_s,
			     uint32_t min_ttl_s);
/* Same with explicit nameservers (and port) instead of a file. */
struct fqdn_cache *fqdn__new_conf(const struct fqdn_resolver_conf *conf,
				  uint32_t grace_s, uint32_t min_ttl_s);
void fqdn__free(struct fqdn_cache *c);

/* The nameservers in use: the DNS rules of compile_input need them. */
void fqdn__resolvers(const struct fqdn_cache *c,
		     const struct compile_addr **out, size_t *n);

/* Track NAME (case-insensitive, one trailing dot allowed). It is due for
 * resolution at once. 0 if added or already there, -EINVAL for a name that
 * cannot be queried (empty, too long, empty label, wildcard), -ENOSPC past
 * FQDN_MAX_NAMES, -ENOMEM. */
int fqdn__add(struct fqdn_cache *c, const char *name);
/* Stop tracking NAME; its addresses go at once. 0 or -ENOENT. */
int fqdn__remove(struct fqdn_cache *c, const char *name);

/* Query every name whose refresh time has come, then drop the addresses
 * whose grace ended. *changed (may be NULL) tells whether any name's address
 * set changed (an address added or dropped) by this call or, since the
 * previous call, by fqdn__resolve_now, fqdn__resolve_cb, fqdn__inject or
 * fqdn__remove. Returns 0, or the first error
 * met (-EAGAIN: timeout or SERVFAIL); the other due names are still done.
 * A failed name keeps its addresses until expiry + grace and is retried
 * with a backoff from min_ttl_s up to FQDN_RETRY_MAX_S. */
int fqdn__refresh_due(struct fqdn_cache *c, uint64_t now_ns, bool *changed);

/* Query NAME (A and AAAA) now, adding it if unknown. 0 or -errno as
 * fqdn__refresh_due. NXDOMAIN and no records are not errors. */
int fqdn__resolve_now(struct fqdn_cache *c, const char *name);

/* Current and in-grace addresses of NAME as of the last query or
 * fqdn__refresh_due, in a malloc'd array the caller frees (NULL when
 * *n == 0). -ENOENT if NAME is not tracked, -ENOMEM. */
int fqdn__addrs(struct fqdn_cache *c, const char *name,
		struct compile_addr **out, size_t *n);

/* compile_resolve_fn with CTX a struct fqdn_cache: adds the name if unknown
 * and resolves it synchronously if it never was. A timeout or SERVFAIL on
 * that first query is not returned: the rule matches nothing until a
 * refresh succeeds (fail closed), and fqdn__refresh_due reports the change. */
int fqdn__resolve_cb(void *ctx, const char *fqdn, struct compile_addr **out,
		     size_t *n);

/* CLOCK_MONOTONIC ns at which fqdn__refresh_due next has work (a refresh
 * or a grace end); UINT64_MAX if none. */
uint64_t fqdn__next_deadline(const struct fqdn_cache *c);

/* For explain and the sl_fqdn map: the names (comma separated) whose
 * answers hold ADDR (v4-mapped for v4), the latest expiry of those answers
 * and the end of its grace, both CLOCK_REALTIME ns. 0, -ENOENT, or -ENOSPC
 * when NAMES could hold only some of the names (it is still filled, with
 * whole names). */
int fqdn__lookup_addr(const struct fqdn_cache *c, const uint8_t addr[16],
		      char *names, size_t len, uint64_t *expires_realtime_ns,
		      uint64_t *grace_until_realtime_ns);

void fqdn__stats(const struct fqdn_cache *c, struct fqdn_stats *out);

/* Arm the CLOCK_MONOTONIC timerfd TFD for fqdn__next_deadline (disarm it
 * when nothing is due), so an event loop knows when to call
 * fqdn__refresh_due. */
int fqdn__arm_timerfd(const struct fqdn_cache *c, int tfd);

/* Test hooks, and the way to feed answers obtained elsewhere: apply an
 * answer for NAME (added if unknown) as if a query had returned ADDRS with
 * TTL at NOW_NS (n == 0: an empty answer). *changed (may be NULL) as for
 * fqdn__refresh_due. */
int fqdn__inject(struct fqdn_cache *c, const char *name,
		 const struct compile_addr *addrs, size_t n, uint32_t ttl_s,
		 uint64_t now_ns, bool *changed);
/* As if the query for NAME had failed with ERR (e.g. -EAGAIN) at NOW_NS. */
int fqdn__inject_error(struct fqdn_cache *c, const char *name, int err,
		       uint64_t now_ns);

/* Replace res_nsend: FN gets NAME and the type (ns_t_a, ns_t_aaaa) and
 * writes a DNS response into BUF, returning its length or -errno (no answer
 * from any server). NULL restores res_nsend. Lets tests script answers. */
typedef int (*fqdn_transport_fn)(void *ctx, const char *name, int type,
				 uint8_t *buf, size_t cap);
void fqdn__set_transport(struct fqdn_cache *c, fqdn_transport_fn fn, void *ctx);

#endif
