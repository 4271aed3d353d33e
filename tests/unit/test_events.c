// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Event rendering: every field of the flow-record contract, escaping,
 * addresses, time conversion, and overflow. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <cjson/cJSON.h>
#include "events.h"

static void v4(uint8_t *a, const char *s)
{
	memset(a, 0, 10);
	a[10] = a[11] = 0xff;
	inet_pton(AF_INET, s, a + 12);
}

static cJSON *render(struct events_render *r, const struct sl_event *ev)
{
	char buf[2048];
	int n = events__render(r, ev, buf, sizeof(buf));
	cJSON *j;

	assert_true(n > 0);
	assert_int_equal(strlen(buf), n);
	j = cJSON_Parse(buf);
	assert_non_null(j);
	return j;
}

static const char *str(cJSON *o, const char *path)
{
	char p[128], *tok, *save;
	cJSON *it = o;

	snprintf(p, sizeof(p), "%s", path);
	for (tok = strtok_r(p, ".", &save); tok; tok = strtok_r(NULL, ".", &save))
		it = cJSON_GetObjectItem(it, tok);
	return cJSON_IsString(it) ? it->valuestring : NULL;
}

static double num(cJSON *o, const char *a, const char *b)
{
	cJSON *it = cJSON_GetObjectItem(o, a);

	if (b)
		it = cJSON_GetObjectItem(it, b);
	assert_true(cJSON_IsNumber(it));
	return it->valuedouble;
}

static void setup_render(struct events_render *r)
{
	struct sl_rule_meta m = { .class = SL_CLASS_LLM, .action = SL_ACTION_ALLOW };

	assert_int_equal(events__render_init(r, NULL, "n1"), 0);
	/* Fixed offset: 1000 s after the epoch at monotonic 0. */
	r->mono_to_real_ns = 1000LL * 1000000000LL;
	strcpy(m.policy, "agents/research-agent");
	strcpy(m.rule, "openai");
	assert_int_equal(events__names_add_rule(r, 7, 16, &m), 0);
	assert_int_equal(events__names_add_set(r, 7, "agents/research-agent"), 0);
}

static void test_connect_deny_fields(void **state)
{
	struct events_render r;
	struct sl_event ev = {
		.ts_ns = 123456789, .type = SL_EV_CONNECT, .verdict = SL_VERDICT_DENY,
		.rule_id = SL_RULE_DEFAULT_DENY, .set_id = 7, .ident_cgid = 1234,
		.cgroup_id = 1234, .cookie = 99887766, .pid = 4242, .tid = 4243,
		.uid = 1000, .family = AF_INET, .protocol = 6, .dport = 443,
	};
	cJSON *j;

	setup_render(&r);
	strcpy(ev.comm, "python3");
	v4(ev.daddr, "104.18.7.192");
	j = render(&r, &ev);
	assert_string_equal(str(j, "time"), "1970-01-01T00:16:40.123456789Z");
	assert_string_equal(str(j, "node"), "n1");
	assert_string_equal(str(j, "type"), "connect");
	assert_string_equal(str(j, "verdict"), "deny");
	assert_string_equal(str(j, "mode"), "enforce");
	assert_string_equal(str(j, "policy"), "agents/research-agent");
	assert_string_equal(str(j, "rule"), "default-deny");
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "class")));
	assert_int_equal(num(j, "workload", "cgroup_id"), 1234);
	assert_int_equal(num(j, "process", "pid"), 4242);
	assert_int_equal(num(j, "process", "tid"), 4243);
	assert_int_equal(num(j, "process", "uid"), 1000);
	assert_string_equal(str(j, "process.comm"), "python3");
	assert_int_equal(num(j, "socket", "cookie"), 99887766);
	assert_string_equal(str(j, "socket.family"), "ipv4");
	assert_string_equal(str(j, "socket.protocol"), "tcp");
	assert_string_equal(str(j, "dst"), "104.18.7.192:443");
	assert_null(cJSON_GetObjectItem(j, "src"));
	cJSON_Delete(j);
	events__render_free(&r);
}

static void test_allow_rule_and_audit(void **state)
{
	struct events_render r;
	struct sl_event ev = {
		.type = SL_EV_SENDMSG, .verdict = SL_VERDICT_AUDIT, .audit = 1,
		.rule_id = 16, .set_id = 7, .ident_cgid = 5, .cgroup_id = 6,
		.family = AF_INET6, .protocol = 17, .dport = 53,
	};
	cJSON *j;

	setup_render(&r);
	inet_pton(AF_INET6, "2001:db8::1", ev.daddr);
	j = render(&r, &ev);
	assert_string_equal(str(j, "verdict"), "audit");
	assert_string_equal(str(j, "mode"), "audit");
	assert_string_equal(str(j, "rule"), "openai");
	assert_string_equal(str(j, "class"), "llm");
	assert_string_equal(str(j, "dst"), "[2001:db8::1]:53");
	assert_string_equal(str(j, "socket.protocol"), "udp");
	assert_string_equal(str(j, "socket.family"), "ipv6");
	/* the governing identity differs from the task's own cgroup */
	assert_int_equal(num(j, "workload", "identity_cgroup_id"), 5);
	/* no pid: process is null */
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "process")));
	cJSON_Delete(j);
	events__render_free(&r);
}

static void test_close_and_mapped(void **state)
{
	struct events_render r;
	struct sl_event ev = {
		.type = SL_EV_CLOSE, .verdict = SL_VERDICT_ALLOW, .rule_id = 16, .set_id = 7,
		.ident_cgid = 5, .cgroup_id = 5, .family = AF_INET6, .protocol = 6,
		.sport = 43210, .dport = 8080, .bytes_sent = 1000, .bytes_received = 20,
		.duration_ns = 5555, .pid = 1,
	};
	cJSON *j;

	setup_render(&r);
	v4(ev.saddr, "10.244.1.5");
	v4(ev.daddr, "10.0.0.1");
	j = render(&r, &ev);
	/* a v6 socket speaking to a mapped address shows it as v6 */
	assert_string_equal(str(j, "src"), "[::ffff:10.244.1.5]:43210");
	assert_string_equal(str(j, "dst"), "[::ffff:10.0.0.1]:8080");
	assert_string_equal(str(j, "direction"), "out");
	assert_int_equal(num(j, "bytes_sent", NULL), 1000);
	assert_int_equal(num(j, "bytes_received", NULL), 20);
	assert_int_equal(num(j, "duration_ns", NULL), 5555);
	cJSON_Delete(j);
	events__render_free(&r);
}

static void test_escaping_and_overflow(void **state)
{
	struct events_render r;
	struct sl_event ev = {
		.type = SL_EV_SOCK_CREATE, .verdict = SL_VERDICT_DENY,
		.rule_id = SL_RULE_RAW_SOCKET, .ident_cgid = 5, .cgroup_id = 5, .pid = 9,
		.family = AF_INET, .protocol = 1,
	};
	char small[32];
	cJSON *j;

	setup_render(&r);
	/* comm is not NUL-terminated when 16 chars long, and may hold quotes */
	memcpy(ev.comm, "a\"b\\c\nd\x01xxxxxxxxx", 16);
	j = render(&r, &ev);
	assert_string_equal(str(j, "process.comm"), "a\"b\\c\nd\x01xxxxxxxx");
	assert_string_equal(str(j, "rule"), "raw-socket");
	assert_string_equal(str(j, "socket.type"), "raw");
	assert_null(cJSON_GetObjectItem(j, "dst"));
	cJSON_Delete(j);
	assert_int_equal(events__render(&r, &ev, small, sizeof(small)), -ENOSPC);
	events__render_free(&r);
}

static void test_ungoverned(void **state)
{
	struct events_render r;
	struct sl_event ev = {
		.type = SL_EV_CONNECT, .verdict = SL_VERDICT_ALLOW,
		.rule_id = SL_RULE_UNGOVERNED, .family = AF_INET, .protocol = 6, .dport = 1,
	};
	cJSON *j;

	setup_render(&r);
	j = render(&r, &ev);
	assert_string_equal(str(j, "mode"), "observe");
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "policy")));
	assert_string_equal(str(j, "rule"), "ungoverned");
	cJSON_Delete(j);
	events__render_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_connect_deny_fields),
		cmocka_unit_test(test_allow_rule_and_audit),
		cmocka_unit_test(test_close_and_mapped),
		cmocka_unit_test(test_escaping_and_overflow),
		cmocka_unit_test(test_ungoverned),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
