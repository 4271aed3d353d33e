// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* HTTP server: routing, bodies and their limits, protocol errors, listen
 * addresses, driven the way sluiced drives it (poll on httpd__fd, then
 * httpd__run) against a plain-socket client on a second thread. Also the
 * Prometheus text builder. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include "httpd.h"

/* ---- Prometheus builder ---- */

static void test_prom_text(void **state)
{
	struct prom p = { 0 };
	struct httpd_response resp = { .status = 200 };

	prom__help(&p, "sluice_flows_total", "counter", "Flows seen.\nBy \\verdict\\ \"x\".");
	prom__sample(&p, "sluice_flows_total", 42, "verdict", "allow", "rule", "a\"b\\c\nd", NULL);
	prom__sample(&p, "sluice_flows_total", 1e20, "verdict", "", NULL);
	prom__help(&p, "sluice_up", "gauge", NULL);
	prom__sample(&p, "sluice_up", 1, NULL);
	prom__sample(&p, "sluice_ratio:x", 0.1, NULL);
	prom__sample(&p, "sluice_nan", 0.0 / 0.0, NULL);
	prom__sample(&p, "sluice_inf", -1.0 / 0.0, NULL);
	prom__sample(&p, "sluice_neg", -3, NULL);
	assert_int_equal(p.err, 0);
	assert_string_equal(p.buf,
		"# HELP sluice_flows_total Flows seen.\\nBy \\\\verdict\\\\ \"x\".\n"
		"# TYPE sluice_flows_total counter\n"
		"sluice_flows_total{verdict=\"allow\",rule=\"a\\\"b\\\\c\\nd\"} 42\n"
		"sluice_flows_total{verdict=\"\"} 1e+20\n"
		"# HELP sluice_up \n"
		"# TYPE sluice_up gauge\n"
		"sluice_up 1\n"
		"sluice_ratio:x 0.1\n"
		"sluice_nan NaN\n"
		"sluice_inf -Inf\n"
		"sluice_neg -3\n");
	assert_int_equal(p.len, strlen(p.buf));
	assert_int_equal(prom__finish(&p, &resp), 0);
	assert_null(p.buf);
	assert_string_equal(resp.content_type, "text/plain; version=0.0.4; charset=utf-8");
	assert_non_null(resp.body);
	assert_int_equal(resp.body_len, strlen(resp.body));
	free(resp.body);
}

static void test_prom_errors(void **state)
{
	struct prom p = { 0 };
	struct httpd_response resp = { .status = 200 };

	prom__sample(&p, "ok", 1, NULL);
	prom__sample(&p, "ok", 2, "bad-label", "v", NULL);
	assert_int_equal(p.err, -EINVAL);
	assert_string_equal(p.buf, "ok 1\n");	/* no half line */
	prom__sample(&p, "ok", 3, NULL);	/* sticky */
	assert_string_equal(p.buf, "ok 1\n");
	assert_int_equal(prom__finish(&p, &resp), -EINVAL);
	assert_null(p.buf);
	assert_null(resp.body);

	prom__sample(&p, "9lives", 1, NULL);
	assert_int_equal(p.err, -EINVAL);
	prom__free(&p);
	prom__sample(&p, "m", 1, "k:x", "v", NULL);	/* no ':' in label names */
	assert_int_equal(p.err, -EINVAL);
	prom__free(&p);
	prom__sample(&p, "m", 1, "k", (const char *)NULL, NULL);
	assert_int_equal(p.err, -EINVAL);
	prom__free(&p);
	prom__help(&p, "m", "countr", "typo");
	assert_int_equal(p.err, -EINVAL);
	prom__free(&p);
	prom__help(&p, "bad name", "gauge", "x");
	assert_int_equal(p.err, -EINVAL);
	prom__free(&p);
}

/* ---- client ---- */

struct exchange {
	int family;		/* AF_INET (127.0.0.1) or AF_INET6 (::1) */
	uint16_t port;
	const char *req;
	size_t req_len;
	bool close_early;	/* send, then hang up without reading */
	char *raw;		/* everything the server sent */
	size_t raw_len;
	int status;
	const char *body;	/* into raw */
	size_t body_len;
	atomic_bool done;
	int err;
};

static void *client_main(void *arg)
{
	struct exchange *x = arg;
	struct timeval tv = { .tv_sec = 10 };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons(x->port),
				   .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_port = htons(x->port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	size_t off = 0, cap = 0;
	int fd;

	fd = socket(x->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		x->err = -errno;
		goto out;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (x->family == AF_INET6 ? connect(fd, (struct sockaddr *)&a6, sizeof(a6))
				  : connect(fd, (struct sockaddr *)&a4, sizeof(a4))) {
		x->err = -errno;
		goto out;
	}
	while (off < x->req_len) {
		ssize_t n = send(fd, x->req + off, x->req_len - off, MSG_NOSIGNAL);

		if (n <= 0) {
			x->err = n ? -errno : -EPIPE;
			goto out;
		}
		off += (size_t)n;
	}
	if (x->close_early)
		goto out;
	for (;;) {
		ssize_t n;

		if (x->raw_len + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 65536;
			x->raw = realloc(x->raw, cap);
			if (!x->raw) {
				x->err = -ENOMEM;
				goto out;
			}
		}
		n = recv(fd, x->raw + x->raw_len, cap - x->raw_len - 1, 0);
		if (n < 0) {
			x->err = -errno;
			goto out;
		}
		if (!n)
			break;
		x->raw_len += (size_t)n;
		x->raw[x->raw_len] = '\0';
	}
out:
	if (fd >= 0)
		close(fd);
	atomic_store(&x->done, true);
	return NULL;
}

/* Run the server as sluiced would until the client is done. */
static void drive(struct httpd *h, struct exchange *x)
{
	struct timespec t0, now;
	pthread_t th;

	assert_int_equal(pthread_create(&th, NULL, client_main, x), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!atomic_load(&x->done)) {
		struct pollfd pfd = { .fd = httpd__fd(h), .events = POLLIN };
		int to = httpd__timeout_ms(h);

		if (to < 0 || to > 20)
			to = 20;	/* to notice the client finishing */
		assert_true(poll(&pfd, 1, to) >= 0);
		assert_int_equal(httpd__run(h), 0);
		clock_gettime(CLOCK_MONOTONIC, &now);
		assert_true(now.tv_sec - t0.tv_sec < 20);
	}
	pthread_join(th, NULL);
	/* Let the server notice a hang-up. */
	for (int i = 0; i < 5; i++) {
		struct pollfd pfd = { .fd = httpd__fd(h), .events = POLLIN };

		poll(&pfd, 1, 10);
		assert_int_equal(httpd__run(h), 0);
	}
	assert_int_equal(x->err, 0);
	if (x->close_early || !x->raw_len)
		return;		/* status 0: closed without an answer */
	assert_int_equal(sscanf(x->raw, "HTTP/1.%*d %d", &x->status), 1);
	x->body = strstr(x->raw, "\r\n\r\n");
	assert_non_null(x->body);
	x->body += 4;
	x->body_len = x->raw_len - (size_t)(x->body - x->raw);
}

/* The value of header NAME in X's response, copied into BUF. */
static const char *header(const struct exchange *x, const char *name, char *buf, size_t len)
{
	size_t nl = strlen(name);

	for (const char *l = strstr(x->raw, "\r\n"); l && l + 2 < x->body; l = strstr(l + 2, "\r\n")) {
		const char *v = l + 2, *e;

		if (strncasecmp(v, name, nl) || v[nl] != ':')
			continue;
		v += nl + 1;
		while (*v == ' ')
			v++;
		e = strstr(v, "\r\n");
		snprintf(buf, len, "%.*s", (int)(e - v), v);
		return buf;
	}
	return NULL;
}

static void exchange_free(struct exchange *x)
{
	free(x->raw);
	x->raw = NULL;
}

static void fetch(struct httpd *h, struct exchange *x, const char *req)
{
	x->family = x->family ? x->family : AF_INET;
	x->port = httpd__port(h);
	x->req = req;
	x->req_len = strlen(req);
	drive(h, x);
}

/* ---- server fixture ---- */

struct seen {
	int calls;
	char method[16];
	char path[64];
	char query[64];
	bool query_null;
	char content_type[64];
	char *body;
	size_t body_len;
};

struct fix {
	struct httpd *h;
	struct seen seen;
	int metric_calls;
};

static int metrics(void *ctx, const struct httpd_request *req, struct httpd_response *resp)
{
	struct fix *f = ctx;
	struct prom p = { 0 };

	f->metric_calls++;
	prom__help(&p, "sluice_scrapes_total", "counter", "Scrapes of this endpoint.");
	prom__sample(&p, "sluice_scrapes_total", f->metric_calls, NULL);
	prom__help(&p, "sluice_rule_hits", "gauge", "Hits by rule.");
	prom__sample(&p, "sluice_rule_hits", 7, "rule", "say \"hi\"\\n", NULL);
	return prom__finish(&p, resp);
}

static int echo(void *ctx, const struct httpd_request *req, struct httpd_response *resp)
{
	struct seen *s = &((struct fix *)ctx)->seen;

	s->calls++;
	snprintf(s->method, sizeof(s->method), "%s", req->method);
	snprintf(s->path, sizeof(s->path), "%s", req->path);
	s->query_null = !req->query;
	snprintf(s->query, sizeof(s->query), "%s", req->query ? req->query : "");
	snprintf(s->content_type, sizeof(s->content_type), "%s",
		 req->content_type ? req->content_type : "");
	assert_int_equal(req->body[req->body_len], '\0');
	free(s->body);
	s->body = malloc(req->body_len + 1);
	assert_non_null(s->body);
	memcpy(s->body, req->body, req->body_len);
	s->body_len = req->body_len;
	resp->status = 202;
	resp->content_type = "application/json";
	resp->body = malloc(req->body_len + 1);
	if (!resp->body)
		return -ENOMEM;
	memcpy(resp->body, req->body, req->body_len);
	resp->body_len = req->body_len;
	return 0;
}

static int failing(void *ctx, const struct httpd_request *req, struct httpd_response *resp)
{
	resp->body = strdup("lost");	/* freed by httpd on error */
	resp->body_len = 4;
	return -EIO;
}

static int setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));
	char err[256] = "";

	assert_non_null(f);
	assert_int_equal(httpd__start("127.0.0.1:0", &f->h, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	assert_true(httpd__port(f->h) > 0);
	assert_true(httpd__fd(f->h) >= 0);
	assert_int_equal(httpd__handle(f->h, "GET", "/metrics", metrics, f), 0);
	assert_int_equal(httpd__handle(f->h, "POST", "/v1/echo", echo, f), 0);
	assert_int_equal(httpd__handle(f->h, "GET", "/fail", failing, f), 0);
	assert_int_equal(httpd__handle(f->h, "GET", "relative", failing, f), -EINVAL);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fix *f = *state;

	httpd__stop(f->h);
	free(f->seen.body);
	free(f);
	return 0;
}

/* ---- server tests ---- */

static void test_metrics(void **state)
{
	struct fix *f = *state;
	struct exchange x = { 0 };
	char buf[128];

	fetch(f->h, &x, "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
	assert_int_equal(x.status, 200);
	assert_string_equal(header(&x, "Content-Type", buf, sizeof(buf)),
			    "text/plain; version=0.0.4; charset=utf-8");
	assert_string_equal(x.body,
		"# HELP sluice_scrapes_total Scrapes of this endpoint.\n"
		"# TYPE sluice_scrapes_total counter\n"
		"sluice_scrapes_total 1\n"
		"# HELP sluice_rule_hits Hits by rule.\n"
		"# TYPE sluice_rule_hits gauge\n"
		"sluice_rule_hits{rule=\"say \\\"hi\\\"\\\\n\"} 7\n");
	exchange_free(&x);

	/* HEAD runs the GET handler and sends no body. */
	memset(&x, 0, sizeof(x));
	fetch(f->h, &x, "HEAD /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
	assert_int_equal(x.status, 200);
	assert_int_equal(x.body_len, 0);
	assert_int_equal(f->metric_calls, 2);
	exchange_free(&x);
}

static void test_health(void **state)
{
	struct fix *f = *state;
	struct exchange x = { 0 };

	fetch(f->h, &x, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
	assert_int_equal(x.status, 200);
	assert_string_equal(x.body, "ok\n");
	exchange_free(&x);

	memset(&x, 0, sizeof(x));
	fetch(f->h, &x, "GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
	assert_int_equal(x.status, 503);
	exchange_free(&x);

	httpd__set_ready(f->h, true);
	memset(&x, 0, sizeof(x));
	fetch(f->h, &x, "GET /readyz HTTP/1.0\r\n\r\n");
	assert_int_equal(x.status, 200);
	assert_string_equal(x.body, "ready\n");
	exchange_free(&x);
	httpd__set_ready(f->h, false);
}

static void test_not_found_and_method(void **state)
{
	struct fix *f = *state;
	struct exchange x = { 0 };
	char buf[128];

	fetch(f->h, &x, "GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
	assert_int_equal(x.status, 404);
	exchange_free(&x);

	/* Exact match only. */
	memset(&x, 0, sizeof(x));
	fetch(f->h, &x, "GET /metrics/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
	assert_int_equal(x.status, 404);
	exchange_free(&x);

	memset(&x, 0, sizeof(x));
	fetch(f->h, &x, "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
			"Connection: close\r\n\r\nhi");
	assert_int_equal(x.status, 405);
	assert_string_equal(header(&x, "Allow", buf, sizeof(buf)), "GET, HEAD");
	exchange_free(&x);

	memset(&x, 0, sizeof(x));
	fetch(f->h, &x, "GET /v1/echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
	assert_int_equal(x.status, 405);
	assert_string_equal(header(&x, "Allow", buf, sizeof(buf)), "POST");
	exchange_free(&x);
	assert_int_equal(f->metric_calls, 0);
	assert_int_equal(f->seen.calls, 0);
}

static void test_handler_error(void **state)
{
	struct fix *f = *state;
	struct exchange x = { 0 };

	fetch(f->h, &x, "GET /fail HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
	assert_int_equal(x.status, 500);
	assert_null(strstr(x.body, "lost"));
	exchange_free(&x);
}

static char *make_body(size_t n)
{
	char *b = malloc(n);

	assert_non_null(b);
	for (size_t i = 0; i < n; i++)
		b[i] = (char)(i * 7 + i / 251);	/* includes NULs and CRLFs */
	return b;
}

static void test_post_body(void **state)
{
	struct fix *f = *state;
	const size_t n = 300000;	/* several reads and callbacks */
	char *body = make_body(n), *req, buf[128];
	struct exchange x = { 0 };
	int hl;

	req = malloc(n + 256);
	assert_non_null(req);
	hl = snprintf(req, 256, "POST /v1/echo?a=1&b=%%20x HTTP/1.1\r\nHost: t\r\n"
		      "Content-Type: application/json\r\nContent-Length: %zu\r\n"
		      "Connection: close\r\n\r\n", n);
	memcpy(req + hl, body, n);
	x.family = AF_INET;
	x.port = httpd__port(f->h);
	x.req = req;
	x.req_len = (size_t)hl + n;
	drive(f->h, &x);
	assert_int_equal(x.status, 202);
	assert_string_equal(header(&x, "Content-Type", buf, sizeof(buf)), "application/json");
	assert_int_equal(f->seen.calls, 1);
	assert_string_equal(f->seen.method, "POST");
	assert_string_equal(f->seen.path, "/v1/echo");
	assert_string_equal(f->seen.query, "a=1&b=%20x");
	assert_string_equal(f->seen.content_type, "application/json");
	assert_int_equal(f->seen.body_len, n);
	assert_memory_equal(f->seen.body, body, n);
	assert_int_equal(x.body_len, n);
	assert_memory_equal(x.body, body, n);
	exchange_free(&x);
	free(req);
	free(body);
}

/* A chunked body, with no Content-Length to size it up front. */
static char *chunked(const char *head, const char *data, size_t n, size_t chunk, size_t *len)
{
	size_t cap = strlen(head) + n + (n / chunk + 2) * 16, off;
	char *req = malloc(cap);

	assert_non_null(req);
	off = (size_t)sprintf(req, "%s", head);
	for (size_t i = 0; i < n; i += chunk) {
		size_t c = n - i < chunk ? n - i : chunk;

		off += (size_t)sprintf(req + off, "%zx\r\n", c);
		memcpy(req + off, data + i, c);
		off += c;
		off += (size_t)sprintf(req + off, "\r\n");
	}
	off += (size_t)sprintf(req + off, "0\r\n\r\n");
	*len = off;
	return req;
}

static void test_post_chunked(void **state)
{
	struct fix *f = *state;
	const size_t n = 100000;
	char *body = make_body(n);
	struct exchange x = { .family = AF_INET };

	x.req = chunked("POST /v1/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
			"Connection: close\r\n\r\n", body, n, 7000, &x.req_len);
	x.port = httpd__port(f->h);
	drive(f->h, &x);
	assert_int_equal(x.status, 202);
	assert_true(f->seen.query_null);
	assert_string_equal(f->seen.content_type, "");
	assert_int_equal(f->seen.body_len, n);
	assert_memory_equal(f->seen.body, body, n);
	exchange_free(&x);
	free((char *)x.req);
	free(body);
}

static void test_too_large(void **state)
{
	struct fix *f = *state;
	const size_t n = HTTPD_MAX_BODY + 1;
	char *body, req[256];
	struct exchange x = { 0 };

	/* Declared too large: refused before the body is sent. */
	snprintf(req, sizeof(req), "POST /v1/echo HTTP/1.1\r\nHost: t\r\n"
		 "Content-Length: %zu\r\nExpect: 100-continue\r\n\r\n", n);
	fetch(f->h, &x, req);
	assert_int_equal(x.status, 413);
	assert_null(strstr(x.raw, "100 Continue"));
	exchange_free(&x);

	/* Found too large while arriving: drained, then refused. */
	body = make_body(n);
	memset(&x, 0, sizeof(x));
	x.family = AF_INET;
	x.req = chunked("POST /v1/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
			"Connection: close\r\n\r\n", body, n, 65536, &x.req_len);
	x.port = httpd__port(f->h);
	drive(f->h, &x);
	assert_int_equal(x.status, 413);
	exchange_free(&x);
	free((char *)x.req);
	free(body);

	/* Exactly the limit is fine. */
	body = make_body(HTTPD_MAX_BODY);
	memset(&x, 0, sizeof(x));
	x.family = AF_INET;
	x.req = chunked("POST /v1/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
			"Connection: close\r\n\r\n", body, HTTPD_MAX_BODY, 65536, &x.req_len);
	x.port = httpd__port(f->h);
	drive(f->h, &x);
	assert_int_equal(x.status, 202);
	assert_int_equal(f->seen.body_len, HTTPD_MAX_BODY);
	assert_memory_equal(f->seen.body, body, HTTPD_MAX_BODY);
	exchange_free(&x);
	free((char *)x.req);
	free(body);
	assert_int_equal(f->seen.calls, 1);
}

static void test_malformed(void **state)
{
	struct fix *f = *state;
	struct exchange x = { 0 };

	/* MHD hangs up on a one-word request line without answering. */
	fetch(f->h, &x, "GARBAGE\r\n\r\n");
	assert_int_equal(x.status, 0);
	assert_int_equal(x.raw_len, 0);
	exchange_free(&x);

	memset(&x, 0, sizeof(x));
	fetch(f->h, &x, "POST /v1/echo\r\n\r\n");
	assert_int_equal(x.status, 400);
	exchange_free(&x);

	memset(&x, 0, sizeof(x));
	fetch(f->h, &x, "POST /v1/echo HTTP/1.1\r\nHost: t\r\nContent-Length: zz\r\n\r\n");
	assert_int_equal(x.status, 400);
	exchange_free(&x);

	memset(&x, 0, sizeof(x));
	fetch(f->h, &x, "POST /v1/echo HTTP/9.9\r\nContent-Length: 1\r\n\r\nx");
	assert_int_equal(x.status, 505);
	exchange_free(&x);
	assert_int_equal(f->seen.calls, 0);

	/* Still serving. */
	memset(&x, 0, sizeof(x));
	fetch(f->h, &x, "GET /healthz HTTP/1.0\r\n\r\n");
	assert_int_equal(x.status, 200);
	exchange_free(&x);
}

static void test_keepalive(void **state)
{
	struct fix *f = *state;
	struct exchange x = { 0 };
	const char *second;

	fetch(f->h, &x, "POST /v1/echo?one HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
			"POST /v1/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
			"Connection: close\r\n\r\nde");
	assert_int_equal(x.status, 202);
	assert_int_equal(f->seen.calls, 2);
	assert_true(f->seen.query_null);
	assert_int_equal(f->seen.body_len, 2);
	assert_memory_equal(f->seen.body, "de", 2);
	second = strstr(x.body, "HTTP/1.1 202");
	assert_non_null(second);
	assert_true(strstr(x.body, "abc") < second);
	assert_string_equal(x.raw + x.raw_len - 2, "de");
	exchange_free(&x);
}

/* A client that hangs up mid-body leaves nothing behind (ASan checks). */
static void test_abort(void **state)
{
	struct fix *f = *state;
	struct exchange x = { .close_early = true };

	fetch(f->h, &x, "POST /v1/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"
			"only a little");
	memset(&x, 0, sizeof(x));
	x.close_early = true;
	fetch(f->h, &x, "POST /v1/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
			"5\r\nhello\r\n");
	assert_int_equal(f->seen.calls, 0);
	/* The server still answers. */
	memset(&x, 0, sizeof(x));
	fetch(f->h, &x, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
	assert_int_equal(x.status, 200);
	exchange_free(&x);
}

struct crowd {
	uint16_t port;
	int answered, refused;
	atomic_bool done;
};

#define CROWD	((int)(HTTPD_MAX_BODY_TOTAL / HTTPD_MAX_BODY) + 1)

/* Declare maximal bodies on more connections than the budget holds, send
 * none: the ones answered at once are refused. */
static void *crowd_main(void *arg)
{
	struct crowd *c = arg;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(c->port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct pollfd pfd[CROWD];
	char req[256], resp[1024];
	int n = CROWD;

	snprintf(req, sizeof(req), "POST /v1/echo HTTP/1.1\r\nHost: t\r\n"
		 "Content-Length: %u\r\n\r\n", HTTPD_MAX_BODY);
	for (int i = 0; i < n; i++) {
		pfd[i].fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		pfd[i].events = POLLIN;
		if (pfd[i].fd < 0 || connect(pfd[i].fd, (struct sockaddr *)&a, sizeof(a)) ||
		    send(pfd[i].fd, req, strlen(req), MSG_NOSIGNAL) != (ssize_t)strlen(req))
			goto out;
	}
	/* Give every request time to reach the server and be answered. */
	usleep(300 * 1000);
	c->answered = poll(pfd, (nfds_t)n, 0);
	if (c->answered < 0)
		goto out;
	for (int i = 0; i < n; i++) {
		if (pfd[i].revents & POLLIN) {
			ssize_t r = recv(pfd[i].fd, resp, sizeof(resp) - 1, 0);

			int status = 0;

			resp[r > 0 ? r : 0] = '\0';
			sscanf(resp, "HTTP/1.%*d %d", &status);
			c->refused += status == 503;
		}
	}
out:
	for (int i = 0; i < n; i++)
		close(pfd[i].fd);
	atomic_store(&c->done, true);
	return NULL;
}

/* Bodies in flight share one memory budget; hanging up gives it back. */
static void test_body_budget(void **state)
{
	struct fix *f = *state;
	struct exchange x = { 0 };
	int first = 0;

	for (int round = 0; round < 2; round++) {
		struct crowd c = { .port = httpd__port(f->h) };
		pthread_t th;

		assert_int_equal(pthread_create(&th, NULL, crowd_main, &c), 0);
		while (!atomic_load(&c.done)) {
			struct pollfd pfd = { .fd = httpd__fd(f->h), .events = POLLIN };

			poll(&pfd, 1, 20);
			assert_int_equal(httpd__run(f->h), 0);
		}
		pthread_join(th, NULL);
		for (int i = 0; i < 5; i++) {
			struct pollfd pfd = { .fd = httpd__fd(f->h), .events = POLLIN };

			poll(&pfd, 1, 10);
			assert_int_equal(httpd__run(f->h), 0);
		}
		assert_true(c.answered >= 1 && c.answered < CROWD);
		assert_int_equal(c.refused, c.answered);
		if (round)	/* a leak would refuse more the second time */
			assert_int_equal(c.refused, first);
		first = c.refused;
	}
	fetch(f->h, &x, "POST /v1/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n"
			"Connection: close\r\n\r\nz");
	assert_int_equal(x.status, 202);
	exchange_free(&x);
}

/* A replaced route takes effect; a route added after start is served. */
static void test_handle_later(void **state)
{
	struct fix *f = *state;
	struct exchange x = { 0 };

	assert_int_equal(httpd__handle(f->h, "GET", "/healthz", failing, f), 0);
	assert_int_equal(httpd__handle(f->h, "PUT", "/v1/echo", echo, f), 0);
	fetch(f->h, &x, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
	assert_int_equal(x.status, 500);
	exchange_free(&x);
	memset(&x, 0, sizeof(x));
	fetch(f->h, &x, "PUT /v1/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n"
			"Connection: close\r\n\r\nz");
	assert_int_equal(x.status, 202);
	assert_string_equal(f->seen.method, "PUT");
	exchange_free(&x);
}

/* ---- listen addresses ---- */

static void test_addresses(void **state)
{
	static const char *const bad[] = {
		"", "9090", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1",
		"127.0.0.1:80x", "localhost:80", "::1:80", "[::1]", "[::1]80", "[127.0.0.1]:80",
		"[::1:80", "1.2.3.4.5:80",
	};
	struct httpd *h, *h2;
	struct exchange x = { 0 };
	char err[256], addr[64];
	int ret;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		h = (struct httpd *)&err;
		assert_int_equal(httpd__start(bad[i], &h, err, sizeof(err)), -EINVAL);
		assert_null(h);
		assert_non_null(strstr(err, "bad listen address"));
	}
	assert_int_equal(httpd__start(NULL, &h, NULL, 0), -EINVAL);

	/* ":port" is every address; IPv4 clients too (dual stack). */
	assert_int_equal(httpd__start(":0", &h, err, sizeof(err)), 0);
	fetch(h, &x, "GET /healthz HTTP/1.0\r\n\r\n");
	assert_int_equal(x.status, 200);
	exchange_free(&x);

	/* Port taken. */
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", httpd__port(h));
	assert_int_equal(httpd__start(addr, &h2, err, sizeof(err)), -EADDRINUSE);
	assert_null(h2);
	assert_non_null(strstr(err, addr));
	httpd__stop(h);

	assert_int_equal(httpd__start("192.0.2.1:0", &h, err, sizeof(err)), -EADDRNOTAVAIL);

	ret = httpd__start("[::1]:0", &h, err, sizeof(err));
	if (ret == -EADDRNOTAVAIL || ret == -EAFNOSUPPORT)
		return;		/* no IPv6 here */
	assert_int_equal(ret, 0);
	memset(&x, 0, sizeof(x));
	x.family = AF_INET6;
	fetch(h, &x, "GET /healthz HTTP/1.0\r\n\r\n");
	assert_int_equal(x.status, 200);
	exchange_free(&x);
	httpd__stop(h);
	httpd__stop(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_prom_text),
		cmocka_unit_test(test_prom_errors),
		cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
		cmocka_unit_test_setup_teardown(test_health, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_found_and_method, setup, teardown),
		cmocka_unit_test_setup_teardown(test_handler_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_post_body, setup, teardown),
		cmocka_unit_test_setup_teardown(test_post_chunked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_large, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keepalive, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abort, setup, teardown),
		cmocka_unit_test_setup_teardown(test_body_budget, setup, teardown),
		cmocka_unit_test_setup_teardown(test_handle_later, setup, teardown),
		cmocka_unit_test(test_addresses),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
