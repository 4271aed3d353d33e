#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""`make bench`: what sluice costs, measured side by side with what users run
today, in one run on one machine.

Parts (see docs/benchmarks.md):
  1. connect cost: socket()+connect()+close() on loopback (and UDP sendto)
     from a cgroup with no hook, under sluice with 1..100k rules, under
     nftables (socket cgroupv2 + address set; linear per-pod chains); the
     BPF programs' own run time from kernel.bpf_stats_enabled.
  2. event stream: highest connect rate with events on and the events lost;
     the reader stopped (SIGSTOP) under load: lost == loss counters.
  3. userspace pipeline: ring records rendered to JSON per second per core.
  4. policy apply: in process (parse, compile, set_add, flip, set_del; and
     the same change patched in place) and
     sluiced end to end (policy file renamed -> a real sendto() changes).
  5. memory: sluiced RSS idle and with 1k identities and 10k rules; BPF map
     memory per rule (the kernel's own accounting, fdinfo memlock).
  6. start: load + attach, adopt existing pins.

Every figure is a median over interleaved repetitions with its spread, and
the connect figures are ratios against a baseline taken in the same rounds.
Results: build/bench.json (build/bench-smoke.json with --smoke) and a table
on stdout. Everything it creates (cgroup subtree <mount>/sluice_bench_<pid>,
pins /sys/fs/bpf/sluice_bench_<pid>*, nft table inet sluice_bench_<pid>,
processes, temporary files) is removed however it ends; leftovers of a
killed earlier run (dead pid) are removed at start.

Timings are never asserted: a missed target is reported as MISS and the
exit status is 0 (unless --strict). The harness itself failing exits 1.
"""
import argparse
import atexit
import json
import os
import platform
import random
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.join(REPO, "build")
SLUICE = os.path.join(BUILD, "sluice")
SLUICED = os.path.join(BUILD, "sluiced")
CONNBENCH = os.path.join(BUILD, "bench", "connbench")
PIPEBENCH = os.path.join(BUILD, "bench", "pipebench")
FLOOR_OBJ = os.path.join(BUILD, "bench", "floor.bpf.o")
TAG_RE = re.compile(r"^sluice_bench_(\d+)")

FULL = dict(
    rounds=9, tcp_s=0.6, udp_s=0.3, stats_s=0.3,
    sizes=[1, 1000, 10000, 100000],
    nft_set_sizes=[1, 1000, 10000, 100000], nft_lin_sizes=[1000, 10000, 100000],
    mid=10000,                       # the size the deny/UDP/nft-deny rows use
    udp_sizes=[1, 10000, 100000],
    stall_ops=3000,                  # connects with the reader stopped (fits the ring)
    ev_threads=[1, 2, 4], ev_s=2.0, ev_reps=2, stall_s=3.0,
    render_s=2.0, render_reps=3,
    apply_sizes=[1000, 10000, 100000], apply_reps=5,
    d_sizes=[1000, 10000, 100000], d_reps={1000: 5, 10000: 5, 100000: 2}, d_reps_many=3,
    identities=1000, mem_rules=10000,
    start_reps=5,
)
SMOKE = dict(
    rounds=1, tcp_s=0.1, udp_s=0.1, stats_s=0.1,
    sizes=[1, 100], nft_set_sizes=[100], nft_lin_sizes=[100], mid=100,
    udp_sizes=[100], stall_ops=200,
    ev_threads=[1], ev_s=0.3, ev_reps=1, stall_s=0.6,
    render_s=0.2, render_reps=1,
    apply_sizes=[100], apply_reps=1,
    d_sizes=[100], d_reps={100: 1}, d_reps_many=1,
    identities=10, mem_rules=100,
    start_reps=1,
)


def log(msg):
    print("[bench %6.1fs] %s" % (time.monotonic() - T0, msg), file=sys.stderr, flush=True)


T0 = time.monotonic()


class HarnessError(Exception):
    pass


# ------------------------------------------------------------------ helpers

def run(argv, check=True, timeout=120, **kw):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise HarnessError("%s failed (%d): %s%s" % (" ".join(argv[:4]), p.returncode,
                                                     p.stdout[-2000:], p.stderr[-2000:]))
    return p


def cgroup2_mount():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.startswith("cgroup2 "):
                return left.split()[4]
    raise HarnessError("no cgroup2 mount in /proc/self/mountinfo")


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def remove_cgroup_tree(path):
    if not os.path.isdir(path):
        return
    for name in os.listdir(path):
        sub = os.path.join(path, name)
        if os.path.isdir(sub):
            remove_cgroup_tree(sub)
    try:
        with open(os.path.join(path, "cgroup.kill"), "w") as f:
            f.write("1")
    except OSError:
        pass
    for _ in range(300):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)


def free_port(kind):
    for _ in range(200):
        port = random.randint(20000, 32000)
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("0.0.0.0", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise HarnessError("no free port")


def closed_port():
    # bound and closed at once: nobody listens there for the run's length
    while True:
        p = free_port(socket.SOCK_STREAM)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if s.connect_ex(("127.0.0.1", p)) != 0:
                return p
        finally:
            s.close()


def summary(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    s = sorted(xs)
    out = {"median": statistics.median(s), "min": s[0], "max": s[-1], "n": len(s)}
    if len(s) >= 4:
        q = statistics.quantiles(s, n=4)
        out["p25"], out["p75"] = q[0], q[2]
    out["samples"] = xs
    return out


def med(x):
    return x["median"] if x else None


def ip(a):
    return "%d.%d.%d.%d" % (a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255)


def addresses(n):
    """n-1 distinct random /32s (seeded by n) outside 127/8, 0/8, 100+/8."""
    rnd = random.Random(0x5111CE + n)
    seen, out = set(), []
    while len(out) < max(n - 1, 0):
        a = rnd.getrandbits(32)
        if not (11 << 24) <= a < (100 << 24) or a in seen:
            continue
        seen.add(a)
        out.append(ip(a))
    return out


def policy_yaml(n, name, selector, swap_first=None):
    """N rules of one /32 each; 127.0.0.1 is rule N/2. SWAP_FIRST replaces
    rule r0's address (the file-change test flips 127.0.0.3 in and out)."""
    addrs = addresses(n)
    mid = len(addrs) // 2
    allr = addrs[:mid] + ["127.0.0.1"] + addrs[mid:]
    if swap_first and len(allr) > 1:
        allr[0 if allr[0] != "127.0.0.1" else 1] = swap_first
    lines = ["apiVersion: sluice.dev/v1alpha1", "kind: AgentPolicy",
             "metadata: {name: %s}" % name, "spec:",
             "  selector: {cgroupPaths: [\"%s\"]}" % selector, "  dns: deny", "  egress:"]
    lines += ["    - {name: r%d, to: [{cidr: %s/32}]}" % (i, a) for i, a in enumerate(allr)]
    return "\n".join(lines) + "\n"


def ring_size():
    """SL_RING_SIZE of include/sluice/sluice.h (the default ring)."""
    with open(os.path.join(REPO, "include", "sluice", "sluice.h")) as f:
        m = re.search(r"#define\s+SL_RING_SIZE\s+\(1U\s*<<\s*(\d+)\)", f.read())
    return 1 << int(m.group(1)) if m else None


class Proc:
    """A child speaking one line per command on stdin/stdout."""

    def __init__(self, bench, argv, name, cgroup=None, cpu=None):
        self.name = name
        self.errpath = bench.tmp_path("%s.stderr" % name)
        self.err = open(self.errpath, "w")
        self.buf = b""

        def pre():
            os.setsid()
            if cgroup:
                with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.err, preexec_fn=pre)
        bench.procs.append(self)

    @property
    def pid(self):
        return self.p.pid

    def readline(self, timeout):
        end = time.monotonic() + timeout
        fd = self.p.stdout.fileno()
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0:
                raise HarnessError("%s: no answer within %.0fs; stderr: %s"
                                   % (self.name, timeout, self.stderr()[-1500:]))
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise HarnessError("%s exited (%s); stderr: %s"
                                       % (self.name, self.p.poll(), self.stderr()[-1500:]))
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def expect_ready(self, timeout=60):
        line = self.readline(timeout)
        if line.strip() != "ready":
            raise HarnessError("%s: expected ready, got %r" % (self.name, line))

    def send(self, line):
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()

    def result(self, timeout):
        j = json.loads(self.readline(timeout))
        if "error" in j:
            raise HarnessError("%s: %s" % (self.name, j["error"]))
        return j

    def stderr(self):
        try:
            with open(self.errpath) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, timeout=15):
        """Polite end: EOF on stdin (an agent exits, sluice run cleans up)."""
        if self.p.poll() is None:
            try:
                os.kill(self.p.pid, signal.SIGCONT)
                self.p.stdin.close()
            except (OSError, ValueError):
                pass
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self):
        if self.p.poll() is None:
            for sig in (signal.SIGCONT, signal.SIGTERM):
                try:
                    os.kill(self.p.pid, sig)
                except OSError:
                    pass
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.p.pid, signal.SIGKILL)
                except OSError:
                    pass
                try:
                    self.p.kill()
                    self.p.wait(5)
                except (OSError, subprocess.TimeoutExpired):
                    pass
        try:
            self.err.close()
        except OSError:
            pass


def load_cmd(proto, dst, port, duration=None, ops=None, threads=1, cpu=0):
    c = "--proto %s --dst %s --port %d --threads %d" % (proto, dst, port, threads)
    c += " --ops %d" % ops if ops else " --duration %g" % duration
    if cpu is not None:
        c += " --cpu %d" % cpu
    return c


# ------------------------------------------------------------------ the bench

class Bench:
    def __init__(self, args):
        self.args = args
        self.cfg = dict(SMOKE if args.smoke else FULL)
        if args.rounds:
            self.cfg["rounds"] = args.rounds
        self.pid = os.getpid()
        self.tag = "sluice_bench_%d" % self.pid
        self.mount = cgroup2_mount()
        self.top = os.path.join(self.mount, self.tag)
        self.pin = "/sys/fs/bpf/" + self.tag            # part 1 and 2
        self.pin_d = self.pin + "_d"                     # sluiced
        self.pin_a = self.pin + "_a"                     # pipebench apply
        self.pin_s = self.pin + "_s"                     # pipebench start
        self.pins = [self.pin, self.pin_d, self.pin_a, self.pin_s]
        self.pin_floor = self.pin + "_floor"             # tests/bench/floor.bpf.c
        self.nft_table = self.tag
        self.tmp = tempfile.mkdtemp(prefix="sluice-bench.%d." % self.pid)
        self.procs = []
        self.nft_loaded = False
        self.stats_orig = None
        self.cleaned = False
        self.ncpu = os.cpu_count() or 1
        self.client_cpu = 0
        self.server_cpu = 1 if self.ncpu > 1 else 0
        self.results = {"parts": {}, "targets": [], "notes": [
            "part 1: every sluice policy size is loaded at once, each by its own `sluice run`"
            " (one identity and one set each, all in one LPM trie), events rendered to /dev/null;"
            " the client loop is pinned to CPU 0, the accept/receive server to CPU 1",
            "part 1: nftables variants hook the output chain only while they run; the set"
            " variant is stateless (socket cgroupv2 + set lookup per packet), nftsetct and"
            " nftlin accept ct established,related first (only the SYN, or every unanswered"
            " UDP datagram, walks the chain); refusals are tcp reset / drop",
            "part 1: bpf figures come from separate repetitions with kernel.bpf_stats_enabled=1;"
            " the timing repetitions run with it off",
            "the destination is the same in every op: the LPM path stays in cache"]}
        self.has_nft = shutil.which("nft") is not None and not args.no_nft

    def tmp_path(self, name):
        return os.path.join(self.tmp, name)

    def cg(self, *parts):
        return os.path.join(self.top, *parts)

    def cg_rel(self, path):
        return "/" + os.path.relpath(path, self.mount)

    # -------------------------------------------------------- set-up, clean-up

    def remove_stale(self):
        """Leftovers of an earlier bench that was killed (its pid is gone)."""
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            for a in argv:
                m = TAG_RE.match(os.path.basename(a.decode(errors="replace")))
                if a.startswith(b"/sys/fs/bpf/sluice_bench_") and m and \
                        not pid_alive(int(m.group(1))):
                    log("stopping pid %s of a stale bench" % pid)
                    try:
                        os.kill(int(pid), signal.SIGCONT)
                        os.kill(int(pid), signal.SIGTERM)
                    except OSError:
                        pass
                    break
        tmpdir = tempfile.gettempdir()
        for name in os.listdir(tmpdir):
            m = re.match(r"^sluice-bench\.(\d+)\.", name)
            if m and not pid_alive(int(m.group(1))):
                shutil.rmtree(os.path.join(tmpdir, name), ignore_errors=True)
        for name in os.listdir(self.mount):
            m = TAG_RE.match(name)
            if m and not pid_alive(int(m.group(1))):
                log("removing stale cgroup %s" % name)
                remove_cgroup_tree(os.path.join(self.mount, name))
        if os.path.isdir("/sys/fs/bpf"):
            for name in os.listdir("/sys/fs/bpf"):
                m = TAG_RE.match(name)
                if m and not pid_alive(int(m.group(1))):
                    log("removing stale pins %s" % name)
                    if name.endswith("_floor"):             # the floor programs
                        self.remove_floor("/sys/fs/bpf/" + name)
                        continue
                    run([SLUICE, "detach", "--pin-path", "/sys/fs/bpf/" + name], check=False)
                    self.remove_locks("/sys/fs/bpf/" + name)
        if os.path.isdir("/run/sluice"):
            for name in os.listdir("/run/sluice"):
                m = re.match(r"^_sys_fs_bpf_sluice_bench_(\d+)", name)
                if m and not pid_alive(int(m.group(1))):
                    try:
                        os.unlink(os.path.join("/run/sluice", name))
                    except OSError:
                        pass
        if self.has_nft:
            p = run(["nft", "list", "tables"], check=False)
            for line in p.stdout.splitlines():
                parts = line.split()
                if len(parts) == 3 and TAG_RE.match(parts[2]) and \
                        not pid_alive(int(TAG_RE.match(parts[2]).group(1))):
                    log("removing stale nft table %s" % parts[2])
                    run(["nft", "delete", "table", parts[1], parts[2]], check=False)

    @staticmethod
    def remove_locks(pin):
        base = "/run/sluice/" + pin.replace("/", "_")
        for ext in (".lock", ".users"):
            try:
                os.unlink(base + ext)
            except OSError:
                pass

    def setup(self):
        if os.geteuid() != 0:
            raise HarnessError("the benchmarks need root (BPF, cgroups, nftables)")
        for b in (SLUICE, SLUICED, CONNBENCH, PIPEBENCH, FLOOR_OBJ):
            if not os.access(b, os.R_OK if b.endswith(".o") else os.X_OK):
                raise HarnessError("%s is missing: run `make bench`" % b)
        self.remove_stale()
        os.makedirs(self.top)
        for c in ("server", "plain", "hooked", "hooked/ungov", "floor", "floorev", "floorperf",
                  "dh", "dh/agents",
                  "ap", "ap/id", "st"):
            os.makedirs(self.cg(c), exist_ok=True)
        self.stats_orig = open("/proc/sys/kernel/bpf_stats_enabled").read().strip()
        self.set_stats(False)
        self.tcp_port = free_port(socket.SOCK_STREAM)
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.closed = closed_port()
        self.server = Proc(self, [CONNBENCH, "serve", "--tcp-port", str(self.tcp_port),
                                  "--udp-port", str(self.udp_port)],
                           "server", cgroup=self.cg("server"), cpu=self.server_cpu)
        self.server.expect_ready(10)

    def set_stats(self, on):
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write("1" if on else "0")

    def cleanup(self):
        if self.cleaned:
            return
        self.cleaned = True
        for p in reversed(self.procs):
            try:
                p.kill()
            except Exception:
                pass
        if self.nft_loaded or self.has_nft:
            run(["nft", "delete", "table", "inet", self.nft_table], check=False)
        for pin in self.pins:
            run([SLUICE, "detach", "--pin-path", pin], check=False)
            self.remove_locks(pin)
        # each step on its own: one that fails must not skip the others
        for step in (lambda: remove_cgroup_tree(self.top),    # detaches the floor programs
                     lambda: self.remove_floor(self.pin_floor)):
            try:
                step()
            except OSError as e:
                log("cleanup: %s" % e)
        if self.stats_orig is not None:
            try:
                with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
                    f.write(self.stats_orig)
            except OSError:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)
        left = [p for p in self.pins + [self.top, self.pin_floor] if os.path.exists(p)]
        if self.has_nft and run(["nft", "list", "table", "inet", self.nft_table],
                                check=False).returncode == 0:
            left.append("nft table inet " + self.nft_table)
        if left:
            log("WARNING: left behind: %s" % left)

    # -------------------------------------------------------- part 1

    def bpf_prog_ids(self, pin):
        ids = {}
        for name in ("sock_create", "connect4", "sendmsg4", "sockops"):
            p = run(["bpftool", "link", "show", "pinned", "%s/link_%s" % (pin, name), "-j"])
            ids[name] = json.loads(p.stdout)["prog_id"]
        return ids

    @staticmethod
    def remove_floor(path):
        """The floor's pinned programs and maps (a directory of pins, maps
        in its maps/, or one pin)."""
        if os.path.isdir(path):
            for f in os.listdir(path):
                if os.path.isdir(os.path.join(path, f)):
                    Bench.remove_floor(os.path.join(path, f))
                else:
                    os.unlink(os.path.join(path, f))
            os.rmdir(path)
        elif os.path.exists(path):
            os.unlink(path)

    def bpf_stats(self, ids):
        p = run(["bpftool", "prog", "show", "-j"])
        by_id = {j["id"]: j for j in json.loads(p.stdout)}
        return {n: (by_id.get(i, {}).get("run_time_ns", 0), by_id.get(i, {}).get("run_cnt", 0))
                for n, i in ids.items()}

    def nft_setup(self, c):
        """Sets and per-pod chains, loaded once; no base chain (no hook, no
        cost) until a variant adds one."""
        plain = self.cg("plain")
        self.nft_cg_level = len(self.cg_rel(plain).strip("/").split("/"))
        self.nft_cg_path = os.path.relpath(plain, "/sys/fs/cgroup")
        L = ["table inet %s {" % self.nft_table]
        sizes = sorted(set(c["nft_set_sizes"]) | {c["mid"]})
        for n in sizes:
            els = addresses(n) + ["127.0.0.1"]
            L.append("  set a%d { type ipv4_addr; elements = { %s } }" % (n, ", ".join(els)))
            L += ["  chain pset%d {" % n, "    ip daddr @a%d accept" % n,
                  "    meta l4proto tcp reject with tcp reset", "    drop", "  }"]
        for n in c["nft_lin_sizes"]:
            addrs = addresses(n)
            mid = len(addrs) // 2
            L.append("  chain lin%d {" % n)
            L += ["    ip daddr %s accept" % a for a in addrs[:mid]]
            L.append("    ip daddr 127.0.0.1 accept")
            L += ["    ip daddr %s accept" % a for a in addrs[mid:]]
            L += ["    meta l4proto tcp reject with tcp reset", "    drop", "  }"]
        L.append("}")
        path = self.tmp_path("tables.nft")
        with open(path, "w") as f:
            f.write("\n".join(L) + "\n")
        t = time.monotonic()
        self.nft_loaded = True
        run(["nft", "-f", path], timeout=600)
        log("nft: sets %s, linear chains %s loaded in %.1fs"
            % (sizes, c["nft_lin_sizes"], time.monotonic() - t))

    def nft_hook(self, kind, n):
        match = 'socket cgroupv2 level %d "%s"' % (self.nft_cg_level, self.nft_cg_path)
        rules = {
            "nftset": [match + " jump pset%d" % n],
            "nftsetct": ["ct state established,related accept", match + " jump pset%d" % n],
            "nftlin": ["ct state established,related accept", match + " jump lin%d" % n],
        }[kind]
        text = ("table inet %s {\n  chain out {\n    type filter hook output priority 0; "
                "policy accept;\n%s\n  }\n}\n"
                % (self.nft_table, "\n".join("    " + r for r in rules)))
        path = self.tmp_path("hook.nft")
        with open(path, "w") as f:
            f.write(text)
        run(["nft", "-f", path])

    def nft_unhook(self):
        run(["nft", "delete", "chain", "inet", self.nft_table, "out"])

    def part1(self):
        c = self.cfg
        res = {"variants": {}, "bpf": {}, "setup": {}}
        self.results["parts"]["connect"] = res
        T, U = self.tcp_port, self.udp_port
        agents = {}
        log("part 1: agents")
        agents["plain"] = Proc(self, [CONNBENCH, "agent"], "agent-plain", cgroup=self.cg("plain"))
        agents["ungov"] = Proc(self, [CONNBENCH, "agent"], "agent-ungov",
                               cgroup=self.cg("hooked", "ungov"))
        # the floor: the per-socket tag and a connect4 that allows at once;
        # floor-event: the same tag and one ring record per connect, read
        # as sluice reads; floor-perf: the record through a perf event
        # array instead (tests/bench/floor.bpf.c)
        run(["bpftool", "prog", "loadall", FLOOR_OBJ, self.pin_floor,
             "pinmaps", os.path.join(self.pin_floor, "maps")])
        # each cgroup: the tag, and its own connect4
        floor_progs = {cg: {"sock_create": "floor_sock_create", "connect4": c4}
                       for cg, c4 in (("floor", "floor_connect4"),
                                      ("floorev", "floor_connect4_event"),
                                      ("floorperf", "floor_connect4_perf"))}
        for cg, progs in floor_progs.items():
            for hook, prog in progs.items():
                run(["bpftool", "cgroup", "attach", self.cg(cg), hook, "pinned",
                     os.path.join(self.pin_floor, prog)])
            agents[cg] = Proc(self, [CONNBENCH, "agent"], "agent-" + cg, cgroup=self.cg(cg))
        # not pinned, like the reader of each `sluice run` it stands for
        # (pinned to the server's CPU it slowed the accepts: 1.070 against
        # 1.032 x for the same programs)
        drains = {"floorev": Proc(self, [PIPEBENCH, "drain", "--ring", os.path.join(
                      self.pin_floor, "maps", "floor_ring")], "floor-drain"),
                  "floorperf": Proc(self, [PIPEBENCH, "drain", "--perf", os.path.join(
                      self.pin_floor, "maps", "floor_perf")], "floor-drain-perf")}
        for dr in drains.values():
            dr.expect_ready(10)
        records_made = {ag: 0 for ag in drains}     # one record per connect
        sizes = sorted(set(c["sizes"]) | {c["mid"]} | set(c["udp_sizes"]))
        for n in sizes:
            f = self.tmp_path("p%d.yaml" % n)
            with open(f, "w") as fh:
                fh.write(policy_yaml(n, "bench-%d" % n, "sluice_bench_none/*"))
            t = time.monotonic()
            agents["sluice-%d" % n] = Proc(
                self, [SLUICE, "run", "--pin-path", self.pin, "--cgroup-root", self.cg("hooked"),
                       "--policy", f, "--events", "/dev/null", "--", CONNBENCH, "agent"],
                "sluice-run-%d" % n)
            agents["sluice-%d" % n].expect_ready(300)
            res["setup"]["sluice_run_start_s_%d" % n] = time.monotonic() - t
            log("sluice run with %d rules ready in %.2fs" % (n, time.monotonic() - t))
        for a in agents.values():
            if a.name.startswith("agent-"):
                a.expect_ready(10)
        ids = self.bpf_prog_ids(self.pin)
        prog_id = {}
        for prog in {p for progs in floor_progs.values() for p in progs.values()}:
            p = run(["bpftool", "prog", "show", "pinned", os.path.join(self.pin_floor, prog), "-j"])
            prog_id[prog] = json.loads(p.stdout)["id"]
        ids_of = {cg: {hook: prog_id[prog] for hook, prog in progs.items()}
                  for cg, progs in floor_progs.items()}
        if self.has_nft:
            self.nft_setup(c)

        # (name, proto, agent, dst, port, nft hook, size)
        V = [("tcp/none/allow", "tcp", "plain", "127.0.0.1", T, None, 0),
             ("tcp/none/refused", "tcp", "plain", "127.0.0.1", self.closed, None, 0),
             ("tcp/hooked-ungoverned/allow", "tcp", "ungov", "127.0.0.1", T, None, 0),
             ("tcp/floor/allow", "tcp", "floor", "127.0.0.1", T, None, 0),
             ("tcp/floor-event/allow", "tcp", "floorev", "127.0.0.1", T, None, 0),
             ("tcp/floor-perf/allow", "tcp", "floorperf", "127.0.0.1", T, None, 0)]
        for n in c["sizes"]:
            V.append(("tcp/sluice-%d/allow" % n, "tcp", "sluice-%d" % n, "127.0.0.1", T, None, n))
            V.append(("tcp/sluice-%d/deny" % n, "tcp", "sluice-%d" % n, "127.0.0.2", T, None, n))
        if self.has_nft:
            for n in c["nft_set_sizes"]:
                V.append(("tcp/nftset-%d/allow" % n, "tcp", "plain", "127.0.0.1", T, "nftset", n))
            m = c["mid"]
            V.append(("tcp/nftset-%d/deny" % m, "tcp", "plain", "127.0.0.2", T, "nftset", m))
            V.append(("tcp/nftsetct-%d/allow" % m, "tcp", "plain", "127.0.0.1", T, "nftsetct", m))
            for n in c["nft_lin_sizes"]:
                V.append(("tcp/nftlin-%d/allow" % n, "tcp", "plain", "127.0.0.1", T, "nftlin", n))
            if m in c["nft_lin_sizes"]:
                V.append(("tcp/nftlin-%d/deny" % m, "tcp", "plain", "127.0.0.2", T, "nftlin", m))
        V += [("udp/none/allow", "udp", "plain", "127.0.0.1", U, None, 0),
              ("udp/hooked-ungoverned/allow", "udp", "ungov", "127.0.0.1", U, None, 0)]
        for n in c["udp_sizes"]:
            V.append(("udp/sluice-%d/allow" % n, "udp", "sluice-%d" % n, "127.0.0.1", U, None, n))
        m = c["mid"]
        V.append(("udp/sluice-%d/deny" % m, "udp", "sluice-%d" % m, "127.0.0.2", U, None, m))
        if self.has_nft:
            V.append(("udp/nftset-%d/allow" % m, "udp", "plain", "127.0.0.1", U, "nftset", m))
            V.append(("udp/nftset-%d/deny" % m, "udp", "plain", "127.0.0.2", U, "nftset", m))
            if m in c["nft_lin_sizes"]:
                V.append(("udp/nftlin-%d/allow" % m, "udp", "plain", "127.0.0.1", U, "nftlin", m))
        # bpf_stats passes: sluice variants again with kernel.bpf_stats_enabled=1
        S = [v for v in V if "/sluice-" in v[0] or "/hooked-ungoverned/" in v[0] or
             "/floor" in v[0]]
        # ring of each sluice run, for its loss counters
        st = self.status(self.pin)
        ring_of = {}
        for ag, a in agents.items():
            for i in st.get("identities", []):
                if i.get("owner_pid") == a.pid:
                    ring_of[ag] = i["ring"]

        samples = {v[0]: [] for v in V}
        raw = {v[0]: [] for v in V}
        cpu = {v[0]: [] for v in V}
        bpf = {v[0]: [] for v in S}
        stalled = {n: [] for n in c["sizes"]}
        rnd = random.Random(42)
        for r in range(c["rounds"]):
            order = list(V)
            rnd.shuffle(order)
            log("part 1: round %d/%d (%d variants)" % (r + 1, c["rounds"], len(order)))
            for name, proto, ag, dst, port, hook, n in order:
                dur = c["tcp_s"] if proto == "tcp" else c["udp_s"]
                if hook:
                    self.nft_hook(hook, n)
                if ag in ring_of:
                    c0 = self.rings(self.pin)[ring_of[ag]]
                try:
                    a = agents[ag]
                    a.send(load_cmd(proto, dst, port, dur, cpu=self.client_cpu))
                    j = a.result(dur * 20 + 60)
                    if ag in records_made:
                        records_made[ag] += j["ops"]
                finally:
                    if hook:
                        self.nft_unhook()
                if ag in ring_of:
                    time.sleep(0.05)
                    c1 = self.rings(self.pin)[ring_of[ag]]
                    j["events_produced"] = self.produced(c1) - self.produced(c0)
                    j["events_lost"] = self.lost(c1) - self.lost(c0)
                self.check_outcome(name, j)
                samples[name].append(j["ns_per_op"])
                cpu[name].append(j["cpu_ns_per_op"])
                raw[name].append(j)
            # BPF run time per program (stats on only here: they cost a
            # clock read pair per program run)
            self.set_stats(True)
            try:
                for name, proto, ag, dst, port, hook, n in S:
                    pids = ids_of.get(ag, ids)
                    before = self.bpf_stats(pids)
                    agents[ag].send(load_cmd(proto, dst, port, c["stats_s"], cpu=self.client_cpu))
                    j = agents[ag].result(c["stats_s"] * 20 + 60)
                    if ag in records_made:
                        records_made[ag] += j["ops"]
                    after = self.bpf_stats(pids)
                    bpf[name].append(self.bpf_delta(before, after, j["ops"]))
                # diagnostic: allowed connects with the ring reader
                # stopped, so that no record wakes it up (the ring holds
                # the records of STALL_OPS connects; nothing is lost)
                time.sleep(0.2)
                for n in c["sizes"]:
                    ag = "sluice-%d" % n
                    os.kill(agents[ag].pid, signal.SIGSTOP)
                    try:
                        before = self.bpf_stats(ids)
                        agents[ag].send(load_cmd("tcp", "127.0.0.1", T, ops=c["stall_ops"],
                                                 cpu=self.client_cpu))
                        j = agents[ag].result(120)
                        after = self.bpf_stats(ids)
                    finally:
                        os.kill(agents[ag].pid, signal.SIGCONT)
                    d = self.bpf_delta(before, after, j["ops"])
                    d["ns_per_op"] = j["ns_per_op"]
                    stalled[n].append(d)
                    time.sleep(0.2)
            finally:
                self.set_stats(False)

        base = {"tcp": samples["tcp/none/allow"], "udp": samples["udp/none/allow"]}
        cbase = {"tcp": cpu["tcp/none/allow"], "udp": cpu["udp/none/allow"]}
        refused = samples["tcp/none/refused"]
        for name, proto, ag, dst, port, hook, n in V:
            xs = samples[name]
            b = base[proto]
            v = {"ns_per_op": summary(xs),
                 "cpu_ns_per_op": summary(cpu[name]),
                 "ops_per_s": summary([j["ops_per_s"] for j in raw[name]]),
                 "ratio": med(summary(xs)) / med(summary(b)),
                 "ratio_rounds": summary([x / y for x, y in zip(xs, b)]),
                 "cpu_ratio": med(summary(cpu[name])) / med(summary(cbase[proto])),
                 "outcome": {k: sum(j[k] for j in raw[name])
                             for k in ("ok", "eperm", "refused", "other")}}
            if name.endswith("/deny") and proto == "tcp":
                v["ratio_vs_refused"] = med(summary(xs)) / med(summary(refused))
            if name in bpf:
                v["bpf"] = self.bpf_summary(bpf[name])
            if ag in ring_of:
                v["events_produced"] = sum(j["events_produced"] for j in raw[name])
                v["events_lost"] = sum(j["events_lost"] for j in raw[name])
            res["variants"][name] = v
        res["bpf_reader_stopped"] = {
            "tcp/sluice-%d/allow" % n: dict(self.bpf_summary(ds),
                                            ns_per_op=summary([d["ns_per_op"] for d in ds]))
            for n, ds in stalled.items()}
        for a in agents.values():
            a.stop()
        # the floor's records measure a record per connect only if none
        # was lost
        for ag, row in (("floorev", "tcp/floor-event/allow"), ("floorperf", "tcp/floor-perf/allow")):
            drains[ag].p.stdin.close()
            got = json.loads(drains[ag].readline(30))["records"]
            drains[ag].stop()
            if row in res["variants"]:
                res["variants"][row]["events_produced"] = records_made[ag]
                res["variants"][row]["events_lost"] = records_made[ag] - got
        if self.has_nft:
            run(["nft", "delete", "table", "inet", self.nft_table], check=False)
            self.nft_loaded = False

    @staticmethod
    def bpf_delta(before, after, ops):
        out = {"ops": ops}
        tot = 0
        for n in before:
            dt = after[n][0] - before[n][0]
            dc = after[n][1] - before[n][1]
            out[n] = {"run_ns": dt, "runs": dc, "ns_per_run": dt / dc if dc else None}
            tot += dt
        out["bpf_ns_per_op"] = tot / ops if ops else None
        return out

    @staticmethod
    def bpf_summary(ds):
        out = {}
        for prog in ("sock_create", "connect4", "sendmsg4", "sockops"):
            if prog not in ds[0]:
                out[prog + "_ns_per_run"] = out[prog + "_runs_per_op"] = None
                continue
            out[prog + "_ns_per_run"] = summary([d[prog]["ns_per_run"] for d in ds])
            out[prog + "_runs_per_op"] = summary([d[prog]["runs"] / d["ops"] for d in ds if d["ops"]])
        out["bpf_ns_per_op"] = summary([d["bpf_ns_per_op"] for d in ds])
        return out

    @staticmethod
    def check_outcome(name, j):
        want = {"allow": "ok", "deny": None, "refused": "refused"}[name.rsplit("/", 1)[1]]
        if want is None:
            # sluice refuses with EPERM; nftables with a TCP reset
            # (ECONNREFUSED) or, for UDP, a drop (EPERM from the stack)
            want = "eperm" if "/sluice-" in name or name.startswith("udp/") else "refused"
        if j["ops"] == 0 or j[want] != j["ops"]:
            raise HarnessError("%s: expected every op to be %s, got %s" % (name, want, j))

    # -------------------------------------------------------- part 2

    def status(self, pin):
        return json.loads(run([SLUICE, "status", "--pin-path", pin, "-o", "json"]).stdout)

    def rings(self, pin):
        return {rc["ring"]: rc for rc in self.status(pin)["counters"]["rings"]}

    def ring_counters(self, pin, owner):
        st = self.status(pin)
        ring = None
        for i in st.get("identities", []):
            if i.get("owner_pid") == owner:
                ring = i["ring"]
        if ring is None:
            raise HarnessError("no identity of pid %d in sluice status" % owner)
        for rc in st["counters"]["rings"]:
            if rc["ring"] == ring:
                return rc
        raise HarnessError("no counters for ring %d" % ring)

    @staticmethod
    def produced(cnt):
        return cnt["allow"] + cnt["deny"] + cnt["audit"] + cnt["established"] + cnt["close"]

    @staticmethod
    def lost(cnt):
        return cnt["events_lost_ring_full"] + cnt["events_lost_no_reader"]

    @staticmethod
    def count_lines(path):
        n = 0
        with open(path, "rb") as f:
            while True:
                b = f.read(1 << 20)
                if not b:
                    return n
                n += b.count(b"\n")

    @staticmethod
    def cpu_ticks(pid):
        with open("/proc/%d/stat" % pid) as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return int(parts[11]) + int(parts[12])   # utime + stime

    def wait_drained(self, pin, owner, path, timeout=20):
        """Until every produced record is read or counted lost and the file
        stops growing (the reader flushes as it goes)."""
        end = time.monotonic() + timeout
        last = -1
        while time.monotonic() < end:
            time.sleep(0.3)
            cnt = self.ring_counters(pin, owner)
            lines = self.count_lines(path)
            if lines == last and lines + self.lost(cnt) >= self.produced(cnt):
                return cnt, lines
            last = lines
        return self.ring_counters(pin, owner), self.count_lines(path)

    def part2(self):
        c = self.cfg
        res = {}
        self.results["parts"]["events"] = res
        T = self.tcp_port
        evf = self.tmp_path("events.jsonl")
        pol = self.tmp_path("p%d.yaml" % c["mid"])
        if not os.path.exists(pol):
            with open(pol, "w") as fh:
                fh.write(policy_yaml(c["mid"], "bench-%d" % c["mid"], "sluice_bench_none/*"))
        log("part 2: event stream")
        a = Proc(self, [SLUICE, "run", "--pin-path", self.pin, "--cgroup-root", self.cg("hooked"),
                        "--policy", pol, "--events", evf, "--", CONNBENCH, "agent"], "sluice-run-events")
        a.expect_ready(120)
        tick = os.sysconf("SC_CLK_TCK")
        sweep = []
        cnt0, lines0 = self.ring_counters(self.pin, a.pid), self.count_lines(evf)
        for rep in range(c["ev_reps"]):
            for th in c["ev_threads"]:
                before = self.ring_counters(self.pin, a.pid)
                cpu0 = self.cpu_ticks(a.pid)
                a.send(load_cmd("tcp", "127.0.0.1", T, c["ev_s"], threads=th, cpu=None))
                j = a.result(c["ev_s"] * 20 + 60)
                cpu1 = self.cpu_ticks(a.pid)
                after = self.ring_counters(self.pin, a.pid)
                self.check_outcome("tcp/x/allow", j)
                sweep.append({"threads": th, "ops_per_s": j["ops_per_s"], "ops": j["ops"],
                              "events_per_s": self.produced(after) - self.produced(before),
                              "lost": self.lost(after) - self.lost(before),
                              "reader_cpu_s": (cpu1 - cpu0) / tick})
                sweep[-1]["events_per_s"] /= j["elapsed_ns"] / 1e9
                time.sleep(0.3)
        best = max(sweep, key=lambda s: s["ops_per_s"])
        at_best = [s for s in sweep if s["threads"] == best["threads"]]
        cnt1, lines1 = self.wait_drained(self.pin, a.pid, evf)
        res["sweep"] = sweep
        res["max_connect_rate"] = summary([s["ops_per_s"] for s in at_best])
        res["max_rate_threads"] = best["threads"]
        res["lost_at_max_rate"] = sum(s["lost"] for s in at_best)
        res["lost_whole_sweep"] = sum(s["lost"] for s in sweep)
        res["ring_size_bytes"] = ring_size()
        res["sweep_check"] = {"produced": self.produced(cnt1) - self.produced(cnt0),
                              "read": lines1 - lines0,
                              "lost_counters": self.lost(cnt1) - self.lost(cnt0)}
        res["reader_cpu_us_per_event"] = 1e6 * sum(s["reader_cpu_s"] for s in sweep) / \
            max(1, sum(s["events_per_s"] * c["ev_s"] for s in sweep))

        # stall: the reader stopped while the load goes on
        log("part 2: reader stopped under load")
        before, lines_b = cnt1, lines1
        th = best["threads"]
        a.send(load_cmd("tcp", "127.0.0.1", T, c["stall_s"], threads=th, cpu=None))
        time.sleep(c["stall_s"] * 0.15)
        os.kill(a.pid, signal.SIGSTOP)
        time.sleep(c["stall_s"] * 0.6)
        os.kill(a.pid, signal.SIGCONT)
        j = a.result(c["stall_s"] * 20 + 60)
        after, lines_a = self.wait_drained(self.pin, a.pid, evf)
        produced = self.produced(after) - self.produced(before)
        read = lines_a - lines_b
        lost_cnt = self.lost(after) - self.lost(before)
        res["stall"] = {"ops": j["ops"], "ok": j["ok"], "produced": produced, "read": read,
                        "lost_observed": produced - read, "lost_counters": lost_cnt,
                        "expected_from_load": 3 * j["ok"] + (j["ops"] - j["ok"]),
                        "exact": produced - read == lost_cnt and lost_cnt > 0}
        a.stop()
        stderr = a.stderr()
        res["stall"]["sluice_run_warning"] = next(
            (l for l in stderr.splitlines() if "lost" in l), None)

    # -------------------------------------------------------- part 3

    def part3(self):
        c = self.cfg
        log("part 3: userspace pipeline")
        xs = []
        for _ in range(c["render_reps"]):
            p = run(["taskset", "-c", str(self.server_cpu), PIPEBENCH, "render",
                     "--seconds", str(c["render_s"])], timeout=120)
            xs.append(json.loads(p.stdout.strip().splitlines()[-1]))
        self.results["parts"]["pipeline"] = {
            "records_per_s": summary([x["records_per_s"] for x in xs]),
            "ns_per_record": summary([x["ns_per_record"] for x in xs]),
            "bytes_per_record": xs[-1]["bytes_per_record"], "runs": xs}
        # gateway decision-log lines: split (baseline), parsed, parsed and
        # joined and rendered; the phases interleave within one process
        p = run(["taskset", "-c", str(self.server_cpu), PIPEBENCH, "gateway",
                 "--seconds", str(c["render_s"] / 2), "--rounds", str(c["render_reps"])],
                timeout=300)
        rows = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
        g = {}
        for ph in ("split", "parse", "parse_join_render"):
            rs = [r for r in rows if r["phase"] == ph]
            if not rs:
                raise HarnessError("pipebench gateway: no %s rows" % ph)
            g[ph] = {"lines_per_s": summary([r["lines_per_s"] for r in rs]),
                     "ns_per_line": summary([r["ns_per_line"] for r in rs])}
            if any(r["parse_failures"] or r["render_failures"] for r in rs):
                raise HarnessError("pipebench gateway: failures in %s: %r" % (ph, rs))
        j = [r for r in rows if r["phase"] == "parse_join_render"]
        if any(r["joined"] != r["lines"] for r in j):
            raise HarnessError("pipebench gateway: lines not joined: %r" % j)
        base = med(g["split"]["ns_per_line"])
        for ph in ("parse", "parse_join_render"):
            g[ph]["x_split"] = med(g[ph]["ns_per_line"]) / base
        g["records_per_line"] = j[-1]["records"] / j[-1]["lines"]
        g["bytes_per_record"] = j[-1]["bytes_per_record"]
        g["runs"] = rows
        self.results["parts"]["gateway"] = g

    # -------------------------------------------------------- part 4a, 5b, 6

    def part4_inproc(self):
        c = self.cfg
        res = {}
        self.results["parts"]["apply"] = res
        for n in c["apply_sizes"]:
            log("part 4: apply in process, %d rules" % n)
            fa, fb = self.tmp_path("a%d.yaml" % n), self.tmp_path("b%d.yaml" % n)
            with open(fa, "w") as f:
                f.write(policy_yaml(n, "apply-%d" % n, "x/*"))
            with open(fb, "w") as f:
                f.write(policy_yaml(n, "apply-%d" % n, "x/*", swap_first="127.0.0.3"))
            p = run([PIPEBENCH, "apply", "--pin-path", self.pin_a, "--cgroup-root", self.cg("ap"),
                     "--ident-cgroup", self.cg("ap", "id"), "--policy", fa, "--policy", fb,
                     "--reps", str(c["apply_reps"])], timeout=900)
            rows = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
            empty = next(r for r in rows if r["phase"] == "empty")
            first = next(r for r in rows if r["phase"] == "first")
            swaps = [r for r in rows if r["phase"] == "swap"]
            out = {k: summary([r[k] for r in swaps]) for k in
                   ("parse_ns", "compile_ns", "set_add_ns", "ident_flip_ns", "set_del_ns",
                    "applied_ns", "total_ns", "yaml_floor_ns")}
            out["first_load"] = {k: first[k] for k in first if k.endswith("_ns")}
            out["entries"] = first["entries"]
            mem = {m: first["memlock"][m] - empty["memlock"][m] for m in empty["memlock"]}
            out["map_bytes_delta"] = mem
            out["map_bytes_per_rule"] = sum(v for v in mem.values() if v > 0) / n
            out["map_bytes_empty_total"] = sum(v for v in empty["memlock"].values() if v > 0)
            # the same change written in place, as sluiced does when the
            # rules keep their names (the first load is not a change)
            p = run([PIPEBENCH, "apply", "--patch", "--pin-path", self.pin_a,
                     "--cgroup-root", self.cg("ap"), "--ident-cgroup", self.cg("ap", "id"),
                     "--policy", fa, "--policy", fb, "--reps", str(c["apply_reps"])], timeout=900)
            rows = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
            patches = [r for r in rows if r["phase"] == "patch"]
            if len(patches) != c["apply_reps"] or any(r["written"] < 1 for r in patches):
                raise HarnessError("pipebench apply --patch: unexpected %s" % patches)
            out["patch"] = {k: summary([r[k] for r in patches]) for k in
                            ("parse_ns", "compile_ns", "names_check_ns", "patch_ns",
                             "applied_ns", "total_ns", "written", "deleted")}
            res[str(n)] = out

    def part6(self):
        c = self.cfg
        log("part 6: load, attach, adopt")
        p = run([PIPEBENCH, "start", "--pin-path", self.pin_s, "--cgroup-root", self.cg("st"),
                 "--reps", str(c["start_reps"])], timeout=300)
        rows = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
        if not rows or not all(r["loaded_here"] and r["adopted"] and not r["still_pinned"]
                               for r in rows):
            raise HarnessError("pipebench start: unexpected %s" % rows)
        self.results["parts"]["start"] = {
            "load_attach_ns": summary([r["load_attach_ns"] for r in rows]),
            "adopt_ns": summary([r["adopt_ns"] for r in rows]),
            "teardown_ns": summary([r["teardown_ns"] for r in rows])}

    # -------------------------------------------------------- part 4b, 5a: sluiced

    @staticmethod
    def rss_kib(pid):
        out = {}
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    out[k] = int(v.split()[0])
        return out

    def daemon_identities(self):
        st = self.status(self.pin_d)
        return len(st.get("identities", []))

    def write_policy(self, pdir, text):
        tmp = os.path.join(pdir, ".bench.yaml.tmp")
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        os.rename(tmp, os.path.join(pdir, "bench.yaml"))
        return t0

    def flip(self, until, text, pdir, timeout=120):
        """Latency from the rename of the policy file to the first sendto()
        whose result shows the change."""
        fp = Proc(self, [CONNBENCH, "flip", "--dst", "127.0.0.3", "--port", str(self.udp_port),
                         "--until", until, "--timeout", str(timeout)],
                  "flip", cgroup=self.cg("dh", "agents", "flip"), cpu=self.client_cpu)
        fp.expect_ready(10)
        time.sleep(0.05)
        t0 = self.write_policy(pdir, text) if text else time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        j = fp.result(timeout + 10)
        fp.stop()
        self.procs.remove(fp)
        if text and (j["flipped_ns"] < t0 or j["sends"] < 2):
            raise HarnessError("flip: the state was %s before the change" % until)
        return (j["flipped_ns"] - t0) / 1e6

    def part_daemon(self):
        c = self.cfg
        res = {}
        self.results["parts"]["daemon"] = res
        pdir = self.tmp_path("policies")
        os.makedirs(pdir)
        sel = self.cg_rel(self.cg("dh", "agents")).lstrip("/") + "/*"
        log("part 4/5: sluiced (policy dir %s, selector %s)" % (pdir, sel))
        t = time.monotonic()
        d = Proc(self, [SLUICED, "--policy-dir", pdir, "--cgroup-root", self.cg("dh"),
                        "--pin-path", self.pin_d, "--control-socket", self.tmp_path("ctl.sock"),
                        "--node", "bench"], "sluiced", cpu=self.server_cpu)
        end = time.monotonic() + 60
        while "sluiced ready" not in d.stderr():
            if d.p.poll() is not None or time.monotonic() > end:
                raise HarnessError("sluiced did not start: %s" % d.stderr()[-2000:])
            time.sleep(0.005)
        res["start_to_ready_ms"] = (time.monotonic() - t) * 1e3
        # settled: sluiced gives freed memory back 1 s after a reconcile
        time.sleep(1.5)
        res["rss_idle_kib"] = self.rss_kib(d.pid)

        # 1k identities and 10k rules
        os.makedirs(self.cg("dh", "agents", "flip"))
        k = c["identities"]
        for i in range(k):
            os.makedirs(self.cg("dh", "agents", "a-%04d" % i))
        n = c["mem_rules"]
        pol_a = {}
        pol_b = {}

        def texts(size):
            if size not in pol_a:
                pol_a[size] = policy_yaml(size, "d-%d" % size, sel)
                pol_b[size] = policy_yaml(size, "d-%d" % size, sel, swap_first="127.0.0.3")
            return pol_a[size], pol_b[size]
        a_txt, b_txt = texts(n)
        t = time.monotonic()
        self.write_policy(pdir, a_txt)
        end = time.monotonic() + 120
        while self.daemon_identities() < k + 1:
            if time.monotonic() > end:
                raise HarnessError("sluiced: %d identities after 120s" % self.daemon_identities())
            time.sleep(0.1)
        self.flip("eperm", None, pdir)          # the set is in force
        res["initial_apply_s"] = time.monotonic() - t
        time.sleep(1.5)
        res["rss_loaded_kib"] = self.rss_kib(d.pid)
        res["rss_loaded_identities"] = self.daemon_identities()
        res["rss_loaded_rules"] = n

        lat = {}
        many = []
        for _ in range(c["d_reps_many"]):
            many.append(self.flip("ok", b_txt, pdir))
            many.append(self.flip("eperm", a_txt, pdir))
        lat["%d_with_%d_identities" % (n, k + 1)] = summary(many)

        log("part 4: removing %d cgroups" % k)
        for i in range(k):
            remove_cgroup_tree(self.cg("dh", "agents", "a-%04d" % i))
        end = time.monotonic() + 60
        while self.daemon_identities() > 1 and time.monotonic() < end:
            time.sleep(0.1)
        # the kernel frees removed cgroups in the background for a while
        # (the flips measured meanwhile took up to twice as long)
        time.sleep(0 if self.args.smoke else 3)
        for size in c["d_sizes"]:
            a_txt, b_txt = texts(size)
            log("part 4: sluiced file change, %d rules" % size)
            self.write_policy(pdir, a_txt)
            self.flip("eperm", None, pdir)
            xs = []
            for _ in range(c["d_reps"][size]):
                xs.append(self.flip("ok", b_txt, pdir))
                xs.append(self.flip("eperm", a_txt, pdir))
            lat[str(size)] = summary(xs)
        res["file_to_enforced_ms"] = lat
        res["rss_end_kib"] = self.rss_kib(d.pid)
        d.p.send_signal(signal.SIGTERM)
        try:
            d.p.wait(20)
        except subprocess.TimeoutExpired:
            d.kill()
        run([SLUICE, "detach", "--pin-path", self.pin_d], check=False)

    # -------------------------------------------------------- report

    def machine(self):
        model = platform.processor()
        try:
            for line in run(["lscpu"]).stdout.splitlines():
                if line.startswith("Model name:"):
                    model = line.split(":", 1)[1].strip()
            hyp = [l.split(":", 1)[1].strip() for l in run(["lscpu"]).stdout.splitlines()
                   if l.startswith("Hypervisor vendor:")]
        except Exception:
            hyp = []
        return {"cpu": model, "cpus": self.ncpu, "hypervisor": hyp[0] if hyp else None,
                "kernel": platform.release(), "hostname": platform.node(),
                "nft": run(["nft", "--version"], check=False).stdout.strip() if self.has_nft else None,
                "bpf_stats_enabled_before": self.stats_orig}

    def target(self, name, value, limit, unit, ok, detail=""):
        self.results["targets"].append({"target": name, "value": value, "limit": limit,
                                        "unit": unit, "pass": bool(ok), "detail": detail})

    def evaluate(self):
        c, P = self.cfg, self.results["parts"]
        m, big = c["mid"], max(c["sizes"])
        V = P.get("connect", {}).get("variants", {})
        if V:
            v = V.get("tcp/sluice-%d/allow" % m)
            fl = V.get("tcp/floor/allow")
            fev = V.get("tcp/floor-event/allow")
            self.target("connect+close, sluice %d rules / no hook" % m, v["ratio"], 1.03, "x",
                        v["ratio"] <= 1.03, "CPU time %.3f x%s%s" % (
                            v["cpu_ratio"], "; the per-socket tag alone (floor): %.3f x"
                            % fl["ratio"] if fl else "",
                            "; the tag and one ring record (floor-event): %.3f x"
                            % fev["ratio"] if fev else ""))
            nf = V.get("tcp/nftset-%d/allow" % m)
            if nf:
                ct = V.get("tcp/nftsetct-%d/allow" % m)
                self.target("connect+close, sluice %d rules / nftables set %d" % (m, m),
                            v["ratio"] / nf["ratio"], 1.0, "x", v["ratio"] <= nf["ratio"],
                            "CPU time %.3f x%s" % (
                                v["cpu_ratio"] / nf["cpu_ratio"],
                                "; / the set behind conntrack (nftsetct, %.3f x no hook): %.3f x"
                                % (ct["ratio"], v["ratio"] / ct["ratio"]) if ct else ""))
            v2 = V.get("tcp/sluice-%d/allow" % big)
            self.target("connect+close, sluice %d rules / no hook" % big, v2["ratio"], 1.05, "x",
                        v2["ratio"] <= 1.05, "CPU time %.3f x" % v2["cpu_ratio"])
            fb = fl.get("bpf") if fl else None
            for n, lim in ((m, 150), (big, 200)):
                b = V["tcp/sluice-%d/allow" % n]["bpf"]["connect4_ns_per_run"]
                st = P["connect"]["bpf_reader_stopped"].get("tcp/sluice-%d/allow" % n)
                detail = []
                if fb and fb.get("connect4_ns_per_run"):
                    detail.append("a connect4 that allows at once: %.0f ns"
                                  % med(fb["connect4_ns_per_run"]))
                for row, what, lost_what in (
                        ("tcp/floor-event/allow", "one that only writes the connect's ring record",
                         "of its records lost"),
                        ("tcp/floor-perf/allow", "through a perf buffer instead", "lost")):
                    fr = (V.get(row) or {}).get("bpf")
                    if fr and fr.get("connect4_ns_per_run"):
                        lost = V[row].get("events_lost", 0)
                        detail.append("%s: %.0f ns%s" % (
                            what, med(fr["connect4_ns_per_run"]),
                            " (%d %s: not a measure)" % (lost, lost_what) if lost else ""))
                if st:
                    detail.append("%.0f ns with the reader stopped (no wakeups)"
                                  % med(st["connect4_ns_per_run"]))
                self.target("connect4 run time, %d rules (events on)" % n, med(b), lim, "ns",
                            med(b) <= lim, "; ".join(detail))
        E = P.get("events")
        if E:
            self.target("events lost at max connect rate (%.0f/s)" % med(E["max_connect_rate"]),
                        E["lost_at_max_rate"], 0, "events", E["lost_at_max_rate"] == 0)
            s = E["stall"]
            self.target("reader stopped: lost events == loss counters",
                        s["lost_observed"], s["lost_counters"], "events", s["exact"])
        if "pipeline" in P:
            r = med(P["pipeline"]["records_per_s"])
            self.target("records decoded+rendered per s per core", r, 500000, "/s", r >= 500000)
        if "gateway" in P:
            r = med(P["gateway"]["parse_join_render"]["lines_per_s"])
            self.target("gateway lines parsed+joined per s per core", r, 300000, "/s",
                        r >= 300000)
        D = P.get("daemon")
        if D:
            key = str(c["mem_rules"]) if str(c["mem_rules"]) in D["file_to_enforced_ms"] else None
            A = P.get("apply", {}).get(key) if key else None
            if A and "patch" in A:
                x = med(A["patch"]["applied_ns"]) / 1e6
                self.target("policy change applied in place, %s rules (compile+write)" % key,
                            x, 10, "ms", x <= 10, "a new set and a flip: %.1f ms"
                            % (med(A["applied_ns"]) / 1e6))
            if key:
                x = med(D["file_to_enforced_ms"][key])
                self.target("policy file change -> enforced, %s rules (sluiced)" % key, x, 10,
                            "ms", x <= 10, "libyaml alone reads the file in %.1f ms" %
                            (med(A["yaml_floor_ns"]) / 1e6) if A else "")
            rss = D["rss_loaded_kib"]["VmRSS"] / 1024
            self.target("sluiced RSS, %d identities, %d rules" % (D["rss_loaded_identities"],
                                                                  D["rss_loaded_rules"]),
                        rss, 16, "MiB", rss <= 16)
        if "start" in P:
            x = med(P["start"]["load_attach_ns"]) / 1e6
            self.target("load and attach", x, 500, "ms", x <= 500)

    def table(self):
        c, P, out = self.cfg, self.results["parts"], []
        M = self.results["machine"]
        out.append("sluice benchmarks%s: %s, %d CPUs%s, kernel %s; %d interleaved rounds"
                   % (" (SMOKE: tiny sizes, not figures)" if self.results.get("smoke") else "",
                      M["cpu"], M["cpus"], ", %s guest" % M["hypervisor"] if M["hypervisor"] else "",
                      M["kernel"], c["rounds"]))
        V = P.get("connect", {}).get("variants", {})
        if V:
            out.append("")
            out.append("1. connect cost: median wall ns/op [min-max] and CPU ns/op of the loop over %d rounds;"
                       % c["rounds"])
            out.append("   x base: / no hook (same rounds); x refus: / no hook to a closed port; bpf: kernel.bpf_stats")
            out.append("%-30s %9s %19s %9s %9s %7s %7s %7s %9s %9s %s" % (
                "variant", "ns/op", "spread", "ops/s", "cpu ns/op", "x base", "x cpu", "x refus",
                "bpf ns/op", "prog ns", "events lost/made"))
            for name, v in V.items():
                s = v["ns_per_op"]
                bp = v.get("bpf")
                main = "connect4" if name.startswith("tcp/") else "sendmsg4"
                if "/floor" in name:
                    main = "connect4"
                out.append("%-30s %9.0f %9.0f-%-9.0f %9.0f %9.0f %7.3f %7.3f %7s %9s %9s %s" % (
                    name, s["median"], s["min"], s["max"], med(v["ops_per_s"]),
                    med(v["cpu_ns_per_op"]), v["ratio"], v["cpu_ratio"],
                    "%.3f" % v["ratio_vs_refused"] if "ratio_vs_refused" in v else "",
                    "%.0f" % med(bp["bpf_ns_per_op"]) if bp else "",
                    "%.0f" % med(bp[main + "_ns_per_run"]) if bp and bp[main + "_ns_per_run"] else "",
                    "%d/%d" % (v["events_lost"], v["events_produced"]) if "events_lost" in v else ""))
            out.append("   with the ring reader stopped (SIGSTOP: no wakeups; BPF stats on, ns/op not comparable):")
            for name, bp in P["connect"]["bpf_reader_stopped"].items():
                out.append("%-30s %9.0f %19s %9s %9s %7s %7s %7s %9.0f %9.0f" % (
                    "   " + name, med(bp["ns_per_op"]), "", "", "", "", "", "",
                    med(bp["bpf_ns_per_op"]), med(bp["connect4_ns_per_run"])))
            mid = "tcp/sluice-%d/allow" % c["mid"]
            out.append("   per program, %s (ns/run x runs/op):" % mid)
            rows = [("reader running", V[mid]["bpf"]),
                    ("reader stopped", P["connect"]["bpf_reader_stopped"][mid])]
            for fl in ("floor", "floor-event", "floor-perf"):
                if V.get("tcp/%s/allow" % fl, {}).get("bpf"):
                    rows.append((fl, V["tcp/%s/allow" % fl]["bpf"]))
            for label, b in rows:
                out.append("     %-15s " % label + "  ".join(
                    "%s %.0f x%.1f" % (p, med(b[p + "_ns_per_run"]), med(b[p + "_runs_per_op"]))
                    for p in ("sock_create", "connect4", "sockops") if b[p + "_ns_per_run"]))
        E = P.get("events")
        if E:
            out.append("")
            out.append("2. event stream (ring %d KiB, events to a file)" % (E["ring_size_bytes"] // 1024))
            for s in E["sweep"]:
                out.append("   %d thread(s): %8.0f connects/s, %8.0f events/s, lost %d"
                           % (s["threads"], s["ops_per_s"], s["events_per_s"], s["lost"]))
            out.append("   max rate %.0f connects/s (%d threads), lost there: %d; reader CPU %.2f us/event"
                       % (med(E["max_connect_rate"]), E["max_rate_threads"], E["lost_at_max_rate"],
                          E["reader_cpu_us_per_event"]))
            s = E["stall"]
            out.append("   reader stopped: produced %d, read %d, lost %d, loss counters %d -> %s"
                       % (s["produced"], s["read"], s["lost_observed"], s["lost_counters"],
                          "exact" if s["exact"] else "MISMATCH"))
        if "pipeline" in P:
            p = P["pipeline"]
            out.append("")
            out.append("3. userspace pipeline: %.0f records/s on one core [%.0f-%.0f], %.0f ns/record, %.0f B/line"
                       % (med(p["records_per_s"]), p["records_per_s"]["min"],
                          p["records_per_s"]["max"], med(p["ns_per_record"]), p["bytes_per_record"]))
        if "gateway" in P:
            g = P["gateway"]
            out.append("   gateway log lines on one core (4096 lines: 3/4 agentgateway text, 1/8 JSON,")
            out.append("   1/8 Envoy JSON; 10000 open flows; x split: ns/line over the split-only baseline):")
            for ph in ("split", "parse", "parse_join_render"):
                x = g[ph]
                out.append("     %-18s %10.0f lines/s [%.0f-%.0f] %8.1f ns/line %s" % (
                    ph, med(x["lines_per_s"]), x["lines_per_s"]["min"], x["lines_per_s"]["max"],
                    med(x["ns_per_line"]), "%7.1f x split" % x["x_split"] if "x_split" in x else ""))
            out.append("     %.2f records per line (joined + drift findings), %.0f B/record"
                       % (g["records_per_line"], g["bytes_per_record"]))
        A = P.get("apply")
        if A:
            out.append("")
            out.append("4. policy apply, in process (median ms over swaps; applied = compile+write+flip)")
            out.append("   floor: libyaml's events alone for the same file, nothing built")
            out.append("   %8s %8s %8s %8s %9s %8s %9s %9s %8s" % (
                "rules", "floor", "parse", "compile", "set_add", "flip", "applied", "set_del", "total"))
            for n, a in A.items():
                out.append("   %8s %8.1f %8.1f %8.1f %9.1f %8.3f %9.1f %9.1f %8.1f" % (
                    n, med(a["yaml_floor_ns"]) / 1e6, med(a["parse_ns"]) / 1e6,
                    med(a["compile_ns"]) / 1e6,
                    med(a["set_add_ns"]) / 1e6, med(a["ident_flip_ns"]) / 1e6,
                    med(a["applied_ns"]) / 1e6, med(a["set_del_ns"]) / 1e6,
                    med(a["total_ns"]) / 1e6))
            out.append("   the same change written in place (sluiced, when the rules keep their names):")
            out.append("   %8s %8s %8s %8s %9s %9s %9s %15s" % (
                "rules", "parse", "compile", "names", "patch", "applied", "total", "written/deleted"))
            for n, a in A.items():
                if "patch" not in a:
                    continue
                q = a["patch"]
                out.append("   %8s %8.1f %8.1f %8.2f %9.3f %9.1f %9.1f %15s" % (
                    n, med(q["parse_ns"]) / 1e6, med(q["compile_ns"]) / 1e6,
                    med(q["names_check_ns"]) / 1e6, med(q["patch_ns"]) / 1e6,
                    med(q["applied_ns"]) / 1e6, med(q["total_ns"]) / 1e6,
                    "%d/%d" % (med(q["written"]), med(q["deleted"]))))
        D = P.get("daemon")
        if D:
            out.append("   sluiced, policy file renamed -> a sendto() sees the change (median ms [min-max]):")
            for k, s in D["file_to_enforced_ms"].items():
                out.append("     %-26s %8.1f [%.1f-%.1f]" % (k + " rules", s["median"], s["min"], s["max"]))
        if D or A:
            out.append("")
            out.append("5. memory")
        if D:
            out.append("   sluiced RSS idle %.1f MiB; with %d identities and %d rules %.1f MiB (peak %.1f MiB)"
                       % (D["rss_idle_kib"]["VmRSS"] / 1024, D["rss_loaded_identities"],
                          D["rss_loaded_rules"], D["rss_loaded_kib"]["VmRSS"] / 1024,
                          D["rss_loaded_kib"]["VmHWM"] / 1024))
        if A:
            for n, a in A.items():
                out.append("   BPF maps, %s rules: %.0f B/rule (%s); empty datapath %.1f MiB" % (
                    n, a["map_bytes_per_rule"],
                    ", ".join("%s %+d" % (k, v) for k, v in a["map_bytes_delta"].items() if v),
                    a["map_bytes_empty_total"] / 2**20))
        S = P.get("start")
        if S:
            out.append("")
            out.append("6. start: load+attach %.1f ms [%.1f-%.1f], adopt pins %.3f ms, teardown %.1f ms%s"
                       % (med(S["load_attach_ns"]) / 1e6, S["load_attach_ns"]["min"] / 1e6,
                          S["load_attach_ns"]["max"] / 1e6, med(S["adopt_ns"]) / 1e6,
                          med(S["teardown_ns"]) / 1e6,
                          "; sluiced start to ready %.0f ms" % D["start_to_ready_ms"] if D else ""))
        out.append("")
        out.append("targets:")
        for t in self.results["targets"]:
            val = t["value"]
            out.append("   %-4s %-58s %12s (target %s %s)%s" % (
                "PASS" if t["pass"] else "MISS", t["target"],
                ("%.3f" % val if isinstance(val, float) else str(val)) + " " + t["unit"],
                t["limit"], t["unit"], "; " + t["detail"] if t["detail"] else ""))
        return "\n".join(out)


def build_only():
    """Compile the bench binaries through the Makefile (one place for flags)."""
    subprocess.run(["make", "-C", REPO, "--no-print-directory", "bench",
                    "BENCH_ARGS=--build-only"], check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="every part once at tiny sizes (seconds)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds of part 1")
    ap.add_argument("--parts", default="1,2,3,4,5,6", help="comma list of parts to run")
    ap.add_argument("--no-nft", action="store_true", help="skip the nftables variants")
    ap.add_argument("--out", help="JSON output (default build/bench.json, build/bench-smoke.json)")
    ap.add_argument("--strict", action="store_true", help="exit 2 if a target is missed")
    ap.add_argument("--report", metavar="JSON",
                    help="print the table of an earlier run's results, its targets evaluated"
                         " again by this run.py (runs nothing)")
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_only:
        return 0
    if args.report:
        # the targets are evaluated again: the table is what this run.py says of those figures
        b = Bench.__new__(Bench)
        b.args = args
        try:
            with open(args.report) as f:
                b.results = json.load(f)
            b.cfg = b.results["config"]
        except (OSError, ValueError, KeyError) as e:
            print("sluice bench: %s: cannot read results: %s" % (args.report, e), file=sys.stderr)
            return 1
        b.results["targets"] = []
        try:
            b.evaluate()
            text = b.table()
        except (KeyError, TypeError) as e:
            print("sluice bench: %s: results of another version of run.py (missing %s)"
                  % (args.report, e), file=sys.stderr)
            return 1
        print(text)
        return 0
    if os.geteuid() != 0:
        print("sluice bench: needs root (BPF, cgroups, nftables)", file=sys.stderr)
        return 1
    if not os.environ.get("SLUICE_BENCH_BUILT"):
        try:
            build_only()
        except subprocess.CalledProcessError:
            print("sluice bench: the build failed", file=sys.stderr)
            return 1
    out = args.out or os.path.join(BUILD, "bench-smoke.json" if args.smoke else "bench.json")
    parts = set(args.parts.split(","))
    b = Bench(args)
    atexit.register(b.cleanup)

    def on_signal(signo, _frame):
        raise KeyboardInterrupt("signal %d" % signo)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    status = 0
    try:
        b.setup()
        b.results["machine"] = b.machine()
        b.results["command"] = " ".join(["python3", "tests/bench/run.py"] + sys.argv[1:])
        b.results["config"] = b.cfg
        b.results["smoke"] = args.smoke
        b.results["started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if "1" in parts:
            b.part1()
        if "2" in parts:
            b.part2()
        if "3" in parts:
            b.part3()
        if "4" in parts or "5" in parts:
            b.part4_inproc()
            b.part_daemon()
        if "6" in parts:
            b.part6()
        b.evaluate()
        b.results["duration_s"] = time.monotonic() - T0
        text = b.table()
        with open(out, "w") as f:
            json.dump(b.results, f, indent=1)
        print(text)
        print("\nresults: %s (%.0f s)" % (os.path.relpath(out, os.getcwd()), time.monotonic() - T0))
        if args.strict and not all(t["pass"] for t in b.results["targets"]):
            status = 2
    except KeyboardInterrupt as e:
        print("sluice bench: interrupted (%s); cleaning up" % e, file=sys.stderr)
        status = 130
    except Exception:
        traceback.print_exc()
        print("sluice bench: FAILED; cleaning up", file=sys.stderr)
        status = 1
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        b.cleanup()
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)
    return status


if __name__ == "__main__":
    sys.exit(main())
