/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * connbench: the load generator of `make bench`.
 *
 *   connbench serve --tcp-port P --udp-port U
 *       Accept TCP connections and close them at once; receive and drop UDP.
 *       Prints "ready" when listening. Runs until killed.
 *   connbench run [LOAD OPTIONS]
 *       One load; prints one JSON line with the result.
 *   connbench agent
 *       Reads one line of LOAD OPTIONS per command on stdin, runs it and
 *       prints one JSON line per command; exits at EOF. The driver keeps one
 *       agent per cgroup under test, so every repetition of a variant runs
 *       in the same process and the same cgroup.
 *   connbench flip --dst IP --port P --until ok|eperm [--timeout S] [--interval-us U]
 *       Unconnected UDP sendto() every U us (default 200) until its result
 *       becomes the wanted one; prints the CLOCK_MONOTONIC time of the first such
 *       send (for "time from a changed policy file to enforcement").
 *
 * LOAD OPTIONS:
 *   --proto tcp|udp      tcp: socket()+connect()+close() per op (SO_LINGER 0,
 *                        so no TIME_WAIT exhausts the ephemeral ports);
 *                        udp: sendto() of 16 bytes on one unconnected socket
 *   --dst IP --port P    IPv4 destination
 *   --duration S         seconds per thread (default 1), or
 *   --ops N              operations per thread
 *   --threads T          parallel loops (default 1)
 *   --cpu C              pin thread i to CPU (C + i) % ncpu (default: no pinning)
 *
 * Result: {"ops":N,"ok":N,"eperm":N,"refused":N,"other":N,"last_errno":E,
 *          "elapsed_ns":N,"ops_per_s":X,"ns_per_op":X,"cpu_ns_per_op":X}
 * ns_per_op is the mean latency of one operation in one loop (elapsed of each
 * thread / its ops, averaged over threads); cpu_ns_per_op the same with the
 * thread's own CPU time (CLOCK_THREAD_CPUTIME_ID: what the caller pays,
 * interrupts taken meanwhile included, time other tasks ran excluded);
 * ops_per_s is the aggregate rate.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 64

static uint64_t clock_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static uint64_t now_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
}

struct load {
	bool udp;
	struct sockaddr_in dst;
	double duration;
	uint64_t ops;		/* per thread; 0: by duration */
	int threads;
	int cpu;		/* -1: no pinning */
};

struct tres {
	struct load *l;
	int idx;
	uint64_t ops, ok, eperm, refused, other;
	int last_errno;
	uint64_t elapsed;
	uint64_t cpu;		/* CLOCK_THREAD_CPUTIME_ID: on-CPU time, irqs included */
};

static void count(struct tres *r, int ret)
{
	r->ops++;
	if (ret == 0) {
		r->ok++;
		return;
	}
	r->last_errno = errno;
	if (errno == EPERM)
		r->eperm++;
	else if (errno == ECONNREFUSED)
		r->refused++;
	else
		r->other++;
}

static void *worker(void *arg)
{
	struct tres *r = arg;
	struct load *l = r->l;
	uint64_t t0, c0, deadline, now;
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	char payload[16] = "connbench";
	int us = -1;

	if (l->cpu >= 0) {
		cpu_set_t set;
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		CPU_ZERO(&set);
		CPU_SET((l->cpu + r->idx) % (n > 0 ? n : 1), &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
	if (l->udp) {
		us = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (us < 0) {
			r->last_errno = errno;
			return NULL;
		}
	}
	c0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
	t0 = now_ns();
	deadline = t0 + (uint64_t)(l->duration * 1e9);
	now = t0;
	for (;;) {
		if (l->ops) {
			if (r->ops >= l->ops)
				break;
		} else if ((r->ops & 63) == 0 && (now = now_ns()) >= deadline) {
			break;
		}
		if (l->udp) {
			count(r, sendto(us, payload, sizeof(payload), 0,
					(struct sockaddr *)&l->dst, sizeof(l->dst)) < 0 ? -1 : 0);
			continue;
		}
		int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (s < 0) {
			count(r, -1);
			continue;
		}
		setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		count(r, connect(s, (struct sockaddr *)&l->dst, sizeof(l->dst)));
		close(s);
	}
	now = now_ns();
	r->elapsed = now - t0;
	r->cpu = clock_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
	if (us >= 0)
		close(us);
	return NULL;
}

static int load_run(struct load *l, FILE *out)
{
	pthread_t th[MAX_THREADS];
	struct tres res[MAX_THREADS] = {};
	struct tres tot = {};
	uint64_t t0, wall;
	double lat = 0, cpu = 0;
	int i;

	t0 = now_ns();
	for (i = 0; i < l->threads; i++) {
		res[i].l = l;
		res[i].idx = i;
		if (pthread_create(&th[i], NULL, worker, &res[i])) {
			fprintf(out, "{\"error\":\"pthread_create\"}\n");
			fflush(out);
			return 1;
		}
	}
	for (i = 0; i < l->threads; i++)
		pthread_join(th[i], NULL);
	wall = now_ns() - t0;
	for (i = 0; i < l->threads; i++) {
		tot.ops += res[i].ops;
		tot.ok += res[i].ok;
		tot.eperm += res[i].eperm;
		tot.refused += res[i].refused;
		tot.other += res[i].other;
		if (res[i].last_errno)
			tot.last_errno = res[i].last_errno;
		if (res[i].ops) {
			lat += (double)res[i].elapsed / res[i].ops;
			cpu += (double)res[i].cpu / res[i].ops;
		}
	}
	lat /= l->threads;
	cpu /= l->threads;
	fprintf(out, "{\"ops\":%llu,\"ok\":%llu,\"eperm\":%llu,\"refused\":%llu,\"other\":%llu,"
		"\"last_errno\":%d,\"elapsed_ns\":%llu,\"ops_per_s\":%.1f,\"ns_per_op\":%.1f,"
		"\"cpu_ns_per_op\":%.1f}\n",
		(unsigned long long)tot.ops, (unsigned long long)tot.ok,
		(unsigned long long)tot.eperm, (unsigned long long)tot.refused,
		(unsigned long long)tot.other, tot.last_errno, (unsigned long long)wall,
		wall ? tot.ops * 1e9 / wall : 0.0, lat, cpu);
	fflush(out);
	return 0;
}

static int parse_load(int argc, char **argv, struct load *l, char *err, size_t errlen)
{
	int i;

	memset(l, 0, sizeof(*l));
	l->duration = 1.0;
	l->threads = 1;
	l->cpu = -1;
	l->dst.sin_family = AF_INET;
	for (i = 0; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!v) {
			snprintf(err, errlen, "%s needs a value", a);
			return -1;
		}
		if (!strcmp(a, "--proto")) {
			if (strcmp(v, "tcp") && strcmp(v, "udp")) {
				snprintf(err, errlen, "bad --proto %s", v);
				return -1;
			}
			l->udp = !strcmp(v, "udp");
		} else if (!strcmp(a, "--dst")) {
			if (inet_pton(AF_INET, v, &l->dst.sin_addr) != 1) {
				snprintf(err, errlen, "bad --dst %s", v);
				return -1;
			}
		} else if (!strcmp(a, "--port")) {
			l->dst.sin_port = htons((uint16_t)atoi(v));
		} else if (!strcmp(a, "--duration")) {
			l->duration = atof(v);
		} else if (!strcmp(a, "--ops")) {
			l->ops = strtoull(v, NULL, 10);
		} else if (!strcmp(a, "--threads")) {
			l->threads = atoi(v);
		} else if (!strcmp(a, "--cpu")) {
			l->cpu = atoi(v);
		} else {
			snprintf(err, errlen, "unknown option %s", a);
			return -1;
		}
		i++;
	}
	if (l->threads < 1 || l->threads > MAX_THREADS || !l->dst.sin_port) {
		snprintf(err, errlen, "need --port and 1..%d threads", MAX_THREADS);
		return -1;
	}
	return 0;
}

static int cmd_run(int argc, char **argv)
{
	struct load l;
	char err[128];

	if (parse_load(argc, argv, &l, err, sizeof(err))) {
		fprintf(stderr, "connbench run: %s\n", err);
		return 2;
	}
	return load_run(&l, stdout);
}

static int cmd_agent(void)
{
	char line[1024];

	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready\n");
	while (fgets(line, sizeof(line), stdin)) {
		char *argv[64], *save = NULL, *tok, err[128];
		int argc = 0;
		struct load l;

		for (tok = strtok_r(line, " \t\n", &save); tok && argc < 64;
		     tok = strtok_r(NULL, " \t\n", &save))
			argv[argc++] = tok;
		if (!argc)
			continue;
		if (!strcmp(argv[0], "quit"))
			break;
		if (parse_load(argc, argv, &l, err, sizeof(err))) {
			printf("{\"error\":\"%s\"}\n", err);
			continue;
		}
		load_run(&l, stdout);
	}
	return 0;
}

static int cmd_serve(int argc, char **argv)
{
	int tport = 0, uport = 0, i, ep, ls = -1, us = -1, one = 1;
	struct sockaddr_in a = { .sin_family = AF_INET };
	struct epoll_event ev = { .events = EPOLLIN }, evs[8];
	char buf[2048];

	for (i = 0; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--tcp-port"))
			tport = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--udp-port"))
			uport = atoi(argv[i + 1]);
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (tport) {
		ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		a.sin_port = htons(tport);
		if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) || listen(ls, 4096)) {
			perror("connbench serve: tcp");
			return 1;
		}
		ev.data.fd = ls;
		epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
	}
	if (uport) {
		us = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		a.sin_port = htons(uport);
		if (us < 0 || bind(us, (struct sockaddr *)&a, sizeof(a))) {
			perror("connbench serve: udp");
			return 1;
		}
		ev.data.fd = us;
		epoll_ctl(ep, EPOLL_CTL_ADD, us, &ev);
	}
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		int n = epoll_wait(ep, evs, 8, -1);

		for (i = 0; i < n; i++) {
			if (evs[i].data.fd == ls) {
				int c;

				while ((c = accept4(ls, NULL, NULL, SOCK_CLOEXEC)) >= 0)
					close(c);
			} else {
				while (recv(us, buf, sizeof(buf), 0) >= 0)
					;
			}
		}
	}
	return 0;
}

static int cmd_flip(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	double timeout = 10, interval_us = 200;
	bool want_ok = true;
	uint64_t deadline, n = 0;
	char payload[16] = "flip";
	int i, s;

	for (i = 0; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--dst"))
			inet_pton(AF_INET, argv[i + 1], &a.sin_addr);
		else if (!strcmp(argv[i], "--port"))
			a.sin_port = htons(atoi(argv[i + 1]));
		else if (!strcmp(argv[i], "--until"))
			want_ok = !strcmp(argv[i + 1], "ok");
		else if (!strcmp(argv[i], "--timeout"))
			timeout = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--interval-us"))
			interval_us = atof(argv[i + 1]);
	}
	s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return 1;
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready\n");
	deadline = now_ns() + (uint64_t)(timeout * 1e9);
	for (;;) {
		int ret = sendto(s, payload, sizeof(payload), 0, (struct sockaddr *)&a, sizeof(a));
		uint64_t t = now_ns();

		n++;
		if ((ret >= 0) == want_ok) {
			printf("{\"flipped_ns\":%llu,\"sends\":%llu}\n", (unsigned long long)t,
			       (unsigned long long)n);
			return 0;
		}
		if (t > deadline) {
			printf("{\"error\":\"timeout\",\"sends\":%llu}\n", (unsigned long long)n);
			return 1;
		}
		/* Spin, not sleep: a sleep's timer slack would blur the result,
		 * and a send per few us would flood the reader being measured. */
		while (now_ns() < t + (uint64_t)(interval_us * 1000))
			;
	}
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc >= 2 && !strcmp(argv[1], "serve"))
		return cmd_serve(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "run"))
		return cmd_run(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "agent"))
		return cmd_agent();
	if (argc >= 2 && !strcmp(argv[1], "flip"))
		return cmd_flip(argc - 2, argv + 2);
	fprintf(stderr, "usage: connbench serve|run|agent|flip ... (see the source)\n");
	return 2;
}
