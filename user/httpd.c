// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* HTTP server on libmicrohttpd in external epoll mode: the daemon's loop
 * owns the only thread, so handlers may touch daemon state without locks. */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include "httpd.h"
#include "log.h"

#define TEXT_PLAIN	"text/plain; charset=utf-8"
#define BODY_MIN_CAP	(16u << 10)

struct httpd_route {
	char *method;
	char *path;
	httpd_handler_fn fn;
	void *ctx;
};

struct httpd {
	struct MHD_Daemon *mhd;
	struct httpd_route *routes;
	size_t nroutes;
	size_t body_bytes;	/* buffered request bodies, all connections */
	int epfd;
	uint16_t port;
	bool ready;
	bool verify_clients;
};

/* One per request, from the URI callback to the completion callback. */
struct httpd_req {
	char *uri;		/* raw request target: the only source of the raw query */
	size_t route;		/* an index: httpd__handle may move the array */
	char *body;
	size_t len, cap;
	struct timespec start;
	int reject;		/* status to answer once the body is drained */
	bool started;
};

static void req_body_free(struct httpd *h, struct httpd_req *r)
{
	h->body_bytes -= r->cap;
	free(r->body);
	r->body = NULL;
	r->len = r->cap = 0;
}

/* Grow R's body to hold NEED bytes plus a NUL, within both limits; the
 * status to answer otherwise. */
static int req_body_reserve(struct httpd *h, struct httpd_req *r, size_t need)
{
	size_t cap = r->cap;
	char *nb;

	if (need > HTTPD_MAX_BODY)
		return MHD_HTTP_CONTENT_TOO_LARGE;
	if (need < cap)
		return 0;
	cap = cap ? cap : BODY_MIN_CAP;
	while (cap <= need)
		cap *= 2;
	if (cap > HTTPD_MAX_BODY + 1)
		cap = HTTPD_MAX_BODY + 1;
	if (h->body_bytes - r->cap + cap > HTTPD_MAX_BODY_TOTAL)
		return MHD_HTTP_SERVICE_UNAVAILABLE;
	nb = realloc(r->body, cap);
	if (!nb)
		return MHD_HTTP_SERVICE_UNAVAILABLE;
	h->body_bytes = h->body_bytes - r->cap + cap;
	r->body = nb;
	r->cap = cap;
	return 0;
}

static enum MHD_Result send_text(struct MHD_Connection *c, unsigned int status,
				 const char *text, const char *allow)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	resp = MHD_create_response_from_buffer(strlen(text), (void *)text,
					       MHD_RESPMEM_PERSISTENT);
	if (!resp)
		return MHD_NO;
	if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, TEXT_PLAIN) != MHD_YES ||
	    (allow && MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow) != MHD_YES)) {
		MHD_destroy_response(resp);
		return MHD_NO;
	}
	ret = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result send_status(struct MHD_Connection *c, int status)
{
	switch (status) {
	case MHD_HTTP_CONTENT_TOO_LARGE:
		return send_text(c, status, "request body too large\n", NULL);
	case MHD_HTTP_SERVICE_UNAVAILABLE:
		return send_text(c, status, "server busy\n", NULL);
	default:
		return send_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal error\n", NULL);
	}
}

static void allow_add(char *allow, size_t len, size_t *off, const char *method)
{
	if (*off < len)
		*off += (size_t)snprintf(allow + *off, len - *off, "%s%s", *off ? ", " : "", method);
}

/* The index of the route for METHOD PATH, or -1 with the status (404/405)
 * in *STATUS and, for 405, the allowed methods in ALLOW. */
static ssize_t route_find(const struct httpd *h, const char *method, const char *path,
			  int *status, char *allow, size_t allowlen)
{
	ssize_t head_get = -1;
	size_t off = 0;

	*status = MHD_HTTP_NOT_FOUND;
	allow[0] = '\0';
	for (size_t i = 0; i < h->nroutes; i++) {
		const struct httpd_route *rt = &h->routes[i];

		if (strcmp(rt->path, path))
			continue;
		if (!strcmp(rt->method, method))
			return (ssize_t)i;
		allow_add(allow, allowlen, &off, rt->method);
		if (!strcmp(rt->method, "GET")) {
			head_get = (ssize_t)i;
			allow_add(allow, allowlen, &off, "HEAD");
		}
		*status = MHD_HTTP_METHOD_NOT_ALLOWED;
	}
	return strcmp(method, "HEAD") ? -1 : head_get;
}

static enum MHD_Result call_handler(struct httpd *h, struct httpd_req *r,
				    struct MHD_Connection *c, const char *url,
				    const char *method)
{
	struct httpd_response out = { .status = MHD_HTTP_OK };
	struct httpd_request in = {
		.method = method,
		.path = url,
		.query = NULL,
		.body = r->body ? r->body : "",
		.body_len = r->len,
		.content_type = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
							    MHD_HTTP_HEADER_CONTENT_TYPE),
		.authorization = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
							     MHD_HTTP_HEADER_AUTHORIZATION),
	};
	/* Copied: the handler may register routes and move the array. */
	struct httpd_route rt = h->routes[r->route];
	struct MHD_Response *resp;
	enum MHD_Result ret;
	char *q = r->uri ? strchr(r->uri, '?') : NULL;

	if (q)
		in.query = q + 1;
	if (r->body)
		r->body[r->len] = '\0';
	if (rt.fn(rt.ctx, &in, &out) < 0 ||
	    out.status < 100 || out.status > 599 || (!out.body && out.body_len)) {
		free(out.body);
		return send_status(c, MHD_HTTP_INTERNAL_SERVER_ERROR);
	}
	if (out.body) {
		resp = MHD_create_response_from_buffer(out.body_len, out.body,
						       MHD_RESPMEM_MUST_FREE);
		if (!resp)
			free(out.body);
	} else {
		resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	}
	if (!resp)
		return MHD_NO;
	if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
				    out.content_type ? out.content_type : TEXT_PLAIN) != MHD_YES) {
		MHD_destroy_response(resp);
		return MHD_NO;
	}
	ret = MHD_queue_response(c, (unsigned int)out.status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* libmicrohttpd asks for a client certificate when given a trust list,
 * but lets a connection without one (or with a bad one) through. */
static bool client_verified(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
	unsigned int status = 0;

	if (!ci || !ci->tls_session)
		return false;
	return gnutls_certificate_verify_peers2((gnutls_session_t)ci->tls_session, &status) ==
		       GNUTLS_E_SUCCESS && !status;
}

/* First call of a request: route it and size up the body, answering at
 * once when the request cannot succeed. */
static enum MHD_Result req_begin(struct httpd *h, struct httpd_req *r,
				 struct MHD_Connection *c, const char *url,
				 const char *method)
{
	char allow[128];
	const char *cl;
	ssize_t idx;
	int status;

	r->started = true;
	if (h->verify_clients && !client_verified(c))
		return send_text(c, MHD_HTTP_FORBIDDEN, "a client certificate of the trusted CA is required\n",
				 NULL);
	idx = route_find(h, method, url, &status, allow, sizeof(allow));
	if (idx < 0) {
		if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
			return send_text(c, status, "method not allowed\n", allow);
		return send_text(c, status, "not found\n", NULL);
	}
	r->route = (size_t)idx;
	/* MHD has already validated Content-Length; reserving it up front
	 * refuses an oversized body before the client sends it (no 100
	 * Continue) and saves the regrowth. */
	cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl) {
		unsigned long long n = strtoull(cl, NULL, 10);

		if (n > HTTPD_MAX_BODY)
			return send_status(c, MHD_HTTP_CONTENT_TOO_LARGE);
		status = n ? req_body_reserve(h, r, (size_t)n) : 0;
		if (status)
			return send_status(c, status);
	}
	return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version,
				  const char *upload, size_t *upload_size, void **con_cls)
{
	struct httpd *h = cls;
	struct httpd_req *r = *con_cls;
	struct timespec now;
	int status;

	if (!r)		/* the URI callback ran out of memory */
		return send_status(c, MHD_HTTP_SERVICE_UNAVAILABLE);
	if (!r->started)
		return req_begin(h, r, c, url, method);
	if (*upload_size) {
		size_t n = *upload_size;

		/* The idle timeout alone lets a client trickle a body in
		 * forever, holding a connection slot. */
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - r->start.tv_sec > HTTPD_BODY_DEADLINE_S)
			return MHD_NO;
		*upload_size = 0;
		if (r->reject)
			return MHD_YES;	/* drain, then answer */
		status = req_body_reserve(h, r, r->len + n);
		if (status) {
			r->reject = status;
			req_body_free(h, r);
			return MHD_YES;
		}
		memcpy(r->body + r->len, upload, n);
		r->len += n;
		return MHD_YES;
	}
	if (r->reject)
		return send_status(c, r->reject);
	return call_handler(h, r, c, url, method);
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
	struct httpd_req *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->uri = strdup(uri);
	if (!r->uri) {
		free(r);
		return NULL;
	}
	clock_gettime(CLOCK_MONOTONIC, &r->start);
	return r;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct httpd *h = cls;
	struct httpd_req *r = *con_cls;

	if (!r)
		return;
	req_body_free(h, r);
	free(r->uri);
	free(r);
	*con_cls = NULL;
}

static int healthz(void *ctx, const struct httpd_request *req, struct httpd_response *resp)
{
	resp->body = strdup("ok\n");
	if (!resp->body)
		return -ENOMEM;
	resp->body_len = 3;
	return 0;
}

static int readyz(void *ctx, const struct httpd_request *req, struct httpd_response *resp)
{
	const struct httpd *h = ctx;
	const char *text = h->ready ? "ready\n" : "not ready\n";

	resp->status = h->ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
	resp->body = strdup(text);
	if (!resp->body)
		return -ENOMEM;
	resp->body_len = strlen(text);
	return 0;
}

static int parse_port(const char *s, uint16_t *port)
{
	unsigned long v;
	char *end;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > 65535)
		return -EINVAL;
	*port = (uint16_t)v;
	return 0;
}

union httpd_sa {
	struct sockaddr sa;
	struct sockaddr_in in4;
	struct sockaddr_in6 in6;
};

/* *ANY is set for ":port", which falls back to IPv4 when IPv6 is off. */
static int parse_addr(const char *addr, union httpd_sa *sa, bool *any)
{
	char host[INET6_ADDRSTRLEN];
	const char *colon, *hs = addr;
	size_t hl;
	uint16_t port;

	memset(sa, 0, sizeof(*sa));
	*any = false;
	if (addr[0] == '[') {
		const char *rb = strchr(addr, ']');

		if (!rb || rb[1] != ':')
			return -EINVAL;
		hs = addr + 1;
		hl = (size_t)(rb - hs);
		colon = rb + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon)
			return -EINVAL;
		hl = (size_t)(colon - addr);
	}
	if (parse_port(colon + 1, &port))
		return -EINVAL;
	if (hl >= sizeof(host))
		return -EINVAL;
	memcpy(host, hs, hl);
	host[hl] = '\0';
	if (!hl && addr[0] != '[') {
		*any = true;
		sa->in6.sin6_family = AF_INET6;
		sa->in6.sin6_addr = in6addr_any;
		sa->in6.sin6_port = htons(port);
	} else if (addr[0] == '[' && inet_pton(AF_INET6, host, &sa->in6.sin6_addr) == 1) {
		sa->in6.sin6_family = AF_INET6;
		sa->in6.sin6_port = htons(port);
	} else if (addr[0] != '[' && inet_pton(AF_INET, host, &sa->in4.sin_addr) == 1) {
		sa->in4.sin_family = AF_INET;
		sa->in4.sin_port = htons(port);
	} else {
		return -EINVAL;
	}
	return 0;
}

static struct MHD_Daemon *mhd_start(struct httpd *h, const union httpd_sa *sa,
				     const struct httpd_tls *tls)
{
	struct MHD_OptionItem opts[] = {
		{ MHD_OPTION_HTTPS_MEM_CERT, 0, tls ? (void *)tls->cert_pem : NULL },
		{ MHD_OPTION_HTTPS_MEM_KEY, 0, tls ? (void *)tls->key_pem : NULL },
		{ MHD_OPTION_HTTPS_MEM_TRUST, 0, tls ? (void *)tls->client_ca_pem : NULL },
		{ MHD_OPTION_END, 0, NULL },
	};
	unsigned int flags = MHD_USE_EPOLL;

	if (tls) {
		flags |= MHD_USE_TLS;
		if (!tls->client_ca_pem)
			opts[2].option = MHD_OPTION_END;
	} else {
		opts[0].option = MHD_OPTION_END;
	}

	/* No MHD_USE_ERROR_LOG: MHD would print to stderr itself. SIGPIPE
	 * needs nothing: on Linux MHD sends with MSG_NOSIGNAL. */
	if (sa->sa.sa_family == AF_INET6)
		flags |= IN6_IS_ADDR_UNSPECIFIED(&sa->in6.sin6_addr) ? MHD_USE_DUAL_STACK
								     : MHD_USE_IPv6;
	return MHD_start_daemon(flags, 0, NULL, NULL, on_request, h,
				MHD_OPTION_SOCK_ADDR, &sa->sa,
				MHD_OPTION_CONNECTION_LIMIT, (unsigned int)HTTPD_MAX_CONNS,
				MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)HTTPD_IDLE_TIMEOUT_S,
				MHD_OPTION_URI_LOG_CALLBACK, on_uri, h,
				MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
				MHD_OPTION_ARRAY, opts,
				MHD_OPTION_END);
}

int httpd__start(const char *addr, struct httpd **out, char *err, size_t errlen)
{
	return httpd__start_tls(addr, NULL, out, err, errlen);
}

int httpd__start_tls(const char *addr, const struct httpd_tls *tls, struct httpd **out,
		     char *err, size_t errlen)
{
	const union MHD_DaemonInfo *info;
	union httpd_sa sa;
	struct httpd *h;
	bool any;
	int ret;

	*out = NULL;
	if (!addr || parse_addr(addr, &sa, &any)) {
		log__errf(err, errlen, "bad listen address '%s': want IP:PORT, [IPv6]:PORT or :PORT",
		     addr ? addr : "");
		return -EINVAL;
	}
	if (tls && (!tls->cert_pem || !tls->key_pem)) {
		log__errf(err, errlen, "HTTPS needs a certificate and its key");
		return -EINVAL;
	}
	h = calloc(1, sizeof(*h));
	if (!h) {
		log__errf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	h->verify_clients = tls && tls->client_ca_pem;
	errno = 0;
	h->mhd = mhd_start(h, &sa, tls);
	if (!h->mhd && any && (errno == EAFNOSUPPORT || errno == EADDRNOTAVAIL)) {
		uint16_t port = sa.in6.sin6_port;

		memset(&sa, 0, sizeof(sa));
		sa.in4.sin_family = AF_INET;
		sa.in4.sin_addr.s_addr = htonl(INADDR_ANY);
		sa.in4.sin_port = port;
		errno = 0;
		h->mhd = mhd_start(h, &sa, tls);
	}
	if (!h->mhd) {
		/* MHD leaves the errno of the failing socket call. */
		ret = errno ? -errno : -EIO;
		if (tls && ret == -EIO)
			log__errf(err, errlen, "cannot serve HTTPS on %s: certificate, key or CA refused",
			     addr);
		else
			log__errf(err, errlen, "cannot listen on %s: %s", addr, strerror(-ret));
		goto fail;
	}
	info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_EPOLL_FD);
	if (!info || info->epoll_fd < 0) {
		ret = -EIO;
		log__errf(err, errlen, "libmicrohttpd has no epoll fd");
		goto fail;
	}
	h->epfd = info->epoll_fd;
	info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_BIND_PORT);
	if (!info || !info->port) {
		ret = -EIO;
		log__errf(err, errlen, "libmicrohttpd did not report the bound port");
		goto fail;
	}
	h->port = info->port;
	if ((ret = httpd__handle(h, "GET", "/healthz", healthz, h)) ||
	    (ret = httpd__handle(h, "GET", "/readyz", readyz, h))) {
		log__errf(err, errlen, "out of memory");
		goto fail;
	}
	*out = h;
	return 0;
fail:
	httpd__stop(h);
	return ret;
}

int httpd__handle(struct httpd *h, const char *method, const char *path,
		  httpd_handler_fn fn, void *ctx)
{
	struct httpd_route *rt, *nr;

	if (!h || !method || !*method || !path || path[0] != '/' || !fn)
		return -EINVAL;
	for (size_t i = 0; i < h->nroutes; i++) {
		rt = &h->routes[i];
		if (!strcmp(rt->method, method) && !strcmp(rt->path, path)) {
			rt->fn = fn;
			rt->ctx = ctx;
			return 0;
		}
	}
	nr = realloc(h->routes, (h->nroutes + 1) * sizeof(*nr));
	if (!nr)
		return -ENOMEM;
	h->routes = nr;
	rt = &nr[h->nroutes];
	rt->method = strdup(method);
	rt->path = strdup(path);
	if (!rt->method || !rt->path) {
		free(rt->method);
		free(rt->path);
		return -ENOMEM;
	}
	rt->fn = fn;
	rt->ctx = ctx;
	h->nroutes++;
	return 0;
}

void httpd__set_ready(struct httpd *h, bool ready)
{
	h->ready = ready;
}

int httpd__fd(const struct httpd *h)
{
	return h->epfd;
}

int httpd__timeout_ms(struct httpd *h)
{
	MHD_UNSIGNED_LONG_LONG t;

	if (MHD_get_timeout(h->mhd, &t) != MHD_YES)
		return -1;
	return t > INT_MAX ? INT_MAX : (int)t;
}

int httpd__run(struct httpd *h)
{
	return MHD_run(h->mhd) == MHD_YES ? 0 : -EIO;
}

uint16_t httpd__port(const struct httpd *h)
{
	return h->port;
}

void httpd__stop(struct httpd *h)
{
	if (!h)
		return;
	/* Runs the completion callback for every open request. */
	if (h->mhd)
		MHD_stop_daemon(h->mhd);
	for (size_t i = 0; i < h->nroutes; i++) {
		free(h->routes[i].method);
		free(h->routes[i].path);
	}
	free(h->routes);
	free(h);
}

/* Prometheus text format. */

static bool prom_reserve(struct prom *p, size_t more)
{
	size_t cap;
	char *nb;

	if (p->err)
		return false;
	if (p->len + more < p->cap)
		return true;
	cap = p->cap ? p->cap : 4096;
	while (cap <= p->len + more)
		cap *= 2;
	nb = realloc(p->buf, cap);
	if (!nb) {
		p->err = -ENOMEM;
		return false;
	}
	p->buf = nb;
	p->cap = cap;
	return true;
}

static void prom_put(struct prom *p, const char *s, size_t n)
{
	if (!prom_reserve(p, n))
		return;
	memcpy(p->buf + p->len, s, n);
	p->len += n;
	p->buf[p->len] = '\0';
}

static void prom_puts(struct prom *p, const char *s)
{
	prom_put(p, s, strlen(s));
}

/* HELP text escapes backslash and newline; label values also '"'. */
static void prom_escaped(struct prom *p, const char *s, bool quote)
{
	for (const char *run = s;; s++) {
		const char *esc = NULL;

		if (*s == '\\')
			esc = "\\\\";
		else if (*s == '\n')
			esc = "\\n";
		else if (*s == '"' && quote)
			esc = "\\\"";
		else if (*s)
			continue;
		prom_put(p, run, (size_t)(s - run));
		if (!esc)
			return;
		prom_puts(p, esc);
		run = s + 1;
	}
}

static bool prom_name_ok(const char *s, bool colon)
{
	if (!s || !*s || (*s >= '0' && *s <= '9'))
		return false;
	for (; *s; s++) {
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '_' || (colon && *s == ':')))
			return false;
	}
	return true;
}

static void prom_fail(struct prom *p, int err)
{
	if (!p->err)
		p->err = err;
}

void prom__help(struct prom *p, const char *name, const char *type, const char *help)
{
	static const char *const types[] = { "counter", "gauge", "histogram", "summary", "untyped" };
	bool type_ok = false;

	for (size_t i = 0; type && i < sizeof(types) / sizeof(types[0]); i++)
		type_ok |= !strcmp(type, types[i]);
	if (!prom_name_ok(name, true) || !type_ok) {
		prom_fail(p, -EINVAL);
		return;
	}
	prom_puts(p, "# HELP ");
	prom_puts(p, name);
	prom_puts(p, " ");
	prom_escaped(p, help ? help : "", false);
	prom_puts(p, "\n# TYPE ");
	prom_puts(p, name);
	prom_puts(p, " ");
	prom_puts(p, type);
	prom_puts(p, "\n");
}

/* Shortest of %.15g and %.17g that reads back as V: counters stay
 * integers and 0.1 stays 0.1. */
static void prom_value(char *buf, size_t len, double v)
{
	if (isnan(v)) {
		snprintf(buf, len, "NaN");
	} else if (isinf(v)) {
		snprintf(buf, len, "%s", v > 0 ? "+Inf" : "-Inf");
	} else {
		snprintf(buf, len, "%.15g", v);
		if (strtod(buf, NULL) != v)
			snprintf(buf, len, "%.17g", v);
	}
}

void prom__sample(struct prom *p, const char *name, double value, ...)
{
	char num[32];
	const char *k, *v;
	bool first = true;
	size_t mark = p->len;
	va_list ap;

	if (p->err)
		return;
	if (!prom_name_ok(name, true)) {
		prom_fail(p, -EINVAL);
		return;
	}
	prom_puts(p, name);
	va_start(ap, value);
	while ((k = va_arg(ap, const char *))) {
		v = va_arg(ap, const char *);
		if (!prom_name_ok(k, false) || !v) {
			prom_fail(p, -EINVAL);
			break;
		}
		prom_puts(p, first ? "{" : ",");
		prom_puts(p, k);
		prom_puts(p, "=\"");
		prom_escaped(p, v, true);
		prom_puts(p, "\"");
		first = false;
	}
	va_end(ap);
	if (!first)
		prom_puts(p, "}");
	prom_value(num, sizeof(num), value);
	prom_puts(p, " ");
	prom_puts(p, num);
	prom_puts(p, "\n");
	if (p->err && p->buf) {	/* no half line */
		p->len = mark;
		p->buf[mark] = '\0';
	}
}

int prom__finish(struct prom *p, struct httpd_response *resp)
{
	int err = p->err;

	if (err) {
		prom__free(p);
		return err;
	}
	resp->content_type = HTTPD_PROM_CONTENT_TYPE;
	resp->body = p->buf;
	resp->body_len = p->len;
	memset(p, 0, sizeof(*p));
	return 0;
}

void prom__free(struct prom *p)
{
	free(p->buf);
	memset(p, 0, sizeof(*p));
}
