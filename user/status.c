// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* sluice status / explain / detach: read (or remove) the pinned datapath.
 * One code path builds a cJSON document; people get it as a table. */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <bpf/bpf.h>
#include <cjson/cJSON.h>
#include "cgroup.h"
#include "cli.h"
#include "control.h"
#include "datapath.h"
#include "events.h"
#include "log.h"
#include "policy.h"

static const char *const counter_names[SL_CNT_MAX] = {
	[SL_CNT_ALLOW] = "allow", [SL_CNT_DENY] = "deny", [SL_CNT_AUDIT] = "audit",
	[SL_CNT_SOCK_DENY] = "raw_socket_refused", [SL_CNT_ESTABLISHED] = "established",
	[SL_CNT_CLOSE] = "close", [SL_CNT_EV_LOST_FULL] = "events_lost_ring_full",
	[SL_CNT_EV_LOST_NORING] = "events_lost_no_reader", [SL_CNT_TAG_FAIL] = "socket_tag_failed",
};

static void print_json(cJSON *doc)
{
	char *s = cJSON_PrintUnformatted(doc);

	if (s) {
		puts(s);
		free(s);
	}
}

static int json_error(bool json, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int json_error(bool json, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (json) {
		cJSON *d = cJSON_CreateObject();

		cJSON_AddStringToObject(d, "error", msg);
		print_json(d);
		cJSON_Delete(d);
	} else {
		fprintf(stderr, "sluice: %s\n", msg);
	}
	return 1;
}

struct common_opts {
	const char *socket;
	bool follow;
	const char *pin_path;
	const char *cgroup;
	bool json;
	bool own_netns;
	int argi;	/* first positional */
};

static int parse_common(int argc, char **argv, struct common_opts *o, const char *usage)
{
	enum { O_PIN = 1, O_CGROUP, O_POD_NETNS, O_HELP, O_SOCKET, O_FOLLOW };
	static const struct option opts[] = {
		{ "pin-path", required_argument, NULL, O_PIN },
		{ "socket", required_argument, NULL, O_SOCKET },
		{ "follow", no_argument, NULL, O_FOLLOW },
		{ "cgroup", required_argument, NULL, O_CGROUP },
		{ "pod-netns", no_argument, NULL, O_POD_NETNS },
		{ "output", required_argument, NULL, 'o' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, O_HELP },
		{},
	};
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "o:fvh", opts, NULL)) != -1) {
		switch (c) {
		case O_PIN: o->pin_path = optarg; break;
		case O_SOCKET: o->socket = optarg; break;
		case O_FOLLOW: o->follow = true; break;
		case O_CGROUP: o->cgroup = optarg; break;
		case O_POD_NETNS: o->own_netns = true; break;
		case 'o':
			if (!strcmp(optarg, "json"))
				o->json = true;
			else if (strcmp(optarg, "table")) {
				fprintf(stderr, "sluice: -o takes json or table, not '%s'\n", optarg);
				return -EINVAL;
			}
			break;
		case 'f': o->follow = true; break;
		case 'v': log__set_level(LOG_DEBUG); break;
		case 'h':
		case O_HELP:
			fputs(usage, stdout);
			exit(0);
		default:
			fputs(usage, stderr);
			return -EINVAL;
		}
	}
	o->argi = optind;
	if (!o->socket)
		o->socket = SLUICE_CONTROL_SOCKET;
	if (!o->pin_path)
		o->pin_path = SLUICE_DEFAULT_PIN_PATH;
	return 0;
}

static int open_pins(struct datapath *dp, const struct common_opts *o)
{
	struct datapath_opts dopts = { .pin_path = o->pin_path, .no_load = true };
	int err = datapath__open(dp, &dopts);

	if (err == -ENOENT)
		return json_error(o->json, "no datapath is loaded at %s (start sluiced or sluice run)",
				  o->pin_path), -ENOENT;
	if (err)
		return json_error(o->json, "cannot open the pins at %s (are you root?)",
				  o->pin_path), err;
	return 0;
}

static cJSON *status_counters(struct datapath *dp, uint32_t ring, uint64_t *total)
{
	uint64_t c[SL_CNT_MAX];
	cJSON *o;
	int i;

	if (datapath__counters(dp, ring, c))
		return NULL;
	o = cJSON_CreateObject();
	for (i = 0; i < SL_CNT_MAX; i++) {
		cJSON_AddNumberToObject(o, counter_names[i], (double)c[i]);
		total[i] += c[i];
	}
	return o;
}

static cJSON *status_build(struct datapath *dp, const char *pin_path)
{
	cJSON *doc = cJSON_CreateObject(), *d, *arr, *rings, *tot;
	uint64_t total[SL_CNT_MAX] = {};
	struct sl_meta meta = {};
	__u64 key, *prev = NULL;
	char p[PATH_MAX], t[64];
	__u32 zero = 0, r;
	int i;

	d = cJSON_AddObjectToObject(doc, "datapath");
	cJSON_AddBoolToObject(d, "loaded", true);
	cJSON_AddStringToObject(d, "pin_path", pin_path);
	if (!bpf_map_lookup_elem(dp->map_fd[DP_META], &zero, &meta)) {
		if (cgroup__path_of(meta.attach_cgid, p, sizeof(p)))
			snprintf(p, sizeof(p), "?");
		cJSON_AddStringToObject(d, "attached_to", p);
		cJSON_AddNumberToObject(d, "attached_cgroup_id", (double)meta.attach_cgid);
		events__format_time(0, meta.loaded_realtime_ns, t, sizeof(t));
		cJSON_AddStringToObject(d, "loaded_at", t);
		cJSON_AddNumberToObject(d, "loader_pid", meta.loader_pid);
	}
	arr = cJSON_AddArrayToObject(d, "programs");
	for (i = 0; i < DP_PROG_ATTACHED_N; i++) {
		struct bpf_link_info li = {};
		__u32 len = sizeof(li);
		cJSON *o = cJSON_CreateObject();
		int fd;

		snprintf(p, sizeof(p), "%s/link_%s", pin_path, datapath_prog_names[i]);
		cJSON_AddStringToObject(o, "name", datapath_prog_names[i]);
		cJSON_AddStringToObject(o, "link_pin", p);
		fd = bpf_obj_get(p);
		if (fd >= 0 && !bpf_obj_get_info_by_fd(fd, &li, &len)) {
			cJSON_AddNumberToObject(o, "link_id", li.id);
			cJSON_AddNumberToObject(o, "prog_id", li.prog_id);
			cJSON_AddBoolToObject(o, "attached", true);
		} else {
			cJSON_AddBoolToObject(o, "attached", false);
		}
		if (fd >= 0)
			close(fd);
		cJSON_AddItemToArray(arr, o);
	}
	arr = cJSON_AddArrayToObject(d, "maps");
	for (i = 0; i < DP_MAP_N; i++) {
		struct bpf_map_info mi = {};
		__u32 len = sizeof(mi);
		cJSON *o = cJSON_CreateObject();

		cJSON_AddStringToObject(o, "name", datapath_map_names[i]);
		if (!bpf_obj_get_info_by_fd(dp->map_fd[i], &mi, &len)) {
			cJSON_AddNumberToObject(o, "id", mi.id);
			cJSON_AddNumberToObject(o, "max_entries", mi.max_entries);
		}
		cJSON_AddItemToArray(arr, o);
	}

	arr = cJSON_AddArrayToObject(doc, "identities");
	while (!bpf_map_get_next_key(dp->map_fd[DP_IDENT], prev, &key)) {
		struct sl_set_info si = {};
		struct sl_identity id;
		cJSON *o;

		prev = &key;
		if (datapath__ident_get(dp, key, &id))
			continue;
		o = cJSON_CreateObject();
		if (cgroup__path_of(key, p, sizeof(p)))
			cJSON_AddNullToObject(o, "cgroup");
		else
			cJSON_AddStringToObject(o, "cgroup", p);
		cJSON_AddNumberToObject(o, "cgroup_id", (double)key);
		cJSON_AddNumberToObject(o, "set_id", id.set_id);
		cJSON_AddStringToObject(o, "mode", id.flags & SL_IDF_AUDIT ? "audit" : "enforce");
		cJSON_AddNumberToObject(o, "ring", id.ring);
		cJSON_AddNumberToObject(o, "owner_pid", id.owner_pid);
		cJSON_AddBoolToObject(o, "owner_alive",
				      id.owner_pid && (kill(id.owner_pid, 0) == 0 || errno == EPERM));
		if (!datapath__set_info(dp, id.set_id, &si)) {
			cJSON_AddStringToObject(o, "policies", si.policies);
			cJSON_AddNumberToObject(o, "rules", si.nrules);
			cJSON_AddNumberToObject(o, "prefixes", (double)si.nentries);
		}
		cJSON_AddItemToArray(arr, o);
	}

	d = cJSON_AddObjectToObject(doc, "counters");
	tot = cJSON_AddObjectToObject(d, "total");
	rings = cJSON_AddArrayToObject(d, "rings");
	for (r = 0; r < SL_MAX_RINGS; r++) {
		__u32 inner;
		cJSON *o = status_counters(dp, r, total);

		if (!o)
			continue;
		/* Rings not in use and never used say nothing. */
		if (bpf_map_lookup_elem(dp->map_fd[DP_RINGS], &r, &inner) && r != 0) {
			bool any = false;

			for (i = 0; i < SL_CNT_MAX; i++)
				any |= cJSON_GetObjectItem(o, counter_names[i])->valuedouble != 0;
			if (!any) {
				cJSON_Delete(o);
				continue;
			}
		}
		cJSON_AddNumberToObject(o, "ring", r);
		cJSON_AddItemToArray(rings, o);
	}
	for (i = 0; i < SL_CNT_MAX; i++)
		cJSON_AddNumberToObject(tot, counter_names[i], (double)total[i]);
	return doc;
}

static int collect_line(void *ctx, const char *line)
{
	cJSON **out = ctx;

	*out = cJSON_Parse(line);
	return 1;
}

/* What the daemon says of itself, if one answers on SOCKET. */
static void status_add_daemon(cJSON *doc, const char *socket)
{
	cJSON *d = NULL;

	if (control__request(socket, "{\"cmd\":\"daemon\"}", collect_line, &d) || !d) {
		cJSON *n = cJSON_AddObjectToObject(doc, "daemon");

		cJSON_AddBoolToObject(n, "running", false);
		cJSON_AddStringToObject(n, "socket", socket);
		cJSON_Delete(d);
		return;
	}
	cJSON_AddBoolToObject(d, "running", true);
	cJSON_AddStringToObject(d, "socket", socket);
	cJSON_AddItemToObject(doc, "daemon", d);
}

static void status_print_table(cJSON *doc)
{
	cJSON *d = cJSON_GetObjectItem(doc, "datapath"), *it, *c;
	cJSON *dm = cJSON_GetObjectItem(doc, "daemon");

	if (cJSON_IsTrue(cJSON_GetObjectItem(dm, "running")))
		printf("Daemon:     sluiced pid %.0f, up %.0f s, policies from %s%s, %.0f events read\n",
		       cJSON_GetObjectItem(dm, "pid")->valuedouble,
		       cJSON_GetObjectItem(dm, "uptime_s")->valuedouble,
		       cJSON_IsString(cJSON_GetObjectItem(dm, "policy_dir")) ?
		       cJSON_GetObjectItem(dm, "policy_dir")->valuestring : "",
		       cJSON_IsTrue(cJSON_GetObjectItem(dm, "kubernetes")) ? " (and the API server)" : "",
		       cJSON_GetObjectItem(dm, "events_read")->valuedouble);
	else
		printf("Daemon:     not running (no answer on %s)\n",
		       cJSON_GetObjectItem(dm, "socket")->valuestring);

	printf("Datapath:   loaded, pinned at %s\n",
	       cJSON_GetObjectItem(d, "pin_path")->valuestring);
	if ((it = cJSON_GetObjectItem(d, "attached_to")))
		printf("Attached:   %s (cgroup id %.0f), loaded %s by pid %.0f\n", it->valuestring,
		       cJSON_GetObjectItem(d, "attached_cgroup_id")->valuedouble,
		       cJSON_GetObjectItem(d, "loaded_at")->valuestring,
		       cJSON_GetObjectItem(d, "loader_pid")->valuedouble);
	printf("\n%-12s %-8s %-8s %s\n", "PROGRAM", "PROG ID", "LINK ID", "LINK PIN");
	cJSON_ArrayForEach(it, cJSON_GetObjectItem(d, "programs")) {
		cJSON *pid = cJSON_GetObjectItem(it, "prog_id"), *lid = cJSON_GetObjectItem(it, "link_id");

		printf("%-12s %-8.0f %-8.0f %s%s\n", cJSON_GetObjectItem(it, "name")->valuestring,
		       pid ? pid->valuedouble : 0, lid ? lid->valuedouble : 0,
		       cJSON_GetObjectItem(it, "link_pin")->valuestring,
		       cJSON_IsTrue(cJSON_GetObjectItem(it, "attached")) ? "" : "  (NOT ATTACHED)");
	}
	printf("\n%-36s %-10s %-10s %-7s %-4s %-8s %s\n", "IDENTITY CGROUP", "CGROUP ID", "SET",
	       "MODE", "RING", "OWNER", "POLICIES");
	cJSON_ArrayForEach(it, cJSON_GetObjectItem(doc, "identities")) {
		cJSON *cg = cJSON_GetObjectItem(it, "cgroup"), *pol = cJSON_GetObjectItem(it, "policies");
		char owner[32];

		snprintf(owner, sizeof(owner), "%.0f%s", cJSON_GetObjectItem(it, "owner_pid")->valuedouble,
			 cJSON_IsTrue(cJSON_GetObjectItem(it, "owner_alive")) ? "" : " (gone)");
		printf("%-36s %-10.0f %-10.0f %-7s %-4.0f %-8s %s\n",
		       cJSON_IsString(cg) ? cg->valuestring : "(removed)",
		       cJSON_GetObjectItem(it, "cgroup_id")->valuedouble,
		       cJSON_GetObjectItem(it, "set_id")->valuedouble,
		       cJSON_GetObjectItem(it, "mode")->valuestring,
		       cJSON_GetObjectItem(it, "ring")->valuedouble, owner,
		       pol ? pol->valuestring : "");
	}
	printf("\nCounters (all rings):\n");
	cJSON_ArrayForEach(c, cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "counters"), "total"))
		printf("  %-24s %.0f\n", c->string, c->valuedouble);
}

int status__main(int argc, char **argv)
{
	static const char usage[] =
		"usage: sluice status [--pin-path PATH] [-o json]\n\n"
		"Show the pinned datapath: programs and links, maps, identities with their\n"
		"policy sets, and the kernel's verdict and event-loss counters.\n";
	struct common_opts o = {};
	struct datapath dp;
	cJSON *doc;
	int err;

	if (parse_common(argc, argv, &o, usage))
		return 2;
	if (!datapath__pinned(o.pin_path)) {
		if (o.json) {
			doc = cJSON_CreateObject();
			cJSON *d = cJSON_AddObjectToObject(doc, "datapath");

			cJSON_AddBoolToObject(d, "loaded", false);
			cJSON_AddStringToObject(d, "pin_path", o.pin_path);
			print_json(doc);
			cJSON_Delete(doc);
		} else {
			printf("Datapath:   not loaded (nothing pinned at %s)\n", o.pin_path);
		}
		return 0;
	}
	err = open_pins(&dp, &o);
	if (err)
		return 1;
	doc = status_build(&dp, o.pin_path);
	status_add_daemon(doc, o.socket);
	if (o.json)
		print_json(doc);
	else
		status_print_table(doc);
	cJSON_Delete(doc);
	datapath__release(&dp);
	return 0;
}

/* DEST:PORT[/proto] -> addresses (a name is resolved), port, protocol. */
static int explain_parse_dest(const char *arg, struct sockaddr_storage *addrs, int max,
			      int *n, uint16_t *port, uint8_t *proto, char *host, size_t hlen)
{
	char buf[512], *slash, *colon, *end;
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res, *ai;
	long v;

	snprintf(buf, sizeof(buf), "%s", arg);
	*proto = SL_PROTO_TCP;
	slash = strrchr(buf, '/');
	if (slash) {
		*slash++ = '\0';
		if (!strcasecmp(slash, "udp"))
			*proto = SL_PROTO_UDP;
		else if (!strcasecmp(slash, "sctp"))
			*proto = SL_PROTO_SCTP;
		else if (strcasecmp(slash, "tcp"))
			return -EINVAL;
	}
	colon = strrchr(buf, ':');
	if (!colon)
		return -EINVAL;
	*colon++ = '\0';
	errno = 0;
	v = strtol(colon, &end, 10);
	if (errno || *end || v < 1 || v > 65535)
		return -EINVAL;
	*port = v;
	if (buf[0] == '[') {
		size_t l = strlen(buf);

		if (l < 3 || buf[l - 1] != ']')
			return -EINVAL;
		buf[l - 1] = '\0';
		memmove(buf, buf + 1, l - 1);
	}
	snprintf(host, hlen, "%s", buf);
	if (getaddrinfo(buf, NULL, &hints, &res))
		return -ENOENT;
	*n = 0;
	for (ai = res; ai && *n < max; ai = ai->ai_next) {
		memcpy(&addrs[*n], ai->ai_addr, ai->ai_addrlen);
		(*n)++;
	}
	freeaddrinfo(res);
	return 0;
}

static void explain_one(struct datapath *dp, struct sl_explain_ctx *base,
			const struct sockaddr_storage *ss, cJSON *results)
{
	struct sl_explain_ctx c = *base;
	struct sl_rule_meta meta;
	struct sl_fqdn_key fk = {};
	struct sl_fqdn_val fv;
	const char *rule;
	char a[80];
	cJSON *o = cJSON_CreateObject();
	int v4 = ss->ss_family == AF_INET;

	if (v4) {
		memset(c.addr, 0, 10);
		c.addr[10] = c.addr[11] = 0xff;
		memcpy(c.addr + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
	} else {
		memcpy(c.addr, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
	}
	events__format_addr(c.addr, c.port, v4, a, sizeof(a));
	cJSON_AddStringToObject(o, "dst", a);
	cJSON_AddStringToObject(o, "protocol", c.proto == SL_PROTO_UDP ? "udp" :
				c.proto == SL_PROTO_SCTP ? "sctp" : "tcp");
	if (datapath__explain(dp, &c)) {
		cJSON_AddStringToObject(o, "error", "the kernel's explain program failed");
		cJSON_AddItemToArray(results, o);
		return;
	}
	cJSON_AddStringToObject(o, "verdict", events__verdict_name(c.verdict));
	rule = events__reserved_rule(c.rule_id);
	if (!rule && !datapath__rule_meta(dp, c.set_id, c.rule_id, &meta)) {
		cJSON_AddStringToObject(o, "rule", meta.rule);
		cJSON_AddStringToObject(o, "policy", meta.policy);
		cJSON_AddStringToObject(o, "class", policy__class_name(meta.class));
		cJSON_AddStringToObject(o, "action", meta.action == SL_ACTION_DENY ? "deny" : "allow");
	} else {
		cJSON_AddStringToObject(o, "rule", rule ? rule : "?");
	}
	fk.set_id = c.set_id;
	memcpy(fk.addr, c.addr, SL_ADDR_LEN);
	if (c.governed && !bpf_map_lookup_elem(dp->map_fd[DP_FQDN], &fk, &fv))
		cJSON_AddStringToObject(o, "fqdn", fv.names);
	base->governed = c.governed;
	base->ident_cgid = c.ident_cgid;
	base->set_id = c.set_id;
	base->flags = c.flags;
	cJSON_AddItemToArray(results, o);
}

int explain__main(int argc, char **argv)
{
	static const char usage[] =
		"usage: sluice explain --cgroup PATH [--pod-netns] [--pin-path PATH] [-o json]\n"
		"                      DEST:PORT[/tcp|udp|sctp]\n\n"
		"The verdict the kernel would give a connect() from cgroup PATH (absolute, or\n"
		"below the cgroup2 mount) to DEST, and the rule, policy and class that decide\n"
		"it. DEST is an address ([v6]:port) or a name, whose addresses are each\n"
		"explained. The kernel's own decision code runs on the live maps.\n"
		"--pod-netns: the connect comes from the workload's own network namespace\n"
		"(loopback is then always allowed).\n";
	struct sockaddr_storage addrs[16];
	struct sl_explain_ctx c = {};
	struct common_opts o = {};
	struct datapath dp;
	char abs[PATH_MAX], host[256], p[PATH_MAX];
	cJSON *doc, *results, *it;
	int n = 0, i, err;

	if (parse_common(argc, argv, &o, usage))
		return 2;
	if (!o.cgroup || o.argi != argc - 1) {
		fputs(usage, stderr);
		return 2;
	}
	if (explain_parse_dest(argv[o.argi], addrs, 16, &n, &c.port, &c.proto, host, sizeof(host)))
		return json_error(o.json, "cannot parse or resolve destination '%s' "
				  "(want ADDR:PORT, [V6]:PORT or NAME:PORT, optionally /tcp|/udp)",
				  argv[o.argi]), 2;
	if (cgroup__abspath(o.cgroup, abs, sizeof(abs)))
		return json_error(o.json, "bad cgroup path: %s", o.cgroup);
	err = cgroup__ancestry(abs, (uint64_t *)c.cgids, SL_MAX_CGROUP_DEPTH);
	if (err == -E2BIG)
		return json_error(o.json, "cgroup %s is more than %d levels deep: sluice does not "
				  "govern it", abs, SL_MAX_CGROUP_DEPTH - 1);
	if (err)
		return json_error(o.json, "no such cgroup: %s (%s)", abs, strerror(-err));
	c.own_netns = o.own_netns;
	if (open_pins(&dp, &o))
		return 1;

	doc = cJSON_CreateObject();
	cJSON_AddStringToObject(doc, "cgroup", abs);
	cJSON_AddNumberToObject(doc, "cgroup_id", (double)c.cgids[0]);
	results = cJSON_CreateArray();
	for (i = 0; i < n; i++)
		explain_one(&dp, &c, &addrs[i], results);
	cJSON_AddBoolToObject(doc, "governed", c.governed);
	if (c.governed) {
		struct sl_set_info si;

		if (!cgroup__path_of(c.ident_cgid, p, sizeof(p)))
			cJSON_AddStringToObject(doc, "identity_cgroup", p);
		cJSON_AddNumberToObject(doc, "identity_cgroup_id", (double)c.ident_cgid);
		cJSON_AddNumberToObject(doc, "set_id", c.set_id);
		cJSON_AddStringToObject(doc, "mode", c.flags & SL_IDF_AUDIT ? "audit" : "enforce");
		if (!datapath__set_info(&dp, c.set_id, &si))
			cJSON_AddStringToObject(doc, "policies", si.policies);
	}
	cJSON_AddItemToObject(doc, "results", results);

	if (o.json) {
		print_json(doc);
	} else {
		cJSON *pol = cJSON_GetObjectItem(doc, "policies");

		if (c.governed)
			printf("cgroup %s is governed by identity %s (set %u, %s; policies %s)\n", abs,
			       cJSON_GetObjectItem(doc, "identity_cgroup") ?
			       cJSON_GetObjectItem(doc, "identity_cgroup")->valuestring : "?",
			       c.set_id, c.flags & SL_IDF_AUDIT ? "audit" : "enforce",
			       pol ? pol->valuestring : "?");
		else
			printf("cgroup %s is not governed: sluice allows everything from it\n", abs);
		cJSON_ArrayForEach(it, results) {
			cJSON *pl = cJSON_GetObjectItem(it, "policy"), *cl = cJSON_GetObjectItem(it, "class");
			cJSON *fq = cJSON_GetObjectItem(it, "fqdn"), *er = cJSON_GetObjectItem(it, "error");

			if (er) {
				printf("%s/%s: error: %s\n", cJSON_GetObjectItem(it, "dst")->valuestring,
				       cJSON_GetObjectItem(it, "protocol")->valuestring, er->valuestring);
				continue;
			}
			printf("%s/%s: %s by rule %s", cJSON_GetObjectItem(it, "dst")->valuestring,
			       cJSON_GetObjectItem(it, "protocol")->valuestring,
			       cJSON_GetObjectItem(it, "verdict")->valuestring,
			       cJSON_GetObjectItem(it, "rule")->valuestring);
			if (pl)
				printf(" of policy %s (class %s)", pl->valuestring, cl->valuestring);
			if (fq)
				printf("; address from fqdn %s", fq->valuestring);
			printf("\n");
		}
	}
	cJSON_Delete(doc);
	datapath__release(&dp);
	return 0;
}

int detach__main(int argc, char **argv)
{
	static const char usage[] =
		"usage: sluice detach [--pin-path PATH]\n\n"
		"Detach every sluice program and remove its pins: enforcement stops for all\n"
		"identities. Running `sluice run` instances keep their cgroups but no longer\n"
		"get verdicts.\n";
	struct common_opts o = {};
	int err;

	if (parse_common(argc, argv, &o, usage))
		return 2;
	if (!datapath__pinned(o.pin_path)) {
		printf("nothing pinned at %s\n", o.pin_path);
		return 0;
	}
	err = datapath__destroy(o.pin_path);
	if (err) {
		fprintf(stderr, "sluice: detach %s: %s\n", o.pin_path, strerror(-err));
		return 1;
	}
	printf("detached and unpinned %s\n", o.pin_path);
	return 0;
}

int identities__main(int argc, char **argv)
{
	static const char usage[] =
		"usage: sluice identities [--pin-path PATH] [-o json]\n\n"
		"The registered identities (cgroups under a policy) from the pinned maps:\n"
		"cgroup, policy set, mode, who registered it (sluiced, the kernel at mkdir\n"
		"from a sluiced pattern, or sluice run).\n";
	struct common_opts o = {};
	struct datapath dp;
	cJSON *doc, *arr, *it;

	if (parse_common(argc, argv, &o, usage))
		return 2;
	if (!datapath__pinned(o.pin_path))
		return json_error(o.json, "no datapath is loaded at %s (start sluiced or sluice run)",
				  o.pin_path);
	if (open_pins(&dp, &o))
		return 1;
	doc = status_build(&dp, o.pin_path);
	arr = cJSON_DetachItemFromObject(doc, "identities");
	cJSON_ArrayForEach(it, arr) {
		struct sl_identity id;
		const char *by = "sluice run";

		if (!datapath__ident_get(&dp, (uint64_t)cJSON_GetObjectItem(it, "cgroup_id")->valuedouble,
					 &id))
			by = id.flags & SL_IDF_KERNEL ? "kernel (mkdir)" :
			     id.flags & SL_IDF_DAEMON ? "sluiced" : "sluice run";
		cJSON_AddStringToObject(it, "registered_by", by);
	}
	if (o.json) {
		print_json(arr);
	} else {
		printf("%-40s %-10s %-10s %-7s %-15s %s\n", "CGROUP", "CGROUP ID", "SET", "MODE",
		       "REGISTERED BY", "POLICIES");
		cJSON_ArrayForEach(it, arr) {
			cJSON *cg = cJSON_GetObjectItem(it, "cgroup"), *pol = cJSON_GetObjectItem(it, "policies");

			printf("%-40s %-10.0f %-10.0f %-7s %-15s %s\n",
			       cJSON_IsString(cg) ? cg->valuestring : "(removed)",
			       cJSON_GetObjectItem(it, "cgroup_id")->valuedouble,
			       cJSON_GetObjectItem(it, "set_id")->valuedouble,
			       cJSON_GetObjectItem(it, "mode")->valuestring,
			       cJSON_GetObjectItem(it, "registered_by")->valuestring,
			       pol ? pol->valuestring : "");
		}
	}
	cJSON_Delete(arr);
	cJSON_Delete(doc);
	datapath__release(&dp);
	return 0;
}

static int no_daemon(bool json, const char *socket, int err)
{
	return json_error(json, "no sluiced answers on %s (%s); is it running? (--socket PATH)",
			  socket, strerror(-err));
}

int policies__main(int argc, char **argv)
{
	static const char usage[] =
		"usage: sluice policies [--socket PATH] [-o json]\n\n"
		"The policy files of the running sluiced, their state (ok, or the errors of\n"
		"the last load with the last good version kept), and their policies.\n";
	struct common_opts o = {};
	cJSON *doc = NULL, *f, *p;
	int err;

	if (parse_common(argc, argv, &o, usage))
		return 2;
	err = control__request(o.socket, "{\"cmd\":\"policies\"}", collect_line, &doc);
	if (err || !doc)
		return no_daemon(o.json, o.socket, err ?: -EIO);
	if (o.json) {
		print_json(doc);
		cJSON_Delete(doc);
		return 0;
	}
	{
		cJSON *pd = cJSON_GetObjectItem(doc, "policy_dir"), *obj;

		if (cJSON_IsString(pd))
			printf("Policy directory: %s\n\n", pd->valuestring);
		if (cJSON_GetArraySize(cJSON_GetObjectItem(doc, "objects"))) {
			printf("%-60s %-22s %s\n", "KUBERNETES OBJECT", "STATE", "POLICIES");
			cJSON_ArrayForEach(obj, cJSON_GetObjectItem(doc, "objects")) {
				cJSON *e = cJSON_GetObjectItem(obj, "errors");

				printf("%-60s %-22s %.0f\n", cJSON_GetObjectItem(obj, "object")->valuestring,
				       cJSON_GetObjectItem(obj, "state")->valuestring,
				       cJSON_GetObjectItem(obj, "policies")->valuedouble);
				if (cJSON_IsString(e))
					printf("%s", e->valuestring);
			}
			printf("\n");
		}
	}
	printf("%-28s %-22s %-34s %-8s %-6s %s\n", "FILE", "STATE", "POLICY", "MODE", "RULES",
	       "CGROUP PATHS");
	cJSON_ArrayForEach(f, cJSON_GetObjectItem(doc, "files")) {
		const char *file = cJSON_GetObjectItem(f, "file")->valuestring;
		const char *state = cJSON_GetObjectItem(f, "state")->valuestring;
		cJSON *errs = cJSON_GetObjectItem(f, "errors");
		bool any = false;

		cJSON_ArrayForEach(p, cJSON_GetObjectItem(f, "policies")) {
			char paths[256] = "";
			cJSON *cg;

			cJSON_ArrayForEach(cg, cJSON_GetObjectItem(p, "cgroupPaths"))
				snprintf(paths + strlen(paths), sizeof(paths) - strlen(paths), "%s%s",
					 paths[0] ? "," : "", cg->valuestring);
			printf("%-28s %-22s %-34s %-8s %-6.0f %s\n", any ? "" : file, any ? "" : state,
			       cJSON_GetObjectItem(p, "name")->valuestring,
			       cJSON_GetObjectItem(p, "mode")->valuestring,
			       cJSON_GetObjectItem(p, "rules")->valuedouble,
			       paths[0] ? paths : "(podSelector only)");
			any = true;
		}
		if (!any)
			printf("%-28s %-22s %s\n", file, state, "-");
		if (cJSON_IsString(errs))
			printf("%s", errs->valuestring);
	}
	cJSON_Delete(doc);
	return 0;
}

struct flows_ctx {
	bool json;
};

static int flows_line(void *ctx, const char *line)
{
	struct flows_ctx *fc = ctx;
	cJSON *e;

	if (fc->json) {
		puts(line);
		fflush(stdout);
		return 0;
	}
	e = cJSON_Parse(line);
	if (!e)
		return 0;
	{
		cJSON *proc = cJSON_GetObjectItem(e, "process"), *dst = cJSON_GetObjectItem(e, "dst");
		cJSON *rule = cJSON_GetObjectItem(e, "rule"), *cg = cJSON_GetObjectItem(
			cJSON_GetObjectItem(e, "workload"), "cgroup");

		printf("%-30.30s %-11s %-7s %-24s %-16s %-7.0f %-16s %s\n",
		       cJSON_GetObjectItem(e, "time")->valuestring,
		       cJSON_GetObjectItem(e, "type")->valuestring,
		       cJSON_GetObjectItem(e, "verdict")->valuestring,
		       cJSON_IsString(dst) ? dst->valuestring : "-",
		       cJSON_IsString(rule) ? rule->valuestring : "-",
		       cJSON_IsObject(proc) ? cJSON_GetObjectItem(proc, "pid")->valuedouble : 0,
		       cJSON_IsObject(proc) ? cJSON_GetObjectItem(proc, "comm")->valuestring : "-",
		       cJSON_IsString(cg) ? cg->valuestring : "-");
		fflush(stdout);
	}
	cJSON_Delete(e);
	return 0;
}

int flows__main(int argc, char **argv)
{
	static const char usage[] =
		"usage: sluice flows [--follow|-f] [--socket PATH] [-o json]\n\n"
		"The running sluiced's most recent flow records (up to 1024), then with\n"
		"--follow new ones as they come. -o json prints the records as JSON lines.\n";
	struct common_opts o = {};
	struct flows_ctx fc;
	int err;

	if (parse_common(argc, argv, &o, usage))
		return 2;
	fc.json = o.json;
	if (!o.json)
		printf("%-30s %-11s %-7s %-24s %-16s %-7s %-16s %s\n", "TIME", "TYPE", "VERDICT", "DST",
		       "RULE", "PID", "COMM", "CGROUP");
	err = control__request(o.socket, o.follow ? "{\"cmd\":\"flows\",\"follow\":true}" :
			       "{\"cmd\":\"flows\"}", flows_line, &fc);
	if (err)
		return no_daemon(o.json, o.socket, err);
	return 0;
}
