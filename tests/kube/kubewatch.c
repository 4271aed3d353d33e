// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * kubewatch: user/kube.c driven from an epoll loop the way sluiced drives
 * it (kube__fd in the loop, kube__run when readable), printing every
 * callback as one JSON line on stdout, for tests/kube/test_kube_client.py.
 *
 *   kubewatch (--kubeconfig PATH [--context NAME] | --incluster SA_DIR)
 *             [--stall-ms N] [--backoff-base-ms N] [--backoff-max-ms N]
 *             [--connect-timeout-ms N] [--limit N] [--watch-s MIN:MAX]
 *             [--watch PATH [--fsel SEL] [--lsel SEL]]...
 *
 * Lines out: {"cb":"reset"|"synced","w":N}, {"cb":"event","w":N,"type":...,
 * "ns":...,"name":...,"rv":...,"uid":...}, {"cb":"error","w":N,"msg":...},
 * {"cb":"done","id":N,"err":E,"status":S,"msg":M,"body":B}, {"cb":"stats",...},
 * {"cb":"ready"} once set up, {"cb":"fatal","msg":...} and exit 2.
 * Commands in, one per line: "stats", "del N", "request ID METHOD PATH [JSON]",
 * "quit". Stdin EOF or SIGTERM: kube__free and exit 0.
 *
 * Build: gcc -D_GNU_SOURCE -Iuser tests/kube/kubewatch.c user/kube.c user/log.c
 *        $(pkg-config --cflags --libs libcurl libcjson yaml-0.1 libbpf)
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <cjson/cJSON.h>
#include "kube.h"

#define MAX_WATCHES 8

struct wctx {
	int id;
	struct kube_watch *w;
};

static void out(cJSON *j)
{
	char *s = cJSON_PrintUnformatted(j);

	if (s) {
		fputs(s, stdout);
		fputc('\n', stdout);
		fflush(stdout);
	}
	free(s);
	cJSON_Delete(j);
}

static cJSON *line(const char *cb)
{
	cJSON *j = cJSON_CreateObject();

	cJSON_AddStringToObject(j, "cb", cb);
	return j;
}

static void fatal(const char *msg)
{
	cJSON *j = line("fatal");

	cJSON_AddStringToObject(j, "msg", msg);
	out(j);
	exit(2);
}

static void on_reset(void *ctx)
{
	cJSON *j = line("reset");

	cJSON_AddNumberToObject(j, "w", ((struct wctx *)ctx)->id);
	out(j);
}

static void on_synced(void *ctx)
{
	cJSON *j = line("synced");

	cJSON_AddNumberToObject(j, "w", ((struct wctx *)ctx)->id);
	out(j);
}

static void add_str(cJSON *j, const char *key, const cJSON *from, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(from, name);

	if (cJSON_IsString(v))
		cJSON_AddStringToObject(j, key, v->valuestring);
	else
		cJSON_AddNullToObject(j, key);
}

static void on_event(void *ctx, enum kube_event_type type, const cJSON *obj)
{
	static const char *const names[] = { "ADDED", "MODIFIED", "DELETED" };
	const cJSON *md = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
	cJSON *j = line("event");

	cJSON_AddNumberToObject(j, "w", ((struct wctx *)ctx)->id);
	cJSON_AddStringToObject(j, "type", names[type]);
	add_str(j, "ns", md, "namespace");
	add_str(j, "name", md, "name");
	add_str(j, "rv", md, "resourceVersion");
	add_str(j, "uid", md, "uid");
	out(j);
}

static void on_error(void *ctx, const char *msg)
{
	cJSON *j = line("error");

	cJSON_AddNumberToObject(j, "w", ((struct wctx *)ctx)->id);
	cJSON_AddStringToObject(j, "msg", msg);
	out(j);
}

static void on_done(void *ctx, const struct kube_result *r)
{
	cJSON *j = line("done");

	cJSON_AddNumberToObject(j, "id", (double)(intptr_t)ctx);
	cJSON_AddNumberToObject(j, "err", r->err);
	cJSON_AddNumberToObject(j, "status", (double)r->status);
	if (r->msg)
		cJSON_AddStringToObject(j, "msg", r->msg);
	else
		cJSON_AddNullToObject(j, "msg");
	if (r->json)
		cJSON_AddItemToObject(j, "body", cJSON_Duplicate(r->json, 1));
	else
		cJSON_AddNullToObject(j, "body");
	out(j);
}

static void stats(struct kube *k)
{
	struct kube_stats st;
	cJSON *j = line("stats"), *e = cJSON_CreateObject();

	kube__stats(k, &st);
	cJSON_AddNumberToObject(j, "requests", (double)st.requests);
	cJSON_AddNumberToObject(j, "relists", (double)st.relists);
	cJSON_AddNumberToObject(j, "reconnects", (double)st.reconnects);
	cJSON_AddNumberToObject(j, "rewatches", (double)st.rewatches);
	cJSON_AddNumberToObject(j, "events", (double)st.events);
	cJSON_AddNumberToObject(j, "token_reloads", (double)st.token_reloads);
	for (int i = 0; i < KUBE_ERR_MAX; i++)
		cJSON_AddNumberToObject(e, kube__err_name(i), (double)st.errors[i]);
	cJSON_AddItemToObject(j, "errors", e);
	out(j);
}

/* One command; false to quit. */
static bool command(struct kube *k, struct wctx *w, int nw, char *cmd)
{
	char *save = NULL, *verb = strtok_r(cmd, " ", &save);

	if (!verb)
		return true;
	if (!strcmp(verb, "quit"))
		return false;
	if (!strcmp(verb, "stats")) {
		stats(k);
	} else if (!strcmp(verb, "del")) {
		char *n = strtok_r(NULL, " ", &save);
		int i = n ? atoi(n) : -1;

		if (i >= 0 && i < nw && w[i].w) {
			kube__watch_del(w[i].w);
			w[i].w = NULL;
		}
	} else if (!strcmp(verb, "request")) {
		char *id = strtok_r(NULL, " ", &save), *method = strtok_r(NULL, " ", &save);
		char *path = strtok_r(NULL, " ", &save), *body = strtok_r(NULL, "", &save);
		int err;

		if (!id || !method || !path)
			return true;
		err = kube__request(k, method, path, body, on_done, (void *)(intptr_t)atoi(id));
		if (err) {
			struct kube_result r = { .err = err, .msg = "kube__request failed", .body = "" };

			on_done((void *)(intptr_t)atoi(id), &r);
		}
	}
	return true;
}

int main(int argc, char **argv)
{
	struct kube_opts o = {};
	struct kube_config cfg;
	struct wctx w[MAX_WATCHES] = {};
	struct kube_watch_opts wo[MAX_WATCHES] = {};
	const char *kubeconfig = NULL, *context = NULL, *incluster = NULL;
	char err[1024], inbuf[65536];
	size_t inlen = 0;
	struct kube *k;
	int nw = 0, epfd, sfd, i;
	sigset_t mask;
	bool run = true;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!v)
			fatal("an option without its value");
		i++;
		if (!strcmp(a, "--kubeconfig"))
			kubeconfig = v;
		else if (!strcmp(a, "--context"))
			context = v;
		else if (!strcmp(a, "--incluster"))
			incluster = v;
		else if (!strcmp(a, "--stall-ms"))
			o.stall_ms = atoi(v);
		else if (!strcmp(a, "--backoff-base-ms"))
			o.backoff_base_ms = atoi(v);
		else if (!strcmp(a, "--backoff-max-ms"))
			o.backoff_max_ms = atoi(v);
		else if (!strcmp(a, "--connect-timeout-ms"))
			o.connect_timeout_ms = atoi(v);
		else if (!strcmp(a, "--limit"))
			o.list_limit = atoi(v);
		else if (!strcmp(a, "--watch-s"))
			sscanf(v, "%u:%u", &o.watch_min_s, &o.watch_max_s);
		else if (!strcmp(a, "--watch") && nw < MAX_WATCHES)
			wo[nw++].path = v;
		else if (!strcmp(a, "--fsel") && nw)
			wo[nw - 1].field_selector = v;
		else if (!strcmp(a, "--lsel") && nw)
			wo[nw - 1].label_selector = v;
		else
			fatal("bad option");
	}
	o.user_agent = "kubewatch";
	if (incluster ? kube__config_incluster(incluster, &cfg, err, sizeof(err)) :
	    kube__config_kubeconfig(kubeconfig, context, &cfg, err, sizeof(err)))
		fatal(err);
	if (kube__new(&cfg, &o, &k, err, sizeof(err))) {
		kube__config_free(&cfg);
		fatal(err);
	}
	kube__config_free(&cfg);
	for (i = 0; i < nw; i++) {
		w[i].id = i;
		wo[i].on_reset = on_reset;
		wo[i].on_event = on_event;
		wo[i].on_synced = on_synced;
		wo[i].on_error = on_error;
		wo[i].ctx = &w[i];
		if (kube__watch_add(k, &wo[i], &w[i].w))
			fatal("kube__watch_add failed");
	}

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	epfd = epoll_create1(EPOLL_CLOEXEC);
	{
		struct epoll_event ev = { .events = EPOLLIN };

		ev.data.fd = kube__fd(k);
		epoll_ctl(epfd, EPOLL_CTL_ADD, kube__fd(k), &ev);
		ev.data.fd = 0;
		epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev);
		ev.data.fd = sfd;
		epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &ev);
	}
	out(line("ready"));
	while (run) {
		struct epoll_event evs[8];
		int n = epoll_wait(epfd, evs, 8, -1);

		if (n < 0 && errno != EINTR)
			break;
		for (i = 0; i < n && run; i++) {
			int fd = evs[i].data.fd;

			if (fd == kube__fd(k)) {
				if (kube__run(k))
					fatal("kube__run failed");
			} else if (fd == sfd) {
				run = false;
			} else {
				ssize_t r = read(0, inbuf + inlen, sizeof(inbuf) - 1 - inlen);
				char *nl;

				if (r <= 0) {
					run = false;
					break;
				}
				inlen += r;
				inbuf[inlen] = '\0';
				while (run && (nl = strchr(inbuf, '\n'))) {
					*nl = '\0';
					run = command(k, w, nw, inbuf);
					inlen -= nl + 1 - inbuf;
					memmove(inbuf, nl + 1, inlen + 1);
				}
				if (inlen == sizeof(inbuf) - 1)
					inlen = 0;
			}
		}
	}
	kube__free(k);
	close(epfd);
	close(sfd);
	return 0;
}
