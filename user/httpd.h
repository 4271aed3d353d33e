/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Small HTTP server for sluiced (/metrics, /healthz, /readyz, and whatever
 * a module registers), run from the daemon's own epoll loop: libmicrohttpd
 * in external-polling mode, no threads. */
#ifndef SLUICE_HTTPD_H
#define SLUICE_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTPD_MAX_BODY		(4u << 20)	/* per request; 413 beyond */
#define HTTPD_MAX_BODY_TOTAL	(32u << 20)	/* all bodies in flight; 503 beyond */
#define HTTPD_MAX_CONNS		64
#define HTTPD_IDLE_TIMEOUT_S	30		/* inactivity; then the connection is closed */
#define HTTPD_BODY_DEADLINE_S	60		/* a body still arriving after this is cut off */

#define HTTPD_PROM_CONTENT_TYPE	"text/plain; version=0.0.4; charset=utf-8"

struct httpd;

struct httpd_request {
	const char *method;
	const char *path;		/* percent-decoded, without the query */
	const char *query;		/* raw text after '?', or NULL */
	const char *body;		/* NUL-terminated for convenience; never NULL */
	size_t body_len;
	const char *content_type;	/* or NULL */
	const char *authorization;	/* the Authorization header, or NULL */
};

struct httpd_response {
	int status;			/* preset to 200 */
	const char *content_type;	/* static string; NULL: text/plain; charset=utf-8 */
	char *body;			/* malloc'd; httpd frees it, also on error */
	size_t body_len;
};

/* Return 0, or -errno for a 500 (the body, if any, is discarded). */
typedef int (*httpd_handler_fn)(void *ctx, const struct httpd_request *req,
				struct httpd_response *resp);

/* ADDR: "127.0.0.1:9090", "[::1]:9090", or ":9090" (all addresses, IPv6
 * dual-stack, IPv4 only if the host has no IPv6); port 0 picks a free port.
 * Serves /healthz (always 200) and /readyz (503 until httpd__set_ready). */
int httpd__start(const char *addr, struct httpd **out, char *err, size_t errlen);

/* HTTPS: PEM text. With CLIENT_CA every request must come with a client
 * certificate that verifies against it (mTLS), or is answered 403. */
struct httpd_tls {
	const char *cert_pem;
	const char *key_pem;
	const char *client_ca_pem;	/* or NULL */
};

int httpd__start_tls(const char *addr, const struct httpd_tls *tls, struct httpd **out,
		     char *err, size_t errlen);
/* Route METHOD PATH (exact match) to FN; replaces an earlier route for the
 * same pair. A GET route also answers HEAD. Others get 404 or 405. */
int httpd__handle(struct httpd *h, const char *method, const char *path,
		  httpd_handler_fn fn, void *ctx);
void httpd__set_ready(struct httpd *h, bool ready);
/* Level-triggered fd for the daemon's epoll (EPOLLIN). */
int httpd__fd(const struct httpd *h);
/* Longest the daemon may wait before httpd__run; -1 for no limit. */
int httpd__timeout_ms(struct httpd *h);
/* Call when httpd__fd is readable or the timeout expired. Handlers run
 * from here. */
int httpd__run(struct httpd *h);
uint16_t httpd__port(const struct httpd *h);
void httpd__stop(struct httpd *h);

/* Prometheus text exposition 0.0.4. Errors (ENOMEM, EINVAL for a bad
 * metric or label name) stick in ERR and make later calls no-ops. */
struct prom {
	char *buf;
	size_t len, cap;
	int err;
};

void prom__help(struct prom *p, const char *name, const char *type, const char *help);
/* Label key/value pairs follow VALUE, ended by NULL:
 *   prom__sample(p, "sluice_flows_total", n, "verdict", "deny", NULL); */
void prom__sample(struct prom *p, const char *name, double value, ...)
	__attribute__((sentinel));
/* Hand the text to RESP (with the 0.0.4 content type) and reset P;
 * returns P's error instead, freeing the text. */
int prom__finish(struct prom *p, struct httpd_response *resp);
void prom__free(struct prom *p);

#endif
