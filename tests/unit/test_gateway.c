// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Gateway access-log readers: every example line of
 * design/gateway-and-agents.md in both agentgateway forms, Envoy with the
 * default and a custom key map, the text tokenizer, malformed lines with
 * their reasons, CRI framing, and a CRI log file read end to end through
 * tail. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"
#include "tail.h"

#define SEC	1000000000ull
#define MS	1000000ull

/* ---- helpers -------------------------------------------------------- */

static const char *src_dir(char *buf, size_t len)
{
	const char *slash = strrchr(__FILE__, '/');
	int n = slash ? (int)(slash - __FILE__) : 1;

	snprintf(buf, len, "%.*s", n, slash ? __FILE__ : ".");
	return buf;
}

static void fixture(const char *name, char *path, size_t len)
{
	char dir[256];

	snprintf(path, len, "%s/fixtures/gateway/%s", src_dir(dir, sizeof(dir)), name);
}

static int parse(enum gw_format fmt, const struct gw_keymap *km, const char *line,
		 struct gw_record *r, const char **why)
{
	return gateway__parse_line(fmt, km, line, strlen(line), r, why);
}

static void expect_ok(enum gw_format fmt, const struct gw_keymap *km, const char *line,
		      struct gw_record *r)
{
	const char *why = NULL;
	int rc = parse(fmt, km, line, r, &why);

	if (rc)
		fail_msg("%s: rc %d (%s)", line, rc, why ? why : "?");
}

static void expect_err(enum gw_format fmt, const struct gw_keymap *km, const char *line,
		       int err, const char *why_expect)
{
	struct gw_record r;
	const char *why = NULL;

	assert_int_equal(parse(fmt, km, line, &r, &why), err);
	assert_non_null(why);
	assert_string_equal(why, why_expect);
}

/* The lines of a fixture file; *N of them. Free with free(lines[0]), free(lines). */
static char **read_lines(const char *name, size_t *n)
{
	char path[512], *buf, **lines = NULL;
	FILE *f;
	long sz;

	fixture(name, path, sizeof(path));
	f = fopen(path, "rb");
	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	sz = ftell(f);
	rewind(f);
	buf = malloc((size_t)sz + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)sz, f), (size_t)sz);
	buf[sz] = '\0';
	fclose(f);
	*n = 0;
	for (char *p = buf; *p;) {
		char *nl = strchr(p, '\n');

		lines = realloc(lines, sizeof(*lines) * (*n + 1));
		assert_non_null(lines);
		lines[(*n)++] = p;
		if (!nl)
			break;
		*nl = '\0';
		p = nl + 1;
	}
	assert_true(*n > 0 && lines[0] == buf);
	return lines;
}

/* ---- the design document's agentgateway lines, text form ------------ */

/* Verbatim from gateway-and-agents.md (blanks, as the document has them). */
static const char doc_line1[] =
	"2025-07-10T18:10:46.547567Z info request gateway=bind/3000 listener=listener0 "
	"route=route0 endpoint=localhost:9999 src.addr=[::1]:59257 http.method=POST "
	"http.host=localhost http.path=/ http.version=HTTP/1.1 http.status=200 "
	"a2a.method=message/stream duration=3ms";
static const char doc_line2[] =
	"request gateway=default/agentgateway-proxy listener=http route=default/mcp "
	"src.addr=127.0.0.1:59068 http.method=POST http.host=localhost http.path=/mcp "
	"http.version=HTTP/1.1 http.status=403 error=authentication failure: no bearer token "
	"found duration=0ms";
static const char doc_mcp_fragment[] =
	"protocol=mcp mcp.method.name=tools/call mcp.target=everything gen_ai.tool.name=echo "
	"mcp.session.id=...";

static void check_line1(const struct gw_record *r)
{
	assert_int_equal(r->format, GW_AGENTGATEWAY);
	assert_int_equal(r->time_ns, 1752171046 * SEC + 547567000);
	assert_int_equal(r->duration_ns, 3 * MS);
	assert_string_equal(r->peer, "[::1]:59257");
	assert_false(r->peer_v4);
	assert_int_equal(r->peer_port, 59257);
	assert_int_equal(r->peer_addr[15], 1);
	assert_string_equal(r->gateway, "bind/3000");
	assert_string_equal(r->route, "route0");
	assert_string_equal(r->endpoint, "localhost:9999");
	assert_string_equal(r->http_method, "POST");
	assert_string_equal(r->http_path, "/");
	assert_int_equal(r->status, 200);
	assert_string_equal(r->a2a_method, "message/stream");
	/* No protocol key in this line: the A2A method says it. */
	assert_string_equal(r->protocol, "a2a");
	assert_true(r->flags & GW_F_PROTOCOL_INFERRED);
	assert_string_equal(r->reason, "");
	assert_string_equal(r->error, "");
	assert_false(r->flags & GW_F_TRUNCATED);
}

static void check_line2(const struct gw_record *r, uint64_t time_ns)
{
	assert_int_equal(r->format, GW_AGENTGATEWAY);
	assert_int_equal(r->time_ns, time_ns);
	assert_int_equal(r->duration_ns, 0);
	assert_string_equal(r->peer, "127.0.0.1:59068");
	assert_true(r->peer_v4);
	assert_int_equal(r->peer_addr[10], 0xff);
	assert_int_equal(r->peer_addr[12], 127);
	assert_int_equal(r->peer_port, 59068);
	assert_string_equal(r->gateway, "default/agentgateway-proxy");
	assert_string_equal(r->route, "default/mcp");
	assert_int_equal(r->status, 403);
	assert_string_equal(r->error, "authentication failure: no bearer token found");
	assert_string_equal(r->protocol, "http");
	assert_string_equal(r->endpoint, "");
}

static void test_doc_text_lines(void **state)
{
	struct gw_record r;
	char tabbed[sizeof(doc_line1)];

	expect_ok(GW_AUTO, NULL, doc_line1, &r);
	check_line1(&r);
	expect_ok(GW_AGENTGATEWAY, NULL, doc_line1, &r);
	check_line1(&r);

	/* As agentgateway really writes it: tabs after the time and level. */
	memcpy(tabbed, doc_line1, sizeof(tabbed));
	tabbed[27] = '\t';
	tabbed[32] = '\t';
	expect_ok(GW_AUTO, NULL, tabbed, &r);
	check_line1(&r);

	/* Without the time prefix the line has no time: the caller takes
	 * the CRI time. */
	expect_ok(GW_AUTO, NULL, doc_line2, &r);
	check_line2(&r, 0);
	expect_ok(GW_AUTO, NULL,
		  "2025-07-10T18:10:50Z\tinfo\trequest gateway=default/agentgateway-proxy "
		  "listener=http route=default/mcp src.addr=127.0.0.1:59068 http.method=POST "
		  "http.host=localhost http.path=/mcp http.version=HTTP/1.1 http.status=403 "
		  "error=authentication failure: no bearer token found duration=0ms\n", &r);
	check_line2(&r, 1752171050 * SEC);
}

static void test_doc_mcp_fragment(void **state)
{
	char line[512];
	struct gw_record r;

	/* The document quotes a fragment: alone it names no peer. */
	expect_err(GW_AUTO, NULL, doc_mcp_fragment, -EBADMSG, "no peer address");

	snprintf(line, sizeof(line),
		 "2025-07-10T18:11:02.25Z\tinfo\trequest gateway=default/agentgateway-proxy "
		 "listener=http route=default/mcp src.addr=10.244.1.5:43210 http.status=200 %s "
		 "duration=12ms", doc_mcp_fragment);
	expect_ok(GW_AUTO, NULL, line, &r);
	assert_string_equal(r.protocol, "mcp");
	assert_false(r.flags & GW_F_PROTOCOL_INFERRED);
	assert_string_equal(r.mcp_method, "tools/call");
	assert_string_equal(r.mcp_target, "everything");
	assert_string_equal(r.tool, "echo");
	assert_string_equal(r.session, "...");
	assert_int_equal(r.time_ns, 1752171062 * SEC + 250 * MS);
	assert_int_equal(r.duration_ns, 12 * MS);
}

/* The decisions the document lists, as text lines. */
static void test_text_decisions(void **state)
{
	struct gw_record r;

	expect_ok(GW_AUTO, NULL,
		  "2025-07-10T18:11:05Z\tinfo\trequest gateway=g listener=http route=r "
		  "src.addr=10.244.1.5:43300 http.status=403 reason=Authorization "
		  "error=authorization failed duration=0ms", &r);
	assert_int_equal(r.status, 403);
	assert_string_equal(r.reason, "Authorization");
	assert_string_equal(r.error, "authorization failed");

	expect_ok(GW_AUTO, NULL,
		  "2025-07-10T18:11:05Z\tinfo\trequest src.addr=10.244.1.5:43301 "
		  "http.status=401 reason=JwtAuth error=authentication failure: the token is "
		  "expired duration=1ms", &r);
	assert_int_equal(r.status, 401);
	assert_string_equal(r.reason, "JwtAuth");
	assert_string_equal(r.error, "authentication failure: the token is expired");

	expect_ok(GW_AUTO, NULL,
		  "2025-07-10T18:11:05Z\tinfo\trequest src.addr=10.244.1.5:43302 "
		  "http.status=400 protocol=mcp mcp.method.name=tools/call gen_ai.tool.name=rm_rf "
		  "mcp.error.code=-32602 mcp.error.message=Unknown tool: rm_rf reason=MCP "
		  "duration=2ms", &r);
	assert_int_equal(r.status, 400);
	assert_string_equal(r.tool, "rm_rf");
	assert_string_equal(r.reason, "MCP");
	assert_string_equal(r.error, "Unknown tool: rm_rf");

	/* Identity: SPIFFE first, then the JWT subject. */
	expect_ok(GW_AUTO, NULL,
		  "request src.addr=10.244.1.5:1 jwt.sub=user-7 "
		  "src.identity=spiffe://cluster.local/ns/agents/sa/research", &r);
	assert_string_equal(r.identity, "spiffe://cluster.local/ns/agents/sa/research");
	assert_string_equal(r.identity_key, "src.identity");
	expect_ok(GW_AUTO, NULL, "request src.addr=10.244.1.5:1 jwt.sub=user-7", &r);
	assert_string_equal(r.identity, "user-7");
	assert_string_equal(r.identity_key, "jwt.sub");
}

/* ---- the same, JSON form -------------------------------------------- */

static void test_doc_json_lines(void **state)
{
	size_t n;
	char **l = read_lines("agentgateway.jsonl", &n);
	struct gw_record r;

	assert_int_equal(n, 5);
	expect_err(GW_AUTO, NULL, l[0], -ENOMSG, "not a request record");
	expect_err(GW_AGENTGATEWAY, NULL, l[0], -ENOMSG, "not a request record");

	expect_ok(GW_AUTO, NULL, l[1], &r);
	check_line1(&r);
	expect_ok(GW_AGENTGATEWAY, NULL, l[1], &r);
	check_line1(&r);

	expect_ok(GW_AUTO, NULL, l[2], &r);
	check_line2(&r, 1752171050 * SEC);

	/* MCP deny; the nested header object is skipped. */
	expect_ok(GW_AUTO, NULL, l[3], &r);
	assert_string_equal(r.peer, "10.244.1.5:43210");
	assert_string_equal(r.identity, "spiffe://cluster.local/ns/agents/sa/research");
	assert_string_equal(r.protocol, "mcp");
	assert_string_equal(r.mcp_method, "tools/call");
	assert_string_equal(r.tool, "echo");
	assert_string_equal(r.reason, "MCP");
	assert_string_equal(r.error, "Unknown tool: echo");
	assert_int_equal(r.status, 400);

	/* An older build: mcp.method, and the tool as mcp.resource.name. */
	expect_ok(GW_AUTO, NULL, l[4], &r);
	assert_string_equal(r.mcp_method, "tools/call");
	assert_string_equal(r.tool, "fetch");
	assert_string_equal(r.protocol, "mcp");
	assert_true(r.flags & GW_F_PROTOCOL_INFERRED);
	assert_string_equal(r.request_id, "ba8e0e8c4138978666eecdc5d494f00a");
	assert_int_equal(r.duration_ns, 476 * MS);
	free(l[0]);
	free(l);
}

/* The text fixture, line by line: the same records as JSON. */
static void test_text_fixture(void **state)
{
	size_t n;
	char **l = read_lines("agentgateway.log", &n);
	struct gw_record r;

	assert_int_equal(n, 7);
	expect_err(GW_AUTO, NULL, l[0], -ENOMSG, "not a request record");
	expect_ok(GW_AUTO, NULL, l[1], &r);
	check_line1(&r);
	expect_ok(GW_AUTO, NULL, l[2], &r);
	check_line2(&r, 0);
	expect_ok(GW_AUTO, NULL, l[3], &r);
	assert_string_equal(r.tool, "echo");
	assert_string_equal(r.reason, "MCP");
	assert_string_equal(r.error, "Unknown tool: echo");
	expect_err(GW_AUTO, NULL, l[4], -ENOMSG, "empty line");
	expect_err(GW_AUTO, NULL, l[5], -ENOMSG, "not a request record");
	expect_ok(GW_AUTO, NULL, l[6], &r);
	assert_string_equal(r.protocol, "llm");
	assert_string_equal(r.model, "gpt-4o");
	assert_string_equal(r.endpoint, "api.openai.com:443");
	assert_string_equal(r.identity, "research-agent");
	assert_int_equal(r.duration_ns, 1200 * MS);
	assert_int_equal(r.time_ns, 1752171064 * SEC + 100 * MS);
	free(l[0]);
	free(l);
}

/* ---- the text tokenizer --------------------------------------------- */

static void test_tokenizer(void **state)
{
	struct gw_record r;
	struct gw_keymap km;

	/* Prose may hold key=value: only a known key ends it. */
	expect_ok(GW_AUTO, NULL,
		  "request src.addr=10.0.0.1:5 error=upstream said status=503 body=busy "
		  "http.status=502 duration=4ms", &r);
	assert_string_equal(r.error, "upstream said status=503 body=busy");
	assert_int_equal(r.status, 502);
	assert_int_equal(r.duration_ns, 4 * MS);

	/* An unknown field after an ordinary value is a field of its own. */
	expect_ok(GW_AUTO, NULL,
		  "request src.addr=10.0.0.1:5 route=r1 x.custom=1 agw.cost.total=0.1 duration=1ms",
		  &r);
	assert_string_equal(r.route, "r1");

	/* Words without '=' continue any value. */
	expect_ok(GW_AUTO, NULL, "request route=my route src.addr=10.0.0.1:5", &r);
	assert_string_equal(r.route, "my route");

	/* A CEL field: a JSON string literal, blanks and '=' inside. */
	expect_ok(GW_AUTO, NULL,
		  "request src.addr=10.0.0.1:5 http.status=404 protocol=http duration=0ms "
		  "http.statusString=\"404\" route=\"a b=c \\\"q\\\"\"", &r);
	assert_string_equal(r.route, "a b=c \"q\"");
	assert_int_equal(r.status, 404);

	/* Empty values, as older builds wrote them. */
	expect_ok(GW_AUTO, NULL,
		  "request src.addr=10.0.0.1:5 llm.provider=gemini llm.request.model= "
		  "llm.request.tokens=8 llm.response.model=gemini-1.5-flash-latest duration=3165ms",
		  &r);
	assert_string_equal(r.model, "gemini-1.5-flash-latest");
	assert_string_equal(r.protocol, "llm");

	/* A key the map names is known too, so it ends prose. */
	gateway__keymap_default(&km);
	assert_int_equal(gateway__keymap_set(&km, "identity", "jwt.email|jwt.sub"), 0);
	expect_ok(GW_AUTO, &km,
		  "request src.addr=10.0.0.1:5 error=denied for x jwt.email=a@b.c duration=1ms", &r);
	assert_string_equal(r.error, "denied for x");
	assert_string_equal(r.identity, "a@b.c");
	assert_string_equal(r.identity_key, "jwt.email");
	/* Without it, an unknown key stays inside prose (the rule's cost). */
	expect_ok(GW_AUTO, NULL,
		  "request src.addr=10.0.0.1:5 error=denied for x jwt.email=a@b.c duration=1ms", &r);
	assert_string_equal(r.error, "denied for x jwt.email=a@b.c");

	/* A value too long for its field is cut and flagged. */
	{
		char line[1200];
		int n = snprintf(line, sizeof(line), "request src.addr=10.0.0.1:5 route=");

		memset(line + n, 'r', 600);
		line[n + 600] = '\0';
		expect_ok(GW_AUTO, NULL, line, &r);
		assert_int_equal(strlen(r.route), sizeof(r.route) - 1);
		assert_true(r.flags & GW_F_TRUNCATED);
	}
}

/* ---- Envoy ----------------------------------------------------------- */

static void test_envoy_default_map(void **state)
{
	size_t n;
	char **l = read_lines("envoy.jsonl", &n);
	struct gw_record r;

	assert_int_equal(n, 4);
	/* Envoy's own log lines share its container log. */
	expect_err(GW_AUTO, NULL, l[0], -ENOMSG, "not a request record");
	expect_err(GW_ENVOY, NULL, l[0], -ENOMSG, "not a request record");

	/* The document's example. */
	expect_ok(GW_AUTO, NULL, l[1], &r);
	assert_int_equal(r.format, GW_ENVOY);
	assert_string_equal(r.peer, "127.0.0.1:58124");
	assert_int_equal(r.duration_ns, 653 * MS);
	assert_int_equal(r.time_ns, 1759920131 * SEC + 430 * MS + 653 * MS);
	assert_true(r.flags & GW_F_TIME_FROM_START);
	assert_string_equal(r.mcp_method, "tools/call");
	assert_string_equal(r.mcp_target, "context7");
	assert_string_equal(r.protocol, "mcp");
	assert_int_equal(r.status, 200);
	assert_string_equal(r.endpoint, "13.217.64.66:443");
	assert_string_equal(r.request_id, "cf2c0454-...");
	expect_ok(GW_ENVOY, NULL, l[1], &r);
	assert_string_equal(r.peer, "127.0.0.1:58124");

	/* RBAC deny; the direct address beats the forwarded one. */
	expect_ok(GW_AUTO, NULL, l[2], &r);
	assert_string_equal(r.peer, "10.244.1.5:40112");
	assert_int_equal(r.status, 403);
	assert_string_equal(r.reason, "rbac_access_denied_matched_policy[none]");
	assert_string_equal(r.endpoint, "");

	/* The internal MCP-proxy hop carries no agent address. */
	expect_err(GW_AUTO, NULL, l[3], -ENOMSG,
		   "peer is not an IP address (internal listener or unix socket)");

	/* "via_upstream" is no decision. */
	expect_ok(GW_ENVOY, NULL,
		  "{\"downstream_remote_address\":\"[::ffff:10.1.2.3]:9\",\"response_code\":\"200\","
		  "\"response_code_details\":\"via_upstream\",\"start_time\":\"-\"}", &r);
	assert_string_equal(r.reason, "");
	assert_string_equal(r.peer, "10.1.2.3:9");
	assert_true(r.peer_v4);
	assert_int_equal(r.time_ns, 0);
	assert_int_equal(r.status, 200);
	free(l[0]);
	free(l);
}

static void test_envoy_custom_map(void **state)
{
	struct gw_keymap km;
	struct gw_record r;
	const char *why = NULL;
	static const char line[] =
		"{\"client\":\"203.0.113.7:1111\",\"tcp_peer\":\"[2001:db8::5%eth0]:40000\","
		"\"ts\":1759920131.5,\"dur_us\":1500,\"code\":403,"
		"\"details\":\"ext_authz_denied\",\"mcp\":{\"tool\":{\"name\":\"search\"}},"
		"\"sub\":\"agent-1\",\"up\":\"10.0.0.9:443\"}";

	gateway__keymap_default(&km);
	assert_int_equal(gateway__keymap_parse(&km,
		"peer=tcp_peer|client,start_time=ts,duration=dur_us,duration_unit=us,"
		"status=code,reason=details,tool=mcp.tool.name,identity=sub,endpoint=up", &why), 0);
	expect_ok(GW_ENVOY, &km, line, &r);
	assert_string_equal(r.peer, "[2001:db8::5]:40000");
	assert_false(r.peer_v4);
	assert_int_equal(r.duration_ns, 1500000);
	assert_int_equal(r.time_ns, 1759920131 * SEC + 500 * MS + 1500000);
	assert_int_equal(r.status, 403);
	assert_string_equal(r.reason, "ext_authz_denied");
	assert_string_equal(r.tool, "search");	/* found through the nested objects */
	assert_string_equal(r.protocol, "mcp");
	assert_string_equal(r.identity, "agent-1");
	assert_string_equal(r.endpoint, "10.0.0.9:443");

	/* The same line with the default map: no peer key it knows. */
	expect_err(GW_ENVOY, NULL, line, -EBADMSG, "no peer address");

	/* Map errors. */
	assert_int_equal(gateway__keymap_parse(&km, "peers=x", &why), -EINVAL);
	assert_non_null(why);
	assert_int_equal(gateway__keymap_parse(&km, "peer", &why), -EINVAL);
	assert_string_equal(why, "expected name=key|key");
	assert_int_equal(gateway__keymap_set(&km, "peer", "a||b"), -EINVAL);
	assert_int_equal(gateway__keymap_set(&km, "peer", "a|b|c|d|e|f|g"), -EINVAL);
	assert_int_equal(gateway__keymap_set(&km, "duration_unit", "fortnight"), -EINVAL);
	{
		char longkey[GW_KM_KEYLEN + 8];

		memset(longkey, 'k', sizeof(longkey) - 1);
		longkey[sizeof(longkey) - 1] = '\0';
		assert_int_equal(gateway__keymap_set(&km, "tool", longkey), -ENAMETOOLONG);
	}
	/* A failed set leaves the field as it was. */
	expect_ok(GW_ENVOY, &km, line, &r);
	assert_string_equal(r.peer, "[2001:db8::5]:40000");
}

/* ---- malformed ------------------------------------------------------- */

static void test_malformed(void **state)
{
	expect_err(GW_AUTO, NULL, "{\"src.addr\":\"10.0.0.1:5\",", -EBADMSG, "bad json");
	expect_err(GW_AUTO, NULL, "{\"a\":1} trailing", -EBADMSG, "bad json");
	expect_err(GW_AUTO, NULL, "{\"scope\":\"request\",\"http.status\":200}", -EBADMSG,
		   "no peer address");
	expect_err(GW_ENVOY, NULL, "{\"response_code\":200}", -EBADMSG, "no peer address");
	expect_err(GW_ENVOY, NULL, "{\"downstream_remote_address\":\"-\"}", -EBADMSG,
		   "no peer address");
	expect_err(GW_ENVOY, NULL, "[1,2]", -EBADMSG, "not a JSON object");
	expect_err(GW_ENVOY, NULL, "request src.addr=1.2.3.4:5", -EBADMSG, "not a JSON object");
	expect_err(GW_AUTO, NULL, "\x01\x02 garbage \xff", -EBADMSG, "unrecognized line");
	expect_err(GW_AUTO, NULL, "thread 'main' panicked at src/main.rs:1:1", -EBADMSG,
		   "unrecognized line");
	expect_err(GW_AUTO, NULL, "   \r\n", -ENOMSG, "empty line");
	expect_err(GW_AUTO, NULL, "request src.addr=localhost:80", -EBADMSG,
		   "bad peer address");
	expect_err(GW_AUTO, NULL, "request src.addr=::1:80", -EBADMSG, "bad peer address");
	expect_err(GW_AUTO, NULL, "request src.addr=1.2.3.4:5 duration=fast", -EBADMSG,
		   "bad duration");
	expect_err(GW_AUTO, NULL, "request src.addr=1.2.3.4:5 http.status=OK", -EBADMSG,
		   "bad status");
	expect_err(GW_AUTO, NULL, "{\"scope\":\"request\",\"src.addr\":\"1.2.3.4:5\","
		   "\"time\":\"yesterday\"}", -EBADMSG, "bad time");
	expect_err(GW_ENVOY, NULL, "{\"downstream_remote_address\":\"1.2.3.4:5\","
		   "\"start_time\":\"2025-13-01T00:00:00Z\"}", -EBADMSG, "bad start time");
	expect_err(GW_AUTO, NULL, "{\"scope\":\"request\",\"src.addr\":\"unix:/run/a.sock\"}",
		   -ENOMSG, "peer is not an IP address (internal listener or unix socket)");
}

/* ---- helpers of the readers ----------------------------------------- */

static void test_time_duration_peer(void **state)
{
	struct gw_record r;
	uint64_t ns;

#define T(s) gateway__parse_time(s, strlen(s), &ns)
	assert_int_equal(T("2024-02-29T23:59:59Z"), 0);
	assert_int_equal(ns, 1709251199 * SEC);
	assert_int_equal(T("2024-03-01T01:59:59.123456789+02:00"), 0);
	assert_int_equal(ns, 1709251199 * SEC + 123456789);
	assert_int_equal(T("2024-02-29 21:59:59.5-02:00"), 0);
	assert_int_equal(ns, 1709251199 * SEC + 500 * MS);
	assert_int_equal(T("2024-02-29T21:59:59.5-0200"), 0);
	assert_int_equal(ns, 1709251199 * SEC + 500 * MS);
	assert_int_equal(T("2024-02-29T21:59:59-02"), -EINVAL);
	assert_int_equal(T("2025-11-21T18:19:00.3005051234Z"), 0);	/* beyond ns: cut */
	assert_int_equal(ns, 1763749140 * SEC + 300505123);
	assert_int_equal(T("2025-02-29T00:00:00Z"), -EINVAL);
	assert_int_equal(T("2025-01-01T00:00:00"), -EINVAL);		/* no offset */
	assert_int_equal(T("2025-01-01T24:00:00Z"), -EINVAL);
	assert_int_equal(T("2025-01-01T00:00:00.Z"), -EINVAL);
	assert_int_equal(T("1969-12-31T23:59:59Z"), -EINVAL);
	assert_int_equal(T("2025-01-01T00:00:00Zjunk"), -EINVAL);
#undef T

#define D(s, u) gateway__parse_duration(s, strlen(s), u, &ns)
	assert_int_equal(D("3ms", 0), 0);
	assert_int_equal(ns, 3 * MS);
	assert_int_equal(D("2603ms", 0), 0);
	assert_int_equal(ns, 2603 * MS);
	assert_int_equal(D("1.2s", 0), 0);
	assert_int_equal(ns, 1200 * MS);
	assert_int_equal(D("12.5\xc2\xb5s", 0), 0);
	assert_int_equal(ns, 12500);
	assert_int_equal(D("12us", 0), 0);
	assert_int_equal(ns, 12000);
	assert_int_equal(D("100ns", 0), 0);
	assert_int_equal(ns, 100);
	assert_int_equal(D("1m", 0), 0);
	assert_int_equal(ns, 60 * SEC);
	assert_int_equal(D("653", 0), 0);
	assert_int_equal(ns, 653 * MS);
	assert_int_equal(D("1.5", 1000), 0);
	assert_int_equal(ns, 1500);
	assert_int_equal(D("1.2.3ms", 0), -EINVAL);
	assert_int_equal(D("-3ms", 0), -EINVAL);
	assert_int_equal(D("ms", 0), -EINVAL);
	assert_int_equal(D("3 ms", 0), -EINVAL);
	assert_int_equal(D("99999999999999999999s", 0), -EINVAL);
#undef D

#define P(s) gateway__parse_peer(s, strlen(s), &r)
	assert_int_equal(P("10.0.0.1:80"), 0);
	assert_string_equal(r.peer, "10.0.0.1:80");
	assert_int_equal(P("[2001:DB8:0:0::1]:443"), 0);
	assert_string_equal(r.peer, "[2001:db8::1]:443");
	assert_int_equal(P("[fe80::1%eth0]:22"), 0);
	assert_string_equal(r.peer, "[fe80::1]:22");
	assert_int_equal(P("[::ffff:192.0.2.1]:1"), 0);
	assert_string_equal(r.peer, "192.0.2.1:1");
	assert_true(r.peer_v4);
	assert_int_equal(P("10.0.0.1:0"), -EINVAL);
	assert_int_equal(P("10.0.0.1:65536"), -EINVAL);
	assert_int_equal(P("10.0.0.1:080000"), -EINVAL);
	assert_int_equal(P("10.0.0.1"), -EINVAL);
	assert_int_equal(P("[::1]"), -EINVAL);
	assert_int_equal(P("[::1:80"), -EINVAL);
	assert_int_equal(P("10.0.0.256:80"), -EINVAL);
#undef P
}

/* ---- CRI ------------------------------------------------------------- */

struct collect {
	char lines[8][256];
	struct cri_meta meta[8];
	size_t len[8];
	int n;
	int fail_at;		/* return -EIO for this line (1-based); 0: never */
};

static int collect_cb(void *ctx, const char *line, size_t len, const struct cri_meta *m)
{
	struct collect *c = ctx;

	assert_int_equal(line[len], '\0');
	if (c->fail_at && c->n + 1 == c->fail_at)
		return -EIO;
	assert_true(c->n < 8);
	snprintf(c->lines[c->n], sizeof(c->lines[0]), "%s", line);
	c->len[c->n] = len;
	c->meta[c->n++] = *m;
	return 0;
}

static int feed(struct cri_joiner *j, const char *s, struct collect *c)
{
	return cri__feed(j, s, strlen(s), collect_cb, c, NULL);
}

static void test_cri(void **state)
{
	struct cri_joiner j;
	struct collect c = { 0 };
	const char *why = NULL;
	char *big;

	cri__init(&j);
	assert_int_equal(feed(&j, "2025-07-10T18:10:46.000000001Z stdout P request src", &c), 0);
	assert_int_equal(feed(&j, "2025-07-10T18:10:46.000000002Z stderr F oops", &c), 0);
	assert_int_equal(feed(&j, "2025-07-10T18:10:46.000000003Z stdout P .addr=1.2.3.4:5 ", &c),
			 0);
	assert_int_equal(feed(&j, "2025-07-10T18:10:46.000000004Z stdout F duration=1ms\n", &c),
			 0);
	assert_int_equal(feed(&j, "2025-07-10T18:10:47Z stdout F:x plain", &c), 0);
	assert_int_equal(feed(&j, "2025-07-10T18:10:48Z stdout F", &c), 0);	/* empty line */
	assert_int_equal(c.n, 4);
	assert_string_equal(c.lines[0], "oops");
	assert_int_equal(c.meta[0].stream, 1);
	assert_string_equal(c.lines[1], "request src.addr=1.2.3.4:5 duration=1ms");
	assert_int_equal(c.meta[1].stream, 0);
	assert_int_equal(c.meta[1].fragments, 3);
	assert_int_equal(c.meta[1].time_ns, 1752171046 * SEC + 1);
	assert_false(c.meta[1].truncated);
	assert_string_equal(c.lines[2], "plain");
	assert_int_equal(c.meta[2].fragments, 1);
	assert_string_equal(c.lines[3], "");
	assert_int_equal(j.st.lines, 4);
	assert_int_equal(j.st.fragments, 2);

	/* Not CRI framing. */
	assert_int_equal(cri__feed(&j, "hello", 5, collect_cb, &c, &why), -EBADMSG);
	assert_string_equal(why, "not a CRI log line");
	assert_int_equal(feed(&j, "2025-07-10T18:10:48Z stdin F x", &c), -EBADMSG);
	assert_int_equal(feed(&j, "2025-07-10T18:10:48Z stdout X x", &c), -EBADMSG);
	assert_int_equal(feed(&j, "2025-07-10T18:10:48Z stdout FF x", &c), -EBADMSG);
	assert_int_equal(feed(&j, "yesterday stdout F x", &c), -EBADMSG);
	assert_int_equal(j.st.malformed, 5);

	/* Over CRI_MAX_LINE: cut there, flagged, counted. */
	big = malloc(40 + 300000);
	assert_non_null(big);
	memcpy(big, "2025-07-10T18:10:49Z stdout P ", 30);
	memset(big + 30, 'a', 300000);
	big[30 + 300000] = '\0';
	for (int i = 0; i < 4; i++)
		assert_int_equal(feed(&j, big, &c), 0);
	assert_int_equal(feed(&j, "2025-07-10T18:10:49Z stdout F tail", &c), 0);
	assert_int_equal(c.n, 5);
	assert_int_equal(c.len[4], CRI_MAX_LINE);
	assert_true(c.meta[4].truncated);
	assert_int_equal(c.meta[4].fragments, 5);
	assert_int_equal(j.st.truncated, 1);
	free(big);

	/* The callback's error comes back; the joiner is ready for more. */
	c.fail_at = 6;
	assert_int_equal(feed(&j, "2025-07-10T18:10:50Z stdout F x", &c), -EIO);
	c.fail_at = 0;
	assert_int_equal(feed(&j, "2025-07-10T18:10:50Z stdout F y", &c), 0);
	assert_string_equal(c.lines[5], "y");

	/* Reset forgets fragments. */
	assert_int_equal(feed(&j, "2025-07-10T18:10:51Z stdout P half", &c), 0);
	cri__reset(&j);
	assert_int_equal(feed(&j, "2025-07-10T18:10:51Z stdout F whole", &c), 0);
	assert_string_equal(c.lines[6], "whole");
	cri__free(&j);
}

/* ---- a CRI log file end to end: tail -> CRI -> records ---------------- */

struct pipe_ctx {
	struct cri_joiner j;
	struct gw_record rec[8];
	int nrec, skipped, errors;
};

static int pipe_record(void *ctx, const char *line, size_t len, const struct cri_meta *m)
{
	struct pipe_ctx *p = ctx;
	struct gw_record r;
	int rc = gateway__parse_line(GW_AUTO, NULL, line, len, &r, NULL);

	if (rc == -ENOMSG) {
		p->skipped++;
	} else if (rc) {
		p->errors++;
	} else {
		if (!r.time_ns)
			r.time_ns = m->time_ns;
		assert_true(p->nrec < 8);
		p->rec[p->nrec++] = r;
	}
	return 0;
}

static int pipe_line(void *ctx, const char *line, size_t len)
{
	struct pipe_ctx *p = ctx;
	int rc = cri__feed(&p->j, line, len, pipe_record, p, NULL);

	return rc == -EBADMSG ? 0 : rc;
}

static void test_cri_file_through_tail(void **state)
{
	struct tail_opts o = { .rotate_grace_ms = -1 };
	struct pipe_ctx p = { 0 };
	struct tail *t;
	char path[512];

	fixture("cri-0.log", path, sizeof(path));
	o.path = path;
	cri__init(&p.j);
	assert_int_equal(tail__open(&o, pipe_line, &p, &t), 0);
	assert_int_equal(tail__poll(t), 10);
	assert_int_equal(tail__poll(t), 0);
	tail__close(t);

	assert_int_equal(p.j.st.lines, 8);
	assert_int_equal(p.j.st.fragments, 2);
	assert_int_equal(p.nrec, 4);
	assert_int_equal(p.skipped, 3);		/* app, blank, xds */
	assert_int_equal(p.errors, 1);		/* the stderr line */
	check_line1(&p.rec[0]);
	/* No time in the line: the CRI time. */
	check_line2(&p.rec[1], 1752171050 * SEC);
	assert_string_equal(p.rec[2].tool, "echo");
	assert_string_equal(p.rec[2].peer, "10.244.1.5:43210");
	assert_string_equal(p.rec[2].identity, "spiffe://cluster.local/ns/agents/sa/research");
	assert_string_equal(p.rec[2].error, "Unknown tool: echo");
	assert_string_equal(p.rec[3].model, "gpt-4o");
	cri__free(&p.j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_doc_text_lines),
		cmocka_unit_test(test_doc_mcp_fragment),
		cmocka_unit_test(test_text_decisions),
		cmocka_unit_test(test_doc_json_lines),
		cmocka_unit_test(test_text_fixture),
		cmocka_unit_test(test_tokenizer),
		cmocka_unit_test(test_envoy_default_map),
		cmocka_unit_test(test_envoy_custom_map),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_time_duration_peer),
		cmocka_unit_test(test_cri),
		cmocka_unit_test(test_cri_file_through_tail),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
