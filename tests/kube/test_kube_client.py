#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""user/kube.c end to end against the test API server (tests/kube/apiserver.py).

    python3 tests/kube/test_kube_client.py [-v] [TestClass[.test_name]]

tests/kube/kubewatch.c (built here with ASan and UBSan against user/kube.c)
runs the client from an epoll loop as sluiced does and prints every callback
as a JSON line. The tests rebuild a consumer's cache from those lines
(on_reset ... ADDED ... on_synced drops what was not re-ADDED) and compare
it with the server's objects: after faults there must be nothing lost, no
event twice, and no relist unless the resourceVersion really expired.
Stdlib only; no root; 127.0.0.1 only. Each test gets its own server.
"""
import base64
import json
import os
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from kubetest import FIXTURES, ApiServer, pod, service  # noqa: E402

KUBEWATCH = os.path.join(REPO, "build", "kube", "kubewatch")
# kube.c reports errors through log.c's log__errf
SOURCES = [os.path.join(HERE, "kubewatch.c"), os.path.join(REPO, "user", "kube.c"),
           os.path.join(REPO, "user", "log.c"), os.path.join(REPO, "user", "kube.h"),
           os.path.join(REPO, "user", "log.h")]
PODS = "/api/v1/pods"
FAST = ["--stall-ms", "1000", "--backoff-base-ms", "100", "--backoff-max-ms", "1000"]


def build():
    if os.path.exists(KUBEWATCH) and all(os.path.getmtime(s) <= os.path.getmtime(KUBEWATCH)
                                         for s in SOURCES):
        return
    os.makedirs(os.path.dirname(KUBEWATCH), exist_ok=True)
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libcurl", "libcjson",
                            "yaml-0.1", "libbpf"], check=True, stdout=subprocess.PIPE,
                           text=True).stdout.split()
    subprocess.run(["gcc", "-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                    "-fno-sanitize-recover=all", "-Wall", "-Wextra", "-Werror",
                    "-Wno-unused-parameter", "-Wshadow", "-Wformat=2", "-Wno-format-truncation",
                    "-D_GNU_SOURCE", "-I" + os.path.join(REPO, "user"), SOURCES[0], SOURCES[1],
                    SOURCES[2], "-o", KUBEWATCH] + flags, check=True)


def write_kubeconfig(path, server, token=None, token_file=None, ca=None, ca_data=None,
                     insecure=False):
    cluster = {"server": server.url}
    if ca:
        cluster["certificate-authority"] = ca
    if ca_data:
        cluster["certificate-authority-data"] = base64.b64encode(ca_data).decode()
    if insecure:
        cluster["insecure-skip-tls-verify"] = True
    user = {}
    if token:
        user["token"] = token
    if token_file:
        user["tokenFile"] = token_file
    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "t",
           "clusters": [{"name": "c", "cluster": cluster}],
           "users": [{"name": "u", "user": user}],
           "contexts": [{"name": "t", "context": {"cluster": "c", "user": "u"}}]}
    with open(path, "w") as f:
        json.dump(cfg, f)      # JSON is YAML
    return path


class Watcher:
    """A kubewatch process and the JSON lines it printed."""

    def __init__(self, argv, env=None):
        self.lines = []
        self.cv = threading.Condition()
        self.stderr_path = os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                        "kubewatch.%d.%d.log" % (os.getpid(), id(self)))
        self.stderr = open(self.stderr_path, "w+")
        e = dict(os.environ)
        e.update(env or {})
        e.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        e.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        self.proc = subprocess.Popen([KUBEWATCH] + argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, env=e)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.wait(lambda l: l["cb"] in ("ready", "fatal"), what="ready")
        if self.lines[-1]["cb"] == "fatal":
            raise AssertionError("kubewatch: %s" % self.lines[-1]["msg"])

    def _read(self):
        for raw in self.proc.stdout:
            try:
                l = json.loads(raw)
            except ValueError:
                l = {"cb": "garbage", "raw": raw.decode(errors="replace")}
            with self.cv:
                l["t"] = time.monotonic()
                self.lines.append(l)
                self.cv.notify_all()

    def wait(self, pred, n=1, timeout=15, what="line", start=0):
        """The first n lines from START matching PRED."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                hit = [l for l in self.lines[start:] if pred(l)]
                if len(hit) >= n:
                    return hit
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.reader.is_alive()):
                    raise AssertionError("no %d x %s in:\n%s\nstderr: %s" % (
                        n, what, "\n".join(json.dumps(l) for l in self.lines[start:]),
                        self.stderr_text()))
                self.cv.wait(min(left, 0.2))

    def mark(self):
        with self.cv:
            return len(self.lines)

    def count(self, pred, start=0):
        with self.cv:
            return len([l for l in self.lines[start:] if pred(l)])

    def send(self, cmd):
        self.proc.stdin.write((cmd + "\n").encode())
        self.proc.stdin.flush()

    def stats(self):
        m = self.mark()
        self.send("stats")
        return self.wait(lambda l: l["cb"] == "stats", start=m, what="stats")[0]

    def request(self, rid, method, path, body=None):
        m = self.mark()
        self.send("request %d %s %s%s" % (rid, method, path,
                                          " " + json.dumps(body) if body is not None else ""))
        return self.wait(lambda l: l["cb"] == "done" and l["id"] == rid, start=m,
                         what="done %d" % rid)[0]

    def state(self, w=0):
        """The consumer's cache: {(ns, name): rv}."""
        cache, seen, listing = {}, set(), False
        with self.cv:
            lines = [l for l in self.lines if l.get("w") == w]
        for l in lines:
            if l["cb"] == "reset":
                seen, listing = set(), True
            elif l["cb"] == "event":
                key = (l["ns"], l["name"])
                if l["type"] == "DELETED":
                    cache.pop(key, None)
                else:
                    cache[key] = l["rv"]
                if listing:
                    seen.add(key)
            elif l["cb"] == "synced":
                for key in [k for k in cache if k not in seen]:
                    del cache[key]
                listing = False
        return cache

    def watch_events(self, w=0):
        """Events after the first sync, in order, without list items."""
        out, listing = [], False
        with self.cv:
            lines = [l for l in self.lines if l.get("w") == w]
        for l in lines:
            if l["cb"] == "reset":
                listing = True
            elif l["cb"] == "synced":
                listing = False
            elif l["cb"] == "event" and not listing:
                out.append(l)
        return out

    def stderr_text(self):
        try:
            with open(self.stderr_path) as f:
                return f.read()
        except OSError:
            return ""

    def close(self):
        """Stdin EOF: kube__free and exit 0, with no sanitizer report."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            rc = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = "timeout"
        self.reader.join(5)
        self.proc.stdout.close()
        err = self.stderr_text()
        self.stderr.close()
        os.unlink(self.stderr_path)
        if rc != 0 or "Sanitizer" in err or "runtime error" in err:
            raise AssertionError("kubewatch exited %s:\n%s" % (rc, err))

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except (OSError, ValueError):
                pass


def server_state(srv, resource="pods", pred=None):
    return {(o["metadata"].get("namespace"), o["metadata"]["name"]): o["metadata"]["resourceVersion"]
            for o in srv.objects(resource) if pred is None or pred(o)}


class Base(unittest.TestCase):
    server_kw = {"fixtures": FIXTURES}

    @classmethod
    def setUpClass(cls):
        build()

    def setUp(self):
        self.srv = ApiServer(**self.server_kw).start()
        self.watchers = []
        self.kubeconfig = self.srv.kubeconfig

    def tearDown(self):
        failed = False
        for w in self.watchers:
            try:
                w.close()
            except AssertionError:
                w.kill()
                failed = True
                raise
            finally:
                if failed:
                    sys.stderr.write(self.srv.log())
        self.srv.close()

    def watcher(self, *argv, kubeconfig=None, env=None):
        args = list(argv)
        if "--incluster" not in args:
            args = ["--kubeconfig", kubeconfig or self.kubeconfig] + args
        w = Watcher(args, env=env)
        self.watchers.append(w)
        return w

    def synced(self, w, n=1, start=0, timeout=15):
        return w.wait(lambda l: l["cb"] == "synced", n=n, start=start, timeout=timeout,
                      what="synced")

    def assert_converges(self, w, resource="pods", pred=None, timeout=10, wi=0):
        deadline = time.monotonic() + timeout
        while True:
            want = server_state(self.srv, resource, pred)
            got = w.state(wi)
            if got == want:
                return want
            if time.monotonic() > deadline:
                self.assertEqual(got, want)
            time.sleep(0.05)

    def assert_no_dup_no_gap(self, w, wi=0):
        """Watch events come in resourceVersion order, each once."""
        rvs = [int(l["rv"]) for l in w.watch_events(wi)]
        self.assertEqual(rvs, sorted(set(rvs)), "watch events repeated or out of order")

    def lists(self, since=0):
        return [r for r in self.srv.requests(since, resource="pods") if not r["watch"]
                and r["method"] == "GET"]

    def pod_watches(self, since=0):
        return [r for r in self.srv.requests(since, resource="pods") if r["watch"]]


# --------------------------------------------------------------------------

class ListWatch(Base):
    def test_chunked_list_then_watch(self):
        for i in range(6):
            self.srv.apply(pod("extra-%d" % i, "agents", node="node-b"))
        n = len(self.srv.objects("pods"))
        w = self.watcher("--limit", "2", "--watch", PODS, *FAST)
        self.synced(w)
        self.assert_converges(w)
        lists = self.lists()
        self.assertEqual(len(lists), (n + 1) // 2)
        self.assertEqual(lists[0]["params"].get("limit"), "2")
        self.assertNotIn("continue", lists[0]["params"])
        self.assertNotIn("resourceVersion", lists[0]["params"])
        for r in lists[1:]:
            self.assertTrue(r["params"].get("continue"))
        self.assertEqual(lists[0]["userAgent"], "kubewatch")
        # one reset, every object once as ADDED, then synced
        cbs = [l["cb"] for l in w.lines if l.get("w") == 0]
        self.assertEqual(cbs, ["reset"] + ["event"] * n + ["synced"])

        ws = self.srv.wait_watches(resource="pods")
        watch = self.pod_watches()[0]["params"]
        self.assertEqual(watch["watch"], "1")
        self.assertEqual(watch["allowWatchBookmarks"], "true")
        self.assertTrue(300 <= int(watch["timeoutSeconds"]) <= 600, watch)
        self.assertEqual(ws[0]["startRV"], watch["resourceVersion"])

        m = w.mark()
        self.srv.apply(pod("new", "agents"))
        self.srv.patch("Pod", "new", {"metadata": {"labels": {"x": "y"}}}, namespace="agents")
        self.srv.delete("Pod", "extra-0", namespace="agents")
        evs = w.wait(lambda l: l["cb"] == "event", n=3, start=m, what="events")
        self.assertEqual([(e["type"], e["name"]) for e in evs],
                         [("ADDED", "new"), ("MODIFIED", "new"), ("DELETED", "extra-0")])
        self.assert_converges(w)
        self.assert_no_dup_no_gap(w)
        self.assertEqual(w.count(lambda l: l["cb"] == "error"), 0)
        st = w.stats()
        self.assertEqual(st["relists"], 0)
        self.assertEqual(st["reconnects"], 0)

    def test_selectors_and_several_watches(self):
        w = self.watcher("--watch", PODS, "--fsel", "spec.nodeName=node-a",
                         "--watch", "/api/v1/namespaces/agents/pods", "--lsel", "app in (x, y)",
                         "--watch", "/apis/sluice.dev/v1alpha1/agentpolicies", *FAST)
        for i in range(3):
            self.synced(w, start=0, n=3)
        self.srv.apply(pod("a1", "agents", node="node-a", labels={"app": "x"}))
        self.srv.apply(pod("b1", "agents", node="node-b", labels={"app": "z"}))
        on_a = lambda o: o["spec"].get("nodeName") == "node-a"  # noqa: E731
        labelled = lambda o: o["metadata"]["namespace"] == "agents" and \
            o["metadata"].get("labels", {}).get("app") in ("x", "y")  # noqa: E731
        self.assert_converges(w, pred=on_a, wi=0)
        self.assert_converges(w, pred=labelled, wi=1)
        self.assert_converges(w, resource="agentpolicies", wi=2)
        self.assertIn(("agents", "a1"), w.state(0))
        self.assertNotIn(("agents", "b1"), w.state(0))
        self.assertEqual(set(w.state(1)), {("agents", "a1")})
        sels = {r["params"].get("fieldSelector") for r in self.srv.requests(resource="pods")}
        self.assertIn("spec.nodeName=node-a", sels)
        self.assertIn("app in (x, y)",
                      {r["params"].get("labelSelector") for r in self.srv.requests(resource="pods")})

    def test_bookmark_moves_the_resume_point(self):
        self.srv.config(bookmarkInterval=3600)
        w = self.watcher("--watch", PODS, *FAST)
        self.synced(w)
        self.srv.wait_watches(resource="pods")
        # other resources move the global resourceVersion; only a bookmark
        # tells the pods watch about it
        self.srv.apply(service("s1", "tools"), service("s2", "tools", cluster_ip="10.96.0.11"))
        rv = self.srv.rv()
        self.assertEqual(self.srv.bookmark(), 1)
        deadline = time.monotonic() + 5
        while int(self.srv.watches("pods")[0]["lastRV"]) < rv:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.02)
        time.sleep(0.3)       # the bookmark line reaches the client
        seq = self.srv.last_request_seq()
        self.srv.fault("drop", resource="pods")
        self.srv.wait_watches(resource="pods", pred=lambda x: x["resourceVersion"] == str(rv))
        self.assertEqual(self.lists(seq), [])
        again = self.pod_watches(seq)
        self.assertEqual([r["params"]["resourceVersion"] for r in again], [str(rv)])
        # nothing was delivered for the bookmark itself
        self.assertEqual(w.watch_events(), [])


class Faults(Base):
    def test_410_error_event_relists(self):
        w = self.watcher("--watch", PODS, *FAST)
        self.synced(w)
        self.srv.wait_watches(resource="pods")
        self.srv.fault("gone", on="open", resource="pods")
        self.synced(w, n=2)
        self.assertEqual(len([l for l in w.lines if l["cb"] == "reset"]), 2)
        self.assertEqual(len(self.lists()), 2)
        self.assert_converges(w)
        st = w.stats()
        self.assertEqual((st["relists"], st["errors"]["expired"]), (1, 1))
        self.assertEqual(w.count(lambda l: l["cb"] == "error"), 0)

    def test_410_http_relists(self):
        w = self.watcher("--watch", PODS, *FAST)
        self.synced(w)
        self.srv.wait_watches(resource="pods")
        self.srv.fault("gone", on="watch-http", resource="pods")
        self.srv.fault("drop", resource="pods")
        self.synced(w, n=2)
        self.assert_converges(w)
        self.assertEqual(w.stats()["relists"], 1)

    def test_relist_forgets_what_was_deleted_meanwhile(self):
        """A pod deleted while the client was cut off, with the history
        compacted: no DELETED ever comes; the relist's sync removes it."""
        w = self.watcher("--watch", PODS, *FAST)
        self.synced(w)
        self.srv.wait_watches(resource="pods")
        victim = ("agents", "coding-agent-7d9f8")
        self.assertIn(victim, w.state())
        self.srv.fault("stall", seconds=3, resource="pods")
        self.srv.config(historyWindow=1)
        self.srv.delete("Pod", victim[1], namespace=victim[0])
        for i in range(3):
            self.srv.apply(pod("during-%d" % i, "agents"))
        self.srv.compact()
        self.synced(w, n=2, timeout=20)
        self.assertNotIn(victim, w.state())
        self.assertFalse([l for l in w.lines if l["cb"] == "event" and l["type"] == "DELETED"])
        self.assert_converges(w)
        st = w.stats()
        self.assertGreaterEqual(st["errors"]["stall"], 1)
        self.assertEqual(st["relists"], 1)

    def test_drops_lose_nothing(self):
        w = self.watcher("--watch", PODS, *FAST)
        self.synced(w)
        self.srv.wait_watches(resource="pods")
        stop = threading.Event()

        def churn():
            i = 0
            while not stop.is_set():
                self.srv.apply(pod("churn-%d" % (i % 7), "agents", labels={"i": str(i)}))
                if i % 5 == 4:
                    self.srv.delete("Pod", "churn-%d" % ((i - 2) % 7), namespace="agents")
                i += 1
                time.sleep(0.01)

        t = threading.Thread(target=churn)
        t.start()
        try:
            for i in range(6):
                self.srv.wait_watches(resource="pods", timeout=10)
                time.sleep(0.15)
                self.srv.fault("drop", resource="pods", rst=bool(i % 2))
        finally:
            stop.set()
            t.join()
        self.srv.wait_watches(resource="pods", timeout=10)
        self.assert_converges(w)
        self.assert_no_dup_no_gap(w)
        self.assertEqual(len(self.lists()), 1, "a drop must not relist")
        st = w.stats()
        self.assertEqual(st["relists"], 0)
        self.assertGreaterEqual(st["reconnects"], 6)
        self.assertGreater(len(w.watch_events()), 20)

    def test_stall_reconnects_from_rv(self):
        w = self.watcher("--watch", PODS, *FAST)
        self.synced(w)
        self.srv.wait_watches(resource="pods")
        seq = self.srv.last_request_seq()
        self.srv.fault("stall", seconds=2.5, resource="pods")
        self.srv.apply(pod("while-stalled", "agents"))
        err = w.wait(lambda l: l["cb"] == "error", what="stall error")[0]
        self.assertIn("no data for 1.0 s", err["msg"])
        w.wait(lambda l: l["cb"] == "event" and l["name"] == "while-stalled", timeout=15)
        self.assert_converges(w)
        self.assert_no_dup_no_gap(w)
        self.assertEqual(self.lists(seq), [])
        self.assertTrue(all(r["params"].get("resourceVersion") for r in self.pod_watches(seq)))
        st = w.stats()
        self.assertGreaterEqual(st["errors"]["stall"], 1)
        self.assertEqual(st["relists"], 0)

    def test_garbage_reconnects(self):
        w = self.watcher("--watch", PODS, *FAST)
        self.synced(w)
        for i, mode in enumerate(("line", "truncated", "badchunk")):
            self.srv.wait_watches(resource="pods")
            m = w.mark()
            self.assertEqual(self.srv.fault("garbage", mode=mode, resource="pods")["watches"], 1)
            err = w.wait(lambda l: l["cb"] == "error", start=m, what="error on " + mode)[0]
            if mode == "line":
                self.assertIn("not a watch event: this is not json", err["msg"])
            self.srv.apply(pod("after-%s" % mode, "agents"))
            w.wait(lambda l: l["cb"] == "event" and l["name"] == "after-" + mode, start=m)
        self.assert_converges(w)
        self.assert_no_dup_no_gap(w)
        self.assertEqual(len(self.lists()), 1)
        st = w.stats()
        self.assertEqual(st["errors"]["decode"], 1)
        self.assertGreaterEqual(st["errors"]["transport"], 2)
        self.assertFalse([l for l in w.lines if l["cb"] == "event" and l["name"] == "truncated"])

    def test_500_backs_off(self):
        w = self.watcher("--watch", PODS, *FAST)
        self.synced(w)
        self.srv.wait_watches(resource="pods")
        seq = self.srv.last_request_seq()
        self.srv.fault("http500", verb="watch", resource="pods", count=4)
        self.srv.fault("drop", resource="pods")
        self.srv.wait_watches(resource="pods", pred=lambda x: x["startRV"] is not None)
        ws = self.pod_watches(seq)
        self.assertEqual([r["code"] for r in ws][:5], [500, 500, 500, 500, 200])
        # the drop is the first failure ([50,100] ms), then each 500 doubles
        # the ceiling: [100,200], [200,400], [400,800], [500,1000] (max 1 s)
        gaps = [b["time"] - a["time"] for a, b in zip(ws, ws[1:5])]
        for g, (lo, hi) in zip(gaps, [(0.1, 0.2), (0.2, 0.4), (0.4, 0.8), (0.5, 1.0)]):
            self.assertGreaterEqual(g, lo * 0.95, gaps)
            self.assertLessEqual(g, hi + 0.3, gaps)
        errs = [l for l in w.lines if l["cb"] == "error" and "HTTP 500" in l["msg"]]
        self.assertEqual(len(errs), 4)
        self.assertIn("HTTP 500: Internal error occurred: injected fault; retrying in", errs[0]["msg"])
        self.assertEqual(len(self.lists()), 1)
        self.assertEqual(w.stats()["errors"]["http"], 4)

    def test_retry_after_is_honoured(self):
        w = self.watcher("--watch", PODS, *FAST)
        self.synced(w)
        self.srv.wait_watches(resource="pods")
        seq = self.srv.last_request_seq()
        self.srv.fault("http", code=429, retryAfter=1, verb="watch", resource="pods")
        self.srv.fault("drop", resource="pods")
        self.srv.wait_watches(resource="pods")
        ws = self.pod_watches(seq)
        self.assertEqual([r["code"] for r in ws][:2], [429, 200])
        self.assertGreaterEqual(ws[1]["time"] - ws[0]["time"], 0.95)

    def test_list_failure_then_recovery(self):
        self.srv.fault("http500", verb="list", resource="pods", count=2)
        w = self.watcher("--watch", PODS, *FAST)
        self.synced(w)
        self.assertEqual(w.count(lambda l: l["cb"] == "error"), 2)
        self.assertEqual(w.count(lambda l: l["cb"] == "reset"), 1)
        self.assert_converges(w)


class Auth(Base):
    server_kw = {"fixtures": FIXTURES, "token": "t0"}

    def test_token_file_rotation(self):
        kc = write_kubeconfig(os.path.join(self.srv.tmp, "kc-file"), self.srv,
                              token_file=self.srv.token_file)
        w = self.watcher("--watch", PODS, *FAST, kubeconfig=kc)
        self.synced(w)
        self.srv.wait_watches(resource="pods")
        seq = self.srv.last_request_seq()
        # the server writes the new token file, then cuts the watch: the
        # reconnect reads the file first, so no request is refused
        self.srv.set_token("t1", dropWatches=True)
        self.srv.wait_watches(resource="pods", timeout=10)
        self.srv.apply(pod("after-rotation", "agents"))
        w.wait(lambda l: l["cb"] == "event" and l["name"] == "after-rotation")
        self.assertEqual([r for r in self.srv.requests(seq) if r["authOK"] is False], [])
        self.assertEqual(w.count(lambda l: l["cb"] == "error" and "401" in l["msg"]), 0)

        # the server moves on before the file does: 401s, then the file
        m = w.mark()
        seq = self.srv.last_request_seq()
        self.srv.set_token("t2", writeFile=False, dropWatches=True)
        err = w.wait(lambda l: l["cb"] == "error" and "401" in l["msg"], start=m)[0]
        self.assertIn("watch /api/v1/pods: HTTP 401: Unauthorized; retrying in", err["msg"])
        with open(self.srv.token_file + ".tmp", "w") as f:
            f.write("t2\n")
        os.rename(self.srv.token_file + ".tmp", self.srv.token_file)
        self.srv.wait_watches(resource="pods", timeout=10)
        self.srv.apply(pod("after-401", "agents"))
        w.wait(lambda l: l["cb"] == "event" and l["name"] == "after-401", start=m)
        self.assert_converges(w)
        self.assert_no_dup_no_gap(w)
        self.assertEqual(len(self.lists()), 1)
        st = w.stats()
        self.assertEqual(st["token_reloads"], 2)
        self.assertGreaterEqual(st["errors"]["auth"], 1)

    def test_static_token_refused(self):
        kc = write_kubeconfig(os.path.join(self.srv.tmp, "kc-bad"), self.srv, token="wrong")
        w = self.watcher("--watch", PODS, *FAST, kubeconfig=kc)
        errs = w.wait(lambda l: l["cb"] == "error", n=2)
        self.assertIn("list /api/v1/pods: HTTP 401: Unauthorized; retrying in", errs[0]["msg"])
        self.assertEqual(w.count(lambda l: l["cb"] == "reset"), 0)


class Tls(Base):
    server_kw = {"fixtures": FIXTURES, "tls": True, "token": "s0"}

    def test_ca_data(self):
        with open(self.srv.ca, "rb") as f:
            ca = f.read()
        kc = write_kubeconfig(os.path.join(self.srv.tmp, "kc-data"), self.srv, token="s0",
                              ca_data=ca)
        w = self.watcher("--watch", PODS, *FAST, kubeconfig=kc)
        self.synced(w)
        self.srv.apply(pod("over-tls", "agents"))
        w.wait(lambda l: l["cb"] == "event" and l["name"] == "over-tls")
        self.srv.fault("drop", resource="pods", rst=True)
        self.srv.apply(pod("over-tls-2", "agents"))
        w.wait(lambda l: l["cb"] == "event" and l["name"] == "over-tls-2")
        self.assert_converges(w)

    def test_server_kubeconfig_ca_file(self):
        w = self.watcher("--watch", PODS, *FAST)     # certificate-authority: a path
        self.synced(w)

    def test_unknown_ca_refused_insecure_accepted(self):
        kc = write_kubeconfig(os.path.join(self.srv.tmp, "kc-noca"), self.srv, token="s0")
        w = self.watcher("--watch", PODS, *FAST, kubeconfig=kc,
                         env={"SSL_CERT_FILE": "/nonexistent", "SSL_CERT_DIR": "/nonexistent"})
        err = w.wait(lambda l: l["cb"] == "error")[0]
        self.assertIn("SSL certificate problem", err["msg"])
        self.assertEqual(w.count(lambda l: l["cb"] == "reset"), 0)
        kc = write_kubeconfig(os.path.join(self.srv.tmp, "kc-insecure"), self.srv, token="s0",
                              insecure=True)
        self.synced(self.watcher("--watch", PODS, *FAST, kubeconfig=kc))

    def test_incluster_with_kubelet_style_rotation(self):
        """The service account directory as kubelet writes it: token and
        ca.crt are symlinks through ..data, swapped atomically."""
        sa = os.path.join(self.srv.tmp, "sa")
        os.makedirs(sa)

        def publish(gen, token):
            d = os.path.join(sa, "..gen%d" % gen)
            os.makedirs(d)
            with open(os.path.join(d, "token"), "w") as f:
                f.write(token)
            with open(self.srv.ca, "rb") as src, open(os.path.join(d, "ca.crt"), "wb") as dst:
                dst.write(src.read())
            tmp = os.path.join(sa, "..data_tmp")
            os.symlink("..gen%d" % gen, tmp)
            os.rename(tmp, os.path.join(sa, "..data"))
            for name in ("token", "ca.crt"):
                if not os.path.islink(os.path.join(sa, name)):
                    os.symlink("..data/" + name, os.path.join(sa, name))

        publish(1, "s0")
        env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.srv.port)}
        w = self.watcher("--incluster", sa, "--watch", PODS, *FAST, env=env)
        self.synced(w)
        self.srv.wait_watches(resource="pods")
        seq = self.srv.last_request_seq()
        publish(2, "s1")
        self.srv.set_token("s1", writeFile=False, dropWatches=True)
        self.srv.wait_watches(resource="pods", timeout=10)
        self.srv.apply(pod("rotated", "agents"))
        w.wait(lambda l: l["cb"] == "event" and l["name"] == "rotated")
        self.assertEqual([r for r in self.srv.requests(seq) if r["authOK"] is False], [])
        self.assertEqual(w.stats()["token_reloads"], 1)


class Requests(Base):
    def test_post_patch_get(self):
        w = self.watcher(*FAST)
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"name": "coding-agent.1", "namespace": "agents"},
              "involvedObject": {"kind": "AgentPolicy", "namespace": "agents",
                                 "name": "coding-agent", "apiVersion": "sluice.dev/v1alpha1"},
              "reason": "PolicyApplied", "message": "applied on node-a", "type": "Normal",
              "source": {"component": "sluiced", "host": "node-a"}}
        d = w.request(1, "POST", "/api/v1/namespaces/agents/events", ev)
        self.assertEqual((d["err"], d["status"], d["msg"]), (0, 201, None))
        self.assertEqual(d["body"]["metadata"]["name"], "coding-agent.1")
        self.assertEqual(self.srv.events()[0]["reason"], "PolicyApplied")

        path = "/apis/sluice.dev/v1alpha1/namespaces/agents/agentpolicies/coding-agent/status"
        d = w.request(2, "PATCH", path, {"status": {"nodes": {"node-a": "Applied"}}})
        self.assertEqual((d["err"], d["status"]), (0, 200), d)
        self.assertEqual(d["body"]["status"]["nodes"], {"node-a": "Applied"})
        req = [r for r in self.srv.requests() if r["method"] == "PATCH"][0]
        self.assertEqual(req["contentType"], "application/merge-patch+json")

        d = w.request(3, "GET", "/api/v1/namespaces/agents/pods/nope")
        self.assertEqual(d["status"], 404)
        self.assertEqual(d["msg"], 'GET /api/v1/namespaces/agents/pods/nope: HTTP 404: '
                         'pods "nope" not found')
        d = w.request(4, "POST", "/api/v1/namespaces/agents/events", ev)
        self.assertEqual(d["status"], 409)
        self.assertEqual(w.stats()["errors"]["http"], 2)

    def test_unreachable(self):
        port = self.srv.port
        self.srv.stop()
        kc = os.path.join(self.srv.tmp, "kc-down")
        write_kubeconfig(kc, self.srv)
        w = self.watcher(*FAST, kubeconfig=kc)
        d = w.request(1, "GET", "/api/v1/pods")
        self.assertEqual((d["err"], d["status"]), (-111, 0))    # -ECONNREFUSED
        self.assertIn("127.0.0.1 port %d" % port, d["msg"])


if __name__ == "__main__":
    res = unittest.main(exit=False).result
    failed = len(res.failures) + len(res.errors)
    print("%d passed, %d failed, %d skipped" % (res.testsRun - failed - len(res.skipped), failed,
                                                len(res.skipped)))
    sys.exit(1 if failed else 0)
