// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Load or adopt the datapath. Everything lives under the pin path: the maps
 * (pinned by name by libbpf), one link per attached program (link_<name>)
 * and the explain program (prog_explain). Whoever finds them pinned adopts
 * them and attaches nothing, so enforcement never lapses between loaders.
 *
 * Two flocks in SLUICE_RUN_DIR serialise the loaders of one pin path: a
 * mutex held while loading, adopting or tearing down, and a "users" lock
 * every user holds shared for as long as it uses the pins, so the last one
 * out can tell that it is the last.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "sluice.skel.h"
#include "cgroup.h"
#include "datapath.h"
#include "log.h"

#define BPF_FS_MAGIC 0xcafe4a11

const char *const datapath_map_names[DP_MAP_N] = {
	[DP_IDENT] = "sl_ident", [DP_RULES] = "sl_rules", [DP_SK] = "sl_sk",
	[DP_RINGS] = "sl_rings", [DP_COUNTERS] = "sl_counters", [DP_RMETA] = "sl_rmeta",
	[DP_SETS] = "sl_sets", [DP_FQDN] = "sl_fqdn", [DP_GLOBS] = "sl_globs",
	[DP_NAMES] = "sl_names",
	[DP_META] = "sl_meta",
};

const char *const datapath_prog_names[DP_PROG_ATTACHED_N] = {
	[DP_SOCK_CREATE] = "sock_create", [DP_CONNECT4] = "connect4",
	[DP_CONNECT6] = "connect6", [DP_SENDMSG4] = "sendmsg4",
	[DP_SENDMSG6] = "sendmsg6", [DP_SOCKOPS] = "sockops",
	[DP_CGROUP_MKDIR] = "cgroup_mkdir", [DP_CGROUP_RMDIR] = "cgroup_rmdir",
};

static struct bpf_program *datapath__skel_prog(struct sluice_bpf *skel, enum dp_prog p)
{
	switch (p) {
	case DP_SOCK_CREATE: return skel->progs.sl_sock_create;
	case DP_CONNECT4: return skel->progs.sl_connect4;
	case DP_CONNECT6: return skel->progs.sl_connect6;
	case DP_SENDMSG4: return skel->progs.sl_sendmsg4;
	case DP_SENDMSG6: return skel->progs.sl_sendmsg6;
	case DP_SOCKOPS: return skel->progs.sl_sockops;
	case DP_CGROUP_MKDIR: return skel->progs.sl_cgroup_mkdir;
	case DP_CGROUP_RMDIR: return skel->progs.sl_cgroup_rmdir;
	default: return NULL;
	}
}

static void datapath__pin_file(const char *pin_path, const char *prefix, const char *name,
			       char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s%s", pin_path, prefix, name);
}

static bool datapath__exists(const char *path)
{
	return access(path, F_OK) == 0;
}

bool datapath__pinned(const char *pin_path)
{
	char p[PATH_MAX];

	datapath__pin_file(pin_path, "", "sl_ident", p, sizeof(p));
	return datapath__exists(p);
}

/* bpffs below the pin path: mount it at /sys/fs/bpf when nothing is. */
static int datapath__ensure_bpffs(const char *pin_path)
{
	struct statfs sfs;
	char p[PATH_MAX], *s;

	if (!statfs("/sys/fs/bpf", &sfs) && sfs.f_type != BPF_FS_MAGIC &&
	    !strncmp(pin_path, "/sys/fs/bpf/", 12)) {
		if (mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700")) {
			pr_err("cannot mount bpffs at /sys/fs/bpf: %s\n", strerror(errno));
			return -errno;
		}
	}
	snprintf(p, sizeof(p), "%s", pin_path);
	for (s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0700) && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	if (mkdir(p, 0700) && errno != EEXIST) {
		pr_err("cannot create pin directory %s: %s\n", p, strerror(errno));
		return -errno;
	}
	if (statfs(p, &sfs) || sfs.f_type != BPF_FS_MAGIC) {
		pr_err("pin path %s is not on a bpf filesystem\n", p);
		return -EINVAL;
	}
	return 0;
}

/* flock file in SLUICE_RUN_DIR named after the pin path. */
static int datapath__lockfile(const char *pin_path, const char *what)
{
	char p[PATH_MAX], name[PATH_MAX];
	size_t i;
	int fd;

	if (mkdir(SLUICE_RUN_DIR, 0700) && errno != EEXIST)
		return -errno;
	snprintf(name, sizeof(name), "%s", pin_path);
	for (i = 0; name[i]; i++)
		if (name[i] == '/')
			name[i] = '_';
	snprintf(p, sizeof(p), "%s/%s.%s", SLUICE_RUN_DIR, name, what);
	fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	return fd < 0 ? -errno : fd;
}

static int datapath__mutex(const char *pin_path)
{
	int fd = datapath__lockfile(pin_path, "lock");

	if (fd < 0)
		return fd;
	if (flock(fd, LOCK_EX)) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

static int datapath__open_pins(struct datapath *dp)
{
	char p[PATH_MAX];
	int i;

	for (i = 0; i < DP_MAP_N; i++) {
		datapath__pin_file(dp->pin_path, "", datapath_map_names[i], p, sizeof(p));
		dp->map_fd[i] = bpf_obj_get(p);
		if (dp->map_fd[i] < 0) {
			int err = -errno;

			pr_err("cannot open pinned map %s: %s\n", p, strerror(errno));
			return err;
		}
	}
	datapath__pin_file(dp->pin_path, "prog_", "explain", p, sizeof(p));
	dp->explain_fd = bpf_obj_get(p);
	if (dp->explain_fd < 0) {
		int err = -errno;

		pr_err("cannot open pinned program %s: %s\n", p, strerror(errno));
		return err;
	}
	/* Pinned by builds since the flow iterator; an older datapath has
	 * none until a newer build upgrades it. */
	datapath__pin_file(dp->pin_path, "prog_", "flows", p, sizeof(p));
	dp->flows_fd = bpf_obj_get(p);
	return 0;
}

static bool datapath__links_complete(const char *pin_path)
{
	char p[PATH_MAX];
	int i;

	for (i = 0; i < DP_PROG_ATTACHED_N; i++) {
		datapath__pin_file(pin_path, "link_", datapath_prog_names[i], p, sizeof(p));
		if (!datapath__exists(p))
			return false;
	}
	datapath__pin_file(pin_path, "prog_", "explain", p, sizeof(p));
	return datapath__exists(p);
}

/*
 * Load the object (libbpf reuses maps already pinned by name, so a half
 * finished earlier load keeps its state) and attach what is not attached.
 */
static int datapath__load(struct datapath *dp, const struct datapath_opts *opts)
{
	LIBBPF_OPTS(bpf_object_open_opts, oo, .pin_root_path = dp->pin_path);
	struct sluice_bpf *skel;
	struct sl_meta meta = {};
	struct timespec ts;
	char p[PATH_MAX];
	int cgfd = -1, err, i;
	__u32 zero = 0;

	skel = sluice_bpf__open_opts(&oo);
	if (!skel) {
		err = -errno;
		pr_err("failed to open BPF object: %s\n", strerror(-err));
		return err;
	}
	err = sluice_bpf__load(skel);
	if (err) {
		pr_err("failed to load BPF programs: %s (run with -v for the verifier log)\n",
		       strerror(-err));
		goto out;
	}
	cgfd = open(dp->cgroup_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cgfd < 0) {
		err = -errno;
		pr_err("cannot open cgroup %s: %s\n", dp->cgroup_root, strerror(errno));
		goto out;
	}
	for (i = 0; i < DP_PROG_ATTACHED_N; i++) {
		struct bpf_link *link;

		datapath__pin_file(dp->pin_path, "link_", datapath_prog_names[i], p, sizeof(p));
		if (datapath__exists(p))
			continue;
		if (i == DP_CGROUP_MKDIR || i == DP_CGROUP_RMDIR)
			link = bpf_program__attach(datapath__skel_prog(skel, i));
		else
			link = bpf_program__attach_cgroup(datapath__skel_prog(skel, i), cgfd);
		if (!link) {
			err = -errno;
			pr_err("failed to attach %s to %s: %s\n", datapath_prog_names[i],
			       dp->cgroup_root, strerror(-err));
			goto out;
		}
		err = bpf_link__pin(link, p);
		/* The pin holds the attachment; our handle can go. */
		bpf_link__destroy(link);
		if (err) {
			pr_err("failed to pin link %s: %s\n", p, strerror(-err));
			goto out;
		}
	}
	datapath__pin_file(dp->pin_path, "prog_", "explain", p, sizeof(p));
	unlink(p);
	err = bpf_program__pin(skel->progs.sl_explain, p);
	if (err) {
		pr_err("failed to pin %s: %s\n", p, strerror(-err));
		goto out;
	}
	datapath__pin_file(dp->pin_path, "prog_", "flows", p, sizeof(p));
	unlink(p);
	err = bpf_program__pin(skel->progs.sl_iter_flows, p);
	if (err) {
		pr_err("failed to pin %s: %s\n", p, strerror(-err));
		goto out;
	}
	err = cgroup__id(dp->cgroup_root, (uint64_t *)&meta.attach_cgid);
	if (err)
		goto out;
	clock_gettime(CLOCK_REALTIME, &ts);
	meta.loaded_realtime_ns = (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
	meta.abi = SL_ABI_VERSION;
	meta.loader_pid = getpid();
	meta.observe_all = opts->observe_all;
	err = bpf_map_update_elem(bpf_map__fd(skel->maps.sl_meta), &zero, &meta, BPF_ANY);
	if (err) {
		err = -errno;
		goto out;
	}
	dp->loaded_here = true;
	pr_debug("datapath loaded and attached to %s, pinned at %s\n", dp->cgroup_root,
		 dp->pin_path);
out:
	if (cgfd >= 0)
		close(cgfd);
	sluice_bpf__destroy(skel);
	return err;
}

static int datapath__prog_tag(int prog_fd, __u8 tag[BPF_TAG_SIZE])
{
	struct bpf_prog_info info = {};
	__u32 len = sizeof(info);

	if (bpf_obj_get_info_by_fd(prog_fd, &info, &len))
		return -errno;
	memcpy(tag, info.tag, BPF_TAG_SIZE);
	return 0;
}

static int datapath__link_prog_tag(int link_fd, __u8 tag[BPF_TAG_SIZE])
{
	struct bpf_link_info li = {};
	__u32 len = sizeof(li);
	int fd, err;

	if (bpf_obj_get_info_by_fd(link_fd, &li, &len))
		return -errno;
	fd = bpf_prog_get_fd_by_id(li.prog_id);
	if (fd < 0)
		return -errno;
	err = datapath__prog_tag(fd, tag);
	close(fd);
	return err;
}

/*
 * A new build adopting pins: where this build's program differs from the
 * attached one, swap it in on the live link (cgroup links support that), so
 * enforcement never lapses. Tracing links cannot be updated: the new one is
 * attached first and its pin renamed over the old one, which then detaches;
 * for a moment both run, which is harmless (they insert NOEXIST and delete).
 */
static int datapath__upgrade(struct datapath *dp, const struct datapath_opts *opts)
{
	LIBBPF_OPTS(bpf_object_open_opts, oo, .pin_root_path = dp->pin_path);
	struct sluice_bpf *skel;
	char p[PATH_MAX], tmp[PATH_MAX];
	int err;

	skel = sluice_bpf__open_opts(&oo);
	if (!skel)
		return -errno;
	err = sluice_bpf__load(skel);
	if (err) {
		pr_err("this build's BPF programs do not load against the pinned maps at %s: %s; "
		       "`sluice detach` them first (enforcement stops meanwhile)\n",
		       dp->pin_path, strerror(-err));
		goto out;
	}
	/* Consumers of the socket tag before its producer: a new sock_create
	 * may leave to connect or listen what an old one wrote itself, so
	 * those are new first (a socket in between keeps its task). */
	static const enum dp_prog order[DP_PROG_ATTACHED_N] = {
		DP_SOCKOPS, DP_CONNECT4, DP_CONNECT6, DP_SENDMSG4, DP_SENDMSG6,
		DP_SOCK_CREATE, DP_CGROUP_MKDIR, DP_CGROUP_RMDIR,
	};

	for (int oi = 0; oi < DP_PROG_ATTACHED_N; oi++) {
		enum dp_prog i = order[oi];
		struct bpf_program *prog = datapath__skel_prog(skel, i);
		__u8 have[BPF_TAG_SIZE], want[BPF_TAG_SIZE];
		struct bpf_link *link;

		datapath__pin_file(dp->pin_path, "link_", datapath_prog_names[i], p, sizeof(p));
		link = bpf_link__open(p);
		if (!link) {
			err = -errno;
			goto out;
		}
		if (datapath__link_prog_tag(bpf_link__fd(link), have) ||
		    datapath__prog_tag(bpf_program__fd(prog), want) ||
		    !memcmp(have, want, sizeof(have))) {
			bpf_link__destroy(link);
			continue;
		}
		if (i == DP_CGROUP_MKDIR || i == DP_CGROUP_RMDIR) {
			struct bpf_link *nl = bpf_program__attach(prog);

			err = nl ? 0 : -errno;
			snprintf(tmp, sizeof(tmp), "%s.new", p);
			if (!err)
				err = bpf_link__pin(nl, tmp);
			if (!err && rename(tmp, p))
				err = -errno;
			bpf_link__destroy(nl);
		} else {
			err = bpf_link__update_program(link, prog);
		}
		bpf_link__destroy(link);
		if (err) {
			pr_err("failed to replace program %s in place: %s\n", datapath_prog_names[i],
			       strerror(-err));
			goto out;
		}
		dp->upgraded++;
		pr_info("replaced program %s in place with this build's\n", datapath_prog_names[i]);
	}
	datapath__pin_file(dp->pin_path, "prog_", "explain", p, sizeof(p));
	snprintf(tmp, sizeof(tmp), "%s.new", p);
	unlink(tmp);
	if (!bpf_program__pin(skel->progs.sl_explain, tmp) && rename(tmp, p))
		unlink(tmp);
	datapath__pin_file(dp->pin_path, "prog_", "flows", p, sizeof(p));
	snprintf(tmp, sizeof(tmp), "%s.new", p);
	unlink(tmp);
	if (!bpf_program__pin(skel->progs.sl_iter_flows, tmp) && rename(tmp, p))
		unlink(tmp);
out:
	sluice_bpf__destroy(skel);
	return err;
}

static int datapath__check_meta(struct datapath *dp)
{
	struct bpf_map_info mi = {};
	__u32 milen = sizeof(mi);
	struct sl_meta meta;
	__u32 zero = 0;
	uint64_t want;
	char have[PATH_MAX];
	int err;

	/* Another build's sl_meta may be larger than ours: never look up
	 * into our struct before the sizes agree. */
	if (bpf_obj_get_info_by_fd(dp->map_fd[DP_META], &mi, &milen))
		return -errno;
	if (mi.value_size != sizeof(meta)) {
		pr_err("the datapath pinned at %s comes from another sluice version (sl_meta is %u "
		       "bytes, this build's %zu); `sluice detach --pin-path %s` it first or use "
		       "another --pin-path\n", dp->pin_path, mi.value_size, sizeof(meta), dp->pin_path);
		return -EPROTO;
	}
	if (bpf_map_lookup_elem(dp->map_fd[DP_META], &zero, &meta))
		return -errno;
	if (meta.abi != SL_ABI_VERSION) {
		pr_err("the datapath pinned at %s has ABI %u, this sluice speaks %u; "
		       "stop its users or use another --pin-path\n",
		       dp->pin_path, meta.abi, SL_ABI_VERSION);
		return -EPROTO;
	}
	err = cgroup__id(dp->cgroup_root, &want);
	if (err)
		return err;
	if (meta.attach_cgid != want) {
		if (cgroup__path_of(meta.attach_cgid, have, sizeof(have)))
			snprintf(have, sizeof(have), "cgroup id %llu",
				 (unsigned long long)meta.attach_cgid);
		pr_err("the datapath pinned at %s is attached to %s, not to %s; "
		       "use that --cgroup-root or another --pin-path\n",
		       dp->pin_path, have, dp->cgroup_root);
		return -EEXIST;
	}
	return 0;
}

static void datapath__close_fds(struct datapath *dp)
{
	int i;

	for (i = 0; i < DP_MAP_N; i++) {
		if (dp->map_fd[i] >= 0)
			close(dp->map_fd[i]);
		dp->map_fd[i] = -1;
	}
	if (dp->explain_fd >= 0)
		close(dp->explain_fd);
	dp->explain_fd = -1;
	if (dp->flows_fd >= 0)
		close(dp->flows_fd);
	dp->flows_fd = -1;
}

int datapath__open(struct datapath *dp, const struct datapath_opts *opts)
{
	int mutex = -1, err, i;

	memset(dp, 0, sizeof(*dp));
	for (i = 0; i < DP_MAP_N; i++)
		dp->map_fd[i] = -1;
	dp->explain_fd = dp->users_fd = dp->flows_fd = -1;
	snprintf(dp->pin_path, sizeof(dp->pin_path), "%s",
		 opts->pin_path ? opts->pin_path : SLUICE_DEFAULT_PIN_PATH);
	if (strlen(dp->pin_path) > 200 || dp->pin_path[0] != '/') {
		pr_err("--pin-path must be an absolute path of at most 200 characters\n");
		return -EINVAL;
	}
	if (opts->cgroup_root)
		snprintf(dp->cgroup_root, sizeof(dp->cgroup_root), "%s", opts->cgroup_root);
	else if ((err = cgroup__mount(dp->cgroup_root, sizeof(dp->cgroup_root)))) {
		pr_err("no cgroup2 mount found in /proc/self/mountinfo\n");
		return err;
	}

	if (opts->no_load) {
		if (!datapath__pinned(dp->pin_path))
			return -ENOENT;
		return datapath__open_pins(dp);
	}

	err = datapath__ensure_bpffs(dp->pin_path);
	if (err)
		return err;
	mutex = datapath__mutex(dp->pin_path);
	if (mutex < 0) {
		pr_err("cannot lock %s: %s\n", SLUICE_RUN_DIR, strerror(-mutex));
		return mutex;
	}
	if (!datapath__links_complete(dp->pin_path)) {
		err = datapath__load(dp, opts);
		if (err)
			goto out;
	}
	err = datapath__open_pins(dp);
	if (err)
		goto out;
	/* An adopter checks what it adopts before it swaps anything in. */
	err = datapath__check_meta(dp);
	if (err)
		goto out;
	if (!dp->loaded_here) {
		pr_debug("adopting the datapath pinned at %s\n", dp->pin_path);
		if (opts->upgrade && (err = datapath__upgrade(dp, opts)))
			goto out;
		if (opts->upgrade && dp->upgraded) {
			/* the explain program was re-pinned */
			datapath__close_fds(dp);
			if ((err = datapath__open_pins(dp)))
				goto out;
		}
	}
	if (opts->upgrade) {
		struct sl_meta meta;
		__u32 zero = 0;

		/* runtime settings of the daemon, read by the programs */
		if (!bpf_map_lookup_elem(dp->map_fd[DP_META], &zero, &meta)) {
			meta.observe_all = opts->observe_all;
			bpf_map_update_elem(dp->map_fd[DP_META], &zero, &meta, BPF_ANY);
		}
	}
	dp->users_fd = datapath__lockfile(dp->pin_path, "users");
	if (dp->users_fd < 0 || flock(dp->users_fd, LOCK_SH)) {
		err = dp->users_fd < 0 ? dp->users_fd : -errno;
		goto out;
	}
out:
	close(mutex);
	return err;
}

int datapath__destroy(const char *pin_path)
{
	char p[PATH_MAX];
	int i, err = 0;

	/* Links first: unpinning them detaches the programs. */
	for (i = 0; i < DP_PROG_ATTACHED_N; i++) {
		datapath__pin_file(pin_path, "link_", datapath_prog_names[i], p, sizeof(p));
		if (unlink(p) && errno != ENOENT)
			err = -errno;
	}
	datapath__pin_file(pin_path, "prog_", "explain", p, sizeof(p));
	if (unlink(p) && errno != ENOENT)
		err = -errno;
	datapath__pin_file(pin_path, "prog_", "flows", p, sizeof(p));
	if (unlink(p) && errno != ENOENT)
		err = -errno;
	for (i = 0; i < DP_MAP_N; i++) {
		datapath__pin_file(pin_path, "", datapath_map_names[i], p, sizeof(p));
		if (unlink(p) && errno != ENOENT)
			err = -errno;
	}
	if (rmdir(pin_path) && errno != ENOENT)
		pr_warn("pin directory %s not removed: %s\n", pin_path, strerror(errno));
	return err;
}

static bool datapath__map_empty(int fd)
{
	char key[SL_NAME_MAX];

	return bpf_map_get_next_key(fd, NULL, key) && errno == ENOENT;
}

/* The last user leaves: unless a daemon's state is still there (its
 * identities, or patterns and names the kernel registers new cgroups by),
 * nothing needs the datapath any more. */
void datapath__release(struct datapath *dp)
{
	int mutex;

	if (dp->users_fd < 0) {
		datapath__close_fds(dp);
		return;
	}
	mutex = datapath__mutex(dp->pin_path);
	flock(dp->users_fd, LOCK_UN);
	if (mutex >= 0 && !dp->keep && !flock(dp->users_fd, LOCK_EX | LOCK_NB) &&
	    datapath__map_empty(dp->map_fd[DP_IDENT]) && datapath__map_empty(dp->map_fd[DP_GLOBS]) &&
	    datapath__map_empty(dp->map_fd[DP_NAMES])) {
		pr_debug("last user of %s: detaching the datapath\n", dp->pin_path);
		datapath__close_fds(dp);
		datapath__destroy(dp->pin_path);
	}
	datapath__close_fds(dp);
	close(dp->users_fd);
	dp->users_fd = -1;
	if (mutex >= 0)
		close(mutex);
}

static uint64_t datapath__now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/* N elements in one BPF_MAP_UPDATE_BATCH per chunk: a syscall per element
 * was most of writing a large set. Falls back to single updates where the
 * map type has no batch support. 0, or -1 with errno. */
static int datapath__update_many(int fd, const void *keys, size_t ksz, const void *vals,
				 size_t vsz, size_t n)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = BPF_ANY);
	size_t done = 0;

	while (done < n) {
		__u32 cnt = n - done > 4096 ? 4096 : (__u32)(n - done);

		if (!bpf_map_update_batch(fd, (const char *)keys + done * ksz,
					  (const char *)vals + done * vsz, &cnt, &opts)) {
			done += cnt;
			continue;
		}
		if (errno != EINVAL && errno != 524 /* ENOTSUPP */ && errno != EOPNOTSUPP)
			return -1;
		for (; done < n; done++)
			if (bpf_map_update_elem(fd, (const char *)keys + done * ksz,
						(const char *)vals + done * vsz, BPF_ANY))
				return -1;
	}
	return 0;
}

/* N keys out of FD in BPF_MAP_DELETE_BATCH chunks; a key already gone
 * ends a batch early (ENOENT) and is skipped. 0 or -errno. */
static int datapath__delete_many(int fd, const void *keys, size_t ksz, size_t n)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	size_t done = 0;

	while (done < n) {
		__u32 cnt = n - done > 4096 ? 4096 : (__u32)(n - done);

		if (!bpf_map_delete_batch(fd, (const char *)keys + done * ksz, &cnt, &opts)) {
			done += cnt;
			continue;
		}
		if (errno == ENOENT) {
			done += cnt + 1;	/* cnt were deleted, the next is gone */
			continue;
		}
		if (errno != EINVAL && errno != 524 /* ENOTSUPP */ && errno != EOPNOTSUPP)
			return -errno;
		for (; done < n; done++)
			if (bpf_map_delete_elem(fd, (const char *)keys + done * ksz) &&
			    errno != ENOENT)
				return -errno;
	}
	return 0;
}

/* ------------------------------------------------------------ set state */

/* Packed entry: bits (1), address (16), n (1), n port entries. */
#define ENT_HDR (1 + SL_ADDR_LEN + 1)

static size_t ent__size(const uint8_t *p)
{
	return ENT_HDR + (size_t)p[1 + SL_ADDR_LEN] * sizeof(struct sl_port_entry);
}

/* The order compile__build emits entries in: address, then prefix length. */
static int ent__cmp(const uint8_t *addr_a, unsigned int bits_a, const uint8_t *addr_b,
		    unsigned int bits_b)
{
	int c = memcmp(addr_a, addr_b, SL_ADDR_LEN);

	if (c)
		return c;
	return bits_a < bits_b ? -1 : bits_a > bits_b;
}

static unsigned int ent__bits(const struct compile_entry *ce)
{
	return ce->key.prefixlen - SL_LPM_SET_BITS;
}

/* An entry this map can hold: a prefix of {set, address}, its ports fit. */
static bool ent__valid(const struct compile_entry *ce)
{
	return ce->val.n <= SL_MAX_PORT_ENTRIES && ce->key.prefixlen >= SL_LPM_SET_BITS &&
	       ent__bits(ce) <= 8 * SL_ADDR_LEN;
}

/* FNV-1a over what names a rule: its texts up to their ends, class, action. */
static uint64_t rule__digest(const struct sl_rule_meta *m)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	size_t pl = strnlen(m->policy, sizeof(m->policy)), rl = strnlen(m->rule, sizeof(m->rule));

	for (size_t i = 0; i < pl; i++)
		h = (h ^ (uint8_t)m->policy[i]) * 0x100000001b3ULL;
	h = (h ^ 0xff) * 0x100000001b3ULL;	/* "ab"+"c" differs from "a"+"bc" */
	for (size_t i = 0; i < rl; i++)
		h = (h ^ (uint8_t)m->rule[i]) * 0x100000001b3ULL;
	h = (h ^ 0xff) * 0x100000001b3ULL;
	h = (h ^ m->class) * 0x100000001b3ULL;
	return (h ^ m->action) * 0x100000001b3ULL;
}

bool datapath__rules_kept(const struct dp_set_state *st, const struct compiled *c)
{
	size_t n = c->nrules < st->nrules ? c->nrules : st->nrules;

	if (!st->valid || (n && !st->rule_digests))
		return false;
	for (size_t i = 0; i < n; i++)
		if (c->rules[i].rule_id != COMPILE_RULE_ID(i) ||
		    rule__digest(&c->rules[i].meta) != st->rule_digests[i])
			return false;
	return true;
}

void datapath__set_state_free(struct dp_set_state *st)
{
	if (!st)
		return;
	free(st->ents);
	free(st->rule_digests);
	free(st->fqdns);
	memset(st, 0, sizeof(*st));
}

/* ST describing C; -EINVAL if C's entries are not in compile order (a
 * patch merges the two in that order). */
static int state__build(const struct compiled *c, struct dp_set_state *st)
{
	size_t len = 0, i;
	uint8_t *p;

	memset(st, 0, sizeof(*st));
	for (i = 0; i < c->nentries; i++) {
		const struct compile_entry *ce = &c->entries[i];

		if (!ent__valid(ce))
			return -EINVAL;
		if (i && ent__cmp(c->entries[i - 1].key.addr, ent__bits(&c->entries[i - 1]),
				  ce->key.addr, ent__bits(ce)) >= 0)
			return -EINVAL;
		len += ENT_HDR + ce->val.n * sizeof(struct sl_port_entry);
	}
	if (len && !(st->ents = malloc(len)))
		return -ENOMEM;
	if ((c->nfqdns && !(st->fqdns = calloc(c->nfqdns, sizeof(*st->fqdns)))) ||
	    (c->nrules && !(st->rule_digests = calloc(c->nrules, sizeof(*st->rule_digests))))) {
		datapath__set_state_free(st);
		return -ENOMEM;
	}
	for (i = 0; i < c->nrules; i++)
		st->rule_digests[i] = rule__digest(&c->rules[i].meta);
	for (i = 0, p = st->ents; i < c->nentries; i++) {
		const struct compile_entry *ce = &c->entries[i];

		p[0] = (uint8_t)ent__bits(ce);
		memcpy(p + 1, ce->key.addr, SL_ADDR_LEN);
		p[1 + SL_ADDR_LEN] = (uint8_t)ce->val.n;
		memcpy(p + ENT_HDR, ce->val.e, ce->val.n * sizeof(struct sl_port_entry));
		p += ent__size(p);
	}
	for (i = 0; i < c->nfqdns; i++)
		memcpy(st->fqdns[i], c->fqdns[i].addr, SL_ADDR_LEN);
	st->len = len;
	st->nentries = c->nentries;
	st->nfqdns = c->nfqdns;
	st->nrules = c->nrules;
	st->valid = true;
	return 0;
}

int datapath__set_state(const struct compiled *c, struct dp_set_state *st)
{
	return state__build(c, st);
}

static struct sl_lpm_key ent__key(const uint8_t *p, uint32_t set_id)
{
	struct sl_lpm_key k = { .prefixlen = SL_LPM_SET_BITS + p[0], .set_id = htonl(set_id) };

	memcpy(k.addr, p + 1, SL_ADDR_LEN);
	return k;
}

/* ------------------------------------------------------------ sets */

static int datapath__write_rmeta(struct datapath *dp, uint32_t set_id, const struct compiled *c,
				 size_t from)
{
	struct sl_rmeta_key *ks;
	struct sl_rule_meta *vs;
	size_t n = c->nrules - from, i;
	int err;

	if (!n)
		return 0;
	ks = calloc(n, sizeof(*ks));
	vs = calloc(n, sizeof(*vs));
	if (!ks || !vs) {
		free(ks);
		free(vs);
		errno = ENOMEM;
		return -1;
	}
	for (i = 0; i < n; i++) {
		ks[i] = (struct sl_rmeta_key){ .set_id = set_id, .rule_id = c->rules[from + i].rule_id };
		vs[i] = c->rules[from + i].meta;
	}
	err = datapath__update_many(dp->map_fd[DP_RMETA], ks, sizeof(*ks), vs, sizeof(*vs), n);
	free(ks);
	free(vs);
	return err;
}

static int datapath__write_fqdns(struct datapath *dp, uint32_t set_id, const struct compiled *c)
{
	for (size_t i = 0; i < c->nfqdns; i++) {
		struct sl_fqdn_key k = { .set_id = set_id };
		struct sl_fqdn_val v = {};

		memcpy(k.addr, c->fqdns[i].addr, SL_ADDR_LEN);
		snprintf(v.names, sizeof(v.names), "%s", c->fqdns[i].names);
		if (bpf_map_update_elem(dp->map_fd[DP_FQDN], &k, &v, BPF_ANY))
			return -1;
	}
	return 0;
}

int datapath__set_add(struct datapath *dp, const struct compiled *c, const char *policies,
		      uint32_t *set_id, struct dp_set_state *st)
{
	struct sl_set_info info = {
		.owner_pid = getpid(),
		.nrules = c->nrules,
		.nentries = c->nentries,
		.created_ns = datapath__now_mono(),
	};
	uint32_t id = 0;
	size_t i;
	int err, tries;

	if (st) {
		err = state__build(c, st);
		if (err)
			return err;
	}
	snprintf(info.policies, sizeof(info.policies), "%s", policies ? policies : "");
	/* Reserve an unused id: the NOEXIST insert is the reservation. */
	for (tries = 0; tries < 64; tries++) {
		if (getrandom(&id, sizeof(id), 0) != sizeof(id)) {
			err = -errno;
			datapath__set_state_free(st);
			return err;
		}
		if (!id)
			continue;
		if (!bpf_map_update_elem(dp->map_fd[DP_SETS], &id, &info, BPF_NOEXIST))
			break;
		if (errno != EEXIST) {
			err = -errno;
			datapath__set_state_free(st);
			return err;
		}
	}
	if (tries == 64) {
		datapath__set_state_free(st);
		return -EEXIST;
	}
	if (datapath__write_rmeta(dp, id, c, 0) || datapath__write_fqdns(dp, id, c))
		goto fail;
	if (c->nentries) {
		struct sl_lpm_key *ks = calloc(c->nentries, sizeof(*ks));
		struct sl_lpm_val *vs = calloc(c->nentries, sizeof(*vs));

		if (!ks || !vs) {
			free(ks);
			free(vs);
			errno = ENOMEM;
			goto fail;
		}
		for (i = 0; i < c->nentries; i++) {
			ks[i] = c->entries[i].key;
			ks[i].set_id = htonl(id);
			vs[i] = c->entries[i].val;
		}
		err = datapath__update_many(dp->map_fd[DP_RULES], ks, sizeof(*ks), vs, sizeof(*vs),
					    c->nentries);
		free(ks);
		free(vs);
		if (err)
			goto fail;
	}
	*set_id = id;
	return 0;
fail:
	err = -errno;
	pr_err("failed to write policy set %u: %s\n", id, strerror(errno));
	datapath__set_del_state(dp, id, st);
	datapath__set_state_free(st);
	return err;
}

void datapath__patch_plan_free(struct dp_patch_plan *pl)
{
	free(pl->upd_keys);
	free(pl->upd_vals);
	free(pl->del_keys);
	memset(pl, 0, sizeof(*pl));
}

/* The order of a patch: writes longest prefix first, deletions shortest
 * first. Why that keeps every lookup at the old or the new set's verdict:
 * while writing, an address whose new longest prefix q is written sees q
 * (only an old-only prefix can cover it more closely, and then the old
 * longest answers, as before); if q is not written yet, nothing shorter of
 * the new set is either, and the old set answers. While deleting shortest
 * first, an old-only prefix still present that is longer than q has every
 * longer old-only prefix present too, so the old longest answers; else q
 * does. Counting sorts: stable, and one pass over a large change. */
static int plan__order(struct dp_patch_plan *pl)
{
	size_t cnt[129] = { 0 }, pos[129], i, b, at;
	struct sl_lpm_key *ks;
	struct sl_lpm_val *vs;

	if (pl->nupd > 1) {
		ks = malloc(pl->nupd * sizeof(*ks));
		vs = malloc(pl->nupd * sizeof(*vs));
		if (!ks || !vs) {
			free(ks);
			free(vs);
			return -ENOMEM;
		}
		for (i = 0; i < pl->nupd; i++)
			cnt[128 - (pl->upd_keys[i].prefixlen - SL_LPM_SET_BITS)]++;
		for (b = 0, at = 0; b < 129; at += cnt[b], b++)
			pos[b] = at;
		for (i = 0; i < pl->nupd; i++) {
			at = pos[128 - (pl->upd_keys[i].prefixlen - SL_LPM_SET_BITS)]++;
			ks[at] = pl->upd_keys[i];
			vs[at] = pl->upd_vals[i];
		}
		free(pl->upd_keys);
		free(pl->upd_vals);
		pl->upd_keys = ks;
		pl->upd_vals = vs;
	}
	if (pl->ndel > 1) {
		memset(cnt, 0, sizeof(cnt));
		ks = malloc(pl->ndel * sizeof(*ks));
		if (!ks)
			return -ENOMEM;
		for (i = 0; i < pl->ndel; i++)
			cnt[pl->del_keys[i].prefixlen - SL_LPM_SET_BITS]++;
		for (b = 0, at = 0; b < 129; at += cnt[b], b++)
			pos[b] = at;
		for (i = 0; i < pl->ndel; i++)
			ks[pos[pl->del_keys[i].prefixlen - SL_LPM_SET_BITS]++] = pl->del_keys[i];
		free(pl->del_keys);
		pl->del_keys = ks;
	}
	return 0;
}

int datapath__patch_plan(const struct dp_set_state *st, const struct compiled *c,
			 uint32_t set_id, struct dp_patch_plan *pl)
{
	const uint8_t *p, *end;
	size_t i = 0;
	int err;

	memset(pl, 0, sizeof(*pl));
	if (!st || !st->valid)
		return -ENOENT;
	/* The orders below index by prefix length: refuse what is not one. */
	for (i = 0; i < c->nentries; i++)
		if (!ent__valid(&c->entries[i]))
			return -EINVAL;
	i = 0;
	pl->upd_keys = calloc(c->nentries + 1, sizeof(*pl->upd_keys));
	pl->upd_vals = calloc(c->nentries + 1, sizeof(*pl->upd_vals));
	pl->del_keys = calloc(st->nentries + 1, sizeof(*pl->del_keys));
	if (!pl->upd_keys || !pl->upd_vals || !pl->del_keys) {
		datapath__patch_plan_free(pl);
		return -ENOMEM;
	}
	/* Both sides are in compile order: one merge finds what changed. */
	p = st->ents;
	end = st->ents ? st->ents + st->len : NULL;
	while (p < end || i < c->nentries) {
		const struct compile_entry *ce = i < c->nentries ? &c->entries[i] : NULL;
		int cmp = p >= end ? 1 : !ce ? -1 :
			  ent__cmp(p + 1, p[0], ce->key.addr, ent__bits(ce));

		if (i && ce && ent__cmp(c->entries[i - 1].key.addr, ent__bits(&c->entries[i - 1]),
					ce->key.addr, ent__bits(ce)) >= 0) {
			datapath__patch_plan_free(pl);
			return -EINVAL;		/* not in compile order */
		}
		if (cmp < 0) {
			pl->del_keys[pl->ndel++] = ent__key(p, set_id);
			p += ent__size(p);
			continue;
		}
		if (cmp > 0 || p[1 + SL_ADDR_LEN] != ce->val.n ||
		    memcmp(p + ENT_HDR, ce->val.e, ce->val.n * sizeof(struct sl_port_entry))) {
			pl->upd_keys[pl->nupd] = ce->key;
			pl->upd_keys[pl->nupd].set_id = htonl(set_id);
			pl->upd_vals[pl->nupd++] = ce->val;
		}
		if (!cmp)
			p += ent__size(p);
		i++;
	}
	err = plan__order(pl);
	if (err)
		datapath__patch_plan_free(pl);
	return err;
}

int datapath__set_patch(struct datapath *dp, uint32_t set_id, struct dp_set_state *st,
			const struct compiled *c, const char *policies,
			struct dp_patch_stats *stats)
{
	struct dp_set_state ns;
	struct dp_patch_plan pl = {};
	struct sl_set_info info;
	size_t i, j;
	int err;

	if (!st || !st->valid)
		return -ENOENT;
	if (!datapath__rules_kept(st, c))
		return -ESTALE;
	err = state__build(c, &ns);
	if (err)
		return err;
	if (bpf_map_lookup_elem(dp->map_fd[DP_SETS], &set_id, &info)) {
		err = -errno;
		goto out;
	}
	err = datapath__patch_plan(st, c, set_id, &pl);
	if (err)
		goto out;
	/* Names first: a new rule's id must name it before a verdict can
	 * carry it. The set's rule count is raised before any name is
	 * written, so that a patch cut short leaves no name that a later
	 * delete (by this daemon or the next) would not find. */
	if (c->nrules > st->nrules) {
		info.nrules = c->nrules;
		if (bpf_map_update_elem(dp->map_fd[DP_SETS], &set_id, &info, BPF_EXIST) ||
		    datapath__write_rmeta(dp, set_id, c, st->nrules)) {
			err = -errno;
			goto fail;
		}
	}
	if (datapath__write_fqdns(dp, set_id, c)) {
		err = -errno;
		goto fail;
	}
	if (pl.nupd && datapath__update_many(dp->map_fd[DP_RULES], pl.upd_keys,
					     sizeof(*pl.upd_keys), pl.upd_vals,
					     sizeof(*pl.upd_vals), pl.nupd)) {
		err = -errno;
		goto fail;
	}
	if (pl.ndel) {
		err = datapath__delete_many(dp->map_fd[DP_RULES], pl.del_keys, sizeof(*pl.del_keys),
					    pl.ndel);
		if (err)
			goto fail;
	}
	/* What nobody can reach any more: old addresses' names, old rules. */
	for (j = 0, i = 0; j < st->nfqdns; j++) {
		struct sl_fqdn_key k = { .set_id = set_id };

		while (i < ns.nfqdns && memcmp(ns.fqdns[i], st->fqdns[j], SL_ADDR_LEN) < 0)
			i++;
		if (i < ns.nfqdns && !memcmp(ns.fqdns[i], st->fqdns[j], SL_ADDR_LEN))
			continue;
		memcpy(k.addr, st->fqdns[j], SL_ADDR_LEN);
		if (bpf_map_delete_elem(dp->map_fd[DP_FQDN], &k) && errno != ENOENT) {
			err = -errno;
			goto fail;
		}
	}
	for (uint32_t r = c->nrules; r < st->nrules; r++) {
		struct sl_rmeta_key k = { .set_id = set_id, .rule_id = COMPILE_RULE_ID(r) };

		if (bpf_map_delete_elem(dp->map_fd[DP_RMETA], &k) && errno != ENOENT) {
			err = -errno;
			goto fail;
		}
	}
	info.nrules = c->nrules;
	info.nentries = c->nentries;
	snprintf(info.policies, sizeof(info.policies), "%s", policies ? policies : "");
	if (bpf_map_update_elem(dp->map_fd[DP_SETS], &set_id, &info, BPF_EXIST)) {
		err = -errno;
		goto fail;
	}
	if (stats) {
		stats->written = pl.nupd;
		stats->deleted = pl.ndel;
	}
	datapath__set_state_free(st);
	*st = ns;
	memset(&ns, 0, sizeof(ns));
	err = 0;
	goto out;
fail:
	pr_err("failed to patch policy set %u: %s\n", set_id, strerror(-err));
	/* The set holds some of both: unknown until replaced. The larger rule
	 * count stays, so that every name can still be deleted. */
	{
		uint32_t nrules = st->nrules > c->nrules ? st->nrules : c->nrules;

		datapath__set_state_free(st);
		st->nrules = nrules;
	}
out:
	datapath__set_state_free(&ns);
	datapath__patch_plan_free(&pl);
	return err;
}

/* Delete the keys of MAP whose set id (at KEY_OFF, in KEY_SZ-byte keys)
 * is SET_ID. Keys are gathered first: deleting while walking restarts
 * the walk on some map types. */
static int datapath__del_by_set(int fd, size_t key_sz, size_t key_off, uint32_t set_id_raw)
{
	size_t n = 0, cap = 0, i;
	char *keys = NULL, *prev = NULL, key[64];
	int err = 0;

	size_t seen = 0;

	/* Another process deleting the key we stand on restarts the walk
	 * from the first key: bound the walk, and duplicates are harmless
	 * (deleting twice gives ENOENT). */
	while (seen++ < 2 * SL_MAX_LPM_ENTRIES && !bpf_map_get_next_key(fd, prev, key)) {
		uint32_t s;

		memcpy(&s, key + key_off, sizeof(s));
		if (s == set_id_raw) {
			if (n == cap) {
				char *nk;

				cap = cap ? cap * 2 : 256;
				nk = realloc(keys, cap * key_sz);
				if (!nk) {
					free(keys);
					return -ENOMEM;
				}
				keys = nk;
			}
			memcpy(keys + n * key_sz, key, key_sz);
			n++;
		}
		prev = prev ? prev : malloc(64);
		if (!prev) {
			free(keys);
			return -ENOMEM;
		}
		memcpy(prev, key, key_sz);
	}
	for (i = 0; i < n; i++)
		if (bpf_map_delete_elem(fd, keys + i * key_sz) && errno != ENOENT)
			err = -errno;
	free(prev);
	free(keys);
	return err;
}

/* A set's names are {set, COMPILE_RULE_ID(i)} for i below its rule count:
 * deleted by key when its info (or the caller) says how many, else found
 * by a walk. */
static int datapath__del_rmeta(struct datapath *dp, uint32_t set_id, uint32_t nrules)
{
	struct sl_set_info info;
	struct sl_rmeta_key *ks;
	int err;

	if (!bpf_map_lookup_elem(dp->map_fd[DP_SETS], &set_id, &info) && info.nrules > nrules)
		nrules = info.nrules;
	if (!nrules)
		return datapath__del_by_set(dp->map_fd[DP_RMETA], sizeof(struct sl_rmeta_key),
					    offsetof(struct sl_rmeta_key, set_id), set_id);
	ks = calloc(nrules, sizeof(*ks));
	if (!ks)
		return -ENOMEM;
	for (uint32_t i = 0; i < nrules; i++)
		ks[i] = (struct sl_rmeta_key){ .set_id = set_id, .rule_id = COMPILE_RULE_ID(i) };
	err = datapath__delete_many(dp->map_fd[DP_RMETA], ks, sizeof(*ks), nrules);
	free(ks);
	return err;
}

static int datapath__del_rules(struct datapath *dp, uint32_t set_id, const struct dp_set_state *st)
{
	struct sl_lpm_key *ks;
	const uint8_t *p;
	size_t i;
	int err;

	if (!st || !st->valid)
		return datapath__del_by_set(dp->map_fd[DP_RULES], sizeof(struct sl_lpm_key),
					    offsetof(struct sl_lpm_key, set_id), htonl(set_id));
	if (!st->nentries)
		return 0;
	ks = calloc(st->nentries, sizeof(*ks));
	if (!ks)
		return -ENOMEM;
	for (i = 0, p = st->ents; i < st->nentries; i++, p += ent__size(p))
		ks[i] = ent__key(p, set_id);
	err = datapath__delete_many(dp->map_fd[DP_RULES], ks, sizeof(*ks), st->nentries);
	free(ks);
	return err;
}

static int datapath__del_fqdns(struct datapath *dp, uint32_t set_id, const struct dp_set_state *st)
{
	if (!st || !st->valid)
		return datapath__del_by_set(dp->map_fd[DP_FQDN], sizeof(struct sl_fqdn_key),
					    offsetof(struct sl_fqdn_key, set_id), set_id);
	for (size_t i = 0; i < st->nfqdns; i++) {
		struct sl_fqdn_key k = { .set_id = set_id };

		memcpy(k.addr, st->fqdns[i], SL_ADDR_LEN);
		if (bpf_map_delete_elem(dp->map_fd[DP_FQDN], &k) && errno != ENOENT)
			return -errno;
	}
	return 0;
}

int datapath__set_del_state(struct datapath *dp, uint32_t set_id, const struct dp_set_state *st)
{
	int err = 0, e;

	if (!set_id)
		return 0;
	e = datapath__del_rules(dp, set_id, st);
	err = err ?: e;
	e = datapath__del_rmeta(dp, set_id, st ? st->nrules : 0);
	err = err ?: e;
	e = datapath__del_fqdns(dp, set_id, st);
	err = err ?: e;
	/* The info goes last: it is what says how many names the set has. */
	if (bpf_map_delete_elem(dp->map_fd[DP_SETS], &set_id) && errno != ENOENT)
		err = err ?: -errno;
	return err;
}

int datapath__set_del(struct datapath *dp, uint32_t set_id)
{
	return datapath__set_del_state(dp, set_id, NULL);
}

int datapath__ident_put(struct datapath *dp, uint64_t cgid, const struct sl_identity *id)
{
	/* One element update: readers see the old identity or the new one,
	 * which is what makes a policy swap atomic. */
	return bpf_map_update_elem(dp->map_fd[DP_IDENT], &cgid, id, BPF_ANY) ? -errno : 0;
}

int datapath__ident_get(struct datapath *dp, uint64_t cgid, struct sl_identity *id)
{
	return bpf_map_lookup_elem(dp->map_fd[DP_IDENT], &cgid, id) ? -errno : 0;
}

int datapath__ident_del(struct datapath *dp, uint64_t cgid)
{
	if (bpf_map_delete_elem(dp->map_fd[DP_IDENT], &cgid) && errno != ENOENT)
		return -errno;
	return 0;
}

/* A slot's counters start from zero for each new reader, so that what it
 * reads and what the kernel counted can be compared. */
static void datapath__counters_reset(struct datapath *dp, uint32_t ring)
{
	int ncpu = libbpf_num_possible_cpus(), i;
	uint64_t *zero;

	if (ncpu <= 0 || !(zero = calloc(ncpu, sizeof(*zero))))
		return;
	for (i = 0; i < SL_CNT_MAX; i++) {
		uint32_t idx = ring * SL_CNT_MAX + i;

		bpf_map_update_elem(dp->map_fd[DP_COUNTERS], &idx, zero, BPF_ANY);
	}
	free(zero);
}

int datapath__ring_add(struct datapath *dp, uint32_t *slot, int *ring_fd)
{
	int fd, mutex, err = -ENOSPC;
	uint32_t s, inner;

	fd = bpf_map_create(BPF_MAP_TYPE_RINGBUF, "sl_ring", 0, 0, SL_RING_SIZE, NULL);
	if (fd < 0)
		return -errno;
	/* fd arrays take BPF_ANY only, so a free slot is claimed under the
	 * loaders' mutex rather than with BPF_NOEXIST. */
	mutex = datapath__mutex(dp->pin_path);
	if (mutex < 0) {
		close(fd);
		return mutex;
	}
	for (s = 1; s < SL_MAX_RINGS; s++) {
		if (!bpf_map_lookup_elem(dp->map_fd[DP_RINGS], &s, &inner))
			continue;
		if (bpf_map_update_elem(dp->map_fd[DP_RINGS], &s, &fd, BPF_ANY)) {
			err = -errno;
			break;
		}
		datapath__counters_reset(dp, s);
		*slot = s;
		*ring_fd = fd;
		close(mutex);
		return 0;
	}
	close(mutex);
	close(fd);
	if (err == -ENOSPC)
		pr_err("all %d event ring slots are in use\n", SL_MAX_RINGS - 1);
	else
		pr_err("cannot install an event ring: %s\n", strerror(-err));
	return err;
}

int datapath__ring_del(struct datapath *dp, uint32_t slot)
{
	if (bpf_map_delete_elem(dp->map_fd[DP_RINGS], &slot) && errno != ENOENT)
		return -errno;
	return 0;
}

int datapath__counters(struct datapath *dp, uint32_t ring, uint64_t out[SL_CNT_MAX])
{
	int ncpu = libbpf_num_possible_cpus(), c, i;
	uint64_t *vals;

	if (ncpu <= 0)
		return ncpu ? ncpu : -EINVAL;
	vals = calloc(ncpu, sizeof(*vals));
	if (!vals)
		return -ENOMEM;
	for (i = 0; i < SL_CNT_MAX; i++) {
		uint32_t idx = ring * SL_CNT_MAX + i;

		out[i] = 0;
		if (bpf_map_lookup_elem(dp->map_fd[DP_COUNTERS], &idx, vals)) {
			int err = -errno;

			free(vals);
			return err;
		}
		for (c = 0; c < ncpu; c++)
			out[i] += vals[c];
	}
	free(vals);
	return 0;
}

int datapath__set_info(struct datapath *dp, uint32_t set_id, struct sl_set_info *info)
{
	return bpf_map_lookup_elem(dp->map_fd[DP_SETS], &set_id, info) ? -errno : 0;
}

int datapath__rule_meta(struct datapath *dp, uint32_t set_id, uint32_t rule_id,
			struct sl_rule_meta *meta)
{
	struct sl_rmeta_key k = { .set_id = set_id, .rule_id = rule_id };

	return bpf_map_lookup_elem(dp->map_fd[DP_RMETA], &k, meta) ? -errno : 0;
}

int datapath__explain(struct datapath *dp, struct sl_explain_ctx *c)
{
	char in[SL_EXPLAIN_OFF + sizeof(*c)] = {}, out[sizeof(in) + 64];
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = in, .data_size_in = sizeof(in),
		    .data_out = out, .data_size_out = sizeof(out), .repeat = 1);
	int err;

	/* A dummy IPv6 ethertype so the skb is well formed. */
	in[12] = 0x86;
	in[13] = 0xdd;
	memcpy(in + SL_EXPLAIN_OFF, c, sizeof(*c));
	err = bpf_prog_test_run_opts(dp->explain_fd, &o);
	if (err)
		return -errno;
	if (o.retval != 0 || o.data_size_out < sizeof(in))
		return -EIO;
	memcpy(c, out + SL_EXPLAIN_OFF, sizeof(*c));
	return 0;
}

static bool datapath__pid_alive(uint32_t pid)
{
	return pid && (kill(pid, 0) == 0 || errno == EPERM);
}

static bool datapath__set_used(struct datapath *dp, uint32_t set_id)
{
	struct sl_identity id;
	__u64 key, *prev = NULL;

	while (!bpf_map_get_next_key(dp->map_fd[DP_IDENT], prev, &key)) {
		prev = &key;
		if (!bpf_map_lookup_elem(dp->map_fd[DP_IDENT], &key, &id) && id.set_id == set_id)
			return true;
	}
	return false;
}

static bool datapath__ring_used(struct datapath *dp, uint32_t ring, uint64_t except)
{
	struct sl_identity id;
	__u64 key, *prev = NULL;

	while (!bpf_map_get_next_key(dp->map_fd[DP_IDENT], prev, &key)) {
		prev = &key;
		if (key != except && !bpf_map_lookup_elem(dp->map_fd[DP_IDENT], &key, &id) &&
		    id.ring == ring)
			return true;
	}
	return false;
}

int datapath__gc(struct datapath *dp)
{
	__u64 keys[256], key, *prev = NULL;
	size_t n = 0, i;
	int removed = 0;

	while (n < 256 && !bpf_map_get_next_key(dp->map_fd[DP_IDENT], prev, &key)) {
		keys[n++] = key;
		prev = &keys[n - 1];
	}
	for (i = 0; i < n; i++) {
		char rel[PATH_MAX], abs[PATH_MAX];
		struct sl_identity id;
		int pop = 0;

		if (bpf_map_lookup_elem(dp->map_fd[DP_IDENT], &keys[i], &id))
			continue;
		/* The daemon's identities are its to reconcile when it is back,
		 * empty cgroups included; only sluice run's orphans go here. */
		if (id.flags & (SL_IDF_DAEMON | SL_IDF_KERNEL))
			continue;
		if (!id.owner_pid || datapath__pid_alive(id.owner_pid))
			continue;
		if (!cgroup__path_of(keys[i], rel, sizeof(rel)) &&
		    !cgroup__abspath(rel + 1, abs, sizeof(abs)))
			pop = cgroup__populated(abs);
		else
			abs[0] = '\0';
		if (pop > 0)
			continue;	/* orphaned but still running: keep enforcing */
		pr_info("removing identity of cgroup %s left by exited process %u\n",
			abs[0] ? abs : "(gone)", id.owner_pid);
		datapath__ident_del(dp, keys[i]);
		if (!datapath__set_used(dp, id.set_id))
			datapath__set_del(dp, id.set_id);
		if (id.ring && !datapath__ring_used(dp, id.ring, keys[i]))
			datapath__ring_del(dp, id.ring);
		if (abs[0] && strstr(abs, "/sluice-run."))
			rmdir(abs);
		removed++;
	}
	return removed;
}

int datapath__flows(struct datapath *dp, int (*fn)(void *ctx, const struct sl_event *ev), void *ctx)
{
	LIBBPF_OPTS(bpf_link_create_opts, lo);
	union bpf_iter_link_info li = { .map.map_fd = (__u32)dp->map_fd[DP_SK] };
	struct sl_event ev;
	size_t got = 0;
	int link, it, n = 0, err = 0;
	ssize_t r;

	if (dp->flows_fd < 0)
		return -ENOENT;
	lo.iter_info = &li;
	lo.iter_info_len = sizeof(li);
	link = bpf_link_create(dp->flows_fd, 0, BPF_TRACE_ITER, &lo);
	if (link < 0)
		return -errno;
	it = bpf_iter_create(link);
	if (it < 0) {
		err = -errno;
		close(link);
		return err;
	}
	/* Records may be split across reads: read into one record at a time. */
	for (;;) {
		r = read(it, (char *)&ev + got, sizeof(ev) - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
		if (got < sizeof(ev))
			continue;
		got = 0;
		n++;
		if ((err = fn(ctx, &ev)))
			break;
	}
	if (r < 0 && !err)
		err = -errno;
	close(it);
	close(link);
	return err ? err : n;
}
