/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * pipebench: micro-benchmarks of sluice's userspace, linked against
 * build/libsluice.a, timed with CLOCK_MONOTONIC. One JSON line per result.
 *
 *   pipebench render --seconds S [--out FILE]
 *       Ring records -> JSON lines: synthetic struct sl_event records laid
 *       out as in a BPF ring buffer (8-byte header + record), walked the way
 *       the reader walks the ring, rendered by events__render() and written
 *       with fwrite() to FILE (default /dev/null), as `sluice run --events`
 *       does. Mix per 8 records: 2 connect allow, 2 established, 2 close,
 *       1 connect deny (default-deny), 1 sendmsg allow. Single thread: the
 *       driver pins it to one CPU, so the figure is per core.
 *
 *   pipebench apply --pin-path P --cgroup-root R --ident-cgroup C
 *                   --policy A --policy B [--reps K] [--patch]
 *       Policy apply against a real datapath (loaded at P, attached at R):
 *       parse, compile__build, datapath__set_add, the identity flip
 *       (datapath__ident_put of C's cgroup id), then datapath__set_del_state
 *       of the previous set, alternating A and B. Also the kernel's memory
 *       accounting of each map (fdinfo "memlock") with and without the set.
 *       With --patch, every change after the first load is written in place
 *       as sluiced does when the rules keep their names: datapath__set_patch
 *       (the names check, datapath__rules_kept, also timed apart).
 *
 *   pipebench gateway --seconds S [--out FILE]
 *       Gateway decision-log lines -> joined records, as sluiced handles a
 *       --gateway-log: 4096 lines (6 of 8 agentgateway text, 1 agentgateway
 *       JSON, 1 Envoy JSON; every 16th a tools/call of a tool the policy
 *       does not list) parsed with format auto, each joined with one of
 *       10000 open flows (correlate__gateway) and every emitted record
 *       rendered and written to FILE (default /dev/null). Two baselines in
 *       the same run: the lines only split (the least a reader does), and
 *       only parsed. Phases interleave; one JSON line per phase and round.
 *
 *   pipebench start --pin-path P --cgroup-root R [--reps K]
 *       datapath__open on empty pins (load + attach + pin), a second
 *       datapath__open that adopts the pins, and the teardown of the last
 *       user (datapath__release).
 *
 *   pipebench drain --ring PINNED_RINGBUF | --perf PINNED_PERF_EVENT_ARRAY
 *       The reader of the floor's ring (tests/bench/floor.bpf.c): consumes
 *       the records as sluice's readers do (no wakeups asked for: a poll
 *       every SL_READER_POLL_MS, or when the producer forces one), rendering
 *       and writing each to /dev/null. Prints "ready", then at EOF on stdin
 *       {"records":N,"lost":L}. --perf reads a perf event array the same
 *       way (1 MiB per CPU, a wakeup only at half full), L from the
 *       kernel's lost-record notes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/epoll.h>
#include <linux/perf_event.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/socket.h>
#include <linux/types.h>
#include "sluice/sluice.h"
#include "cgroup.h"
#include "compile.h"
#include "datapath.h"
#include "events.h"
#include "log.h"
#include <yaml.h>
#include "correlate.h"
#include "gateway.h"
#include "policy.h"

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static const char *opt(int argc, char **argv, const char *name, const char *def)
{
	for (int i = 0; i + 1 < argc; i++)
		if (!strcmp(argv[i], name))
			return argv[i + 1];
	return def;
}

/* ------------------------------------------------------------ render */

#define NREC		4096
#define RB_HDR		8	/* BPF_RINGBUF_HDR_SZ */

static void fill_event(struct sl_event *ev, unsigned int i, uint64_t cgid)
{
	static const uint8_t dst[4][4] = { { 104, 18, 6, 192 }, { 127, 0, 0, 1 },
					   { 10, 96, 0, 10 }, { 140, 82, 112, 3 } };

	memset(ev, 0, sizeof(*ev));
	ev->ts_ns = 1000000000ULL + i * 12345ULL;
	ev->cgroup_id = cgid;
	ev->ident_cgid = cgid;
	ev->cookie = 8192 + i / 4;
	ev->pid = 4242 + (i % 3);
	ev->tid = ev->pid;
	ev->uid = 1000;
	ev->set_id = 0x5eed;
	ev->family = AF_INET;
	ev->protocol = 6;
	memcpy(ev->comm, i % 2 ? "python3" : "curl", i % 2 ? 7 : 4);
	ev->daddr[10] = ev->daddr[11] = 0xff;
	memcpy(ev->daddr + 12, dst[i % 4], 4);
	ev->saddr[10] = ev->saddr[11] = 0xff;
	ev->saddr[12] = 127;
	ev->saddr[15] = 1;
	ev->dport = i % 4 == 1 ? 18080 : 443;
	ev->sport = 32768 + i % 28000;
	ev->rule_id = SL_RULE_FIRST + i % 64;
	ev->class = SL_CLASS_LLM;
	switch (i % 8) {
	case 0: case 1:
		ev->type = SL_EV_CONNECT;
		break;
	case 2: case 3:
		ev->type = SL_EV_ESTABLISHED;
		break;
	case 4: case 5:
		ev->type = SL_EV_CLOSE;
		ev->bytes_sent = 517 + i;
		ev->bytes_received = 4096 + i;
		ev->duration_ns = 1500000 + i;
		break;
	case 6:
		ev->type = SL_EV_CONNECT;
		ev->verdict = SL_VERDICT_DENY;
		ev->rule_id = SL_RULE_DEFAULT_DENY;
		ev->class = 0;
		break;
	case 7:
		ev->type = SL_EV_SENDMSG;
		ev->protocol = 17;
		ev->dport = 53;
		break;
	}
}

struct rstate {
	struct events_render r;
	FILE *out;
	uint64_t n, bytes, fail;
	char buf[2048];
};

/* What the reader's ring_buffer callback does with one record. */
static int on_record(struct rstate *s, const void *data, size_t size)
{
	int n;

	if (size < sizeof(struct sl_event))
		return 0;
	n = events__render(&s->r, data, s->buf, sizeof(s->buf) - 1);
	if (n < 0) {
		s->fail++;
		return 0;
	}
	s->buf[n++] = '\n';
	if (s->out && fwrite(s->buf, 1, n, s->out) != (size_t)n)
		s->fail++;
	s->n++;
	s->bytes += n;
	return 0;
}

static int cmd_render(int argc, char **argv)
{
	double secs = atof(opt(argc, argv, "--seconds", "2"));
	const char *out = opt(argc, argv, "--out", "/dev/null");
	size_t stride = RB_HDR + ((sizeof(struct sl_event) + 7) & ~7UL);
	unsigned char *ring = calloc(NREC, stride);
	struct rstate *s = calloc(1, sizeof(*s));
	char mount[PATH_MAX], self[PATH_MAX] = "", line[PATH_MAX + 8];
	uint64_t cgid = 1, t0, t1, deadline;
	struct sl_rule_meta meta = {};
	FILE *f;
	unsigned int i;

	if (!ring || !s)
		return 1;
	/* A real cgroup: its path is resolved once and cached, as in a run. */
	f = fopen("/proc/self/cgroup", "r");
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "0::", 3)) {
			line[strcspn(line, "\n")] = '\0';
			snprintf(self, sizeof(self), "%s", line + 3);
		}
	if (f)
		fclose(f);
	if (!cgroup__mount(mount, sizeof(mount)) && self[0]) {
		char abs[PATH_MAX * 2];

		snprintf(abs, sizeof(abs), "%s%s", mount, strcmp(self, "/") ? self : "");
		cgroup__id(abs, &cgid);
	}
	if (events__render_init(&s->r, NULL, "bench-node"))
		return 1;
	events__names_add_set(&s->r, 0x5eed, "agents/research-agent");
	for (i = 0; i < 64; i++) {
		snprintf(meta.policy, sizeof(meta.policy), "agents/research-agent");
		snprintf(meta.rule, sizeof(meta.rule), "rule-%u", i);
		meta.class = SL_CLASS_LLM;
		events__names_add_rule(&s->r, 0x5eed, SL_RULE_FIRST + i, &meta);
	}
	for (i = 0; i < NREC; i++) {
		uint32_t *hdr = (uint32_t *)(ring + i * stride);

		hdr[0] = sizeof(struct sl_event);	/* len, no busy/discard bits */
		hdr[1] = 0;
		fill_event((struct sl_event *)(ring + i * stride + RB_HDR), i, cgid);
	}
	s->out = strcmp(out, "-") ? fopen(out, "we") : NULL;

	/* warm-up: caches, name lookups */
	for (i = 0; i < NREC; i++)
		on_record(s, ring + i * stride + RB_HDR, sizeof(struct sl_event));
	s->n = s->bytes = 0;

	t0 = now_ns();
	deadline = t0 + (uint64_t)(secs * 1e9);
	do {
		for (i = 0; i < NREC; i++) {
			const unsigned char *p = ring + i * stride;
			uint32_t len = *(const uint32_t *)p;

			if (len & (1U << 31))		/* BPF_RINGBUF_BUSY_BIT */
				break;
			if (len & (1U << 30))		/* BPF_RINGBUF_DISCARD_BIT */
				continue;
			on_record(s, p + RB_HDR, len & ~(3U << 30));
		}
		t1 = now_ns();
	} while (t1 < deadline);
	if (s->out)
		fflush(s->out);
	printf("{\"records\":%llu,\"elapsed_ns\":%llu,\"records_per_s\":%.0f,\"ns_per_record\":%.1f,"
	       "\"bytes_per_record\":%.1f,\"failures\":%llu}\n",
	       (unsigned long long)s->n, (unsigned long long)(t1 - t0),
	       s->n * 1e9 / (t1 - t0), (double)(t1 - t0) / s->n,
	       (double)s->bytes / s->n, (unsigned long long)s->fail);
	if (s->out)
		fclose(s->out);
	events__render_free(&s->r);
	free(ring);
	free(s);
	return 0;
}

/* ------------------------------------------------------------ apply */

static long long fd_memlock(int fd)
{
	char p[64], line[256];
	long long v = -1;
	FILE *f;

	snprintf(p, sizeof(p), "/proc/self/fdinfo/%d", fd);
	f = fopen(p, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "memlock: %lld", &v) == 1)
			break;
	fclose(f);
	return v;
}

static void print_memlock(struct datapath *dp, const char *key)
{
	printf("\"%s\":{", key);
	for (int i = 0; i < DP_MAP_N; i++)
		printf("%s\"%s\":%lld", i ? "," : "", datapath_map_names[i],
		       dp->map_fd[i] >= 0 ? fd_memlock(dp->map_fd[i]) : -1);
	printf("}");
}

static uint64_t yaml_floor_ns(const char *file);

static int cmd_apply(int argc, char **argv)
{
	const char *pin = opt(argc, argv, "--pin-path", NULL);
	const char *root = opt(argc, argv, "--cgroup-root", NULL);
	const char *cg = opt(argc, argv, "--ident-cgroup", NULL);
	const char *files[2] = { NULL, NULL };
	int reps = atoi(opt(argc, argv, "--reps", "5")), i, err, nf = 0;
	bool patch = false;
	struct datapath_opts dopts = { .pin_path = pin, .cgroup_root = root };
	struct datapath dp;
	struct sl_identity id = {};
	uint32_t cur = 0;
	struct dp_set_state cur_st = {}, st = {};
	uint64_t cgid;

	for (i = 0; i < argc; i++) {
		if (i + 1 < argc && nf < 2 && !strcmp(argv[i], "--policy"))
			files[nf++] = argv[++i];
		else if (!strcmp(argv[i], "--patch"))
			patch = true;
	}
	if (!pin || !root || !cg || nf != 2) {
		fprintf(stderr, "pipebench apply: need --pin-path, --cgroup-root, --ident-cgroup, 2 --policy\n");
		return 2;
	}
	if ((err = cgroup__id(cg, &cgid))) {
		fprintf(stderr, "pipebench apply: %s: %s\n", cg, strerror(-err));
		return 1;
	}
	if ((err = datapath__open(&dp, &dopts))) {
		fprintf(stderr, "pipebench apply: datapath: %s\n", strerror(-err));
		return 1;
	}
	printf("{\"phase\":\"empty\",");
	print_memlock(&dp, "memlock");
	printf("}\n");
	for (i = 0; i < reps + 1; i++) {
		const char *file = files[i % 2];
		struct pol_set ps = {};
		struct pol_diags diags = {};
		const struct pol_doc **docs;
		struct compile_input in = {};
		struct compiled c = {};
		struct dp_patch_stats pst = {};
		char msg[512] = "";
		uint32_t set_id;
		uint64_t t0, t1, t2, t3, t4, t5;
		size_t k;

		uint64_t yfloor = yaml_floor_ns(file);

		t0 = now_ns();
		err = policy__parse_file(file, &ps, &diags);
		t1 = now_ns();
		if (err) {
			policy__print_diags(&diags, stderr);
			break;
		}
		policy__diags_free(&diags);
		docs = calloc(ps.ndocs + 1, sizeof(*docs));
		for (k = 0; k < ps.ndocs; k++)
			docs[k] = &ps.docs[k];
		in.docs = docs;
		in.ndocs = ps.ndocs;
		err = compile__build(&in, &c, msg, sizeof(msg));
		t2 = now_ns();
		free(docs);
		if (err) {
			fprintf(stderr, "pipebench apply: compile: %s\n", msg);
			policy__set_free(&ps);
			break;
		}
		if (patch && cur) {
			/* as sluiced does: the difference written in place
			 * (datapath__set_patch checks the rules' names first;
			 * timed apart here); nothing flips */
			bool kept = datapath__rules_kept(&cur_st, &c);

			t3 = now_ns();
			err = datapath__set_patch(&dp, cur, &cur_st, &c, "bench", &pst);
			t4 = t5 = now_ns();
			if (err)
				fprintf(stderr, "pipebench apply: %s\n", !kept ? "rule names changed" :
					strerror(-err));
			printf("{\"phase\":\"patch\",\"rules\":%zu,\"entries\":%zu,\"parse_ns\":%llu,"
			       "\"compile_ns\":%llu,\"names_check_ns\":%llu,\"patch_ns\":%llu,"
			       "\"applied_ns\":%llu,\"total_ns\":%llu,\"written\":%zu,"
			       "\"deleted\":%zu,\"yaml_floor_ns\":%llu}\n",
			       c.nrules, c.nentries, (unsigned long long)(t1 - t0),
			       (unsigned long long)(t2 - t1), (unsigned long long)(t3 - t2),
			       (unsigned long long)(t4 - t3), (unsigned long long)(t4 - t1),
			       (unsigned long long)(t5 - t0), pst.written, pst.deleted,
			       (unsigned long long)yfloor);
			fflush(stdout);
			compile__free(&c);
			policy__set_free(&ps);
			if (err)
				break;
			continue;
		}
		/* as sluiced does when a set is replaced: its state kept for
		 * its deletion */
		err = datapath__set_add(&dp, &c, "bench", &set_id, &st);
		t3 = now_ns();
		if (err) {
			fprintf(stderr, "pipebench apply: set_add: %s\n", strerror(-err));
			compile__free(&c);
			policy__set_free(&ps);
			break;
		}
		id.set_id = set_id;
		id.owner_pid = getpid();
		err = datapath__ident_put(&dp, cgid, &id);
		t4 = now_ns();
		if (cur)
			datapath__set_del_state(&dp, cur, &cur_st);
		t5 = now_ns();
		/* rep 0 is the first load (no old set): reported, not a swap */
		printf("{\"phase\":\"%s\",\"rules\":%zu,\"entries\":%zu,\"parse_ns\":%llu,"
		       "\"compile_ns\":%llu,\"set_add_ns\":%llu,\"ident_flip_ns\":%llu,"
		       "\"set_del_ns\":%llu,\"applied_ns\":%llu,\"total_ns\":%llu,"
		       "\"yaml_floor_ns\":%llu,",
		       i ? "swap" : "first", c.nrules, c.nentries,
		       (unsigned long long)(t1 - t0), (unsigned long long)(t2 - t1),
		       (unsigned long long)(t3 - t2), (unsigned long long)(t4 - t3),
		       (unsigned long long)(t5 - t4), (unsigned long long)(t4 - t1),
		       (unsigned long long)(t5 - t0), (unsigned long long)yfloor);
		print_memlock(&dp, "memlock");
		printf("}\n");
		fflush(stdout);
		cur = set_id;
		datapath__set_state_free(&cur_st);
		cur_st = st;
		memset(&st, 0, sizeof(st));
		compile__free(&c);
		policy__set_free(&ps);
		if (err)
			break;
	}
	datapath__ident_del(&dp, cgid);
	if (cur)
		datapath__set_del_state(&dp, cur, &cur_st);
	datapath__set_state_free(&cur_st);
	datapath__release(&dp);
	return err ? 1 : 0;
}

/* The floor of parsing FILE: libyaml's events alone, nothing built from
 * them. 0 if it does not parse. */
static uint64_t yaml_floor_ns(const char *file)
{
	yaml_parser_t p;
	yaml_event_t ev;
	uint64_t t0 = now_ns(), t1;
	FILE *f = fopen(file, "re");
	bool ok = true, done = false;

	if (!f || !yaml_parser_initialize(&p)) {
		if (f)
			fclose(f);
		return 0;
	}
	yaml_parser_set_input_file(&p, f);
	while (ok && !done) {
		ok = yaml_parser_parse(&p, &ev);
		if (ok) {
			done = ev.type == YAML_STREAM_END_EVENT;
			yaml_event_delete(&ev);
		}
	}
	t1 = now_ns();
	yaml_parser_delete(&p);
	fclose(f);
	return ok ? t1 - t0 : 0;
}

/* ------------------------------------------------------------ start */

static int cmd_start(int argc, char **argv)
{
	const char *pin = opt(argc, argv, "--pin-path", NULL);
	const char *root = opt(argc, argv, "--cgroup-root", NULL);
	int reps = atoi(opt(argc, argv, "--reps", "5")), i, err = 0;
	struct datapath_opts dopts = { .pin_path = pin, .cgroup_root = root };

	if (!pin || !root) {
		fprintf(stderr, "pipebench start: need --pin-path and --cgroup-root\n");
		return 2;
	}
	for (i = 0; i < reps; i++) {
		struct datapath a, b;
		uint64_t t0, t1, t2, t3;

		datapath__destroy(pin);
		t0 = now_ns();
		err = datapath__open(&a, &dopts);
		t1 = now_ns();
		if (err) {
			fprintf(stderr, "pipebench start: load: %s\n", strerror(-err));
			break;
		}
		err = datapath__open(&b, &dopts);
		t2 = now_ns();
		if (err) {
			fprintf(stderr, "pipebench start: adopt: %s\n", strerror(-err));
			datapath__release(&a);
			break;
		}
		datapath__release(&b);
		t3 = now_ns();
		datapath__release(&a);	/* last user: detach and unpin */
		printf("{\"load_attach_ns\":%llu,\"adopt_ns\":%llu,\"loaded_here\":%d,\"adopted\":%d,"
		       "\"teardown_ns\":%llu,\"still_pinned\":%d}\n",
		       (unsigned long long)(t1 - t0), (unsigned long long)(t2 - t1),
		       a.loaded_here, !b.loaded_here, (unsigned long long)(now_ns() - t3),
		       datapath__pinned(pin));
		fflush(stdout);
	}
	return err ? 1 : 0;
}


/* ------------------------------------------------------------ gateway */

#define GW_LINES	4096
#define GW_FLOWS	10000
#define GW_T0		(1764295504ull * 1000000000ull)

struct gstate {
	struct correlate *c;
	FILE *out;
	uint64_t emitted, bytes, fail;
	char buf[8192];
};

static void gw_emit(void *ctx, const struct corr_record *rec)
{
	struct gstate *g = ctx;
	int n = correlate__render(g->c, rec, g->buf, sizeof(g->buf) - 1);

	if (n < 0) {
		g->fail++;
		return;
	}
	g->buf[n++] = '\n';
	g->emitted++;
	g->bytes += (uint64_t)n;
	if (g->out && fwrite(g->buf, 1, (size_t)n, g->out) != (size_t)n)
		g->fail++;
}

static void gw_src(unsigned int i, char *ip, size_t len, uint16_t *port)
{
	snprintf(ip, len, "10.244.%u.%u", 1 + i / 250, 1 + i % 250);
	*port = (uint16_t)(33000 + i % 28000);
}

static size_t gw_line(char *p, size_t len, unsigned int i)
{
	static const char *const tools[] = { "search", "fetch", "echo", "delete_all" };
	unsigned int f = (i * 7919u) % GW_FLOWS;
	const char *tool = tools[i % 16 == 13 ? 3 : i % 3];
	uint64_t end = GW_T0 + 1000000000ull + (uint64_t)i * 1000000ull;
	char ip[32], ts[64];
	uint16_t port;
	time_t sec = (time_t)(end / 1000000000ull);
	struct tm tm;

	gw_src(f, ip, sizeof(ip), &port);
	gmtime_r(&sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	switch (i % 8) {
	case 6:
		return (size_t)snprintf(p, len,
			"{\"level\":\"info\",\"time\":\"%s.%06lluZ\",\"scope\":\"request\","
			"\"gateway\":\"default/agentgateway-proxy\",\"listener\":\"http\","
			"\"route\":\"default/mcp\",\"endpoint\":\"10.244.2.9:8080\","
			"\"src.addr\":\"%s:%u\",\"http.method\":\"POST\",\"http.host\":\"gw\","
			"\"http.path\":\"/mcp\",\"http.version\":\"HTTP/1.1\",\"http.status\":200,"
			"\"protocol\":\"mcp\",\"mcp.method.name\":\"tools/call\","
			"\"gen_ai.tool.name\":\"%s\",\"mcp.session.id\":\"s-%u\",\"duration\":\"3ms\"}\n",
			ts, (unsigned long long)(end % 1000000000ull / 1000), ip, port, tool, i);
	case 7:
		return (size_t)snprintf(p, len,
			"{\"start_time\":\"%s.%03lluZ\",\"method\":\"POST\",\"path\":\"/mcp\","
			"\"protocol\":\"HTTP/1.1\",\"response_code\":\"200\","
			"\"response_flags\":\"-\",\"response_code_details\":\"via_upstream\","
			"\"bytes_received\":\"312\",\"bytes_sent\":\"1024\",\"duration\":\"3\","
			"\"upstream_host\":\"10.244.2.9:8080\",\"x_forwarded_for\":\"-\","
			"\"downstream_remote_address\":\"%s:%u\",\"x-request-id\":\"r-%u\"}\n",
			ts, (unsigned long long)((end - 3000000ull) % 1000000000ull / 1000000), ip, port,
			i);
	default:
		return (size_t)snprintf(p, len,
			"%s.%06lluZ\tinfo\trequest gateway=default/agentgateway-proxy listener=http "
			"route=default/mcp endpoint=10.244.2.9:8080 src.addr=%s:%u http.method=POST "
			"http.host=gw http.path=/mcp http.version=HTTP/1.1 http.status=200 "
			"protocol=mcp mcp.method.name=tools/call gen_ai.tool.name=%s "
			"mcp.session.id=s-%u duration=3ms\n",
			ts, (unsigned long long)(end % 1000000000ull / 1000), ip, port, tool, i);
	}
}

enum { GW_SPLIT, GW_PARSE, GW_JOIN, GW_NPHASE };

static int cmd_gateway(int argc, char **argv)
{
	static const char *const names[] = { "split", "parse", "parse_join_render" };
	static const char *const TOOLS[] = { "search", "fetch", "echo" };
	double secs = atof(opt(argc, argv, "--seconds", "2"));
	int rounds = atoi(opt(argc, argv, "--rounds", "3"));
	const char *out = opt(argc, argv, "--out", "/dev/null");
	struct gstate *g = calloc(1, sizeof(*g));
	size_t cap = (size_t)GW_LINES * 640, len = 0;
	char *lines = malloc(cap);
	struct corr_opts co;
	struct gw_record *r = malloc(sizeof(*r));
	unsigned int i;

	if (!g || !lines || !r)
		return 1;
	for (i = 0; i < GW_LINES; i++)
		len += gw_line(lines + len, cap - len, i);
	correlate__opts_default(&co);
	co.node = "bench-node";
	co.max_flows = 2 * GW_FLOWS;
	g->c = correlate__new(&co, gw_emit, g);
	if (!g->c)
		return 1;
	for (i = 0; i < GW_FLOWS; i++) {
		struct corr_flow_meta m = {
			.time_ns = GW_T0, .cgroup = "/kubepods.slice/kubepods-pod1.slice/cri-x.scope",
			.pod_namespace = "agents", .pod_name = "research-agent-7d9f",
			.service_account = "research-agent", .policy = "agents/research-agent",
			.rule = "gateway", .class = SL_CLASS_GATEWAY, .has_gateway = true,
			.tools_listed = true, .tools = TOOLS, .ntools = 3,
		};
		struct sl_event ev = { .type = SL_EV_ESTABLISHED, .family = AF_INET, .protocol = 6,
				       .class = SL_CLASS_GATEWAY, .cookie = 1000 + i,
				       .cgroup_id = 4242, .ident_cgid = 4242, .pid = 777, .uid = 1000,
				       .dport = 3000 };
		char ip[32];

		gw_src(i, ip, sizeof(ip), &ev.sport);
		ev.saddr[10] = ev.saddr[11] = ev.daddr[10] = ev.daddr[11] = 0xff;
		inet_pton(AF_INET, ip, ev.saddr + 12);
		inet_pton(AF_INET, "10.96.0.10", ev.daddr + 12);
		memcpy(ev.comm, "python3", 7);
		if (correlate__flow(g->c, &ev, &m))
			return 1;
	}
	g->out = strcmp(out, "-") ? fopen(out, "we") : NULL;

	for (int round = 0; round <= rounds; round++) {
		for (int ph = 0; ph < GW_NPHASE; ph++) {
			uint64_t n = 0, fail = 0, sum = 0, t0 = now_ns(), t1, deadline;
			uint64_t emitted0 = g->emitted, bytes0 = g->bytes;
			struct corr_stats st0, st1;

			correlate__stats(g->c, &st0);
			deadline = t0 + (uint64_t)(secs * 1e9);
			do {
				const char *p = lines, *end = lines + len;

				while (p < end) {
					const char *nl = memchr(p, '\n', (size_t)(end - p));
					const char *why;

					if (ph == GW_SPLIT) {
						sum += (size_t)(nl - p) + (unsigned char)p[0];
					} else if (gateway__parse_line(GW_AUTO, NULL, p, (size_t)(nl - p),
								       r, &why)) {
						fail++;
					} else if (ph == GW_JOIN) {
						correlate__gateway(g->c, r, NULL);
					}
					n++;
					p = nl + 1;
				}
				t1 = now_ns();
			} while (t1 < deadline);
			correlate__stats(g->c, &st1);
			if (!round)
				continue;	/* warm-up */
			printf("{\"phase\":\"%s\",\"round\":%d,\"lines\":%llu,\"elapsed_ns\":%llu,"
			       "\"lines_per_s\":%.0f,\"ns_per_line\":%.1f,\"parse_failures\":%llu,"
			       "\"joined\":%llu,\"records\":%llu,\"bytes_per_record\":%.1f,"
			       "\"render_failures\":%llu,\"sum\":%llu}\n",
			       names[ph], round, (unsigned long long)n, (unsigned long long)(t1 - t0),
			       n * 1e9 / (double)(t1 - t0), (double)(t1 - t0) / (double)n,
			       (unsigned long long)fail,
			       (unsigned long long)(st1.joined - st0.joined),
			       (unsigned long long)(g->emitted - emitted0),
			       g->emitted > emitted0 ? (double)(g->bytes - bytes0) /
						       (double)(g->emitted - emitted0) : 0.0,
			       (unsigned long long)g->fail, (unsigned long long)(sum & 1));
		}
	}
	if (g->out)
		fclose(g->out);
	correlate__free(g->c);
	free(lines);
	free(r);
	free(g);
	return 0;
}

struct drain {
	struct events_render r;
	FILE *out;
	uint64_t n, lost;
};

static int drain_cb(void *ctx, void *data, size_t len)
{
	struct drain *dr = ctx;
	char line[4096];
	int n;

	if (len < sizeof(struct sl_event))
		return 0;
	n = events__render(&dr->r, data, line, sizeof(line));
	if (n > 0 && (size_t)n < sizeof(line))
		fwrite(line, 1, (size_t)n, dr->out);
	dr->n++;
	return 0;
}

static enum bpf_perf_event_ret drain_perf_cb(void *ctx, int cpu, struct perf_event_header *h)
{
	struct drain *dr = ctx;

	(void)cpu;
	if (h->type == PERF_RECORD_SAMPLE) {
		/* header, u32 size, the record */
		struct { struct perf_event_header h; __u32 size; char data[]; } *s = (void *)h;

		drain_cb(dr, s->data, s->size);
	} else if (h->type == PERF_RECORD_LOST) {
		struct { struct perf_event_header h; __u64 id, lost; } *l = (void *)h;

		dr->lost += l->lost;
	}
	return LIBBPF_PERF_EVENT_CONT;
}

static void drain__consume(struct ring_buffer *rb, struct perf_buffer *pb)
{
	if (rb)
		ring_buffer__consume(rb);
	else
		perf_buffer__consume(pb);
}

static int cmd_drain(int argc, char **argv)
{
	const char *ring = opt(argc, argv, "--ring", NULL);
	const char *perf = opt(argc, argv, "--perf", NULL);
	const char *pin = ring ? ring : perf;
	struct epoll_event ev = { .events = EPOLLIN }, got[2];
	struct perf_event_attr attr = {
		.type = PERF_TYPE_SOFTWARE,
		.config = PERF_COUNT_SW_BPF_OUTPUT,
		.sample_type = PERF_SAMPLE_RAW,
		.sample_period = 1,
		.watermark = 1,
		.wakeup_watermark = 512 * 1024,
		.size = sizeof(attr),
	};
	struct perf_buffer_raw_opts popts = { .sz = sizeof(popts) };
	struct perf_buffer *pb = NULL;
	struct ring_buffer *rb = NULL;
	struct drain dr = {};
	int fd, efd;
	bool eof = false;

	if (!pin || (ring && perf)) {
		fprintf(stderr, "drain: one of --ring PINNED_RINGBUF, --perf PINNED_PERF_ARRAY\n");
		return 2;
	}
	fd = bpf_obj_get(pin);
	if (fd < 0) {
		fprintf(stderr, "drain: %s: %s\n", pin, strerror(errno));
		return 1;
	}
	dr.out = fopen("/dev/null", "w");
	if (ring)
		rb = ring_buffer__new(fd, drain_cb, &dr, NULL);
	else	/* 256 pages: 1 MiB per CPU */
		pb = perf_buffer__new_raw(fd, 256, &attr, drain_perf_cb, &dr, &popts);
	efd = epoll_create1(EPOLL_CLOEXEC);
	if (events__render_init(&dr.r, NULL, "bench-node") || (!rb && !pb) || !dr.out || efd < 0) {
		fprintf(stderr, "drain: cannot read %s\n", pin);
		return 1;
	}
	ev.data.fd = rb ? ring_buffer__epoll_fd(rb) : perf_buffer__epoll_fd(pb);
	if (epoll_ctl(efd, EPOLL_CTL_ADD, ev.data.fd, &ev)) {
		fprintf(stderr, "drain: epoll: %s\n", strerror(errno));
		return 1;
	}
	/* stdin must be a pipe or a terminal: its EOF is the end */
	ev.data.fd = 0;
	if (epoll_ctl(efd, EPOLL_CTL_ADD, 0, &ev)) {
		fprintf(stderr, "drain: stdin cannot be polled (%s): give it a pipe\n",
			strerror(errno));
		return 1;
	}
	printf("ready\n");
	while (!eof) {
		int n = epoll_wait(efd, got, 2, SL_READER_POLL_MS);

		for (int i = 0; i < n; i++) {
			char buf[64];

			if (got[i].data.fd == 0 && read(0, buf, sizeof(buf)) <= 0)
				eof = true;
		}
		drain__consume(rb, pb);
	}
	drain__consume(rb, pb);
	printf("{\"records\":%llu,\"lost\":%llu}\n", (unsigned long long)dr.n,
	       (unsigned long long)dr.lost);
	ring_buffer__free(rb);
	perf_buffer__free(pb);
	events__render_free(&dr.r);
	fclose(dr.out);
	close(efd);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	log__set_level(LOG_WARN);
	if (argc >= 2 && !strcmp(argv[1], "render"))
		return cmd_render(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "apply"))
		return cmd_apply(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "start"))
		return cmd_start(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "gateway"))
		return cmd_gateway(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "drain"))
		return cmd_drain(argc - 2, argv + 2);
	fprintf(stderr, "usage: pipebench render|apply|start|gateway|drain ... (see the source)\n");
	return 2;
}
