// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Kubernetes client: line splitting and chunk reassembly, backoff bounds,
 * kubeconfig and in-cluster configuration, and the list/watch state machine
 * and one-shot requests against a scripted HTTP server on a second thread,
 * driven the way sluiced drives it (poll on kube__fd, then kube__run). The
 * protocol against a real-protocol test API server: tests/kube/. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include "kube.h"

/* ---- helpers -------------------------------------------------------- */

static char tmpdir[64];

static void mk_tmpdir(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/sluice-kube-XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
}

static void rm_tmpdir(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	assert_int_equal(system(cmd), 0);
}

static void write_file(const char *name, const char *text)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static char *b64(const char *s)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t n = strlen(s), i, o = 0;
	char *out = malloc(n / 3 * 4 + 8);

	for (i = 0; i + 2 < n; i += 3) {
		uint32_t v = (unsigned char)s[i] << 16 | (unsigned char)s[i + 1] << 8 |
			     (unsigned char)s[i + 2];

		out[o++] = tab[v >> 18];
		out[o++] = tab[v >> 12 & 63];
		out[o++] = tab[v >> 6 & 63];
		out[o++] = tab[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (unsigned char)s[i] << 16;

		out[o++] = tab[v >> 18];
		out[o++] = tab[v >> 12 & 63];
		out[o++] = '=';
		out[o++] = '=';
	} else if (n - i == 2) {
		uint32_t v = (unsigned char)s[i] << 16 | (unsigned char)s[i + 1] << 8;

		out[o++] = tab[v >> 18];
		out[o++] = tab[v >> 12 & 63];
		out[o++] = tab[v >> 6 & 63];
		out[o++] = '=';
	}
	out[o] = '\0';
	return out;
}

#define CA_PEM "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
#define KEY_PEM "-----BEGIN PRIVATE KEY-----\nMIIEfake\n-----END PRIVATE KEY-----\n"

/* ---- lines ----------------------------------------------------------- */

static void test_lines_basic(void **state)
{
	struct kube_lines l = {};
	size_t len;
	char *s;

	assert_int_equal(kube__lines_feed(&l, "one\ntwo\r\n\nthr", 13), 0);
	s = kube__lines_next(&l, &len);
	assert_string_equal(s, "one");
	assert_int_equal(len, 3);
	assert_string_equal(kube__lines_next(&l, &len), "two");
	s = kube__lines_next(&l, &len);
	assert_string_equal(s, "");
	assert_int_equal(len, 0);
	assert_null(kube__lines_next(&l, &len));
	assert_int_equal(kube__lines_partial(&l), 3);
	assert_int_equal(kube__lines_feed(&l, "ee", 2), 0);
	assert_null(kube__lines_next(&l, &len));
	assert_int_equal(kube__lines_feed(&l, "\n", 1), 0);
	assert_string_equal(kube__lines_next(&l, &len), "three");
	assert_int_equal(kube__lines_partial(&l), 0);

	/* end of stream: a last line without its newline */
	assert_int_equal(kube__lines_feed(&l, "last\r", 5), 0);
	assert_null(kube__lines_next(&l, &len));
	kube__lines_finish(&l);
	assert_string_equal(kube__lines_next(&l, &len), "last");
	kube__lines_finish(&l);
	assert_null(kube__lines_next(&l, &len));
	kube__lines_free(&l);
}

/* A stream of events cut at every possible place, also byte by byte, comes
 * out as the same lines; lines handed out stay valid until the next feed. */
static void test_lines_reassembly(void **state)
{
	char stream[4096] = "", want[40][100];
	size_t n = 0, cut, i, len;

	for (i = 0; i < 40; i++) {
		snprintf(want[i], sizeof(want[i]),
			 "{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"name\":\"p%zu\"}}}", i);
		n += snprintf(stream + n, sizeof(stream) - n, "%s%s", want[i], i % 3 ? "\n" : "\r\n");
	}
	for (cut = 1; cut <= n; cut += (cut < 80 ? 1 : 37)) {
		struct kube_lines l = { .max = 100 };
		size_t got = 0, off;
		char *s;

		for (off = 0; off < n; off += cut) {
			size_t take = n - off < cut ? n - off : cut;

			assert_int_equal(kube__lines_feed(&l, stream + off, take), 0);
			while ((s = kube__lines_next(&l, &len))) {
				assert_true(got < 40);
				assert_string_equal(s, want[got]);
				assert_int_equal(len, strlen(want[got]));
				got++;
			}
		}
		assert_int_equal(got, 40);
		assert_int_equal(kube__lines_partial(&l), 0);
		kube__lines_free(&l);
	}
}

static void test_lines_limits(void **state)
{
	struct kube_lines l = { .max = 8 };
	size_t len;

	/* exactly max is fine, with or without a CR */
	assert_int_equal(kube__lines_feed(&l, "12345678\n1234", 13), 0);
	assert_int_equal(kube__lines_feed(&l, "5678\r", 5), 0);
	assert_int_equal(kube__lines_feed(&l, "\n", 1), 0);
	assert_string_equal(kube__lines_next(&l, &len), "12345678");
	assert_string_equal(kube__lines_next(&l, &len), "12345678");
	kube__lines_free(&l);

	/* one more byte is not, complete or partial, in one feed or many */
	l = (struct kube_lines){ .max = 8 };
	assert_int_equal(kube__lines_feed(&l, "123456789\n", 10), -E2BIG);
	kube__lines_free(&l);
	l = (struct kube_lines){ .max = 8 };
	assert_int_equal(kube__lines_feed(&l, "12345", 5), 0);
	assert_int_equal(kube__lines_feed(&l, "6789", 4), -E2BIG);
	kube__lines_free(&l);
	l = (struct kube_lines){ .max = 8 };
	assert_int_equal(kube__lines_feed(&l, "12345678\r", 9), 0);
	assert_int_equal(kube__lines_feed(&l, "x", 1), -E2BIG);
	kube__lines_free(&l);

	/* a NUL byte is never JSON */
	l = (struct kube_lines){};
	assert_int_equal(kube__lines_feed(&l, "ab\0c\n", 5), -EILSEQ);
	kube__lines_free(&l);

	/* the default limit is 16 MiB */
	l = (struct kube_lines){};
	{
		size_t big = (16u << 20) + 1;
		char *p = malloc(big);

		memset(p, 'x', big);
		assert_int_equal(kube__lines_feed(&l, p, big - 1), 0);
		assert_int_equal(kube__lines_feed(&l, p, 1), -E2BIG);
		free(p);
	}
	kube__lines_free(&l);
}

/* ---- backoff --------------------------------------------------------- */

static void test_backoff_bounds(void **state)
{
	struct kube_backoff b = { .base_ms = 250, .max_ms = 30000 };
	unsigned cap[] = { 250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000 };
	uint32_t rnds[] = { 0, 1, 0xffffffffu, 12345, 0x80000000u };

	for (size_t r = 0; r < sizeof(rnds) / sizeof(rnds[0]); r++) {
		kube__backoff_reset(&b);
		for (size_t i = 0; i < sizeof(cap) / sizeof(cap[0]); i++) {
			unsigned d = kube__backoff_next(&b, rnds[r]);

			assert_in_range(d, cap[i] / 2, cap[i]);
		}
	}
	/* the extremes are reachable: jitter covers the whole range */
	kube__backoff_reset(&b);
	assert_int_equal(kube__backoff_next(&b, 0), 125);
	kube__backoff_reset(&b);
	assert_int_equal(kube__backoff_next(&b, 125), 250);
	/* random values stay in range, and never pass max */
	srand(1);
	kube__backoff_reset(&b);
	for (int i = 0; i < 10000; i++) {
		unsigned d = kube__backoff_next(&b, (uint32_t)rand());

		assert_true(d <= 30000);
		if (i > 8)
			assert_true(d >= 15000);
	}
	kube__backoff_reset(&b);
	assert_true(kube__backoff_next(&b, (uint32_t)rand()) <= 250);
	/* max below base: max wins */
	b = (struct kube_backoff){ .base_ms = 1000, .max_ms = 300 };
	assert_in_range(kube__backoff_next(&b, 7), 150, 300);
	assert_in_range(kube__backoff_next(&b, 7), 150, 300);
}

/* ---- kubeconfig ------------------------------------------------------ */

static void kc_write(const char *body)
{
	write_file("config", body);
}

static int kc_load(const char *context, struct kube_config *cfg, char *err, size_t errlen)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/config", tmpdir);
	err[0] = '\0';
	return kube__config_kubeconfig(path, context, cfg, err, errlen);
}

static void test_kubeconfig_token_data(void **state)
{
	struct kube_config cfg;
	char *ca = b64(CA_PEM), *crt = b64(CA_PEM), *key = b64(KEY_PEM), text[4096], err[512];

	mk_tmpdir();
	snprintf(text, sizeof(text),
		 "apiVersion: v1\n"
		 "kind: Config\n"
		 "current-context: prod\n"
		 "clusters:\n"
		 "- name: other\n"
		 "  cluster: {server: 'https://10.9.9.9'}\n"
		 "- name: prod\n"
		 "  cluster:\n"
		 "    server: https://10.0.0.1:6443/\n"
		 "    certificate-authority-data: %s\n"
		 "contexts:\n"
		 "- name: prod\n"
		 "  context: {cluster: prod, user: admin, namespace: agents}\n"
		 "- name: certs\n"
		 "  context: {cluster: prod, user: certuser}\n"
		 "users:\n"
		 "- name: admin\n"
		 "  user:\n"
		 "    token: \"  abc.def  \"\n"
		 "- name: certuser\n"
		 "  user:\n"
		 "    client-certificate-data: %s\n"
		 "    client-key-data: |\n"
		 "      %.*s\n"
		 "      %s\n",
		 ca, crt, 20, key, key + 20);
	kc_write(text);
	assert_int_equal(kc_load(NULL, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg.server, "https://10.0.0.1:6443");
	assert_string_equal(cfg.ns, "agents");
	assert_string_equal(cfg.token, "abc.def");
	assert_null(cfg.token_file);
	assert_int_equal(cfg.ca.len, strlen(CA_PEM));
	assert_memory_equal(cfg.ca.data, CA_PEM, cfg.ca.len);
	assert_null(cfg.cert.data);
	assert_false(cfg.insecure);
	kube__config_free(&cfg);

	/* another context; base64 split over lines (a block scalar) */
	assert_int_equal(kc_load("certs", &cfg, err, sizeof(err)), 0);
	assert_null(cfg.token);
	assert_null(cfg.ns);
	assert_memory_equal(cfg.cert.data, CA_PEM, cfg.cert.len);
	assert_int_equal(cfg.key.len, strlen(KEY_PEM));
	assert_memory_equal(cfg.key.data, KEY_PEM, cfg.key.len);
	kube__config_free(&cfg);
	free(ca);
	free(crt);
	free(key);
	rm_tmpdir();
}

static void test_kubeconfig_files(void **state)
{
	struct kube_config cfg;
	char text[2048], err[512];

	mk_tmpdir();
	write_file("ca.crt", CA_PEM);
	write_file("client.crt", CA_PEM);
	write_file("client.key", KEY_PEM);
	write_file("token", "tok-1\n");
	snprintf(text, sizeof(text),
		 "current-context: c\n"
		 "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:8080',"
		 " certificate-authority: ca.crt}}]\n"
		 "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
		 "users: [{name: u, user: {tokenFile: token, client-certificate: %s/client.crt,"
		 " client-key: client.key}}]\n", tmpdir);
	kc_write(text);
	assert_int_equal(kc_load(NULL, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg.server, "http://127.0.0.1:8080");
	assert_string_equal(cfg.token, "tok-1");
	assert_non_null(strstr(cfg.token_file, tmpdir));
	assert_string_equal(strrchr(cfg.token_file, '/'), "/token");
	assert_memory_equal(cfg.ca.data, CA_PEM, cfg.ca.len);
	assert_memory_equal(cfg.cert.data, CA_PEM, cfg.cert.len);
	assert_memory_equal(cfg.key.data, KEY_PEM, cfg.key.len);
	kube__config_free(&cfg);

	/* insecure, no user at all */
	kc_write("current-context: c\n"
		 "clusters: [{name: k, cluster: {server: 'https://h', insecure-skip-tls-verify: true}}]\n"
		 "contexts: [{name: c, context: {cluster: k}}]\n");
	assert_int_equal(kc_load(NULL, &cfg, err, sizeof(err)), 0);
	assert_true(cfg.insecure);
	assert_null(cfg.ca.data);
	assert_null(cfg.token);
	kube__config_free(&cfg);

	/* $KUBECONFIG when no path is given */
	{
		char path[256];

		snprintf(path, sizeof(path), "%s/config", tmpdir);
		setenv("KUBECONFIG", path, 1);
		assert_int_equal(kube__config_kubeconfig(NULL, NULL, &cfg, err, sizeof(err)), 0);
		assert_string_equal(cfg.server, "https://h");
		kube__config_free(&cfg);
		unsetenv("KUBECONFIG");
	}
	rm_tmpdir();
}

struct kc_bad {
	const char *yaml;
	const char *context;
	const char *msg;	/* a part of the message */
};

static void test_kubeconfig_errors(void **state)
{
	char good_ca[512], bad_pem[512];
	char *a = b64(CA_PEM), *np = b64("not a certificate");
	struct kube_config cfg;
	char err[512];
	size_t i;

	snprintf(good_ca, sizeof(good_ca), "%s", a);
	snprintf(bad_pem, sizeof(bad_pem), "%s", np);
	free(a);
	free(np);
#define HEAD "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
#define CL "clusters: [{name: k, cluster: {server: 'https://h'}}]\n"
	char y_badpem[1024], y_both[1024];

	snprintf(y_badpem, sizeof(y_badpem), HEAD CL
		 "users: [{name: u, user: {client-certificate-data: %s, client-key-data: %s}}]\n",
		 bad_pem, good_ca);
	snprintf(y_both, sizeof(y_both), HEAD
		 "clusters: [{name: k, cluster: {server: 'https://h', certificate-authority-data: %s,"
		 " insecure-skip-tls-verify: true}}]\nusers: [{name: u, user: {}}]\n", good_ca);
	const struct kc_bad bad[] = {
		{ "clusters: []\n", NULL, "current-context is not set" },
		{ HEAD CL "users: [{name: u, user: {}}]\n", "nope", "contexts: no entry named \"nope\"" },
		{ HEAD "users: [{name: u, user: {}}]\n", NULL, "clusters: no entry named \"k\"" },
		{ HEAD CL, NULL, "users: no entry named \"u\"" },
		{ HEAD "clusters: [{name: k, cluster: {}}]\n", NULL, "clusters[k].cluster.server is missing" },
		{ HEAD "clusters: [{name: k, cluster: {server: 'ftp://h'}}]\n", NULL,
		  "clusters[k].cluster.server: not an http(s) URL" },
		{ HEAD "clusters: [{name: k, cluster: {server: [a]}}]\n", NULL,
		  "clusters[k].cluster.server: expected a string" },
		{ HEAD "clusters: [{name: k, cluster: {server: 'https://h', certificate-authority-data: '@@@'}}]\n",
		  NULL, "clusters[k].cluster.certificate-authority-data: invalid base64" },
		{ HEAD "clusters: [{name: k, cluster: {server: 'https://h', certificate-authority: /nonexistent/ca}}]\n",
		  NULL, "clusters[k].cluster.certificate-authority: cannot read /nonexistent/ca" },
		{ HEAD "clusters: [{name: k, cluster: {server: 'https://h', insecure-skip-tls-verify: maybe}}]\n",
		  NULL, "insecure-skip-tls-verify: expected true or false" },
		{ y_both, NULL, "certificate-authority(-data) and insecure-skip-tls-verify together" },
		{ y_badpem, NULL, "users[u].user.client-certificate-data: no PEM block" },
		{ HEAD CL "users: [{name: u, user: {client-key-data: '@'}}]\n", NULL,
		  "users[u].user.client-key-data: invalid base64" },
		{ HEAD CL "users: [{name: u, user: {exec: {command: aws}}}]\n", NULL,
		  "users[u].user.exec is not supported" },
		{ HEAD CL "users: [{name: u, user: {auth-provider: {name: gcp}}}]\n", NULL,
		  "users[u].user.auth-provider is not supported" },
		{ HEAD CL "users: [{name: u, user: {tokenFile: /nonexistent/token}}]\n", NULL,
		  "users[u].user.tokenFile: /nonexistent/token: No such file" },
		{ HEAD CL "users: [{name: u, user: {token: \"a\\nb\"}}]\n", NULL,
		  "users[u].user.token: empty or has control characters" },
		{ "current-context: c\ncontexts: [{name: c, context: {user: u}}]\n", NULL,
		  "contexts[c].context.cluster is missing" },
		{ "current-context: c\ncontexts: {c: 1}\n", NULL, "contexts: expected a list" },
		{ "- a\n- b\n", NULL, "not a kubeconfig" },
		{ "a: [1, 2\nb: c\n", NULL, "/config:2:2: did not find expected" },
	};

	mk_tmpdir();
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc;

		kc_write(bad[i].yaml);
		memset(&cfg, 0xa5, sizeof(cfg));
		rc = kc_load(bad[i].context, &cfg, err, sizeof(err));
		if (rc >= 0 || !strstr(err, bad[i].msg))
			fail_msg("case %zu: rc %d, message \"%s\", want \"%s\"", i, rc, err, bad[i].msg);
		/* nothing to free after an error */
		assert_null(cfg.server);
		assert_null(cfg.ca.data);
		assert_null(cfg.token);
	}
	/* the file itself */
	{
		char path[256];

		snprintf(path, sizeof(path), "%s/missing", tmpdir);
		assert_int_equal(kube__config_kubeconfig(path, NULL, &cfg, err, sizeof(err)), -ENOENT);
		assert_non_null(strstr(err, "missing: No such file"));
	}
	rm_tmpdir();
#undef HEAD
#undef CL
}

static void test_incluster(void **state)
{
	struct kube_config cfg;
	char err[512];

	mk_tmpdir();
	unsetenv("KUBERNETES_SERVICE_HOST");
	unsetenv("KUBERNETES_SERVICE_PORT");
	assert_int_equal(kube__config_incluster(tmpdir, &cfg, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "KUBERNETES_SERVICE_HOST"));

	setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
	setenv("KUBERNETES_SERVICE_PORT", "443", 1);
	assert_int_equal(kube__config_incluster(tmpdir, &cfg, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "/token: No such file"));
	write_file("token", "\n");
	assert_int_equal(kube__config_incluster(tmpdir, &cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "/token: empty token"));
	write_file("token", "eyJhbGciOi.x.y\n");
	assert_int_equal(kube__config_incluster(tmpdir, &cfg, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "/ca.crt: No such file"));
	write_file("ca.crt", "garbage");
	assert_int_equal(kube__config_incluster(tmpdir, &cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "/ca.crt: no PEM certificate"));
	write_file("ca.crt", CA_PEM);
	assert_int_equal(kube__config_incluster(tmpdir, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg.server, "https://10.96.0.1:443");
	assert_string_equal(cfg.token, "eyJhbGciOi.x.y");
	assert_non_null(strstr(cfg.token_file, "/token"));
	assert_memory_equal(cfg.ca.data, CA_PEM, cfg.ca.len);
	assert_null(cfg.ns);
	kube__config_free(&cfg);

	setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
	write_file("namespace", "kube-system\n");
	assert_int_equal(kube__config_incluster(tmpdir, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg.server, "https://[fd00::1]:443");
	assert_string_equal(cfg.ns, "kube-system");
	kube__config_free(&cfg);

	setenv("KUBERNETES_SERVICE_PORT", "https", 1);
	assert_int_equal(kube__config_incluster(tmpdir, &cfg, err, sizeof(err)), -EINVAL);
	unsetenv("KUBERNETES_SERVICE_HOST");
	unsetenv("KUBERNETES_SERVICE_PORT");
	rm_tmpdir();
}

/* ---- a scripted HTTP server ----------------------------------------- */

/* One step per expected request, served in order, one connection each.
 * A response is a list of pieces written with a pause between them, so an
 * event can be cut across chunks and across reads. */
struct step {
	const char *want;		/* in the request line and headers */
	const char *pieces[8];		/* NULL-ended; "@HOLD" waits for the client to go */
};

struct script {
	const struct step *steps;
	size_t nsteps;
	int lfd;
	uint16_t port;
	pthread_t th;
	atomic_int served;		/* requests received */
	char requests[16][1024];
	atomic_bool stop;
};

static void *script_main(void *arg)
{
	struct script *s = arg;

	for (size_t i = 0; i < s->nsteps && !s->stop; i++) {
		struct pollfd p = { .fd = s->lfd, .events = POLLIN };
		char req[4096];
		size_t n = 0;
		int c;

		while (!s->stop && poll(&p, 1, 50) == 0)
			;
		if (s->stop)
			break;
		c = accept(s->lfd, NULL, NULL);
		if (c < 0)
			break;
		/* the headers, and a body of Content-Length */
		while (n < sizeof(req) - 1) {
			ssize_t r = recv(c, req + n, sizeof(req) - 1 - n, 0);
			char *end, *cl;

			if (r <= 0)
				break;
			n += r;
			req[n] = '\0';
			end = strstr(req, "\r\n\r\n");
			if (!end)
				continue;
			cl = strcasestr(req, "Content-Length: ");
			if (!cl || (size_t)(end + 4 - req) + strtoul(cl + 16, NULL, 10) <= n)
				break;
		}
		snprintf(s->requests[i < 16 ? i : 15], sizeof(s->requests[0]), "%s", req);
		atomic_fetch_add(&s->served, 1);
		if (!strstr(req, s->steps[i].want)) {
			fprintf(stderr, "step %zu: want \"%s\" in:\n%s\n", i, s->steps[i].want, req);
			close(c);
			break;
		}
		for (const char *const *pc = s->steps[i].pieces; *pc; pc++) {
			if (!strcmp(*pc, "@HOLD")) {
				char b[256];
				struct pollfd q = { .fd = c, .events = POLLIN };

				while (!s->stop && poll(&q, 1, 50) >= 0) {
					if (q.revents && recv(c, b, sizeof(b), 0) <= 0)
						break;
				}
				break;
			}
			if (send(c, *pc, strlen(*pc), MSG_NOSIGNAL) < 0)
				break;
			usleep(20000);
		}
		close(c);
	}
	return NULL;
}

static void script_start(struct script *s, const struct step *steps, size_t n)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);

	memset(s, 0, sizeof(*s));
	s->steps = steps;
	s->nsteps = n;
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s->lfd >= 0);
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(s->lfd, 16), 0);
	assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &alen), 0);
	s->port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&s->th, NULL, script_main, s), 0);
}

static void script_stop(struct script *s)
{
	s->stop = true;
	pthread_join(s->th, NULL);
	close(s->lfd);
}

/* Run K until COND(arg) or the deadline. */
static bool drive(struct kube *k, bool (*cond)(void *), void *arg, int ms)
{
	struct timespec t0, t;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		struct pollfd p = { .fd = kube__fd(k), .events = POLLIN };

		if (cond(arg))
			return true;
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > ms)
			return false;
		if (poll(&p, 1, 20) > 0)
			assert_int_equal(kube__run(k), 0);
	}
}

#define HDR200 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
#define CHUNKED HDR200 "Transfer-Encoding: chunked\r\n\r\n"

struct rec {
	char log[8192];
	int errors;
	struct script *s;
	int want_served;
};

static void rec_add(struct rec *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void rec_add(struct rec *r, const char *fmt, ...)
{
	size_t n = strlen(r->log);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->log + n, sizeof(r->log) - n, fmt, ap);
	va_end(ap);
}

static void on_reset(void *ctx)
{
	rec_add(ctx, "reset;");
}

static void on_event(void *ctx, enum kube_event_type type, const cJSON *obj)
{
	const cJSON *md = cJSON_GetObjectItem(obj, "metadata");

	rec_add(ctx, "%c:%s:%s;", "AMD"[type], cJSON_GetObjectItem(md, "name")->valuestring,
		cJSON_GetObjectItem(md, "resourceVersion")->valuestring);
}

static void on_synced(void *ctx)
{
	rec_add(ctx, "synced;");
}

static void on_error(void *ctx, const char *msg)
{
	struct rec *r = ctx;

	r->errors++;
	rec_add(ctx, "error(%s);", msg);
}

static bool served(void *arg)
{
	struct rec *r = arg;

	return atomic_load(&r->s->served) >= r->want_served;
}

#define POD(n, rv) "{\"metadata\":{\"name\":\"" n "\",\"resourceVersion\":\"" rv "\"}}"
#define EV(t, n, rv) "{\"type\":\"" t "\",\"object\":" POD(n, rv) "}\n"

static const char page1[] = "{\"kind\":\"PodList\",\"metadata\":{\"resourceVersion\":\"99\","
	"\"continue\":\"tok/1=\"},\"items\":[" POD("a", "10") "," POD("b", "11") "]}";
static const char page2[] = "{\"kind\":\"PodList\",\"metadata\":{\"resourceVersion\":\"99\"},"
	"\"items\":[" POD("c", "12") "]}";
static const char relist[] = "{\"kind\":\"PodList\",\"metadata\":{\"resourceVersion\":\"200\"},"
	"\"items\":[" POD("z", "150") "]}";
static const char ev_added[] = EV("ADDED", "d", "101");

static char *resp(const char *status_line, const char *body)
{
	char *s;

	assert_true(asprintf(&s, "%s\r\nContent-Type: application/json\r\nConnection: close\r\n"
			     "Content-Length: %zu\r\n\r\n%s", status_line, strlen(body), body) > 0);
	return s;
}

static char *fixed_len(const char *body)
{
	return resp("HTTP/1.1 200 OK", body);
}

static char *chunk(const char *data)
{
	char *s;

	assert_true(asprintf(&s, "%zx\r\n%s\r\n", strlen(data), data) > 0);
	return s;
}

/* list in two pages, a watch whose first event is cut in three chunks over
 * three writes, a bookmark, 410 -> relist, 500 -> backoff, a clean end ->
 * rewatch from the last RV, a stall -> reconnect, garbage -> reconnect. */
static void test_watch_state_machine(void **state)
{
	char *p1 = fixed_len(page1), *p2 = fixed_len(page2), *p3 = fixed_len(relist);
	char *bm = chunk("{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{\"resourceVersion\":\"105\"}}}\n");
	char *gone = chunk("{\"type\":\"ERROR\",\"object\":{\"code\":410}}\n\n");
	char *e500 = resp("HTTP/1.1 500 Internal Server Error", "{\"kind\":\"Status\",\"message\":\"etcd is sad\"}");
	char *mod = chunk(EV("MODIFIED", "z", "201"));
	char c1[64], c2[64], c3[128];
	const size_t cut1 = 10, cut2 = 30;
	struct step steps[] = {
		{ "GET /api/v1/pods?limit=2&fieldSelector=spec.nodeName%3Dn1 HTTP/1.1", { p1, NULL } },
		{ "GET /api/v1/pods?limit=2&continue=tok%2F1%3D&fieldSelector=spec.nodeName%3Dn1 ",
		  { p2, NULL } },
		{ "&resourceVersion=99&fieldSelector=spec.nodeName%3Dn1 ",
		  { CHUNKED, c1, c2, c3, bm, gone, "0\r\n\r\n", NULL } },
		{ "GET /api/v1/pods?limit=2&fieldSelector", { p3, NULL } },
		{ "resourceVersion=200&", { e500, NULL } },
		{ "resourceVersion=200&", { CHUNKED, mod, "0\r\n\r\n", NULL } },
		{ "resourceVersion=201&", { CHUNKED, "@HOLD", NULL } },
		{ "resourceVersion=201&", { CHUNKED, "5\r\nnope\n\r\n", "@HOLD", NULL } },
		{ "resourceVersion=201&", { CHUNKED, "@HOLD", NULL } },
	};
	struct kube_opts o = { .list_limit = 2, .stall_ms = 400, .backoff_base_ms = 20,
			       .backoff_max_ms = 100, .user_agent = "sluice-test/1" };
	struct kube_config cfg = {};
	struct kube_stats st;
	struct kube_watch *w;
	struct script s;
	struct rec r = { .s = &s };
	struct kube *k;
	char err[256], url[64];

	/* the ADDED event cut at two places, each piece a chunk of its own */
	snprintf(c1, sizeof(c1), "%zx\r\n%.*s\r\n", cut1, (int)cut1, ev_added);
	snprintf(c2, sizeof(c2), "%zx\r\n%.*s\r\n", cut2 - cut1, (int)(cut2 - cut1), ev_added + cut1);
	snprintf(c3, sizeof(c3), "%zx\r\n%s\r\n", strlen(ev_added) - cut2, ev_added + cut2);

	script_start(&s, steps, sizeof(steps) / sizeof(steps[0]));
	snprintf(url, sizeof(url), "http://127.0.0.1:%u", s.port);
	cfg.server = url;
	assert_int_equal(kube__new(&cfg, &o, &k, err, sizeof(err)), 0);
	{
		struct kube_watch_opts wo = {
			.path = "/api/v1/pods", .field_selector = "spec.nodeName=n1",
			.on_reset = on_reset, .on_event = on_event, .on_synced = on_synced,
			.on_error = on_error, .ctx = &r,
		};

		assert_int_equal(kube__watch_add(k, &wo, &w), 0);
	}
	/* nothing happens before the loop runs */
	assert_string_equal(r.log, "");
	r.want_served = 9;
	assert_true(drive(k, served, &r, 8000));
	/* let the last request be answered, then look */
	{
		struct timespec ts = { 0, 100000000 };

		nanosleep(&ts, NULL);
		while (poll(&(struct pollfd){ .fd = kube__fd(k), .events = POLLIN }, 1, 0) > 0)
			kube__run(k);
	}
	assert_true(kube__watch_synced(w));
	if (!strstr(r.log,
		    "reset;A:a:10;A:b:11;A:c:12;synced;A:d:101;reset;A:z:150;synced;"
		    "error(watch /api/v1/pods: HTTP 500: etcd is sad; retrying in ") ||
	    !strstr(r.log, "M:z:201;error(watch /api/v1/pods: no data for 0.4 s; retrying in ") ||
	    !strstr(r.log, "error(watch /api/v1/pods: not a watch event: nope; retrying in "))
		fail_msg("log: %s", r.log);
	assert_int_equal(r.errors, 3);
	/* the watch asked for what it should */
	assert_non_null(strstr(s.requests[2], "GET /api/v1/pods?watch=1&allowWatchBookmarks=true"
			       "&timeoutSeconds="));
	assert_non_null(strstr(s.requests[2], "User-Agent: sluice-test/1"));
	assert_null(strstr(s.requests[2], "Authorization"));
	kube__stats(k, &st);
	assert_int_equal(st.requests, 9);
	assert_int_equal(st.relists, 1);
	assert_int_equal(st.errors[KUBE_ERR_EXPIRED], 1);
	assert_int_equal(st.errors[KUBE_ERR_HTTP], 1);
	assert_int_equal(st.errors[KUBE_ERR_STALL], 1);
	assert_int_equal(st.errors[KUBE_ERR_DECODE], 1);
	assert_int_equal(st.rewatches, 1);
	assert_int_equal(st.reconnects, 3);
	assert_int_equal(st.events, 6);
	kube__watch_del(w);
	kube__run(k);
	kube__free(k);
	script_stop(&s);
	free(p1);
	free(p2);
	free(p3);
	free(bm);
	free(gone);
	free(e500);
	free(mod);
}

struct done_rec {
	int n;
	int err;
	long status;
	char msg[256];
	char name[64];
};

static void req_done(void *ctx, const struct kube_result *r)
{
	struct done_rec *d = ctx;
	const cJSON *md = cJSON_GetObjectItem(r->json, "metadata");

	d->n++;
	d->err = r->err;
	d->status = r->status;
	snprintf(d->msg, sizeof(d->msg), "%s", r->msg ? r->msg : "");
	if (cJSON_IsString(cJSON_GetObjectItem(md, "name")))
		snprintf(d->name, sizeof(d->name), "%s", cJSON_GetObjectItem(md, "name")->valuestring);
}

static bool done_n(void *arg)
{
	return ((struct done_rec *)arg)->n > 0;
}

/* One-shot requests: body and content types, errors with the Status
 * message, a 401 after the token file changed in place (same size, same
 * mtime: only the forced re-read sees it), cancellation at free. */
static void test_requests(void **state)
{
	char *created = fixed_len(POD("ev1", "7"));
	char *e422 = resp("HTTP/1.1 422 Unprocessable Entity",
			  "{\"kind\":\"Status\",\"message\":\"spec: Invalid\\nx\"}\n");
	struct step steps[] = {
		{ "POST /api/v1/namespaces/a/events HTTP/1.1", { created, NULL } },
		{ "Content-Type: application/merge-patch+json", { e422, NULL } },
		{ "Authorization: Bearer tokA", { "HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n"
		  "Content-Length: 0\r\n\r\n", NULL } },
		{ "Authorization: Bearer tokB", { created, NULL } },
		{ "GET /hold", { HDR200 "Content-Length: 10\r\n\r\n", "@HOLD", NULL } },
	};
	struct kube_config cfg = {};
	struct done_rec d = {};
	struct kube_stats st;
	struct script s;
	struct kube *k;
	char err[256], url[64], tok[256];
	struct stat sb;

	mk_tmpdir();
	write_file("token", "tokA\n");
	snprintf(tok, sizeof(tok), "%s/token", tmpdir);
	assert_int_equal(stat(tok, &sb), 0);
	script_start(&s, steps, sizeof(steps) / sizeof(steps[0]));
	snprintf(url, sizeof(url), "http://127.0.0.1:%u", s.port);
	cfg.server = url;
	cfg.token_file = tok;
	assert_int_equal(kube__new(&cfg, NULL, &k, err, sizeof(err)), 0);

	assert_int_equal(kube__request(k, "POST", "/api/v1/namespaces/a/events",
				       "{\"kind\":\"Event\"}", req_done, &d), 0);
	assert_int_equal(d.n, 0);	/* never from the call itself */
	assert_true(drive(k, done_n, &d, 5000));
	assert_int_equal(d.err, 0);
	assert_int_equal(d.status, 200);
	assert_string_equal(d.msg, "");
	assert_string_equal(d.name, "ev1");
	assert_non_null(strstr(s.requests[0], "Content-Type: application/json\r\n"));
	assert_non_null(strstr(s.requests[0], "\r\n\r\n{\"kind\":\"Event\"}"));
	assert_non_null(strstr(s.requests[0], "Authorization: Bearer tokA\r\n"));

	d = (struct done_rec){};
	assert_int_equal(kube__request(k, "PATCH", "/apis/sluice.dev/v1alpha1/x/status",
				       "{\"status\":{}}", req_done, &d), 0);
	assert_true(drive(k, done_n, &d, 5000));
	assert_int_equal(d.err, 0);
	assert_int_equal(d.status, 422);
	assert_string_equal(d.msg, "PATCH /apis/sluice.dev/v1alpha1/x/status: HTTP 422: spec: Invalid x");
	assert_non_null(strstr(s.requests[1], "PATCH /apis/sluice.dev/v1alpha1/x/status HTTP/1.1"));

	/* rotate in place, invisible to stat: the 401 makes us read it */
	write_file("token", "tokB\n");
	{
		struct timespec ts[2] = { sb.st_atim, sb.st_mtim };

		assert_int_equal(utimensat(AT_FDCWD, tok, ts, 0), 0);
	}
	d = (struct done_rec){};
	assert_int_equal(kube__request(k, "GET", "/api/v1/namespaces/a/pods/x", NULL, req_done, &d),
			 0);
	assert_true(drive(k, done_n, &d, 5000));
	assert_int_equal(d.n, 1);
	assert_int_equal(d.status, 200);
	assert_non_null(strstr(s.requests[3], "Authorization: Bearer tokB\r\n"));
	kube__stats(k, &st);
	assert_int_equal(st.token_reloads, 1);
	assert_int_equal(st.errors[KUBE_ERR_AUTH], 1);
	assert_int_equal(st.requests, 4);

	/* in flight at free: cancelled, exactly once */
	d = (struct done_rec){};
	assert_int_equal(kube__request(k, "GET", "/hold", NULL, req_done, &d), 0);
	{
		struct rec r = { .s = &s, .want_served = 5 };

		assert_true(drive(k, served, &r, 5000));
	}
	assert_int_equal(d.n, 0);
	/* bad arguments */
	assert_int_equal(kube__request(k, "GET", "no-slash", NULL, req_done, &d), -EINVAL);
	assert_int_equal(kube__request(k, "GET", "/a b", NULL, req_done, &d), -EINVAL);
	kube__free(k);
	assert_int_equal(d.n, 1);
	assert_int_equal(d.err, -ECANCELED);
	script_stop(&s);
	free(created);
	free(e422);
	rm_tmpdir();
}

/* A refused connection: errors reported with the next attempt's delay, and
 * a watch deleted from its own callback gets no more calls. */
static void on_error_del(void *ctx, const char *msg)
{
	struct rec *r = ctx;

	r->errors++;
	rec_add(r, "error(%s);", msg);
	if (r->errors == 2)
		kube__watch_del((struct kube_watch *)r->s);
}

static bool two_errors(void *arg)
{
	return ((struct rec *)arg)->errors >= 2;
}

static void test_refused_and_del(void **state)
{
	struct kube_opts o = { .backoff_base_ms = 10, .backoff_max_ms = 20, .connect_timeout_ms = 500 };
	struct kube_config cfg = { .server = "http://127.0.0.1:1" };
	struct rec r = {};
	struct kube_stats st;
	struct kube_watch *w;
	struct kube *k;
	char err[256];
	struct kube_watch_opts wo = { .path = "/api/v1/nodes", .on_error = on_error_del, .ctx = &r };

	assert_int_equal(kube__new(&cfg, &o, &k, err, sizeof(err)), 0);
	assert_int_equal(kube__watch_add(k, &wo, &w), 0);
	r.s = (struct script *)w;
	assert_true(drive(k, two_errors, &r, 5000));
	assert_non_null(strstr(r.log, "error(list /api/v1/nodes: "));
	assert_non_null(strstr(r.log, "; retrying in 0.0 s);"));
	/* and no more */
	{
		struct timespec ts = { 0, 200000000 };

		nanosleep(&ts, NULL);
		kube__run(k);
		nanosleep(&ts, NULL);
		kube__run(k);
	}
	assert_int_equal(r.errors, 2);
	kube__stats(k, &st);
	assert_int_equal(st.errors[KUBE_ERR_TRANSPORT], 2);
	assert_int_equal(kube__watch_add(k, &(struct kube_watch_opts){ .path = "rel" }, NULL),
			 -EINVAL);
	kube__free(k);

	/* bad configurations */
	cfg.server = "10.0.0.1";
	assert_int_equal(kube__new(&cfg, &o, &k, err, sizeof(err)), -EINVAL);
	cfg.server = "https://10.0.0.1";
	cfg.cert.data = (unsigned char *)"x";
	cfg.cert.len = 1;
	assert_int_equal(kube__new(&cfg, &o, &k, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "key"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lines_basic),
		cmocka_unit_test(test_lines_reassembly),
		cmocka_unit_test(test_lines_limits),
		cmocka_unit_test(test_backoff_bounds),
		cmocka_unit_test(test_kubeconfig_token_data),
		cmocka_unit_test(test_kubeconfig_files),
		cmocka_unit_test(test_kubeconfig_errors),
		cmocka_unit_test(test_incluster),
		cmocka_unit_test(test_watch_state_machine),
		cmocka_unit_test(test_requests),
		cmocka_unit_test(test_refused_and_del),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
