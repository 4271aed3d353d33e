// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * A small informer: list+watch (user/kube.c) into plain arrays. A node has
 * at most a few hundred pods and policies, so linear scans keep this simple.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include "compile.h"
#include "k8s.h"
#include "kube.h"
#include "log.h"
#include "podcg.h"

struct kpol {
	char *key;		/* kind/namespace/name */
	char *kind, *ns, *name, *uid, *rv;
	struct pol_set good;
	bool has_good;
	char *errors;		/* last rejected version's messages */
	char *reported_rv;	/* the version an Event was posted for */
	bool seen;		/* re-ADDED since on_reset */
};

struct kpod {
	struct k8s_pod p;
	bool seen;
};

struct kns {
	char *name;
	cJSON *labels;
	bool seen;
};

/* A Service's ClusterIPs, or one EndpointSlice's addresses. */
struct kaddrs {
	char *key;		/* "svc/ns/name" or "eps/ns/slice-name" */
	char *svc;		/* "ns/name" of the service */
	struct compile_addr *a;
	size_t n;
	bool seen;
};

enum { W_PODS, W_NS, W_AP, W_CAP, W_SVC, W_EPS, W_N };

struct k8s {
	struct kube *kube;
	struct kube_config cfg;
	struct kube_watch *w[W_N];
	char node[256];
	void (*changed)(void *ctx);
	void *ctx;

	struct kpol *pols;
	size_t npols;
	struct kpod *pods;
	size_t npods;
	struct kns *nss;
	size_t nnss;
	struct kaddrs *addrs;
	size_t naddrs;
	const struct pol_doc **docs;	/* rebuilt after policy changes */
	size_t ndocs;
	bool docs_dirty;
	unsigned long policy_gen;	/* bumped whenever a document changes */
	unsigned long events_posted;
};

struct wctx {
	struct k8s *k;
	int which;
};

static struct wctx wctxs[W_N];

static const char *jstr(const cJSON *o, const char *a, const char *b)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, a);

	if (b)
		it = cJSON_GetObjectItemCaseSensitive(it, b);
	return cJSON_IsString(it) ? it->valuestring : NULL;
}

static char *xstrdup(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* ---------------------------------------------------------- policies */

static void kpol_free(struct kpol *p)
{
	free(p->key);
	free(p->kind);
	free(p->ns);
	free(p->name);
	free(p->uid);
	free(p->rv);
	policy__set_free(&p->good);
	free(p->errors);
	free(p->reported_rv);
}

static struct kpol *k8s__pol(struct k8s *k, const char *key, bool create)
{
	struct kpol *v;

	for (size_t i = 0; i < k->npols; i++)
		if (!strcmp(k->pols[i].key, key))
			return &k->pols[i];
	if (!create)
		return NULL;
	v = realloc(k->pols, (k->npols + 1) * sizeof(*v));
	if (!v)
		return NULL;
	k->pols = v;
	v = &k->pols[k->npols];
	memset(v, 0, sizeof(*v));
	v->key = strdup(key);
	if (!v->key)
		return NULL;
	k->npols++;
	return v;
}

static void k8s__event_done(void *ctx, const struct kube_result *r)
{
	if (r->err || r->status >= 300)
		pr_warn("cannot post a Kubernetes Event: %s\n", r->msg ? r->msg : strerror(-r->err));
}

/* A Warning Event on the policy object, so `kubectl describe` shows why
 * it is not applied. */
static void k8s__report(struct k8s *k, struct kpol *p)
{
	char path[512], ts[32], gen[300];
	cJSON *ev = cJSON_CreateObject(), *md, *io, *src;
	const char *ns = p->ns ? p->ns : "default";
	time_t now = time(NULL);
	struct tm tm;
	char *body;

	gmtime_r(&now, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	snprintf(gen, sizeof(gen), "%s.", p->name);
	cJSON_AddStringToObject(ev, "apiVersion", "v1");
	cJSON_AddStringToObject(ev, "kind", "Event");
	md = cJSON_AddObjectToObject(ev, "metadata");
	cJSON_AddStringToObject(md, "generateName", gen);
	cJSON_AddStringToObject(md, "namespace", ns);
	io = cJSON_AddObjectToObject(ev, "involvedObject");
	cJSON_AddStringToObject(io, "apiVersion", "sluice.dev/v1alpha1");
	cJSON_AddStringToObject(io, "kind", p->kind);
	cJSON_AddStringToObject(io, "name", p->name);
	if (p->ns)
		cJSON_AddStringToObject(io, "namespace", p->ns);
	if (p->uid)
		cJSON_AddStringToObject(io, "uid", p->uid);
	if (p->rv)
		cJSON_AddStringToObject(io, "resourceVersion", p->rv);
	cJSON_AddStringToObject(ev, "reason", "InvalidPolicy");
	cJSON_AddStringToObject(ev, "message", p->errors ? p->errors : "invalid");
	cJSON_AddStringToObject(ev, "type", "Warning");
	src = cJSON_AddObjectToObject(ev, "source");
	cJSON_AddStringToObject(src, "component", "sluiced");
	cJSON_AddStringToObject(src, "host", k->node);
	cJSON_AddStringToObject(ev, "firstTimestamp", ts);
	cJSON_AddStringToObject(ev, "lastTimestamp", ts);
	cJSON_AddNumberToObject(ev, "count", 1);
	cJSON_AddStringToObject(ev, "reportingComponent", "sluice.dev/sluiced");
	cJSON_AddStringToObject(ev, "reportingInstance", k->node);
	body = cJSON_PrintUnformatted(ev);
	cJSON_Delete(ev);
	if (!body)
		return;
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/events", ns);
	if (!kube__request(k->kube, "POST", path, body, k8s__event_done, k))
		k->events_posted++;
	free(body);
}

static char *k8s__diags_text(const struct pol_diags *d)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);

	if (!m)
		return NULL;
	policy__print_diags(d, m);
	fclose(m);
	return buf;
}

static void k8s__policy_event(struct k8s *k, const char *kind, enum kube_event_type type,
			      const cJSON *obj)
{
	const char *ns = jstr(obj, "metadata", "namespace"), *name = jstr(obj, "metadata", "name");
	struct pol_diags diags = {};
	struct pol_set set = {};
	char key[600], where[400];
	struct kpol *p;
	cJSON *copy;
	char *text;
	int err;

	if (!name)
		return;
	snprintf(key, sizeof(key), "%s/%s/%s", kind, ns ? ns : "", name);
	if (type == KUBE_DELETED) {
		p = k8s__pol(k, key, false);
		if (p) {
			kpol_free(p);
			*p = k->pols[--k->npols];
			k->docs_dirty = true;
			k->policy_gen++;
		}
		return;
	}
	p = k8s__pol(k, key, true);
	if (!p)
		return;
	p->seen = true;
	if (!p->kind) {
		p->kind = strdup(kind);
		p->ns = xstrdup(ns);
		p->name = strdup(name);
	}
	free(p->uid);
	p->uid = xstrdup(jstr(obj, "metadata", "uid"));
	free(p->rv);
	p->rv = xstrdup(jstr(obj, "metadata", "resourceVersion"));
	/* The API server adds what the validator must not see as the user's:
	 * kind and apiVersion are missing from list items, status is ours. */
	copy = cJSON_Duplicate(obj, 1);
	if (!copy)
		return;
	if (!cJSON_GetObjectItem(copy, "kind"))
		cJSON_AddStringToObject(copy, "kind", kind);
	if (!cJSON_GetObjectItem(copy, "apiVersion"))
		cJSON_AddStringToObject(copy, "apiVersion", "sluice.dev/v1alpha1");
	cJSON_DeleteItemFromObject(copy, "status");
	text = cJSON_Print(copy);
	cJSON_Delete(copy);
	if (!text)
		return;
	snprintf(where, sizeof(where), "%s %s%s%s", kind, ns ? ns : "", ns ? "/" : "", name);
	err = policy__parse_buf(where, text, strlen(text), &set, &diags);
	free(text);
	if (err) {
		free(p->errors);
		p->errors = k8s__diags_text(&diags);
		pr_err("invalid %s%s:\n%s", where,
		       p->has_good ? " (its last good version stays in force)" : "",
		       p->errors ? p->errors : "");
		if (!p->reported_rv || !p->rv || strcmp(p->reported_rv, p->rv)) {
			k8s__report(k, p);
			free(p->reported_rv);
			p->reported_rv = xstrdup(p->rv);
		}
		policy__diags_free(&diags);
		policy__set_free(&set);
		return;
	}
	policy__diags_free(&diags);
	free(p->errors);
	p->errors = NULL;
	policy__set_free(&p->good);
	p->good = set;
	p->has_good = true;
	k->docs_dirty = true;
	k->policy_gen++;
}

/* ---------------------------------------------------------- pods, namespaces */

static void k8s__pod_event(struct k8s *k, enum kube_event_type type, const cJSON *obj)
{
	const char *uid = jstr(obj, "metadata", "uid");
	const cJSON *labels = cJSON_GetObjectItem(cJSON_GetObjectItem(obj, "metadata"), "labels");
	struct kpod *p = NULL, *v;
	size_t i;

	if (!uid)
		return;
	for (i = 0; i < k->npods; i++)
		if (!strcmp(k->pods[i].p.uid, uid))
			p = &k->pods[i];
	if (type == KUBE_DELETED) {
		if (p) {
			cJSON_Delete(p->p.labels);
			cJSON_Delete(p->p.containers);
			*p = k->pods[--k->npods];
		}
		return;
	}
	if (!p) {
		v = realloc(k->pods, (k->npods + 1) * sizeof(*v));
		if (!v)
			return;
		k->pods = v;
		p = &k->pods[k->npods++];
		memset(p, 0, sizeof(*p));
		snprintf(p->p.uid, sizeof(p->p.uid), "%s", uid);
	}
	p->seen = true;
	snprintf(p->p.ns, sizeof(p->p.ns), "%s", jstr(obj, "metadata", "namespace") ?: "");
	snprintf(p->p.name, sizeof(p->p.name), "%s", jstr(obj, "metadata", "name") ?: "");
	snprintf(p->p.sa, sizeof(p->p.sa), "%s", jstr(obj, "spec", "serviceAccountName") ?: "default");
	p->p.qos = podcg__qos_parse(jstr(obj, "status", "qosClass"));
	cJSON_Delete(p->p.labels);
	p->p.labels = labels ? cJSON_Duplicate(labels, 1) : NULL;
	p->p.net_raw[0] = '\0';
	{
		/* CAP_NET_RAW opens packet sockets, which no cgroup hook sees: a
		 * container that does not drop it (or ALL) is reported. */
		const cJSON *cs = cJSON_GetObjectItem(cJSON_GetObjectItem(obj, "spec"), "containers"), *ct;

		cJSON_ArrayForEach(ct, cs) {
			const cJSON *sc = cJSON_GetObjectItem(ct, "securityContext"), *d;
			const cJSON *drop = cJSON_GetObjectItem(cJSON_GetObjectItem(sc, "capabilities"), "drop");
			bool dropped = false;

			cJSON_ArrayForEach(d, drop)
				if (cJSON_IsString(d) && (!strcmp(d->valuestring, "NET_RAW") ||
							  !strcmp(d->valuestring, "ALL")))
					dropped = true;
			if (!dropped || cJSON_IsTrue(cJSON_GetObjectItem(sc, "privileged"))) {
				snprintf(p->p.net_raw, sizeof(p->p.net_raw), "%s",
					 jstr(ct, "name", NULL) ?: "?");
				break;
			}
		}
	}
	cJSON_Delete(p->p.containers);
	p->p.containers = cJSON_CreateArray();
	{
		const cJSON *st = cJSON_GetObjectItem(cJSON_GetObjectItem(obj, "status"),
						      "containerStatuses"), *c;

		cJSON_ArrayForEach(c, st) {
			const char *n = jstr(c, "name", NULL), *id = jstr(c, "containerID", NULL);
			const char *sep = id ? strstr(id, "://") : NULL;
			cJSON *e;

			if (!n || !sep || !p->p.containers)
				continue;
			e = cJSON_CreateObject();
			cJSON_AddStringToObject(e, "name", n);
			cJSON_AddStringToObject(e, "id", sep + 3);
			cJSON_AddItemToArray(p->p.containers, e);
		}
	}
}

static void k8s__ns_event(struct k8s *k, enum kube_event_type type, const cJSON *obj)
{
	const char *name = jstr(obj, "metadata", "name");
	const cJSON *labels = cJSON_GetObjectItem(cJSON_GetObjectItem(obj, "metadata"), "labels");
	struct kns *n = NULL, *v;
	size_t i;

	if (!name)
		return;
	for (i = 0; i < k->nnss; i++)
		if (!strcmp(k->nss[i].name, name))
			n = &k->nss[i];
	if (type == KUBE_DELETED) {
		if (n) {
			free(n->name);
			cJSON_Delete(n->labels);
			*n = k->nss[--k->nnss];
		}
		return;
	}
	if (!n) {
		v = realloc(k->nss, (k->nnss + 1) * sizeof(*v));
		if (!v)
			return;
		k->nss = v;
		n = &k->nss[k->nnss];
		memset(n, 0, sizeof(*n));
		n->name = strdup(name);
		if (!n->name)
			return;
		k->nnss++;
	}
	n->seen = true;
	cJSON_Delete(n->labels);
	n->labels = labels ? cJSON_Duplicate(labels, 1) : NULL;
}

/* ---------------------------------------------------------- services */

static int k8s__parse_ip(const char *s, struct compile_addr *out)
{
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, s, out->addr + 12) == 1) {
		out->addr[10] = out->addr[11] = 0xff;
		out->is_v4 = 1;
		return 0;
	}
	return inet_pton(AF_INET6, s, out->addr) == 1 ? 0 : -EINVAL;
}

static void k8s__addrs_put(struct k8s *k, const char *key, const char *svc, enum kube_event_type type,
			   const cJSON *list, const char *field)
{
	struct kaddrs *e = NULL, *v;
	const cJSON *it;
	size_t i;

	for (i = 0; i < k->naddrs; i++)
		if (!strcmp(k->addrs[i].key, key))
			e = &k->addrs[i];
	k->policy_gen++;	/* sets with service destinations are rebuilt */
	if (type == KUBE_DELETED) {
		if (e) {
			free(e->key);
			free(e->svc);
			free(e->a);
			*e = k->addrs[--k->naddrs];
		}
		return;
	}
	if (!e) {
		v = realloc(k->addrs, (k->naddrs + 1) * sizeof(*v));
		if (!v)
			return;
		k->addrs = v;
		e = &k->addrs[k->naddrs];
		memset(e, 0, sizeof(*e));
		e->key = strdup(key);
		e->svc = strdup(svc);
		if (!e->key || !e->svc) {
			free(e->key);
			free(e->svc);
			return;
		}
		k->naddrs++;
	}
	e->seen = true;
	free(e->a);
	e->a = NULL;
	e->n = 0;
	cJSON_ArrayForEach(it, list) {
		const cJSON *ips = field ? cJSON_GetObjectItem(it, field) : NULL, *ip;
		struct compile_addr ca, *na;

		if (!field)
			ips = NULL;
		/* clusterIPs: strings; endpoints: {addresses: [..], conditions} */
		if (cJSON_IsString(it)) {
			if (k8s__parse_ip(it->valuestring, &ca))
				continue;
			na = realloc(e->a, (e->n + 1) * sizeof(*na));
			if (!na)
				return;
			e->a = na;
			e->a[e->n++] = ca;
			continue;
		}
		cJSON_ArrayForEach(ip, ips) {
			if (!cJSON_IsString(ip) || k8s__parse_ip(ip->valuestring, &ca))
				continue;
			na = realloc(e->a, (e->n + 1) * sizeof(*na));
			if (!na)
				return;
			e->a = na;
			e->a[e->n++] = ca;
		}
	}
}

static void k8s__svc_event(struct k8s *k, enum kube_event_type type, const cJSON *obj)
{
	const char *ns = jstr(obj, "metadata", "namespace"), *name = jstr(obj, "metadata", "name");
	const cJSON *spec = cJSON_GetObjectItem(obj, "spec");
	const cJSON *ips = cJSON_GetObjectItem(spec, "clusterIPs");
	cJSON *one = NULL;
	char key[600], svc[400];

	if (!ns || !name)
		return;
	snprintf(key, sizeof(key), "svc/%s/%s", ns, name);
	snprintf(svc, sizeof(svc), "%s/%s", ns, name);
	if (!cJSON_IsArray(ips)) {
		const char *ip = jstr(obj, "spec", "clusterIP");

		one = cJSON_CreateArray();
		if (ip && strcmp(ip, "None"))
			cJSON_AddItemToArray(one, cJSON_CreateString(ip));
		ips = one;
	}
	k8s__addrs_put(k, key, svc, type, ips, NULL);
	cJSON_Delete(one);
}

static void k8s__eps_event(struct k8s *k, enum kube_event_type type, const cJSON *obj)
{
	const char *ns = jstr(obj, "metadata", "namespace"), *name = jstr(obj, "metadata", "name");
	const cJSON *labels = cJSON_GetObjectItem(cJSON_GetObjectItem(obj, "metadata"), "labels");
	const cJSON *svcn = cJSON_GetObjectItem(labels, "kubernetes.io/service-name");
	char key[600], svc[400];

	if (!ns || !name || !cJSON_IsString(svcn))
		return;
	snprintf(key, sizeof(key), "eps/%s/%s", ns, name);
	snprintf(svc, sizeof(svc), "%s/%s", ns, svcn->valuestring);
	k8s__addrs_put(k, key, svc, type, cJSON_GetObjectItem(obj, "endpoints"), "addresses");
}

int k8s__service_addrs(const struct k8s *k, const char *ns, const char *name,
		       struct compile_addr **out, size_t *n)
{
	char svc[400];
	size_t i, j;

	*out = NULL;
	*n = 0;
	snprintf(svc, sizeof(svc), "%s/%s", ns ? ns : "default", name);
	for (i = 0; i < k->naddrs; i++) {
		struct compile_addr *na;

		if (strcmp(k->addrs[i].svc, svc) || !k->addrs[i].n)
			continue;
		na = realloc(*out, (*n + k->addrs[i].n) * sizeof(*na));
		if (!na) {
			free(*out);
			*out = NULL;
			*n = 0;
			return -ENOMEM;
		}
		*out = na;
		for (j = 0; j < k->addrs[i].n; j++)
			(*out)[(*n)++] = k->addrs[i].a[j];
	}
	return 0;
}

/* ---------------------------------------------------------- watch callbacks */

static void k8s__on_reset(void *ctx)
{
	struct wctx *w = ctx;
	struct k8s *k = w->k;
	size_t i;

	switch (w->which) {
	case W_PODS:
		for (i = 0; i < k->npods; i++)
			k->pods[i].seen = false;
		break;
	case W_NS:
		for (i = 0; i < k->nnss; i++)
			k->nss[i].seen = false;
		break;
	case W_SVC:
	case W_EPS:
		for (i = 0; i < k->naddrs; i++)
			if (!strncmp(k->addrs[i].key, w->which == W_SVC ? "svc/" : "eps/", 4))
				k->addrs[i].seen = false;
		break;
	default:
		for (i = 0; i < k->npols; i++)
			if (!strcmp(k->pols[i].kind, w->which == W_AP ? "AgentPolicy" : "ClusterAgentPolicy"))
				k->pols[i].seen = false;
	}
}

static void k8s__on_event(void *ctx, enum kube_event_type type, const cJSON *obj)
{
	struct wctx *w = ctx;

	switch (w->which) {
	case W_PODS: k8s__pod_event(w->k, type, obj); break;
	case W_NS: k8s__ns_event(w->k, type, obj); break;
	case W_AP: k8s__policy_event(w->k, "AgentPolicy", type, obj); break;
	case W_CAP: k8s__policy_event(w->k, "ClusterAgentPolicy", type, obj); break;
	case W_SVC: k8s__svc_event(w->k, type, obj); break;
	case W_EPS: k8s__eps_event(w->k, type, obj); break;
	}
	if (w->k->changed)
		w->k->changed(w->k->ctx);
}

/* After a (re)list, what was not listed again is gone. */
static void k8s__on_synced(void *ctx)
{
	struct wctx *w = ctx;
	struct k8s *k = w->k;
	size_t i;

	switch (w->which) {
	case W_PODS:
		for (i = 0; i < k->npods;)
			if (!k->pods[i].seen) {
				cJSON_Delete(k->pods[i].p.labels);
				cJSON_Delete(k->pods[i].p.containers);
				k->pods[i] = k->pods[--k->npods];
			} else {
				i++;
			}
		break;
	case W_NS:
		for (i = 0; i < k->nnss;)
			if (!k->nss[i].seen) {
				free(k->nss[i].name);
				cJSON_Delete(k->nss[i].labels);
				k->nss[i] = k->nss[--k->nnss];
			} else {
				i++;
			}
		break;
	case W_SVC:
	case W_EPS:
		for (i = 0; i < k->naddrs;)
			if (!k->addrs[i].seen &&
			    !strncmp(k->addrs[i].key, w->which == W_SVC ? "svc/" : "eps/", 4)) {
				free(k->addrs[i].key);
				free(k->addrs[i].svc);
				free(k->addrs[i].a);
				k->addrs[i] = k->addrs[--k->naddrs];
				k->policy_gen++;
			} else {
				i++;
			}
		break;
	default:
		for (i = 0; i < k->npols;)
			if (!k->pols[i].seen &&
			    !strcmp(k->pols[i].kind, w->which == W_AP ? "AgentPolicy" : "ClusterAgentPolicy")) {
				kpol_free(&k->pols[i]);
				k->pols[i] = k->pols[--k->npols];
				k->docs_dirty = true;
				k->policy_gen++;
			} else {
				i++;
			}
	}
	if (k->changed)
		k->changed(k->ctx);
}

static void k8s__on_error(void *ctx, const char *msg)
{
	pr_warn("kubernetes: %s\n", msg);
}

/* ---------------------------------------------------------- public */

int k8s__start(const struct k8s_opts *o, void (*changed)(void *ctx), void *ctx,
	       struct k8s **out, char *err, size_t errlen)
{
	static const char *const paths[W_N] = {
		[W_PODS] = "/api/v1/pods",
		[W_NS] = "/api/v1/namespaces",
		[W_AP] = "/apis/sluice.dev/v1alpha1/agentpolicies",
		[W_CAP] = "/apis/sluice.dev/v1alpha1/clusteragentpolicies",
		[W_SVC] = "/api/v1/services",
		[W_EPS] = "/apis/discovery.k8s.io/v1/endpointslices",
	};
	struct kube_opts ko = { .user_agent = "sluiced", .stall_ms = o->stall_ms };
	struct k8s *k = calloc(1, sizeof(*k));
	char sel[300];
	int rc, i;

	if (!k)
		return -ENOMEM;
	snprintf(k->node, sizeof(k->node), "%s", o->node);
	k->changed = changed;
	k->ctx = ctx;
	rc = o->kubeconfig ? kube__config_kubeconfig(o->kubeconfig, NULL, &k->cfg, err, errlen)
			   : kube__config_incluster(o->sa_dir, &k->cfg, err, errlen);
	if (!rc)
		rc = kube__new(&k->cfg, &ko, &k->kube, err, errlen);
	snprintf(sel, sizeof(sel), "spec.nodeName=%s", o->node);
	for (i = 0; !rc && i < W_N; i++) {
		struct kube_watch_opts wo = {
			.path = paths[i],
			.field_selector = i == W_PODS ? sel : NULL,
			.on_reset = k8s__on_reset,
			.on_event = k8s__on_event,
			.on_synced = k8s__on_synced,
			.on_error = k8s__on_error,
			.ctx = &wctxs[i],
		};

		wctxs[i].k = k;
		wctxs[i].which = i;
		rc = kube__watch_add(k->kube, &wo, &k->w[i]);
		if (rc)
			snprintf(err, errlen, "cannot watch %s: %s", paths[i], strerror(-rc));
	}
	if (rc) {
		k8s__stop(k);
		return rc;
	}
	*out = k;
	return 0;
}

void k8s__stop(struct k8s *k)
{
	size_t i;

	if (!k)
		return;
	if (k->kube)
		kube__free(k->kube);
	kube__config_free(&k->cfg);
	for (i = 0; i < k->npols; i++)
		kpol_free(&k->pols[i]);
	free(k->pols);
	for (i = 0; i < k->npods; i++) {
		cJSON_Delete(k->pods[i].p.labels);
		cJSON_Delete(k->pods[i].p.containers);
	}
	free(k->pods);
	for (i = 0; i < k->nnss; i++) {
		free(k->nss[i].name);
		cJSON_Delete(k->nss[i].labels);
	}
	free(k->nss);
	for (i = 0; i < k->naddrs; i++) {
		free(k->addrs[i].key);
		free(k->addrs[i].svc);
		free(k->addrs[i].a);
	}
	free(k->addrs);
	free(k->docs);
	free(k);
}

int k8s__fd(const struct k8s *k)
{
	return kube__fd(k->kube);
}

int k8s__run(struct k8s *k)
{
	return kube__run(k->kube);
}

bool k8s__synced(const struct k8s *k)
{
	for (int i = 0; i < W_N; i++)
		if (!kube__watch_synced(k->w[i]))
			return false;
	return true;
}

size_t k8s__docs(const struct k8s *k_const, const struct pol_doc ***out)
{
	struct k8s *k = (struct k8s *)k_const;
	size_t n = 0, i, j;

	if (k->docs_dirty || !k->docs) {
		free(k->docs);
		k->docs = NULL;
		k->ndocs = 0;
		for (i = 0; i < k->npols; i++)
			n += k->pols[i].good.ndocs;
		k->docs = calloc(n + 1, sizeof(*k->docs));
		if (!k->docs)
			return *out = NULL, 0;
		for (i = 0; i < k->npols; i++)
			for (j = 0; j < k->pols[i].good.ndocs; j++)
				k->docs[k->ndocs++] = &k->pols[i].good.docs[j];
		k->docs_dirty = false;
	}
	*out = k->docs;
	return k->ndocs;
}

size_t k8s__npods(const struct k8s *k)
{
	return k->npods;
}

const struct k8s_pod *k8s__pod(const struct k8s *k, size_t i)
{
	return i < k->npods ? &k->pods[i].p : NULL;
}

const cJSON *k8s__ns_labels(const struct k8s *k, const char *ns)
{
	for (size_t i = 0; i < k->nnss; i++)
		if (!strcmp(k->nss[i].name, ns))
			return k->nss[i].labels;
	return NULL;
}

static bool k8s__labels_match(const struct pol_label *sel, size_t n, const cJSON *labels)
{
	for (size_t i = 0; i < n; i++) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(labels, sel[i].key);

		if (!cJSON_IsString(v) || strcmp(v->valuestring, sel[i].value))
			return false;
	}
	return true;
}

bool k8s__selects(const struct k8s *k, const struct pol_doc *doc, const struct k8s_pod *pod)
{
	/* Never sluiced's own namespace: a cluster-wide policy must not cut
	 * the daemon off from the API server it takes its policies from. */
	if (k->cfg.ns && !strcmp(pod->ns, k->cfg.ns))
		return false;
	if (doc->kind == POL_AGENT) {
		/* a pod selector is required to select pods: cgroupPaths-only
		 * documents are for hosts, not for the cluster */
		if (!doc->npod_labels && doc->ncgroup_paths)
			return false;
		if (!doc->namespace || strcmp(doc->namespace, pod->ns))
			return false;
		return k8s__labels_match(doc->pod_labels, doc->npod_labels, pod->labels);
	}
	/* cgroupPaths without a podSelector select hosts' cgroups, not pods;
	 * an empty podSelector selects every pod of the selected namespaces */
	if (!doc->npod_labels && doc->ncgroup_paths)
		return false;
	if (!k8s__labels_match(doc->ns_labels, doc->nns_labels, k8s__ns_labels(k, pod->ns)))
		return false;
	return k8s__labels_match(doc->pod_labels, doc->npod_labels, pod->labels);
}

unsigned long k8s__policy_gen(const struct k8s *k)
{
	return k->policy_gen;
}

void k8s__stats(const struct k8s *k, struct k8s_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->policies = k->npols;
	for (size_t i = 0; i < k->npols; i++)
		out->invalid_policies += k->pols[i].errors != NULL;
	out->pods = k->npods;
	out->namespaces = k->nnss;
	out->events_posted = k->events_posted;
}

cJSON *k8s__policies_json(const struct k8s *k)
{
	cJSON *arr = cJSON_CreateArray();

	for (size_t i = 0; i < k->npols; i++) {
		const struct kpol *p = &k->pols[i];
		cJSON *o = cJSON_CreateObject();

		cJSON_AddStringToObject(o, "object", p->key);
		cJSON_AddStringToObject(o, "state", p->errors ? (p->has_good ? "error-kept-last-good" :
							     "error") : "ok");
		if (p->errors)
			cJSON_AddStringToObject(o, "errors", p->errors);
		cJSON_AddNumberToObject(o, "policies", p->good.ndocs);
		cJSON_AddItemToArray(arr, o);
	}
	return arr;
}
