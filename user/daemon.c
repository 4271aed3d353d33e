// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sluiced: one epoll loop over the ring buffer, inotify (policy directory
 * and watched cgroup directories), signals, timers, the HTTP server and the
 * control socket.
 *
 * Everything the kernel enforces is derived by reconcile(): policy files
 * (last good version of each) x cgroups matching their cgroupPaths ->
 * policy sets and identities. It runs at start (adopting whatever a
 * previous daemon left: nothing is detached in between), on every change,
 * and is idempotent. New cgroups below a glob's parent are registered by
 * the kernel at mkdir (sl_cgroup_mkdir); reconcile confirms them.
 */
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <malloc.h>
#include <glob.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <cjson/cJSON.h>
#include "cgroup.h"
#include "compile.h"
#include "control.h"
#include "daemon.h"
#include "datapath.h"
#include "events.h"
#include "fqdn.h"
#include "correlate.h"
#include "gwsrc.h"
#include "httpd.h"
#include "peer.h"
#include "k8s.h"
#include "kube.h"
#include "podcg.h"
#include "log.h"
#include "policy.h"
#include "sink.h"
#include "version.h"

#define RECENT_FLOWS	1024
#define MAX_FOLLOWERS	16
#define MAX_WATCHES	1024
#define HOUSEKEEP_S	10
/* Memory freed by a reconcile goes back to the system this long after the
 * last one: a burst of changes (an editor's saves, kubectl apply -f dir/)
 * reuses the pages instead of faulting them in again for each change,
 * which was a quarter of applying a 10k-rule file. */
#define TRIM_DELAY_NS	(1000ULL * 1000 * 1000)
/* Editors save by moving the old file away, then writing the new one:
 * a removal is applied only if the file is still gone this much later,
 * so that a save never opens the workload for a moment. */
#define REMOVAL_DELAY_MS 300
#define PEER_TOKEN_GRACE_S 120	/* the previous lookup token stays valid this long */

struct pfile {
	char *name;		/* file name in the policy directory */
	struct pol_set good;	/* last good version */
	bool has_good;
	char *errors;		/* diagnostics of the last failed load, or NULL */
	uint64_t loads, failures;
};

struct set_ent {
	char *key;		/* the selecting docs' ids, '\n' separated */
	uint32_t set_id;
	struct dp_set_state st;	/* as written, for patches and deletion */
	uint32_t flags;
	bool used;
	bool stale;		/* its docs changed: recompiled and patched when next used */
	/* for the gateway join */
	bool has_gateway;	/* a rule of class gateway */
	bool tools_listed;	/* some rule lists MCP tools */
	char **tools;
	size_t ntools;
};

struct watch {
	int wd;
	char *path;
};

struct vcount {
	struct vcount *next;
	char key[200];		/* policy \x1f rule \x1f class \x1f verdict */
	uint64_t n;
};

/* A pod of this node selected by a policy: its cgroup once found. */
struct podref {
	char uid[40];
	char names[PODCG_NAMES + 2][SL_NAME_MAX];	/* every name it may get */
	size_t nnames;
	char path[PATH_MAX];	/* found cgroup, or "" */
	uint64_t cgid;
	char ns[64], pod[256], sa[256];
	cJSON *containers;	/* copy of k8s_pod.containers */
	bool used;
	bool warned_net_raw;
};

struct daemon {
	const struct daemon_opts *o;
	struct correlate *corr;
	struct peer *peer;		/* asks the other nodes */
	struct httpd *peer_httpd;	/* answers them */
	struct { char *data; size_t len; struct timespec mtime; ino_t ino; } peer_token;
	/* The token before the last change, accepted until prev_until: the
	 * nodes see a rotated Secret at different moments. */
	char *peer_token_prev;
	size_t peer_token_prev_len;
	time_t peer_token_prev_until;
	uint64_t peer_unauthorized, peer_bad_requests;
	char **peer_found;		/* peers from --peer-service, by address */
	size_t npeer_found;
	unsigned long peer_gen;
	struct gwsrc *gw;
	int tfd_gw;
	unsigned long gw_ticks;
	unsigned int batch;	/* records in this consume round */
	struct k8s *k8s;
	unsigned long k8s_gen;	/* policy generation the sets were built from */
	struct podref *pods;
	size_t npods;
	char mount[PATH_MAX];
	struct datapath dp;
	bool dp_open;
	struct fqdn_cache *fqdn;
	struct events_render render;
	struct sink *sink;
	struct httpd *httpd;
	struct ring_buffer *rb;
	int ring_fd;
	void *ring_cons, *ring_prod;	/* read-only maps of the ring's positions */
	int epfd, sfd, ifd, tfd_fqdn, tfd_house, tfd_removal, ctl_fd;
	char *removals[64];	/* files gone, applied after REMOVAL_DELAY_MS */
	size_t nremovals;
	int policy_wd;
	bool stop, ready, dirty;

	struct pfile *files;
	size_t nfiles;
	struct set_ent *sets;
	size_t nsets;
	struct watch watches[MAX_WATCHES];
	size_t nwatches;

	char *recent[RECENT_FLOWS];
	size_t recent_next;
	int followers[MAX_FOLLOWERS];
	size_t nfollowers;

	struct vcount *vcounts[256];
	uint64_t events_read, events_render_fail, follower_drops;
	uint64_t policy_load_errors, reconciles, reconcile_errors;
	uint64_t set_patches, set_replacements;
	uint64_t identities, kernel_identities;
	uint64_t start_ns;
	uint64_t trim_at;	/* CLOCK_MONOTONIC ns; 0: nothing to give back */
};

static uint64_t now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/* ---------------------------------------------------------- policy files */

static bool daemon__policy_name(const char *n)
{
	size_t l = strlen(n);

	if (n[0] == '.' || l < 5 || n[l - 1] == '~')
		return false;
	return !strcmp(n + l - 5, ".yaml") || (l > 4 && !strcmp(n + l - 4, ".yml")) ||
	       !strcmp(n + l - 5, ".json");
}

static struct pfile *daemon__file(struct daemon *d, const char *name, bool create)
{
	struct pfile *f;
	size_t i;

	for (i = 0; i < d->nfiles; i++)
		if (!strcmp(d->files[i].name, name))
			return &d->files[i];
	if (!create)
		return NULL;
	f = realloc(d->files, (d->nfiles + 1) * sizeof(*f));
	if (!f)
		return NULL;
	d->files = f;
	f = &d->files[d->nfiles++];
	memset(f, 0, sizeof(*f));
	f->name = strdup(name);
	return f->name ? f : NULL;
}

static void daemon__file_drop(struct daemon *d, const char *name)
{
	struct pfile *f = daemon__file(d, name, false);

	if (!f)
		return;
	pr_info("policy file %s removed: its policies no longer apply\n", name);
	policy__set_free(&f->good);
	free(f->errors);
	free(f->name);
	*f = d->files[--d->nfiles];
	d->dirty = true;
}

static char *daemon__diags_text(const struct pol_diags *diags)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);

	if (!m)
		return NULL;
	policy__print_diags(diags, m);
	fclose(m);
	return buf;
}

/* A policy is defined once in the directory: two files naming the same
 * (kind, namespace, name) would silently merge their rules. */
static int daemon__check_unique(struct daemon *d, const char *name, const struct pol_set *set,
				struct pol_diags *diags)
{
	size_t i, j, k;
	int err = 0;

	for (i = 0; i < set->ndocs; i++) {
		char a[160], b[160];

		policy__doc_id(&set->docs[i], a, sizeof(a));
		for (j = 0; j < d->nfiles; j++) {
			const struct pol_set *o = &d->files[j].good;

			if (!strcmp(d->files[j].name, name))
				continue;
			for (k = 0; k < o->ndocs; k++) {
				struct pol_diag *v;

				if (o->docs[k].kind != set->docs[i].kind ||
				    strcmp(policy__doc_id(&o->docs[k], b, sizeof(b)), a))
					continue;
				v = realloc(diags->v, (diags->n + 1) * sizeof(*v));
				if (!v)
					return -ENOMEM;
				diags->v = v;
				v = &v[diags->n++];
				memset(v, 0, sizeof(*v));
				v->file = strdup(set->docs[i].file ? set->docs[i].file : name);
				v->line = set->docs[i].line;
				v->col = 1;
				if (asprintf(&v->msg, "policy %s is already defined in %s", a,
					     d->files[j].name) < 0)
					v->msg = NULL;
				err = -EINVAL;
			}
		}
	}
	return err;
}

/* Parse one file; the file's last good policies stay if it is invalid. */
static void daemon__file_load(struct daemon *d, const char *name)
{
	struct pol_diags diags = {};
	struct pol_set set = {};
	char path[PATH_MAX];
	struct pfile *f;
	struct stat st;
	int err;

	snprintf(path, sizeof(path), "%s/%s", d->o->policy_dir, name);
	if (stat(path, &st) || !S_ISREG(st.st_mode)) {
		daemon__file_drop(d, name);
		return;
	}
	f = daemon__file(d, name, true);
	if (!f)
		return;
	f->loads++;
	err = policy__parse_file(path, &set, &diags);
	if (!err)
		err = daemon__check_unique(d, name, &set, &diags);
	if (err) {
		f->failures++;
		d->policy_load_errors++;
		free(f->errors);
		f->errors = daemon__diags_text(&diags);
		pr_err("invalid policy file %s%s:\n%s", path,
		       f->has_good ? " (its last good version stays in force)" : "",
		       f->errors ? f->errors : "");
		policy__diags_free(&diags);
		policy__set_free(&set);
		return;
	}
	policy__diags_free(&diags);
	free(f->errors);
	f->errors = NULL;
	policy__set_free(&f->good);
	f->good = set;
	f->has_good = true;
	d->dirty = true;
	/* Sets are cached by the ids of their docs: a changed doc keeps its
	 * id, so every set is recompiled (as on an fqdn change) and written
	 * where it differs. */
	for (size_t k = 0; k < d->nsets; k++)
		d->sets[k].stale = true;
	pr_info("policy file %s: %zu %s loaded\n", name, set.ndocs,
		set.ndocs == 1 ? "policy" : "policies");
}

static int daemon__load_dir(struct daemon *d)
{
	struct dirent **names;
	int n, i;

	n = scandir(d->o->policy_dir, &names, NULL, alphasort);
	if (n < 0) {
		pr_err("cannot read policy directory %s: %s\n", d->o->policy_dir, strerror(errno));
		return -errno;
	}
	for (i = 0; i < n; i++) {
		if (daemon__policy_name(names[i]->d_name))
			daemon__file_load(d, names[i]->d_name);
		free(names[i]);
	}
	free(names);
	return 0;
}

/* ---------------------------------------------------------- policy sets */

struct docref {
	const struct pol_doc *doc;
	char id[160];
	size_t npaths;		/* cgroupPaths in force: none for cluster objects */
	bool k8s;
};

static size_t daemon__docs(struct daemon *d, struct docref **out)
{
	struct docref *v = NULL;
	size_t n = 0, i, j;

	for (i = 0; i < d->nfiles; i++) {
		struct pol_set *s = &d->files[i].good;

		for (j = 0; j < s->ndocs; j++) {
			struct docref *nv;

			if (!s->docs[j].ncgroup_paths)
				continue;	/* podSelector only: Kubernetes mode */
			nv = realloc(v, (n + 1) * sizeof(*v));
			if (!nv)
				continue;
			v = nv;
			v[n].doc = &s->docs[j];
			v[n].npaths = s->docs[j].ncgroup_paths;
			v[n].k8s = false;
			policy__doc_id(&s->docs[j], v[n].id, sizeof(v[n].id));
			n++;
		}
	}
	if (d->k8s) {
		const struct pol_doc **kd;
		size_t nk = k8s__docs(d->k8s, &kd);

		for (j = 0; j < nk; j++) {
			struct docref *nv = realloc(v, (n + 1) * sizeof(*v));

			if (!nv)
				continue;
			v = nv;
			v[n].doc = kd[j];
			v[n].npaths = 0;	/* in a cluster, pods are selected by labels */
			v[n].k8s = true;
			policy__doc_id(kd[j], v[n].id, sizeof(v[n].id));
			n++;
		}
	}
	*out = v;
	return n;
}

static int daemon__fqdn_cb(void *ctx, const char *fqdn, struct compile_addr **out, size_t *n)
{
	return fqdn__resolve_cb(ctx, fqdn, out, n);
}

static int daemon__service_cb(void *ctx, const char *ns, const char *name,
			      struct compile_addr **out, size_t *n)
{
	return k8s__service_addrs(ctx, ns, name, out, n);
}

static void daemon__set_tools_free(struct set_ent *e)
{
	for (size_t i = 0; i < e->ntools; i++)
		free(e->tools[i]);
	free(e->tools);
	e->tools = NULL;
	e->ntools = 0;
	e->tools_listed = false;
	e->has_gateway = false;
}

static void daemon__set_free(struct set_ent *e)
{
	datapath__set_state_free(&e->st);
	daemon__set_tools_free(e);
	free(e->key);
	e->key = NULL;
}

/* What the join needs of a set: does it name a gateway, which MCP tools it
 * allows; and the gateway's listeners, so that flows to them are kept. */
static void daemon__set_gateway_info(struct daemon *d, struct set_ent *e,
				     const struct pol_doc **docs, size_t ndocs,
				     const struct compiled *c)
{
	size_t i, j, k;

	for (i = 0; i < ndocs; i++)
		for (j = 0; j < docs[i]->negress; j++) {
			const struct pol_rule *r = &docs[i]->egress[j];

			e->has_gateway |= r->class == SL_CLASS_GATEWAY && !r->deny;
			for (k = 0; k < r->ntools; k++) {
				char **nt = realloc(e->tools, (e->ntools + 1) * sizeof(*nt));

				if (!nt)
					break;
				e->tools = nt;
				e->tools[e->ntools] = strdup(r->tools[k]);
				if (e->tools[e->ntools])
					e->ntools++;
				e->tools_listed = true;
			}
		}
	if (!d->corr)
		return;
	for (i = 0; i < c->nentries; i++) {
		const struct compile_entry *ce = &c->entries[i];

		if (ce->key.prefixlen != SL_LPM_SET_BITS + 128)
			continue;	/* listeners are hosts, not networks */
		for (j = 0; j < ce->val.n && j < SL_MAX_PORT_ENTRIES; j++) {
			const struct sl_port_entry *pe = &ce->val.e[j];

			if (pe->class != SL_CLASS_GATEWAY || pe->action != SL_ACTION_ALLOW)
				continue;
			correlate__gateway_addr(d->corr, ce->key.addr,
						pe->port_lo == pe->port_hi ? pe->port_lo : 0);
		}
	}
}

/* Compile the set of the docs named in KEY; its selecting policies into
 * POLICIES. 0 or -errno, logged. */
static int daemon__compile(struct daemon *d, struct docref *docs, size_t ndocs, const char *key,
			   const struct pol_doc ***sel, size_t *nsel, struct compiled *c,
			   char *policies, size_t plen)
{
	struct compile_input in = { .resolve = daemon__fqdn_cb, .resolve_ctx = d->fqdn };
	char err[512] = "";
	size_t i;
	int rc;

	*nsel = 0;
	policies[0] = '\0';
	*sel = calloc(ndocs + 1, sizeof(**sel));
	if (!*sel)
		return -ENOMEM;
	for (i = 0; i < ndocs; i++) {
		char needle[170];

		snprintf(needle, sizeof(needle), "\n%s\n", docs[i].id);
		if (!strstr(key, needle))
			continue;
		(*sel)[(*nsel)++] = docs[i].doc;
		snprintf(policies + strlen(policies), plen - strlen(policies), "%s%s",
			 policies[0] ? "," : "", docs[i].id);
	}
	fqdn__resolvers(d->fqdn, &in.resolvers, &in.nresolvers);
	if (d->k8s) {
		in.resolve_service = daemon__service_cb;
		in.service_ctx = d->k8s;
	}
	in.docs = *sel;
	in.ndocs = *nsel;
	rc = compile__build(&in, c, err, sizeof(err));
	if (rc) {
		free(*sel);
		*sel = NULL;
		pr_err("cannot compile policies %s: %s\n", policies, err[0] ? err : strerror(-rc));
	}
	return rc;
}

/* E's docs changed: written in place when its rules keep their names (the
 * identities and patterns pointing at it need no update, and only what
 * changed is written), else false and the caller makes a new set. */
static bool daemon__set_refresh(struct daemon *d, struct set_ent *e, const struct pol_doc **sel,
				size_t nsel, const struct compiled *c, const char *policies)
{
	struct dp_patch_stats ps = {};
	uint32_t old_nrules = e->st.nrules;

	/* The mode lives in the identities, which flip with a set id in one
	 * update: a mode change is a new set, never half in place. */
	if ((c->flags | SL_IDF_DAEMON) != e->flags)
		return false;
	if (datapath__set_patch(&d->dp, e->set_id, &e->st, c, policies, &ps))
		return false;
	events__names_add_compiled(&d->render, e->set_id, policies, c, old_nrules);
	e->flags = c->flags | SL_IDF_DAEMON;
	daemon__set_tools_free(e);
	daemon__set_gateway_info(d, e, sel, nsel, c);
	d->set_patches++;
	pr_debug("policy set %u (%s) patched: %zu entries written, %zu deleted\n", e->set_id,
		 policies, ps.written, ps.deleted);
	return true;
}

/* The set for the docs named in KEY (compiled once per reconcile round). */
static struct set_ent *daemon__set(struct daemon *d, struct docref *docs, size_t ndocs,
				   const char *key)
{
	const struct pol_doc **sel = NULL;
	struct compiled c = {};
	struct set_ent *e, *have = NULL;
	char policies[128];
	size_t i, nsel = 0;
	int rc;

	for (i = 0; i < d->nsets && !have; i++)
		if (d->sets[i].key && !strcmp(d->sets[i].key, key))
			have = &d->sets[i];
	if (have && !have->stale) {
		have->used = true;
		return have;
	}
	if (daemon__compile(d, docs, ndocs, key, &sel, &nsel, &c, policies, sizeof(policies)))
		return NULL;	/* a stale set stays stale: it is tried again next round */
	if (have) {
		if (daemon__set_refresh(d, have, sel, nsel, &c, policies)) {
			free(sel);
			compile__free(&c);
			have->stale = false;
			have->used = true;
			return have;
		}
		/* Replaced: the identities flip to the new set, then this one
		 * goes with the sets nobody uses. */
		have->key[0] = '\0';
		d->set_replacements++;
	}
	e = realloc(d->sets, (d->nsets + 1) * sizeof(*e));
	if (!e) {
		free(sel);
		compile__free(&c);
		return NULL;
	}
	d->sets = e;
	e = &d->sets[d->nsets];
	memset(e, 0, sizeof(*e));
	rc = datapath__set_add(&d->dp, &c, policies, &e->set_id, &e->st);
	if (!rc)
		events__names_add_compiled(&d->render, e->set_id, policies, &c, 0);
	e->flags = c.flags | SL_IDF_DAEMON;
	daemon__set_gateway_info(d, e, sel, nsel, &c);
	free(sel);
	compile__free(&c);
	if (rc) {
		daemon__set_free(e);
		return NULL;
	}
	e->key = strdup(key);
	e->used = true;
	d->nsets++;
	return e;
}

/* Bring the stale sets whose docs all still exist up to date in place,
 * before any cgroup is matched: matching a thousand cgroups takes
 * milliseconds, and the change is what the user waits for. A set some of
 * whose docs went is left to the matching (its cgroups move to another
 * set or out), and so is one that must be replaced. */
static void daemon__refresh_stale(struct daemon *d, struct docref *docs, size_t ndocs)
{
	for (size_t i = 0; i < d->nsets; i++) {
		struct set_ent *e = &d->sets[i];
		const struct pol_doc **sel = NULL;
		struct compiled c = {};
		char policies[128];
		size_t nsel, nids = 0;

		if (!e->stale || !e->key || !e->key[0] || !e->st.valid)
			continue;
		for (const char *k = e->key + 1; *k; k++)
			nids += *k == '\n';
		if (daemon__compile(d, docs, ndocs, e->key, &sel, &nsel, &c, policies,
				    sizeof(policies)))
			continue;
		if (nsel == nids && daemon__set_refresh(d, e, sel, nsel, &c, policies))
			e->stale = false;
		free(sel);
		compile__free(&c);
	}
}

/* A set the kernel still uses stays, whatever this round could compile. */
static void daemon__keep_set(struct daemon *d, uint32_t set_id)
{
	for (size_t i = 0; i < d->nsets; i++)
		if (d->sets[i].set_id == set_id)
			d->sets[i].used = true;
}

/* Does any identity or kernel pattern still point at SET_ID? */
static bool daemon__set_referenced(struct daemon *d, uint32_t set_id)
{
	struct sl_identity id;
	struct sl_globs g;
	__u64 key, *prev = NULL;

	while (!bpf_map_get_next_key(d->dp.map_fd[DP_IDENT], prev, &key)) {
		prev = &key;
		if (!datapath__ident_get(&d->dp, key, &id) && id.set_id == set_id)
			return true;
	}
	prev = NULL;
	while (!bpf_map_get_next_key(d->dp.map_fd[DP_GLOBS], prev, &key)) {
		prev = &key;
		if (bpf_map_lookup_elem(d->dp.map_fd[DP_GLOBS], &key, &g))
			continue;
		for (__u32 i = 0; i < g.n && i < SL_MAX_GLOBS; i++)
			if (g.g[i].ident.set_id == set_id)
				return true;
	}
	return false;
}

/* ---------------------------------------------------------- cgroup matching */

struct match {
	char *path;		/* absolute */
	uint64_t cgid;
	char *key;		/* selecting docs, '\n' separated, sorted by doc order */
};

static void daemon__match_add(struct match **m, size_t *n, const char *path, uint64_t cgid,
			      const char *id)
{
	struct match *v;
	size_t i;

	for (i = 0; i < *n; i++) {
		if ((*m)[i].cgid != cgid)
			continue;
		char needle[170], *nk;

		snprintf(needle, sizeof(needle), "\n%s\n", id);
		if (strstr((*m)[i].key, needle))
			return;
		if (asprintf(&nk, "%s%s\n", (*m)[i].key, id) < 0)
			return;
		free((*m)[i].key);
		(*m)[i].key = nk;
		return;
	}
	v = realloc(*m, (*n + 1) * sizeof(*v));
	if (!v)
		return;
	*m = v;
	v[*n].path = strdup(path);
	v[*n].cgid = cgid;
	if (asprintf(&v[*n].key, "\n%s\n", id) < 0)
		v[*n].key = NULL;
	if (!v[*n].path || !v[*n].key) {
		free(v[*n].path);
		free(v[*n].key);
		return;
	}
	(*n)++;
}

static bool daemon__is_cgroup(const char *path)
{
	char p[PATH_MAX];

	snprintf(p, sizeof(p), "%s/cgroup.procs", path);
	return access(p, F_OK) == 0;
}

static void daemon__pattern_abs(struct daemon *d, const char *pat, char *buf, size_t len)
{
	while (*pat == '/')
		pat++;
	snprintf(buf, len, "%s/%s", d->mount, pat);
}

/* Does the cgroup at ABS (under the mount) match any doc's pattern? */
static bool daemon__path_selected(struct daemon *d, struct docref *docs, size_t ndocs,
				  const char *abs)
{
	char p[PATH_MAX];
	size_t i, j;

	for (i = 0; i < ndocs; i++)
		for (j = 0; j < docs[i].npaths; j++) {
			daemon__pattern_abs(d, docs[i].doc->cgroup_paths[j], p, sizeof(p));
			if (!fnmatch(p, abs, FNM_PATHNAME))
				return true;
		}
	return false;
}

/* ---------------------------------------------------------- kernel globs */

struct kglob {
	uint64_t parent;
	struct sl_glob g;
	char key[1024];
};

/* PAT's parent part has no glob characters and its last component is
 * PREFIX*SUFFIX: the kernel can match it at mkdir time. */
static bool daemon__kernel_glob(struct daemon *d, const char *pat, char *parent, size_t plen,
				struct sl_glob *g)
{
	char abs[PATH_MAX], *last, *star;

	daemon__pattern_abs(d, pat, abs, sizeof(abs));
	last = strrchr(abs, '/');
	if (!last)
		return false;
	*last++ = '\0';
	if (strpbrk(abs, "*?[") || strpbrk(last, "?[") || !(star = strchr(last, '*')) ||
	    strchr(star + 1, '*'))
		return false;
	memset(g, 0, sizeof(*g));
	g->plen = star - last;
	g->slen = strlen(star + 1);
	if (g->plen > SL_GLOB_PART_LEN || g->slen > SL_GLOB_PART_LEN)
		return false;
	memcpy(g->prefix, last, g->plen);
	memcpy(g->suffix, star + 1, g->slen);
	snprintf(parent, plen, "%s", abs);
	return true;
}

static int kglob_cmp(const void *a, const void *b)
{
	const struct kglob *x = a, *y = b;

	if (x->parent != y->parent)
		return x->parent < y->parent ? -1 : 1;
	/* most specific first: the kernel takes the first match */
	return (y->g.plen + y->g.slen) - (x->g.plen + x->g.slen);
}

static void daemon__apply_globs(struct daemon *d, struct docref *docs, size_t ndocs)
{
	struct kglob *kg = NULL;
	size_t nkg = 0, i, j, k;
	__u64 key, *prev = NULL, stale[256];
	size_t nstale = 0;

	for (i = 0; i < ndocs; i++) {
		for (j = 0; j < docs[i].npaths; j++) {
			struct sl_glob g;
			char parent[PATH_MAX];
			uint64_t pid;
			struct kglob *v;

			if (!daemon__kernel_glob(d, docs[i].doc->cgroup_paths[j], parent,
						 sizeof(parent), &g) ||
			    cgroup__id(parent, &pid))
				continue;
			for (k = 0; k < nkg; k++)
				if (kg[k].parent == pid && kg[k].g.plen == g.plen &&
				    kg[k].g.slen == g.slen && !memcmp(kg[k].g.prefix, g.prefix, g.plen) &&
				    !memcmp(kg[k].g.suffix, g.suffix, g.slen))
					break;
			if (k == nkg) {
				v = realloc(kg, (nkg + 1) * sizeof(*v));
				if (!v)
					continue;
				kg = v;
				kg[nkg].parent = pid;
				kg[nkg].g = g;
				kg[nkg].key[0] = '\n';
				kg[nkg].key[1] = '\0';
				nkg++;
			}
			{
				char needle[170];

				snprintf(needle, sizeof(needle), "\n%s\n", docs[i].id);
				if (!strstr(kg[k].key, needle))
					snprintf(kg[k].key + strlen(kg[k].key),
						 sizeof(kg[k].key) - strlen(kg[k].key), "%s\n", docs[i].id);
			}
		}
	}
	qsort(kg, nkg, sizeof(*kg), kglob_cmp);
	for (i = 0; i < nkg; i = j) {
		struct sl_globs v = {}, old;
		bool failed = false;

		for (j = i; j < nkg && kg[j].parent == kg[i].parent; j++) {
			struct set_ent *s;

			if (v.n == SL_MAX_GLOBS) {
				pr_warn("more than %d patterns below one cgroup: new cgroups matching the "
					"others are registered by sluiced, not at mkdir\n", SL_MAX_GLOBS);
				continue;
			}
			s = daemon__set(d, docs, ndocs, kg[j].key);
			if (!s) {
				failed = true;
				continue;
			}
			v.g[v.n] = kg[j].g;
			v.g[v.n].ident.set_id = s->set_id;
			v.g[v.n].ident.flags = (s->flags & ~SL_IDF_DAEMON) | SL_IDF_KERNEL;
			v.g[v.n].ident.ring = 0;
			v.g[v.n].ident.owner_pid = getpid();
			v.n++;
		}
		key = kg[i].parent;
		if (failed && !bpf_map_lookup_elem(d->dp.map_fd[DP_GLOBS], &key, &old)) {
			/* a set did not compile: the patterns in force stay */
			for (__u32 k2 = 0; k2 < old.n && k2 < SL_MAX_GLOBS; k2++)
				daemon__keep_set(d, old.g[k2].ident.set_id);
			continue;
		}
		if (bpf_map_update_elem(d->dp.map_fd[DP_GLOBS], &key, &v, BPF_ANY))
			pr_warn("cannot write cgroup patterns: %s\n", strerror(errno));
	}
	/* parents no longer wanted */
	while (nstale < 256 && !bpf_map_get_next_key(d->dp.map_fd[DP_GLOBS], prev, &key)) {
		bool want = false;

		for (i = 0; i < nkg; i++)
			want |= kg[i].parent == key;
		if (!want)
			stale[nstale++] = key;
		prev = &key;
		key = key;
	}
	for (i = 0; i < nstale; i++)
		bpf_map_delete_elem(d->dp.map_fd[DP_GLOBS], &stale[i]);
	free(kg);
}

/* ---------------------------------------------------------- watches */

static void daemon__watch(struct daemon *d, const char *path)
{
	size_t i;
	int wd;

	for (i = 0; i < d->nwatches; i++)
		if (!strcmp(d->watches[i].path, path))
			return;
	if (d->nwatches == MAX_WATCHES)
		return;
	wd = inotify_add_watch(d->ifd, path, IN_CREATE | IN_DELETE | IN_ONLYDIR | IN_DELETE_SELF);
	if (wd < 0)
		return;
	d->watches[d->nwatches].wd = wd;
	d->watches[d->nwatches].path = strdup(path);
	d->nwatches++;
}

/* Directories whose new children may match: every directory matched by a
 * proper prefix of a pattern, or the nearest existing ancestor of one. */
static void daemon__update_watches(struct daemon *d, struct docref *docs, size_t ndocs)
{
	size_t i, j, k;

	for (i = 0; i < ndocs; i++)
		for (j = 0; j < docs[i].npaths; j++) {
			char abs[PATH_MAX], pre[PATH_MAX];
			size_t mlen = strlen(d->mount);

			daemon__pattern_abs(d, docs[i].doc->cgroup_paths[j], abs, sizeof(abs));
			for (k = mlen; abs[k]; k++) {
				glob_t g;
				size_t m;

				if (abs[k] != '/' && abs[k + 1])
					continue;
				if (abs[k] != '/')
					continue;
				memcpy(pre, abs, k);
				pre[k] = '\0';
				if (!pre[0])
					continue;
				if (glob(pre, GLOB_ONLYDIR | GLOB_NOSORT, NULL, &g) == 0) {
					for (m = 0; m < g.gl_pathc; m++)
						daemon__watch(d, g.gl_pathv[m]);
					globfree(&g);
				}
			}
			daemon__watch(d, d->mount);
		}
}

/* ---------------------------------------------------------- pods */

static struct podref *daemon__podref(struct daemon *d, const char *uid)
{
	struct podref *v;

	for (size_t i = 0; i < d->npods; i++)
		if (!strcmp(d->pods[i].uid, uid))
			return &d->pods[i];
	v = realloc(d->pods, (d->npods + 1) * sizeof(*v));
	if (!v)
		return NULL;
	d->pods = v;
	v = &d->pods[d->npods++];
	memset(v, 0, sizeof(*v));
	snprintf(v->uid, sizeof(v->uid), "%s", uid);
	return v;
}

/* Every name the pod's cgroup may get: the QoS class may not be known yet
 * when the API server first tells of the pod. */
static void daemon__pod_names(struct podref *r, const struct k8s_pod *p)
{
	char n[PODCG_NAMES][SL_NAME_MAX];
	int q;

	r->nnames = 0;
	for (q = PODCG_GUARANTEED; q <= PODCG_BESTEFFORT; q++) {
		if (p->qos >= 0 && q != p->qos)
			continue;
		if (podcg__names(p->uid, q, n))
			continue;
		memcpy(r->names[r->nnames++], n[0], SL_NAME_MAX);
		if (q == (p->qos >= 0 ? p->qos : PODCG_GUARANTEED))
			memcpy(r->names[r->nnames++], n[1], SL_NAME_MAX);
	}
}

static bool daemon__pod_name_wanted(struct daemon *d, const char *name)
{
	for (size_t i = 0; i < d->npods; i++)
		for (size_t j = 0; d->pods[i].used && j < d->pods[i].nnames; j++)
			if (!strcmp(d->pods[i].names[j], name))
				return true;
	return false;
}

/*
 * Pods of this node selected by policy objects: their cgroups are
 * announced to the kernel by name (sl_names), so a pod whose cgroup the
 * kubelet has yet to create is governed from its first socket, and the
 * cgroups that exist are registered directly.
 */
static void daemon__reconcile_pods(struct daemon *d, struct docref *docs, size_t ndocs,
				   struct match **m, size_t *nm)
{
	struct sl_name_key nk, stale[256];
	size_t i, j, nstale = 0;
	void *prev = NULL;

	for (i = 0; i < d->npods; i++)
		d->pods[i].used = false;
	for (i = 0; d->k8s && i < k8s__npods(d->k8s); i++) {
		const struct k8s_pod *p = k8s__pod(d->k8s, i);
		char key[2048] = "\n";
		struct sl_identity t = {};
		struct podref *r;
		struct set_ent *s;

		for (j = 0; j < ndocs; j++)
			if (docs[j].k8s && k8s__selects(d->k8s, docs[j].doc, p) &&
			    strlen(key) + strlen(docs[j].id) + 2 < sizeof(key))
				snprintf(key + strlen(key), sizeof(key) - strlen(key), "%s\n", docs[j].id);
		if (!key[1])
			continue;
		r = daemon__podref(d, p->uid);
		if (!r)
			continue;
		r->used = true;
		if (p->net_raw[0] && !r->warned_net_raw) {
			pr_warn("pod %s/%s: container %s keeps CAP_NET_RAW; its packet sockets meet no "
				"cgroup hook and cannot be refused (drop NET_RAW in its securityContext)\n",
				p->ns, p->name, p->net_raw);
			r->warned_net_raw = true;
		}
		snprintf(r->ns, sizeof(r->ns), "%s", p->ns);
		snprintf(r->pod, sizeof(r->pod), "%s", p->name);
		snprintf(r->sa, sizeof(r->sa), "%s", p->sa);
		cJSON_Delete(r->containers);
		r->containers = p->containers ? cJSON_Duplicate(p->containers, 1) : NULL;
		daemon__pod_names(r, p);
		s = daemon__set(d, docs, ndocs, key);
		t.set_id = s ? s->set_id : 0;	/* default-deny if it did not compile */
		t.flags = ((s ? s->flags : 0) & ~SL_IDF_DAEMON) | SL_IDF_KERNEL;
		t.owner_pid = getpid();
		for (j = 0; j < r->nnames; j++) {
			memcpy(nk.name, r->names[j], SL_NAME_MAX);
			bpf_map_update_elem(d->dp.map_fd[DP_NAMES], &nk, &t, BPF_ANY);
		}
		/* the cgroup, if the kubelet made it: found by name */
		if (r->path[0] && access(r->path, F_OK))
			r->path[0] = '\0';
		if (!r->path[0]) {
			char n2[PODCG_NAMES][SL_NAME_MAX];

			for (j = 0; j < r->nnames && !r->path[0]; j += PODCG_NAMES) {
				memcpy(n2[0], r->names[j], SL_NAME_MAX);
				memcpy(n2[1], r->names[j + 1 < r->nnames ? j + 1 : j], SL_NAME_MAX);
				if (podcg__find(d->dp.cgroup_root, (const char (*)[SL_NAME_MAX])n2, 8,
						r->path, sizeof(r->path)))
					r->path[0] = '\0';
			}
		}
		if (r->path[0] && !cgroup__id(r->path, &r->cgid))
			for (j = 0; j < ndocs; j++)
				if (docs[j].k8s && k8s__selects(d->k8s, docs[j].doc, p))
					daemon__match_add(m, nm, r->path, r->cgid, docs[j].id);
	}
	for (i = 0; i < d->npods;) {
		if (d->pods[i].used) {
			i++;
			continue;
		}
		cJSON_Delete(d->pods[i].containers);
		d->pods[i] = d->pods[--d->npods];
	}
	/* names no selected pod has any more */
	while (nstale < 256 && !bpf_map_get_next_key(d->dp.map_fd[DP_NAMES], prev, &nk)) {
		if (!daemon__pod_name_wanted(d, nk.name))
			stale[nstale++] = nk;
		prev = &nk;
	}
	for (i = 0; i < nstale; i++)
		bpf_map_delete_elem(d->dp.map_fd[DP_NAMES], &stale[i]);
}

/* The container of a task's cgroup: its runtime's scope name carries the
 * container id (cri-containerd-<id>.scope, crio-<id>.scope, or <id> with
 * the cgroupfs driver). */
static const char *daemon__container(const struct podref *r, const char *cgroup)
{
	const cJSON *c;
	const char *base;

	if (!cgroup || !r->containers)
		return NULL;
	base = strrchr(cgroup, '/') ? strrchr(cgroup, '/') + 1 : cgroup;
	cJSON_ArrayForEach(c, r->containers) {
		const cJSON *id = cJSON_GetObjectItem(c, "id"), *n = cJSON_GetObjectItem(c, "name");

		if (cJSON_IsString(id) && cJSON_IsString(n) && *id->valuestring &&
		    strstr(base, id->valuestring))
			return n->valuestring;
	}
	return NULL;
}

static int daemon__workload(void *ctx, uint64_t cgid, const char *cgroup,
			    struct events_workload *out)
{
	struct daemon *d = ctx;
	char rel[PATH_MAX];
	const char *base;
	size_t i, j;

	for (i = 0; i < d->npods; i++)
		if (d->pods[i].cgid == cgid)
			goto found;
	/* registered by the kernel before we found it: known by its name */
	if (cgroup__path_of(cgid, rel, sizeof(rel)))
		return -ENOENT;
	base = strrchr(rel, '/') ? strrchr(rel, '/') + 1 : rel;
	for (i = 0; i < d->npods; i++)
		for (j = 0; j < d->pods[i].nnames; j++)
			if (!strcmp(d->pods[i].names[j], base))
				goto found;
	return -ENOENT;
found:
	out->ns = d->pods[i].ns;
	out->pod = d->pods[i].pod;
	out->sa = d->pods[i].sa;
	out->container = daemon__container(&d->pods[i], cgroup);
	return 0;
}

/* ---------------------------------------------------------- reconcile */

static int daemon__reconcile(struct daemon *d)
{
	struct docref *docs = NULL;
	struct match *m = NULL;
	size_t ndocs, nm = 0, i, j;
	__u64 key, *prev = NULL;
	__u64 stale[1024];
	size_t nstale = 0;
	uint64_t kernel = 0, total = 0;
	int err = 0;

	/* In a cluster, nothing is decided before the first lists are in:
	 * an empty store would read as "no pod is selected" and drop what a
	 * previous daemon left in force. */
	if (d->k8s && !k8s__synced(d->k8s))
		return 0;
	d->dirty = false;
	d->reconciles++;
	/* a changed policy object keeps its id: recompile every set */
	if (d->k8s && k8s__policy_gen(d->k8s) != d->k8s_gen) {
		d->k8s_gen = k8s__policy_gen(d->k8s);
		for (i = 0; i < d->nsets; i++)
			d->sets[i].stale = true;
	}
	for (i = 0; i < d->nsets; i++)
		d->sets[i].used = false;
	ndocs = daemon__docs(d, &docs);
	daemon__refresh_stale(d, docs, ndocs);

	/* 1. cgroups selected by each pattern */
	for (i = 0; i < ndocs; i++) {
		for (j = 0; j < docs[i].npaths; j++) {
			char abs[PATH_MAX];
			glob_t g;
			size_t k;

			daemon__pattern_abs(d, docs[i].doc->cgroup_paths[j], abs, sizeof(abs));
			if (glob(abs, GLOB_ONLYDIR | GLOB_NOSORT, NULL, &g))
				continue;
			for (k = 0; k < g.gl_pathc; k++) {
				uint64_t id;

				if (!daemon__is_cgroup(g.gl_pathv[k]) || cgroup__id(g.gl_pathv[k], &id))
					continue;
				daemon__match_add(&m, &nm, g.gl_pathv[k], id, docs[i].id);
			}
			globfree(&g);
		}
	}

	/* 1b. pods selected by policy objects (Kubernetes mode) */
	daemon__reconcile_pods(d, docs, ndocs, &m, &nm);

	/* 2. patterns the kernel applies at mkdir (before the identities, so
	 * a cgroup created during this round is covered either way) */
	daemon__apply_globs(d, docs, ndocs);

	/* 3. identities: new set first, then one update flips it */
	for (i = 0; i < nm; i++) {
		struct sl_identity want = {}, have;
		struct set_ent *s = daemon__set(d, docs, ndocs, m[i].key);

		if (!datapath__ident_get(&d->dp, m[i].cgid, &have) &&
		    !(have.flags & (SL_IDF_DAEMON | SL_IDF_KERNEL)))
			continue;	/* a sluice run's cgroup: its own policy */
		if (!s) {
			/* compile failed: the cgroup keeps the set in force; a new
			 * one is selected, so it is default-deny (set 0) meanwhile */
			if (!datapath__ident_get(&d->dp, m[i].cgid, &have)) {
				daemon__keep_set(d, have.set_id);
			} else {
				want.flags = SL_IDF_DAEMON;
				want.owner_pid = getpid();
				datapath__ident_put(&d->dp, m[i].cgid, &want);
			}
			err = -EINVAL;
			continue;
		}
		want.set_id = s->set_id;
		want.flags = s->flags;
		want.ring = 0;
		want.owner_pid = getpid();
		if (!datapath__ident_get(&d->dp, m[i].cgid, &have) &&
		    !memcmp(&have, &want, sizeof(want)))
			continue;
		if (datapath__ident_put(&d->dp, m[i].cgid, &want)) {
			err = -errno;
			pr_err("cannot register %s: %s\n", m[i].path, strerror(-err));
			/* it still points at the set it had: that set stays */
			if (!datapath__ident_get(&d->dp, m[i].cgid, &have))
				daemon__keep_set(d, have.set_id);
		}
	}

	/* 4. identities of ours that nothing selects any more. One created
	 * by the kernel since step 1 still matches a pattern and stays. */
	while (nstale < 1024 && !bpf_map_get_next_key(d->dp.map_fd[DP_IDENT], prev, &key)) {
		struct sl_identity id;
		bool want = false;

		prev = &key;
		if (datapath__ident_get(&d->dp, key, &id))
			continue;
		total++;
		if (!(id.flags & (SL_IDF_DAEMON | SL_IDF_KERNEL)))
			continue;	/* sluice run's */
		if (id.flags & SL_IDF_KERNEL)
			kernel++;
		for (i = 0; i < nm && !want; i++)
			want = m[i].cgid == key;
		if (!want) {
			char rel[PATH_MAX], abs[PATH_MAX];

			if (!cgroup__path_of(key, rel, sizeof(rel)) &&
			    !cgroup__abspath(rel, abs, sizeof(abs)) &&
			    (daemon__path_selected(d, docs, ndocs, abs) ||
			     daemon__pod_name_wanted(d, strrchr(abs, '/') + 1)))
				want = true;
		}
		if (!want)
			stale[nstale++] = key;
	}
	for (i = 0; i < nstale; i++)
		datapath__ident_del(&d->dp, stale[i]);
	d->identities = total - nstale;
	d->kernel_identities = kernel;

	/* 5. sets nobody points at: ours from earlier rounds, and those of a
	 * previous daemon that the adoption above has replaced */
	for (i = 0; i < d->nsets;) {
		if (d->sets[i].used) {
			i++;
			continue;
		}
		datapath__set_del_state(&d->dp, d->sets[i].set_id, &d->sets[i].st);
		daemon__set_free(&d->sets[i]);
		d->sets[i] = d->sets[--d->nsets];
	}
	{
		__u32 sk, *sprev = NULL, dead[256];
		size_t ndead = 0;
		struct sl_set_info si;

		while (ndead < 256 && !bpf_map_get_next_key(d->dp.map_fd[DP_SETS], sprev, &sk)) {
			sprev = &sk;
			if (bpf_map_lookup_elem(d->dp.map_fd[DP_SETS], &sk, &si) ||
			    si.owner_pid == (uint32_t)getpid() ||
			    (kill(si.owner_pid, 0) == 0 || errno == EPERM))
				continue;
			dead[ndead++] = sk;
		}
		for (i = 0; i < ndead; i++)
			if (!daemon__set_referenced(d, dead[i]))
				datapath__set_del(&d->dp, dead[i]);
	}

	daemon__update_watches(d, docs, ndocs);
	for (i = 0; i < nm; i++) {
		free(m[i].path);
		free(m[i].key);
	}
	free(m);
	free(docs);
	if (err)
		d->reconcile_errors++;
	/* compiling and rewriting sets frees large buffers: returned soon */
	d->trim_at = now_mono() + TRIM_DELAY_NS;
	return err;
}

/* ---------------------------------------------------------- events */

/* Verdicts by policy, rule, class and verdict for the metrics, from the
 * record's ids and the name caches (no JSON round trip per event). */
static void daemon__count_verdict(struct daemon *d, const struct sl_event *ev)
{
	const char *rule = events__reserved_rule(ev->rule_id), *policy = NULL;
	const struct sl_rule_meta *rm = NULL;
	char key[200];
	struct vcount *v;
	unsigned int h = 5381;
	int i;

	if (!rule) {
		rm = events__rule_meta(&d->render, ev->set_id, ev->rule_id);
		rule = rm ? rm->rule : "";
		policy = rm ? rm->policy : NULL;
	}
	if (!policy && ev->ident_cgid)
		policy = events__set_name(&d->render, ev->set_id);
	snprintf(key, sizeof(key), "%s\x1f%s\x1f%s\x1f%s", policy ? policy : "", rule,
		 rm ? policy__class_name(rm->class) : ev->class ? policy__class_name(ev->class) : "",
		 events__verdict_name(ev->verdict));
	for (i = 0; key[i]; i++)
		h = h * 33 + (unsigned char)key[i];
	for (v = d->vcounts[h % 256]; v; v = v->next)
		if (!strcmp(v->key, key))
			break;
	if (!v) {
		v = calloc(1, sizeof(*v));
		if (!v)
			return;
		snprintf(v->key, sizeof(v->key), "%s", key);
		v->next = d->vcounts[h % 256];
		d->vcounts[h % 256] = v;
	}
	v->n++;
}

static void daemon__follower_drop(struct daemon *d, size_t i)
{
	close(d->followers[i]);
	d->followers[i] = d->followers[--d->nfollowers];
}

/* One record out: the sink, the recent-flows buffer, the followers. */
static void daemon__emit_line(struct daemon *d, char *buf, int n)
{
	size_t i;

	if (d->sink)
		sink__write(d->sink, buf, n);
	free(d->recent[d->recent_next]);
	d->recent[d->recent_next] = strndup(buf, n);
	d->recent_next = (d->recent_next + 1) % RECENT_FLOWS;
	buf[n] = '\n';
	for (i = 0; i < d->nfollowers;) {
		/* A follower that cannot take a line now loses it, counted:
		 * the ring reader never waits for anybody. */
		if (send(d->followers[i], buf, n + 1, MSG_DONTWAIT | MSG_NOSIGNAL) != n + 1) {
			if (errno == EAGAIN) {
				d->follower_drops++;
				i++;
				continue;
			}
			daemon__follower_drop(d, i);
			continue;
		}
		i++;
	}
}

static void daemon__corr_emit(void *ctx, const struct corr_record *rec)
{
	struct daemon *d = ctx;
	char buf[8192];
	int n = correlate__render(d->corr, rec, buf, sizeof(buf) - 1);

	if (n < 0) {
		d->events_render_fail++;
		return;
	}
	daemon__emit_line(d, buf, n);
}

/* What the join keeps of a kernel record's workload: its cgroup (into
 * PATH), pod, rule and class. The strings point into PATH, the name caches
 * and the pod store: valid until the next record. */
static void daemon__flow_meta(struct daemon *d, const struct sl_event *ev, char *path,
			      size_t pathlen, struct corr_flow_meta *meta)
{
	const char *cp = events__cgroup_name(&d->render, ev->cgroup_id);
	struct events_workload wl = {};
	const struct sl_rule_meta *rm;

	snprintf(path, pathlen, "%s", cp ? cp : "");
	if (d->render.workload)
		d->render.workload(d->render.workload_ctx, ev->ident_cgid, path, &wl);
	rm = events__rule_meta(&d->render, ev->set_id, ev->rule_id);
	meta->time_ns = ev->ts_ns + d->render.mono_to_real_ns;
	meta->cgroup = path;
	meta->pod_namespace = wl.ns ? wl.ns : "";
	meta->pod_name = wl.pod ? wl.pod : "";
	meta->service_account = wl.sa ? wl.sa : "";
	meta->policy = rm ? rm->policy : "";
	meta->rule = rm ? rm->rule : events__reserved_rule(ev->rule_id);
	meta->class = rm ? rm->class : ev->class;
}

/* The kernel's side of the join: flows to gateway listeners, and connects
 * of identities whose policy names a gateway. */
static void daemon__correlate_event(struct daemon *d, const struct sl_event *ev)
{
	struct corr_flow_meta meta = {};
	const struct set_ent *s = NULL;
	char path[PATH_MAX] = "";
	size_t i;

	if (!d->corr || !ev->ident_cgid)
		return;
	for (i = 0; i < d->nsets; i++)
		if (d->sets[i].set_id == ev->set_id)
			s = &d->sets[i];
	if (!s)
		return;		/* a sluice run's identity: not ours to join */
	/* Only what can matter: connects of identities that name a gateway
	 * (bypass), and flows that may go to a gateway listener. */
	if ((ev->type == SL_EV_CONNECT || ev->type == SL_EV_SENDMSG) && !s->has_gateway)
		return;
	if ((ev->type == SL_EV_ESTABLISHED || ev->type == SL_EV_CLOSE) &&
	    ev->class != SL_CLASS_GATEWAY && !d->o->ngateway_addrs)
		return;
	daemon__flow_meta(d, ev, path, sizeof(path), &meta);
	meta.has_gateway = s->has_gateway;
	meta.tools_listed = s->tools_listed;
	meta.tools = (const char *const *)s->tools;
	meta.ntools = s->ntools;
	if (ev->type == SL_EV_ESTABLISHED || ev->type == SL_EV_CLOSE)
		correlate__flow(d->corr, ev, &meta);
	else if (ev->type == SL_EV_CONNECT || ev->type == SL_EV_SENDMSG)
		correlate__connect(d->corr, ev, &meta);
}

/* A flow opened before this daemon: its tag's record, as the iterator
 * gives it. The previous daemon's sets and rule names are still pinned. */
static int daemon__recover_one(void *ctx, const struct sl_event *ev)
{
	struct daemon *d = ctx;
	struct corr_flow_meta meta = {};
	char path[PATH_MAX] = "";

	if (!ev->ident_cgid || ev->sock_type)
		return 0;	/* accepted: not an agent's side */
	daemon__flow_meta(d, ev, path, sizeof(path), &meta);
	/* The tools of the set it was decided by are not known here: no
	 * drift check for these flows. */
	meta.has_gateway = meta.class == SL_CLASS_GATEWAY;
	correlate__flow(d->corr, ev, &meta);
	return 0;
}

static void daemon__recover_flows(struct daemon *d)
{
	struct corr_stats before, after;
	int n;

	correlate__stats(d->corr, &before);
	n = datapath__flows(&d->dp, daemon__recover_one, d);
	correlate__stats(d->corr, &after);
	if (n == -ENOENT) {
		pr_info("gateway join: this datapath has no flow iterator (loaded by an older "
			"build): flows opened before this start are not known\n");
		return;
	}
	if (n < 0) {
		pr_warn("gateway join: cannot read the open flows: %s\n", strerror(-n));
		return;
	}
	pr_info("gateway join: %d open flow(s) from before this start, %llu to gateway "
		"listeners\n", n, (unsigned long long)(after.flows_added - before.flows_added));
}

static void daemon__on_event_one(struct daemon *d, const struct sl_event *ev);

static int daemon__on_event(void *ctx, void *data, size_t size)
{
	struct daemon *d = ctx;
	const struct sl_event *ev = data;

	if (size < sizeof(*ev))
		return 0;
	d->events_read++;
	/* A bounded batch per loop round: under a connect storm the ring
	 * would otherwise keep the loop from the control socket, HTTP and
	 * inotify. libbpf stops on a negative return; this record is done. */
	if (++d->batch >= 4096) {
		d->batch = 0;
		daemon__on_event_one(d, ev);
		return -EAGAIN;
	}
	daemon__on_event_one(d, ev);
	return 0;
}

static void daemon__on_event_one(struct daemon *d, const struct sl_event *ev)
{
	char buf[2048];
	int n;

	n = events__render(&d->render, ev, buf, sizeof(buf) - 1);
	if (n < 0) {
		d->events_render_fail++;
		return;
	}
	if (ev->type == SL_EV_CONNECT || ev->type == SL_EV_SENDMSG || ev->type == SL_EV_SOCK_CREATE)
		daemon__count_verdict(d, ev);
	daemon__emit_line(d, buf, n);
	daemon__correlate_event(d, ev);
}

static void daemon__gw_record(void *ctx, struct gw_record *r)
{
	struct daemon *d = ctx;
	struct corr_result res;

	correlate__gateway(d->corr, r, &res);
}

/* {"error": MSG}, escaped as JSON; NULL when out of memory. */
static char *daemon__error_json(const char *msg)
{
	cJSON *o = cJSON_CreateObject();
	char *out = NULL;

	if (o && cJSON_AddStringToObject(o, "error", msg))
		out = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return out;
}

static int daemon__otlp(void *ctx, const struct httpd_request *req, struct httpd_response *resp)
{
	struct daemon *d = ctx;
	char err[256] = "";
	int n = gwsrc__otlp(d->gw, req->body, req->body_len, err, sizeof(err));

	resp->content_type = "application/json";
	if (n < 0) {
		resp->status = 400;
		resp->body = daemon__error_json(err);
	} else {
		resp->status = 200;
		resp->body = strdup("{\"partialSuccess\":{}}");
	}
	resp->body_len = resp->body ? strlen(resp->body) : 0;
	return 0;
}

/* ---------------------------------------------------------- peers */

static void daemon__add_fd(struct daemon *d, int fd, uint32_t events);

/* The token file is read again when it changes (a rotated Secret), with
 * the rules the client side reads it by (kube__read_token). */
static int daemon__peer_token(struct daemon *d, char *msg, size_t msglen)
{
	struct stat st;
	char *buf;
	int err;

	if (stat(d->o->peer_token_file, &st)) {
		log__errf(msg, msglen, "%s: %s", d->o->peer_token_file, strerror(errno));
		return -errno;
	}
	if (d->peer_token.data && st.st_ino == d->peer_token.ino &&
	    st.st_mtim.tv_sec == d->peer_token.mtime.tv_sec &&
	    st.st_mtim.tv_nsec == d->peer_token.mtime.tv_nsec)
		return 0;
	if ((err = kube__read_token(d->o->peer_token_file, &buf, msg, msglen)))
		return err;
	free(d->peer_token_prev);
	d->peer_token_prev = d->peer_token.data;
	d->peer_token_prev_len = d->peer_token.len;
	d->peer_token_prev_until = (time_t)(now_mono() / 1000000000ULL) + PEER_TOKEN_GRACE_S;
	d->peer_token.data = buf;
	d->peer_token.len = strlen(buf);
	d->peer_token.ino = st.st_ino;
	d->peer_token.mtime = st.st_mtim;
	return 0;
}

/* Constant time: the answer must not tell how much was right. */
static bool daemon__token_equal(const char *got, size_t n, const char *want, size_t wn)
{
	unsigned char diff = 0;

	if (!want || n != wn)
		return false;
	for (size_t i = 0; i < n; i++)
		diff |= (unsigned char)got[i] ^ (unsigned char)want[i];
	return !diff;
}

static bool daemon__peer_authorized(struct daemon *d, const char *authz)
{
	size_t n;

	if (!d->o->peer_token_file)
		return true;		/* mTLS alone: httpd checked the certificate */
	if (daemon__peer_token(d, NULL, 0) && !d->peer_token.data)
		return false;
	if (!authz || strncasecmp(authz, "Bearer ", 7))
		return false;
	authz += 7;
	n = strlen(authz);
	if (daemon__token_equal(authz, n, d->peer_token.data, d->peer_token.len))
		return true;
	return (time_t)(now_mono() / 1000000000ULL) < d->peer_token_prev_until &&
	       daemon__token_equal(authz, n, d->peer_token_prev, d->peer_token_prev_len);
}

static int daemon__peer_lookup_one(void *ctx, const uint8_t addr[16], uint16_t port,
				   uint64_t start_ns, struct corr_flow_info *out)
{
	struct daemon *d = ctx;

	return correlate__lookup(d->corr, addr, port, start_ns, out);
}

static int daemon__peer_lookup(void *ctx, const struct httpd_request *req,
			       struct httpd_response *resp)
{
	struct daemon *d = ctx;
	char err[256] = "";
	int ret;

	resp->content_type = "application/json";
	if (!daemon__peer_authorized(d, req->authorization)) {
		d->peer_unauthorized++;
		resp->status = 401;
		resp->body = strdup("{\"error\":\"a valid bearer token is required\"}");
		resp->body_len = resp->body ? strlen(resp->body) : 0;
		return 0;
	}
	/* Records are read on the same loop: the flows are as of now. */
	ring_buffer__consume(d->rb);
	ret = peer__serve(d->render.node, req->body, req->body_len, daemon__peer_lookup_one, d,
			  &resp->body, err, sizeof(err));
	if (ret == -EINVAL) {
		d->peer_bad_requests++;
		resp->status = 400;
		resp->body = daemon__error_json(err);
	} else if (ret) {
		return ret;
	}
	resp->body_len = resp->body ? strlen(resp->body) : 0;
	return 0;
}

static int daemon__peer_ask(void *ctx, const struct gw_record *r)
{
	struct daemon *d = ctx;

	return peer__ask(d->peer, r);
}

static void daemon__peer_done(void *ctx, const struct gw_record *r, const struct corr_flow_info *fi,
			      const char *why)
{
	struct daemon *d = ctx;

	correlate__remote_done(d->corr, r, fi, why);
}

/* A PEM file for the lookup listener; an empty one is refused here rather
 * than as "certificate refused" by the TLS library. */
static int daemon__read_pem(const char *opt, const char *path, const char **out)
{
	unsigned char *data;
	size_t len;
	int err = kube__read_file(path, &data, &len);

	if (!err && !len) {
		free(data);
		err = -ENODATA;
	}
	if (err) {
		pr_err("%s %s: %s\n", opt, path, err == -ENODATA ? "empty" : strerror(-err));
		return err;
	}
	*out = (const char *)data;
	return 0;
}

static int daemon__peer_setup(struct daemon *d)
{
	const struct daemon_opts *o = d->o;
	char msg[512] = "";
	size_t i;
	int err;

	for (i = 0; i < o->nlocal_prefixes; i++) {
		const char *cidr = o->local_prefixes[i], *slash = strchr(cidr, '/');
		struct gw_record tmp = {};
		char addr[64];
		unsigned long bits;
		char *end;

		snprintf(addr, sizeof(addr), "%.*s:1", slash ? (int)(slash - cidr) : 0, cidr);
		if (addr[0] != ':' && strchr(addr, ':') != strrchr(addr, ':'))
			snprintf(addr, sizeof(addr), "[%.*s]:1", (int)(slash - cidr), cidr);
		bits = slash ? strtoul(slash + 1, &end, 10) : 0;
		if (!slash || !slash[1] || *end || gateway__parse_peer(addr, strlen(addr), &tmp) ||
		    bits > (tmp.peer_v4 ? 32u : 128u)) {
			pr_err("--local-prefix %s: want IP/BITS\n", cidr);
			return -EINVAL;
		}
		correlate__local_prefix(d->corr, tmp.peer_addr,
					(unsigned int)bits + (tmp.peer_v4 ? 96 : 0));
	}
	if (o->npeers || o->peer_service) {
		struct peer_opts po = {
			.token_file = o->peer_token_file,
			.ca_file = o->peer_tls_ca,
			.cert_file = o->peer_tls_cert,
			.key_file = o->peer_tls_key,
		};

		err = peer__new(&po, daemon__peer_done, d, &d->peer, msg, sizeof(msg));
		if (err) {
			pr_err("peers: %s\n", msg[0] ? msg : strerror(-err));
			return err;
		}
		for (i = 0; i < o->npeers; i++) {
			const char *url = o->peers[i], *host = strstr(url, "://");

			err = peer__set(d->peer, host ? host + 3 : url, url, msg, sizeof(msg));
			if (err) {
				pr_err("--peer %s: %s\n", url, msg[0] ? msg : strerror(-err));
				return err;
			}
		}
		correlate__set_ask(d->corr, daemon__peer_ask, d);
		daemon__add_fd(d, peer__fd(d->peer), EPOLLIN);
	}
	if (o->peer_listen) {
		struct httpd_tls tls = {};
		bool mtls = o->peer_tls_cert && o->peer_tls_key && o->peer_tls_ca, https;

		/* The answers name pods and processes: never unauthenticated. */
		if (!o->peer_token_file && !mtls) {
			pr_err("--peer-listen needs --peer-token-file, or --peer-tls-cert, "
			       "--peer-tls-key and --peer-tls-ca (mTLS)\n");
			return -EINVAL;
		}
		if (o->peer_token_file && (err = daemon__peer_token(d, msg, sizeof(msg)))) {
			pr_err("--peer-token-file %s\n", msg);
			return err;
		}
		if (!!o->peer_tls_cert != !!o->peer_tls_key) {
			pr_err("--peer-tls-cert and --peer-tls-key go together\n");
			return -EINVAL;
		}
		https = o->peer_tls_cert != NULL;
		if (!(o->peer_tls_cert &&
		      (err = daemon__read_pem("--peer-tls-cert", o->peer_tls_cert, &tls.cert_pem))) &&
		    !(o->peer_tls_key &&
		      (err = daemon__read_pem("--peer-tls-key", o->peer_tls_key, &tls.key_pem))) &&
		    !(o->peer_tls_ca &&
		      (err = daemon__read_pem("--peer-tls-ca", o->peer_tls_ca, &tls.client_ca_pem)))) {
			err = httpd__start_tls(o->peer_listen, https ? &tls : NULL, &d->peer_httpd,
					       msg, sizeof(msg));
			if (err)
				pr_err("--peer-listen: %s\n", msg[0] ? msg : strerror(-err));
		}
		free((char *)tls.cert_pem);
		free((char *)tls.key_pem);
		free((char *)tls.client_ca_pem);
		if (err)
			return err;
		httpd__handle(d->peer_httpd, "POST", PEER_PATH, daemon__peer_lookup, d);
		httpd__set_ready(d->peer_httpd, true);
		daemon__add_fd(d, httpd__fd(d->peer_httpd), EPOLLIN);
		pr_info("flow lookups for other nodes on %s://%s%s (port %u)%s\n",
			https ? "https" : "http", o->peer_listen, PEER_PATH,
			httpd__port(d->peer_httpd), mtls ? ", client certificates required" : "");
	}
	return 0;
}

/* --peer-service: the other nodes' daemons are the endpoints of a
 * (headless) Service selecting the DaemonSet's pods, as Hubble Relay finds
 * the Hubble servers; they all listen on the port of our --peer-listen. */
static void daemon__peers_discover(struct daemon *d)
{
	const char *self = getenv("POD_IP"), *slash = strchr(d->o->peer_service, '/');
	struct compile_addr *a = NULL;
	char ns[256], **names = NULL;
	size_t n = 0, nn = 0, i, j;
	uint16_t port;

	if (!d->k8s || !d->peer || !k8s__synced(d->k8s) ||
	    k8s__policy_gen(d->k8s) == d->peer_gen)
		return;
	d->peer_gen = k8s__policy_gen(d->k8s);
	snprintf(ns, sizeof(ns), "%.*s", (int)(slash - d->o->peer_service), d->o->peer_service);
	port = d->peer_httpd ? httpd__port(d->peer_httpd) : 0;
	if (k8s__service_addrs(d->k8s, ns, slash + 1, &a, &n) ||
	    (n && !(names = calloc(n, sizeof(*names))))) {
		free(a);
		return;		/* out of memory: the next change tries again */
	}
	for (i = 0; i < n; i++) {
		char ip[64], url[128];

		events__format_addr(a[i].addr, 0, 1, ip, sizeof(ip));
		*strrchr(ip, ':') = '\0';	/* "1.2.3.4" or "[fd00::1]" */
		if (self && (!strcmp(ip, self) ||
			     (ip[0] == '[' && !strncmp(ip + 1, self, strlen(ip) - 2) &&
			      strlen(self) == strlen(ip) - 2)))
			continue;
		for (j = 0; j < nn && strcmp(names[j], ip); j++)
			;
		if (j < nn)
			continue;
		snprintf(url, sizeof(url), "%s://%s:%u", d->o->peer_tls_cert ? "https" : "http", ip,
			 port);
		if (!(names[nn] = strdup(ip)))
			break;
		nn++;
		char msg[256] = "";

		if (peer__set(d->peer, ip, url, msg, sizeof(msg)))
			pr_warn("peer %s: %s\n", url, msg);
	}
	for (i = 0; i < d->npeer_found; i++) {
		for (j = 0; j < nn && strcmp(names[j], d->peer_found[i]); j++)
			;
		if (j == nn)
			peer__del(d->peer, d->peer_found[i]);
		free(d->peer_found[i]);
	}
	free(d->peer_found);
	d->peer_found = names;
	d->npeer_found = nn;
	free(a);
	pr_debug("peers: %zu from service %s\n", nn, d->o->peer_service);
}

static void daemon__peer_prom_one(void *ctx, const struct peer_stats *st)
{
	struct prom *p = ctx;

	prom__sample(p, "sluice_peer_up", st->up ? 1 : 0, "peer", st->name, NULL);
	prom__sample(p, "sluice_peer_requests_total", (double)st->requests, "peer", st->name, NULL);
	prom__sample(p, "sluice_peer_retries_total", (double)st->retries, "peer", st->name, NULL);
	prom__sample(p, "sluice_peer_failures_total", (double)st->failures, "peer", st->name, NULL);
	prom__sample(p, "sluice_peer_errors_total", (double)st->errors_transport, "peer", st->name,
		     "kind", "transport", NULL);
	prom__sample(p, "sluice_peer_errors_total", (double)st->errors_auth, "peer", st->name,
		     "kind", "auth", NULL);
	prom__sample(p, "sluice_peer_errors_total", (double)st->errors_other, "peer", st->name,
		     "kind", "other", NULL);
	prom__sample(p, "sluice_peer_lookups_total", (double)st->found, "peer", st->name,
		     "result", "found", NULL);
	prom__sample(p, "sluice_peer_lookups_total", (double)st->not_found, "peer", st->name,
		     "result", "not_found", NULL);
	prom__sample(p, "sluice_peer_lookups_total", (double)st->unreachable, "peer", st->name,
		     "result", "unreachable", NULL);
	prom__sample(p, "sluice_peer_lookups_total", (double)st->dropped, "peer", st->name,
		     "result", "dropped", NULL);
	prom__sample(p, "sluice_peer_queued", (double)st->queued, "peer", st->name, NULL);
}

static void daemon__peer_prom(struct daemon *d, struct prom *p, const struct corr_stats *cs)
{
	prom__help(p, "sluice_gateway_asked_total", "counter",
		   "Gateway records without a local flow handed to the other nodes.");
	prom__sample(p, "sluice_gateway_asked_total", (double)cs->asked, (char *)NULL);
	prom__help(p, "sluice_gateway_remote_joined_total", "counter",
		   "Of which another node had the flow.");
	prom__sample(p, "sluice_gateway_remote_joined_total", (double)cs->remote_joined, (char *)NULL);
	prom__help(p, "sluice_peer_lookups_served_total", "counter",
		   "Lookups of this node's flows by other nodes.");
	prom__sample(p, "sluice_peer_lookups_served_total", (double)cs->lookups_found, "result",
		     "found", NULL);
	prom__sample(p, "sluice_peer_lookups_served_total",
		     (double)(cs->lookups - cs->lookups_found), "result", "not_found", NULL);
	prom__help(p, "sluice_peer_requests_refused_total", "counter",
		   "Lookup requests refused: bad token, or not a valid request.");
	prom__sample(p, "sluice_peer_requests_refused_total", (double)d->peer_unauthorized,
		     "reason", "unauthorized", NULL);
	prom__sample(p, "sluice_peer_requests_refused_total", (double)d->peer_bad_requests,
		     "reason", "bad_request", NULL);
	if (!d->peer)
		return;
	prom__help(p, "sluice_peer_up", "gauge", "The peer answered the last request.");
	prom__help(p, "sluice_peer_requests_total", "counter", "Lookup requests sent, by peer.");
	prom__help(p, "sluice_peer_retries_total", "counter", "Of which repeats after a failure.");
	prom__help(p, "sluice_peer_failures_total", "counter",
		   "Batches given up after every attempt (their records count as unreachable).");
	prom__help(p, "sluice_peer_errors_total", "counter", "Failed requests, by kind.");
	prom__help(p, "sluice_peer_lookups_total", "counter", "Lookups, by peer and result.");
	prom__help(p, "sluice_peer_queued", "gauge", "Lookups waiting to be sent.");
	peer__stats(d->peer, daemon__peer_prom_one, p);
}

/* ---------------------------------------------------------- control */

static cJSON *daemon__policies_json(struct daemon *d)
{
	cJSON *arr = cJSON_CreateArray();
	size_t i, j;

	for (i = 0; i < d->nfiles; i++) {
		struct pfile *f = &d->files[i];
		cJSON *o = cJSON_CreateObject(), *docs = cJSON_AddArrayToObject(o, "policies");

		cJSON_AddStringToObject(o, "file", f->name);
		cJSON_AddStringToObject(o, "state", f->errors ? (f->has_good ? "error-kept-last-good" :
							      "error") : "ok");
		if (f->errors)
			cJSON_AddStringToObject(o, "errors", f->errors);
		for (j = 0; j < f->good.ndocs; j++) {
			const struct pol_doc *doc = &f->good.docs[j];
			cJSON *p = cJSON_CreateObject(), *cg;
			char id[160];
			size_t k;

			cJSON_AddStringToObject(p, "name", policy__doc_id(doc, id, sizeof(id)));
			cJSON_AddStringToObject(p, "kind", doc->kind == POL_CLUSTER ?
						"ClusterAgentPolicy" : "AgentPolicy");
			cJSON_AddStringToObject(p, "mode", doc->mode == POL_AUDIT ? "audit" : "enforce");
			cJSON_AddNumberToObject(p, "rules", doc->negress);
			cg = cJSON_AddArrayToObject(p, "cgroupPaths");
			for (k = 0; k < doc->ncgroup_paths; k++)
				cJSON_AddItemToArray(cg, cJSON_CreateString(doc->cgroup_paths[k]));
			if (!doc->ncgroup_paths)
				cJSON_AddStringToObject(p, "note", "podSelector only: selects pods as a "
							"Kubernetes object, never from a file");
			cJSON_AddItemToArray(docs, p);
		}
		cJSON_AddItemToArray(arr, o);
	}
	return arr;
}

static void daemon__send_json(int fd, cJSON *j)
{
	char *s = cJSON_PrintUnformatted(j);

	if (s) {
		if (write(fd, s, strlen(s)) < 0 || write(fd, "\n", 1) < 0) {}
		free(s);
	}
}

static void daemon__control(struct daemon *d)
{
	struct timeval tv = { .tv_sec = 1 };
	char req[1024];
	cJSON *r, *cmd, *out;
	ssize_t n;
	int fd;
	size_t i, len;

	fd = accept4(d->ctl_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return;
	/* One short request per connection; a client that does not send it
	 * in time is dropped rather than allowed to stall the loop. */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	/* Read up to the request's '\n': answering and closing before the
	 * client's last write has landed would hit it with EPIPE/SIGPIPE. */
	for (len = 0; len < sizeof(req) - 1 && !memchr(req, '\n', len); len += n)
		if ((n = read(fd, req + len, sizeof(req) - 1 - len)) <= 0)
			break;
	if (!len) {
		close(fd);
		return;
	}
	req[len] = '\0';
	r = cJSON_Parse(req);
	cmd = r ? cJSON_GetObjectItem(r, "cmd") : NULL;
	if (!cJSON_IsString(cmd)) {
		out = cJSON_CreateObject();
		cJSON_AddStringToObject(out, "error", "bad request: want {\"cmd\": ...}");
		daemon__send_json(fd, out);
		cJSON_Delete(out);
	} else if (!strcmp(cmd->valuestring, "policies")) {
		out = cJSON_CreateObject();
		if (d->o->policy_dir)
			cJSON_AddStringToObject(out, "policy_dir", d->o->policy_dir);
		cJSON_AddItemToObject(out, "files", daemon__policies_json(d));
		if (d->k8s)
			cJSON_AddItemToObject(out, "objects", k8s__policies_json(d->k8s));
		daemon__send_json(fd, out);
		cJSON_Delete(out);
	} else if (!strcmp(cmd->valuestring, "daemon")) {
		struct sink_stats ss = {};

		out = cJSON_CreateObject();
		cJSON_AddNumberToObject(out, "pid", getpid());
		cJSON_AddNumberToObject(out, "uptime_s", (double)(now_mono() - d->start_ns) / 1e9);
		if (d->o->policy_dir)
			cJSON_AddStringToObject(out, "policy_dir", d->o->policy_dir);
		cJSON_AddBoolToObject(out, "kubernetes", d->k8s != NULL);
		cJSON_AddBoolToObject(out, "ready", d->ready);
		cJSON_AddNumberToObject(out, "events_read", (double)d->events_read);
		cJSON_AddNumberToObject(out, "identities", (double)d->identities);
		cJSON_AddNumberToObject(out, "policy_load_errors", (double)d->policy_load_errors);
		if (d->sink) {
			sink__stats(d->sink, &ss);
			cJSON_AddNumberToObject(out, "events_written", (double)ss.written);
			cJSON_AddNumberToObject(out, "events_dropped_sink_full", (double)ss.dropped_full);
			cJSON_AddNumberToObject(out, "events_dropped_sink_error", (double)ss.dropped_error);
		}
		daemon__send_json(fd, out);
		cJSON_Delete(out);
	} else if (!strcmp(cmd->valuestring, "flows")) {
		cJSON *follow = cJSON_GetObjectItem(r, "follow");

		for (i = 0; i < RECENT_FLOWS; i++) {
			const char *l = d->recent[(d->recent_next + i) % RECENT_FLOWS];

			if (l && (write(fd, l, strlen(l)) < 0 || write(fd, "\n", 1) < 0))
				break;
		}
		if (cJSON_IsTrue(follow) && d->nfollowers < MAX_FOLLOWERS) {
			fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
			d->followers[d->nfollowers++] = fd;
			fd = -1;
		}
	} else {
		out = cJSON_CreateObject();
		cJSON_AddStringToObject(out, "error", "unknown command");
		daemon__send_json(fd, out);
		cJSON_Delete(out);
	}
	cJSON_Delete(r);
	if (fd >= 0)
		close(fd);
}

/* ---------------------------------------------------------- metrics */

static int daemon__metrics(void *ctx, const struct httpd_request *req, struct httpd_response *resp)
{
	struct daemon *d = ctx;
	uint64_t c[SL_CNT_MAX] = {}, t[SL_CNT_MAX] = {};
	struct sink_stats ss = {};
	struct prom p = {};
	uint32_t r;
	size_t i;

	for (r = 0; r < SL_MAX_RINGS; r++)
		if (!datapath__counters(&d->dp, r, c))
			for (i = 0; i < SL_CNT_MAX; i++)
				t[i] += c[i];
	if (d->sink)
		sink__stats(d->sink, &ss);

	prom__help(&p, "sluice_build_info", "gauge", "Build information.");
	prom__sample(&p, "sluice_build_info", 1, "version", SLUICE_VERSION, NULL);
	prom__help(&p, "sluice_verdicts_total", "counter",
		   "Verdicts seen in the event stream, by policy, rule, class and verdict.");
	for (i = 0; i < 256; i++) {
		struct vcount *v;

		for (v = d->vcounts[i]; v; v = v->next) {
			char k[200], *f[4];
			int n;

			/* split on \x1f by hand: strtok would merge empty fields */
			snprintf(k, sizeof(k), "%s", v->key);
			f[0] = k;
			for (n = 1; n < 4; n++) {
				char *sep = f[n - 1] ? strchr(f[n - 1], '\x1f') : NULL;

				f[n] = sep ? sep + 1 : "";
				if (sep)
					*sep = '\0';
			}
			prom__sample(&p, "sluice_verdicts_total", (double)v->n, "policy", f[0], "rule",
				     f[1], "class", f[2], "verdict", f[3], NULL);
		}
	}
	prom__help(&p, "sluice_kernel_verdicts_total", "counter",
		   "Verdicts counted by the kernel (every reader), by verdict.");
	prom__sample(&p, "sluice_kernel_verdicts_total", (double)t[SL_CNT_ALLOW], "verdict", "allow", NULL);
	prom__sample(&p, "sluice_kernel_verdicts_total", (double)t[SL_CNT_DENY], "verdict", "deny", NULL);
	prom__sample(&p, "sluice_kernel_verdicts_total", (double)t[SL_CNT_AUDIT], "verdict", "audit", NULL);
	prom__help(&p, "sluice_events_lost_total", "counter", "Flow events lost, by reason.");
	if (!datapath__counters(&d->dp, 0, c)) {
		prom__sample(&p, "sluice_events_lost_total", (double)c[SL_CNT_EV_LOST_FULL], "reason",
			     "ring_full", NULL);
		prom__sample(&p, "sluice_events_lost_total", (double)c[SL_CNT_EV_LOST_NORING], "reason",
			     "no_reader", NULL);
	}
	prom__sample(&p, "sluice_events_lost_total", (double)ss.dropped_full, "reason", "sink_full", NULL);
	prom__sample(&p, "sluice_events_lost_total", (double)ss.dropped_error, "reason", "sink_error", NULL);
	prom__sample(&p, "sluice_events_lost_total", (double)d->follower_drops, "reason",
		     "slow_follower", NULL);
	prom__sample(&p, "sluice_events_lost_total", (double)d->events_render_fail, "reason",
		     "render", NULL);
	prom__help(&p, "sluice_events_read_total", "counter", "Records read from the daemon's ring.");
	prom__sample(&p, "sluice_events_read_total", (double)d->events_read, (char *)NULL);
	prom__help(&p, "sluice_ring_fill_bytes", "gauge", "Bytes waiting in the daemon's ring buffer.");
	if (d->ring_cons && d->ring_prod) {
		uint64_t cons = __atomic_load_n((uint64_t *)d->ring_cons, __ATOMIC_ACQUIRE);
		uint64_t prod = __atomic_load_n((uint64_t *)d->ring_prod, __ATOMIC_ACQUIRE);

		prom__sample(&p, "sluice_ring_fill_bytes", (double)(prod - cons), (char *)NULL);
	}
	prom__help(&p, "sluice_ring_size_bytes", "gauge", "Size of the daemon's ring buffer.");
	prom__sample(&p, "sluice_ring_size_bytes", (double)SL_RING_SIZE, (char *)NULL);
	prom__help(&p, "sluice_policy_load_errors_total", "counter", "Policy files rejected.");
	prom__sample(&p, "sluice_policy_load_errors_total", (double)d->policy_load_errors, (char *)NULL);
	prom__help(&p, "sluice_policy_files", "gauge", "Policy files by state.");
	{
		uint64_t ok = 0, bad = 0;

		for (i = 0; i < d->nfiles; i++)
			d->files[i].errors ? bad++ : ok++;
		prom__sample(&p, "sluice_policy_files", (double)ok, "state", "ok", NULL);
		prom__sample(&p, "sluice_policy_files", (double)bad, "state", "error", NULL);
	}
	prom__help(&p, "sluice_identities", "gauge", "Registered identities.");
	prom__sample(&p, "sluice_identities", (double)d->identities, (char *)NULL);
	if (d->gw)
		gwsrc__prom(d->gw, &p);
	if (d->corr) {
		struct corr_stats cs;
		int f;

		correlate__stats(d->corr, &cs);
		prom__help(&p, "sluice_gateway_joined_total", "counter",
			   "Gateway records joined with the kernel's flow.");
		prom__sample(&p, "sluice_gateway_joined_total", (double)cs.joined, (char *)NULL);
		prom__help(&p, "sluice_findings_total", "counter", "Findings, by kind.");
		for (f = 0; f < CORR_F_MAX; f++)
			prom__sample(&p, "sluice_findings_total", (double)cs.findings[f], "finding",
				     correlate__finding_name(f), NULL);
		prom__help(&p, "sluice_gateway_flows", "gauge", "Flows to gateway listeners kept.");
		prom__sample(&p, "sluice_gateway_flows", (double)cs.flows, (char *)NULL);
		prom__help(&p, "sluice_gateway_flows_evicted_total", "counter",
			   "Flows dropped because the table was full.");
		prom__sample(&p, "sluice_gateway_flows_evicted_total",
			     (double)(cs.evicted_closed + cs.evicted_open), (char *)NULL);
		daemon__peer_prom(d, &p, &cs);
	}
	prom__help(&p, "sluice_reconciles_total", "counter", "Policy reconcile rounds.");
	prom__sample(&p, "sluice_reconciles_total", (double)d->reconciles, (char *)NULL);
	prom__help(&p, "sluice_policy_set_updates_total", "counter",
		   "Policy sets brought up to date after a change: in place (patch: only "
		   "the difference written) or by a new set the identities flip to (replace: "
		   "a rule's name changed, or a patch failed).");
	prom__sample(&p, "sluice_policy_set_updates_total", (double)d->set_patches, "how",
		     "patch", (char *)NULL);
	prom__sample(&p, "sluice_policy_set_updates_total", (double)d->set_replacements, "how",
		     "replace", (char *)NULL);
	return prom__finish(&p, resp);
}

/* ---------------------------------------------------------- loop */

static void daemon__removal_defer(struct daemon *d, const char *name)
{
	struct itimerspec its = { .it_value = { 0, REMOVAL_DELAY_MS * 1000000L } };
	size_t i;

	for (i = 0; i < d->nremovals; i++)
		if (!strcmp(d->removals[i], name))
			break;
	if (i == d->nremovals) {
		if (d->nremovals == 64) {
			daemon__file_drop(d, name);	/* a mass removal: no grace */
			return;
		}
		d->removals[d->nremovals] = strdup(name);
		if (d->removals[d->nremovals])
			d->nremovals++;
	}
	timerfd_settime(d->tfd_removal, 0, &its, NULL);
}

static void daemon__removals(struct daemon *d)
{
	size_t i;

	for (i = 0; i < d->nremovals; i++) {
		char path[PATH_MAX];

		snprintf(path, sizeof(path), "%s/%s", d->o->policy_dir, d->removals[i]);
		if (access(path, F_OK))
			daemon__file_drop(d, d->removals[i]);
		else
			daemon__file_load(d, d->removals[i]);
		free(d->removals[i]);
	}
	d->nremovals = 0;
}

static void daemon__inotify(struct daemon *d)
{
	char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;
	char *p;

	while ((n = read(d->ifd, buf, sizeof(buf))) > 0) {
		for (p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;

			p += sizeof(*ev) + ev->len;
			if (ev->wd == d->policy_wd) {
				if (!ev->len || !daemon__policy_name(ev->name))
					continue;
				if (ev->mask & (IN_DELETE | IN_MOVED_FROM))
					daemon__removal_defer(d, ev->name);
				else
					daemon__file_load(d, ev->name);
				continue;
			}
			if (ev->mask & (IN_DELETE_SELF | IN_IGNORED)) {
				for (size_t i = 0; i < d->nwatches; i++)
					if (d->watches[i].wd == ev->wd) {
						free(d->watches[i].path);
						d->watches[i] = d->watches[--d->nwatches];
						break;
					}
			}
			/* a cgroup came or went below a watched directory */
			d->dirty = true;
		}
	}
}

static void daemon__k8s_changed(void *ctx)
{
	struct daemon *d = ctx;

	d->dirty = true;
}

static void daemon__add_fd(struct daemon *d, int fd, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.fd = fd };

	epoll_ctl(d->epfd, EPOLL_CTL_ADD, fd, &ev);
}

static void daemon__map_ring(struct daemon *d)
{
	long page = sysconf(_SC_PAGESIZE);

	d->ring_cons = mmap(NULL, page, PROT_READ, MAP_SHARED, d->ring_fd, 0);
	d->ring_prod = mmap(NULL, page, PROT_READ, MAP_SHARED, d->ring_fd, page);
	if (d->ring_cons == MAP_FAILED)
		d->ring_cons = NULL;
	if (d->ring_prod == MAP_FAILED)
		d->ring_prod = NULL;
}

static int daemon__setup(struct daemon *d)
{
	struct datapath_opts dopts = {
		.pin_path = d->o->pin_path,
		.cgroup_root = d->o->cgroup_root,
		.observe_all = d->o->observe_all,
		.upgrade = true,
	};
	__u32 zero = 0;
	sigset_t mask;
	int err;

	/* Freed memory is given back by the trim after reconciles, not by
	 * free() whenever the heap's free top passes 128 KiB: that made each
	 * change fault its pages in anew. (Large buffers stay mmap'd: kept in
	 * the heap, they left the daemon 0.7 MiB larger when idle.) */
	mallopt(M_TRIM_THRESHOLD, 256 << 20);
	d->start_ns = now_mono();
	if ((err = cgroup__mount(d->mount, sizeof(d->mount)))) {
		pr_err("no cgroup2 mount found in /proc/self/mountinfo\n");
		return err;
	}
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	d->sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	d->epfd = epoll_create1(EPOLL_CLOEXEC);
	d->ifd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	d->tfd_fqdn = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	d->tfd_house = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	d->tfd_removal = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (d->sfd < 0 || d->epfd < 0 || d->ifd < 0 || d->tfd_fqdn < 0 || d->tfd_house < 0 ||
	    d->tfd_removal < 0)
		return -errno;

	d->fqdn = fqdn__new(d->o->resolv_conf, 0, 0);
	if (!d->fqdn) {
		pr_err("cannot set up the resolver: %s\n", strerror(errno));
		return -errno;
	}
	if (d->o->events_path) {
		struct sink_opts so = {
			.path = d->o->events_path,
			.max_size = d->o->events_max_size,
			.keep = d->o->events_keep,
		};

		if ((err = sink__open(&so, &d->sink))) {
			pr_err("cannot open event sink %s: %s\n", d->o->events_path, strerror(-err));
			return err;
		}
	}
	d->ctl_fd = control__listen(d->o->control_path);
	if (d->ctl_fd < 0) {
		err = d->ctl_fd;
		pr_err("cannot listen on %s: %s%s\n", d->o->control_path, strerror(-err),
		       err == -EADDRINUSE ? " (another sluiced is running)" : "");
		return err;
	}

	/* Adopt or load; never detach what is there. */
	err = datapath__open(&d->dp, &dopts);
	if (err)
		return err;
	d->dp_open = true;
	/* The node's datapath outlives the daemon: SIGTERM keeps it. */
	d->dp.keep = true;
	if ((err = events__render_init(&d->render, &d->dp, d->o->node)))
		return err;
	/* Ring slot 0 is the daemon's; a previous daemon's ring goes with it. */
	d->ring_fd = bpf_map_create(BPF_MAP_TYPE_RINGBUF, "sl_ring_daemon", 0, 0, SL_RING_SIZE, NULL);
	if (d->ring_fd < 0 ||
	    bpf_map_update_elem(d->dp.map_fd[DP_RINGS], &zero, &d->ring_fd, BPF_ANY)) {
		pr_err("cannot install the daemon's event ring: %s\n", strerror(errno));
		return -errno;
	}
	d->rb = ring_buffer__new(d->ring_fd, daemon__on_event, d, NULL);
	if (!d->rb)
		return -errno;
	daemon__map_ring(d);

	{
		struct corr_opts co;
		struct gwsrc_opts go = {
			.paths = d->o->gateway_logs,
			.npaths = d->o->ngateway_logs,
			.format = GW_AUTO,
			.keymap = d->o->gateway_keymap,
			.state_dir = d->o->state_dir,
		};
		char msg[512] = "";
		size_t i;

		correlate__opts_default(&co);
		co.node = d->render.node;
		co.jwt_claim = d->o->jwt_claim;
		d->corr = correlate__new(&co, daemon__corr_emit, d);
		if (!d->corr)
			return -errno;
		for (i = 0; i < d->o->ngateway_addrs; i++) {
			struct gw_record tmp = {};
			const char *a = d->o->gateway_addrs[i];

			if (gateway__parse_peer(a, strlen(a), &tmp)) {
				pr_err("--gateway-addr %s: want IP:PORT or [IPv6]:PORT\n", a);
				return -EINVAL;
			}
			correlate__gateway_addr(d->corr, tmp.peer_addr, tmp.peer_port);
		}
		daemon__recover_flows(d);
		if (d->o->gateway_format && !strcmp(d->o->gateway_format, "agentgateway"))
			go.format = GW_AGENTGATEWAY;
		else if (d->o->gateway_format && !strcmp(d->o->gateway_format, "envoy"))
			go.format = GW_ENVOY;
		if (go.state_dir && mkdir(go.state_dir, 0700) && errno != EEXIST) {
			pr_err("cannot create %s: %s\n", go.state_dir, strerror(errno));
			return -errno;
		}
		err = gwsrc__new(&go, daemon__gw_record, d, &d->gw, msg, sizeof(msg));
		if (err) {
			pr_err("%s\n", msg[0] ? msg : strerror(-err));
			return err;
		}
		d->tfd_gw = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
		if (d->tfd_gw < 0)
			return -errno;
		{
			struct itimerspec its = { .it_interval = { 0, 250000000 },
						  .it_value = { 0, 250000000 } };

			timerfd_settime(d->tfd_gw, 0, &its, NULL);
		}
		daemon__add_fd(d, d->tfd_gw, EPOLLIN);
	}

	if (d->o->kubernetes) {
		struct k8s_opts ko = {
			.node = d->o->node,
			.kubeconfig = d->o->kubeconfig,
			.sa_dir = d->o->kube_sa_dir,
			.stall_ms = d->o->kube_stall_ms,
		};
		char msg[512] = "";

		err = k8s__start(&ko, daemon__k8s_changed, d, &d->k8s, msg, sizeof(msg));
		if (err) {
			pr_err("kubernetes: %s\n", msg[0] ? msg : strerror(-err));
			return err;
		}
		d->render.workload = daemon__workload;
		d->render.workload_ctx = d;
		daemon__add_fd(d, k8s__fd(d->k8s), EPOLLIN);
	}

	if (d->o->metrics_addr) {
		char msg[256] = "";

		err = httpd__start(d->o->metrics_addr, &d->httpd, msg, sizeof(msg));
		if (err) {
			pr_err("cannot serve metrics on %s: %s\n", d->o->metrics_addr,
			       msg[0] ? msg : strerror(-err));
			return err;
		}
		httpd__handle(d->httpd, "GET", "/metrics", daemon__metrics, d);
		/* gateways can ship their access log over OTLP/HTTP (JSON) */
		httpd__handle(d->httpd, "POST", "/v1/logs", daemon__otlp, d);
		daemon__add_fd(d, httpd__fd(d->httpd), EPOLLIN);
		pr_info("metrics on http://%s/metrics (port %u)\n", d->o->metrics_addr,
			httpd__port(d->httpd));
	}
	if ((err = daemon__peer_setup(d)))
		return err;

	d->policy_wd = !d->o->policy_dir ? -1 : inotify_add_watch(d->ifd, d->o->policy_dir,
					 IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE |
					 IN_ONLYDIR);
	if (d->o->policy_dir && d->policy_wd < 0) {
		pr_err("cannot watch policy directory %s: %s\n", d->o->policy_dir, strerror(errno));
		return -errno;
	}
	if (d->o->policy_dir)
		daemon__load_dir(d);
	daemon__reconcile(d);
	datapath__gc(&d->dp);
	/* In a cluster, ready means the first lists are in force. */
	d->ready = !d->k8s;
	if (d->httpd)
		httpd__set_ready(d->httpd, d->ready);

	daemon__add_fd(d, d->sfd, EPOLLIN);
	daemon__add_fd(d, d->ifd, EPOLLIN);
	daemon__add_fd(d, d->tfd_fqdn, EPOLLIN);
	daemon__add_fd(d, d->tfd_house, EPOLLIN);
	daemon__add_fd(d, d->tfd_removal, EPOLLIN);
	daemon__add_fd(d, d->ctl_fd, EPOLLIN);
	daemon__add_fd(d, ring_buffer__epoll_fd(d->rb), EPOLLIN);
	{
		struct itimerspec its = { .it_interval = { HOUSEKEEP_S, 0 }, .it_value = { HOUSEKEEP_S, 0 } };

		timerfd_settime(d->tfd_house, 0, &its, NULL);
	}
	fqdn__arm_timerfd(d->fqdn, d->tfd_fqdn);
	pr_info("sluiced ready: %zu policy file(s), %llu identities, pins at %s\n", d->nfiles,
		(unsigned long long)d->identities, d->dp.pin_path);
	return 0;
}

static void daemon__loop(struct daemon *d)
{
	struct epoll_event evs[16];
	int n, i, timeout;

	while (!d->stop) {
		timeout = d->httpd ? httpd__timeout_ms(d->httpd) : -1;
		/* the programs wake us only for a filling ring: poll */
		if (timeout < 0 || timeout > SL_READER_POLL_MS)
			timeout = SL_READER_POLL_MS;
		n = epoll_wait(d->epfd, evs, 16, timeout);
		if (n < 0 && errno != EINTR)
			break;
		if (n == 0) {
			d->batch = 0;
			ring_buffer__consume(d->rb);
		}
		for (i = 0; i < n; i++) {
			int fd = evs[i].data.fd;

			if (fd == d->sfd) {
				struct signalfd_siginfo si;

				while (read(d->sfd, &si, sizeof(si)) == sizeof(si)) {
					if (si.ssi_signo == SIGHUP) {
						if (d->sink)
							sink__reopen(d->sink);
						if (d->o->policy_dir)
							daemon__load_dir(d);
						d->dirty = true;
					} else {
						d->stop = true;
					}
				}
			} else if (fd == d->ifd) {
				daemon__inotify(d);
			} else if (fd == d->tfd_fqdn) {
				uint64_t x;
				bool changed = false;

				if (read(fd, &x, sizeof(x)) < 0) {}
				fqdn__refresh_due(d->fqdn, now_mono(), &changed);
				if (changed) {
					/* new addresses: every set is rebuilt and flipped */
					for (size_t k = 0; k < d->nsets; k++)
						d->sets[k].stale = true;
					d->dirty = true;
				}
				fqdn__arm_timerfd(d->fqdn, d->tfd_fqdn);
			} else if (fd == d->tfd_gw) {
				uint64_t x;
				struct timespec rt;

				if (read(fd, &x, sizeof(x)) < 0) {}
				gwsrc__poll(d->gw);
				clock_gettime(CLOCK_REALTIME, &rt);
				correlate__tick(d->corr, (uint64_t)rt.tv_sec * 1000000000ULL + rt.tv_nsec);
				/* positions kept every ~2 s: a restart re-reads at most that */
				if (++d->gw_ticks % 8 == 0)
					gwsrc__save(d->gw);
			} else if (fd == d->tfd_removal) {
				uint64_t x;

				if (read(fd, &x, sizeof(x)) < 0) {}
				daemon__removals(d);
			} else if (fd == d->tfd_house) {
				uint64_t x;

				if (read(fd, &x, sizeof(x)) < 0) {}
				datapath__gc(&d->dp);
				d->dirty = true;
			} else if (fd == d->ctl_fd) {
				daemon__control(d);
			} else if (d->k8s && fd == k8s__fd(d->k8s)) {
				k8s__run(d->k8s);
				if (d->o->peer_service)
					daemon__peers_discover(d);
			} else if (d->httpd && fd == httpd__fd(d->httpd)) {
				httpd__run(d->httpd);
			} else if (d->peer_httpd && fd == httpd__fd(d->peer_httpd)) {
				httpd__run(d->peer_httpd);
			} else if (d->peer && fd == peer__fd(d->peer)) {
				peer__run(d->peer);
			} else {
				d->batch = 0;
				ring_buffer__consume(d->rb);
			}
		}
		if (d->httpd && n == 0)
			httpd__run(d->httpd);
		if (d->peer_httpd && n == 0)
			httpd__run(d->peer_httpd);
		if (d->dirty)
			daemon__reconcile(d);
		if (!d->ready && d->k8s && k8s__synced(d->k8s)) {
			daemon__reconcile(d);
			d->ready = true;
			if (d->httpd)
				httpd__set_ready(d->httpd, true);
			pr_info("kubernetes: synced; %zu selected pod(s) on node %s\n", d->npods,
				d->o->node);
		}
		if (d->sink)
			sink__flush(d->sink);
		if (d->trim_at && now_mono() >= d->trim_at) {
			malloc_trim(0);
			d->trim_at = 0;
		}
	}
}

static void daemon__teardown(struct daemon *d)
{
	size_t i;
	__u32 zero = 0;

	if (d->rb) {
		int i2 = 0;

		/* drain what is there, batch after batch, bounded */
		do
			d->batch = 0;
		while (ring_buffer__consume(d->rb) == -EAGAIN && ++i2 < 1024);
		ring_buffer__free(d->rb);
	}
	/* The last gateway lines and their records go out before the sink
	 * closes; positions are kept only once their records are written. */
	if (d->gw) {
		gwsrc__poll(d->gw);
		gwsrc__save(d->gw);
		gwsrc__free(d->gw);
		d->gw = NULL;
	}
	if (d->peer) {
		size_t n = peer__waiting(d->peer);

		if (n)
			pr_info("peers: %zu gateway record(s) still waiting for other nodes "
				"at exit, not declared\n", n);
		peer__free(d->peer);
		d->peer = NULL;
	}
	if (d->peer_httpd) {
		httpd__stop(d->peer_httpd);
		d->peer_httpd = NULL;
	}
	free(d->peer_token.data);
	free(d->peer_token_prev);
	for (i = 0; i < d->npeer_found; i++)
		free(d->peer_found[i]);
	free(d->peer_found);
	if (d->corr) {
		correlate__free(d->corr);
		d->corr = NULL;
	}
	if (d->sink) {
		sink__flush_blocking(d->sink, 2000);
		sink__close(d->sink);
		d->sink = NULL;
	}
	for (i = 0; i < d->nfollowers; i++)
		close(d->followers[i]);
	d->nfollowers = 0;
	if (d->httpd)
		httpd__stop(d->httpd);
	if (d->tfd_gw > 0)
		close(d->tfd_gw);
	if (d->k8s)
		k8s__stop(d->k8s);
	for (i = 0; i < d->npods; i++)
		cJSON_Delete(d->pods[i].containers);
	free(d->pods);
	if (d->ctl_fd > 0) {
		close(d->ctl_fd);
		unlink(d->o->control_path);
	}
	if (d->dp_open) {
		if (d->o->detach_on_exit) {
			pr_info("--detach-on-exit: removing the datapath at %s\n", d->dp.pin_path);
			datapath__destroy(d->dp.pin_path);
		} else {
			/* Enforcement stays: the next sluiced adopts it. Only
			 * the ring goes, and its events are counted as lost. */
			bpf_map_delete_elem(d->dp.map_fd[DP_RINGS], &zero);
			pr_info("exiting; enforcement stays in place (pins at %s)\n", d->dp.pin_path);
		}
		datapath__release(&d->dp);
	}
	for (i = 0; i < d->nsets; i++)
		daemon__set_free(&d->sets[i]);
	free(d->sets);
	for (i = 0; i < d->nfiles; i++) {
		policy__set_free(&d->files[i].good);
		free(d->files[i].errors);
		free(d->files[i].name);
	}
	free(d->files);
	for (i = 0; i < d->nwatches; i++)
		free(d->watches[i].path);
	for (i = 0; i < d->nremovals; i++)
		free(d->removals[i]);
	for (i = 0; i < RECENT_FLOWS; i++)
		free(d->recent[i]);
	for (i = 0; i < 256; i++)
		while (d->vcounts[i]) {
			struct vcount *v = d->vcounts[i];

			d->vcounts[i] = v->next;
			free(v);
		}
	events__render_free(&d->render);
	if (d->fqdn)
		fqdn__free(d->fqdn);
}

int daemon__run(const struct daemon_opts *opts)
{
	struct daemon *d = calloc(1, sizeof(*d));
	int err;

	if (!d)
		return 1;
	d->o = opts;
	d->ctl_fd = -1;
	err = daemon__setup(d);
	if (!err)
		daemon__loop(d);
	daemon__teardown(d);
	free(d);
	return err ? 1 : 0;
}
