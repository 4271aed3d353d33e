// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Kubernetes API client on libcurl's multi socket interface, run from the
 * daemon's epoll loop through one fd: an epoll set of our own holding
 * curl's sockets and a timerfd armed at the earliest of curl's timeout,
 * watch retries and stall deadlines.
 *
 * libcurl forbids multi calls from its callbacks, and consumers want to
 * call us from theirs; so curl's write callback only buffers, and everything
 * that can reach a consumer (list items, watch lines, completions) is
 * handled in kube__run after curl has returned.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <curl/curl.h>
#include <cjson/cJSON.h>
#include <yaml.h>
#include "kube.h"
#include "log.h"

#define NSEC_PER_MS		1000000ULL
#define NSEC_PER_S		1000000000ULL
#define DEF_MAX_LINE		(16u << 20)
#define DEF_MAX_BODY		(256u << 20)
#define ERR_BODY_MAX		(64u << 10)	/* of an error answer: for its message */
#define FILE_MAX		(1u << 20)	/* token, certificates, kubeconfig */
#define SHORT_WATCH_NS		NSEC_PER_S

/* ---------------------------------------------------------- helpers */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NSEC_PER_S + (uint64_t)ts.tv_nsec;
}

struct buf {
	char *p;
	size_t len, cap;
};

static int buf_add(struct buf *b, const void *d, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *np;

		while (cap < b->len + n + 1)
			cap *= 2;
		np = realloc(b->p, cap);
		if (!np)
			return -ENOMEM;
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, d, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

static void buf_free(struct buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

int kube__read_file(const char *path, unsigned char **out, size_t *len)
{
	struct buf b = {};
	char chunk[8192];
	ssize_t n;
	int fd, err = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			break;
		}
		if (b.len + n > FILE_MAX) {
			err = -EFBIG;
			break;
		}
		if ((err = buf_add(&b, chunk, n)))
			break;
	}
	close(fd);
	if (!err && !b.p)
		err = buf_add(&b, "", 0);
	if (err) {
		buf_free(&b);
		return err;
	}
	*out = (unsigned char *)b.p;
	*len = b.len;
	return 0;
}

/* A token as files and kubeconfigs hold it: surrounding white space goes,
 * and anything that could end the Authorization header is refused. */
static int token_clean(char *s)
{
	size_t n;
	char *p = s;

	while (isspace((unsigned char)*p))
		p++;
	memmove(s, p, strlen(p) + 1);
	n = strlen(s);
	while (n && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	if (!n)
		return -ENODATA;
	for (p = s; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return -EINVAL;
	return 0;
}

static int b64_val(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

/* Standard or URL alphabet, padding optional, white space ignored. */
static int b64_decode(const char *s, struct kube_blob *out)
{
	size_t n = strlen(s), o = 0;
	unsigned char *d = malloc(n / 4 * 3 + 4);
	uint32_t acc = 0;
	int bits = 0, pad = 0;

	if (!d)
		return -ENOMEM;
	for (; *s; s++) {
		int v;

		if (isspace((unsigned char)*s))
			continue;
		if (*s == '=') {
			pad++;
			continue;
		}
		v = b64_val((unsigned char)*s);
		if (v < 0 || pad) {
			free(d);
			return -EINVAL;
		}
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			d[o++] = (unsigned char)(acc >> bits);
		}
	}
	/* 6 leftover bits cannot come from whole bytes */
	if (bits >= 6 || pad > 2) {
		free(d);
		return -EINVAL;
	}
	d[o] = '\0';
	out->data = d;
	out->len = o;
	return 0;
}

static bool is_pem(const struct kube_blob *b)
{
	return b->len && memmem(b->data, b->len, "-----BEGIN ", 11);
}

/* Query values: everything but the unreserved characters is escaped. */
static int url_escape(struct buf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	int err = 0;

	for (; *s && !err; s++) {
		unsigned char c = (unsigned char)*s;

		if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
			err = buf_add(b, s, 1);
		} else {
			char e[3] = { '%', hex[c >> 4], hex[c & 15] };

			err = buf_add(b, e, 3);
		}
	}
	return err;
}

/* ---------------------------------------------------------- lines */

int kube__lines_feed(struct kube_lines *l, const void *data, size_t n)
{
	const char *p = data, *end = p + n;
	size_t max = l->max ? l->max : DEF_MAX_LINE;

	/* what was handed out is gone: keep only what is still queued */
	if (l->rd) {
		memmove(l->buf, l->buf + l->rd, l->len - l->rd);
		l->len -= l->rd;
		l->done -= l->rd;
		l->rd = 0;
	}
	while (p < end) {
		const char *nl = memchr(p, '\n', end - p);
		size_t take = nl ? (size_t)(nl - p) : (size_t)(end - p);

		if (memchr(p, '\0', take))
			return -EILSEQ;
		/* the '\r' of a CRLF is counted: it goes only at the end */
		if (l->len - l->done + take > max + 1)
			return -E2BIG;
		if (l->len + take + 1 > l->cap) {
			size_t cap = l->cap ? l->cap : 4096;
			char *nb;

			while (cap < l->len + take + 1)
				cap *= 2;
			nb = realloc(l->buf, cap);
			if (!nb)
				return -ENOMEM;
			l->buf = nb;
			l->cap = cap;
		}
		memcpy(l->buf + l->len, p, take);
		l->len += take;
		if (!nl) {
			if (l->len - l->done > max + 1 ||
			    (l->len - l->done == max + 1 && l->buf[l->len - 1] != '\r'))
				return -E2BIG;
			break;
		}
		if (l->len > l->done && l->buf[l->len - 1] == '\r')
			l->len--;
		if (l->len - l->done > max)
			return -E2BIG;
		l->buf[l->len++] = '\0';
		l->done = l->len;
		p = nl + 1;
	}
	return 0;
}

char *kube__lines_next(struct kube_lines *l, size_t *len)
{
	char *s;
	size_t n;

	if (l->rd >= l->done)
		return NULL;
	s = l->buf + l->rd;
	n = strlen(s);
	l->rd += n + 1;
	if (len)
		*len = n;
	return s;
}

void kube__lines_finish(struct kube_lines *l)
{
	if (l->len == l->done)
		return;
	if (l->buf[l->len - 1] == '\r')
		l->len--;
	/* feed always leaves room for the NUL */
	l->buf[l->len++] = '\0';
	l->done = l->len;
}

size_t kube__lines_partial(const struct kube_lines *l)
{
	return l->len - l->done;
}

void kube__lines_free(struct kube_lines *l)
{
	free(l->buf);
	l->buf = NULL;
	l->len = l->rd = l->done = l->cap = 0;
}

/* ---------------------------------------------------------- backoff */

unsigned kube__backoff_next(struct kube_backoff *b, uint32_t rnd)
{
	unsigned cur = b->cur_ms ? b->cur_ms : b->base_ms;

	if (cur > b->max_ms)
		cur = b->max_ms;
	b->cur_ms = cur > b->max_ms / 2 ? b->max_ms : cur * 2;
	/* jitter spreads the nodes of a cluster after an API server outage */
	return cur / 2 + rnd % (cur - cur / 2 + 1);
}

void kube__backoff_reset(struct kube_backoff *b)
{
	b->cur_ms = 0;
}

/* ---------------------------------------------------------- config */

void kube__config_free(struct kube_config *cfg)
{
	free(cfg->server);
	free(cfg->ns);
	free(cfg->token);
	free(cfg->token_file);
	free(cfg->ca.data);
	free(cfg->cert.data);
	free(cfg->key.data);
	memset(cfg, 0, sizeof(*cfg));
}

static int blob_dup(struct kube_blob *dst, const struct kube_blob *src)
{
	dst->data = NULL;
	dst->len = 0;
	if (!src->data)
		return 0;
	dst->data = malloc(src->len + 1);
	if (!dst->data)
		return -ENOMEM;
	memcpy(dst->data, src->data, src->len);
	dst->data[src->len] = '\0';
	dst->len = src->len;
	return 0;
}

static int str_dup(char **dst, const char *src)
{
	*dst = NULL;
	if (!src)
		return 0;
	*dst = strdup(src);
	return *dst ? 0 : -ENOMEM;
}

static int config_copy(struct kube_config *dst, const struct kube_config *src)
{
	int err;

	memset(dst, 0, sizeof(*dst));
	dst->insecure = src->insecure;
	dst->skip_host_check = src->skip_host_check;
	if ((err = str_dup(&dst->server, src->server)) || (err = str_dup(&dst->ns, src->ns)) ||
	    (err = str_dup(&dst->token, src->token)) ||
	    (err = str_dup(&dst->token_file, src->token_file)) ||
	    (err = blob_dup(&dst->ca, &src->ca)) || (err = blob_dup(&dst->cert, &src->cert)) ||
	    (err = blob_dup(&dst->key, &src->key)))
		kube__config_free(dst);
	return err;
}

int kube__read_token(const char *path, char **out, char *err, size_t errlen)
{
	struct kube_blob b = {};
	int rc;

	rc = kube__read_file(path, &b.data, &b.len);
	if (rc) {
		log__errf(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	rc = token_clean((char *)b.data);
	if (rc) {
		log__errf(err, errlen, "%s: %s", path,
		     rc == -ENODATA ? "empty token" : "token has control characters");
		free(b.data);
		return -EINVAL;
	}
	*out = (char *)b.data;
	return 0;
}

int kube__config_incluster(const char *sa_dir, struct kube_config *cfg, char *err, size_t errlen)
{
	const char *host = getenv("KUBERNETES_SERVICE_HOST");
	const char *port = getenv("KUBERNETES_SERVICE_PORT");
	char path[PATH_MAX];
	struct kube_blob ns = {};
	int rc;

	memset(cfg, 0, sizeof(*cfg));
	if (!sa_dir)
		sa_dir = KUBE_SA_DIR;
	if (!host || !*host || !port || !*port) {
		log__errf(err, errlen, "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set: "
		     "not in a pod (give a kubeconfig instead)");
		return -ENOENT;
	}
	if (strspn(port, "0123456789") != strlen(port)) {
		log__errf(err, errlen, "KUBERNETES_SERVICE_PORT: not a port number: %s", port);
		return -EINVAL;
	}
	if (asprintf(&cfg->server, strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s",
		     host, port) < 0) {
		cfg->server = NULL;
		return -ENOMEM;
	}
	snprintf(path, sizeof(path), "%s/token", sa_dir);
	if (!(cfg->token_file = strdup(path))) {
		rc = -ENOMEM;
		goto fail;
	}
	if ((rc = kube__read_token(path, &cfg->token, err, errlen)))
		goto fail;
	snprintf(path, sizeof(path), "%s/ca.crt", sa_dir);
	if ((rc = kube__read_file(path, &cfg->ca.data, &cfg->ca.len))) {
		log__errf(err, errlen, "%s: %s", path, strerror(-rc));
		goto fail;
	}
	if (!is_pem(&cfg->ca)) {
		log__errf(err, errlen, "%s: no PEM certificate in it", path);
		rc = -EINVAL;
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/namespace", sa_dir);
	if (!kube__read_file(path, &ns.data, &ns.len)) {
		if (!token_clean((char *)ns.data))
			cfg->ns = (char *)ns.data;
		else
			free(ns.data);
	}
	return 0;
fail:
	kube__config_free(cfg);
	return rc;
}

/* kubeconfig: the parsed document and where we are, for messages */
struct kc {
	yaml_document_t doc;
	const char *path;
	char dir[PATH_MAX];
	char *err;
	size_t errlen;
};

static yaml_node_t *kc_get(struct kc *kc, yaml_node_t *m, const char *key)
{
	yaml_node_pair_t *p;

	if (!m || m->type != YAML_MAPPING_NODE)
		return NULL;
	for (p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
		yaml_node_t *k = yaml_document_get_node(&kc->doc, p->key);

		if (k && k->type == YAML_SCALAR_NODE && !strcmp((char *)k->data.scalar.value, key))
			return yaml_document_get_node(&kc->doc, p->value);
	}
	return NULL;
}

static bool kc_null(yaml_node_t *n)
{
	const char *v;

	if (!n)
		return true;
	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	v = (const char *)n->data.scalar.value;
	return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") ||
	       !strcmp(v, "NULL");
}

/* The string at WHERE.KEY, NULL if absent or null; -EINVAL if not a string. */
static int kc_str(struct kc *kc, yaml_node_t *m, const char *where, const char *key,
		  const char **out)
{
	yaml_node_t *n = kc_get(kc, m, key);

	*out = NULL;
	if (kc_null(n))
		return 0;
	if (n->type != YAML_SCALAR_NODE) {
		log__errf(kc->err, kc->errlen, "%s: %s%s%s: expected a string (line %zu)", kc->path, where,
		     *where ? "." : "", key, n->start_mark.line + 1);
		return -EINVAL;
	}
	*out = (const char *)n->data.scalar.value;
	return 0;
}

static int kc_bool(struct kc *kc, yaml_node_t *m, const char *where, const char *key, bool *out)
{
	const char *v;
	int err = kc_str(kc, m, where, key, &v);

	*out = false;
	if (err || !v)
		return err;
	if (!strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on")) {
		*out = true;
	} else if (strcasecmp(v, "false") && strcasecmp(v, "no") && strcasecmp(v, "off")) {
		log__errf(kc->err, kc->errlen, "%s: %s.%s: expected true or false, not \"%s\"", kc->path,
		     where, key, v);
		return -EINVAL;
	}
	return 0;
}

/* The WHAT mapping of the entry named NAME in the top-level LIST. */
static int kc_named(struct kc *kc, const char *list, const char *name, const char *what,
		    yaml_node_t **out)
{
	yaml_node_t *seq = kc_get(kc, yaml_document_get_root_node(&kc->doc), list);
	yaml_node_item_t *i;

	*out = NULL;
	if (seq && seq->type == YAML_SEQUENCE_NODE) {
		for (i = seq->data.sequence.items.start; i < seq->data.sequence.items.top; i++) {
			yaml_node_t *e = yaml_document_get_node(&kc->doc, *i);
			const char *n;

			if (kc_str(kc, e, list, "name", &n))
				return -EINVAL;
			if (!n || strcmp(n, name))
				continue;
			*out = kc_get(kc, e, what);
			if (!*out || (*out)->type != YAML_MAPPING_NODE) {
				log__errf(kc->err, kc->errlen, "%s: %s[%s].%s: missing or not a mapping",
				     kc->path, list, name, what);
				return -EINVAL;
			}
			return 0;
		}
	} else if (!kc_null(seq)) {
		log__errf(kc->err, kc->errlen, "%s: %s: expected a list", kc->path, list);
		return -EINVAL;
	}
	log__errf(kc->err, kc->errlen, "%s: %s: no entry named \"%s\"", kc->path, list, name);
	return -ENOENT;
}

/* DATA_KEY (base64) or else FILE_KEY (a path) at WHERE, as PEM. */
static int kc_pem(struct kc *kc, yaml_node_t *m, const char *where, const char *data_key,
		  const char *file_key, struct kube_blob *out)
{
	const char *data, *file;
	char path[PATH_MAX];
	int err;

	if ((err = kc_str(kc, m, where, data_key, &data)) ||
	    (err = kc_str(kc, m, where, file_key, &file)))
		return err;
	if (data) {
		err = b64_decode(data, out);
		if (err == -EINVAL) {
			log__errf(kc->err, kc->errlen, "%s: %s.%s: invalid base64", kc->path, where, data_key);
			return err;
		}
		if (err)
			return err;
		if (!is_pem(out)) {
			log__errf(kc->err, kc->errlen, "%s: %s.%s: no PEM block in the decoded data",
			     kc->path, where, data_key);
			return -EINVAL;
		}
		return 0;
	}
	if (!file)
		return 0;
	if (file[0] == '/')
		snprintf(path, sizeof(path), "%s", file);
	else
		snprintf(path, sizeof(path), "%s/%s", kc->dir, file);
	err = kube__read_file(path, &out->data, &out->len);
	if (err) {
		log__errf(kc->err, kc->errlen, "%s: %s.%s: cannot read %s: %s", kc->path, where, file_key,
		     path, strerror(-err));
		return err;
	}
	if (!is_pem(out)) {
		log__errf(kc->err, kc->errlen, "%s: %s.%s: no PEM block in %s", kc->path, where, file_key,
		     path);
		return -EINVAL;
	}
	return 0;
}

static int kc_cluster(struct kc *kc, const char *name, struct kube_config *cfg)
{
	yaml_node_t *c;
	const char *server, *v;
	char where[300];
	size_t n;
	int err;

	if ((err = kc_named(kc, "clusters", name, "cluster", &c)))
		return err;
	snprintf(where, sizeof(where), "clusters[%s].cluster", name);
	if ((err = kc_str(kc, c, where, "server", &server)))
		return err;
	if (!server) {
		log__errf(kc->err, kc->errlen, "%s: %s.server is missing", kc->path, where);
		return -EINVAL;
	}
	if (strncmp(server, "https://", 8) && strncmp(server, "http://", 7)) {
		log__errf(kc->err, kc->errlen, "%s: %s.server: not an http(s) URL: %s", kc->path, where,
		     server);
		return -EINVAL;
	}
	if (!(cfg->server = strdup(server)))
		return -ENOMEM;
	n = strlen(cfg->server);
	while (n > 8 && cfg->server[n - 1] == '/')
		cfg->server[--n] = '\0';
	for (const char *const *u = (const char *const[]){ "tls-server-name", "proxy-url", NULL };
	     *u; u++) {
		if ((err = kc_str(kc, c, where, *u, &v)))
			return err;
		if (v) {
			log__errf(kc->err, kc->errlen, "%s: %s.%s is not supported", kc->path, where, *u);
			return -EOPNOTSUPP;
		}
	}
	if ((err = kc_bool(kc, c, where, "insecure-skip-tls-verify", &cfg->insecure)) ||
	    (err = kc_pem(kc, c, where, "certificate-authority-data", "certificate-authority",
			  &cfg->ca)))
		return err;
	if (cfg->insecure && cfg->ca.data) {
		/* as client-go: a CA and no verification contradict each other */
		log__errf(kc->err, kc->errlen,
		     "%s: %s: certificate-authority(-data) and insecure-skip-tls-verify together",
		     kc->path, where);
		return -EINVAL;
	}
	return 0;
}

static int kc_user(struct kc *kc, const char *name, struct kube_config *cfg)
{
	yaml_node_t *u;
	const char *token, *file;
	char where[300];
	int err;

	if ((err = kc_named(kc, "users", name, "user", &u)))
		return err;
	snprintf(where, sizeof(where), "users[%s].user", name);
	for (const char *const *x = (const char *const[]){ "exec", "auth-provider", "username",
							 "password", NULL };
	     *x; x++)
		if (!kc_null(kc_get(kc, u, *x))) {
			log__errf(kc->err, kc->errlen,
			     "%s: %s.%s is not supported: use token, tokenFile or a client certificate",
			     kc->path, where, *x);
			return -EOPNOTSUPP;
		}
	if ((err = kc_str(kc, u, where, "token", &token)) ||
	    (err = kc_str(kc, u, where, "tokenFile", &file)))
		return err;
	if (token) {
		if (!(cfg->token = strdup(token)))
			return -ENOMEM;
		if (token_clean(cfg->token)) {
			log__errf(kc->err, kc->errlen, "%s: %s.token: empty or has control characters",
			     kc->path, where);
			return -EINVAL;
		}
	}
	if (file) {
		char path[PATH_MAX];

		if (file[0] == '/')
			snprintf(path, sizeof(path), "%s", file);
		else
			snprintf(path, sizeof(path), "%s/%s", kc->dir, file);
		if (!(cfg->token_file = strdup(path)))
			return -ENOMEM;
		/* the file's token is the current one, whatever token says */
		if (!token) {
			char msg[PATH_MAX + 64];

			if ((err = kube__read_token(path, &cfg->token, msg, sizeof(msg)))) {
				log__errf(kc->err, kc->errlen, "%s: %s.tokenFile: %s", kc->path, where, msg);
				return err;
			}
		}
	}
	if ((err = kc_pem(kc, u, where, "client-certificate-data", "client-certificate",
			  &cfg->cert)) ||
	    (err = kc_pem(kc, u, where, "client-key-data", "client-key", &cfg->key)))
		return err;
	if (!cfg->cert.data != !cfg->key.data) {
		log__errf(kc->err, kc->errlen, "%s: %s: %s without %s", kc->path, where,
		     cfg->cert.data ? "client-certificate" : "client-key",
		     cfg->cert.data ? "client-key" : "client-certificate");
		return -EINVAL;
	}
	return 0;
}

int kube__config_kubeconfig(const char *path, const char *context, struct kube_config *cfg,
			    char *err, size_t errlen)
{
	struct kc kc = { .err = err, .errlen = errlen };
	yaml_parser_t parser;
	yaml_node_t *root, *ctx;
	const char *cluster, *user, *ns;
	char where[300], defpath[PATH_MAX];
	FILE *f;
	int rc;

	memset(cfg, 0, sizeof(*cfg));
	if (!path) {
		const char *env = getenv("KUBECONFIG"), *home = getenv("HOME");

		if (env && *env) {
			if (strchr(env, ':')) {
				log__errf(err, errlen, "KUBECONFIG: a list of files is not supported: %s", env);
				return -EOPNOTSUPP;
			}
			path = env;
		} else if (home) {
			snprintf(defpath, sizeof(defpath), "%s/.kube/config", home);
			path = defpath;
		} else {
			log__errf(err, errlen, "no kubeconfig: neither KUBECONFIG nor HOME is set");
			return -ENOENT;
		}
	}
	kc.path = path;
	snprintf(kc.dir, sizeof(kc.dir), "%s", path);
	{
		char *slash = strrchr(kc.dir, '/');

		if (slash == kc.dir)
			slash[1] = '\0';
		else if (slash)
			*slash = '\0';
		else
			snprintf(kc.dir, sizeof(kc.dir), ".");
	}
	f = fopen(path, "re");
	if (!f) {
		rc = -errno;
		log__errf(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	if (!yaml_parser_initialize(&parser)) {
		fclose(f);
		return -ENOMEM;
	}
	yaml_parser_set_input_file(&parser, f);
	if (!yaml_parser_load(&parser, &kc.doc)) {
		log__errf(err, errlen, "%s:%zu:%zu: %s", path, parser.problem_mark.line + 1,
		     parser.problem_mark.column + 1, parser.problem ? parser.problem : "invalid YAML");
		yaml_parser_delete(&parser);
		fclose(f);
		return -EINVAL;
	}
	yaml_parser_delete(&parser);
	fclose(f);

	root = yaml_document_get_root_node(&kc.doc);
	if (!root || root->type != YAML_MAPPING_NODE) {
		log__errf(err, errlen, "%s: not a kubeconfig (expected a mapping)", path);
		rc = -EINVAL;
		goto out;
	}
	if (!context) {
		if ((rc = kc_str(&kc, root, "", "current-context", &context)))
			goto out;
		if (!context) {
			log__errf(err, errlen, "%s: current-context is not set (and no context was given)",
			     path);
			rc = -EINVAL;
			goto out;
		}
	}
	if ((rc = kc_named(&kc, "contexts", context, "context", &ctx)))
		goto out;
	snprintf(where, sizeof(where), "contexts[%s].context", context);
	if ((rc = kc_str(&kc, ctx, where, "cluster", &cluster)) ||
	    (rc = kc_str(&kc, ctx, where, "user", &user)) ||
	    (rc = kc_str(&kc, ctx, where, "namespace", &ns)))
		goto out;
	if (!cluster) {
		log__errf(err, errlen, "%s: %s.cluster is missing", path, where);
		rc = -EINVAL;
		goto out;
	}
	if ((rc = kc_cluster(&kc, cluster, cfg)))
		goto out;
	if (user && (rc = kc_user(&kc, user, cfg)))
		goto out;
	if (ns && !(cfg->ns = strdup(ns)))
		rc = -ENOMEM;
out:
	yaml_document_delete(&kc.doc);
	if (rc)
		kube__config_free(cfg);
	return rc;
}

/* ---------------------------------------------------------- client state */

enum xfer_kind { X_LIST, X_WATCH, X_REQ };

/* What the line handler decided about a watch stream. */
enum xfer_end { END_NONE, END_RELIST, END_FAIL };

struct kube_xfer {
	struct kube_xfer *prev, *next;
	struct kube *k;
	enum xfer_kind kind;
	CURL *easy;			/* NULL: queued */
	struct curl_slist *hdrs;
	char errbuf[CURL_ERROR_SIZE];
	struct buf body;		/* list page, response, or an error answer */
	struct kube_lines lines;	/* watch stream */
	long status;
	bool done;			/* curl finished it */
	CURLcode rc;
	bool overflow;			/* body beyond max_body */
	int line_err;			/* from kube__lines_feed */
	bool stalled;
	enum xfer_end end;		/* watch: decided from a line */
	enum kube_err end_kind;
	char *end_msg;
	uint64_t start_ns, last_ns;
	size_t nlines;
	struct kube_watch *w;		/* X_LIST, X_WATCH */
	char *method, *path, *req_body;	/* X_REQ */
	kube_done_fn done_cb;
	void *ctx;
	bool retried;
};

enum watch_state { W_IDLE, W_BUSY };

struct kube_watch {
	struct kube_watch *next;
	struct kube *k;
	char *path, *fsel, *lsel;
	struct kube_watch_opts o;	/* strings point to the copies above */
	enum watch_state state;
	uint64_t due_ns;		/* W_IDLE: next start */
	struct kube_xfer *x;		/* W_BUSY */
	char *rv;			/* last resourceVersion seen; NULL: list */
	char *cont;			/* continue token of the list in progress */
	bool listed;			/* a list ever completed */
	bool synced;
	bool after_error;		/* the next watch is a reconnect */
	bool fresh;			/* next request on a new connection */
	bool auth_retry;		/* a 401 with a new token: once */
	bool dead;
	struct kube_backoff bo;
};

struct kube {
	struct kube_config cfg;
	struct kube_opts o;
	char *ua;
	CURLM *multi;
	int epfd, tfd;
	uint64_t curl_due;		/* 0: curl wants no timeout */
	uint64_t armed;			/* the timerfd's deadline, 0: disarmed */
	bool kick;			/* work queued: run soon */
	bool freeing;
	bool curl_init;
	struct kube_xfer *xfers, *xfers_tail;
	struct kube_watch *watches;
	struct kube_stats st;
	uint64_t rng;
	/* the token file as last read */
	struct stat tst;
	bool tst_ok;
};

static uint32_t kube__rand(struct kube *k)
{
	/* xorshift64*: jitter only, no secrets */
	k->rng ^= k->rng >> 12;
	k->rng ^= k->rng << 25;
	k->rng ^= k->rng >> 27;
	return (uint32_t)((k->rng * 0x2545F4914F6CDD1DULL) >> 32);
}

static const char *const err_names[KUBE_ERR_MAX] = {
	[KUBE_ERR_TRANSPORT] = "transport",
	[KUBE_ERR_TIMEOUT] = "timeout",
	[KUBE_ERR_STALL] = "stall",
	[KUBE_ERR_HTTP] = "http",
	[KUBE_ERR_AUTH] = "auth",
	[KUBE_ERR_EXPIRED] = "expired",
	[KUBE_ERR_DECODE] = "decode",
};

const char *kube__err_name(enum kube_err e)
{
	return (unsigned)e < KUBE_ERR_MAX ? err_names[e] : "unknown";
}

void kube__stats(const struct kube *k, struct kube_stats *out)
{
	*out = k->st;
}

int kube__fd(const struct kube *k)
{
	return k->epfd;
}

bool kube__watch_synced(const struct kube_watch *w)
{
	return w->synced;
}

/* 1 if the token changed, 0 if not, -errno if it cannot be read (the old
 * one stays). FORCE reads the file even if it looks unchanged. */
static int kube__token_check(struct kube *k, bool force)
{
	struct stat st;
	char *tok = NULL;
	int err;

	if (!k->cfg.token_file)
		return 0;
	if (stat(k->cfg.token_file, &st))
		return -errno;
	/* kubelet swaps a symlink: a new inode, not only a new mtime */
	if (!force && k->tst_ok && st.st_ino == k->tst.st_ino && st.st_dev == k->tst.st_dev &&
	    st.st_size == k->tst.st_size && st.st_mtim.tv_sec == k->tst.st_mtim.tv_sec &&
	    st.st_mtim.tv_nsec == k->tst.st_mtim.tv_nsec)
		return 0;
	err = kube__read_token(k->cfg.token_file, &tok, NULL, 0);
	if (err)
		return err;
	k->tst = st;
	k->tst_ok = true;
	if (k->cfg.token && !strcmp(k->cfg.token, tok)) {
		free(tok);
		return 0;
	}
	free(k->cfg.token);
	k->cfg.token = tok;
	k->st.token_reloads++;
	return 1;
}

/* ---------------------------------------------------------- timer */

static uint64_t kube__next_due(struct kube *k)
{
	uint64_t due = k->curl_due, stall = (uint64_t)k->o.stall_ms * NSEC_PER_MS;
	struct kube_watch *w;
	struct kube_xfer *x;

#define EARLIER(t) do { if ((t) && (!due || (t) < due)) due = (t); } while (0)
	if (k->kick)
		EARLIER(1);
	for (w = k->watches; w; w = w->next)
		if (w->state == W_IDLE && !w->dead)
			EARLIER(w->due_ns);
	for (x = k->xfers; x; x = x->next)
		if (x->kind == X_WATCH && x->easy && !x->done)
			EARLIER(x->last_ns + stall);
#undef EARLIER
	return due;
}

static void kube__arm(struct kube *k)
{
	uint64_t due = kube__next_due(k);
	struct itimerspec its = {};

	if (due == k->armed)
		return;
	its.it_value.tv_sec = due / NSEC_PER_S;
	its.it_value.tv_nsec = due % NSEC_PER_S;
	if (due && !its.it_value.tv_sec && !its.it_value.tv_nsec)
		its.it_value.tv_nsec = 1;
	if (!timerfd_settime(k->tfd, TFD_TIMER_ABSTIME, &its, NULL))
		k->armed = due;
}

static int kube__sock_cb(CURL *e, curl_socket_t s, int what, void *userp, void *sockp)
{
	struct kube *k = userp;
	struct epoll_event ev = { .data.fd = s };

	if (what == CURL_POLL_REMOVE) {
		epoll_ctl(k->epfd, EPOLL_CTL_DEL, s, NULL);
		return 0;
	}
	ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
	if (epoll_ctl(k->epfd, EPOLL_CTL_MOD, s, &ev) && errno == ENOENT)
		epoll_ctl(k->epfd, EPOLL_CTL_ADD, s, &ev);
	return 0;
}

static int kube__timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	struct kube *k = userp;

	/* no socket_action from here (curl forbids it): the timerfd fires */
	k->curl_due = timeout_ms < 0 ? 0 : now_ns() + (uint64_t)timeout_ms * NSEC_PER_MS + 1;
	return 0;
}

/* ---------------------------------------------------------- transfers */

static size_t kube__write_cb(char *data, size_t sz, size_t nmemb, void *userp)
{
	struct kube_xfer *x = userp;
	size_t n = sz * nmemb, max;

	x->last_ns = now_ns();
	if (!x->status)
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
	if (x->kind == X_WATCH && x->status == 200) {
		x->line_err = kube__lines_feed(&x->lines, data, n);
		return x->line_err ? 0 : n;
	}
	max = x->status / 100 != 2 || x->kind == X_WATCH ? ERR_BODY_MAX : x->k->o.max_body;
	if (x->body.len + n > max) {
		if (x->status / 100 != 2 || x->kind == X_WATCH)
			return n;	/* an error's text: its start is enough */
		x->overflow = true;
		return 0;
	}
	return buf_add(&x->body, data, n) ? 0 : n;
}

static size_t kube__header_cb(char *data, size_t sz, size_t nmemb, void *userp)
{
	struct kube_xfer *x = userp;

	x->last_ns = now_ns();
	return sz * nmemb;
}

static struct kube_xfer *kube__xfer_new(struct kube *k, enum xfer_kind kind)
{
	struct kube_xfer *x = calloc(1, sizeof(*x));

	if (!x)
		return NULL;
	x->k = k;
	x->kind = kind;
	x->lines.max = k->o.max_line;
	x->prev = k->xfers_tail;
	if (k->xfers_tail)
		k->xfers_tail->next = x;
	else
		k->xfers = x;
	k->xfers_tail = x;
	return x;
}

static void kube__xfer_free(struct kube_xfer *x)
{
	struct kube *k = x->k;

	if (x->prev)
		x->prev->next = x->next;
	else
		k->xfers = x->next;
	if (x->next)
		x->next->prev = x->prev;
	else
		k->xfers_tail = x->prev;
	if (x->easy) {
		curl_multi_remove_handle(k->multi, x->easy);
		curl_easy_cleanup(x->easy);
	}
	curl_slist_free_all(x->hdrs);
	buf_free(&x->body);
	kube__lines_free(&x->lines);
	free(x->end_msg);
	free(x->method);
	free(x->path);
	free(x->req_body);
	free(x);
}

static int kube__add_header(struct kube_xfer *x, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int kube__add_header(struct kube_xfer *x, const char *fmt, ...)
{
	struct curl_slist *l;
	va_list ap;
	char *h;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&h, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -ENOMEM;
	l = curl_slist_append(x->hdrs, h);
	free(h);
	if (!l)
		return -ENOMEM;
	x->hdrs = l;
	return 0;
}

static int kube__blob_opt(CURL *e, CURLoption opt, const struct kube_blob *b)
{
	struct curl_blob cb = { .data = b->data, .len = b->len, .flags = CURL_BLOB_COPY };

	return curl_easy_setopt(e, opt, &cb) == CURLE_OK ? 0 : -EOPNOTSUPP;
}

/* Start X on URL (K's server + PATH_QUERY). On failure X stays queued
 * (easy NULL) and the caller reports. */
static int kube__xfer_start(struct kube_xfer *x, const char *path_query, long timeout_ms,
			    bool fresh)
{
	struct kube *k = x->k;
	char *url = NULL;
	CURL *e;
	int err = -ENOMEM;

	kube__token_check(k, false);
	if (asprintf(&url, "%s%s", k->cfg.server, path_query) < 0)
		return -ENOMEM;
	e = curl_easy_init();
	if (!e)
		goto out;
	curl_slist_free_all(x->hdrs);
	x->hdrs = NULL;
	if (kube__add_header(x, "Accept: application/json") ||
	    (k->cfg.token && kube__add_header(x, "Authorization: Bearer %s", k->cfg.token)))
		goto out;
	if (x->kind == X_REQ && x->req_body &&
	    kube__add_header(x, "Content-Type: %s", !strcmp(x->method, "PATCH") ?
			     "application/merge-patch+json" : "application/json"))
		goto out;
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, x);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, kube__write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, kube__header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	/* HTTP/1.1: one connection per watch, so a dead connection costs
	 * exactly the watch on it, and aborting that watch closes it (with
	 * HTTP/2 the retry would be multiplexed onto the same dead socket) */
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)k->o.connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 30L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 10L);
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(e, CURLOPT_USERAGENT, k->ua);
	if (fresh)
		curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
	if (k->cfg.insecure) {
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	} else if (k->cfg.ca.data) {
		/* only the cluster's CA, as client-go: not the system's too */
		if ((err = kube__blob_opt(e, CURLOPT_CAINFO_BLOB, &k->cfg.ca)))
			goto out;
		curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
	}
	if (k->cfg.skip_host_check)
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	if (k->cfg.cert.data) {
		if ((err = kube__blob_opt(e, CURLOPT_SSLCERT_BLOB, &k->cfg.cert)) ||
		    (err = kube__blob_opt(e, CURLOPT_SSLKEY_BLOB, &k->cfg.key)))
			goto out;
		curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
		curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
	}
	if (x->kind == X_REQ) {
		if (strcmp(x->method, "GET") && strcmp(x->method, "POST"))
			curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, x->method);
		if (x->req_body)
			curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->req_body);
		else if (!strcmp(x->method, "POST"))
			curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
	}
	x->start_ns = x->last_ns = now_ns();
	if (curl_multi_add_handle(k->multi, e) != CURLM_OK) {
		err = -EIO;
		goto out;
	}
	x->easy = e;
	e = NULL;
	err = 0;
	k->st.requests++;
out:
	if (e)
		curl_easy_cleanup(e);
	free(url);
	return err;
}

/* "HTTP 403: pods is forbidden: ..." from an answer's Status, or its text. */
static void kube__http_msg(const struct kube_xfer *x, char *out, size_t len)
{
	cJSON *j = x->body.p ? cJSON_ParseWithLength(x->body.p, x->body.len) : NULL;
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "message");
	size_t n;

	if (cJSON_IsString(m)) {
		snprintf(out, len, "HTTP %ld: %s", x->status, m->valuestring);
	} else {
		n = snprintf(out, len, "HTTP %ld", x->status);
		if (x->body.len && n + 2 < len)
			snprintf(out + n, len - n, ": %.200s", x->body.p);
	}
	cJSON_Delete(j);
	/* one log line, whatever the server sent */
	for (char *p = out; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = ' ';
}

static enum kube_err kube__curl_kind(CURLcode rc)
{
	return rc == CURLE_OPERATION_TIMEDOUT ? KUBE_ERR_TIMEOUT : KUBE_ERR_TRANSPORT;
}

static const char *kube__curl_msg(const struct kube_xfer *x)
{
	return x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->rc);
}

static enum kube_err kube__status_kind(long status)
{
	if (status == 401 || status == 403)
		return KUBE_ERR_AUTH;
	return status == 410 ? KUBE_ERR_EXPIRED : KUBE_ERR_HTTP;
}

/* ---------------------------------------------------------- watches */

static void kube__watch_idle(struct kube_watch *w, uint64_t delay_ns)
{
	w->state = W_IDLE;
	w->x = NULL;
	w->due_ns = now_ns() + delay_ns;
}

static void kube__watch_fail(struct kube_watch *w, enum kube_err kind, unsigned min_ms,
			     const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Report, count, and retry after the backoff (or MIN_MS, if longer). */
static void kube__watch_fail(struct kube_watch *w, enum kube_err kind, unsigned min_ms,
			     const char *fmt, ...)
{
	struct kube *k = w->k;
	unsigned ms = kube__backoff_next(&w->bo, kube__rand(k));
	char msg[1024];
	va_list ap;
	int n;

	if (ms < min_ms)
		ms = min_ms < k->o.backoff_max_ms ? min_ms : k->o.backoff_max_ms;
	k->st.errors[kind]++;
	w->after_error = true;
	kube__watch_idle(w, (uint64_t)ms * NSEC_PER_MS);
	if (!w->o.on_error || w->dead)
		return;
	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < sizeof(msg))
		snprintf(msg + n, sizeof(msg) - n, "; retrying in %.1f s", ms / 1000.0);
	w->o.on_error(w->o.ctx, msg);
}

/* A list page or watch answered with an error status. A 401 right after
 * the token file changed is retried at once, without a report. */
static void kube__watch_http_fail(struct kube_watch *w, struct kube_xfer *x, const char *what)
{
	char msg[512];
	long ra = 0;

	if (x->status == 401 && !w->auth_retry && kube__token_check(w->k, true) > 0) {
		/* the token rotated under us: try the new one at once */
		w->k->st.errors[KUBE_ERR_AUTH]++;
		w->auth_retry = true;
		kube__watch_idle(w, 0);
		return;
	}
	if (x->status == 429 || x->status == 503)
		curl_easy_getinfo(x->easy, CURLINFO_RETRY_AFTER, &ra);
	kube__http_msg(x, msg, sizeof(msg));
	kube__watch_fail(w, kube__status_kind(x->status), ra > 0 ? (unsigned)ra * 1000 : 0,
			 "%s %s: %s", what, w->path, msg);
}

static int kube__query_sel(struct buf *b, struct kube_watch *w)
{
	int err = 0;

	if (w->fsel && !(err = buf_add(b, "&fieldSelector=", 15)))
		err = url_escape(b, w->fsel);
	if (!err && w->lsel && !(err = buf_add(b, "&labelSelector=", 15)))
		err = url_escape(b, w->lsel);
	return err;
}

static void kube__watch_start(struct kube_watch *w)
{
	struct kube *k = w->k;
	bool list = !w->rv;
	struct kube_xfer *x;
	struct buf q = {};
	char num[128];
	int err;

	x = kube__xfer_new(k, list ? X_LIST : X_WATCH);
	if (!x) {
		kube__watch_fail(w, KUBE_ERR_TRANSPORT, 0, "%s: out of memory", w->path);
		return;
	}
	x->w = w;
	err = buf_add(&q, w->path, strlen(w->path));
	if (!err)
		err = buf_add(&q, strchr(w->path, '?') ? "&" : "?", 1);
	if (list) {
		/* no resourceVersion: a consistent read, never older than
		 * what this watch has already seen */
		snprintf(num, sizeof(num), "limit=%u", k->o.list_limit);
		if (!err)
			err = buf_add(&q, num, strlen(num));
		if (!err && w->cont && !(err = buf_add(&q, "&continue=", 10)))
			err = url_escape(&q, w->cont);
	} else {
		unsigned span = k->o.watch_max_s - k->o.watch_min_s + 1;

		/* spread: not every watch of every node renews at once */
		snprintf(num, sizeof(num), "watch=1&allowWatchBookmarks=true&timeoutSeconds=%u"
			 "&resourceVersion=", k->o.watch_min_s + kube__rand(k) % span);
		if (!err)
			err = buf_add(&q, num, strlen(num));
		if (!err)
			err = url_escape(&q, w->rv);
	}
	if (!err)
		err = kube__query_sel(&q, w);
	if (!err)
		err = kube__xfer_start(x, q.p, list ? (long)k->o.list_timeout_ms : 0L, w->fresh);
	buf_free(&q);
	if (err) {
		kube__xfer_free(x);
		kube__watch_fail(w, KUBE_ERR_TRANSPORT, 0, "%s %s: cannot start: %s",
				 list ? "list" : "watch", w->path, strerror(-err));
		return;
	}
	w->fresh = false;
	w->state = W_BUSY;
	w->x = x;
	if (!list && w->after_error)
		k->st.reconnects++;
	if (!list)
		w->after_error = false;
}

/* Forget the resourceVersion: the next start lists from scratch. */
static void kube__watch_relist(struct kube_watch *w)
{
	free(w->rv);
	w->rv = NULL;
	free(w->cont);
	w->cont = NULL;
	w->k->st.errors[KUBE_ERR_EXPIRED]++;
	kube__watch_idle(w, 0);
}

static void kube__list_done(struct kube_watch *w, struct kube_xfer *x)
{
	struct kube *k = w->k;
	const cJSON *items, *meta, *rv, *cont, *it;
	cJSON *root;

	if (x->overflow) {
		kube__watch_fail(w, KUBE_ERR_DECODE, 0, "list %s: a page larger than %zu bytes",
				 w->path, k->o.max_body);
		return;
	}
	if (x->rc != CURLE_OK) {
		w->fresh = true;
		kube__watch_fail(w, kube__curl_kind(x->rc), 0, "list %s: %s", w->path,
				 kube__curl_msg(x));
		return;
	}
	if (x->status == 410 && w->cont) {
		/* the continue token expired: a new list from the start */
		kube__watch_relist(w);
		return;
	}
	if (x->status != 200) {
		kube__watch_http_fail(w, x, "list");
		return;
	}
	w->auth_retry = false;
	root = cJSON_ParseWithLength(x->body.p ? x->body.p : "", x->body.len);
	items = cJSON_GetObjectItemCaseSensitive(root, "items");
	meta = cJSON_GetObjectItemCaseSensitive(root, "metadata");
	rv = cJSON_GetObjectItemCaseSensitive(meta, "resourceVersion");
	cont = cJSON_GetObjectItemCaseSensitive(meta, "continue");
	if (!cJSON_IsObject(root) || !(cJSON_IsArray(items) || cJSON_IsNull(items)) ||
	    !cJSON_IsString(rv) || !*rv->valuestring) {
		cJSON_Delete(root);
		kube__watch_fail(w, KUBE_ERR_DECODE, 0,
				 "list %s: not a list (no items or metadata.resourceVersion)", w->path);
		return;
	}
	if (!w->cont) {
		if (w->listed)
			k->st.relists++;
		w->synced = false;
		if (w->o.on_reset)
			w->o.on_reset(w->o.ctx);
	}
	cJSON_ArrayForEach(it, items) {
		if (w->dead)
			break;
		k->st.events++;
		if (w->o.on_event)
			w->o.on_event(w->o.ctx, KUBE_ADDED, it);
	}
	free(w->cont);
	w->cont = NULL;
	if (!w->dead && cJSON_IsString(cont) && *cont->valuestring) {
		w->cont = strdup(cont->valuestring);
		cJSON_Delete(root);
		if (!w->cont) {
			kube__watch_fail(w, KUBE_ERR_DECODE, 0, "list %s: out of memory", w->path);
			return;
		}
		kube__watch_idle(w, 0);
		return;
	}
	free(w->rv);
	w->rv = strdup(rv->valuestring);
	cJSON_Delete(root);
	if (!w->rv) {
		kube__watch_fail(w, KUBE_ERR_DECODE, 0, "list %s: out of memory", w->path);
		return;
	}
	w->listed = true;
	w->synced = true;
	w->after_error = false;
	kube__backoff_reset(&w->bo);
	kube__watch_idle(w, 0);
	if (!w->dead && w->o.on_synced)
		w->o.on_synced(w->o.ctx);
}

static void kube__watch_end(struct kube_xfer *x, enum xfer_end end, enum kube_err kind,
			    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void kube__watch_end(struct kube_xfer *x, enum xfer_end end, enum kube_err kind,
			    const char *fmt, ...)
{
	va_list ap;

	x->end = end;
	x->end_kind = kind;
	va_start(ap, fmt);
	if (vasprintf(&x->end_msg, fmt, ap) < 0)
		x->end_msg = NULL;
	va_end(ap);
}

static void kube__watch_set_rv(struct kube_watch *w, const cJSON *obj)
{
	const cJSON *rv = cJSON_GetObjectItemCaseSensitive(
		cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "resourceVersion");
	char *s;

	if (!cJSON_IsString(rv) || !*rv->valuestring)
		return;
	if (w->rv && !strcmp(w->rv, rv->valuestring))
		return;
	s = strdup(rv->valuestring);
	if (!s)
		return;
	free(w->rv);
	w->rv = s;
}

static void kube__watch_line(struct kube_watch *w, struct kube_xfer *x, const char *line,
			     size_t len)
{
	static const char *const types[] = { "ADDED", "MODIFIED", "DELETED" };
	cJSON *ev = cJSON_ParseWithLength(line, len);
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(ev, "type");
	const cJSON *obj = cJSON_GetObjectItemCaseSensitive(ev, "object");
	const char *t = cJSON_IsString(type) ? type->valuestring : "";
	size_t i;

	if (!cJSON_IsObject(ev) || !cJSON_IsObject(obj)) {
		kube__watch_end(x, END_FAIL, KUBE_ERR_DECODE, "watch %s: not a watch event: %.100s",
				w->path, line);
		goto out;
	}
	for (i = 0; i < 3; i++)
		if (!strcmp(t, types[i]))
			break;
	if (i < 3) {
		kube__watch_set_rv(w, obj);
		/* a live stream: the server is fine, the next failure starts over */
		kube__backoff_reset(&w->bo);
		w->k->st.events++;
		if (w->o.on_event)
			w->o.on_event(w->o.ctx, (enum kube_event_type)i, obj);
	} else if (!strcmp(t, "BOOKMARK")) {
		kube__watch_set_rv(w, obj);
		kube__backoff_reset(&w->bo);
	} else if (!strcmp(t, "ERROR")) {
		const cJSON *code = cJSON_GetObjectItemCaseSensitive(obj, "code");
		const cJSON *reason = cJSON_GetObjectItemCaseSensitive(obj, "reason");
		const cJSON *msg = cJSON_GetObjectItemCaseSensitive(obj, "message");
		const char *r = cJSON_IsString(reason) ? reason->valuestring : "";

		if ((cJSON_IsNumber(code) && code->valueint == 410) || !strcmp(r, "Expired") ||
		    !strcmp(r, "Gone"))
			kube__watch_end(x, END_RELIST, KUBE_ERR_EXPIRED, "expired");
		else
			kube__watch_end(x, END_FAIL, KUBE_ERR_HTTP, "watch %s: ERROR event: %d %s: %s",
					w->path, cJSON_IsNumber(code) ? code->valueint : 0, r,
					cJSON_IsString(msg) ? msg->valuestring : "");
	} else {
		kube__watch_end(x, END_FAIL, KUBE_ERR_DECODE, "watch %s: unknown event type \"%.40s\"",
				w->path, t);
	}
out:
	cJSON_Delete(ev);
}

static void kube__watch_drain(struct kube_xfer *x)
{
	struct kube_watch *w = x->w;
	size_t len;
	char *line;

	while (x->end == END_NONE && !w->dead && (line = kube__lines_next(&x->lines, &len))) {
		if (!len)
			continue;
		x->nlines++;
		kube__watch_line(w, x, line, len);
	}
}

static void kube__watch_done(struct kube_watch *w, struct kube_xfer *x)
{
	struct kube *k = w->k;

	if (x->end == END_RELIST) {
		kube__watch_relist(w);
		return;
	}
	if (x->end == END_FAIL) {
		kube__watch_fail(w, x->end_kind, 0, "%s", x->end_msg ? x->end_msg : "watch failed");
		return;
	}
	if (x->stalled) {
		w->fresh = true;
		kube__watch_fail(w, KUBE_ERR_STALL, 0, "watch %s: no data for %.1f s", w->path,
				 k->o.stall_ms / 1000.0);
		return;
	}
	if (x->line_err) {
		kube__watch_fail(w, KUBE_ERR_DECODE, 0, "watch %s: %s", w->path,
				 x->line_err == -E2BIG ? "an event longer than the line limit" :
				 x->line_err == -EILSEQ ? "a NUL byte in the stream" :
				 strerror(-x->line_err));
		return;
	}
	if (x->rc != CURLE_OK) {
		w->fresh = true;
		kube__watch_fail(w, kube__curl_kind(x->rc), 0, "watch %s: %s", w->path,
				 kube__curl_msg(x));
		return;
	}
	if (x->status == 410) {
		kube__watch_relist(w);
		return;
	}
	if (x->status != 200) {
		kube__watch_http_fail(w, x, "watch");
		return;
	}
	w->auth_retry = false;
	if (!x->nlines && now_ns() - x->start_ns < SHORT_WATCH_NS) {
		/* a server that ends watches at once would have us spin */
		kube__watch_fail(w, KUBE_ERR_TRANSPORT, 0,
				 "watch %s: ended at once without an event", w->path);
		return;
	}
	/* timeoutSeconds is up: go on from where we are */
	k->st.rewatches++;
	kube__watch_idle(w, 0);
}

/* ---------------------------------------------------------- requests */

static void kube__req_done(struct kube_xfer *x)
{
	struct kube *k = x->k;
	struct kube_result r = { .status = x->status };
	char msg[768] = "";
	cJSON *j = NULL;

	if (!x->done) {
		r.err = -ECANCELED;
		snprintf(msg, sizeof(msg), "%s %s: cancelled", x->method, x->path);
	} else if (x->overflow) {
		r.err = -EFBIG;
		k->st.errors[KUBE_ERR_DECODE]++;
		snprintf(msg, sizeof(msg), "%s %s: answer larger than %zu bytes", x->method, x->path,
			 k->o.max_body);
	} else if (x->rc != CURLE_OK) {
		r.err = x->rc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT :
			x->rc == CURLE_COULDNT_CONNECT ? -ECONNREFUSED : -EIO;
		k->st.errors[kube__curl_kind(x->rc)]++;
		snprintf(msg, sizeof(msg), "%s %s: %s", x->method, x->path, kube__curl_msg(x));
	} else if (x->status / 100 != 2) {
		char hm[512];

		k->st.errors[kube__status_kind(x->status)]++;
		kube__http_msg(x, hm, sizeof(hm));
		snprintf(msg, sizeof(msg), "%s %s: %s", x->method, x->path, hm);
	}
	r.body = x->body.p ? x->body.p : "";
	r.body_len = x->body.len;
	if (x->body.len)
		j = cJSON_ParseWithLength(x->body.p, x->body.len);
	r.json = j;
	r.msg = msg[0] ? msg : NULL;
	if (x->done_cb)
		x->done_cb(x->ctx, &r);
	cJSON_Delete(j);
}

int kube__request(struct kube *k, const char *method, const char *path, const char *json_body,
		  kube_done_fn done, void *ctx)
{
	struct kube_xfer *x;

	if (k->freeing)
		return -ESHUTDOWN;
	if (!method || !path || path[0] != '/' || strpbrk(method, " \r\n") || strpbrk(path, " \r\n"))
		return -EINVAL;
	x = kube__xfer_new(k, X_REQ);
	if (!x)
		return -ENOMEM;
	x->done_cb = done;
	x->ctx = ctx;
	if (str_dup(&x->method, method) || str_dup(&x->path, path) ||
	    str_dup(&x->req_body, json_body)) {
		kube__xfer_free(x);
		return -ENOMEM;
	}
	k->kick = true;
	kube__arm(k);
	return 0;
}

/* A 401 with a token that changed since: the same request once more. */
static bool kube__req_retry(struct kube_xfer *x)
{
	struct kube *k = x->k;
	struct kube_xfer *n;

	if (x->retried || x->rc != CURLE_OK || x->status != 401 || kube__token_check(k, true) <= 0)
		return false;
	n = kube__xfer_new(k, X_REQ);
	if (!n)
		return false;
	n->method = x->method;
	n->path = x->path;
	n->req_body = x->req_body;
	n->done_cb = x->done_cb;
	n->ctx = x->ctx;
	n->retried = true;
	x->method = x->path = x->req_body = NULL;
	k->st.errors[KUBE_ERR_AUTH]++;
	k->kick = true;
	return true;
}

/* ---------------------------------------------------------- the loop */

/* X is over: report and free it. */
static void kube__finish(struct kube_xfer *x)
{
	struct kube_watch *w = x->w;

	if (x->kind == X_REQ) {
		if (!kube__req_retry(x))
			kube__req_done(x);
	} else if (!w->dead) {
		if (x->kind == X_WATCH && x->done && x->rc == CURLE_OK && x->status == 200 &&
		    x->end == END_NONE) {
			/* a last line without its newline */
			kube__lines_finish(&x->lines);
			kube__watch_drain(x);
		}
		if (!w->dead) {
			if (x->kind == X_LIST)
				kube__list_done(w, x);
			else
				kube__watch_done(w, x);
		}
	}
	if (w && w->x == x)
		w->x = NULL;
	kube__xfer_free(x);
}

static void kube__process(struct kube *k)
{
	uint64_t now = now_ns(), stall = (uint64_t)k->o.stall_ms * NSEC_PER_MS;
	struct kube_watch *w, **pw;
	struct kube_xfer *x, *next;
	CURLMsg *m;
	int q;

	while ((m = curl_multi_info_read(k->multi, &q))) {
		char *p = NULL;

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &p);
		x = (struct kube_xfer *)p;
		x->done = true;
		x->rc = m->data.result;
		if (!x->status)
			curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
	}
	/* lines first: a stream that ended still delivers what it had */
	for (x = k->xfers; x; x = x->next)
		if (x->kind == X_WATCH && x->easy && !x->w->dead)
			kube__watch_drain(x);
	for (x = k->xfers; x; x = next) {
		next = x->next;
		if (!x->easy)
			continue;
		if (x->kind == X_WATCH && !x->done && x->end == END_NONE && now - x->last_ns > stall)
			x->stalled = true;
		if (x->done || x->stalled || x->end != END_NONE || (x->w && x->w->dead))
			kube__finish(x);
	}
	/* start what is due; new work queued by callbacks meanwhile too */
	k->kick = false;
	now = now_ns();
	for (x = k->xfers; x; x = next) {
		int err;

		next = x->next;
		if (x->easy || x->kind != X_REQ)
			continue;
		err = kube__xfer_start(x, x->path, (long)k->o.request_timeout_ms, false);
		if (err) {
			x->done = true;
			x->rc = CURLE_FAILED_INIT;
			snprintf(x->errbuf, sizeof(x->errbuf), "cannot start: %s", strerror(-err));
			kube__finish(x);
		}
	}
	for (w = k->watches; w; w = w->next)
		if (!w->dead && w->state == W_IDLE && w->due_ns <= now)
			kube__watch_start(w);
	for (pw = &k->watches; (w = *pw);) {
		if (w->dead && !w->x) {
			*pw = w->next;
			free(w->path);
			free(w->fsel);
			free(w->lsel);
			free(w->rv);
			free(w->cont);
			free(w);
			continue;
		}
		pw = &w->next;
	}
}

int kube__run(struct kube *k)
{
	struct epoll_event evs[64];
	int n, i, running, err = 0;

	n = epoll_wait(k->epfd, evs, 64, 0);
	if (n < 0 && errno != EINTR)
		err = -errno;
	for (i = 0; i < n; i++) {
		int fd = evs[i].data.fd, mask = 0;

		if (fd == k->tfd) {
			uint64_t exp;

			if (read(fd, &exp, sizeof(exp)) < 0) {}
			k->armed = 0;
			continue;
		}
		if (evs[i].events & EPOLLIN)
			mask |= CURL_CSELECT_IN;
		if (evs[i].events & EPOLLOUT)
			mask |= CURL_CSELECT_OUT;
		if (evs[i].events & (EPOLLERR | EPOLLHUP))
			mask |= CURL_CSELECT_ERR;
		curl_multi_socket_action(k->multi, fd, mask, &running);
	}
	if (k->curl_due && now_ns() >= k->curl_due) {
		k->curl_due = 0;
		curl_multi_socket_action(k->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
	kube__process(k);
	kube__arm(k);
	return err;
}

/* ---------------------------------------------------------- life cycle */

int kube__watch_add(struct kube *k, const struct kube_watch_opts *o, struct kube_watch **out)
{
	struct kube_watch *w, **pw;

	if (!o->path || o->path[0] != '/' || strpbrk(o->path, " \r\n"))
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->k = k;
	w->o = *o;
	if (str_dup(&w->path, o->path) || str_dup(&w->fsel, o->field_selector) ||
	    str_dup(&w->lsel, o->label_selector)) {
		free(w->path);
		free(w->fsel);
		free(w->lsel);
		free(w);
		return -ENOMEM;
	}
	w->o.path = w->path;
	w->o.field_selector = w->fsel;
	w->o.label_selector = w->lsel;
	w->bo.base_ms = k->o.backoff_base_ms;
	w->bo.max_ms = k->o.backoff_max_ms;
	kube__watch_idle(w, 0);
	for (pw = &k->watches; *pw; pw = &(*pw)->next)
		;
	*pw = w;
	k->kick = true;
	kube__arm(k);
	if (out)
		*out = w;
	return 0;
}

void kube__watch_del(struct kube_watch *w)
{
	if (!w)
		return;
	w->dead = true;
	w->k->kick = true;
	kube__arm(w->k);
}

int kube__new(const struct kube_config *cfg, const struct kube_opts *opts, struct kube **out,
	      char *err, size_t errlen)
{
	struct epoll_event ev = { .events = EPOLLIN };
	struct kube *k;
	int rc;

	if (!cfg->server || (strncmp(cfg->server, "https://", 8) && strncmp(cfg->server, "http://", 7))) {
		log__errf(err, errlen, "no API server URL (http:// or https://)");
		return -EINVAL;
	}
	if (!cfg->cert.data != !cfg->key.data) {
		log__errf(err, errlen, "a client certificate needs its key, and a key its certificate");
		return -EINVAL;
	}
	k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->epfd = k->tfd = -1;
	if (opts)
		k->o = *opts;
#define DEF(f, v) do { if (!k->o.f) k->o.f = (v); } while (0)
	DEF(connect_timeout_ms, 10000);
	DEF(list_timeout_ms, 60000);
	DEF(request_timeout_ms, 30000);
	DEF(stall_ms, 90000);
	DEF(backoff_base_ms, 250);
	DEF(backoff_max_ms, 30000);
	DEF(watch_min_s, 300);
	DEF(watch_max_s, 600);
	DEF(list_limit, 500);
	DEF(max_line, DEF_MAX_LINE);
	DEF(max_body, DEF_MAX_BODY);
#undef DEF
	if (k->o.watch_max_s < k->o.watch_min_s)
		k->o.watch_max_s = k->o.watch_min_s;
	if (k->o.backoff_max_ms < k->o.backoff_base_ms)
		k->o.backoff_max_ms = k->o.backoff_base_ms;
	k->o.user_agent = NULL;
	rc = config_copy(&k->cfg, cfg);
	if (!rc)
		rc = str_dup(&k->ua, opts && opts->user_agent ? opts->user_agent : "sluice");
	if (rc) {
		log__errf(err, errlen, "out of memory");
		goto fail;
	}
	if (k->cfg.token_file) {
		/* the file as of now is the baseline for "changed" */
		rc = kube__token_check(k, true);
		if (rc < 0 && !k->cfg.token) {
			log__errf(err, errlen, "%s: %s", k->cfg.token_file, strerror(-rc));
			goto fail;
		}
		k->st.token_reloads = 0;
	}
	if (getrandom(&k->rng, sizeof(k->rng), GRND_NONBLOCK) != sizeof(k->rng))
		k->rng = now_ns() ^ (uint64_t)getpid() << 32;
	k->rng |= 1;
	if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
		log__errf(err, errlen, "libcurl initialisation failed");
		rc = -EIO;
		goto fail;
	}
	k->curl_init = true;
	k->multi = curl_multi_init();
	k->epfd = epoll_create1(EPOLL_CLOEXEC);
	k->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (!k->multi || k->epfd < 0 || k->tfd < 0) {
		rc = k->multi ? -errno : -ENOMEM;
		log__errf(err, errlen, "cannot set up the event loop: %s", strerror(-rc));
		goto fail;
	}
	ev.data.fd = k->tfd;
	if (epoll_ctl(k->epfd, EPOLL_CTL_ADD, k->tfd, &ev)) {
		rc = -errno;
		log__errf(err, errlen, "cannot set up the event loop: %s", strerror(-rc));
		goto fail;
	}
	curl_multi_setopt(k->multi, CURLMOPT_SOCKETFUNCTION, kube__sock_cb);
	curl_multi_setopt(k->multi, CURLMOPT_SOCKETDATA, k);
	curl_multi_setopt(k->multi, CURLMOPT_TIMERFUNCTION, kube__timer_cb);
	curl_multi_setopt(k->multi, CURLMOPT_TIMERDATA, k);
	*out = k;
	return 0;
fail:
	kube__free(k);
	return rc;
}

void kube__free(struct kube *k)
{
	struct kube_watch *w;

	if (!k)
		return;
	k->freeing = true;
	for (w = k->watches; w; w = w->next)
		w->dead = true;
	while (k->xfers) {
		struct kube_xfer *x = k->xfers;

		if (x->kind == X_REQ) {
			x->done = false;
			kube__req_done(x);
		}
		kube__xfer_free(x);
	}
	while ((w = k->watches)) {
		k->watches = w->next;
		free(w->path);
		free(w->fsel);
		free(w->lsel);
		free(w->rv);
		free(w->cont);
		free(w);
	}
	if (k->multi)
		curl_multi_cleanup(k->multi);
	if (k->curl_init)
		curl_global_cleanup();
	if (k->epfd >= 0)
		close(k->epfd);
	if (k->tfd >= 0)
		close(k->tfd);
	kube__config_free(&k->cfg);
	free(k->ua);
	free(k);
}
