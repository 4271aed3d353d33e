// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The cross-node lookup wire format: requests decoded whole or refused with
 * the place named, answers in order with null for not found, 64-bit values
 * exact, and flow objects that do not parse refused. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <cjson/cJSON.h>

#include "peer.h"

static const char *const TOOLS[] = { "search", "fetch" };

/* Has a flow for port 40001 only; remembers what it was asked. */
struct looker {
	int n;
	uint16_t port[8];
	uint64_t start[8];
};

static int lookup(void *ctx, const uint8_t addr[16], uint16_t port, uint64_t start_ns,
		  struct corr_flow_info *out)
{
	struct looker *l = ctx;

	if (l->n < 8) {
		l->port[l->n] = port;
		l->start[l->n] = start_ns;
	}
	l->n++;
	if (port != 40001)
		return -ENOENT;
	memset(out, 0, sizeof(*out));
	out->cookie = 0xfedcba9876543210ull;	/* beyond a double's 53 bits */
	out->cgroup_id = 4242;
	out->established_ns = 1764295504123456789ull;
	out->pid = 777;
	out->uid = 1000;
	snprintf(out->comm, sizeof(out->comm), "node");
	memcpy(out->saddr, addr, 16);
	out->sport = port;
	memcpy(out->daddr, addr, 16);
	out->daddr[15] = 10;
	out->dport = 3000;
	out->family = AF_INET;
	out->protocol = 6;
	out->class = SL_CLASS_GATEWAY;
	out->has_gateway = out->tools_listed = true;
	out->cgroup = "/kubepods.slice/x.scope";
	out->pod_namespace = "agents";
	out->pod_name = "a-1";
	out->service_account = "a";
	out->policy = "agents/a";
	out->rule = "gateway";
	out->tools = TOOLS;
	out->ntools = 2;
	return 0;
}

static void test_serve(void **state)
{
	const char *req = "{\"lookups\":[{\"peer\":\"10.244.1.5:40001\",\"start_ns\":\"1764295504000000001\"},"
			  "{\"peer\":\"[fd00::5]:40002\",\"start_ns\":\"5\"}]}";
	struct looker l = { 0 };
	struct peer_flow *pf = malloc(sizeof(*pf));
	char *out = NULL, err[256];
	cJSON *ans, *res;

	assert_non_null(pf);
	assert_int_equal(peer__serve("node-b", req, strlen(req), lookup, &l, &out, err, sizeof(err)), 0);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.start[0], 1764295504000000001ull);
	assert_int_equal(l.port[1], 40002);
	ans = cJSON_Parse(out);
	assert_non_null(ans);
	assert_string_equal(cJSON_GetObjectItem(ans, "node")->valuestring, "node-b");
	res = cJSON_GetObjectItem(ans, "results");
	assert_int_equal(cJSON_GetArraySize(res), 2);
	assert_true(cJSON_IsNull(cJSON_GetArrayItem(res, 1)));
	assert_int_equal(peer__flow_parse(cJSON_GetArrayItem(res, 0), "node-b", pf), 0);
	assert_int_equal(pf->fi.cookie, 0xfedcba9876543210ull);
	assert_int_equal(pf->fi.established_ns, 1764295504123456789ull);
	assert_int_equal(pf->fi.sport, 40001);
	assert_int_equal(pf->fi.pid, 777);
	assert_int_equal(pf->fi.class, SL_CLASS_GATEWAY);
	assert_true(pf->fi.tools_listed);
	assert_int_equal(pf->fi.ntools, 2);
	assert_string_equal(pf->fi.tools[1], "fetch");
	assert_string_equal(pf->fi.pod_name, "a-1");
	assert_string_equal(pf->fi.node, "node-b");
	/* a field missing or of the wrong type: refused */
	cJSON_DeleteItemFromObject(cJSON_GetArrayItem(res, 0), "cookie");
	assert_int_equal(peer__flow_parse(cJSON_GetArrayItem(res, 0), "node-b", pf), -EINVAL);
	cJSON_Delete(ans);
	free(out);
	free(pf);
}

static void test_serve_refused(void **state)
{
	static const struct {
		const char *body;
		const char *why;
	} bad[] = {
		{ "{not json", "not JSON" },
		{ "{}", "\"lookups\": want an array" },
		{ "{\"lookups\":{}}", "\"lookups\": want an array" },
		{ "{\"lookups\":[{\"peer\":\"10.0.0.1:1\",\"start_ns\":\"1\"},{\"peer\":\"x\",\"start_ns\":\"1\"}]}",
		  "lookups[1].peer" },
		{ "{\"lookups\":[{\"peer\":\"10.0.0.1:0\",\"start_ns\":\"1\"}]}", "lookups[0].peer" },
		{ "{\"lookups\":[{\"peer\":\"10.0.0.1:1\",\"start_ns\":1}]}", "lookups[0].start_ns" },
		{ "{\"lookups\":[{\"peer\":\"10.0.0.1:1\",\"start_ns\":\"-1\"}]}", "lookups[0].start_ns" },
		{ "{\"lookups\":[{\"peer\":\"10.0.0.1:1\",\"start_ns\":\"99999999999999999999\"}]}",
		  "lookups[0].start_ns" },
	};
	struct looker l = { 0 };
	char *out, err[256];
	size_t i, n, off;
	char *big;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(peer__serve("n", bad[i].body, strlen(bad[i].body), lookup, &l, &out,
					     err, sizeof(err)), -EINVAL);
		assert_null(out);
		if (!strstr(err, bad[i].why))
			fail_msg("%s: error '%s', want '%s'", bad[i].body, err, bad[i].why);
	}
	assert_int_equal(l.n, 0);	/* refused whole: nothing looked up */

	/* more than PEER_MAX_LOOKUPS */
	n = 64 + (PEER_MAX_LOOKUPS + 1) * 48;
	big = malloc(n);
	assert_non_null(big);
	off = (size_t)sprintf(big, "{\"lookups\":[");
	for (i = 0; i <= PEER_MAX_LOOKUPS; i++)
		off += (size_t)sprintf(big + off, "%s{\"peer\":\"10.0.0.1:1\",\"start_ns\":\"1\"}",
				       i ? "," : "");
	sprintf(big + off, "]}");
	assert_int_equal(peer__serve("n", big, strlen(big), lookup, &l, &out, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "at most"));
	free(big);

	/* empty is fine */
	assert_int_equal(peer__serve("n", "{\"lookups\":[]}", 14, lookup, &l, &out, err, sizeof(err)), 0);
	assert_string_equal(out, "{\"node\":\"n\",\"results\":[]}");
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_serve),
		cmocka_unit_test(test_serve_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
