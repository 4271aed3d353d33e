// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The correlator: synthetic kernel ESTABLISHED/CLOSE/CONNECT records and
 * gateway records joined on source ip:port and lifetime (keep-alive, reused
 * ports, tolerance, late lines, retention), the four findings with their
 * negative cases, bounds, and every emitted record checked as JSON. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <cjson/cJSON.h>

#include "correlate.h"
#include "gateway.h"
#include "peer.h"

#define SEC	1000000000ull
#define MS	1000000ull
#define T0	(1764295504ull * SEC)	/* 2025-11-28T02:05:04Z */

#define AGENT_IP	"10.244.1.5"
#define GW_IP		"10.96.0.10"
#define GW_PORT		3000

/* ---- helpers -------------------------------------------------------- */

#define MAX_OUT 64

struct sink {
	struct correlate *c;
	int n;
	struct corr_record rec[MAX_OUT];	/* pointers inside are stale after the call */
	cJSON *json[MAX_OUT];
	uint64_t cookie[MAX_OUT];
};

static void on_emit(void *ctx, const struct corr_record *rec)
{
	struct sink *s = ctx;
	char buf[8192];
	int n;

	assert_true(s->n < MAX_OUT);
	n = correlate__render(s->c, rec, buf, sizeof(buf));
	if (n < 0)
		fail_msg("render: %d", n);
	assert_int_equal((size_t)n, strlen(buf));
	s->json[s->n] = cJSON_Parse(buf);
	if (!s->json[s->n])
		fail_msg("not JSON: %s", buf);
	s->rec[s->n] = *rec;
	s->cookie[s->n] = rec->flow ? rec->flow->cookie : 0;
	s->n++;
}

static void sink_reset(struct sink *s)
{
	for (int i = 0; i < s->n; i++)
		cJSON_Delete(s->json[i]);
	s->n = 0;
}

static struct correlate *new_corr(struct sink *s, const struct corr_opts *o)
{
	memset(s, 0, sizeof(*s));
	s->c = correlate__new(o, on_emit, s);
	assert_non_null(s->c);
	return s->c;
}

static void free_corr(struct sink *s)
{
	sink_reset(s);
	correlate__free(s->c);
}

static void v4(uint8_t out[16], const char *ip)
{
	memset(out, 0, 16);
	out[10] = out[11] = 0xff;
	assert_int_equal(inet_pton(AF_INET, ip, out + 12), 1);
}

static struct sl_event lifecycle(uint8_t type, const char *src, uint16_t sport, const char *dst,
				 uint16_t dport, uint64_t cookie, uint8_t class)
{
	struct sl_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.type = type;
	ev.family = AF_INET;
	ev.protocol = 6;
	ev.class = class;
	ev.cookie = cookie;
	ev.cgroup_id = 4242;
	ev.ident_cgid = 4242;
	ev.pid = 777;
	ev.tid = 777;
	ev.uid = 1000;
	ev.set_id = 3;
	ev.rule_id = 16;
	snprintf(ev.comm, sizeof(ev.comm), "python3");
	v4(ev.saddr, src);
	v4(ev.daddr, dst);
	ev.sport = sport;
	ev.dport = dport;
	return ev;
}

static const char *const TOOLS[] = { "search", "fetch" };

static struct corr_flow_meta pod_meta(uint64_t t)
{
	struct corr_flow_meta m = {
		.time_ns = t,
		.cgroup = "/kubepods.slice/kubepods-pod1234.slice/cri-containerd-ab.scope",
		.pod_namespace = "agents",
		.pod_name = "research-agent-7d9f",
		.service_account = "research-agent",
		.policy = "agents/research-agent",
		.rule = "gateway",
		.class = SL_CLASS_GATEWAY,
		.has_gateway = true,
		.tools_listed = true,
		.tools = TOOLS,
		.ntools = 2,
	};

	return m;
}

static void established(struct correlate *c, uint16_t sport, uint64_t cookie, uint64_t t)
{
	struct sl_event ev = lifecycle(SL_EV_ESTABLISHED, AGENT_IP, sport, GW_IP, GW_PORT, cookie,
				       SL_CLASS_GATEWAY);
	struct corr_flow_meta m = pod_meta(t);

	assert_int_equal(correlate__flow(c, &ev, &m), 0);
}

static void closed(struct correlate *c, uint16_t sport, uint64_t cookie, uint64_t t, uint64_t dur)
{
	struct sl_event ev = lifecycle(SL_EV_CLOSE, AGENT_IP, sport, GW_IP, GW_PORT, cookie,
				       SL_CLASS_GATEWAY);
	struct corr_flow_meta m = pod_meta(t);

	ev.duration_ns = dur;
	assert_int_equal(correlate__flow(c, &ev, &m), 0);
}

/* A gateway record of an MCP tools/call from PEER_IP:PORT that ended at
 * END and took DUR. */
static struct gw_record gwrec(const char *peer_ip, uint16_t port, uint64_t end, uint64_t dur,
			      const char *tool, int status, const char *reason)
{
	struct gw_record r;
	char peer[64];

	memset(&r, 0, sizeof(r));
	snprintf(peer, sizeof(peer), "%s:%u", peer_ip, port);
	assert_int_equal(gateway__parse_peer(peer, strlen(peer), &r), 0);
	r.format = GW_AGENTGATEWAY;
	r.time_ns = end;
	r.duration_ns = dur;
	r.status = status;
	snprintf(r.protocol, sizeof(r.protocol), "mcp");
	snprintf(r.mcp_method, sizeof(r.mcp_method), "tools/call");
	snprintf(r.mcp_target, sizeof(r.mcp_target), "everything");
	snprintf(r.tool, sizeof(r.tool), "%s", tool);
	snprintf(r.reason, sizeof(r.reason), "%s", reason ? reason : "");
	snprintf(r.endpoint, sizeof(r.endpoint), "10.244.2.9:8080");
	snprintf(r.gateway, sizeof(r.gateway), "default/agentgateway-proxy");
	snprintf(r.route, sizeof(r.route), "default/mcp");
	return r;
}

static const char *jstr(const cJSON *o, const char *path)
{
	char buf[256], *save = NULL, *tok;
	const cJSON *cur = o;

	snprintf(buf, sizeof(buf), "%s", path);
	for (tok = strtok_r(buf, ".", &save); tok && cur; tok = strtok_r(NULL, ".", &save))
		cur = cJSON_GetObjectItemCaseSensitive(cur, tok);
	if (!cur)
		fail_msg("no %s", path);
	return cJSON_IsString(cur) ? cur->valuestring : cJSON_IsNull(cur) ? NULL : "(not a string)";
}

static double jnum(const cJSON *o, const char *path)
{
	char buf[256], *save = NULL, *tok;
	const cJSON *cur = o;

	snprintf(buf, sizeof(buf), "%s", path);
	for (tok = strtok_r(buf, ".", &save); tok && cur; tok = strtok_r(NULL, ".", &save))
		cur = cJSON_GetObjectItemCaseSensitive(cur, tok);
	if (!cur || !cJSON_IsNumber(cur))
		fail_msg("no number %s", path);
	return cur->valuedouble;
}

static void expect_str(const cJSON *o, const char *path, const char *want)
{
	const char *got = jstr(o, path);

	if (!want && !got)
		return;
	if (!want || !got || strcmp(want, got))
		fail_msg("%s: want %s, got %s", path, want ? want : "null", got ? got : "null");
}

static int count_type(const struct sink *s, enum corr_type t, enum corr_finding k)
{
	int n = 0;

	for (int i = 0; i < s->n; i++)
		if (s->rec[i].type == t && (t == CORR_GATEWAY || s->rec[i].finding == k))
			n++;
	return n;
}

/* ---- joins -------------------------------------------------------------- */

static void test_keepalive(void **state)
{
	struct sink s;
	struct correlate *c = new_corr(&s, NULL);
	struct corr_result res;
	struct gw_record r1, r2;
	struct corr_stats st;
	const cJSON *j;

	established(c, 43210, 99887766, T0);
	r1 = gwrec(AGENT_IP, 43210, T0 + 1 * SEC, 3 * MS, "search", 200, NULL);
	r2 = gwrec(AGENT_IP, 43210, T0 + 2 * SEC, 3 * MS, "fetch", 200, NULL);
	assert_int_equal(correlate__gateway(c, &r1, &res), 0);
	assert_int_equal(res.status, CORR_JOINED);
	assert_int_equal(res.findings, 0);
	assert_int_equal(res.flow->cookie, 99887766);
	assert_int_equal(correlate__gateway(c, &r2, &res), 0);
	assert_int_equal(res.status, CORR_JOINED);
	closed(c, 43210, 99887766, T0 + 3 * SEC, 3 * SEC);

	assert_int_equal(s.n, 2);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(s.rec[i].type, CORR_GATEWAY);
		assert_int_equal(s.cookie[i], 99887766);
	}
	j = s.json[0];
	expect_str(j, "type", "gateway");
	expect_str(j, "time", "2025-11-28T02:05:05.000000000Z");
	expect_str(j, "start", "2025-11-28T02:05:04.997000000Z");
	assert_true(jnum(j, "duration_ns") == 3e6);
	expect_str(j, "node", NULL);
	expect_str(j, "gateway.protocol", "mcp");
	expect_str(j, "gateway.mcp_method", "tools/call");
	expect_str(j, "gateway.tool", "search");
	expect_str(j, "gateway.peer", AGENT_IP ":43210");
	expect_str(j, "gateway.endpoint", "10.244.2.9:8080");
	expect_str(j, "gateway.route", "default/mcp");
	expect_str(j, "gateway.reason", NULL);
	assert_true(jnum(j, "gateway.status") == 200);
	expect_str(j, "policy", "agents/research-agent");
	expect_str(j, "rule", "gateway");
	expect_str(j, "class", "gateway");
	expect_str(j, "workload.namespace", "agents");
	expect_str(j, "workload.pod", "research-agent-7d9f");
	expect_str(j, "workload.service_account", "research-agent");
	assert_true(jnum(j, "workload.cgroup_id") == 4242);
	assert_true(jnum(j, "process.pid") == 777);
	expect_str(j, "process.comm", "python3");
	assert_true(jnum(j, "socket.cookie") == 99887766);
	expect_str(j, "socket.established", "2025-11-28T02:05:04.000000000Z");
	expect_str(j, "socket.close", NULL);	/* open when rendered */
	expect_str(j, "src", AGENT_IP ":43210");
	expect_str(j, "dst", GW_IP ":3000");
	expect_str(s.json[1], "gateway.tool", "fetch");

	correlate__stats(c, &st);
	assert_int_equal(st.joined, 2);
	assert_int_equal(st.flows, 1);
	assert_int_equal(st.flows_open, 0);
	assert_int_equal(st.idents, 1);
	free_corr(&s);
}

static void test_reused_port(void **state)
{
	struct sink s;
	struct correlate *c = new_corr(&s, NULL);
	struct gw_record r;
	struct corr_result res;

	established(c, 50000, 1, T0);
	closed(c, 50000, 1, T0 + 10 * SEC, 10 * SEC);
	established(c, 50000, 2, T0 + 20 * SEC);
	closed(c, 50000, 2, T0 + 30 * SEC, 10 * SEC);
	/* a third flow whose close was lost: bounded by the fourth */
	established(c, 50000, 3, T0 + 40 * SEC);
	established(c, 50000, 4, T0 + 50 * SEC);

	r = gwrec(AGENT_IP, 50000, T0 + 5 * SEC, 100 * MS, "search", 200, NULL);
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.status, CORR_JOINED);
	assert_int_equal(res.flow->cookie, 1);
	r = gwrec(AGENT_IP, 50000, T0 + 25 * SEC, 100 * MS, "search", 200, NULL);
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.flow->cookie, 2);
	r = gwrec(AGENT_IP, 50000, T0 + 45 * SEC, 100 * MS, "search", 200, NULL);
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.flow->cookie, 3);
	assert_true(res.flow->close_inferred);
	assert_int_equal(res.flow->close_ns, T0 + 50 * SEC);
	r = gwrec(AGENT_IP, 50000, T0 + 55 * SEC, 100 * MS, "search", 200, NULL);
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.flow->cookie, 4);
	assert_int_equal(s.n, 4);
	expect_str(s.json[2], "socket.close", "2025-11-28T02:05:54.000000000Z");
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(s.json[2], "socket"),
						     "close_inferred")));
	free_corr(&s);

	/* Port reused within the tolerance: the flow that holds the start
	 * exactly wins over the one that holds it only with tolerance. */
	c = new_corr(&s, NULL);
	established(c, 50001, 10, T0);
	closed(c, 50001, 10, T0 + 10 * SEC, 10 * SEC);
	established(c, 50001, 11, T0 + 10 * SEC + 200 * MS);
	r = gwrec(AGENT_IP, 50001, T0 + 10 * SEC + 500 * MS, 100 * MS, "search", 200, NULL);
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.flow->cookie, 11);
	r = gwrec(AGENT_IP, 50001, T0 + 10 * SEC + 100 * MS, 150 * MS, "search", 200, NULL);
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.flow->cookie, 10);
	free_corr(&s);
}

static void test_tolerance(void **state)
{
	struct sink s;
	struct corr_opts o;
	struct correlate *c;
	struct gw_record r;
	struct corr_result res;

	correlate__opts_default(&o);
	o.tolerance_ns = 500 * MS;
	c = new_corr(&s, &o);
	established(c, 40000, 7, T0 + 10 * SEC);
	closed(c, 40000, 7, T0 + 20 * SEC, 10 * SEC);

	/* start 300 ms before established (clocks, ms-rounded durations) */
	r = gwrec(AGENT_IP, 40000, T0 + 10 * SEC, 300 * MS, "search", 200, NULL);
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.status, CORR_JOINED);
	/* start 400 ms after close */
	r = gwrec(AGENT_IP, 40000, T0 + 20 * SEC + 500 * MS, 100 * MS, "search", 200, NULL);
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.status, CORR_JOINED);
	/* ends inside but started 2 s before established: not this flow */
	r = gwrec(AGENT_IP, 40000, T0 + 11 * SEC, 3 * SEC, "search", 200, NULL);
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.status, CORR_UNATTRIBUTED);
	/* start 700 ms after close */
	r = gwrec(AGENT_IP, 40000, T0 + 20 * SEC + 800 * MS, 100 * MS, "search", 200, NULL);
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.status, CORR_PENDING);
	assert_int_equal(count_type(&s, CORR_GATEWAY, 0), 2);
	assert_int_equal(count_type(&s, CORR_FINDING, CORR_F_UNATTRIBUTED), 1);

	/* no time: the caller must give the CRI time */
	r.time_ns = 0;
	assert_int_equal(correlate__gateway(c, &r, &res), -EINVAL);
	free_corr(&s);
}

static void test_late_line_retention(void **state)
{
	struct sink s;
	struct correlate *c = new_corr(&s, NULL);
	struct gw_record r;
	struct corr_result res;
	struct corr_stats st;

	established(c, 41000, 5, T0);
	closed(c, 41000, 5, T0 + 10 * SEC, 10 * SEC);
	correlate__tick(c, T0 + 5 * 60 * SEC);
	/* read five minutes late (a slow log shipper, a restart of the tail) */
	r = gwrec(AGENT_IP, 41000, T0 + 5 * SEC, 10 * MS, "search", 200, NULL);
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.status, CORR_JOINED);
	assert_int_equal(res.flow->cookie, 5);
	expect_str(s.json[0], "socket.close", "2025-11-28T02:05:14.000000000Z");

	/* past the retention the flow is gone; the clock is long past the
	 * line's time, so nothing more can come: declared at once */
	correlate__tick(c, T0 + 10 * SEC + 601 * SEC);
	correlate__stats(c, &st);
	assert_int_equal(st.expired, 1);
	assert_int_equal(st.flows, 0);
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.status, CORR_UNATTRIBUTED);
	assert_int_equal(res.findings, 1u << CORR_F_UNATTRIBUTED);
	free_corr(&s);
}

static void test_close_without_established(void **state)
{
	struct sink s;
	struct correlate *c = new_corr(&s, NULL);
	struct gw_record r;
	struct corr_result res;

	/* the established event was lost: the close's duration gives the
	 * lifetime back */
	closed(c, 42000, 9, T0 + 10 * SEC, 8 * SEC);
	r = gwrec(AGENT_IP, 42000, T0 + 3 * SEC, 10 * MS, "search", 200, NULL);
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.status, CORR_JOINED);
	expect_str(s.json[0], "socket.established", "2025-11-28T02:05:06.000000000Z");
	free_corr(&s);
}

static void test_ignored_flows(void **state)
{
	struct sink s;
	struct correlate *c = new_corr(&s, NULL);
	struct corr_flow_meta m = pod_meta(T0);
	struct corr_stats st;
	struct sl_event ev;
	uint8_t a[16];

	/* accepted, not connected */
	ev = lifecycle(SL_EV_ESTABLISHED, AGENT_IP, 1000, GW_IP, GW_PORT, 1, SL_CLASS_GATEWAY);
	ev.sock_type = 1;
	correlate__flow(c, &ev, &m);
	/* not to a gateway */
	ev = lifecycle(SL_EV_ESTABLISHED, AGENT_IP, 1001, "1.1.1.1", 443, 2, SL_CLASS_LLM);
	m.class = SL_CLASS_LLM;
	correlate__flow(c, &ev, &m);
	/* connects are not flows */
	ev = lifecycle(SL_EV_CONNECT, AGENT_IP, 0, GW_IP, GW_PORT, 3, SL_CLASS_GATEWAY);
	correlate__flow(c, &ev, &m);
	correlate__stats(c, &st);
	assert_int_equal(st.flows, 0);

	/* a configured listener address makes a class-less flow a gateway's */
	v4(a, "10.96.0.20");
	assert_int_equal(correlate__gateway_addr(c, a, 0), 0);
	ev = lifecycle(SL_EV_ESTABLISHED, AGENT_IP, 1002, "10.96.0.20", 8080, 4, SL_CLASS_NONE);
	m.class = SL_CLASS_NONE;
	correlate__flow(c, &ev, &m);
	correlate__stats(c, &st);
	assert_int_equal(st.flows, 1);
	free_corr(&s);
}

static void test_ipv6(void **state)
{
	struct sink s;
	struct correlate *c = new_corr(&s, NULL);
	struct corr_flow_meta m = pod_meta(T0);
	struct corr_result res;
	struct gw_record r;
	struct sl_event ev;

	ev = lifecycle(SL_EV_ESTABLISHED, AGENT_IP, 40000, GW_IP, GW_PORT, 61, SL_CLASS_GATEWAY);
	ev.family = AF_INET6;
	assert_int_equal(inet_pton(AF_INET6, "fd00:10::5", ev.saddr), 1);
	assert_int_equal(inet_pton(AF_INET6, "fd00:96::10", ev.daddr), 1);
	correlate__flow(c, &ev, &m);
	memset(&r, 0, sizeof(r));
	assert_int_equal(gateway__parse_peer("[fd00:10::5]:40000", 18, &r), 0);
	r.time_ns = T0 + SEC;
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.status, CORR_JOINED);
	expect_str(s.json[0], "src", "[fd00:10::5]:40000");
	expect_str(s.json[0], "dst", "[fd00:96::10]:3000");
	expect_str(s.json[0], "socket.family", "ipv6");
	free_corr(&s);
}

static void test_parsed_line_joins(void **state)
{
	static const char line[] =
		"2025-11-28T02:05:05.500000Z\tinfo\trequest gateway=default/agentgateway-proxy "
		"listener=http route=default/mcp endpoint=10.244.2.9:8080 src.addr=10.244.1.5:43999 "
		"http.method=POST http.host=mcp http.path=/mcp http.status=200 protocol=mcp "
		"mcp.method.name=tools/call mcp.target=everything gen_ai.tool.name=echo "
		"src.identity=spiffe://cluster.local/ns/agents/sa/research-agent duration=12ms";
	struct sink s;
	struct correlate *c = new_corr(&s, NULL);
	struct corr_result res;
	struct gw_record r;
	const char *why = NULL;

	established(c, 43999, 31, T0);
	assert_int_equal(gateway__parse_line(GW_AUTO, NULL, line, strlen(line), &r, &why), 0);
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.status, CORR_JOINED);
	/* "echo" is not in the policy's tools: drift, but the identity fits */
	assert_int_equal(res.findings, 1u << CORR_F_POLICY_DRIFT);
	expect_str(s.json[0], "gateway.format", "agentgateway");
	expect_str(s.json[0], "gateway.identity",
		   "spiffe://cluster.local/ns/agents/sa/research-agent");
	expect_str(s.json[0], "gateway.identity_key", "src.identity");
	expect_str(s.json[0], "gateway.http_path", "/mcp");
	free_corr(&s);
}

/* ---- findings ------------------------------------------------------------ */

static void test_unattributed_after_tolerance(void **state)
{
	struct sink s;
	struct correlate *c = new_corr(&s, NULL);
	struct gw_record r;
	struct corr_result res;
	struct corr_stats st;
	const cJSON *j;

	correlate__tick(c, T0);
	established(c, 43210, 1, T0 - 10 * SEC);
	/* a forged peer: nobody on this node connected from 10.244.1.66 */
	r = gwrec("10.244.1.66", 43210, T0, 5 * MS, "search", 200, NULL);
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.status, CORR_PENDING);
	assert_int_equal(s.n, 0);
	correlate__stats(c, &st);
	assert_int_equal(st.pending, 1);
	correlate__tick(c, T0 + 500 * MS);
	assert_int_equal(s.n, 0);
	correlate__tick(c, T0 + 1500 * MS);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.rec[0].finding, CORR_F_UNATTRIBUTED);
	j = s.json[0];
	expect_str(j, "type", "finding");
	expect_str(j, "finding", "unattributed");
	expect_str(j, "peer", "10.244.1.66:43210");
	expect_str(j, "workload", NULL);
	expect_str(j, "evidence.gateway.peer", "10.244.1.66:43210");
	expect_str(j, "evidence.gateway.time", "2025-11-28T02:05:04.000000000Z");
	correlate__stats(c, &st);
	assert_int_equal(st.pending, 0);
	assert_int_equal(st.unattributed, 1);
	assert_int_equal(st.findings[CORR_F_UNATTRIBUTED], 1);
	sink_reset(&s);

	/* the log line came first, its established event just after */
	r = gwrec(AGENT_IP, 45000, T0 + 2 * SEC, 5 * MS, "search", 200, NULL);
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.status, CORR_PENDING);
	established(c, 45000, 77, T0 + 1 * SEC);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.rec[0].type, CORR_GATEWAY);
	assert_int_equal(s.cookie[0], 77);
	correlate__tick(c, T0 + 10 * SEC);
	assert_int_equal(s.n, 1);
	correlate__stats(c, &st);
	assert_int_equal(st.joined_late, 1);
	assert_int_equal(st.pending, 0);
	free_corr(&s);
}

static void test_pending_bound_and_foreign(void **state)
{
	struct sink s;
	struct corr_opts o;
	struct correlate *c;
	struct gw_record r;
	struct corr_result res;
	struct corr_stats st;
	uint8_t pfx[16];

	correlate__opts_default(&o);
	o.max_pending = 2;
	c = new_corr(&s, &o);
	for (int i = 0; i < 5; i++) {
		r = gwrec("10.244.1.66", (uint16_t)(1000 + i), T0, MS, "search", 200, NULL);
		correlate__gateway(c, &r, &res);
		assert_int_equal(res.status, CORR_PENDING);
	}
	correlate__stats(c, &st);
	assert_int_equal(st.pending, 2);
	assert_int_equal(st.pending_overflow, 3);
	assert_int_equal(s.n, 3);	/* the oldest, declared early */
	expect_str(s.json[0], "peer", "10.244.1.66:1000");
	sink_reset(&s);

	/* with this node's pod range given, another node's peer is not ours */
	v4(pfx, "10.244.1.0");
	assert_int_equal(correlate__local_prefix(c, pfx, 96 + 24), 0);
	r = gwrec("10.244.7.3", 1234, T0, MS, "search", 200, NULL);
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.status, CORR_FOREIGN);
	correlate__tick(c, T0 + 10 * SEC);
	assert_int_equal(s.n, 2);	/* the two pending, not the foreign one */
	correlate__stats(c, &st);
	assert_int_equal(st.foreign, 1);
	free_corr(&s);
}

static void test_identity_mismatch(void **state)
{
	struct sink s;
	struct correlate *c = new_corr(&s, NULL);
	struct gw_record r;
	struct corr_result res;
	struct corr_stats st;
	const cJSON *j;

	established(c, 43210, 1, T0);
	r = gwrec(AGENT_IP, 43210, T0 + SEC, MS, "search", 200, NULL);
	snprintf(r.identity, sizeof(r.identity), "spiffe://cluster.local/ns/agents/sa/billing-agent");
	snprintf(r.identity_key, sizeof(r.identity_key), "src.identity");
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.status, CORR_JOINED);
	assert_int_equal(res.findings, 1u << CORR_F_IDENTITY_MISMATCH);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.rec[0].type, CORR_GATEWAY);
	j = s.json[1];
	expect_str(j, "finding", "identity_mismatch");
	expect_str(j, "basis", "pod");
	expect_str(j, "claimed.namespace", "agents");
	expect_str(j, "claimed.service_account", "billing-agent");
	expect_str(j, "claimed.key", "src.identity");
	expect_str(j, "seen.namespace", "agents");
	expect_str(j, "seen.service_account", "research-agent");
	expect_str(j, "workload.pod", "research-agent-7d9f");
	expect_str(j, "evidence.gateway.identity",
		   "spiffe://cluster.local/ns/agents/sa/billing-agent");
	assert_true(jnum(j, "evidence.flow.cookie") == 1);
	assert_non_null(strstr(jstr(j, "detail"), "billing-agent"));
	sink_reset(&s);

	/* another namespace, same name */
	snprintf(r.identity, sizeof(r.identity), "spiffe://cluster.local/ns/tools/sa/research-agent");
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.findings, 1u << CORR_F_IDENTITY_MISMATCH);
	sink_reset(&s);

	/* equal: no finding */
	snprintf(r.identity, sizeof(r.identity), "spiffe://cluster.local/ns/agents/sa/research-agent");
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.findings, 0);
	assert_int_equal(s.n, 1);
	sink_reset(&s);

	/* a JWT subject is not compared unless configured */
	snprintf(r.identity, sizeof(r.identity), "system:serviceaccount:agents:billing-agent");
	snprintf(r.identity_key, sizeof(r.identity_key), "jwt.sub");
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.findings, 0);
	correlate__stats(c, &st);
	assert_int_equal(st.findings[CORR_F_IDENTITY_MISMATCH], 2);
	assert_int_equal(st.identity_unchecked, 1);
	free_corr(&s);
}

static void test_identity_jwt_and_cgroup(void **state)
{
	struct sink s;
	struct corr_opts o;
	struct correlate *c;
	struct gw_record r;
	struct corr_result res;
	struct corr_flow_meta m;
	struct sl_event ev;
	const cJSON *j;

	correlate__opts_default(&o);
	o.jwt_claim = "jwt.sub";
	o.node = "n1";
	c = new_corr(&s, &o);

	/* Kubernetes: the service account token's subject */
	established(c, 43210, 1, T0);
	r = gwrec(AGENT_IP, 43210, T0 + SEC, MS, "search", 200, NULL);
	snprintf(r.identity_key, sizeof(r.identity_key), "jwt.sub");
	snprintf(r.identity, sizeof(r.identity), "system:serviceaccount:agents:billing-agent");
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.findings, 1u << CORR_F_IDENTITY_MISMATCH);
	expect_str(s.json[1], "node", "n1");
	expect_str(s.json[1], "claimed.service_account", "billing-agent");
	snprintf(r.identity, sizeof(r.identity), "agents/research-agent");
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.findings, 0);
	sink_reset(&s);

	/* no pod: the name derived from the systemd unit's cgroup */
	ev = lifecycle(SL_EV_ESTABLISHED, "192.168.5.2", 40001, GW_IP, GW_PORT, 2, SL_CLASS_GATEWAY);
	m = pod_meta(T0);
	m.pod_namespace = m.pod_name = m.service_account = NULL;
	m.cgroup = "/agents.slice/research-agent.service";
	correlate__flow(c, &ev, &m);
	r = gwrec("192.168.5.2", 40001, T0 + SEC, MS, "search", 200, NULL);
	snprintf(r.identity_key, sizeof(r.identity_key), "jwt.sub");
	snprintf(r.identity, sizeof(r.identity), "coding-agent");
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.findings, 1u << CORR_F_IDENTITY_MISMATCH);
	j = s.json[1];
	expect_str(j, "basis", "cgroup");
	expect_str(j, "seen.name", "research-agent");
	expect_str(j, "seen.namespace", NULL);
	expect_str(j, "workload.namespace", NULL);
	expect_str(j, "workload.cgroup", "/agents.slice/research-agent.service");
	assert_non_null(strstr(jstr(j, "detail"), "cgroup"));
	sink_reset(&s);
	snprintf(r.identity, sizeof(r.identity), "research-agent");
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.findings, 0);
	/* a SPIFFE id compares its service account with the unit name too */
	snprintf(r.identity, sizeof(r.identity), "spiffe://example.org/ns/x/sa/research-agent");
	snprintf(r.identity_key, sizeof(r.identity_key), "src.identity");
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.findings, 0);
	free_corr(&s);
}

static void test_policy_drift(void **state)
{
	struct sink s;
	struct correlate *c = new_corr(&s, NULL);
	struct gw_record r;
	struct corr_result res;
	struct corr_flow_meta m;
	struct sl_event ev;
	const cJSON *j, *tools;

	established(c, 43210, 1, T0);

	/* allowed, but the policy does not list it */
	r = gwrec(AGENT_IP, 43210, T0 + SEC, MS, "delete_repo", 200, NULL);
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.findings, 1u << CORR_F_POLICY_DRIFT);
	j = s.json[1];
	expect_str(j, "finding", "policy_drift");
	expect_str(j, "basis", "allowed_unlisted");
	expect_str(j, "tool", "delete_repo");
	tools = cJSON_GetObjectItem(j, "policy_tools");
	assert_int_equal(cJSON_GetArraySize(tools), 2);
	expect_str(j, "evidence.gateway.tool", "delete_repo");
	sink_reset(&s);

	/* refused by the gateway, but the policy lists it */
	r = gwrec(AGENT_IP, 43210, T0 + SEC, MS, "search", 400, "MCP");
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.findings, 1u << CORR_F_POLICY_DRIFT);
	expect_str(s.json[1], "basis", "refused_listed");
	sink_reset(&s);
	r = gwrec(AGENT_IP, 43210, T0 + SEC, MS, "fetch", 403, "Authorization");
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.findings, 1u << CORR_F_POLICY_DRIFT);
	sink_reset(&s);

	/* agreement both ways, and refusals for other reasons */
	r = gwrec(AGENT_IP, 43210, T0 + SEC, MS, "search", 200, NULL);
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.findings, 0);
	r = gwrec(AGENT_IP, 43210, T0 + SEC, MS, "delete_repo", 403, "Authorization");
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.findings, 0);
	r = gwrec(AGENT_IP, 43210, T0 + SEC, MS, "search", 429, "RateLimit");
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.findings, 0);
	/* not a tools/call */
	r = gwrec(AGENT_IP, 43210, T0 + SEC, MS, "delete_repo", 200, NULL);
	snprintf(r.mcp_method, sizeof(r.mcp_method), "tools/list");
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.findings, 0);
	assert_int_equal(s.n, 4);
	sink_reset(&s);

	/* a policy that lists no tools says nothing about them */
	ev = lifecycle(SL_EV_ESTABLISHED, AGENT_IP, 43211, GW_IP, GW_PORT, 2, SL_CLASS_GATEWAY);
	m = pod_meta(T0);
	m.tools_listed = false;
	m.tools = NULL;
	m.ntools = 0;
	correlate__flow(c, &ev, &m);
	r = gwrec(AGENT_IP, 43211, T0 + SEC, MS, "delete_repo", 200, NULL);
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.status, CORR_JOINED);
	assert_int_equal(res.findings, 0);
	free_corr(&s);
}

static void connect_ev(struct correlate *c, const char *dst, uint16_t port, uint8_t class,
		       uint8_t verdict, bool has_gateway, uint64_t t)
{
	struct sl_event ev = lifecycle(SL_EV_CONNECT, AGENT_IP, 0, dst, port, 500, class);
	struct corr_flow_meta m = pod_meta(t);

	memset(ev.saddr, 0, sizeof(ev.saddr));
	ev.verdict = verdict;
	m.class = class;
	m.rule = class ? "github-mcp" : "";
	m.has_gateway = has_gateway;
	assert_int_equal(correlate__connect(c, &ev, &m), 0);
}

static void test_bypass(void **state)
{
	struct sink s;
	struct correlate *c = new_corr(&s, NULL);
	struct corr_result res;
	struct corr_stats st;
	struct gw_record r;
	const cJSON *j;

	/* straight to a tool server, allowed by a tool rule */
	connect_ev(c, "10.244.3.4", 8080, SL_CLASS_TOOL, SL_VERDICT_ALLOW, true, T0);
	assert_int_equal(s.n, 1);
	j = s.json[0];
	expect_str(j, "type", "finding");
	expect_str(j, "finding", "bypass");
	expect_str(j, "basis", "class");
	expect_str(j, "dst", "10.244.3.4:8080");
	expect_str(j, "verdict", "allow");
	expect_str(j, "class", "tool");
	expect_str(j, "workload.pod", "research-agent-7d9f");
	expect_str(j, "evidence.connect.type", "connect");
	expect_str(j, "evidence.connect.dst", "10.244.3.4:8080");
	expect_str(j, "evidence.connect.time", "2025-11-28T02:05:04.000000000Z");
	sink_reset(&s);
	/* the same again within the window: counted, not repeated */
	connect_ev(c, "10.244.3.4", 8080, SL_CLASS_TOOL, SL_VERDICT_ALLOW, true, T0 + SEC);
	assert_int_equal(s.n, 0);
	/* an LLM, refused: still an attempt to go around */
	connect_ev(c, "104.18.7.192", 443, SL_CLASS_LLM, SL_VERDICT_DENY, true, T0 + SEC);
	assert_int_equal(s.n, 1);
	expect_str(s.json[0], "verdict", "deny");
	sink_reset(&s);

	/* not bypasses: no gateway rule; through the gateway; other classes */
	connect_ev(c, "10.244.3.5", 8080, SL_CLASS_TOOL, SL_VERDICT_ALLOW, false, T0);
	connect_ev(c, GW_IP, GW_PORT, SL_CLASS_GATEWAY, SL_VERDICT_ALLOW, true, T0);
	connect_ev(c, "10.96.0.53", 53, SL_CLASS_DNS, SL_VERDICT_ALLOW, true, T0);
	connect_ev(c, "203.0.113.9", 443, SL_CLASS_NONE, SL_VERDICT_DENY, true, T0);
	assert_int_equal(s.n, 0);

	/* the gateway's own upstream, learnt from its log, reached directly */
	established(c, 43210, 1, T0);
	r = gwrec(AGENT_IP, 43210, T0 + SEC, MS, "search", 200, NULL);
	snprintf(r.endpoint, sizeof(r.endpoint), "203.0.113.9:443");
	correlate__gateway(c, &r, &res);
	assert_false(res.endpoint_is_name);
	sink_reset(&s);
	connect_ev(c, "203.0.113.9", 443, SL_CLASS_NONE, SL_VERDICT_DENY, true, T0 + 2 * SEC);
	assert_int_equal(s.n, 1);
	expect_str(s.json[0], "basis", "upstream");
	expect_str(s.json[0], "dst", "203.0.113.9:443");
	expect_str(s.json[0], "class", NULL);
	sink_reset(&s);
	connect_ev(c, "203.0.113.9", 443, SL_CLASS_NONE, SL_VERDICT_DENY, false, T0 + 2 * SEC);
	assert_int_equal(s.n, 0);

	/* a host-name endpoint is the caller's to resolve; a loopback one
	 * means nothing outside the gateway's network namespace */
	snprintf(r.endpoint, sizeof(r.endpoint), "api.openai.com:443");
	correlate__gateway(c, &r, &res);
	assert_true(res.endpoint_is_name);
	snprintf(r.endpoint, sizeof(r.endpoint), "127.0.0.1:9999");
	correlate__gateway(c, &r, &res);
	correlate__stats(c, &st);
	assert_int_equal(st.upstreams, 1);
	assert_int_equal(st.findings[CORR_F_BYPASS], 3);
	assert_int_equal(st.bypass_suppressed, 1);
	free_corr(&s);
}

/* ---- bounds -------------------------------------------------------------- */

static void test_eviction_bound(void **state)
{
	struct sink s;
	struct corr_opts o;
	struct correlate *c;
	struct corr_stats st;
	struct corr_result res;
	struct gw_record r;

	correlate__opts_default(&o);
	o.max_flows = 8;
	c = new_corr(&s, &o);
	/* four long-lived connections, then a churn of short ones */
	for (uint16_t i = 0; i < 4; i++)
		established(c, (uint16_t)(2000 + i), 100 + i, T0);
	for (uint16_t i = 0; i < 100; i++) {
		established(c, (uint16_t)(3000 + i), 1000 + i, T0 + i * MS);
		closed(c, (uint16_t)(3000 + i), 1000 + i, T0 + i * MS + 1, 1);
	}
	correlate__stats(c, &st);
	assert_int_equal(st.flows, 8);
	assert_int_equal(st.flows_open, 4);
	assert_int_equal(st.evicted_closed, 96);
	assert_int_equal(st.evicted_open, 0);
	/* the open ones survived the churn */
	r = gwrec(AGENT_IP, 2001, T0 + SEC, MS, "search", 200, NULL);
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.status, CORR_JOINED);
	/* only open flows left to evict: the least recently used goes */
	for (uint16_t i = 0; i < 8; i++)
		established(c, (uint16_t)(4000 + i), 2000 + i, T0 + 2 * SEC);
	correlate__stats(c, &st);
	assert_int_equal(st.flows, 8);
	assert_int_equal(st.evicted_open, 4);
	free_corr(&s);

	/* generations per source ip:port */
	correlate__opts_default(&o);
	o.generations = 4;
	c = new_corr(&s, &o);
	for (uint64_t i = 0; i < 6; i++) {
		established(c, 5000, 1 + i, T0 + i * 10 * SEC);
		closed(c, 5000, 1 + i, T0 + i * 10 * SEC + SEC, SEC);
	}
	correlate__stats(c, &st);
	assert_int_equal(st.flows, 4);
	assert_int_equal(st.superseded, 2);
	r = gwrec(AGENT_IP, 5000, T0 + 50 * SEC + 500 * MS, MS, "search", 200, NULL);
	correlate__gateway(c, &r, &res);
	assert_int_equal(res.flow->cookie, 6);
	free_corr(&s);
}

static void test_render_bounds(void **state)
{
	struct sink s;
	struct correlate *c = new_corr(&s, NULL);
	struct corr_record rec = { .type = CORR_GATEWAY };
	struct corr_flow_info fi = { .cgroup = "", .pod_namespace = "", .pod_name = "",
				     .service_account = "", .policy = "", .rule = "" };
	struct gw_record r = gwrec(AGENT_IP, 1, T0, MS, "x\"y\n", 200, NULL);
	char buf[4096];
	int n;
	cJSON *j;

	rec.gw = &r;
	rec.flow = &fi;
	rec.time_ns = T0;
	n = correlate__render_gateway(c, &rec, buf, sizeof(buf));
	assert_true(n > 0);
	j = cJSON_Parse(buf);
	assert_non_null(j);
	expect_str(j, "gateway.tool", "x\"y\n");
	expect_str(j, "process", NULL);
	cJSON_Delete(j);
	for (size_t len = 0; len < (size_t)n; len += 7)
		assert_int_equal(correlate__render_gateway(c, &rec, buf, len), -ENOSPC);
	assert_int_equal(correlate__render_finding(c, &rec, buf, sizeof(buf)), -EINVAL);
	rec.type = CORR_FINDING;
	rec.finding = CORR_F_POLICY_DRIFT;
	rec.gw = NULL;
	assert_int_equal(correlate__render_finding(c, &rec, buf, sizeof(buf)), -EINVAL);
	free_corr(&s);
}

static void test_options(void **state)
{
	struct corr_opts o;
	struct correlate *c;
	uint8_t a[16];

	correlate__opts_default(&o);
	o.max_flows = 0;
	errno = 0;
	assert_null(correlate__new(&o, on_emit, NULL));
	assert_int_equal(errno, EINVAL);
	assert_null(correlate__new(NULL, NULL, NULL));
	c = correlate__new(NULL, on_emit, NULL);
	assert_non_null(c);
	v4(a, "10.0.0.1");
	assert_int_equal(correlate__local_prefix(c, a, 129), -EINVAL);
	for (int i = 0; i < 256; i++) {
		a[15] = (uint8_t)i;
		assert_int_equal(correlate__gateway_addr(c, a, 80), 0);
	}
	a[14] = 1;
	assert_int_equal(correlate__gateway_addr(c, a, 80), -ENOSPC);
	assert_string_equal(correlate__finding_name(CORR_F_IDENTITY_MISMATCH), "identity_mismatch");
	correlate__free(c);
	correlate__free(NULL);
}

/* Across nodes: node A has no flow for a record; at its deadline the record
 * is offered to the ask callback, node B finds its flow through
 * correlate__lookup, the flow goes over the wire format and back, and A
 * emits it joined (B's node and workload) with the drift finding from B's
 * tools. A foreign peer is asked at once; no answer means unattributed with
 * the reason; no taker declares it at once. */
struct asked {
	int n;
	struct gw_record r[4];
	int refuse;
};

static int on_ask(void *ctx, const struct gw_record *r)
{
	struct asked *a = ctx;

	if (a->refuse)
		return -ENOENT;
	assert_true(a->n < 4);
	a->r[a->n++] = *r;
	return 0;
}

static void test_remote(void **state)
{
	struct sink sa, sb;
	struct corr_opts o;
	struct correlate *a, *b;
	struct asked asked = { 0 };
	struct gw_record r;
	struct corr_result res;
	struct corr_flow_info fi;
	struct peer_flow *pf = malloc(sizeof(*pf));
	struct corr_stats st;
	uint8_t pfx[16];
	cJSON *j;

	assert_non_null(pf);
	correlate__opts_default(&o);
	o.node = "node-a";
	a = new_corr(&sa, &o);
	o.node = "node-b";
	b = new_corr(&sb, &o);
	correlate__set_ask(a, on_ask, &asked);

	established(b, 40001, 77, T0);
	r = gwrec(AGENT_IP, 40001, T0 + 2 * SEC, 5 * MS, "delete_all", 200, NULL);
	correlate__gateway(a, &r, &res);
	assert_int_equal(res.status, CORR_PENDING);
	correlate__tick(a, T0 + 2 * SEC + o.tolerance_ns + 1);
	assert_int_equal(asked.n, 1);
	assert_int_equal(sa.n, 0);	/* handed over, not declared */

	/* B: the lookup, as the HTTP handler does it */
	assert_int_equal(correlate__lookup(b, asked.r[0].peer_addr, asked.r[0].peer_port,
					   asked.r[0].time_ns - asked.r[0].duration_ns, &fi), 0);
	assert_int_equal(fi.cookie, 77);
	assert_int_equal(correlate__lookup(b, asked.r[0].peer_addr, 40002, T0, &fi), -ENOENT);
	assert_int_equal(correlate__lookup(b, asked.r[0].peer_addr, asked.r[0].peer_port,
					   asked.r[0].time_ns - asked.r[0].duration_ns, &fi), 0);
	j = peer__flow_json(&fi);
	assert_non_null(j);
	assert_int_equal(peer__flow_parse(j, "node-b", pf), 0);
	cJSON_Delete(j);
	assert_int_equal(pf->fi.cookie, 77);
	assert_int_equal(pf->fi.established_ns, T0);
	assert_int_equal(pf->fi.ntools, 2);

	/* A: joined with B's flow, checked against B's tools */
	correlate__remote_done(a, &asked.r[0], &pf->fi, NULL);
	assert_int_equal(sa.n, 2);
	expect_str(sa.json[0], "type", "gateway");
	expect_str(sa.json[0], "node", "node-a");
	expect_str(sa.json[0], "workload.node", "node-b");
	expect_str(sa.json[0], "workload.pod", "research-agent-7d9f");
	expect_str(sa.json[0], "src", AGENT_IP ":40001");
	assert_int_equal((int)jnum(sa.json[0], "socket.cookie"), 77);
	expect_str(sa.json[1], "finding", "policy_drift");
	expect_str(sa.json[1], "workload.node", "node-b");
	sink_reset(&sa);

	/* nobody has it */
	correlate__remote_done(a, &asked.r[0], NULL, "2 other nodes asked: 2 without it, 0 unreachable");
	assert_int_equal(sa.n, 1);
	expect_str(sa.json[0], "finding", "unattributed");
	assert_non_null(strstr(jstr(sa.json[0], "detail"), "2 other nodes asked"));
	sink_reset(&sa);

	/* a peer outside this node's range is asked at once */
	v4(pfx, "10.244.9.0");
	assert_int_equal(correlate__local_prefix(a, pfx, 96 + 24), 0);
	r = gwrec("10.244.1.9", 1234, T0 + 3 * SEC, MS, "search", 200, NULL);
	correlate__gateway(a, &r, &res);
	assert_int_equal(res.status, CORR_ASKED);
	assert_int_equal(asked.n, 2);

	/* no taker (no peers): declared as before */
	asked.refuse = 1;
	r = gwrec("10.244.9.9", 1234, T0 + 3 * SEC, MS, "search", 200, NULL);
	correlate__gateway(a, &r, &res);
	assert_int_equal(res.status, CORR_PENDING);
	correlate__tick(a, T0 + 10 * SEC);
	assert_int_equal(sa.n, 1);
	expect_str(sa.json[0], "finding", "unattributed");
	correlate__stats(a, &st);
	assert_int_equal(st.asked, 2);
	assert_int_equal(st.remote_joined, 1);
	correlate__stats(b, &st);
	assert_int_equal(st.lookups, 3);
	assert_int_equal(st.lookups_found, 2);
	free(pf);
	free_corr(&sa);
	free_corr(&sb);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keepalive),
		cmocka_unit_test(test_reused_port),
		cmocka_unit_test(test_tolerance),
		cmocka_unit_test(test_late_line_retention),
		cmocka_unit_test(test_close_without_established),
		cmocka_unit_test(test_ignored_flows),
		cmocka_unit_test(test_ipv6),
		cmocka_unit_test(test_parsed_line_joins),
		cmocka_unit_test(test_unattributed_after_tolerance),
		cmocka_unit_test(test_pending_bound_and_foreign),
		cmocka_unit_test(test_identity_mismatch),
		cmocka_unit_test(test_identity_jwt_and_cgroup),
		cmocka_unit_test(test_policy_drift),
		cmocka_unit_test(test_bypass),
		cmocka_unit_test(test_eviction_bound),
		cmocka_unit_test(test_render_bounds),
		cmocka_unit_test(test_options),
		cmocka_unit_test(test_remote),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
