// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Cross-node flow lookups between sluiced daemons: the wire format, the
 * server's decoding, and a batching client on one libcurl client (struct
 * kube, whose one-shot requests are plain HTTP) per peer. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#include <cjson/cJSON.h>
#include "events.h"
#include "kube.h"
#include "log.h"
#include "peer.h"

#define PEER_TOOLS_MAX	((int)(sizeof(((struct peer_flow *)0)->tools) / sizeof(char *)))

static uint64_t now_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t now_real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------- wire format */

static bool add_u64(cJSON *o, const char *k, uint64_t v)
{
	char buf[24];

	snprintf(buf, sizeof(buf), "%" PRIu64, v);
	return cJSON_AddStringToObject(o, k, buf);
}

static bool add_str(cJSON *o, const char *k, const char *v)
{
	return cJSON_AddStringToObject(o, k, v ? v : "");
}

static bool add_addr(cJSON *o, const char *k, const uint8_t a[SL_ADDR_LEN], uint16_t port)
{
	char buf[64];

	events__format_addr(a, port, 1, buf, sizeof(buf));
	return cJSON_AddStringToObject(o, k, buf);
}

cJSON *peer__flow_json(const struct corr_flow_info *fi)
{
	cJSON *o = cJSON_CreateObject(), *tools;
	bool ok;

	if (!o)
		return NULL;
	ok = add_u64(o, "cookie", fi->cookie) && add_u64(o, "cgroup_id", fi->cgroup_id) &&
	     add_u64(o, "identity_cgroup_id", fi->ident_cgid) &&
	     add_u64(o, "established_ns", fi->established_ns) &&
	     add_u64(o, "close_ns", fi->close_ns) &&
	     cJSON_AddBoolToObject(o, "close_inferred", fi->close_inferred) &&
	     cJSON_AddNumberToObject(o, "pid", fi->pid) &&
	     cJSON_AddNumberToObject(o, "uid", fi->uid) && add_str(o, "comm", fi->comm) &&
	     add_addr(o, "src", fi->saddr, fi->sport) && add_addr(o, "dst", fi->daddr, fi->dport) &&
	     cJSON_AddNumberToObject(o, "family", fi->family == AF_INET6 ? 6 : 4) &&
	     cJSON_AddNumberToObject(o, "protocol", fi->protocol) &&
	     cJSON_AddNumberToObject(o, "verdict", fi->verdict) &&
	     cJSON_AddNumberToObject(o, "class", fi->class) &&
	     cJSON_AddBoolToObject(o, "has_gateway", fi->has_gateway) &&
	     cJSON_AddBoolToObject(o, "tools_listed", fi->tools_listed) &&
	     add_str(o, "cgroup", fi->cgroup) && add_str(o, "namespace", fi->pod_namespace) &&
	     add_str(o, "pod", fi->pod_name) &&
	     add_str(o, "service_account", fi->service_account) &&
	     add_str(o, "policy", fi->policy) && add_str(o, "rule", fi->rule) &&
	     (tools = cJSON_AddArrayToObject(o, "tools"));
	for (size_t i = 0; ok && i < fi->ntools; i++) {
		cJSON *t = cJSON_CreateString(fi->tools[i]);

		ok = t && cJSON_AddItemToArray(tools, t);
	}
	if (!ok) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

static int get_u64(const cJSON *o, const char *k, uint64_t *v)
{
	const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
	char *end;

	if (!cJSON_IsString(j) || !j->valuestring[0] || j->valuestring[0] == '-')
		return -EINVAL;
	errno = 0;
	*v = strtoull(j->valuestring, &end, 10);
	return errno || *end ? -EINVAL : 0;
}

static int get_num(const cJSON *o, const char *k, double max, double *v)
{
	const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);

	if (!cJSON_IsNumber(j) || j->valuedouble < 0 || j->valuedouble > max)
		return -EINVAL;
	*v = j->valuedouble;
	return 0;
}

static int get_str(const cJSON *o, const char *k, char *buf, size_t len)
{
	const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);

	if (!cJSON_IsString(j))
		return -EINVAL;
	snprintf(buf, len, "%s", j->valuestring);
	return 0;
}

static bool get_bool(const cJSON *o, const char *k)
{
	return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, k));
}

static int get_addr(const cJSON *o, const char *k, uint8_t a[SL_ADDR_LEN], uint16_t *port)
{
	const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
	struct gw_record r;

	if (!cJSON_IsString(j) || gateway__parse_peer(j->valuestring, strlen(j->valuestring), &r))
		return -EINVAL;
	memcpy(a, r.peer_addr, SL_ADDR_LEN);
	*port = r.peer_port;
	return 0;
}

int peer__flow_parse(const cJSON *o, const char *node, struct peer_flow *out)
{
	struct corr_flow_info *fi = &out->fi;
	const cJSON *tools, *t;
	double pid, uid, fam, proto, verdict, class;

	memset(out, 0, sizeof(*out));
	if (!cJSON_IsObject(o) || get_u64(o, "cookie", &fi->cookie) ||
	    get_u64(o, "cgroup_id", &fi->cgroup_id) ||
	    get_u64(o, "identity_cgroup_id", &fi->ident_cgid) ||
	    get_u64(o, "established_ns", &fi->established_ns) ||
	    get_u64(o, "close_ns", &fi->close_ns) || get_num(o, "pid", UINT32_MAX, &pid) ||
	    get_num(o, "uid", UINT32_MAX, &uid) || get_num(o, "family", 6, &fam) ||
	    get_num(o, "protocol", 255, &proto) || get_num(o, "verdict", 255, &verdict) ||
	    get_num(o, "class", 255, &class) || get_str(o, "comm", fi->comm, sizeof(fi->comm)) ||
	    get_addr(o, "src", fi->saddr, &fi->sport) || get_addr(o, "dst", fi->daddr, &fi->dport) ||
	    get_str(o, "cgroup", out->cgroup, sizeof(out->cgroup)) ||
	    get_str(o, "namespace", out->pod_namespace, sizeof(out->pod_namespace)) ||
	    get_str(o, "pod", out->pod_name, sizeof(out->pod_name)) ||
	    get_str(o, "service_account", out->service_account, sizeof(out->service_account)) ||
	    get_str(o, "policy", out->policy, sizeof(out->policy)) ||
	    get_str(o, "rule", out->rule, sizeof(out->rule)))
		return -EINVAL;
	fi->pid = (uint32_t)pid;
	fi->uid = (uint32_t)uid;
	fi->family = fam == 6 ? AF_INET6 : AF_INET;
	fi->protocol = (uint8_t)proto;
	fi->verdict = (uint8_t)verdict;
	fi->class = (uint8_t)class;
	fi->type = SL_EV_ESTABLISHED;
	fi->close_inferred = get_bool(o, "close_inferred");
	fi->has_gateway = get_bool(o, "has_gateway");
	fi->tools_listed = get_bool(o, "tools_listed");
	tools = cJSON_GetObjectItemCaseSensitive(o, "tools");
	if (tools && !cJSON_IsArray(tools))
		return -EINVAL;
	cJSON_ArrayForEach(t, tools) {
		if (!cJSON_IsString(t))
			return -EINVAL;
		if (fi->ntools == (size_t)PEER_TOOLS_MAX) {
			/* A list cut short would report drift that is not
			 * there: no drift check instead. */
			fi->tools_listed = false;
			break;
		}
		snprintf(out->toolbuf[fi->ntools], sizeof(out->toolbuf[0]), "%s", t->valuestring);
		out->tools[fi->ntools] = out->toolbuf[fi->ntools];
		fi->ntools++;
	}
	snprintf(out->node, sizeof(out->node), "%s", node ? node : "");
	fi->node = out->node;
	fi->cgroup = out->cgroup;
	fi->pod_namespace = out->pod_namespace;
	fi->pod_name = out->pod_name;
	fi->service_account = out->service_account;
	fi->policy = out->policy;
	fi->rule = out->rule;
	fi->tools = (const char *const *)out->tools;
	return 0;
}

/* ---------------------------------------------------------- server side */

int peer__serve(const char *node, const char *body, size_t len, peer_lookup_fn fn, void *ctx,
		char **out, char *err, size_t errlen)
{
	cJSON *req = cJSON_ParseWithLength(body, len), *ans = NULL, *results;
	const cJSON *lookups, *l;
	struct lookup {
		uint8_t addr[SL_ADDR_LEN];
		uint16_t port;
		uint64_t start;
	} *ls = NULL;
	int n = 0, i, ret = -EINVAL;

	*out = NULL;
	if (!req) {
		log__errf(err, errlen, "not JSON");
		return -EINVAL;
	}
	lookups = cJSON_GetObjectItemCaseSensitive(req, "lookups");
	if (!cJSON_IsArray(lookups)) {
		log__errf(err, errlen, "\"lookups\": want an array");
		goto out;
	}
	n = cJSON_GetArraySize(lookups);
	if (n > PEER_MAX_LOOKUPS) {
		log__errf(err, errlen, "\"lookups\": %d, at most %d per request", n, PEER_MAX_LOOKUPS);
		goto out;
	}
	ls = calloc(n ? n : 1, sizeof(*ls));
	if (!ls) {
		ret = -ENOMEM;
		goto out;
	}
	/* All decoded before any is looked up: a bad request is refused whole. */
	i = 0;
	cJSON_ArrayForEach(l, lookups) {
		if (get_addr(l, "peer", ls[i].addr, &ls[i].port) || !ls[i].port) {
			log__errf(err, errlen, "lookups[%d].peer: want IP:PORT or [IPv6]:PORT", i);
			goto out;
		}
		if (get_u64(l, "start_ns", &ls[i].start)) {
			log__errf(err, errlen, "lookups[%d].start_ns: want a decimal string", i);
			goto out;
		}
		i++;
	}
	ret = -ENOMEM;
	ans = cJSON_CreateObject();
	if (!ans || !add_str(ans, "node", node) ||
	    !(results = cJSON_AddArrayToObject(ans, "results")))
		goto out;
	for (i = 0; i < n; i++) {
		struct corr_flow_info fi;
		cJSON *r;

		if (fn(ctx, ls[i].addr, ls[i].port, ls[i].start, &fi))
			r = cJSON_CreateNull();
		else
			r = peer__flow_json(&fi);
		if (!r || !cJSON_AddItemToArray(results, r)) {
			cJSON_Delete(r);
			goto out;
		}
	}
	*out = cJSON_PrintUnformatted(ans);
	ret = *out ? 0 : -ENOMEM;
out:
	if (ret == -ENOMEM)
		log__errf(err, errlen, "out of memory");
	free(ls);
	cJSON_Delete(ans);
	cJSON_Delete(req);
	return ret;
}

/* ---------------------------------------------------------- client */

struct ask {
	struct gw_record r;
	uint64_t not_before;	/* CLOCK_MONOTONIC ms */
	unsigned refs;		/* peer queues and batches holding it */
	unsigned waiting;	/* peers yet to answer */
	unsigned asked, not_found, unreachable;
	bool done;
};

struct pnode {
	struct pnode *next;
	struct peer *p;
	char *name, *url;
	struct kube *k;
	struct ask **q;		/* ring of waiting records */
	size_t qhead, qlen, qcap;
	struct ask *batch[PEER_BATCH];	/* in flight, or waiting to be retried */
	size_t nbatch;
	bool inflight;
	unsigned attempt;
	uint64_t retry_at;	/* CLOCK_MONOTONIC ms */
	uint64_t not_before;	/* down: no new batch before */
	bool down;
	bool moving;		/* its client is being replaced */
	struct kube_backoff bo;
	struct peer_stats st;
};

struct peer {
	struct peer_opts o;
	struct kube_config cfg;	/* shared TLS material and token */
	peer_done_fn done;
	void *ctx;
	struct pnode *peers;
	size_t npeers;
	int epfd, tfd;
	uint32_t rng;
	bool closing;
	size_t waiting;		/* records asked, not answered */
};

static uint32_t peer__rand(struct peer *p)
{
	p->rng ^= p->rng << 13;
	p->rng ^= p->rng >> 17;
	p->rng ^= p->rng << 5;
	return p->rng;
}

static void ask__put(struct ask *a)
{
	if (!--a->refs)
		free(a);
}

/* One peer's answer for A: FI found, or not (UNREACHABLE: not asked). */
static void ask__answer(struct peer *p, struct ask *a, const struct corr_flow_info *fi,
			bool unreachable)
{
	char why[256];

	a->waiting--;
	if (a->done)
		return;
	if (p->closing) {
		/* Shutting down is not an answer: nothing is declared. */
		a->done = true;
		p->waiting--;
		return;
	}
	if (fi) {
		a->done = true;
		p->waiting--;
		p->done(p->ctx, &a->r, fi, NULL);
		return;
	}
	if (unreachable)
		a->unreachable++;
	else
		a->not_found++;
	if (a->waiting)
		return;
	a->done = true;
	p->waiting--;
	snprintf(why, sizeof(why), "%u other node%s asked: %u without it, %u unreachable",
		 a->asked, a->asked == 1 ? "" : "s", a->not_found, a->unreachable);
	p->done(p->ctx, &a->r, NULL, why);
}

static void pnode__end_batch(struct pnode *pn, bool unreachable)
{
	for (size_t i = 0; i < pn->nbatch; i++) {
		if (unreachable)
			pn->st.unreachable++;
		else
			pn->st.not_found++;
		ask__answer(pn->p, pn->batch[i], NULL, unreachable);
		ask__put(pn->batch[i]);
	}
	pn->nbatch = 0;
	pn->attempt = 0;
}

static void pnode__done(void *ctx, const struct kube_result *res);

static int pnode__send(struct pnode *pn)
{
	cJSON *req = cJSON_CreateObject(), *ls;
	char *body = NULL;
	int err = -ENOMEM;

	if (!req || !(ls = cJSON_AddArrayToObject(req, "lookups")))
		goto out;
	for (size_t i = 0; i < pn->nbatch; i++) {
		const struct gw_record *r = &pn->batch[i]->r;
		cJSON *l = cJSON_CreateObject();

		if (!l || !cJSON_AddItemToArray(ls, l) || !add_str(l, "peer", r->peer) ||
		    !add_u64(l, "start_ns", r->duration_ns < r->time_ns ? r->time_ns - r->duration_ns : 0))
			goto out;
	}
	body = cJSON_PrintUnformatted(req);
	if (!body)
		goto out;
	err = kube__request(pn->k, "POST", PEER_PATH, body, pnode__done, pn);
	if (!err) {
		pn->inflight = true;
		pn->st.requests++;
		if (pn->attempt)
			pn->st.retries++;
	}
out:
	free(body);
	cJSON_Delete(req);
	return err;
}

/* A failed attempt: again after a backoff, or the batch is given up. A
 * peer that has used up a batch's attempts is down: until it answers again
 * each batch gets one attempt, still spaced by the backoff, so that records
 * do not queue behind a dead node for the whole retry sequence each. */
static void pnode__failed(struct pnode *pn, bool retry)
{
	uint64_t next = now_mono_ms() + kube__backoff_next(&pn->bo, peer__rand(pn->p));

	if (retry && !pn->down && ++pn->attempt < pn->p->o.attempts) {
		pn->retry_at = next;
		return;
	}
	pn->st.failures++;
	pn->down = retry;
	pnode__end_batch(pn, true);
	pn->not_before = next;
}

static int pnode__answers(struct pnode *pn, const cJSON *json)
{
	const cJSON *node = cJSON_GetObjectItemCaseSensitive(json, "node");
	const cJSON *results = cJSON_GetObjectItemCaseSensitive(json, "results"), *r;
	struct peer_flow *pf;
	size_t i = 0;

	if (!cJSON_IsString(node) || !cJSON_IsArray(results) ||
	    cJSON_GetArraySize(results) != (int)pn->nbatch)
		return -EINVAL;
	/* Checked whole first: a bad answer must not end half the batch. */
	pf = malloc(sizeof(*pf));
	if (!pf)
		return -ENOMEM;
	cJSON_ArrayForEach(r, results) {
		if (!cJSON_IsNull(r) && peer__flow_parse(r, node->valuestring, pf)) {
			free(pf);
			return -EINVAL;
		}
	}
	cJSON_ArrayForEach(r, results) {
		struct ask *a = pn->batch[i++];

		if (cJSON_IsNull(r)) {
			pn->st.not_found++;
			ask__answer(pn->p, a, NULL, false);
		} else {
			peer__flow_parse(r, node->valuestring, pf);
			pn->st.found++;
			ask__answer(pn->p, a, &pf->fi, false);
		}
		ask__put(a);
	}
	free(pf);
	pn->nbatch = 0;
	pn->attempt = 0;
	return 0;
}

static void pnode__done(void *ctx, const struct kube_result *res)
{
	struct pnode *pn = ctx;

	pn->inflight = false;
	if (res->err == -ECANCELED) {
		if (pn->moving) {
			pn->retry_at = 0;	/* asked again at the new address */
			return;
		}
		pnode__end_batch(pn, true);	/* the peer is going away */
		return;
	}
	pn->st.up = !res->err && res->status > 0;
	if (res->err) {
		pn->st.errors_transport++;
		pnode__failed(pn, true);
		return;
	}
	if (res->status == 401 || res->status == 403) {
		/* A rotated token reaches the nodes at different moments:
		 * worth the retries before the batch is given up. */
		pn->st.errors_auth++;
		pnode__failed(pn, true);
		return;
	}
	if (res->status != 200) {
		pn->st.errors_other++;
		/* Overload or a restart on the other side may pass; a request
		 * it refused will be refused again. */
		pnode__failed(pn, res->status >= 500 || res->status == 429);
		return;
	}
	if (!res->json || pnode__answers(pn, res->json)) {
		pn->st.errors_other++;
		pnode__failed(pn, false);
		return;
	}
	pn->down = false;
	pn->not_before = 0;
	kube__backoff_reset(&pn->bo);
}

/* Wake peer__run at AT (CLOCK_MONOTONIC ms; 0: at once) unless it is
 * due to wake earlier. */
/* The timer fires in MS milliseconds; 0 disarms it. */
static void peer__timer(struct peer *p, uint64_t ms)
{
	struct itimerspec its = { .it_value = { .tv_sec = (time_t)(ms / 1000),
						.tv_nsec = (long)(ms % 1000) * 1000000 } };

	timerfd_settime(p->tfd, 0, &its, NULL);
}

static void peer__arm(struct peer *p, uint64_t at)
{
	struct itimerspec cur;
	uint64_t now = now_mono_ms(), d = at > now ? at - now : 1;

	if (!timerfd_gettime(p->tfd, &cur) &&
	    (cur.it_value.tv_sec || cur.it_value.tv_nsec) &&
	    (uint64_t)cur.it_value.tv_sec * 1000 + (uint64_t)cur.it_value.tv_nsec / 1000000 <= d)
		return;
	peer__timer(p, d);
}

/* Start what is due; arm the timer for what is not. */
static void peer__pump(struct peer *p)
{
	uint64_t now = now_mono_ms(), next = UINT64_MAX;

	for (struct pnode *pn = p->peers; pn; pn = pn->next) {
		if (pn->inflight)
			continue;
		if (!pn->nbatch && pn->not_before > now) {
			if (pn->qlen && pn->not_before < next)
				next = pn->not_before;
			continue;
		}
		if (!pn->nbatch) {
			while (pn->qlen && pn->nbatch < PEER_BATCH) {
				struct ask *a = pn->q[pn->qhead];

				if (!a->done && a->not_before > now)
					break;
				pn->qhead = (pn->qhead + 1) % pn->qcap;
				pn->qlen--;
				pn->st.queued--;
				if (a->done) {	/* another peer had it */
					a->waiting--;
					ask__put(a);
					continue;
				}
				pn->batch[pn->nbatch++] = a;
			}
			pn->retry_at = 0;
		}
		if (pn->nbatch && pn->retry_at <= now) {
			if (pnode__send(pn))
				pnode__failed(pn, true);
		}
		if (pn->nbatch && !pn->inflight && pn->retry_at < next)
			next = pn->retry_at;
		if (!pn->nbatch && pn->qlen && pn->q[pn->qhead]->not_before < next)
			next = pn->q[pn->qhead]->not_before;
	}
	peer__timer(p, next == UINT64_MAX ? 0 : next > now ? next - now : 1);
}

static int read_file(const char *path, struct kube_blob *b, char *err, size_t errlen)
{
	int rc = kube__read_file(path, &b->data, &b->len);

	if (rc)
		log__errf(err, errlen, "%s: %s", path, strerror(-rc));
	return rc;
}

int peer__new(const struct peer_opts *o, peer_done_fn done, void *ctx, struct peer **out,
	      char *err, size_t errlen)
{
	struct epoll_event ev = { .events = EPOLLIN };
	struct peer *p = calloc(1, sizeof(*p));
	int ret = -ENOMEM;

	*out = NULL;
	if (!p)
		return -ENOMEM;
	p->epfd = p->tfd = -1;
	p->o = *o;
	p->done = done;
	p->ctx = ctx;
#define DEF(f, v) do { if (!p->o.f) p->o.f = (v); } while (0)
	DEF(attempts, 5);
	DEF(backoff_base_ms, 200);
	DEF(backoff_max_ms, 5000);
	DEF(timeout_ms, 5000);
	DEF(min_age_ms, 200);
	DEF(max_queue, 16384);
#undef DEF
	if (!!o->cert_file != !!o->key_file) {
		log__errf(err, errlen, "a client certificate needs its key, and a key its certificate");
		ret = -EINVAL;
		goto fail;
	}
	if ((o->ca_file && (ret = read_file(o->ca_file, &p->cfg.ca, err, errlen))) ||
	    (o->cert_file && (ret = read_file(o->cert_file, &p->cfg.cert, err, errlen))) ||
	    (o->key_file && (ret = read_file(o->key_file, &p->cfg.key, err, errlen))))
		goto fail;
	p->cfg.token_file = (char *)o->token_file;
	/* Peers are addressed by pod or node IP: with a CA of our own (one
	 * that signs only sluiced certificates) the chain is what is checked,
	 * not a host name. Without one, the system's CAs and the host name,
	 * as for any HTTPS server: a public CA vouches for names, not peers. */
	p->cfg.skip_host_check = o->ca_file != NULL;
	p->epfd = epoll_create1(EPOLL_CLOEXEC);
	p->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (p->epfd < 0 || p->tfd < 0 || epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->tfd, &ev)) {
		ret = -errno;
		log__errf(err, errlen, "%s", strerror(errno));
		goto fail;
	}
	if (getrandom(&p->rng, sizeof(p->rng), GRND_NONBLOCK) != sizeof(p->rng))
		p->rng = (uint32_t)now_real_ns();
	p->rng |= 1;
	*out = p;
	return 0;
fail:
	p->cfg.token_file = NULL;
	peer__free(p);
	return ret;
}

static struct pnode *peer__find(const struct peer *p, const char *name)
{
	for (struct pnode *pn = p->peers; pn; pn = pn->next)
		if (!strcmp(pn->name, name))
			return pn;
	return NULL;
}

static void pnode__free(struct pnode *pn)
{
	/* Whatever is in flight ends through pnode__done (ECANCELED). */
	kube__free(pn->k);
	pnode__end_batch(pn, false);
	while (pn->qlen) {
		struct ask *a = pn->q[pn->qhead];

		pn->qhead = (pn->qhead + 1) % pn->qcap;
		pn->qlen--;
		ask__answer(pn->p, a, NULL, false);
		ask__put(a);
	}
	free(pn->q);
	free(pn->name);
	free(pn->url);
	free(pn);
}

int peer__set(struct peer *p, const char *name, const char *url, char *err, size_t errlen)
{
	struct epoll_event ev = { .events = EPOLLIN };
	struct pnode *pn = peer__find(p, name);
	struct kube_opts ko = {
		.user_agent = "sluiced-peer",
		.connect_timeout_ms = p->o.timeout_ms,
		.request_timeout_ms = p->o.timeout_ms,
		.max_body = 64u << 20,
	};
	struct kube *k;
	int ret;

	if (pn && !strcmp(pn->url, url))
		return 0;
	p->cfg.server = (char *)url;
	ret = kube__new(&p->cfg, &ko, &k, err, errlen);
	p->cfg.server = NULL;
	if (ret)
		return ret;
	if (pn) {
		char *nurl = strdup(url);

		if (!nurl) {
			kube__free(k);
			return -ENOMEM;
		}
		/* A moved peer: what waits for it is asked at the new address. */
		epoll_ctl(p->epfd, EPOLL_CTL_DEL, kube__fd(pn->k), NULL);
		pn->moving = true;
		kube__free(pn->k);
		pn->moving = false;
		pn->k = k;
		free(pn->url);
		pn->url = nurl;
		pn->st.url = pn->url;
		pn->retry_at = 0;
		pn->down = false;
		pn->not_before = 0;
	} else {
		pn = calloc(1, sizeof(*pn));
		if (pn) {
			pn->name = strdup(name);
			pn->url = strdup(url);
		}
		if (!pn || !pn->name || !pn->url) {
			if (pn) {
				free(pn->name);
				free(pn->url);
			}
			free(pn);
			kube__free(k);
			return -ENOMEM;
		}
		pn->p = p;
		pn->k = k;
		pn->st.name = pn->name;
		pn->st.url = pn->url;
		pn->bo.base_ms = p->o.backoff_base_ms;
		pn->bo.max_ms = p->o.backoff_max_ms;
		pn->next = p->peers;
		p->peers = pn;
		p->npeers++;
	}
	ev.data.ptr = pn;
	if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, kube__fd(k), &ev)) {
		ret = -errno;
		peer__del(p, name);
		return ret;
	}
	peer__arm(p, 0);
	return 0;
}

void peer__del(struct peer *p, const char *name)
{
	struct pnode **pp, *pn;

	for (pp = &p->peers; *pp; pp = &(*pp)->next)
		if (!strcmp((*pp)->name, name))
			break;
	if (!(pn = *pp))
		return;
	*pp = pn->next;
	p->npeers--;
	if (pn->k)
		epoll_ctl(p->epfd, EPOLL_CTL_DEL, kube__fd(pn->k), NULL);
	pnode__free(pn);
}

size_t peer__count(const struct peer *p)
{
	return p->npeers;
}

static int pnode__push(struct pnode *pn, struct ask *a)
{
	if (pn->qlen == pn->qcap) {
		size_t cap = pn->qcap ? pn->qcap * 2 : 64;
		struct ask **q;

		if (pn->qlen >= pn->p->o.max_queue)
			return -ENOSPC;
		q = malloc(cap * sizeof(*q));
		if (!q)
			return -ENOMEM;
		for (size_t i = 0; i < pn->qlen; i++)
			q[i] = pn->q[(pn->qhead + i) % pn->qcap];
		free(pn->q);
		pn->q = q;
		pn->qhead = 0;
		pn->qcap = cap;
	}
	pn->q[(pn->qhead + pn->qlen++) % pn->qcap] = a;
	pn->st.queued++;
	return 0;
}

int peer__ask(struct peer *p, const struct gw_record *r)
{
	uint64_t now = now_real_ns(), due = r->time_ns + (uint64_t)p->o.min_age_ms * 1000000;
	struct ask *a;

	if (!p->npeers)
		return -ENOENT;
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->r = *r;
	/* A peer's kernel event reaches its daemon a little after the
	 * connection: a line read at once waits that long (never longer,
	 * whatever the gateway's clock says). */
	a->not_before = now_mono_ms();
	if (due > now)
		a->not_before += (due - now) / 1000000 < p->o.min_age_ms ? (due - now) / 1000000
									 : p->o.min_age_ms;
	a->refs = 1;
	for (struct pnode *pn = p->peers; pn; pn = pn->next) {
		if (pnode__push(pn, a)) {
			pn->st.dropped++;
			continue;
		}
		a->refs++;
		a->waiting++;
		a->asked++;
	}
	if (!a->asked) {
		ask__put(a);
		return -ENOSPC;
	}
	ask__put(a);
	p->waiting++;
	/* Sent from peer__run, never from here: an answer (even a failure)
	 * must not reach the caller from inside its own ask. */
	peer__arm(p, a->not_before);
	return 0;
}

size_t peer__waiting(const struct peer *p)
{
	return p->waiting;
}

int peer__fd(const struct peer *p)
{
	return p->epfd;
}

int peer__run(struct peer *p)
{
	struct epoll_event evs[16];
	int n = epoll_wait(p->epfd, evs, 16, 0);
	uint64_t exp;

	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int i = 0; i < n; i++) {
		struct pnode *pn = evs[i].data.ptr;

		if (!pn) {
			if (read(p->tfd, &exp, sizeof(exp)) < 0 && errno != EAGAIN)
				return -errno;
			continue;
		}
		/* A callback may delete peers: look this one up again. */
		for (struct pnode *q = p->peers; q; q = q->next)
			if (q == pn) {
				kube__run(pn->k);
				break;
			}
	}
	peer__pump(p);
	return 0;
}

void peer__stats(const struct peer *p, void (*fn)(void *ctx, const struct peer_stats *st),
		 void *ctx)
{
	for (const struct pnode *pn = p->peers; pn; pn = pn->next)
		fn(ctx, &pn->st);
}

void peer__free(struct peer *p)
{
	if (!p)
		return;
	p->closing = true;
	while (p->peers)
		peer__del(p, p->peers->name);
	p->cfg.token_file = NULL;
	kube__config_free(&p->cfg);
	if (p->tfd >= 0)
		close(p->tfd);
	if (p->epfd >= 0)
		close(p->epfd);
	free(p);
}
