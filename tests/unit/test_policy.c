// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* policy: YAML and JSON parsing, the checked model, and every message
 * with its exact FILE:LINE:COL. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <linux/types.h>
#include "sluice/sluice.h"
#include "policy.h"

/* ---- helpers -------------------------------------------------------- */

/* Directory of this file, so fixtures are found from any cwd that the
 * compiler's path is relative to (the repo root, as make runs it). */
static const char *src_dir(char *buf, size_t len)
{
	const char *slash = strrchr(__FILE__, '/');
	int n = slash ? (int)(slash - __FILE__) : 1;

	snprintf(buf, len, "%.*s", n, slash ? __FILE__ : ".");
	return buf;
}

static char *diags_str(const struct pol_diags *d)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);

	assert_non_null(f);
	policy__print_diags(d, f);
	fclose(f);
	return out;
}

/* Parse TEXT as file "t.yaml" into a fresh set; returns the printed
 * diags (malloc'd) and leaves the set in *SET. */
static char *parse(const char *text, struct pol_set *set, int *rc)
{
	struct pol_diags d = { 0 };
	char *s;

	*rc = policy__parse_buf("t.yaml", text, strlen(text), set, &d);
	s = diags_str(&d);
	policy__diags_free(&d);
	return s;
}

/* TEXT must be rejected with exactly EXPECT, adding nothing. */
static void expect_diags(const char *text, const char *expect)
{
	struct pol_set set = { 0 };
	int rc;
	char *got = parse(text, &set, &rc);

	/* cmocka cuts long strings short; show all of it. */
	if (strcmp(got, expect))
		fprintf(stderr, "got:\n%sexpected:\n%s", got, expect);
	assert_string_equal(got, expect);
	assert_int_equal(rc, -EINVAL);
	assert_int_equal(set.ndocs, 0);
	free(got);
	policy__set_free(&set);
}

/* TEXT must be accepted; its docs are left in SET. */
static void expect_ok(const char *text, struct pol_set *set)
{
	int rc;
	char *got = parse(text, set, &rc);

	assert_string_equal(got, "");
	assert_int_equal(rc, 0);
	free(got);
}

static void v4m(uint8_t out[16], const char *s)
{
	memset(out, 0, 16);
	out[10] = out[11] = 0xff;
	assert_int_equal(inet_pton(AF_INET, s, out + 12), 1);
}

static void v6(uint8_t out[16], const char *s)
{
	assert_int_equal(inet_pton(AF_INET6, s, out), 1);
}

/* Lines 1-6 of every error case; the rule under test starts on line 7. */
#define HDR "apiVersion: sluice.dev/v1alpha1\n"	\
	    "kind: AgentPolicy\n"			\
	    "metadata: {name: p}\n"			\
	    "spec:\n"					\
	    "  selector: {cgroupPaths: [a]}\n"		\
	    "  egress:\n"

/* ---- valid input ---------------------------------------------------- */

static const char valid_yaml[] =
	"# two policies and an empty trailing document\n"
	"apiVersion: sluice.dev/v1alpha1\n"
	"kind: AgentPolicy\n"
	"metadata:\n"
	"  name: research-agent\n"
	"  namespace: agents\n"
	"  labels: {team: ml}\n"
	"  uid: 0b4c3c4e-7d2e-4a5e-9c1d-1f2e3d4c5b6a\n"
	"spec:\n"
	"  selector:\n"
	"    podSelector: {matchLabels: {app: research}}\n"
	"    cgroupPaths: [\"/agents.slice/*\", \"x.scope\"]\n"
	"  mode: audit\n"
	"  dns: deny\n"
	"  egress:\n"
	"    - name: openai\n"
	"      class: llm\n"
	"      to:\n"
	"        - fqdn: API.OpenAI.com.\n"
	"        - cidr: 104.18.0.0/16\n"
	"        - cidr: 2606:4700::/32\n"
	"        - cidr: 10.9.8.7\n"
	"        - service: {name: github-mcp}\n"
	"        - service: {name: gw, namespace: gateway}\n"
	"      ports:\n"
	"        - port: 443\n"
	"        - {port: 8000, endPort: 8100, protocol: UDP}\n"
	"        - {protocol: SCTP}\n"
	"      tools: [search, fetch]\n"
	"    - name: anything.else\n"
	"      to: [{cidr: \"::ffff:10.0.0.0/104\"}]\n"
	"---\n"
	"apiVersion: sluice.dev/v1alpha1\n"
	"kind: ClusterAgentPolicy\n"
	"metadata: {name: guard}\n"
	"spec:\n"
	"  namespaceSelector: {matchLabels: {tier: agents}}\n"
	"  selector: {podSelector: {}}\n"
	"  egress:\n"
	"    - {name: allow-gw, class: gateway, to: [{cidr: 10.0.0.1/32}]}\n"
	"  egressDeny:\n"
	"    - name: metadata\n"
	"      to: [{cidr: 169.254.169.254/32}, {cidr: \"fd00:ec2::254/128\"}]\n"
	"---\n";

static void test_valid_yaml(void **state)
{
	struct pol_set set = { 0 };
	const struct pol_doc *d;
	const struct pol_rule *r;
	uint8_t a[16];
	char id[128];

	expect_ok(valid_yaml, &set);
	assert_int_equal(set.ndocs, 2);

	d = &set.docs[0];
	assert_int_equal(d->kind, POL_AGENT);
	assert_string_equal(d->name, "research-agent");
	assert_string_equal(d->namespace, "agents");
	assert_string_equal(d->file, "t.yaml");
	assert_int_equal(d->line, 2);
	assert_int_equal(d->mode, POL_AUDIT);
	assert_true(d->dns_deny);
	assert_int_equal(d->ncgroup_paths, 2);
	assert_string_equal(d->cgroup_paths[0], "agents.slice/*");
	assert_string_equal(d->cgroup_paths[1], "x.scope");
	assert_int_equal(d->npod_labels, 1);
	assert_string_equal(d->pod_labels[0].key, "app");
	assert_string_equal(d->pod_labels[0].value, "research");
	assert_int_equal(d->nns_labels, 0);
	assert_string_equal(policy__doc_id(d, id, sizeof(id)), "agents/research-agent");

	assert_int_equal(d->negress, 2);
	r = &d->egress[0];
	assert_string_equal(r->name, "openai");
	assert_int_equal(r->class, SL_CLASS_LLM);
	assert_false(r->deny);
	assert_int_equal(r->nto, 6);
	assert_int_equal(r->to[0].kind, PEER_FQDN);
	assert_string_equal(r->to[0].fqdn, "api.openai.com");
	assert_int_equal(r->to[0].line, 19);
	assert_int_equal(r->to[0].col, 11);
	assert_int_equal(r->to[1].kind, PEER_CIDR);
	v4m(a, "104.18.0.0");
	assert_memory_equal(r->to[1].addr, a, 16);
	assert_int_equal(r->to[1].bits, 96 + 16);
	assert_true(r->to[1].is_v4);
	v6(a, "2606:4700::");
	assert_memory_equal(r->to[2].addr, a, 16);
	assert_int_equal(r->to[2].bits, 32);
	assert_false(r->to[2].is_v4);
	v4m(a, "10.9.8.7");
	assert_memory_equal(r->to[3].addr, a, 16);
	assert_int_equal(r->to[3].bits, 128);
	assert_int_equal(r->to[4].kind, PEER_SERVICE);
	assert_string_equal(r->to[4].svc_name, "github-mcp");
	assert_string_equal(r->to[4].svc_namespace, "agents");
	assert_string_equal(r->to[5].svc_namespace, "gateway");

	assert_int_equal(r->nports, 3);
	assert_int_equal(r->ports[0].port, 443);
	assert_int_equal(r->ports[0].end_port, 443);
	assert_int_equal(r->ports[0].proto, SL_PROTO_TCP);
	assert_int_equal(r->ports[1].port, 8000);
	assert_int_equal(r->ports[1].end_port, 8100);
	assert_int_equal(r->ports[1].proto, SL_PROTO_UDP);
	assert_int_equal(r->ports[2].port, 0);
	assert_int_equal(r->ports[2].end_port, 65535);
	assert_int_equal(r->ports[2].proto, SL_PROTO_SCTP);
	assert_int_equal(r->ntools, 2);
	assert_string_equal(r->tools[0], "search");
	assert_string_equal(r->tools[1], "fetch");

	r = &d->egress[1];
	assert_string_equal(r->name, "anything.else");
	assert_int_equal(r->class, SL_CLASS_OTHER);
	assert_int_equal(r->nports, 0);
	v4m(a, "10.0.0.0");
	assert_memory_equal(r->to[0].addr, a, 16);
	assert_int_equal(r->to[0].bits, 104);
	assert_true(r->to[0].is_v4);

	d = &set.docs[1];
	assert_int_equal(d->kind, POL_CLUSTER);
	assert_null(d->namespace);
	assert_string_equal(policy__doc_id(d, id, sizeof(id)), "guard");
	assert_int_equal(d->mode, POL_ENFORCE);
	assert_false(d->dns_deny);
	assert_int_equal(d->nns_labels, 1);
	assert_string_equal(d->ns_labels[0].key, "tier");
	assert_int_equal(d->negress, 2);
	assert_false(d->egress[0].deny);
	assert_int_equal(d->egress[0].class, SL_CLASS_GATEWAY);
	assert_true(d->egress[1].deny);
	assert_string_equal(d->egress[1].name, "metadata");
	assert_int_equal(d->egress[1].to[1].bits, 128);
	assert_false(d->egress[1].to[1].is_v4);
	policy__set_free(&set);
}

static const char valid_json[] =
	"[\n"
	"  {\"apiVersion\": \"sluice.dev/v1alpha1\", \"kind\": \"AgentPolicy\",\n"
	"   \"metadata\": {\"name\": \"a\", \"namespace\": \"n\"},\n"
	"   \"spec\": {\"selector\": {\"cgroupPaths\": [\"x\"]},\n"
	"            \"egress\": [{\"name\": \"r\", \"class\": \"tool\",\n"
	"                        \"to\": [{\"cidr\": \"192.0.2.0/24\"}],\n"
	"                        \"ports\": [{\"port\": 443, \"endPort\": 444}],\n"
	"                        \"tools\": [\"s\\u00e9arch\"]}]}},\n"
	"  {\"apiVersion\": \"sluice.dev/v1alpha1\", \"kind\": \"ClusterAgentPolicy\",\n"
	"   \"metadata\": {\"name\": \"c\"}, \"spec\": {\"selector\": {\"podSelector\": {}}}}\n"
	"]\n";

static void test_valid_json(void **state)
{
	struct pol_set set = { 0 };
	const struct pol_rule *r;

	expect_ok(valid_json, &set);
	assert_int_equal(set.ndocs, 2);
	assert_int_equal(set.docs[0].line, 2);
	assert_string_equal(set.docs[0].namespace, "n");
	r = &set.docs[0].egress[0];
	assert_int_equal(r->class, SL_CLASS_TOOL);
	assert_int_equal(r->ports[0].port, 443);
	assert_int_equal(r->ports[0].end_port, 444);
	assert_string_equal(r->tools[0], "s\xc3\xa9" "arch");
	assert_int_equal(r->to[0].line, 6);
	assert_int_equal(r->to[0].col, 32);
	assert_int_equal(set.docs[1].kind, POL_CLUSTER);
	assert_int_equal(set.docs[1].line, 9);
	policy__set_free(&set);

	/* A single object, and a set that grows file by file. */
	expect_ok("{\"apiVersion\": \"sluice.dev/v1alpha1\", \"kind\": \"AgentPolicy\","
		  " \"metadata\": {\"name\": \"b\"}, \"spec\": {\"selector\":"
		  " {\"cgroupPaths\": [\"y\"]}}}", &set);
	expect_ok(HDR "    - {name: r, to: [{fqdn: example.com}]}\n", &set);
	assert_int_equal(set.ndocs, 2);
	assert_string_equal(set.docs[0].namespace, "default");
	assert_string_equal(set.docs[1].name, "p");
	policy__set_free(&set);
}

static void test_empty_documents(void **state)
{
	struct pol_set set = { 0 };

	expect_ok("", &set);
	expect_ok("# only a comment\n", &set);
	expect_ok("---\n---\n", &set);
	expect_ok("[]", &set);
	assert_int_equal(set.ndocs, 0);
}

/* ---- every error, at its position ---------------------------------- */

static void test_unknown_fields(void **state)
{
	expect_diags(HDR
		     "    - name: r\n"
		     "      to: [{cidr: 10.0.0.0/8}]\n"
		     "      foo: 1\n",
		     "t.yaml:9:7: unknown field \"foo\" in spec.egress[0]\n");
	expect_diags(HDR
		     "    - name: r\n"
		     "      to: [{cidr: 10.0.0.0/8, port: 1}]\n",
		     "t.yaml:8:31: unknown field \"port\" in spec.egress[0].to[0]\n");
	expect_diags("apiVersion: sluice.dev/v1alpha1\n"
		     "kind: AgentPolicy\n"
		     "metadata: {name: p, owner: me}\n"
		     "spec: {selector: {cgroupPaths: [a]}, egres: []}\n"
		     "extra: 1\n",
		     "t.yaml:3:21: unknown field \"owner\" in metadata\n"
		     "t.yaml:4:38: unknown field \"egres\" in spec\n"
		     "t.yaml:5:1: unknown field \"extra\" in the document\n");
}

static void test_bad_cidr(void **state)
{
	expect_diags(HDR
		     "    - name: r\n"
		     "      to: [{cidr: 10.0.0/8}, {cidr: 10.0.0.1/8}, {cidr: \"fd00::1/64\"}]\n"
		     "    - name: s\n"
		     "      to:\n"
		     "        - cidr: 10.0.0.0/33\n"
		     "        - cidr: 10.0.0.0/8/8\n"
		     "        - cidr: 10.0.0.0/\n",
		     "t.yaml:8:19: spec.egress[0].to[0].cidr: \"10.0.0/8\": not a valid CIDR "
		     "(expected a.b.c.d/n, x:x::x/n or a bare address)\n"
		     "t.yaml:8:37: spec.egress[0].to[1].cidr: 10.0.0.1/8 has host bits set; "
		     "did you mean 10.0.0.0/8?\n"
		     "t.yaml:8:57: spec.egress[0].to[2].cidr: fd00::1/64 has host bits set; "
		     "did you mean fd00::/64?\n"
		     "t.yaml:11:17: spec.egress[1].to[0].cidr: \"10.0.0.0/33\": prefix length "
		     "33 is out of range 0-32\n"
		     "t.yaml:12:17: spec.egress[1].to[1].cidr: \"10.0.0.0/8/8\": not a valid "
		     "CIDR (expected a.b.c.d/n, x:x::x/n or a bare address)\n"
		     "t.yaml:13:17: spec.egress[1].to[2].cidr: \"10.0.0.0/\": not a valid CIDR "
		     "(expected a.b.c.d/n, x:x::x/n or a bare address)\n");
}

static void test_bad_ports(void **state)
{
	expect_diags(HDR
		     "    - name: r\n"
		     "      to: [{cidr: 10.0.0.0/8}]\n"
		     "      ports:\n"
		     "        - port: 0\n"
		     "        - port: 70000\n"
		     "        - {port: 443, endPort: 80}\n"
		     "        - port: \"443\"\n"
		     "        - {port: 1, protocol: ICMP}\n"
		     "        - {endPort: 80}\n"
		     "        - {port: 1, protocol: tcp}\n"
		     "        - {port: 1, endPort: 65536}\n"
		     "        - port: 44.5\n",
		     "t.yaml:10:17: spec.egress[0].ports[0].port: 0 is out of range 1-65535\n"
		     "t.yaml:11:17: spec.egress[0].ports[1].port: 70000 is out of range 1-65535\n"
		     "t.yaml:12:32: spec.egress[0].ports[2].endPort: 80 is less than port 443\n"
		     "t.yaml:13:17: spec.egress[0].ports[3].port: expected integer, got string "
		     "\"443\"\n"
		     "t.yaml:14:31: spec.egress[0].ports[4].protocol: expected TCP, UDP or SCTP, "
		     "got \"ICMP\"\n"
		     "t.yaml:15:12: spec.egress[0].ports[5]: endPort needs port (the start of "
		     "the range)\n"
		     "t.yaml:16:31: spec.egress[0].ports[6].protocol: expected TCP, UDP or SCTP, "
		     "got \"tcp\"\n"
		     "t.yaml:17:30: spec.egress[0].ports[7].endPort: 65536 is out of range "
		     "1-65535\n"
		     "t.yaml:18:17: spec.egress[0].ports[8].port: expected integer, got number "
		     "\"44.5\"\n");
}

static void test_bad_rule_fields(void **state)
{
	expect_diags(HDR
		     "    - name: r\n"
		     "      class: database\n"
		     "      to: [{cidr: 10.0.0.0/8}]\n"
		     "      tools: [a, b, a, \"\", 7]\n"
		     "    - name: r\n"
		     "      to: [{fqdn: \"*.openai.com\"}, {fqdn: a_b.com}, {fqdn: 10.1.1.1}]\n"
		     "    - class: llm\n"
		     "      to: []\n"
		     "    - name: Upper\n"
		     "      to: [{}, {cidr: 10.0.0.0/8, fqdn: a.com}, {service: {namespace: x}}]\n"
		     "    - name: t\n"
		     "      to: {cidr: 10.0.0.0/8}\n"
		     "      ports: [{port: true}]\n",
		     "t.yaml:8:14: spec.egress[0].class: expected llm, tool, agent, gateway, dns "
		     "or other, got \"database\"\n"
		     "t.yaml:10:21: spec.egress[0].tools[2]: duplicate tool \"a\"\n"
		     "t.yaml:10:24: spec.egress[0].tools[3]: empty tool name\n"
		     "t.yaml:10:28: spec.egress[0].tools[4]: expected string, got integer \"7\"\n"
		     "t.yaml:11:13: spec.egress[1].name: duplicate rule name \"r\" (first at "
		     "line 7)\n"
		     "t.yaml:12:19: spec.egress[1].to[0].fqdn: \"*.openai.com\": wildcard fqdn is "
		     "not supported yet: sluice resolves names itself and cannot enumerate a "
		     "wildcard; list the names\n"
		     "t.yaml:12:43: spec.egress[1].to[1].fqdn: \"a_b.com\": not a valid host "
		     "name: each dot-separated label has 1 to 63 of a-z, 0-9 and '-', and does "
		     "not start or end with '-'\n"
		     "t.yaml:12:60: spec.egress[1].to[2].fqdn: \"10.1.1.1\": an IP address, not "
		     "a name; use cidr for addresses\n"
		     "t.yaml:13:7: spec.egress[2]: missing required field \"name\"\n"
		     "t.yaml:14:11: spec.egress[2].to: needs at least one destination\n"
		     "t.yaml:15:13: spec.egress[3].name: \"Upper\" is not a valid rule name: at "
		     "most 63 of a-z, 0-9, '-' and '.', starting and ending with a letter or "
		     "digit\n"
		     "t.yaml:16:12: spec.egress[3].to[0]: needs one of cidr, fqdn or service\n"
		     "t.yaml:16:16: spec.egress[3].to[1]: has both cidr and fqdn; give each "
		     "destination its own list item\n"
		     "t.yaml:16:59: spec.egress[3].to[2].service: missing required field "
		     "\"name\"\n"
		     "t.yaml:18:11: spec.egress[4].to: expected list, got mapping\n"
		     "t.yaml:19:22: spec.egress[4].ports[0].port: expected integer, got boolean "
		     "\"true\"\n");
}

static void test_cluster_only_fields(void **state)
{
	expect_diags("apiVersion: sluice.dev/v1alpha1\n"
		     "kind: AgentPolicy\n"
		     "metadata: {name: p}\n"
		     "spec:\n"
		     "  selector: {cgroupPaths: [a]}\n"
		     "  namespaceSelector: {matchLabels: {a: b}}\n"
		     "  egressDeny:\n"
		     "    - {name: d, to: [{cidr: 10.0.0.0/8}]}\n",
		     "t.yaml:6:3: spec.namespaceSelector: only a ClusterAgentPolicy selects "
		     "namespaces; an AgentPolicy applies to its own namespace\n"
		     "t.yaml:7:3: spec.egressDeny: only a ClusterAgentPolicy has egressDeny "
		     "rules; an AgentPolicy only allows (anything not allowed is denied)\n");
	expect_diags("apiVersion: sluice.dev/v1alpha1\n"
		     "kind: ClusterAgentPolicy\n"
		     "metadata: {name: c, namespace: x}\n"
		     "spec:\n"
		     "  selector: {podSelector: {}}\n"
		     "  egress: [{name: s, to: [{service: {name: gw}}]}]\n",
		     "t.yaml:3:21: metadata.namespace: a ClusterAgentPolicy is cluster-scoped and "
		     "has no namespace; use namespaceSelector, or make it an AgentPolicy\n"
		     "t.yaml:6:37: spec.egress[0].to[0].service: missing required field "
		     "\"namespace\" (a ClusterAgentPolicy has no namespace to default to)\n");
}

static void test_document_errors(void **state)
{
	expect_diags("apiVersion: v1\n"
		     "kind: NetworkPolicy\n"
		     "metadata: {name: Bad_Name, namespace: \"-x\", labels: {a: 1}}\n"
		     "spec:\n"
		     "  selector: {}\n"
		     "  mode: block\n"
		     "  dns: yes\n",
		     "t.yaml:1:13: apiVersion: expected \"sluice.dev/v1alpha1\", got \"v1\"\n"
		     "t.yaml:2:7: kind: expected AgentPolicy or ClusterAgentPolicy, got "
		     "\"NetworkPolicy\"\n"
		     "t.yaml:3:18: metadata.name: \"Bad_Name\" is not a valid name: at most 253 "
		     "of a-z, 0-9, '-' and '.', starting and ending with a letter or digit\n"
		     "t.yaml:3:39: metadata.namespace: \"-x\" is not a valid namespace: at most "
		     "63 of a-z, 0-9 and '-', starting and ending with a letter or digit\n"
		     "t.yaml:3:57: metadata.labels[\"a\"]: expected string, got integer \"1\"\n"
		     "t.yaml:5:13: spec.selector: needs podSelector or cgroupPaths (or both)\n"
		     "t.yaml:6:9: spec.mode: expected enforce or audit, got \"block\"\n"
		     "t.yaml:7:8: spec.dns: expected allow or deny, got \"yes\"\n");
	expect_diags("kind: AgentPolicy\n"
		     "metadata:\n"
		     "  namespace: x\n"
		     "spec: []\n",
		     "t.yaml:1:1: missing required field \"apiVersion\"\n"
		     "t.yaml:3:3: metadata: missing required field \"name\"\n"
		     "t.yaml:4:7: spec: expected mapping, got list\n");
	expect_diags("- 1\n- {}\n",
		     "t.yaml:1:3: [0]: expected a policy object (mapping), got integer\n"
		     "t.yaml:2:3: missing required field \"apiVersion\"\n"
		     "t.yaml:2:3: missing required field \"kind\"\n"
		     "t.yaml:2:3: missing required field \"metadata\"\n"
		     "t.yaml:2:3: missing required field \"spec\"\n");
	expect_diags("just a string\n",
		     "t.yaml:1:1: expected a policy object (mapping), got string\n");
	expect_diags(HDR
		     "    - name: r\n"
		     "      to: [{cidr: 10.0.0.0/8}]\n"
		     "  selector: {cgroupPaths: [\"/\", \"a/../b\", \"..\", \"a..b/c\"]}\n",
		     "t.yaml:9:3: duplicate key \"selector\" in spec (first at line 5)\n");
	expect_diags("apiVersion: sluice.dev/v1alpha1\n"
		     "kind: AgentPolicy\n"
		     "metadata: {name: p}\n"
		     "spec:\n"
		     "  selector: {cgroupPaths: [\"/\", \"a/../b\", \"..\", \"a..b/c\", 3]}\n",
		     "t.yaml:5:28: spec.selector.cgroupPaths[0]: empty cgroup path; give a path "
		     "below the cgroup2 mount, e.g. \"agents.slice/*\"\n"
		     "t.yaml:5:33: spec.selector.cgroupPaths[1]: \"a/../b\" must not contain "
		     "\"..\": cgroup paths stay below the cgroup2 mount\n"
		     "t.yaml:5:43: spec.selector.cgroupPaths[2]: \"..\" must not contain \"..\": "
		     "cgroup paths stay below the cgroup2 mount\n"
		     "t.yaml:5:59: spec.selector.cgroupPaths[4]: expected string, got integer "
		     "\"3\"\n");
}

static void test_duplicate_keys(void **state)
{
	expect_diags(HDR
		     "    - name: r\n"
		     "      to: [{cidr: 10.0.0.0/8}]\n"
		     "      name: s\n"
		     "      ports: [{port: 1, port: 2}]\n",
		     "t.yaml:9:7: duplicate key \"name\" in spec.egress[0] (first at line 7)\n"
		     "t.yaml:10:25: duplicate key \"port\" in spec.egress[0].ports[0] (first at "
		     "line 10)\n");
	expect_diags("{\"apiVersion\": \"sluice.dev/v1alpha1\", \"kind\": \"AgentPolicy\",\n"
		     " \"kind\": \"AgentPolicy\"}\n",
		     "t.yaml:1:1: missing required field \"metadata\"\n"
		     "t.yaml:1:1: missing required field \"spec\"\n"
		     "t.yaml:2:2: duplicate key \"kind\" in the document (first at line 1)\n");
	/* more keys than are compared pairwise: the sorted path */
	expect_diags("apiVersion: sluice.dev/v1alpha1\n"
		     "kind: AgentPolicy\n"
		     "metadata:\n"
		     "  name: p\n"
		     "  labels: {a: x, b: x, c: x, d: x, e: x, f: x, g: x, h: x, i: x, j: x, k: x,\n"
		     "           l: x, m: x, n: x, o: x, p: x, q: x, c: y, r: x}\n"
		     "spec:\n"
		     "  selector: {cgroupPaths: [a]}\n"
		     "  egress: [{name: r, to: [{cidr: 10.0.0.0/8}]}]\n",
		     "t.yaml:6:48: duplicate key \"c\" in metadata.labels (first at line 5)\n");
}

static void test_duplicate_docs(void **state)
{
	struct pol_set set = { 0 };
	struct pol_diags d = { 0 };
	char *got;
	int rc;

	expect_diags(HDR "---\n" HDR "---\n"
		     "apiVersion: sluice.dev/v1alpha1\n"
		     "kind: ClusterAgentPolicy\n"
		     "metadata: {name: p}\n"
		     "spec: {selector: {podSelector: {}}}\n",
		     "t.yaml:10:18: duplicate AgentPolicy \"default/p\" in this file (first at "
		     "line 3)\n");

	/* The same object from a second file is an error too. */
	expect_ok(HDR, &set);
	rc = policy__parse_buf("u.yaml", HDR, strlen(HDR), &set, &d);
	assert_int_equal(rc, -EINVAL);
	got = diags_str(&d);
	assert_string_equal(got, "u.yaml:3:18: AgentPolicy \"default/p\" is already defined "
			    "in t.yaml:1\n");
	assert_int_equal(set.ndocs, 1);
	free(got);
	policy__diags_free(&d);
	policy__set_free(&set);
}

static void test_yaml_syntax(void **state)
{
	expect_diags("apiVersion: sluice.dev/v1alpha1\n"
		     "kind: [AgentPolicy\n"
		     "metadata: {}\n",
		     "t.yaml:3:9: YAML syntax error: did not find expected ',' or ']' (while "
		     "parsing a flow sequence at line 2)\n");
	expect_diags("a: b\n c: d\n",
		     "t.yaml:2:3: YAML syntax error: mapping values are not allowed in this "
		     "context\n");
	/* A complete bad document before the syntax error is still reported. */
	expect_diags("apiVersion: v2\n---\nkey: \"unterminated\n",
		     "t.yaml:1:1: missing required field \"kind\"\n"
		     "t.yaml:1:1: missing required field \"metadata\"\n"
		     "t.yaml:1:1: missing required field \"spec\"\n"
		     "t.yaml:1:13: apiVersion: expected \"sluice.dev/v1alpha1\", got \"v2\"\n"
		     "t.yaml:4:1: YAML syntax error: found unexpected end of stream (while "
		     "scanning a quoted scalar at line 3)\n");
	expect_diags("a: *nope\n", "t.yaml:1:4: YAML: unknown alias \"nope\"\n");
}

static void test_yaml_types_and_aliases(void **state)
{
	struct pol_set set = { 0 };

	/* Quoted or tagged, a number is a string; tagged, a string is an int. */
	expect_diags(HDR
		     "    - name: r\n"
		     "      to: [{cidr: 10.0.0.0/8}]\n"
		     "      ports: [{port: '443'}, {port: !!str 443}, {port: null}, {port: ~}]\n"
		     "      tools: [!!int 7, true, 1.5, 0x1f]\n",
		     "t.yaml:9:22: spec.egress[0].ports[0].port: expected integer, got string "
		     "\"443\"\n"
		     "t.yaml:9:37: spec.egress[0].ports[1].port: expected integer, got string "
		     "\"443\"\n"
		     "t.yaml:10:15: spec.egress[0].tools[0]: expected string, got integer \"7\"\n"
		     "t.yaml:10:24: spec.egress[0].tools[1]: expected string, got boolean "
		     "\"true\"\n"
		     "t.yaml:10:30: spec.egress[0].tools[2]: expected string, got number "
		     "\"1.5\"\n"
		     "t.yaml:10:35: spec.egress[0].tools[3]: expected string, got integer "
		     "\"0x1f\"\n");

	/* Anchors and aliases, as people use them for shared port lists. */
	expect_ok(HDR
		  "    - name: a\n"
		  "      to: [{cidr: 10.0.0.0/8}]\n"
		  "      ports: &web [{port: 0x50}, {port: 0o773}]\n"
		  "    - name: b\n"
		  "      to: [{cidr: 10.0.0.0/8}]\n"
		  "      ports: *web\n", &set);
	assert_int_equal(set.docs[0].egress[1].nports, 2);
	assert_int_equal(set.docs[0].egress[1].ports[0].port, 80);
	assert_int_equal(set.docs[0].egress[1].ports[1].port, 507);
	policy__set_free(&set);
}

static void test_json_errors(void **state)
{
	expect_diags("{\"apiVersion\": \"sluice.dev/v1alpha1\",\n"
		     " \"kind\": \"AgentPolicy\",\n"
		     " \"metadata\": {\"name\": \"x\"},\n"
		     " \"spec\": {\"selector\": {\"cgroupPaths\": [\"a\"]}, \"foo\": 1,\n"
		     "   \"egress\": [{\"name\": \"a\", \"to\": [{\"cidr\": \"1.2.3.4/8\"}],\n"
		     "               \"ports\": [{\"port\": \"443\"}, {\"port\": 1.0}]}]}}\n",
		     "t.yaml:4:47: unknown field \"foo\" in spec\n"
		     "t.yaml:5:45: spec.egress[0].to[0].cidr: 1.2.3.4/8 has host bits set; did "
		     "you mean 1.0.0.0/8?\n"
		     "t.yaml:6:35: spec.egress[0].ports[0].port: expected integer, got string "
		     "\"443\"\n"
		     "t.yaml:6:52: spec.egress[0].ports[1].port: expected integer, got number "
		     "\"1.0\"\n");
	expect_diags("[{\"a\": 1,}]", "t.yaml:1:10: JSON syntax error: expected a \"key\" "
		     "(JSON has no trailing commas)\n");
	expect_diags("{\"a\": ", "t.yaml:1:7: JSON syntax error: unexpected end of input\n");
	expect_diags("{\"a\": \"x}\n", "t.yaml:1:7: JSON syntax error: unterminated string\n");
	expect_diags("{\n  a: 1}", "t.yaml:2:3: JSON syntax error: expected a \"key\" in double "
		     "quotes\n");
	expect_diags("[1 2]", "t.yaml:1:4: JSON syntax error: expected ',' or ']'\n");
	expect_diags("[1,\n ]", "t.yaml:2:2: JSON syntax error: expected a value (JSON has no "
		     "trailing commas)\n");
	expect_diags("{\"a\": tru}", "t.yaml:1:7: JSON syntax error: expected a value (strings "
		     "need double quotes)\n");
	expect_diags("{\"a\": -x}", "t.yaml:1:7: JSON syntax error: invalid number\n");
	expect_diags("{\"a\" 1}", "t.yaml:1:6: JSON syntax error: expected ':' after the key\n");
	expect_diags("{\"a\\q\": 1}", "t.yaml:1:4: JSON syntax error: invalid escape in a "
		     "string\n");
	expect_diags("{} {}\n", "t.yaml:1:4: JSON syntax error: more content after the "
		     "document (wrap several policies in a [ ] list)\n");
	expect_diags("[1, null]\n",
		     "t.yaml:1:2: [0]: expected a policy object (mapping), got integer\n"
		     "t.yaml:1:5: [1]: expected a policy object (mapping), got null\n");
}

/* ---- files ----------------------------------------------------------- */

static char *parse_fixture(const char *name, struct pol_set *set, int *rc)
{
	char dir[256], path[512];
	struct pol_diags d = { 0 };
	char *s;

	snprintf(path, sizeof(path), "%s/fixtures/%s", src_dir(dir, sizeof(dir)), name);
	*rc = policy__parse_file(path, set, &d);
	s = diags_str(&d);
	policy__diags_free(&d);
	return s;
}

/* The file name in messages is the path given; compare without it. */
static void assert_diags_in(const char *got, const char *name, const char *expect)
{
	char buf[2048] = "";
	const char *s = got;
	size_t o = 0;

	while (*s) {
		const char *p = strstr(s, name);
		const char *nl = strchr(s, '\n');

		assert_non_null(p);
		assert_non_null(nl);
		o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%.*s", (int)(nl + 1 - p), p);
		s = nl + 1;
	}
	assert_string_equal(buf, expect);
}

static void test_fixtures(void **state)
{
	struct pol_set set = { 0 };
	char *got;
	int rc;

	got = parse_fixture("one-bad-of-two.yaml", &set, &rc);
	assert_int_equal(rc, -EINVAL);
	assert_int_equal(set.ndocs, 0);
	assert_diags_in(got, "one-bad-of-two.yaml", "one-bad-of-two.yaml:21:22: "
			"spec.egress[0].ports[0].port: 70000 is out of range 1-65535\n");
	free(got);

	got = parse_fixture("bad-syntax.yaml", &set, &rc);
	assert_int_equal(rc, -EINVAL);
	assert_diags_in(got, "bad-syntax.yaml", "bad-syntax.yaml:7:3: YAML syntax error: did "
			"not find expected ',' or '}' (while parsing a flow mapping at line 6)\n");
	free(got);

	got = parse_fixture("bad-syntax.json", &set, &rc);
	assert_int_equal(rc, -EINVAL);
	assert_diags_in(got, "bad-syntax.json", "bad-syntax.json:4:33: JSON syntax error: "
			"expected a \"key\" (JSON has no trailing commas)\n");
	free(got);

	got = parse_fixture("bad-fields.json", &set, &rc);
	assert_int_equal(rc, -EINVAL);
	assert_diags_in(got, "bad-fields.json",
			"bad-fields.json:10:27: spec.egress[0].ports[0].port: expected integer, "
			"got string \"443\"\n"
			"bad-fields.json:11:8: unknown field \"color\" in spec.egress[0]\n");
	free(got);

	got = parse_fixture("no-such-file.yaml", &set, &rc);
	assert_int_equal(rc, -ENOENT);
	assert_diags_in(got, "no-such-file.yaml", "no-such-file.yaml: cannot read: No such "
			"file or directory\n");
	free(got);
	assert_int_equal(set.ndocs, 0);

	got = parse_fixture("empty-docs.yaml", &set, &rc);
	assert_int_equal(rc, 0);
	assert_string_equal(got, "");
	assert_int_equal(set.ndocs, 1);
	assert_string_equal(set.docs[0].cgroup_paths[0], "sys.slice/x");
	free(got);
	policy__set_free(&set);
}

static void test_examples_validate(void **state)
{
	static const char *const files[] = {
		"coding-agent.yaml", "research-agent.yaml", "cluster-guardrail.yaml",
		"demo.yaml", "coding-agent.json",
	};
	char dir[256], path[512];
	struct pol_set set = { 0 };
	struct pol_diags d = { 0 };

	src_dir(dir, sizeof(dir));
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		struct pol_set one = { 0 };
		int rc;

		snprintf(path, sizeof(path), "%s/../../examples/policies/%s", dir, files[i]);
		/* Separate sets: the JSON example is the YAML one again. */
		rc = policy__parse_file(path, i == 4 ? &one : &set, &d);
		if (rc)
			policy__print_diags(&d, stderr);
		assert_int_equal(rc, 0);
		policy__set_free(&one);
	}
	assert_int_equal(d.n, 0);
	assert_int_equal(set.ndocs, 4);
	/* The demo: two loopback rules and nothing else. */
	assert_string_equal(set.docs[3].name, "demo");
	assert_int_equal(set.docs[3].negress, 2);
	assert_string_equal(set.docs[3].egress[1].name, "mcp-tools");
	assert_int_equal(set.docs[3].egress[1].ports[0].port, 18081);
	assert_int_equal(set.docs[2].egress[0].deny, true);
	policy__set_free(&set);
}

static void test_class_names(void **state)
{
	assert_string_equal(policy__class_name(SL_CLASS_LLM), "llm");
	assert_string_equal(policy__class_name(SL_CLASS_DNS), "dns");
	assert_string_equal(policy__class_name(SL_CLASS_NONE), "none");
	assert_string_equal(policy__class_name(200), "none");
	assert_int_equal(policy__class_parse("gateway"), SL_CLASS_GATEWAY);
	assert_int_equal(policy__class_parse("other"), SL_CLASS_OTHER);
	assert_int_equal(policy__class_parse("none"), -EINVAL);
	assert_int_equal(policy__class_parse("LLM"), -EINVAL);
}

/* A large file parses, and every error in it is reported, in order. */
static void test_many_rules(void **state)
{
	const size_t n = 20000;
	struct pol_set set = { 0 };
	struct pol_diags d = { 0 };
	size_t cap = 64 * n + 256, o = 0;
	char *buf = malloc(cap);
	int rc;

	assert_non_null(buf);
	o += (size_t)snprintf(buf + o, cap - o, HDR);
	for (size_t i = 0; i < n; i++)
		o += (size_t)snprintf(buf + o, cap - o,
				      "    - {name: r%zu, to: [{cidr: 10.%zu.%zu.%s/32}]}\n", i,
				      i / 256, i % 256, i == n - 1 ? "1/" : "1");
	rc = policy__parse_buf("big.yaml", buf, o, &set, &d);
	assert_int_equal(rc, -EINVAL);
	assert_int_equal(d.n, 1);
	assert_int_equal(d.v[0].line, 6 + (int)n);
	policy__diags_free(&d);

	o = 0;
	o += (size_t)snprintf(buf + o, cap - o, HDR);
	for (size_t i = 0; i < n; i++)
		o += (size_t)snprintf(buf + o, cap - o,
				      "    - {name: r%zu, to: [{cidr: 10.%zu.%zu.1/32}]}\n", i,
				      i / 256, i % 256);
	rc = policy__parse_buf("big.yaml", buf, o, &set, &d);
	assert_int_equal(rc, 0);
	assert_int_equal(set.docs[0].negress, n);
	policy__set_free(&set);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_yaml),
		cmocka_unit_test(test_valid_json),
		cmocka_unit_test(test_empty_documents),
		cmocka_unit_test(test_unknown_fields),
		cmocka_unit_test(test_bad_cidr),
		cmocka_unit_test(test_bad_ports),
		cmocka_unit_test(test_bad_rule_fields),
		cmocka_unit_test(test_cluster_only_fields),
		cmocka_unit_test(test_document_errors),
		cmocka_unit_test(test_duplicate_keys),
		cmocka_unit_test(test_duplicate_docs),
		cmocka_unit_test(test_yaml_syntax),
		cmocka_unit_test(test_yaml_types_and_aliases),
		cmocka_unit_test(test_json_errors),
		cmocka_unit_test(test_fixtures),
		cmocka_unit_test(test_examples_validate),
		cmocka_unit_test(test_class_names),
		cmocka_unit_test(test_many_rules),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
