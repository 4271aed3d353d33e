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
 *                   --policy A --policy B [--reps K]
 *       Policy apply against a real datapath (loaded at P, attached at R):
 *       parse, compile__build, datapath__set_add, the identity flip
 *       (datapath__ident_put of C's cgroup id), then datapath__set_del of
 *       the previous set, alternating A and B. Also the kernel's memory
 *       accounting of each map (fdinfo "memlock") with and without the set.
 *
 *   pipebench start --pin-path P --cgroup-root R [--reps K]
 *       datapath__open on empty pins (load + attach + pin), a second
 *       datapath__open that adopts the pins, and the teardown of the last
 *       user (datapath__release).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <linux/types.h>
#include "sluice/sluice.h"
#include "cgroup.h"
#include "compile.h"
#include "datapath.h"
#include "events.h"
#include "log.h"
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

static int cmd_apply(int argc, char **argv)
{
	const char *pin = opt(argc, argv, "--pin-path", NULL);
	const char *root = opt(argc, argv, "--cgroup-root", NULL);
	const char *cg = opt(argc, argv, "--ident-cgroup", NULL);
	const char *files[2] = { NULL, NULL };
	int reps = atoi(opt(argc, argv, "--reps", "5")), i, err, nf = 0;
	struct datapath_opts dopts = { .pin_path = pin, .cgroup_root = root };
	struct datapath dp;
	struct sl_identity id = {};
	uint32_t cur = 0;
	uint64_t cgid;

	for (i = 0; i + 1 < argc && nf < 2; i++)
		if (!strcmp(argv[i], "--policy"))
			files[nf++] = argv[++i];
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
		char msg[512] = "";
		uint32_t set_id;
		uint64_t t0, t1, t2, t3, t4, t5;
		size_t k;

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
		err = datapath__set_add(&dp, &c, "bench", &set_id);
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
			datapath__set_del(&dp, cur);
		t5 = now_ns();
		/* rep 0 is the first load (no old set): reported, not a swap */
		printf("{\"phase\":\"%s\",\"rules\":%zu,\"entries\":%zu,\"parse_ns\":%llu,"
		       "\"compile_ns\":%llu,\"set_add_ns\":%llu,\"ident_flip_ns\":%llu,"
		       "\"set_del_ns\":%llu,\"applied_ns\":%llu,\"total_ns\":%llu,",
		       i ? "swap" : "first", c.nrules, c.nentries,
		       (unsigned long long)(t1 - t0), (unsigned long long)(t2 - t1),
		       (unsigned long long)(t3 - t2), (unsigned long long)(t4 - t3),
		       (unsigned long long)(t5 - t4), (unsigned long long)(t4 - t1),
		       (unsigned long long)(t5 - t0));
		print_memlock(&dp, "memlock");
		printf("}\n");
		fflush(stdout);
		cur = set_id;
		compile__free(&c);
		policy__set_free(&ps);
		if (err)
			break;
	}
	datapath__ident_del(&dp, cgid);
	if (cur)
		datapath__set_del(&dp, cur);
	datapath__release(&dp);
	return err ? 1 : 0;
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
	fprintf(stderr, "usage: pipebench render|apply|start ... (see the source)\n");
	return 2;
}
