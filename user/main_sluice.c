// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* sluice: the command line. One handler per subcommand. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "cli.h"
#include "log.h"
#include "policy.h"
#include "version.h"


static void usage(FILE *f)
{
	fprintf(f,
"usage: sluice [-v] COMMAND [ARGS]\n"
"\n"
"Node-level egress policy for AI agents, enforced by eBPF at connect time.\n"
"\n"
"commands:\n"
"  run [--policy FILE]... [--audit] [--events PATH|-] -- CMD [ARG...]\n"
"                          run CMD under the policies (root)\n"
"  policy validate FILE... check policy files (no privileges needed)\n"
"  status [-o json]        datapath, pins, programs, identities, counters\n"
"  explain --cgroup PATH [--pod-netns] DEST:PORT[/tcp|udp|sctp] [-o json]\n"
"                          the verdict the kernel would give, and why\n"
"  identities [-o json]    cgroups under a policy, from the pinned maps\n"
"  policies [-o json]      the running sluiced's policy files and their state\n"
"  flows [--follow] [-o json]\n"
"                          the running sluiced's recent flow records\n"
"  detach [--pin-path P]   remove the datapath: programs, links, maps\n"
"  version\n"
"\n"
"Run `sluice COMMAND --help` for a command's options.\n");
}

static int policy_validate(int argc, char **argv)
{
	int i, status = 0;

	if (argc < 1 || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) {
		fprintf(argc < 1 ? stderr : stdout,
			"usage: sluice policy validate FILE...\n\n"
			"Parse and check AgentPolicy/ClusterAgentPolicy files (YAML, multi-document,\n"
			"or JSON). Prints FILE:LINE:COL: message for every problem; exits 1 if any.\n");
		return argc < 1 ? 2 : 0;
	}
	for (i = 0; i < argc; i++) {
		struct pol_diags diags = {};
		struct pol_set set = {};
		int err = policy__parse_file(argv[i], &set, &diags);

		if (err) {
			policy__print_diags(&diags, stderr);
			status = 1;
		} else {
			printf("%s: %zu %s valid\n", argv[i], set.ndocs,
			       set.ndocs == 1 ? "policy" : "policies");
		}
		policy__diags_free(&diags);
		policy__set_free(&set);
	}
	return status;
}

static int policy_main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "validate"))
		return policy_validate(argc - 2, argv + 2);
	fprintf(stderr, "usage: sluice policy validate FILE...\n");
	return 2;
}

static int version_main(int argc, char **argv)
{
	printf("sluice %s\n", SLUICE_VERSION);
	return 0;
}

static const struct cmd {
	const char *name;
	int (*fn)(int argc, char **argv);
} cmds[] = {
	{ "run", run__main },
	{ "policy", policy_main },
	{ "status", status__main },
	{ "explain", explain__main },
	{ "detach", detach__main },
	{ "identities", identities__main },
	{ "policies", policies__main },
	{ "flows", flows__main },
	{ "version", version_main },
};

int main(int argc, char **argv)
{
	int i = 1;
	size_t c;

	log__init_libbpf();
	log__set_level(LOG_INFO);
	while (i < argc && argv[i][0] == '-') {
		if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose")) {
			log__set_level(LOG_DEBUG);
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "sluice: unknown option %s\n", argv[i]);
			usage(stderr);
			return 2;
		}
		i++;
	}
	if (i >= argc) {
		usage(stderr);
		return 2;
	}
	for (c = 0; c < sizeof(cmds) / sizeof(cmds[0]); c++)
		if (!strcmp(argv[i], cmds[c].name))
			return cmds[c].fn(argc - i, argv + i);
	fprintf(stderr, "sluice: unknown command '%s'\n", argv[i]);
	usage(stderr);
	return 2;
}
