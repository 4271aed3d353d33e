# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""Integration test harness: real BPF, real cgroups, real sockets.

Every test run gets its own cgroup subtree (below the cgroup2 mount) and its
own BPF pin path, and removes both, with every process it started, however it
ends. Nothing is attached to the machine's root cgroup.
"""
import atexit
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SLUICE = os.path.join(REPO, "build", "sluice")
PROBE = os.path.join(REPO, "build", "progs", "sockprobe")
CI = os.environ.get("CI") == "true"


def cgroup2_mount():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.startswith("cgroup2 "):
                return left.split()[4]
    raise RuntimeError("no cgroup2 mount in /proc/self/mountinfo")


class Env:
    """The test run's own cgroup root, pin path, scratch dir and children."""

    def __init__(self):
        tag = "sluice-itest-%d" % os.getpid()
        self.mount = cgroup2_mount()
        self.cg_root = os.path.join(self.mount, tag)
        self.cg_rel = "/" + tag
        self.pin = "/sys/fs/bpf/" + tag
        self.tmp = tempfile.mkdtemp(prefix="sluice-itest.")
        self.procs = []
        self.closers = []
        os.makedirs(self.cg_root, exist_ok=True)
        atexit.register(self.cleanup)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def spawn(self, argv, **kw):
        p = subprocess.Popen(argv, stdout=kw.pop("stdout", subprocess.PIPE),
                             stderr=kw.pop("stderr", subprocess.PIPE), text=True, **kw)
        self.procs.append(p)
        return p

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        for c in self.closers:
            try:
                c()
            except Exception:
                pass
        self.procs, self.closers = [], []
        subprocess.run([SLUICE, "detach", "--pin-path", self.pin],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        remove_cgroup_tree(self.cg_root)
        shutil.rmtree(self.tmp, ignore_errors=True)


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
    for _ in range(200):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)


def free_port(kind=socket.SOCK_STREAM):
    for _ in range(100):
        port = random.randint(20000, 45000)
        s4 = socket.socket(socket.AF_INET, kind)
        s6 = socket.socket(socket.AF_INET6, kind)
        try:
            s4.bind(("0.0.0.0", port))
            s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s6.bind(("::", port))
            return port
        except OSError:
            continue
        finally:
            s4.close()
            s6.close()
    raise RuntimeError("no free port")


class TcpEcho:
    """Echo server on 0.0.0.0:port and [::]:port, in this (ungoverned) process."""

    def __init__(self, env, port=None):
        self.port = port or free_port()
        self.socks = []
        for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((addr, self.port))
            s.listen(128)
            self.socks.append(s)
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()
        env.closers.append(self.close)

    def _serve(self, s):
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(c,), daemon=True).start()

    @staticmethod
    def _echo(c):
        try:
            c.settimeout(5)
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        for s in self.socks:
            s.close()


class Udp:
    def __init__(self, env, port=None):
        self.port = port or free_port(socket.SOCK_DGRAM)
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind(("127.0.0.1", self.port))
        self.s.settimeout(0.5)
        env.closers.append(self.s.close)

    def drain(self):
        n = 0
        try:
            while True:
                self.s.recv(65536)
                n += 1
        except OSError:
            return n


class Run:
    def __init__(self, rc, stdout, stderr, events):
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.events = events

    def probe(self, op=None):
        """The last JSON line sockprobe printed (optionally of OP)."""
        found = None
        for line in self.stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    j = json.loads(line)
                except ValueError:
                    continue
                if op is None or j.get("op") == op:
                    found = j
        if found is None:
            raise AssertionError("no sockprobe result in stdout:\n%s\nstderr:\n%s"
                                 % (self.stdout, self.stderr))
        return found

    def ev(self, **match):
        return [e for e in self.events if all(get(e, k) == v for k, v in match.items())]


def get(d, key):
    for part in key.split("__"):
        if not isinstance(d, dict):
            return None
        d = d.get(part)
    return d


def iter_events(path):
    """The events of PATH one by one: a poll for the first match stops
    there, however fast a running loop keeps appending (a whole read can
    fall behind a writer at ~40 MB/s and never finish)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        for line in f:
            if not line.endswith("\n"):
                return          # the writer is mid-line: the rest comes later
            line = line.strip()
            if line:
                yield json.loads(line)


def read_events(path):
    return list(iter_events(path))


def write_policy(env, text, name=None):
    name = name or "policy-%d.yaml" % random.randint(0, 1 << 30)
    p = env.path(name)
    with open(p, "w") as f:
        f.write(text)
    return p


def sluice_run_argv(env, policies, cmd, events=None, extra=()):
    argv = [SLUICE, "run", "--pin-path", env.pin, "--cgroup-root", env.cg_root]
    for p in policies:
        argv += ["--policy", p]
    if events:
        argv += ["--events", events]
    argv += list(extra)
    return argv + ["--"] + list(cmd)


def sluice_run(env, policies, cmd, extra=(), timeout=30):
    events = env.path("events-%d.jsonl" % random.randint(0, 1 << 30))
    p = subprocess.run(sluice_run_argv(env, policies, cmd, events, extra),
                       capture_output=True, text=True, timeout=timeout)
    return Run(p.returncode, p.stdout, p.stderr, read_events(events))


def sluice(*args, check=True):
    p = subprocess.run([SLUICE] + list(args), capture_output=True, text=True, timeout=30)
    if check and p.returncode != 0:
        raise AssertionError("sluice %s failed (%d): %s%s"
                             % (" ".join(args), p.returncode, p.stdout, p.stderr))
    return p


def wait_for(cond, timeout=5.0, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def eq(a, b, what=""):
    if a != b:
        raise AssertionError("%s: expected %r, got %r" % (what, b, a))


class Suite:
    def __init__(self):
        self.tests = []

    def test(self, fn):
        self.tests.append(fn)
        return fn

    def main(self, make_ctx):
        if os.geteuid() != 0:
            msg = "integration tests need root (BPF, cgroups)"
            if CI:
                print("FAIL: " + msg)
                print("0 passed, 1 failed")
                return 1
            print("!" * 72)
            print("SKIPPED: all integration tests: " + msg)
            print("!" * 72)
            return 0
        only = sys.argv[1:]
        ctx = make_ctx()
        passed = failed = 0
        try:
            for t in self.tests:
                if only and t.__name__ not in only:
                    continue
                t0 = time.time()
                try:
                    t(ctx)
                    passed += 1
                    print("ok   %-40s %.2fs" % (t.__name__, time.time() - t0), flush=True)
                except Exception:
                    failed += 1
                    print("FAIL %s" % t.__name__, flush=True)
                    traceback.print_exc(file=sys.stdout)
        finally:
            ctx.env.cleanup()
        # A run must leave nothing behind: check what we created is gone.
        leftovers = [p for p in (ctx.env.pin, ctx.env.cg_root) if os.path.exists(p)]
        if leftovers:
            failed += 1
            print("FAIL cleanup: left behind %s" % leftovers)
        print("%d passed, %d failed" % (passed, failed))
        return 1 if failed else 0
