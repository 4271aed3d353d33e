/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Kubernetes API client for sluiced: list+watch with the semantics of
 * client-go's reflector, and one-shot requests, on libcurl's multi socket
 * interface. No threads: the client keeps its sockets and one timerfd in an
 * epoll set of its own, and the daemon puts that one fd in its loop, as with
 * httpd:
 *
 *	daemon__add_fd(d, kube__fd(k), EPOLLIN);
 *	...
 *	else if (fd == kube__fd(k))
 *		kube__run(k);
 *
 * Every callback runs from kube__run, never from inside libcurl and never
 * from the call that registered it, so a callback may call any kube__
 * function except kube__free.
 *
 * Watches: on_reset, then each object of a full list as ADDED, then
 * on_synced; then the watch's ADDED/MODIFIED/DELETED. A consumer that keeps
 * a cache drops at on_synced what was not ADDED since on_reset. A watch
 * that ends or breaks resumes from the last resourceVersion seen (events or
 * bookmarks), so nothing is lost or repeated; only when that version is
 * gone (410) does a new list start, with on_reset again.
 */
#ifndef SLUICE_KUBE_H
#define SLUICE_KUBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cJSON;
struct kube;
struct kube_watch;

#define KUBE_SA_DIR		"/var/run/secrets/kubernetes.io/serviceaccount"

/* ---------------------------------------------------------- configuration */

struct kube_blob {
	unsigned char *data;	/* NUL-terminated for convenience */
	size_t len;
};

struct kube_config {
	char *server;		/* "https://host:port", no trailing '/' */
	char *ns;		/* the context's or the pod's namespace, or NULL */
	char *token;		/* bearer token, or NULL */
	char *token_file;	/* re-read when it changes, or NULL */
	struct kube_blob ca;	/* PEM; empty: the system's CAs */
	struct kube_blob cert;	/* client certificate, PEM; with key */
	struct kube_blob key;
	bool insecure;		/* no server certificate verification */
	bool skip_host_check;	/* verify the chain, not the host name */
};

/* In a pod: KUBERNETES_SERVICE_HOST/PORT and SA_DIR/{token,ca.crt,namespace}
 * (SA_DIR NULL: KUBE_SA_DIR). 0, or -errno with a message in ERR. */
int kube__config_incluster(const char *sa_dir, struct kube_config *cfg, char *err, size_t errlen);
/* A kubeconfig file (PATH NULL: $KUBECONFIG, else ~/.kube/config), context
 * CONTEXT (NULL: current-context). Relative file names in it are relative
 * to its directory; *-data fields win over their file counterparts. exec
 * and auth-provider credentials are not supported (an error says so).
 * 0, or -errno with a message naming the file and the field in ERR. */
int kube__config_kubeconfig(const char *path, const char *context, struct kube_config *cfg,
			    char *err, size_t errlen);
void kube__config_free(struct kube_config *cfg);
/* The whole file at PATH (at most 1 MiB), NUL-terminated, malloc'd.
 * 0 or -errno (-EFBIG beyond the bound). */
int kube__read_file(const char *path, unsigned char **out, size_t *len);
/* A bearer token from PATH: surrounding white space removed; empty, or
 * with characters that could end a header, refused (-EINVAL, ERR says
 * which). 0 or -errno. */
int kube__read_token(const char *path, char **out, char *err, size_t errlen);

/* ---------------------------------------------------------- client */

struct kube_opts {
	const char *user_agent;		/* NULL: "sluice" */
	unsigned connect_timeout_ms;	/* 0: 10000 */
	unsigned list_timeout_ms;	/* one list page, total; 0: 60000 */
	unsigned request_timeout_ms;	/* kube__request, total; 0: 30000 */
	unsigned stall_ms;		/* watch without a byte this long: reconnect; 0: 90000 */
	/* Per watch, after each failure; back to the start when a list
	 * completes or a watch delivers an event or bookmark. A Retry-After
	 * (429, 503) is honoured up to backoff_max_ms. */
	unsigned backoff_base_ms;	/* 0: 250 */
	unsigned backoff_max_ms;	/* 0: 30000 */
	unsigned watch_min_s;		/* timeoutSeconds is random in [min, max]; 0: 300 */
	unsigned watch_max_s;		/* 0: 600 */
	unsigned list_limit;		/* 0: 500 */
	size_t max_line;		/* one watch event; 0: 16 MiB */
	size_t max_body;		/* one list page or response; 0: 256 MiB */
};

/* Copies CFG and OPTS (OPTS may be NULL). 0, or -errno with ERR. */
int kube__new(const struct kube_config *cfg, const struct kube_opts *opts, struct kube **out,
	      char *err, size_t errlen);
/* Stops everything; pending kube__request callbacks get err -ECANCELED
 * (they must not call into K). No watch callback runs. */
void kube__free(struct kube *k);
/* Level-triggered fd for the daemon's epoll (EPOLLIN). */
int kube__fd(const struct kube *k);
/* Call when kube__fd is readable. 0, or -errno if the fd failed. */
int kube__run(struct kube *k);

/* ---------------------------------------------------------- watches */

enum kube_event_type { KUBE_ADDED, KUBE_MODIFIED, KUBE_DELETED };

struct kube_watch_opts {
	const char *path;		/* "/api/v1/pods", "/apis/sluice.dev/v1alpha1/agentpolicies" */
	const char *field_selector;	/* or NULL: "spec.nodeName=n1" */
	const char *label_selector;	/* or NULL */
	void (*on_reset)(void *ctx);
	/* OBJECT is valid during the call only. */
	void (*on_event)(void *ctx, enum kube_event_type type, const struct cJSON *object);
	void (*on_synced)(void *ctx);
	/* Something failed; MSG says what and when the next attempt is. */
	void (*on_error)(void *ctx, const char *msg);
	void *ctx;
};

/* Starts at the next kube__run. Copies O. 0, or -errno. */
int kube__watch_add(struct kube *k, const struct kube_watch_opts *o, struct kube_watch **out);
/* No callback of W runs after this; also from W's own callbacks. */
void kube__watch_del(struct kube_watch *w);
/* A list has completed (and no relist started since). */
bool kube__watch_synced(const struct kube_watch *w);

/* ---------------------------------------------------------- requests */

struct kube_result {
	int err;			/* 0 (an answer came), or -errno: -ETIMEDOUT, -ECONNREFUSED, -EIO, -ECANCELED */
	long status;			/* HTTP status, 0 without an answer */
	const char *body;		/* NUL-terminated, never NULL */
	size_t body_len;
	const struct cJSON *json;	/* BODY parsed, or NULL */
	const char *msg;		/* NULL on 2xx; else "POST /path: HTTP 422: why" */
};

typedef void (*kube_done_fn)(void *ctx, const struct kube_result *r);

/* METHOD "GET", "POST", "PUT", "DELETE", or "PATCH" (a JSON merge patch,
 * application/merge-patch+json). JSON_BODY may be NULL. DONE runs once,
 * from kube__run. No retries, except once on a 401 after the token file
 * changed. 0, or -errno (then DONE never runs). */
int kube__request(struct kube *k, const char *method, const char *path, const char *json_body,
		  kube_done_fn done, void *ctx);

/* ---------------------------------------------------------- stats */

enum kube_err {
	KUBE_ERR_TRANSPORT,	/* connect, TLS, connection lost */
	KUBE_ERR_TIMEOUT,	/* connect or request deadline */
	KUBE_ERR_STALL,		/* a watch went silent */
	KUBE_ERR_HTTP,		/* 4xx/5xx other than below, ERROR events */
	KUBE_ERR_AUTH,		/* 401, 403 */
	KUBE_ERR_EXPIRED,	/* 410: resourceVersion or continue token too old */
	KUBE_ERR_DECODE,	/* not JSON, not a watch event, too long */
	KUBE_ERR_MAX
};

struct kube_stats {
	uint64_t requests;		/* HTTP requests started */
	uint64_t errors[KUBE_ERR_MAX];
	uint64_t relists;		/* lists after a watch's first */
	uint64_t reconnects;		/* watches resumed after an error */
	uint64_t rewatches;		/* watches resumed after the server ended one */
	uint64_t events;		/* objects delivered (list items and watch events) */
	uint64_t token_reloads;		/* token file changed */
};

void kube__stats(const struct kube *k, struct kube_stats *out);
/* "transport", "timeout", ...: label values for metrics. */
const char *kube__err_name(enum kube_err e);

/* ---------------------------------------------------------- internals, for tests */

/* A byte stream cut into lines. Bytes go in as they come; complete lines
 * ('\n', a trailing '\r' dropped) come out NUL-terminated. */
struct kube_lines {
	char *buf;
	size_t len;		/* bytes held */
	size_t rd;		/* start of the next complete line */
	size_t done;		/* end of the complete lines */
	size_t cap;
	size_t max;		/* longest line; 0: 16 MiB */
};

/* 0, -E2BIG (a line longer than max), -EILSEQ (a NUL byte), -ENOMEM.
 * After an error the buffer is unusable except for kube__lines_free. */
int kube__lines_feed(struct kube_lines *l, const void *data, size_t n);
/* The next complete line, or NULL; valid until the next feed. */
char *kube__lines_next(struct kube_lines *l, size_t *len);
/* End of stream: a last line without '\n' becomes complete. */
void kube__lines_finish(struct kube_lines *l);
/* Bytes of the incomplete last line. */
size_t kube__lines_partial(const struct kube_lines *l);
void kube__lines_free(struct kube_lines *l);

/* Exponential backoff with jitter: the n-th delay (from 0) is in
 * [c/2, c] for c = min(base * 2^n, max). */
struct kube_backoff {
	unsigned base_ms, max_ms, cur_ms;
};

unsigned kube__backoff_next(struct kube_backoff *b, uint32_t rnd);
void kube__backoff_reset(struct kube_backoff *b);

#endif
