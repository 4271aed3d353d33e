// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* sluiced: the node daemon. Flags in, daemon__run() does the rest. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include "cgroup.h"
#include "control.h"
#include "daemon.h"
#include "datapath.h"
#include "log.h"
#include "version.h"

static void usage(FILE *f)
{
	fprintf(f,
"usage: sluiced (--policy-dir DIR | --kubernetes) [OPTIONS]\n"
"\n"
"The sluice node daemon: compiles the AgentPolicy/ClusterAgentPolicy files in\n"
"DIR into the kernel's maps for the cgroups their spec.selector.cgroupPaths\n"
"select, keeps them in sync as files and cgroups change, and streams flow\n"
"events. Enforcement survives the daemon: a restart adopts the pinned\n"
"datapath, and SIGTERM leaves it in place unless --detach-on-exit.\n"
"\n"
"  --policy-dir DIR        policy files (*.yaml, *.yml, *.json), watched with inotify\n"
"  --kubernetes            AgentPolicy/ClusterAgentPolicy objects and this node's pods\n"
"                          from the API server (in-cluster service account)\n"
"  --kubeconfig FILE       the API server from a kubeconfig instead (implies\n"
"                          --kubernetes; for development)\n"
"  --node NAME             this node (default NODE_NAME); also names events\n"
"  --kube-sa-dir DIR       in-cluster credentials directory (default\n"
"                          /var/run/secrets/kubernetes.io/serviceaccount)\n"
"  --kube-stall-ms MS      reconnect a watch silent this long (default 90000)\n"
"  --cgroup-root PATH      cgroup the programs are attached to (default: the\n"
"                          cgroup2 mount, so that every socket is seen)\n"
"  --pin-path PATH         BPF pin directory (default %s)\n"
"  --events PATH|-         flow events as JSON lines to PATH or stdout\n"
"  --events-max-size SIZE  rotate PATH at SIZE bytes (K, M, G suffixes; default 100M,\n"
"                          0 = never)\n"
"  --events-keep N         rotated files kept, PATH.1 .. PATH.N (default 5)\n"
"  --metrics ADDR          serve /metrics, /healthz, /readyz on ADDR\n"
"                          (e.g. 127.0.0.1:9962, [::1]:9962, :9962)\n"
"  --control-socket PATH   CLI socket (default %s, mode 0600)\n"
"  --resolv-conf FILE      resolvers for fqdn rules and the DNS rule\n"
"  --observe-all           events for ungoverned sockets too (rule \"ungoverned\")\n"
"  --gateway-log PATH      an AI gateway's access log (repeatable), followed like\n"
"                          tail -F; plain or Kubernetes CRI log files. A PATH with\n"
"                          * ? [ is a pattern, looked up every second (files there\n"
"                          at start are read from their end, later ones from their\n"
"                          start): /var/log/pods/NS_GATEWAY-*/*/*.log. Its records\n"
"                          are joined with the kernel's flows (type \"gateway\") and\n"
"                          give findings (bypass, identity_mismatch, unattributed,\n"
"                          policy_drift). Also POST /v1/logs (OTLP/HTTP JSON) on\n"
"                          --metrics\n"
"  --gateway-format F      agentgateway, envoy or auto (default: per line)\n"
"  --gateway-keymap SPEC   Envoy JSON keys: \"peer=k1|k2,tool=k3,duration_unit=us\"\n"
"  --gateway-addr IP:PORT  a gateway listener besides the class gateway rules\n"
"  --jwt-claim KEY         gateway record key whose value names the workload\n"
"                          (e.g. jwt.sub); SPIFFE ids are always compared\n"
"  --state-dir DIR         log positions kept across restarts (default\n"
"                          /var/lib/sluice)\n"
"  --detach-on-exit        remove the datapath on SIGTERM/SIGINT\n"
"  -v, --verbose           debug output, including libbpf's\n"
"  --version\n"
"\n"
"Across nodes (a gateway record whose peer has no flow here is looked up on\n"
"the other nodes' daemons before it is declared unattributed):\n"
"  --peer URL              another node's sluiced, http(s)://HOST:PORT of its\n"
"                          --peer-listen (repeatable)\n"
"  --peer-service NS/NAME  (--kubernetes) the other nodes' daemons are the\n"
"                          endpoints of this Service, on the --peer-listen port;\n"
"                          the address in POD_IP (this pod's) is left out\n"
"  --peer-listen ADDR      answer other nodes' lookups of this node's flows\n"
"                          (POST /v1/flows/lookup); needs a token or mTLS\n"
"  --peer-token-file FILE  bearer token sent to peers and required from them;\n"
"                          re-read when it changes\n"
"  --peer-tls-cert FILE    this daemon's certificate (PEM), served and shown to\n"
"  --peer-tls-key FILE     peers, and its key\n"
"  --peer-tls-ca FILE      CA both sides' certificates must verify against: with\n"
"                          cert and key, lookups need a client certificate (mTLS)\n"
"  --local-prefix CIDR     this node's workload addresses (repeatable); records\n"
"                          from other peers are asked of the peers at once\n"
"\n"
"Signals: SIGTERM, SIGINT stop (flushing events); SIGHUP re-reads the policy\n"
"directory and reopens the event file (for logrotate).\n",
		SLUICE_DEFAULT_PIN_PATH, SLUICE_CONTROL_SOCKET);
}

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || s[0] == '-')
		return -EINVAL;
	switch (*end) {
	case 'K': case 'k': v <<= 10; end++; break;
	case 'M': case 'm': v <<= 20; end++; break;
	case 'G': case 'g': v <<= 30; end++; break;
	}
	if (*end)
		return -EINVAL;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	enum { O_POLICY_DIR = 1, O_CGROOT, O_PIN, O_EVENTS, O_MAXSIZE, O_KEEP, O_METRICS,
	       O_CONTROL, O_RESOLV, O_NODE, O_OBSERVE, O_DETACH, O_VERSION, O_HELP,
	       O_KUBE, O_KUBECONFIG, O_KUBE_SA_DIR, O_KUBE_STALL, O_GWLOG, O_GWFMT, O_GWKEYMAP,
	       O_GWADDR, O_STATE_DIR, O_JWT_CLAIM, O_PEER, O_PEER_LISTEN, O_PEER_TOKEN,
	       O_PEER_CERT, O_PEER_KEY, O_PEER_CA, O_LOCAL_PREFIX, O_PEER_SERVICE };
	static const struct option opts[] = {
		{ "policy-dir", required_argument, NULL, O_POLICY_DIR },
		{ "cgroup-root", required_argument, NULL, O_CGROOT },
		{ "pin-path", required_argument, NULL, O_PIN },
		{ "events", required_argument, NULL, O_EVENTS },
		{ "events-max-size", required_argument, NULL, O_MAXSIZE },
		{ "events-keep", required_argument, NULL, O_KEEP },
		{ "metrics", required_argument, NULL, O_METRICS },
		{ "control-socket", required_argument, NULL, O_CONTROL },
		{ "resolv-conf", required_argument, NULL, O_RESOLV },
		{ "node", required_argument, NULL, O_NODE },
		{ "observe-all", no_argument, NULL, O_OBSERVE },
		{ "detach-on-exit", no_argument, NULL, O_DETACH },
		{ "kubernetes", no_argument, NULL, O_KUBE },
		{ "kubeconfig", required_argument, NULL, O_KUBECONFIG },
		{ "kube-sa-dir", required_argument, NULL, O_KUBE_SA_DIR },
		{ "kube-stall-ms", required_argument, NULL, O_KUBE_STALL },
		{ "gateway-log", required_argument, NULL, O_GWLOG },
		{ "gateway-format", required_argument, NULL, O_GWFMT },
		{ "gateway-keymap", required_argument, NULL, O_GWKEYMAP },
		{ "gateway-addr", required_argument, NULL, O_GWADDR },
		{ "state-dir", required_argument, NULL, O_STATE_DIR },
		{ "jwt-claim", required_argument, NULL, O_JWT_CLAIM },
		{ "peer", required_argument, NULL, O_PEER },
		{ "peer-listen", required_argument, NULL, O_PEER_LISTEN },
		{ "peer-service", required_argument, NULL, O_PEER_SERVICE },
		{ "peer-token-file", required_argument, NULL, O_PEER_TOKEN },
		{ "peer-tls-cert", required_argument, NULL, O_PEER_CERT },
		{ "peer-tls-key", required_argument, NULL, O_PEER_KEY },
		{ "peer-tls-ca", required_argument, NULL, O_PEER_CA },
		{ "local-prefix", required_argument, NULL, O_LOCAL_PREFIX },
		{ "verbose", no_argument, NULL, 'v' },
		{ "version", no_argument, NULL, O_VERSION },
		{ "help", no_argument, NULL, O_HELP },
		{},
	};
	struct daemon_opts o = {
		.events_max_size = 100ULL << 20,
		.events_keep = 5,
		.control_path = SLUICE_CONTROL_SOCKET,
	};
	char root[PATH_MAX];
	struct stat st;
	char *end;
	long v;
	int c;

	log__init_libbpf();
	log__set_level(LOG_INFO);
	while ((c = getopt_long(argc, argv, "vh", opts, NULL)) != -1) {
		switch (c) {
		case O_POLICY_DIR: o.policy_dir = optarg; break;
		case O_CGROOT: o.cgroup_root = optarg; break;
		case O_PIN: o.pin_path = optarg; break;
		case O_EVENTS: o.events_path = optarg; break;
		case O_MAXSIZE:
			if (parse_size(optarg, &o.events_max_size)) {
				fprintf(stderr, "sluiced: --events-max-size: bad size '%s'\n", optarg);
				return 2;
			}
			break;
		case O_KEEP:
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno || *end || v < 0 || v > 1000) {
				fprintf(stderr, "sluiced: --events-keep: want 0..1000, not '%s'\n", optarg);
				return 2;
			}
			o.events_keep = v;
			break;
		case O_METRICS: o.metrics_addr = optarg; break;
		case O_CONTROL: o.control_path = optarg; break;
		case O_RESOLV: o.resolv_conf = optarg; break;
		case O_NODE: o.node = optarg; break;
		case O_OBSERVE: o.observe_all = true; break;
		case O_DETACH: o.detach_on_exit = true; break;
		case O_GWLOG:
			if (o.ngateway_logs == 16) {
				fprintf(stderr, "sluiced: at most 16 --gateway-log\n");
				return 2;
			}
			o.gateway_logs[o.ngateway_logs++] = optarg;
			break;
		case O_GWFMT:
			if (strcmp(optarg, "agentgateway") && strcmp(optarg, "envoy") &&
			    strcmp(optarg, "auto")) {
				fprintf(stderr, "sluiced: --gateway-format: agentgateway, envoy or auto, not '%s'\n",
					optarg);
				return 2;
			}
			o.gateway_format = optarg;
			break;
		case O_GWKEYMAP: o.gateway_keymap = optarg; break;
		case O_GWADDR:
			if (o.ngateway_addrs == 16) {
				fprintf(stderr, "sluiced: at most 16 --gateway-addr\n");
				return 2;
			}
			o.gateway_addrs[o.ngateway_addrs++] = optarg;
			break;
		case O_STATE_DIR: o.state_dir = optarg; break;
		case O_JWT_CLAIM: o.jwt_claim = optarg; break;
		case O_PEER:
			if (strncmp(optarg, "http://", 7) && strncmp(optarg, "https://", 8)) {
				fprintf(stderr, "sluiced: --peer %s: want http://HOST:PORT or https://HOST:PORT\n",
					optarg);
				return 2;
			}
			if (o.npeers == 64) {
				fprintf(stderr, "sluiced: at most 64 --peer\n");
				return 2;
			}
			o.peers[o.npeers++] = optarg;
			break;
		case O_PEER_LISTEN: o.peer_listen = optarg; break;
		case O_PEER_SERVICE:
			if (!strchr(optarg, '/') || optarg[0] == '/' || !strchr(optarg, '/')[1]) {
				fprintf(stderr, "sluiced: --peer-service: want NAMESPACE/NAME, not '%s'\n",
					optarg);
				return 2;
			}
			o.peer_service = optarg;
			break;
		case O_PEER_TOKEN: o.peer_token_file = optarg; break;
		case O_PEER_CERT: o.peer_tls_cert = optarg; break;
		case O_PEER_KEY: o.peer_tls_key = optarg; break;
		case O_PEER_CA: o.peer_tls_ca = optarg; break;
		case O_LOCAL_PREFIX:
			if (o.nlocal_prefixes == 32) {
				fprintf(stderr, "sluiced: at most 32 --local-prefix\n");
				return 2;
			}
			o.local_prefixes[o.nlocal_prefixes++] = optarg;
			break;
		case O_KUBE: o.kubernetes = true; break;
		case O_KUBECONFIG: o.kubeconfig = optarg; o.kubernetes = true; break;
		case O_KUBE_SA_DIR: o.kube_sa_dir = optarg; break;
		case O_KUBE_STALL:
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno || *end || v < 100 || v > 3600000) {
				fprintf(stderr, "sluiced: --kube-stall-ms: want 100..3600000, not '%s'\n", optarg);
				return 2;
			}
			o.kube_stall_ms = v;
			break;
		case 'v': log__set_level(LOG_DEBUG); break;
		case O_VERSION:
			printf("sluiced %s\n", SLUICE_VERSION);
			return 0;
		case 'h':
		case O_HELP:
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "sluiced: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (o.ngateway_logs && !o.state_dir)
		o.state_dir = "/var/lib/sluice";
	if (o.kubernetes && !o.node)
		o.node = getenv("NODE_NAME");
	if (o.kubernetes && (!o.node || !*o.node)) {
		fprintf(stderr, "sluiced: --kubernetes needs --node NAME or NODE_NAME (the downward API's spec.nodeName)\n");
		return 2;
	}
	if (o.peer_service && (!o.kubernetes || !o.peer_listen)) {
		fprintf(stderr, "sluiced: --peer-service needs --kubernetes and --peer-listen (its port is the peers')\n");
		return 2;
	}
	if (!o.policy_dir && !o.kubernetes) {
		fprintf(stderr, "sluiced: --policy-dir or --kubernetes is required\n");
		usage(stderr);
		return 2;
	}
	if (o.policy_dir && (stat(o.policy_dir, &st) || !S_ISDIR(st.st_mode))) {
		fprintf(stderr, "sluiced: --policy-dir %s: not a directory\n", o.policy_dir);
		return 2;
	}
	if (o.cgroup_root) {
		if (cgroup__abspath(o.cgroup_root, root, sizeof(root)) || stat(root, &st)) {
			fprintf(stderr, "sluiced: --cgroup-root %s: no such cgroup\n", o.cgroup_root);
			return 2;
		}
		o.cgroup_root = root;
	}
	if (geteuid() != 0) {
		fprintf(stderr, "sluiced: needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)\n");
		return 1;
	}
	return daemon__run(&o);
}
