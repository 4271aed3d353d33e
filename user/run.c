// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sluice run: one command under a policy, without a cluster or a daemon.
 *
 * The order matters: the cgroup exists and is registered with its policy
 * set before CMD is moved into it, so CMD's very first socket is governed.
 * On exit everything added is removed again; on SIGKILL nothing is, and the
 * enforcement stays in place (the next loader garbage-collects it once CMD
 * is gone too).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <bpf/libbpf.h>
#include "cgroup.h"
#include "cli.h"
#include "compile.h"
#include "datapath.h"
#include "events.h"
#include "fqdn.h"
#include "log.h"
#include "policy.h"

struct run {
	/* options */
	const char *policy_files[64];
	int npolicy_files;
	bool audit;
	const char *events_path;
	const char *pin_path;
	const char *cgroup_root;
	const char *resolv_conf;
	const char *node;
	const char *user;
	char **cmd;

	/* state */
	struct pol_set pols;
	struct fqdn_cache *fqdn;
	struct datapath dp;
	bool dp_open;
	char cg_path[PATH_MAX];
	bool cg_made;
	uint64_t cgid;
	uint32_t ring;
	int ring_fd;
	struct ring_buffer *rb;
	uint32_t set_id;
	struct dp_set_state st;	/* what set_id holds, for patches */
	uint32_t flags;
	bool registered;
	bool patched;		/* the last apply wrote into the set in force */
	bool half;		/* ... or failed to, halfway, and could not replace it */
	struct events_render render;
	FILE *events;
	uint64_t nevents, nwrite_fail, nreported, nunreported;
	pid_t child;
	int child_status;
	bool child_done;
};

static void run__usage(FILE *f)
{
	fprintf(f,
"usage: sluice run [--policy FILE]... [--audit] [--events PATH|-] [OPTIONS] -- CMD [ARG...]\n"
"\n"
"Run CMD in a new cgroup governed by the given policies: every connect() and\n"
"sendmsg() of CMD and its children is allowed, refused with EPERM or audited by\n"
"the kernel, and reported as an event. Exits with CMD's status.\n"
"\n"
"  --policy FILE        AgentPolicy/ClusterAgentPolicy file (YAML or JSON); all\n"
"                       documents apply to CMD, whatever their selector says.\n"
"                       Without any, CMD may reach nothing but its DNS resolvers.\n"
"  --audit              report what would be denied, refuse nothing\n"
"  --events PATH|-      write flow events as JSON lines to PATH (- = stdout);\n"
"                       without it, refused connections are reported on stderr\n"
"  --pin-path PATH      BPF pin directory (default %s)\n"
"  --cgroup-root PATH   cgroup the datapath is attached to and CMD's cgroup is\n"
"                       created below (default: the cgroup2 mount)\n"
"  --resolv-conf FILE   resolvers for fqdn rules and the implicit DNS rule\n"
"                       (default /etc/resolv.conf)\n"
"  --node NAME          node name in events (default: host name)\n"
"  --user USER          run CMD as USER (name or uid) with its groups; without it\n"
"                       CMD runs as root, and root can leave its cgroup or change\n"
"                       the maps: this governs CMD's network, it is no sandbox\n"
"\n"
"SIGHUP reloads the policy files (atomically; a bad file changes nothing).\n"
"SIGINT and SIGTERM are forwarded to CMD.\n"
"  -v, --verbose        debug output, including libbpf's\n",
		SLUICE_DEFAULT_PIN_PATH);
}

static int run__parse(struct run *r, int argc, char **argv)
{
	enum { O_POLICY = 1, O_AUDIT, O_EVENTS, O_PIN, O_CGROOT, O_RESOLV, O_NODE, O_USER, O_HELP };
	static const struct option opts[] = {
		{ "policy", required_argument, NULL, O_POLICY },
		{ "audit", no_argument, NULL, O_AUDIT },
		{ "events", required_argument, NULL, O_EVENTS },
		{ "pin-path", required_argument, NULL, O_PIN },
		{ "cgroup-root", required_argument, NULL, O_CGROOT },
		{ "resolv-conf", required_argument, NULL, O_RESOLV },
		{ "node", required_argument, NULL, O_NODE },
		{ "user", required_argument, NULL, O_USER },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, O_HELP },
		{},
	};
	int c;

	optind = 1;
	/* "+": stop at the first non-option, CMD's own flags are CMD's. */
	while ((c = getopt_long(argc, argv, "+vh", opts, NULL)) != -1) {
		switch (c) {
		case O_POLICY:
			if (r->npolicy_files == 64) {
				fprintf(stderr, "sluice run: at most 64 --policy files\n");
				return -EINVAL;
			}
			r->policy_files[r->npolicy_files++] = optarg;
			break;
		case O_AUDIT: r->audit = true; break;
		case O_EVENTS: r->events_path = optarg; break;
		case O_PIN: r->pin_path = optarg; break;
		case O_CGROOT: r->cgroup_root = optarg; break;
		case O_RESOLV: r->resolv_conf = optarg; break;
		case O_NODE: r->node = optarg; break;
		case O_USER: r->user = optarg; break;
		case 'v': log__set_level(LOG_DEBUG); break;
		case 'h':
		case O_HELP:
			run__usage(stdout);
			exit(0);
		default:
			run__usage(stderr);
			return -EINVAL;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "sluice run: no command given (sluice run [OPTIONS] -- CMD [ARG...])\n");
		return -EINVAL;
	}
	r->cmd = argv + optind;
	return 0;
}

/* Every file is parsed and every problem reported before anything is
 * loaded: a bad policy changes nothing. */
static int run__load_policies(struct run *r)
{
	struct pol_diags diags = {};
	int i, err = 0;

	for (i = 0; i < r->npolicy_files; i++) {
		int e = policy__parse_file(r->policy_files[i], &r->pols, &diags);

		err = err ?: e;
	}
	if (err) {
		policy__print_diags(&diags, stderr);
		fprintf(stderr, "sluice run: invalid policy, nothing was run\n");
	}
	policy__diags_free(&diags);
	return err;
}

static int run__fqdn_cb(void *ctx, const char *fqdn, struct compile_addr **out, size_t *n)
{
	return fqdn__resolve_cb(ctx, fqdn, out, n);
}

static int run__policies_id(const struct pol_set *ps, char *buf, size_t len)
{
	size_t off = 0, i;

	buf[0] = '\0';
	for (i = 0; i < ps->ndocs && off < len; i++) {
		char id[160];

		off += snprintf(buf + off, len - off, "%s%s", i ? "," : "",
				policy__doc_id(&ps->docs[i], id, sizeof(id)));
	}
	return 0;
}

/* A reload whose rules keep their names and mode is written into the set
 * in force, as sluiced does (only the difference, in an order that keeps
 * every lookup at the old or the new verdict). -ESTALE or another error:
 * the caller makes a new set. */
static int run__patch(struct run *r, const struct compiled *c, const char *policies,
		      uint32_t flags)
{
	uint32_t old_nrules = r->st.nrules;
	int err;

	if (!r->set_id || flags != r->flags)
		return -ESTALE;
	err = datapath__set_patch(&r->dp, r->set_id, &r->st, c, policies, NULL);
	if (err) {
		if (err != -ESTALE && err != -ENOENT)	/* names changed; state unknown */
			pr_warn("cannot write the change into policy set %u (%s): making a new set\n",
				r->set_id, strerror(-err));
		return err;
	}
	events__names_add_compiled(&r->render, r->set_id, policies, c, old_nrules);
	return 0;
}

/* Compile the policies and point the identity at the result: written in
 * place when the rules keep their names, else a new set. The old set stays
 * in the maps until the identity no longer names it, so a swap never
 * leaves a moment with neither. */
static int run__apply(struct run *r)
{
	const struct pol_doc **docs = NULL;
	struct compile_input in = {
		.resolve = run__fqdn_cb,
		.resolve_ctx = r->fqdn,
	};
	struct compiled c = {};
	struct sl_identity id = {};
	struct dp_set_state st = {};
	char err_msg[512] = "", policies[256];
	uint32_t set_id, old = r->set_id;
	size_t i;
	int err;

	fqdn__resolvers(r->fqdn, &in.resolvers, &in.nresolvers);
	docs = calloc(r->pols.ndocs + 1, sizeof(*docs));
	if (!docs)
		return -ENOMEM;
	for (i = 0; i < r->pols.ndocs; i++)
		docs[i] = &r->pols.docs[i];
	in.docs = docs;
	in.ndocs = r->pols.ndocs;
	err = compile__build(&in, &c, err_msg, sizeof(err_msg));
	free(docs);
	if (err) {
		pr_err("cannot compile the policies: %s\n", err_msg[0] ? err_msg : strerror(-err));
		return err;
	}
	if (c.nskipped_services)
		pr_warn("%zu service destination(s) ignored: they need sluiced --kubernetes\n",
			c.nskipped_services);

	run__policies_id(&r->pols, policies, sizeof(policies));
	r->patched = r->half = false;
	err = run__patch(r, &c, policies, c.flags | (r->audit ? SL_IDF_AUDIT : 0));
	if (!err) {
		r->patched = true;
		pr_debug("policy set %u: %zu rules, %zu prefixes, written in place\n", r->set_id,
			 c.nrules, c.nentries);
		goto out;
	}
	/* A patch that failed halfway left a set of neither version in force
	 * until the new set below replaces it. */
	r->half = err != -ESTALE && err != -ENOENT;
	err = datapath__set_add(&r->dp, &c, policies, &set_id, &st);
	if (err)
		goto out;
	events__names_add_compiled(&r->render, set_id, policies, &c, 0);

	id.set_id = set_id;
	id.flags = c.flags | (r->audit ? SL_IDF_AUDIT : 0);
	id.ring = r->ring;
	id.owner_pid = getpid();
	err = datapath__ident_put(&r->dp, r->cgid, &id);
	if (err) {
		pr_err("cannot register cgroup %s: %s\n", r->cg_path, strerror(-err));
		datapath__set_del_state(&r->dp, set_id, &st);
		datapath__set_state_free(&st);
		goto out;
	}
	r->registered = true;
	r->set_id = set_id;
	r->flags = id.flags;
	if (old)
		datapath__set_del_state(&r->dp, old, &r->st);
	datapath__set_state_free(&r->st);
	r->st = st;
	pr_debug("policy set %u: %zu rules, %zu prefixes\n", set_id, c.nrules, c.nentries);
out:
	if (!err)
		r->half = false;
	else if (r->half)
		pr_err("policy set %u holds part of the change: send SIGHUP again\n", old);
	compile__free(&c);
	return err;
}

/* SIGHUP: read the policy files again and swap the set atomically. A bad
 * file is reported and the policies in force stay. */
static void run__reload(struct run *r)
{
	struct pol_set old = r->pols;
	struct pol_diags diags = {};
	int i, err = 0;

	memset(&r->pols, 0, sizeof(r->pols));
	for (i = 0; i < r->npolicy_files; i++) {
		int e = policy__parse_file(r->policy_files[i], &r->pols, &diags);

		err = err ?: e;
	}
	if (!err)
		err = run__apply(r);
	else
		policy__print_diags(&diags, stderr);
	policy__diags_free(&diags);
	if (err) {
		pr_err("reload failed%s\n", r->half ? "" : "; the policies in force are unchanged");
		policy__set_free(&r->pols);
		r->pols = old;
		return;
	}
	policy__set_free(&old);
	fprintf(stderr, "sluice: policies reloaded%s (set %u)\n", r->patched ? " in place" : "",
		r->set_id);
}

static void run__report_deny(struct run *r, const struct sl_event *ev)
{
	const char *rule = events__reserved_rule(ev->rule_id);
	struct sl_rule_meta meta;
	char a[64];

	if (!rule && !datapath__rule_meta(&r->dp, ev->set_id, ev->rule_id, &meta))
		rule = meta.rule;
	if (ev->type == SL_EV_SOCK_CREATE) {
		fprintf(stderr, "sluice: %s raw socket (pid %u, %.16s)\n",
			ev->verdict == SL_VERDICT_DENY ? "refused" : "audit: would refuse",
			ev->pid, ev->comm);
		return;
	}
	events__format_addr(ev->daddr, ev->dport, ev->family == 2, a, sizeof(a));
	fprintf(stderr, "sluice: %s %s to %s (pid %u, %.16s, rule %s)\n",
		ev->verdict == SL_VERDICT_DENY ? "refused" : "audit: would refuse",
		events__type_name(ev->type), a, ev->pid, ev->comm, rule ? rule : "?");
}

static int run__on_event(void *ctx, void *data, size_t size)
{
	struct run *r = ctx;
	const struct sl_event *ev = data;
	char buf[2048];
	int n;

	if (size < sizeof(*ev))
		return 0;
	r->nevents++;
	if (!r->events) {
		/* A command that retries a refused connect in a loop must not
		 * turn stderr into the bottleneck: tell the first few. */
		if (ev->verdict == SL_VERDICT_ALLOW)
			return 0;
		if (r->nreported < 20) {
			run__report_deny(r, ev);
			r->nreported++;
		} else {
			r->nunreported++;
		}
		return 0;
	}
	n = events__render(&r->render, ev, buf, sizeof(buf) - 1);
	if (n < 0) {
		r->nwrite_fail++;
		return 0;
	}
	buf[n++] = '\n';
	if (fwrite(buf, 1, n, r->events) != (size_t)n)
		r->nwrite_fail++;
	return 0;
}

static void run__drain(struct run *r)
{
	ring_buffer__consume(r->rb);
	if (r->events)
		fflush(r->events);
}

/* In the child: become USER (a name or a uid) with its groups. */
static int run__drop_to(const char *user)
{
	struct passwd *pw;
	char *end;
	long uid;

	errno = 0;
	uid = strtol(user, &end, 10);
	pw = (*end || errno) ? getpwnam(user) : getpwuid(uid);
	if (!pw) {
		fprintf(stderr, "sluice run: no such user: %s\n", user);
		return -ENOENT;
	}
	if (initgroups(pw->pw_name, pw->pw_gid) || setgid(pw->pw_gid) || setuid(pw->pw_uid)) {
		fprintf(stderr, "sluice run: cannot become %s: %s\n", user, strerror(errno));
		return -errno;
	}
	return 0;
}

static int run__spawn(struct run *r)
{
	int go[2];
	char c;

	if (pipe2(go, O_CLOEXEC))
		return -errno;
	r->child = fork();
	if (r->child < 0)
		return -errno;
	if (r->child == 0) {
		sigset_t none;

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		close(go[1]);
		/* Wait until the parent has put us in the cgroup: exec'ing
		 * before would let CMD's first sockets escape. */
		if (read(go[0], &c, 1) != 1)
			_exit(127);
		if (r->user && run__drop_to(r->user))
			_exit(127);
		execvp(r->cmd[0], r->cmd);
		fprintf(stderr, "sluice run: cannot execute %s: %s\n", r->cmd[0], strerror(errno));
		_exit(127);
	}
	close(go[0]);
	if (cgroup__attach_pid(r->cg_path, r->child)) {
		int err = -errno;

		pr_err("cannot move the command into %s: %s\n", r->cg_path, strerror(errno));
		close(go[1]);
		return err;
	}
	c = 1;
	if (write(go[1], &c, 1) != 1) {
		close(go[1]);
		return -EIO;
	}
	close(go[1]);
	return 0;
}

static uint64_t run__now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static int run__loop(struct run *r)
{
	struct epoll_event ev = { .events = EPOLLIN }, evs[4];
	int sfd, tfd, efd, n, i;
	sigset_t mask;

	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGHUP);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	efd = epoll_create1(EPOLL_CLOEXEC);
	if (sfd < 0 || tfd < 0 || efd < 0)
		return -errno;
	ev.data.fd = sfd;
	epoll_ctl(efd, EPOLL_CTL_ADD, sfd, &ev);
	ev.data.fd = tfd;
	epoll_ctl(efd, EPOLL_CTL_ADD, tfd, &ev);
	ev.data.fd = ring_buffer__epoll_fd(r->rb);
	epoll_ctl(efd, EPOLL_CTL_ADD, ev.data.fd, &ev);
	fqdn__arm_timerfd(r->fqdn, tfd);

	while (!r->child_done) {
		/* the programs wake us only for a filling ring: poll */
		n = epoll_wait(efd, evs, 4, SL_READER_POLL_MS);
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0)
			run__drain(r);
		for (i = 0; i < n; i++) {
			if (evs[i].data.fd == sfd) {
				struct signalfd_siginfo si;

				if (read(sfd, &si, sizeof(si)) != sizeof(si))
					continue;
				if (si.ssi_signo == SIGCHLD) {
					if (waitpid(r->child, &r->child_status, WNOHANG) == r->child)
						r->child_done = true;
				} else if (si.ssi_signo == SIGHUP) {
					run__reload(r);
				} else {
					/* Forward: CMD decides how it ends. */
					kill(r->child, si.ssi_signo);
				}
			} else if (evs[i].data.fd == tfd) {
				uint64_t exp;
				bool changed = false;

				if (read(tfd, &exp, sizeof(exp)) < 0) {}
				fqdn__refresh_due(r->fqdn, run__now(), &changed);
				if (changed && run__apply(r) && !r->half)
					pr_warn("keeping the previous addresses after a failed fqdn update\n");
				fqdn__arm_timerfd(r->fqdn, tfd);
			} else {
				run__drain(r);
			}
		}
	}
	/* Close and lifecycle records of CMD's last sockets arrive as the
	 * kernel tears them down: give them a moment. */
	for (i = 0; i < 10; i++) {
		run__drain(r);
		usleep(10000);
	}
	run__drain(r);
	close(efd);
	close(tfd);
	close(sfd);
	return 0;
}

static void run__cleanup(struct run *r)
{
	uint64_t cnt[SL_CNT_MAX];

	int err;

	/* What CMD left behind goes first, while the identity still governs
	 * it: removing the identity first would let it connect anywhere. */
	if (r->cg_made && (err = cgroup__remove(r->cg_path))) {
		pr_warn("cgroup %s not removed (%s): its identity stays so that what is left "
			"in it remains governed\n", r->cg_path, strerror(-err));
		r->registered = false;
		r->set_id = 0;
	}
	if (r->rb)
		ring_buffer__consume(r->rb);
	if (r->dp_open && r->ring && !datapath__counters(&r->dp, r->ring, cnt)) {
		if (cnt[SL_CNT_EV_LOST_FULL])
			pr_warn("%llu event(s) lost: the ring was full\n",
				(unsigned long long)cnt[SL_CNT_EV_LOST_FULL]);
		if (cnt[SL_CNT_EV_LOST_NORING])
			pr_warn("%llu event(s) lost: no ring installed for them\n",
				(unsigned long long)cnt[SL_CNT_EV_LOST_NORING]);
		pr_debug("verdicts: %llu allow, %llu deny, %llu audit; %llu events read\n",
			 (unsigned long long)cnt[SL_CNT_ALLOW], (unsigned long long)cnt[SL_CNT_DENY],
			 (unsigned long long)cnt[SL_CNT_AUDIT], (unsigned long long)r->nevents);
	}
	if (r->nunreported)
		fprintf(stderr, "sluice: %llu more refusal(s) not shown (use --events)\n",
			(unsigned long long)r->nunreported);
	if (r->nwrite_fail)
		pr_warn("%llu event(s) could not be written to %s\n",
			(unsigned long long)r->nwrite_fail, r->events_path);
	if (r->registered)
		datapath__ident_del(&r->dp, r->cgid);
	if (r->set_id)
		datapath__set_del_state(&r->dp, r->set_id, &r->st);
	datapath__set_state_free(&r->st);
	if (r->rb)
		ring_buffer__free(r->rb);
	if (r->ring && r->registered)
		datapath__ring_del(&r->dp, r->ring);
	if (r->ring_fd > 0)
		close(r->ring_fd);
	if (r->dp_open)
		datapath__release(&r->dp);
	if (r->events && r->events != stdout)
		fclose(r->events);
	else if (r->events)
		fflush(r->events);
	events__render_free(&r->render);
	if (r->fqdn)
		fqdn__free(r->fqdn);
	policy__set_free(&r->pols);
}

int run__main(int argc, char **argv)
{
	struct datapath_opts dopts = {};
	struct run r = { .ring_fd = -1 };
	char root[PATH_MAX];
	sigset_t mask;
	int err, status = 1;

	if (run__parse(&r, argc, argv))
		return 2;
	if (run__load_policies(&r))
		return 1;
	if (geteuid() != 0) {
		fprintf(stderr, "sluice run: needs root (CAP_BPF, CAP_NET_ADMIN and cgroup write access)\n");
		return 1;
	}

	/* Signals are handled in the loop; block them before any child. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);

	r.fqdn = fqdn__new(r.resolv_conf, 0, 0);
	if (!r.fqdn) {
		pr_err("cannot set up the resolver from %s: %s\n",
		       r.resolv_conf ? r.resolv_conf : "/etc/resolv.conf", strerror(errno));
		goto out;
	}

	if (r.cgroup_root) {
		if ((err = cgroup__abspath(r.cgroup_root, root, sizeof(root)))) {
			pr_err("bad --cgroup-root %s: %s\n", r.cgroup_root, strerror(-err));
			goto out;
		}
		dopts.cgroup_root = root;
	} else if ((err = cgroup__mount(root, sizeof(root)))) {
		pr_err("no cgroup2 mount found in /proc/self/mountinfo\n");
		goto out;
	}
	dopts.pin_path = r.pin_path;
	err = datapath__open(&r.dp, &dopts);
	if (err)
		goto out;
	r.dp_open = true;
	datapath__gc(&r.dp);

	if ((err = events__render_init(&r.render, &r.dp, r.node)))
		goto out;
	if (r.events_path) {
		r.events = strcmp(r.events_path, "-") ? fopen(r.events_path, "ae") : stdout;
		if (!r.events) {
			pr_err("cannot open %s: %s\n", r.events_path, strerror(errno));
			goto out;
		}
	}

	snprintf(r.cg_path, sizeof(r.cg_path), "%s/sluice-run.%d", root, (int)getpid());
	if ((err = cgroup__mkdir(r.cg_path))) {
		pr_err("cannot create cgroup %s: %s\n", r.cg_path, strerror(-err));
		goto out;
	}
	r.cg_made = true;
	if ((err = cgroup__id(r.cg_path, &r.cgid)))
		goto out;

	if ((err = datapath__ring_add(&r.dp, &r.ring, &r.ring_fd)))
		goto out;
	r.rb = ring_buffer__new(r.ring_fd, run__on_event, &r, NULL);
	if (!r.rb) {
		pr_err("cannot read the event ring: %s\n", strerror(errno));
		goto out;
	}
	if (run__apply(&r))
		goto out;
	if (!r.user)
		pr_warn("CMD runs as root and keeps CAP_NET_RAW: packet (AF_PACKET) sockets meet no "
			"cgroup hook and cannot be refused; use --user for a governed agent\n");
	if ((err = run__spawn(&r))) {
		if (r.child > 0) {
			kill(r.child, SIGKILL);
			waitpid(r.child, NULL, 0);
		}
		goto out;
	}
	run__loop(&r);
	if (WIFEXITED(r.child_status))
		status = WEXITSTATUS(r.child_status);
	else if (WIFSIGNALED(r.child_status))
		status = 128 + WTERMSIG(r.child_status);
out:
	run__cleanup(&r);
	return status;
}
