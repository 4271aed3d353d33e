/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * sockprobe: perform exactly one socket operation and print one JSON line
 * with the real syscall result, so integration tests can assert what the
 * kernel (and sluice's cgroup hooks) did. See README.md for the syntax.
 *
 * Every line starts with
 *   {"op":..,"ret":N,"errno":N,"errname":"EPERM","stage":..,"pid":N,"comm":..
 * where ret/errno belong to the step named by "stage" (the first step that
 * failed, or the operation itself on success) and errname is "" on success.
 *
 * Exit status: 0 when the operation was attempted (failures included), 1 when
 * the harness around it could not be set up (unix socket, ready file,
 * io_uring ring; a JSON line is still printed), 2 on usage errors.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <linux/if_ether.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define IO_TIMEOUT_S	3
#define EXIT_SETUP	1
#define EXIT_USAGE	2
#define MAX_DESTS	8

/* ---------------------------------------------------------------- JSON */

struct out {
	char buf[4096];
	size_t len;
};

static void out_raw(struct out *o, const char *s, size_t n)
{
	if (o->len + n >= sizeof(o->buf)) {
		/* Every printed string is bounded; this is a programming error. */
		fprintf(stderr, "sockprobe: JSON line too long\n");
		exit(EXIT_SETUP);
	}
	memcpy(o->buf + o->len, s, n);
	o->len += n;
}

static void out_quoted(struct out *o, const char *s)
{
	out_raw(o, "\"", 1);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		char esc[8];

		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			out_raw(o, esc, 2);
		} else if (c < 0x20) {
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			out_raw(o, esc, 6);
		} else {
			out_raw(o, s, 1);
		}
	}
	out_raw(o, "\"", 1);
}

/* Extras are appended as ,"key":value; the header is added by emit(). */
static void out_key(struct out *o, const char *k)
{
	out_raw(o, ",", 1);
	out_quoted(o, k);
	out_raw(o, ":", 1);
}

static void out_str(struct out *o, const char *k, const char *v)
{
	out_key(o, k);
	out_quoted(o, v);
}

static void out_int(struct out *o, const char *k, long long v)
{
	char num[32];
	int n = snprintf(num, sizeof(num), "%lld", v);

	out_key(o, k);
	out_raw(o, num, (size_t)n);
}

static void out_bool(struct out *o, const char *k, bool v)
{
	out_key(o, k);
	out_raw(o, v ? "true" : "false", v ? 4 : 5);
}

static const char *errname(int err)
{
	const char *name;

	if (!err)
		return "";
	name = strerrorname_np(err);
	return name ? name : "EUNKNOWN";
}

/* "<prefix>errno":N,"<prefix>errname":"..." */
static void out_errno(struct out *o, const char *prefix, int err)
{
	char k[64];

	snprintf(k, sizeof(k), "%serrno", prefix);
	out_int(o, k, err);
	snprintf(k, sizeof(k), "%serrname", prefix);
	out_str(o, k, errname(err));
}

/* The result of one step: syscall return value and errno when it failed. */
struct res {
	long ret;
	int err;
	const char *stage;
};

/* Call as res_of(syscall(...), "stage"): errno is read before anything else. */
static struct res res_of(long ret, const char *stage)
{
	return (struct res){ .ret = ret, .err = ret < 0 ? errno : 0, .stage = stage };
}

static void emit(const char *op, struct res r, const struct out *extra)
{
	struct out h = { .len = 0 };
	char comm[17] = "";

	prctl(PR_GET_NAME, comm);
	out_raw(&h, "{\"op\":", 6);
	out_quoted(&h, op);
	out_int(&h, "ret", r.ret);
	out_errno(&h, "", r.err);
	out_str(&h, "stage", r.stage);
	out_int(&h, "pid", getpid());
	out_str(&h, "comm", comm);
	if (extra)
		out_raw(&h, extra->buf, extra->len);
	out_raw(&h, "}\n", 2);
	fwrite(h.buf, 1, h.len, stdout);
	fflush(stdout);
}

/* ----------------------------------------------------- options, usage */

enum {
	OPT_FAMILY	= 1u << 0,
	OPT_SEND	= 1u << 1,
	OPT_COUNT	= 1u << 2,
	OPT_READY	= 1u << 3,
	OPT_UNTIL	= 1u << 4,
	OPT_TIMEOUT	= 1u << 5,
	OPT_ASYNC	= 1u << 6,
	OPT_UDP		= 1u << 7,
	OPT_DENY	= 1u << 8,
	OPT_CREATE	= 1u << 9,
};

static const struct optspec {
	const char *name;
	unsigned int bit;
	bool has_arg;
} optspecs[] = {
	{ "--family", OPT_FAMILY, true },
	{ "--send", OPT_SEND, true },
	{ "--count", OPT_COUNT, true },
	{ "--ready-file", OPT_READY, true },
	{ "--until-file", OPT_UNTIL, true },
	{ "--timeout", OPT_TIMEOUT, true },
	{ "--async", OPT_ASYNC, false },
	{ "--udp", OPT_UDP, false },
	{ "--expect-deny", OPT_DENY, false },
	{ "--create", OPT_CREATE, true },
};

struct opts {
	unsigned int seen;
	int family;		/* 0: from the literal, 4 or 6 */
	long send;
	long count;
	long timeout;		/* seconds, 0 = none */
	const char *ready_file;
	const char *until_file;
	const char *create;
	char *pos[MAX_DESTS];
	int npos;
};

struct cmd {
	const char *name;
	int (*fn)(const struct opts *o);
	int min_pos, max_pos;
	unsigned int allowed;
	const char *usage;
};

static const struct cmd *cur_cmd;
static const struct cmd *cmd_table;	/* set by main() */

static void usage(const char *why)
{
	const struct cmd *c;

	if (why)
		fprintf(stderr, "sockprobe: %s\n", why);
	if (cur_cmd) {
		fprintf(stderr, "usage: sockprobe %s %s\n", cur_cmd->name, cur_cmd->usage);
	} else {
		fprintf(stderr, "usage: sockprobe COMMAND ARGS...\n");
		for (c = cmd_table; c->name; c++)
			fprintf(stderr, "  %s %s\n", c->name, c->usage);
	}
	exit(EXIT_USAGE);
}

static long parse_num(const char *s, long min, long max, const char *what)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) {
		fprintf(stderr, "sockprobe: bad %s '%s' (want %ld..%ld)\n", what, s, min, max);
		usage(NULL);
	}
	return v;
}

static void parse_opts(const struct cmd *c, int argc, char **argv, struct opts *o)
{
	const struct optspec *sp;
	size_t i;
	int a;

	for (a = 0; a < argc; a++) {
		if (strncmp(argv[a], "--", 2) != 0) {
			if (o->npos >= c->max_pos)
				usage("too many arguments");
			o->pos[o->npos++] = argv[a];
			continue;
		}
		sp = NULL;
		for (i = 0; i < sizeof(optspecs) / sizeof(optspecs[0]); i++)
			if (!strcmp(argv[a], optspecs[i].name))
				sp = &optspecs[i];
		if (!sp || !(c->allowed & sp->bit))
			usage("unknown option");
		if (sp->has_arg && ++a >= argc)
			usage("option needs a value");
		o->seen |= sp->bit;
		switch (sp->bit) {
		case OPT_FAMILY:
			o->family = (int)parse_num(argv[a], 4, 6, "family");
			if (o->family == 5)
				usage("family must be 4 or 6");
			break;
		case OPT_SEND:
			o->send = parse_num(argv[a], 0, 1L << 30, "byte count");
			break;
		case OPT_COUNT:
			o->count = parse_num(argv[a], 0, 1L << 30, "count");
			break;
		case OPT_TIMEOUT:
			o->timeout = parse_num(argv[a], 0, 3600, "timeout");
			break;
		case OPT_READY:
			o->ready_file = argv[a];
			break;
		case OPT_UNTIL:
			o->until_file = argv[a];
			break;
		case OPT_CREATE:
			o->create = argv[a];
			break;
		}
	}
	if (o->npos < c->min_pos)
		usage("missing arguments");
}

/* ---------------------------------------------------------- addresses */

struct addr {
	struct sockaddr_storage ss;
	socklen_t len;
	int family;
};

static void addr_v4(struct addr *a, const struct in_addr *ip, unsigned short port)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;

	memset(a, 0, sizeof(*a));
	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	sin->sin_addr = *ip;
	a->len = sizeof(*sin);
	a->family = AF_INET;
}

static void addr_v6(struct addr *a, const struct in6_addr *ip, unsigned short port)
{
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;

	memset(a, 0, sizeof(*a));
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(port);
	sin6->sin6_addr = *ip;
	a->len = sizeof(*sin6);
	a->family = AF_INET6;
}

/* Convert to the socket family: v4 <-> v4-mapped v6. False if impossible. */
static bool addr_to_family(struct addr *a, int family)
{
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
	struct in6_addr m = IN6ADDR_ANY_INIT;
	struct in_addr v4;

	if (a->family == family)
		return true;
	if (family == AF_INET6) {
		m.s6_addr[10] = m.s6_addr[11] = 0xff;
		memcpy(&m.s6_addr[12], &sin->sin_addr, 4);
		addr_v6(a, &m, ntohs(sin->sin_port));
		return true;
	}
	if (!IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr))
		return false;
	memcpy(&v4, &sin6->sin6_addr.s6_addr[12], 4);
	addr_v4(a, &v4, ntohs(sin6->sin6_port));
	return true;
}

/* IP literal (v6 without brackets) and port; family 0 follows the literal. */
static void parse_addr(const char *ip, const char *port, int family, struct addr *a)
{
	unsigned short p = (unsigned short)parse_num(port, 0, 65535, "port");
	struct in6_addr in6;
	struct in_addr in4;

	if (inet_pton(AF_INET, ip, &in4) == 1)
		addr_v4(a, &in4, p);
	else if (inet_pton(AF_INET6, ip, &in6) == 1)
		addr_v6(a, &in6, p);
	else
		usage("address must be an IPv4 or IPv6 literal");
	if (family && !addr_to_family(a, family == 4 ? AF_INET : AF_INET6))
		usage("--family 4 needs an IPv4 or v4-mapped address");
}

/* "a.b.c.d:port" or "[v6]:port" */
static void parse_hostport(char *s, struct addr *a)
{
	char *colon = strrchr(s, ':');
	char *ip = s;

	if (!colon)
		usage("destination must be ADDR:PORT or [ADDR]:PORT");
	*colon = '\0';
	if (*ip == '[') {
		size_t n = strlen(ip);

		if (n < 2 || ip[n - 1] != ']')
			usage("bad [ADDR]:PORT");
		ip[n - 1] = '\0';
		ip++;
	}
	parse_addr(ip, colon + 1, 0, a);
	*colon = ':';
	if (ip != s)
		ip[strlen(ip)] = ']';
}

static void fmt_sa(const struct sockaddr_storage *ss, char *buf, size_t n)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
		snprintf(buf, n, "%s:%u", ip, ntohs(sin->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
		snprintf(buf, n, "[%s]:%u", ip, ntohs(sin6->sin6_port));
	} else {
		snprintf(buf, n, "family%d", ss->ss_family);
	}
}

static unsigned int sa_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return 0;
}

/* "local":"ip:port","local_port":N (or peer), from getsockname/getpeername. */
static void out_name(struct out *o, const char *k, int fd, bool peer)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char buf[INET6_ADDRSTRLEN + 16], key[32];
	int rc;

	memset(&ss, 0, sizeof(ss));
	rc = peer ? getpeername(fd, (struct sockaddr *)&ss, &len)
		  : getsockname(fd, (struct sockaddr *)&ss, &len);
	if (rc < 0)
		return;
	fmt_sa(&ss, buf, sizeof(buf));
	out_str(o, k, buf);
	snprintf(key, sizeof(key), "%s_port", k);
	out_int(o, key, sa_port(&ss));
}

/* The address as given on the command line. */
static void out_given(struct out *o, const struct opts *op, int i)
{
	out_str(o, "addr", op->pos[i]);
	out_int(o, "port", parse_num(op->pos[i + 1], 0, 65535, "port"));
}

/* ------------------------------------------------------------ sockets */

static void set_timeouts(int fd, long secs)
{
	struct timeval tv = { .tv_sec = secs };

	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

static void dual_stack(int fd, int family)
{
	int off = 0;

	if (family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
}

/* Blocking socket with the I/O timeouts; -1 with errno intact on failure. */
static int probe_socket(int family, int type)
{
	int fd = socket(family, type | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	set_timeouts(fd, IO_TIMEOUT_S);
	dual_stack(fd, family);
	return fd;
}

static void close_keep_errno(int fd)
{
	int saved = errno;

	if (fd >= 0)
		close(fd);
	errno = saved;
}

/* A blocking connect that hit SO_SNDTIMEO fails with EINPROGRESS. */
static void out_timed_out(struct out *o, struct res r)
{
	out_bool(o, "timed_out", r.err == EINPROGRESS || r.err == EAGAIN ||
				 r.err == ETIMEDOUT || r.err == ETIME);
}

/* Write n bytes, half-close, read until EOF. */
static void xfer(int fd, long n, struct out *o)
{
	static char buf[65536];
	long sent = 0, received = 0;
	const char *stage = "";
	int err = 0;
	ssize_t k;

	memset(buf, 'x', sizeof(buf));
	while (sent < n) {
		size_t chunk = (size_t)(n - sent) < sizeof(buf) ? (size_t)(n - sent) : sizeof(buf);

		k = send(fd, buf, chunk, MSG_NOSIGNAL);
		if (k < 0) {
			err = errno;
			stage = "send";
			break;
		}
		sent += k;
	}
	if (!err && shutdown(fd, SHUT_WR) < 0) {
		err = errno;
		stage = "shutdown";
	}
	while (!err) {
		k = recv(fd, buf, sizeof(buf), 0);
		if (k < 0) {
			err = errno;
			stage = "recv";
		} else if (k == 0) {
			break;
		}
		received += k > 0 ? k : 0;
	}
	out_int(o, "sent", sent);
	out_int(o, "received", received);
	out_str(o, "io_stage", stage);
	out_errno(o, "io_", err);
}

/* Write "port\n" to path atomically, so pollers never see a partial file. */
static bool write_ready_file(const char *path, unsigned int port)
{
	char tmp[4096];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, getpid());
	f = fopen(tmp, "w");
	if (!f)
		return false;
	fprintf(f, "%u\n", port);
	if (fclose(f) != 0 || rename(tmp, path) < 0) {
		unlink(tmp);
		return false;
	}
	return true;
}

static const char payload[] = "sluice-probe";

/* ----------------------------------------------------------- commands */

static int cmd_tcp_connect(const struct opts *o)
{
	struct out x = { .len = 0 };
	struct addr a;
	struct res r;
	int fd;

	parse_addr(o->pos[0], o->pos[1], o->family, &a);
	out_given(&x, o, 0);
	out_int(&x, "family", a.family == AF_INET ? 4 : 6);
	fd = probe_socket(a.family, SOCK_STREAM);
	if (fd < 0) {
		r = res_of(-1, "socket");
	} else {
		r = res_of(connect(fd, (struct sockaddr *)&a.ss, a.len), "connect");
		out_timed_out(&x, r);
	}
	if (r.ret == 0) {
		out_name(&x, "local", fd, false);
		out_name(&x, "peer", fd, true);
		xfer(fd, o->send, &x);
	} else {
		out_int(&x, "sent", 0);
	}
	close_keep_errno(fd);
	emit("tcp-connect", r, &x);
	return 0;
}

static int cmd_udp_connect(const struct opts *o)
{
	struct out x = { .len = 0 };
	struct addr a;
	struct res r, s;
	int fd;

	parse_addr(o->pos[0], o->pos[1], o->family, &a);
	out_given(&x, o, 0);
	fd = probe_socket(a.family, SOCK_DGRAM);
	if (fd < 0) {
		r = res_of(-1, "socket");
	} else {
		r = res_of(connect(fd, (struct sockaddr *)&a.ss, a.len), "connect");
	}
	if (r.ret == 0) {
		s = res_of(send(fd, payload, 1, MSG_NOSIGNAL), "send");
		out_int(&x, "send_ret", s.ret);
		out_errno(&x, "send_", s.err);
		out_name(&x, "local", fd, false);
		out_name(&x, "peer", fd, true);
	}
	close_keep_errno(fd);
	emit("udp-connect", r, &x);
	return 0;
}

static int cmd_udp_sendto(const struct opts *o)
{
	struct out x = { .len = 0 };
	struct addr a;
	struct res r;
	int fd;

	parse_addr(o->pos[0], o->pos[1], o->family, &a);
	out_given(&x, o, 0);
	fd = probe_socket(a.family, SOCK_DGRAM);
	if (fd < 0) {
		r = res_of(-1, "socket");
	} else {
		r = res_of(sendto(fd, payload, 1, MSG_NOSIGNAL,
				  (struct sockaddr *)&a.ss, a.len), "sendto");
		out_name(&x, "local", fd, false);
	}
	close_keep_errno(fd);
	emit("udp-sendto", r, &x);
	return 0;
}

static int cmd_sendmmsg(const struct opts *o)
{
	struct out x = { .len = 0 };
	struct mmsghdr msgs[MAX_DESTS];
	struct iovec iov[MAX_DESTS];
	struct addr a[MAX_DESTS];
	int i, family = AF_INET, fd;
	struct res r;

	for (i = 0; i < o->npos; i++) {
		parse_hostport(o->pos[i], &a[i]);
		if (a[i].family == AF_INET6)
			family = AF_INET6;
	}
	memset(msgs, 0, sizeof(msgs));
	for (i = 0; i < o->npos; i++) {
		addr_to_family(&a[i], family);
		iov[i].iov_base = (void *)payload;
		iov[i].iov_len = 1;
		msgs[i].msg_hdr.msg_name = &a[i].ss;
		msgs[i].msg_hdr.msg_namelen = a[i].len;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	out_key(&x, "dests");
	out_raw(&x, "[", 1);
	for (i = 0; i < o->npos; i++) {
		if (i)
			out_raw(&x, ",", 1);
		out_quoted(&x, o->pos[i]);
	}
	out_raw(&x, "]", 1);
	out_int(&x, "messages", o->npos);
	out_int(&x, "family", family == AF_INET ? 4 : 6);
	fd = probe_socket(family, SOCK_DGRAM);
	if (fd < 0)
		r = res_of(-1, "socket");
	else
		r = res_of(sendmmsg(fd, msgs, (unsigned int)o->npos, MSG_NOSIGNAL), "sendmmsg");
	close_keep_errno(fd);
	emit("sendmmsg", r, &x);
	return 0;
}

static int cmd_tfo(const struct opts *o)
{
	struct out x = { .len = 0 };
	struct addr a;
	struct res r;
	int fd;

	parse_addr(o->pos[0], o->pos[1], o->family, &a);
	out_given(&x, o, 0);
	fd = probe_socket(a.family, SOCK_STREAM);
	if (fd < 0) {
		r = res_of(-1, "socket");
	} else {
		r = res_of(sendto(fd, payload, sizeof(payload) - 1, MSG_FASTOPEN | MSG_NOSIGNAL,
				  (struct sockaddr *)&a.ss, a.len), "sendto");
		out_timed_out(&x, r);
		if (r.ret >= 0) {
			out_name(&x, "local", fd, false);
			out_name(&x, "peer", fd, true);
		}
	}
	close_keep_errno(fd);
	emit("tfo", r, &x);
	return 0;
}

static int cmd_tfo_connect(const struct opts *o)
{
	struct out x = { .len = 0 };
	struct addr a;
	struct res r, s;
	int fd, on = 1;

	parse_addr(o->pos[0], o->pos[1], o->family, &a);
	out_given(&x, o, 0);
	fd = probe_socket(a.family, SOCK_STREAM);
	if (fd < 0)
		r = res_of(-1, "socket");
	else
		r = res_of(setsockopt(fd, IPPROTO_TCP, TCP_FASTOPEN_CONNECT, &on, sizeof(on)),
			   "setsockopt");
	if (r.ret == 0) {
		r = res_of(connect(fd, (struct sockaddr *)&a.ss, a.len), "connect");
		out_timed_out(&x, r);
	}
	if (r.ret == 0) {
		s = res_of(send(fd, payload, sizeof(payload) - 1, MSG_NOSIGNAL), "send");
		out_int(&x, "send_ret", s.ret);
		out_errno(&x, "send_", s.err);
		out_name(&x, "local", fd, false);
		out_name(&x, "peer", fd, true);
	}
	close_keep_errno(fd);
	emit("tfo-connect", r, &x);
	return 0;
}

/* Submit the prepared SQE and wait for its CQE; res or -ETIME on timeout. */
static int uring_run(struct io_uring *ring, long secs)
{
	struct __kernel_timespec ts = { .tv_sec = secs };
	struct io_uring_cqe *cqe;
	int rc;

	rc = io_uring_submit(ring);
	if (rc < 0)
		return rc;
	rc = io_uring_wait_cqe_timeout(ring, &cqe, &ts);
	if (rc < 0)
		return rc;
	rc = cqe->res;
	io_uring_cqe_seen(ring, cqe);
	return rc;
}

static struct res res_cqe(int res, const char *stage)
{
	return (struct res){ .ret = res < 0 ? -1 : res, .err = res < 0 ? -res : 0,
			     .stage = stage };
}

static int cmd_uring_connect(const struct opts *o)
{
	bool async = o->seen & OPT_ASYNC, via_uring;
	struct out x = { .len = 0 };
	struct io_uring_probe *probe;
	struct io_uring_sqe *sqe;
	struct io_uring ring;
	struct addr a;
	struct res r;
	int rc, fd;

	parse_addr(o->pos[0], o->pos[1], o->family, &a);
	out_given(&x, o, 0);
	out_bool(&x, "async", async);
	rc = io_uring_queue_init(4, &ring, 0);
	if (rc < 0) {
		emit("uring-connect", res_cqe(rc, "io_uring_setup"), &x);
		return EXIT_SETUP;
	}
	probe = io_uring_get_probe_ring(&ring);
	via_uring = probe && io_uring_opcode_supported(probe, IORING_OP_SOCKET);
	if (probe)
		io_uring_free_probe(probe);
	out_str(&x, "socket_via", via_uring ? "io_uring" : "socket");

	if (via_uring) {
		sqe = io_uring_get_sqe(&ring);
		io_uring_prep_socket(sqe, a.family, SOCK_STREAM, 0, 0);
		fd = uring_run(&ring, IO_TIMEOUT_S);
		r = res_cqe(fd, "socket");
	} else {
		fd = socket(a.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		r = res_of(fd, "socket");
	}
	if (fd >= 0) {
		dual_stack(fd, a.family);
		sqe = io_uring_get_sqe(&ring);
		io_uring_prep_connect(sqe, fd, (struct sockaddr *)&a.ss, a.len);
		if (async)
			sqe->flags |= IOSQE_ASYNC;
		r = res_cqe(uring_run(&ring, IO_TIMEOUT_S), "connect");
		out_bool(&x, "timed_out", r.err == ETIME);
		if (r.ret == 0) {
			out_name(&x, "local", fd, false);
			out_name(&x, "peer", fd, true);
		}
	}
	/* Tears down (cancels) a connect still in flight after a timeout. */
	io_uring_queue_exit(&ring);
	if (fd >= 0)
		close(fd);
	emit("uring-connect", r, &x);
	return 0;
}

static int cmd_raw(const struct opts *o)
{
	int v = (int)parse_num(o->pos[0], 4, 6, "address family");
	struct out x = { .len = 0 };
	struct res r;

	if (v == 5)
		usage("address family must be 4 or 6");
	out_int(&x, "family", v);
	r = res_of(v == 4 ? socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP)
			  : socket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMPV6), "socket");
	close_keep_errno((int)r.ret);
	emit("raw", r, &x);
	return 0;
}

static int cmd_packet(const struct opts *o)
{
	struct res r;

	r = res_of(socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL)), "socket");
	close_keep_errno((int)r.ret);
	emit("packet", r, NULL);
	return 0;
}

static int cmd_serve_echo(const struct opts *o)
{
	struct sockaddr_storage bound, peer;
	socklen_t blen = sizeof(bound), plen;
	char pbuf[INET6_ADDRSTRLEN + 16];
	struct out x = { .len = 0 };
	static char buf[65536];
	struct addr a;
	struct res r;
	int lfd, on = 1;
	long i;

	parse_addr(o->pos[0], o->pos[1], o->family, &a);
	out_given(&x, o, 0);
	lfd = socket(a.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	r = res_of(lfd, "socket");
	if (lfd >= 0) {
		dual_stack(lfd, a.family);
		(void)setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
		r = res_of(bind(lfd, (struct sockaddr *)&a.ss, a.len), "bind");
	}
	if (r.ret == 0)
		r = res_of(listen(lfd, 128), "listen");
	if (r.ret == 0)
		r = res_of(getsockname(lfd, (struct sockaddr *)&bound, &blen), "getsockname");
	if (r.ret == 0 && o->ready_file && !write_ready_file(o->ready_file, sa_port(&bound)))
		r = res_of(-1, "ready-file");
	if (r.ret < 0) {
		emit("serve-echo", r, &x);
		return EXIT_SETUP;
	}
	if (o->timeout)
		set_timeouts(lfd, o->timeout);

	for (i = 0; !o->count || i < o->count; i++) {
		long bytes = 0;
		int cfd, err = 0;
		ssize_t k;

		x.len = 0;
		out_given(&x, o, 0);
		out_int(&x, "index", i);
		plen = sizeof(peer);
		cfd = accept4(lfd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
		r = res_of(cfd, "accept");
		if (cfd < 0) {
			emit("serve-echo", r, &x);
			break;
		}
		if (o->timeout)
			set_timeouts(cfd, o->timeout);
		while ((k = recv(cfd, buf, sizeof(buf), 0)) > 0) {
			if (send(cfd, buf, (size_t)k, MSG_NOSIGNAL) != k) {
				err = errno;
				break;
			}
			bytes += k;
		}
		if (k < 0)
			err = errno;
		/* From accept: getpeername fails once the peer has reset. */
		fmt_sa(&peer, pbuf, sizeof(pbuf));
		out_str(&x, "peer", pbuf);
		out_int(&x, "peer_port", sa_port(&peer));
		out_name(&x, "local", cfd, false);
		out_int(&x, "bytes", bytes);
		out_errno(&x, "io_", err);
		close(cfd);
		emit("serve-echo", r, &x);
	}
	close(lfd);
	return 0;
}

static const struct {
	const char *name;
	int family, type;
} creatables[] = {
	{ "tcp4", AF_INET, SOCK_STREAM },
	{ "tcp6", AF_INET6, SOCK_STREAM },
	{ "udp4", AF_INET, SOCK_DGRAM },
	{ "udp6", AF_INET6, SOCK_DGRAM },
};

static bool unix_addr(const char *path, struct sockaddr_un *sun)
{
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun->sun_path))
		return false;
	strcpy(sun->sun_path, path);
	return true;
}

static int cmd_fd_send(const struct opts *o)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { .iov_base = (void *)payload, .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
			      .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	struct timespec nap = { .tv_nsec = 50 * 1000 * 1000 };
	struct out x = { .len = 0 };
	struct sockaddr_un sun;
	struct cmsghdr *cm;
	int i, fd, ufd, tries;
	struct res r;
	char c;

	if (!o->create)
		usage("--create is required");
	for (i = 0; i < (int)(sizeof(creatables) / sizeof(creatables[0])); i++)
		if (!strcmp(o->create, creatables[i].name))
			break;
	if (i == (int)(sizeof(creatables) / sizeof(creatables[0])))
		usage("--create must be tcp4, tcp6, udp4 or udp6");
	if (!unix_addr(o->pos[0], &sun))
		usage("socket path too long");
	out_str(&x, "created", o->create);

	fd = probe_socket(creatables[i].family, creatables[i].type);
	if (fd < 0) {
		emit("fd-send", res_of(-1, "socket"), &x);
		return 0;
	}
	ufd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	r = res_of(ufd, "unix-socket");
	for (tries = 0; ufd >= 0 && tries < IO_TIMEOUT_S * 20; tries++) {
		r = res_of(connect(ufd, (struct sockaddr *)&sun, sizeof(sun)), "unix-connect");
		if (r.ret == 0 || (r.err != ENOENT && r.err != ECONNREFUSED))
			break;
		nanosleep(&nap, NULL);
	}
	if (r.ret < 0) {
		emit("fd-send", r, &x);
		return EXIT_SETUP;
	}
	cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	r = res_of(sendmsg(ufd, &msg, MSG_NOSIGNAL), "sendmsg");
	if (r.ret > 0) {
		/* Wait (bounded) for the receiver to close: keeps tests ordered. */
		set_timeouts(ufd, IO_TIMEOUT_S);
		while (read(ufd, &c, 1) > 0)
			;
	}
	close(fd);
	close(ufd);
	emit("fd-send", r, &x);
	return r.ret < 0 ? EXIT_SETUP : 0;
}

static int cmd_fd_recv(const struct opts *o)
{
	char cbuf[CMSG_SPACE(sizeof(int))], c;
	struct iovec iov = { .iov_base = &c, .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
			      .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	bool udp = o->seen & OPT_UDP;
	int lfd, cfd = -1, fd = -1, domain = 0, type = 0;
	socklen_t olen = sizeof(int);
	struct out x = { .len = 0 };
	struct sockaddr_un sun;
	struct cmsghdr *cm;
	struct addr a;
	struct res r;

	if (!unix_addr(o->pos[0], &sun))
		usage("socket path too long");
	parse_addr(o->pos[1], o->pos[2], 0, &a);
	out_given(&x, o, 1);
	out_bool(&x, "udp", udp);

	unlink(sun.sun_path);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	r = res_of(lfd, "unix-socket");
	if (r.ret >= 0)
		r = res_of(bind(lfd, (struct sockaddr *)&sun, sizeof(sun)), "unix-bind");
	if (r.ret == 0)
		r = res_of(listen(lfd, 1), "unix-listen");
	if (r.ret == 0 && o->ready_file && !write_ready_file(o->ready_file, 0))
		r = res_of(-1, "ready-file");
	if (r.ret == 0) {
		set_timeouts(lfd, o->timeout ? o->timeout : 10);
		cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		r = res_of(cfd, "unix-accept");
	}
	if (r.ret >= 0) {
		set_timeouts(cfd, IO_TIMEOUT_S);
		r = res_of(recvmsg(cfd, &msg, MSG_CMSG_CLOEXEC), "recvmsg");
		cm = CMSG_FIRSTHDR(&msg);
		if (r.ret >= 0 && cm && cm->cmsg_level == SOL_SOCKET &&
		    cm->cmsg_type == SCM_RIGHTS)
			memcpy(&fd, CMSG_DATA(cm), sizeof(int));
		else if (r.ret >= 0)
			r = (struct res){ .ret = -1, .err = EBADMSG, .stage = "recvmsg" };
	}
	if (fd < 0) {
		close_keep_errno(cfd);
		close_keep_errno(lfd);
		unlink(sun.sun_path);
		emit("fd-recv", r, &x);
		return EXIT_SETUP;
	}
	getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &olen);
	olen = sizeof(int);
	getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &olen);
	out_int(&x, "fd_family", domain == AF_INET ? 4 : domain == AF_INET6 ? 6 : domain);
	out_str(&x, "fd_type", type == SOCK_STREAM ? "stream" : type == SOCK_DGRAM ? "dgram" : "other");
	/* Best effort: on mismatch the kernel's own error is the result. */
	addr_to_family(&a, domain);
	set_timeouts(fd, IO_TIMEOUT_S);
	if (udp) {
		r = res_of(sendto(fd, payload, 1, MSG_NOSIGNAL,
				  (struct sockaddr *)&a.ss, a.len), "sendto");
	} else {
		r = res_of(connect(fd, (struct sockaddr *)&a.ss, a.len), "connect");
		out_timed_out(&x, r);
	}
	if (r.ret >= 0)
		out_name(&x, "local", fd, false);
	close(fd);
	close(cfd);
	close(lfd);
	unlink(sun.sun_path);
	emit("fd-recv", r, &x);
	return 0;
}

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
	stop_requested = 1;
}

static int cmd_connect_loop(const struct opts *o)
{
	struct sigaction sa = { .sa_handler = on_stop };	/* no SA_RESTART */
	long ok = 0, eperm = 0, other = 0, attempts = 0;
	bool deny = o->seen & OPT_DENY;
	struct linger rst = { .l_onoff = 1, .l_linger = 0 };
	struct out x = { .len = 0 };
	int first_other = 0;
	struct addr a;

	if (!(o->seen & (OPT_COUNT | OPT_UNTIL)))
		usage("--count or --until-file is required");
	parse_addr(o->pos[0], o->pos[1], o->family, &a);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	while (!stop_requested &&
	       (o->until_file ? access(o->until_file, F_OK) != 0 : attempts < o->count)) {
		int fd = probe_socket(a.family, SOCK_STREAM);
		int rc = fd < 0 ? -1 : connect(fd, (struct sockaddr *)&a.ss, a.len);
		int err = rc < 0 ? errno : 0;

		if (fd >= 0) {
			/* RST on close: no TIME_WAIT, so long loops keep their ports. */
			(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &rst, sizeof(rst));
			close(fd);
		}
		if (err == EINTR && stop_requested)
			break;
		attempts++;
		if (!err) {
			ok++;
		} else if (err == EPERM) {
			eperm++;
		} else {
			other++;
			if (!first_other)
				first_other = err;
		}
	}
	out_given(&x, o, 0);
	out_str(&x, "expect", deny ? "deny" : "allow");
	out_int(&x, "attempts", attempts);
	out_int(&x, "ok", ok);
	out_int(&x, "eperm", eperm);
	out_int(&x, "other", other);
	out_errno(&x, "first_other_", first_other);
	out_int(&x, "wrong", other + (deny ? ok : eperm));
	out_bool(&x, "stopped", stop_requested);
	emit("connect-loop", (struct res){ .ret = 0, .err = 0, .stage = "summary" }, &x);
	return 0;
}

#define ADDR_OPTS	(OPT_FAMILY)

static const struct cmd cmds[] = {
	{ "tcp-connect", cmd_tcp_connect, 2, 2, ADDR_OPTS | OPT_SEND,
	  "ADDR PORT [--family 4|6] [--send N]" },
	{ "udp-connect", cmd_udp_connect, 2, 2, ADDR_OPTS, "ADDR PORT [--family 4|6]" },
	{ "udp-sendto", cmd_udp_sendto, 2, 2, ADDR_OPTS, "ADDR PORT [--family 4|6]" },
	{ "sendmmsg", cmd_sendmmsg, 1, MAX_DESTS, 0,
	  "ADDR:PORT|[ADDR6]:PORT ... (1-8 destinations)" },
	{ "tfo", cmd_tfo, 2, 2, ADDR_OPTS, "ADDR PORT [--family 4|6]" },
	{ "tfo-connect", cmd_tfo_connect, 2, 2, ADDR_OPTS, "ADDR PORT [--family 4|6]" },
	{ "uring-connect", cmd_uring_connect, 2, 2, ADDR_OPTS | OPT_ASYNC,
	  "ADDR PORT [--family 4|6] [--async]" },
	{ "raw", cmd_raw, 1, 1, 0, "4|6" },
	{ "packet", cmd_packet, 0, 0, 0, "" },
	{ "serve-echo", cmd_serve_echo, 2, 2, ADDR_OPTS | OPT_COUNT | OPT_READY | OPT_TIMEOUT,
	  "ADDR PORT [--count N (0=forever)] [--ready-file F] [--timeout S]" },
	{ "fd-send", cmd_fd_send, 1, 1, OPT_CREATE, "SOCKPATH --create tcp4|tcp6|udp4|udp6" },
	{ "fd-recv", cmd_fd_recv, 3, 3, OPT_UDP | OPT_READY | OPT_TIMEOUT,
	  "SOCKPATH ADDR PORT [--udp] [--ready-file F] [--timeout S]" },
	{ "connect-loop", cmd_connect_loop, 2, 2,
	  ADDR_OPTS | OPT_COUNT | OPT_UNTIL | OPT_DENY,
	  "ADDR PORT (--count N | --until-file F) [--expect-deny] [--family 4|6]" },
	{ NULL, NULL, 0, 0, 0, NULL },
};

int main(int argc, char **argv)
{
	struct opts o = { .npos = 0 };
	const struct cmd *c;

	cmd_table = cmds;
	signal(SIGPIPE, SIG_IGN);
	if (argc < 2)
		usage(NULL);
	for (c = cmds; c->name; c++)
		if (!strcmp(c->name, argv[1]))
			break;
	if (!c->name)
		usage("unknown command");
	cur_cmd = c;
	parse_opts(c, argc - 2, argv + 2, &o);
	return c->fn(&o);
}
