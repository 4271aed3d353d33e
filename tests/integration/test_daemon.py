#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""sluiced end to end: the daemon with real BPF in real cgroups.

Each test starts its own sluiced(s) on its own cgroup subtree (below the
run's cgroup root), policy directory, control socket and metrics port, and
asserts what a user sees: the real syscall result (from sockprobe), the CLI's
answers, the metrics and the event files. Whatever happens, a test's daemons
are killed, its pins detached and its cgroups removed (Scope), and the
harness checks that nothing is left behind.
Run one test: test_daemon.py test_start_stop.
"""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from harness import (PROBE, REPO, SLUICE, Env, Suite, TcpEcho, eq, free_port,  # noqa: E402
                     remove_cgroup_tree, wait_for)

SLUICED = os.path.join(REPO, "build", "sluiced")
# sh -c ENTER CGROUP CMD...: move the shell into CGROUP, then become CMD, so
# CMD's very first socket is created in CGROUP.
ENTER = 'echo $$ > "$0/cgroup.procs" && exec "$@"'

suite = Suite()

POLICY = """\
apiVersion: sluice.dev/v1alpha1
kind: AgentPolicy
metadata: {{name: {name}, namespace: itest}}
spec:
  selector: {{cgroupPaths: [{paths}]}}
  egress:
    - name: llm
      class: llm
      to: [{{cidr: 127.0.0.1/32}}]
      ports: [{ports}]
"""


def policy_text(name, patterns, ports):
    return POLICY.format(name=name, paths=", ".join('"%s"' % p for p in patterns),
                         ports=", ".join("{port: %d, protocol: TCP}" % p for p in ports))


class Ctx:
    def __init__(self):
        self.env = Env()
        self.allow = TcpEcho(self.env)     # allowed by the policies
        self.allow2 = TcpEcho(self.env)    # allowed by changed policies
        self.deny = TcpEcho(self.env)      # listening, never allowed


# ---------------------------------------------------------------- helpers

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(port, path, timeout=2.0):
    try:
        with _opener.open("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def run(argv, timeout=10):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)


def cli(*args, timeout=10):
    """sluice ARGS, which must succeed; -o json output is parsed (but for
    flows: JSON lines)."""
    p = run([SLUICE] + list(args), timeout)
    if p.returncode != 0:
        raise AssertionError("sluice %s: exit %d\nstdout: %s\nstderr: %s"
                             % (" ".join(map(str, args)), p.returncode, p.stdout, p.stderr))
    if "json" in args and args[0] != "flows":
        return json.loads(p.stdout)
    return p.stdout


def probe_in(cg, *args, timeout=15):
    """The result of one sockprobe operation run inside cgroup CG."""
    p = run(["sh", "-c", ENTER, cg, PROBE] + list(args), timeout)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise AssertionError("no sockprobe result (exit %d): %s %s" % (p.returncode, p.stdout,
                                                                         p.stderr))
    return json.loads(lines[-1])


def connect(cg, port):
    return probe_in(cg, "tcp-connect", "127.0.0.1", port)


def assert_eperm(cg, port, what):
    r = connect(cg, port)
    eq((r["ret"], r["errname"]), (-1, "EPERM"), what)
    return r


def assert_allowed(cg, port, what):
    r = connect(cg, port)
    eq((r["ret"], r["errname"]), (0, ""), what)
    return r


def poll(fn, timeout, what):
    """Call FN until it returns something true; that value, or fail with
    the last one after TIMEOUT seconds."""
    end = time.time() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.time() > end:
            raise AssertionError("timed out after %.1fs waiting for %s (last: %r)"
                                 % (timeout, what, last))
        time.sleep(0.02)


def write_atomic(path, text):
    d, b = os.path.split(path)
    tmp = os.path.join(d, "." + b + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"(?:,|$)')


def parse_prom(text):
    """Prometheus text format -> ([(name, {labels}, value)], {name: type})."""
    samples, types = [], {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) == 4 and parts[1] == "TYPE":
                types[parts[2]] = parts[3]
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise AssertionError("not a Prometheus sample line: %r" % line)
        labels, rest, pos = {}, m.group(2) or "", 0
        while pos < len(rest):
            lm = _LABEL.match(rest, pos)
            if not lm:
                raise AssertionError("bad labels in %r" % line)
            labels[lm.group(1)] = re.sub(r'\\(.)', lambda x: "\n" if x.group(1) == "n"
                                         else x.group(1), lm.group(2))
            pos = lm.end()
        samples.append((m.group(1), labels, float(m.group(3))))
    return samples, types


def prom_value(samples, name, **labels):
    vals = [v for n, l, v in samples if n == name and all(l.get(k) == x for k, x in labels.items())]
    return vals[0] if vals else None


class Daemon:
    def __init__(self, s, extra=(), stdout=None, sock=None, tag="d", binary=None):
        self.s = s
        s.ndaemons += 1
        self.tag = "%s-%s%d" % (s.name, tag, s.ndaemons)
        self.sock = sock or s.env.path(self.tag + ".sock")
        self.port = free_port()
        self.errpath = s.env.path(self.tag + ".stderr")
        self.argv = [binary or SLUICED, "--policy-dir", s.poldir, "--cgroup-root", s.cg,
                     "--pin-path", s.pin, "--control-socket", self.sock,
                     "--metrics", "127.0.0.1:%d" % self.port] + list(extra)
        with open(self.errpath, "w") as err:
            self.p = subprocess.Popen(self.argv, stdout=stdout or subprocess.DEVNULL, stderr=err)
        s.procs.append(self.p)
        s.env.procs.append(self.p)

    def stderr(self):
        with open(self.errpath) as f:
            return f.read()

    def wait_ready(self, timeout=10):
        end = time.time() + timeout
        while time.time() < end:
            if self.p.poll() is not None:
                raise AssertionError("sluiced exited %d before ready:\n%s"
                                     % (self.p.returncode, self.stderr()))
            try:
                code, _ = http_get(self.port, "/readyz", 0.5)
                if code == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        raise AssertionError("sluiced not ready in %ds:\n%s" % (timeout, self.stderr()))

    def metrics(self, timeout=2.0):
        code, body = http_get(self.port, "/metrics", timeout)
        eq(code, 200, "GET /metrics")
        return parse_prom(body)

    def status(self, timeout=10):
        return cli("status", "--socket", self.sock, "--pin-path", self.s.pin, "-o", "json",
                   timeout=timeout)

    def stop(self, sig=signal.SIGTERM, timeout=5):
        """Signal the daemon; its exit status and how long it took."""
        t0 = time.time()
        self.p.send_signal(sig)
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("sluiced still running %ds after signal %d:\n%s"
                                 % (timeout, sig, self.stderr()))
        return rc, time.time() - t0


class Scope:
    """One test's cgroup subtree, policy directory and processes; closing it
    kills them, detaches the pins and removes the cgroups."""

    def __init__(self, c, name, pin=None):
        """PIN: a pin path of its own (a second node); default the run's."""
        self.c, self.env, self.name = c, c.env, name
        self.pin = pin or c.env.pin
        self.cg = os.path.join(c.env.cg_root, name)
        self.rel = c.env.cg_rel + "/" + name          # as /proc/PID/cgroup shows it
        self.agents = os.path.join(self.cg, "agents")
        os.makedirs(self.agents)
        self.poldir = c.env.path("policies-" + name)
        os.makedirs(self.poldir)
        self.procs = []
        self.ndaemons = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        run([SLUICE, "detach", "--pin-path", self.pin])
        remove_cgroup_tree(self.cg)
        return False

    def pattern(self, glob="*"):
        """cgroupPaths entry: a glob below the cgroup2 mount."""
        return (self.rel + "/agents/" + glob).lstrip("/")

    def cgroup(self, sub):
        p = os.path.join(self.agents, sub)
        os.makedirs(p, exist_ok=True)
        return p

    def policy(self, text, name="p.yaml"):
        path = os.path.join(self.poldir, name)
        write_atomic(path, text)
        return path

    def spawn_in(self, cg, argv, **kw):
        p = subprocess.Popen(["sh", "-c", ENTER, cg] + [str(a) for a in argv],
                             stdout=kw.pop("stdout", subprocess.PIPE),
                             stderr=kw.pop("stderr", subprocess.PIPE), text=True, **kw)
        self.procs.append(p)
        self.env.procs.append(p)
        return p

    def identities(self):
        return cli("identities", "--pin-path", self.pin, "-o", "json")

    def ident_cgroups(self):
        return {i["cgroup"] for i in self.identities()}


def loop_summary(p, timeout=20):
    out, err = p.communicate(timeout=timeout)
    lines = [l for l in out.splitlines() if l.startswith("{")]
    if not lines:
        raise AssertionError("no connect-loop summary: %r %r" % (out, err))
    return json.loads(lines[-1])


def prog_ids(status):
    return {x["name"]: (x.get("prog_id"), x.get("link_id"), x["attached"])
            for x in status["datapath"]["programs"]}


# ---------------------------------------------------------------- tests

@suite.test
def test_start_stop(c):
    with Scope(c, "startstop") as s:
        s.policy(policy_text("startstop", [s.pattern()], [c.allow.port]))
        a1 = s.cgroup("a1")
        d = Daemon(s)
        d.wait_ready()
        eq(http_get(d.port, "/readyz")[0], 200, "/readyz after start")
        st = d.status()
        eq(st["daemon"]["running"], True, "status: daemon running")
        eq(st["daemon"]["pid"], d.p.pid, "status: daemon pid")
        eq(st["datapath"]["loaded"], True, "status: datapath loaded")
        eq(len(st["datapath"]["programs"]) > 0, True, "status: programs listed")
        eq([p["name"] for p in st["datapath"]["programs"] if not p["attached"]], [],
           "status: programs not attached")
        running = prog_ids(st)
        assert_eperm(a1, c.deny.port, "governed connect while the daemon runs")
        assert_allowed(a1, c.allow.port, "allowed connect while the daemon runs")

        rc, took = d.stop()
        eq(rc, 0, "sluiced exit status on SIGTERM")
        if took > 3:
            raise AssertionError("SIGTERM took %.1fs" % took)
        eq(os.path.isdir(s.env.pin), True, "pins after SIGTERM")
        eq(os.path.exists(d.sock), False, "control socket removed on exit")
        assert_eperm(a1, c.deny.port, "governed connect after the daemon is gone")
        assert_allowed(a1, c.allow.port, "allowed connect after the daemon is gone")
        # the kernel still registers new matching cgroups at mkdir
        assert_eperm(s.cgroup("a2"), c.deny.port, "cgroup created after the daemon is gone")
        st = cli("status", "--socket", d.sock, "--pin-path", s.env.pin, "-o", "json")
        eq(st["daemon"]["running"], False, "status: daemon gone")
        eq(prog_ids(st), running, "programs and links after the daemon is gone")

        # --detach-on-exit: the next daemon adopts, then removes everything
        d2 = Daemon(s, ["--detach-on-exit"])
        d2.wait_ready()
        assert_eperm(a1, c.deny.port, "governed under the second daemon")
        rc, took = d2.stop()
        eq(rc, 0, "exit status with --detach-on-exit")
        eq(os.path.exists(s.env.pin), False, "pins after --detach-on-exit")
        assert_allowed(a1, c.deny.port, "connect after --detach-on-exit")


@suite.test
def test_policy_lifecycle(c):
    with Scope(c, "lifecycle") as s:
        a1 = s.cgroup("a1")
        rel_a1 = s.rel + "/agents/a1"
        d = Daemon(s)
        d.wait_ready()
        assert_allowed(a1, c.deny.port, "no policy: not governed")
        path = os.path.join(s.poldir, "agent.yaml")

        # added
        write_atomic(path, policy_text("lifecycle", [s.pattern()], [c.allow.port]))
        poll(lambda: connect(a1, c.deny.port)["errname"] == "EPERM", 2, "policy added")
        assert_allowed(a1, c.allow.port, "added: allowed port")
        assert_eperm(a1, c.allow2.port, "added: other port")
        eq(rel_a1 in s.ident_cgroups(), True, "identity of a1")

        # changed: allow2 instead of allow
        write_atomic(path, policy_text("lifecycle", [s.pattern()], [c.allow2.port]))
        poll(lambda: connect(a1, c.allow2.port)["ret"] == 0, 2, "policy changed")
        assert_eperm(a1, c.allow.port, "changed: the old port")
        assert_eperm(a1, c.deny.port, "changed: denied port")

        # invalid: line 10, the port's value
        bad = policy_text("lifecycle", [s.pattern()], [c.allow.port]).replace(
            "port: %d" % c.allow.port, "port: 70000")
        write_atomic(path, bad)

        def errored():
            files = cli("policies", "--socket", d.sock, "-o", "json")["files"]
            f = [x for x in files if x["file"] == "agent.yaml"]
            return f and f[0]["state"] == "error-kept-last-good" and f[0]
        f = poll(errored, 2, "state error-kept-last-good")
        if not re.search(r"agent\.yaml:10:\d+: .*70000", f.get("errors") or ""):
            raise AssertionError("errors without FILE:LINE:COL position: %r" % f.get("errors"))
        eq([p["name"] for p in f["policies"]], ["itest/lifecycle"], "last good policies listed")
        assert_allowed(a1, c.allow2.port, "invalid: last good rules still allow")
        assert_eperm(a1, c.allow.port, "invalid: the invalid version does not apply")
        assert_eperm(a1, c.deny.port, "invalid: still denied")
        table = cli("policies", "--socket", d.sock)
        if "error-kept-last-good" not in table or "agent.yaml:10:" not in table:
            raise AssertionError("policies table:\n" + table)

        # the same policy in a second file is refused, not merged
        dup = os.path.join(s.poldir, "copy.yaml")
        write_atomic(dup, policy_text("lifecycle", [s.pattern()], [c.deny.port]))

        def dup_refused():
            files = cli("policies", "--socket", d.sock, "-o", "json")["files"]
            f = [x for x in files if x["file"] == "copy.yaml"]
            return f and f[0]["state"] == "error" and f[0]
        f = poll(dup_refused, 2, "duplicate refused")
        if "already defined in agent.yaml" not in (f.get("errors") or ""):
            raise AssertionError(f)
        assert_eperm(a1, c.deny.port, "duplicate: its rules do not apply")
        os.unlink(dup)

        # an editor's save: moved away, written again a moment later
        os.rename(path, path + ".swp")
        time.sleep(0.1)
        assert_eperm(a1, c.deny.port, "mid-save: still governed")
        os.rename(path + ".swp", path)
        time.sleep(0.5)
        assert_eperm(a1, c.deny.port, "after the save: governed")
        assert_allowed(a1, c.allow2.port, "after the save: allowed port")

        # removed
        os.unlink(path)
        poll(lambda: connect(a1, c.deny.port)["ret"] == 0, 2, "policy removed")
        poll(lambda: rel_a1 not in s.ident_cgroups(), 2, "identity of a1 gone")
        eq(cli("policies", "--socket", d.sock, "-o", "json")["files"], [], "policy files")
        eq(d.p.poll(), None, "daemon still running")


PATCH_POLICY = """\
apiVersion: sluice.dev/v1alpha1
kind: AgentPolicy
metadata: {{name: patch, namespace: itest}}
spec:
  selector: {{cgroupPaths: ["{pattern}"]}}
{mode}  egress:
    - name: {llm}
      class: llm
      to: [{{cidr: {near}}}]
      ports: [{{port: {allow}, protocol: TCP}}]
    - name: net
      class: tool
      to: [{{cidr: {far}}}]
      ports: [{{port: {allow2}, protocol: TCP}}]
"""


@suite.test
def test_policy_change_patched_in_place(c):
    """A change that keeps the rules' names is written into the set in
    force (same set id, only the difference): connects running meanwhile
    never see a verdict of neither version. A renamed rule makes a new set
    (the old id keeps naming the old rule)."""
    with Scope(c, "patch") as s:
        p1 = s.cgroup("p1")
        rel = s.rel + "/agents/p1"

        def text(near, far, llm="llm", mode=""):
            return PATCH_POLICY.format(pattern=s.pattern(), llm=llm, near=near, far=far,
                                       mode="  mode: %s\n" % mode if mode else "",
                                       allow=c.allow.port, allow2=c.allow2.port)
        # 127.0.0.1's longest prefix moves between /32 and /24 and the
        # covering rule between /8 and /16: written in the wrong order,
        # the allowed port would fall to "net" (another port) for a moment
        va, vb = text("127.0.0.1/32", "127.0.0.0/8"), text("127.0.0.0/24", "127.0.0.0/16")
        path = s.policy(va)
        d = Daemon(s)
        d.wait_ready()
        assert_allowed(p1, c.allow.port, "first version: llm")
        assert_allowed(p1, c.allow2.port, "first version: net")
        assert_eperm(p1, c.deny.port, "first version: other port")

        def ident():
            ids = [i for i in s.identities() if i["cgroup"] == rel]
            eq(len(ids), 1, "identity of p1")
            return ids[0]["set_id"]

        def updates(how):
            ms, _ = d.metrics()
            return prom_value(ms, "sluice_policy_set_updates_total", how=how) or 0
        set0 = ident()
        stop = s.env.path("patch-stop")
        ok_loop = s.spawn_in(p1, [PROBE, "connect-loop", "127.0.0.1", c.allow.port,
                                  "--until-file", stop])
        deny_loop = s.spawn_in(p1, [PROBE, "connect-loop", "127.0.0.1", c.deny.port,
                                    "--until-file", stop, "--expect-deny"])
        n = 40
        for i in range(n):
            write_atomic(path, vb if i % 2 == 0 else va)
            poll(lambda: updates("patch") >= i + 1, 5, "patch %d applied" % (i + 1))
        with open(stop, "w"):
            pass
        ok, deny = loop_summary(ok_loop), loop_summary(deny_loop)
        eq((ok["eperm"], ok["other"]), (0, 0), "allowed port refused during patches")
        eq((deny["ok"], deny["other"]), (0, 0), "denied port let through during patches")
        if ok["ok"] < 50 or deny["eperm"] < 500:
            raise AssertionError("the loops did too little: %r %r" % (ok, deny))
        eq(ident(), set0, "the set in force was patched, not replaced")
        eq(updates("replace"), 0, "replacements")
        # the last version is in force (va: n is even)
        ex = cli("explain", "--pin-path", s.pin, "--cgroup", rel, "-o", "json",
                 "127.0.0.2:%d" % c.allow2.port)
        eq((ex["results"][0]["verdict"], ex["results"][0]["rule"]), ("allow", "net"),
           "127.0.0.0/8 after the last change")
        write_atomic(path, vb)
        poll(lambda: updates("patch") >= n + 1, 5, "patch to vb")
        ex = cli("explain", "--pin-path", s.pin, "--cgroup", rel, "-o", "json",
                 "127.0.0.2:%d" % c.allow.port)
        eq((ex["results"][0]["verdict"], ex["results"][0]["rule"]), ("allow", "llm"),
           "127.0.0.0/24 written in place")
        ex = cli("explain", "--pin-path", s.pin, "--cgroup", rel, "-o", "json",
                 "127.1.0.1:%d" % c.allow2.port)
        eq(ex["results"][0]["verdict"], "deny", "127.0.0.0/8 gone")

        # the same rules in audit mode: the mode lives in the identity, so
        # a new set flips with it in one update (never rules of one mode
        # under the other)
        write_atomic(path, text("127.0.0.0/24", "127.0.0.0/16", mode="audit"))
        poll(lambda: updates("replace") >= 1, 5, "replacement for the mode change")
        set1 = poll(lambda: ident() != set0 and ident(), 5, "identity flipped to the audit set")
        eq(connect(p1, c.deny.port)["ret"], 0, "audit mode refuses nothing")
        eq(updates("patch"), n + 1, "a mode change is never patched")
        # and back to enforce, the names still kept
        write_atomic(path, text("127.0.0.0/24", "127.0.0.0/16"))
        poll(lambda: updates("replace") >= 2, 5, "replacement for the mode change back")
        set2 = poll(lambda: ident() not in (set0, set1) and ident(), 5,
                    "identity flipped to the enforce set")
        assert_eperm(p1, c.deny.port, "enforce mode again")
        eq(updates("patch"), n + 1, "the change back is not patched either")

        # a renamed rule: a new set, named by its new names
        write_atomic(path, text("127.0.0.0/24", "127.0.0.0/16", llm="llm-v2"))
        poll(lambda: updates("replace") >= 3, 5, "replacement")
        poll(lambda: ident() not in (set0, set1, set2), 5, "identity flipped to the new set")
        ex = cli("explain", "--pin-path", s.pin, "--cgroup", rel, "-o", "json",
                 "127.0.0.1:%d" % c.allow.port)
        eq((ex["results"][0]["verdict"], ex["results"][0]["rule"]), ("allow", "llm-v2"),
           "renamed rule")
        assert_allowed(p1, c.allow.port, "after the replacement")
        eq(d.stop()[0], 0, "daemon exit")


@suite.test
def test_new_cgroups_governed_from_first_connect(c):
    with Scope(c, "mkdir") as s:
        s.policy(policy_text("mkdir", [s.pattern("coding-*")], [c.allow.port]))
        d = Daemon(s)
        d.wait_ready()
        before = len(s.identities())
        escapes, others_denied = [], []
        for i in range(120):
            # The second half with the daemon stopped: the kernel alone
            # registers the new cgroups (at mkdir, before any process).
            if i == 60:
                d.p.send_signal(signal.SIGSTOP)
            cg = os.path.join(s.agents, "coding-%d" % i)
            os.mkdir(cg)
            r = connect(cg, c.deny.port)
            if r["errname"] != "EPERM":
                escapes.append((i, r["ret"], r["errname"]))
            if i % 12 == 0:
                other = os.path.join(s.agents, "other-%d" % i)
                os.mkdir(other)
                r = connect(other, c.deny.port)
                if r["ret"] != 0:
                    others_denied.append((i, r["errname"]))
        d.p.send_signal(signal.SIGCONT)
        eq(escapes, [], "new coding-* cgroups whose first connect was not refused")
        eq(others_denied, [], "non-matching siblings refused")
        # a matching cgroup allows what the policy allows
        assert_allowed(os.path.join(s.agents, "coding-0"), c.allow.port, "allowed port")
        got = poll(lambda: (lambda ids: ids if len([x for x in ids if "/coding-" in x]) == 120
                            else None)(s.ident_cgroups()), 3, "120 identities")
        eq([x for x in got if "/other-" in x], [], "identities of non-matching siblings")

        for name in os.listdir(s.agents):
            remove_cgroup_tree(os.path.join(s.agents, name))
        poll(lambda: len(s.identities()) == before, 3,
             "identities back to %d after the cgroups are removed" % before)
        ms, _ = d.metrics()
        eq(prom_value(ms, "sluice_identities"), float(before), "sluice_identities")


@suite.test
def test_sigkill_mid_loop_then_adopt(c):
    with Scope(c, "sigkill") as s:
        s.policy(policy_text("sigkill", [s.pattern()], [c.allow.port]))
        k1 = s.cgroup("k1")
        d = Daemon(s)
        d.wait_ready()
        assert_eperm(k1, c.deny.port, "governed before")
        before = d.status()
        stop = s.env.path("sigkill-stop")
        loop = s.spawn_in(k1, [PROBE, "connect-loop", "127.0.0.1", c.deny.port,
                               "--until-file", stop, "--expect-deny"])
        base = before["counters"]["total"]["deny"]
        poll(lambda: cli("status", "--pin-path", s.env.pin, "-o", "json")
             ["counters"]["total"]["deny"] > base + 100, 5, "the loop running")
        rc, _ = d.stop(signal.SIGKILL)
        eq(rc, -signal.SIGKILL, "killed")
        time.sleep(0.3)
        eq(loop.poll(), None, "loop still running without a daemon")
        # same pin path, policy directory and control socket (left behind)
        d2 = Daemon(s, sock=d.sock)
        d2.wait_ready()
        time.sleep(0.3)
        with open(stop, "w"):
            pass
        res = loop_summary(loop)
        eq(res["ok"], 0, "denied connects that got through")
        eq(res["other"], 0, "other errors")
        if res["eperm"] < 200:
            raise AssertionError("the loop did too little: %r" % res)
        after = d2.status()
        eq(after["daemon"]["pid"], d2.p.pid, "status: the new daemon")
        eq(prog_ids(after), prog_ids(before), "programs and links across SIGKILL + restart")
        assert_eperm(k1, c.deny.port, "governed after")
        assert_allowed(k1, c.allow.port, "allowed after")
        eq(d2.stop()[0], 0, "second daemon exit")


@suite.test
def test_metrics(c):
    with Scope(c, "metrics") as s:
        s.policy(policy_text("metrics", [s.pattern()], [c.allow.port]))
        m1 = s.cgroup("m1")
        d = Daemon(s)
        d.wait_ready()
        assert_eperm(m1, c.deny.port, "deny")
        assert_allowed(m1, c.allow.port, "allow")

        def scraped():
            ms, types = d.metrics()
            deny = prom_value(ms, "sluice_verdicts_total", policy="itest/metrics",
                              rule="default-deny", verdict="deny")
            allow = prom_value(ms, "sluice_verdicts_total", policy="itest/metrics",
                               rule="llm", **{"class": "llm"}, verdict="allow")
            return deny and allow and (ms, types)
        ms, types = poll(scraped, 3, "verdict samples of the deny and the allow")
        for name, _, _ in ms:
            if name not in types:
                raise AssertionError("sample %s without # TYPE" % name)
        eq(types.get("sluice_verdicts_total"), "counter", "verdicts type")
        if (prom_value(ms, "sluice_identities") or 0) < 1:
            raise AssertionError("sluice_identities %r" % prom_value(ms, "sluice_identities"))
        reasons = {l.get("reason") for n, l, _ in ms if n == "sluice_events_lost_total"}
        for r in ("ring_full", "no_reader", "sink_full"):
            if r not in reasons:
                raise AssertionError("sluice_events_lost_total lacks reason %s: %s" % (r, reasons))
        info = [(l, v) for n, l, v in ms if n == "sluice_build_info"]
        eq(len(info), 1, "sluice_build_info samples")
        eq(info[0][1], 1.0, "sluice_build_info value")
        ver = cli("version").split()[-1]
        eq(info[0][0].get("version"), ver, "sluice_build_info version")
        eq(http_get(d.port, "/healthz")[0], 200, "/healthz")
        eq(http_get(d.port, "/readyz")[0], 200, "/readyz")
        eq(http_get(d.port, "/nope")[0], 404, "unknown path")


@suite.test
def test_event_file_rotation(c):
    with Scope(c, "rotate") as s:
        s.policy(policy_text("rotate", [s.pattern()], [c.allow.port]))
        r1 = s.cgroup("r1")
        ev = s.env.path("rotate-events.jsonl")
        d = Daemon(s, ["--events", ev, "--events-max-size", "4K", "--events-keep", "2"])
        d.wait_ready()
        p = s.spawn_in(r1, [PROBE, "connect-loop", "127.0.0.1", c.deny.port, "--count", "400",
                            "--expect-deny"])
        res = loop_summary(p)
        eq((res["ok"], res["eperm"]), (0, 400), "loop")
        poll(lambda: (prom_value(d.metrics()[0], "sluice_events_read_total") or 0) >= 400, 5,
             "400 events read")
        eq(d.stop()[0], 0, "exit")
        files = sorted(f for f in os.listdir(s.env.tmp) if f.startswith("rotate-events.jsonl"))
        eq(files, ["rotate-events.jsonl", "rotate-events.jsonl.1", "rotate-events.jsonl.2"],
           "event files")
        for f in files:
            data = open(os.path.join(s.env.tmp, f)).read()
            if len(data) > 4096:
                raise AssertionError("%s: %d bytes > 4K" % (f, len(data)))
            if f != files[0] and not data:
                raise AssertionError("%s is empty" % f)
            if data and not data.endswith("\n"):
                raise AssertionError("%s ends mid-line" % f)
            for i, line in enumerate(data.splitlines()):
                try:
                    e = json.loads(line)
                except ValueError:
                    raise AssertionError("%s:%d: not JSON: %r" % (f, i + 1, line))
                eq(e["type"], "connect", "%s:%d type" % (f, i + 1))
                eq(e["verdict"], "deny", "%s:%d verdict" % (f, i + 1))


@suite.test
def test_stalled_stdout_sink(c):
    with Scope(c, "stall") as s:
        s.policy(policy_text("stall", [s.pattern()], [c.allow.port]))
        g = s.cgroup("g1")
        d = Daemon(s, ["--events", "-"], stdout=subprocess.PIPE)   # never read until the end
        d.wait_ready()
        count = 40000     # about 16 MB of records: the pipe and the 8 MB queue fill up
        p = s.spawn_in(g, [PROBE, "connect-loop", "127.0.0.1", c.deny.port, "--count", count,
                           "--expect-deny"])
        slowest = 0.0
        while p.poll() is None or slowest == 0.0:
            t0 = time.time()
            st = d.status(timeout=2)
            eq(st["daemon"]["running"], True, "status: daemon answers")
            d.metrics(timeout=2)
            slowest = max(slowest, time.time() - t0)
            time.sleep(0.05)
        res = loop_summary(p)
        eq((res["ok"], res["other"], res["eperm"]), (0, 0, count), "loop under a stalled sink")

        def lost():
            ms, _ = d.metrics(timeout=2)
            v = prom_value(ms, "sluice_events_lost_total", reason="sink_full")
            return v and v > 0 and v
        poll(lost, 10, "sluice_events_lost_total{reason=\"sink_full\"} > 0")
        for _ in range(3):
            t0 = time.time()
            eq(d.status(timeout=2)["daemon"]["running"], True, "status under a full sink")
            d.metrics(timeout=2)
            assert_eperm(g, c.deny.port, "still enforcing with a full sink")
            slowest = max(slowest, time.time() - t0)
        if slowest > 2:
            raise AssertionError("status + metrics took %.2fs" % slowest)

        def all_read():   # the loop's records and the 3 probes', read or lost at the ring
            ms, _ = d.metrics()
            read = prom_value(ms, "sluice_events_read_total")
            full = prom_value(ms, "sluice_events_lost_total", reason="ring_full")
            return read + full == count + 3 and (ms, read)
        ms, read = poll(all_read, 5, "every record read or counted lost")
        dropped = prom_value(ms, "sluice_events_lost_total", reason="sink_full")
        # now read the pipe: whole JSON lines only
        d.p.send_signal(signal.SIGTERM)
        out, _ = d.p.communicate(timeout=15)
        eq(d.p.returncode, 0, "exit")
        lines = out.decode().split("\n")
        eq(lines[-1], "", "output ends with a newline")
        for i, line in enumerate(lines[:-1]):
            try:
                json.loads(line)
            except ValueError:
                raise AssertionError("line %d is not whole JSON: %r" % (i + 1, line[:200]))
        # every record read is either written whole or counted as dropped
        eq(len(lines) - 1 + dropped, read, "lines written + dropped (sink_full) vs records read")


@suite.test
def test_cli_against_daemon(c):
    with Scope(c, "cli") as s:
        s.policy(policy_text("cli", [s.pattern()], [c.allow.port]), "cli.yaml")
        c1 = s.cgroup("c1")
        rel = s.rel + "/agents/c1"
        d = Daemon(s)
        d.wait_ready()
        den = assert_eperm(c1, c.deny.port, "deny")
        assert_allowed(c1, c.allow.port, "allow")
        sock, pin = d.sock, s.env.pin

        # a control request must never be lost: ask many times in a row
        fails = []
        for i in range(30):
            p = run([SLUICE, "policies", "--socket", sock, "-o", "json"])
            if p.returncode != 0 or not p.stdout.startswith("{"):
                fails.append((i, p.returncode, p.stdout[:80], p.stderr[:200]))
        eq(fails, [], "failed `sluice policies` calls out of 30 (attempt, exit, stdout, stderr)")

        # status
        st = cli("status", "--socket", sock, "--pin-path", pin, "-o", "json")
        eq((st["daemon"]["running"], st["daemon"]["pid"]), (True, d.p.pid), "status json daemon")
        eq(st["daemon"]["policy_dir"], s.poldir, "status json policy_dir")
        t = cli("status", "--socket", sock, "--pin-path", pin)
        if "Daemon:     sluiced pid %d" % d.p.pid not in t or rel not in t:
            raise AssertionError("status table:\n" + t)

        # identities
        ids = [i for i in cli("identities", "--pin-path", pin, "-o", "json") if i["cgroup"] == rel]
        eq(len(ids), 1, "identity of c1")
        eq((ids[0]["policies"], ids[0]["registered_by"], ids[0]["mode"]),
           ("itest/cli", "sluiced", "enforce"), "identity fields")
        t = cli("identities", "--pin-path", pin)
        if not re.search(re.escape(rel) + r"\s.*sluiced\s+itest/cli", t):
            raise AssertionError("identities table:\n" + t)

        # policies
        pj = cli("policies", "--socket", sock, "-o", "json")
        eq(pj["policy_dir"], s.poldir, "policy_dir")
        eq([(f["file"], f["state"], [x["name"] for x in f["policies"]]) for f in pj["files"]],
           [("cli.yaml", "ok", ["itest/cli"])], "policy files")
        t = cli("policies", "--socket", sock)
        if not re.search(r"cli\.yaml\s+ok\s+itest/cli\s+enforce\s+1\s+" + re.escape(s.pattern()),
                         t):
            raise AssertionError("policies table:\n" + t)

        # flows
        def flow_of(pid):
            fl = [json.loads(l) for l in cli("flows", "--socket", sock, "-o", "json").splitlines()]
            m = [e for e in fl if e.get("process") and e["process"]["pid"] == pid]
            return m and m[0]
        e = poll(lambda: flow_of(den["pid"]), 2, "flow of the denied connect")
        eq((e["type"], e["verdict"], e["rule"], e["dst"], e["workload"]["cgroup"]),
           ("connect", "deny", "default-deny", "127.0.0.1:%d" % c.deny.port, rel), "flow")
        t = cli("flows", "--socket", sock)
        if not re.search(r"connect\s+deny\s+127\.0\.0\.1:%d\s+default-deny\s+%d\s+sockprobe\s+%s"
                         % (c.deny.port, den["pid"], re.escape(rel)), t):
            raise AssertionError("flows table:\n" + t)

        # flows --follow gets a new event within 2 s
        f = subprocess.Popen([SLUICE, "flows", "--follow", "--socket", sock, "-o", "json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        s.procs.append(f)
        s.env.procs.append(f)
        got = []
        threading.Thread(target=lambda: [got.append(l) for l in f.stdout], daemon=True).start()
        wait_for(lambda: any('"pid":%d,' % den["pid"] in l for l in got), 5, "the backlog")
        t0 = time.time()
        new = assert_eperm(c1, c.deny.port, "a new deny")
        wait_for(lambda: any('"pid":%d,' % new["pid"] in l for l in got), 2,
                 "the new event in flows --follow")
        if time.time() - t0 > 2:
            raise AssertionError("follow took %.2fs" % (time.time() - t0))
        e = [json.loads(l) for l in got if '"pid":%d,' % new["pid"] in l][0]
        eq((e["verdict"], e["dst"]), ("deny", "127.0.0.1:%d" % c.deny.port), "followed event")
        eq(f.poll(), None, "follow still running")
        f.kill()
        f.wait(5)

        # explain
        ex = cli("explain", "--pin-path", pin, "--cgroup", rel, "-o", "json",
                 "127.0.0.1:%d" % c.deny.port)
        eq((ex["governed"], ex["identity_cgroup"], ex["policies"]), (True, rel, "itest/cli"),
           "explain governed")
        eq((ex["results"][0]["verdict"], ex["results"][0]["rule"]), ("deny", "default-deny"),
           "explain deny")
        t = cli("explain", "--pin-path", pin, "--cgroup", rel, "127.0.0.1:%d" % c.allow.port)
        if "allow by rule llm of policy itest/cli (class llm)" not in t:
            raise AssertionError("explain table:\n" + t)

        # no daemon: clear message, non-zero exit
        missing = s.env.path("no-such.sock")
        for cmd in (["policies"], ["flows"], ["policies", "-o", "json"]):
            p = run([SLUICE] + cmd + ["--socket", missing])
            if p.returncode == 0:
                raise AssertionError("sluice %s without a daemon: exit 0" % cmd)
            msg = p.stdout + p.stderr
            if "no sluiced answers on %s" % missing not in msg or "is it running" not in msg:
                raise AssertionError("sluice %s without a daemon: %r" % (cmd, msg))
            if "json" in cmd and "error" not in json.loads(p.stdout):
                raise AssertionError("json error: %r" % p.stdout)
        t = cli("status", "--socket", missing, "--pin-path", pin)
        if "not running (no answer on %s)" % missing not in t:
            raise AssertionError("status without the daemon:\n" + t)


@suite.test
def test_run_while_daemon_down_keeps_its_sets(c):
    """sluice run cleans up orphans of dead runs, never the daemon's state."""
    with Scope(c, "rundown") as s:
        s.policy(policy_text("rundown", [s.pattern()], [c.allow.port]))
        busy, empty = s.cgroup("busy"), s.cgroup("empty")
        d = Daemon(s)
        d.wait_ready()
        holder = s.spawn_in(busy, ["sleep", "30"])
        rc, _ = d.stop(signal.SIGKILL)
        eq(rc, -signal.SIGKILL, "killed")
        r = subprocess.run([SLUICE, "run", "--pin-path", s.env.pin, "--cgroup-root", s.cg,
                            "--", "true"], capture_output=True, text=True, timeout=30)
        eq(r.returncode, 0, "sluice run (stderr %s)" % r.stderr)
        assert_allowed(busy, c.allow.port, "the daemon's allow, daemon down, after a run")
        assert_eperm(busy, c.deny.port, "the daemon's deny, daemon down, after a run")
        assert_allowed(empty, c.allow.port, "an empty governed cgroup keeps its policy")
        holder.kill()


def build_variant(c):
    """A second build of sluiced whose sockops program differs by a few
    instructions: what a new release looks like to the running datapath."""
    tree = c.env.path("variant")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if f.startswith(("bpf/", "include/", "user/", "vmlinux/")) or f == "Makefile":
            dst = os.path.join(tree, f)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(os.path.join(REPO, f), "rb") as a, open(dst, "wb") as b:
                b.write(a.read())
    src = os.path.join(tree, "bpf", "sluice.bpf.c")
    text = open(src).read()
    marker = "\tcase BPF_SOCK_OPS_TCP_LISTEN_CB:\n\t\tsl_ops_listen(ctx);\n\t\tbreak;\n\t}\n\treturn 1;"
    if marker not in text:
        raise AssertionError("sockops epilogue not found to patch")
    open(src, "w").write(text.replace(marker, marker.replace(
        "return 1;", "if (ctx->op == 0xbeef)\n\t\tsl_count(0, SL_CNT_TAG_FAIL);\n\treturn 1;")))
    subprocess.run(["make", "-s", "-j2", "build/sluiced"], cwd=tree, check=True,
                   stdout=subprocess.DEVNULL, timeout=600)
    return os.path.join(tree, "build", "sluiced")


@suite.test
def test_upgrade_replaces_programs_in_place(c):
    variant = build_variant(c)
    with Scope(c, "upgrade") as s:
        s.policy(policy_text("upgrade", [s.pattern()], [c.allow.port]))
        u1 = s.cgroup("u1")
        d = Daemon(s)
        d.wait_ready()
        before = prog_ids(d.status())
        eq(d.stop()[0], 0, "first daemon exit")
        stop = s.env.path("upgrade-stop")
        loop = s.spawn_in(u1, [PROBE, "connect-loop", "127.0.0.1", c.deny.port,
                               "--until-file", stop, "--expect-deny"])
        d2 = Daemon(s, sock=d.sock, binary=variant)
        d2.wait_ready()
        with open(stop, "w"):
            pass
        res = loop_summary(loop)
        eq(res["ok"], 0, "denied connects that got through during the upgrade")
        after = prog_ids(d2.status())
        for name, (pid, lid, attached) in after.items():
            eq(attached, True, name + " attached")
            eq(lid, before[name][1], name + ": the same link (never detached)")
        if after["sockops"][0] == before["sockops"][0]:
            raise AssertionError("sockops program not replaced: %r" % after["sockops"])
        eq(after["connect4"][0], before["connect4"][0], "unchanged programs stay")
        if "replaced program sockops in place" not in d2.stderr():
            raise AssertionError(d2.stderr())
        assert_eperm(u1, c.deny.port, "governed after the upgrade")
        assert_allowed(u1, c.allow.port, "allowed after the upgrade")
        eq(d2.stop()[0], 0, "upgraded daemon exit")


if __name__ == "__main__":
    sys.exit(suite.main(Ctx))
