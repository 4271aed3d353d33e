#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""Tests of the test Kubernetes API server (tests/kube/apiserver.py).

    python3 tests/kube/test_apiserver.py [-v] [TestClass[.test_name]]

Stdlib only; no root, no network beyond 127.0.0.1. Each test gets its own
server process.
"""
import base64
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kubetest import (FIXTURES, ApiServer, StreamEnd, agentpolicy,  # noqa: E402
                      clusteragentpolicy, container_id, endpointslice, namespace, pod, service)

try:
    import yaml  # noqa: F401
except ImportError:
    yaml = None

PODS = "/api/v1/pods"
AP = "/apis/sluice.dev/v1alpha1"


class Base(unittest.TestCase):
    server_kw = {}

    def setUp(self):
        kw = dict(fixtures=FIXTURES)
        kw.update(self.server_kw)
        self.k = ApiServer(**kw).start()
        self.streams = []

    def tearDown(self):
        for s in self.streams:
            s.close()
        self.k.close()

    def watch(self, path, **params):
        s = self.k.watch(path, **params)
        self.streams.append(s)
        return s

    def ok(self, method, path, body=None, code=200, **kw):
        c, h, b = self.k.request(method, path, body, **kw)
        self.assertEqual(c, code, b)
        return b

    def assertStatus(self, body, code, reason):
        self.assertEqual(body["kind"], "Status")
        self.assertEqual(body["apiVersion"], "v1")
        self.assertEqual(body["status"], "Failure")
        self.assertEqual(body["code"], code)
        self.assertEqual(body["reason"], reason)
        self.assertIsInstance(body["message"], str)


class TestReads(Base):
    def test_discovery_version_health(self):
        v = self.ok("GET", "/version")
        self.assertEqual(v["major"], "1")
        self.assertTrue(v["gitVersion"].startswith("v1."))
        c, h, b = self.k.get("/healthz")
        self.assertEqual((c, b), (200, "ok"))
        self.assertEqual(self.ok("GET", "/api")["versions"], ["v1"])
        groups = {g["name"]: g for g in self.ok("GET", "/apis")["groups"]}
        self.assertEqual(groups["sluice.dev"]["preferredVersion"]["groupVersion"],
                         "sluice.dev/v1alpha1")
        self.assertIn("discovery.k8s.io", groups)
        rl = self.ok("GET", AP)
        self.assertEqual(rl["kind"], "APIResourceList")
        names = {r["name"]: r for r in rl["resources"]}
        self.assertTrue(names["agentpolicies"]["namespaced"])
        self.assertFalse(names["clusteragentpolicies"]["namespaced"])
        self.assertIn("agentpolicies/status", names)
        core = {r["name"] for r in self.ok("GET", "/api/v1")["resources"]}
        self.assertTrue({"pods", "namespaces", "services", "events", "nodes"} <= core)

    def test_list_shape(self):
        rv = self.k.rv()
        b = self.ok("GET", PODS)
        self.assertEqual((b["kind"], b["apiVersion"]), ("PodList", "v1"))
        self.assertEqual(b["metadata"], {"resourceVersion": str(rv)})
        self.assertEqual(len(b["items"]), 5)
        for it in b["items"]:
            # built-in list items carry no kind/apiVersion, as from a real API server
            self.assertNotIn("kind", it)
            self.assertNotIn("apiVersion", it)
            md = it["metadata"]
            for f in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp"):
                self.assertIn(f, md)
            self.assertLessEqual(int(md["resourceVersion"]), rv)
        running = [p for p in b["items"] if p["spec"].get("nodeName")]
        for p in running:
            for cs in p["status"]["containerStatuses"]:
                self.assertRegex(cs["containerID"], r"^containerd://[0-9a-f]{64}$")
            self.assertIn(p["status"]["qosClass"], ("Guaranteed", "Burstable", "BestEffort"))
        # ordered by namespace then name
        keys = ["/%s/%s" % (p["metadata"]["namespace"], p["metadata"]["name"]) for p in b["items"]]
        self.assertEqual(keys, sorted(keys))
        # custom resources keep kind/apiVersion in list items
        b = self.ok("GET", AP + "/agentpolicies")
        self.assertEqual((b["kind"], b["apiVersion"]), ("AgentPolicyList", "sluice.dev/v1alpha1"))
        self.assertEqual(b["items"][0]["kind"], "AgentPolicy")
        self.assertEqual(b["items"][0]["metadata"]["generation"], 1)
        b = self.ok("GET", AP + "/clusteragentpolicies")
        self.assertNotIn("namespace", b["items"][0]["metadata"])
        b = self.ok("GET", "/apis/discovery.k8s.io/v1/endpointslices?labelSelector="
                    "kubernetes.io/service-name%3Dgithub-mcp")
        self.assertEqual(b["kind"], "EndpointSliceList")
        self.assertEqual(b["items"][0]["endpoints"][0]["addresses"], ["10.244.2.20"])
        b = self.ok("GET", "/api/v1/services")
        self.assertEqual(b["items"][0]["spec"]["clusterIP"], "10.96.20.10")

    def test_paths(self):
        b = self.ok("GET", "/api/v1/namespaces/agents/pods")
        self.assertEqual({p["metadata"]["namespace"] for p in b["items"]}, {"agents"})
        self.assertEqual(len(b["items"]), 4)
        p = self.ok("GET", "/api/v1/namespaces/tools/pods/github-mcp-0")
        self.assertEqual((p["kind"], p["apiVersion"]), ("Pod", "v1"))
        ns = self.ok("GET", "/api/v1/namespaces/agents")
        self.assertEqual(ns["kind"], "Namespace")
        self.assertEqual(ns["metadata"]["labels"]["sluice.dev/agents"], "true")
        b = self.ok("GET", AP + "/namespaces/agents/agentpolicies/coding-agent")
        self.assertEqual(b["spec"]["mode"], "enforce")
        self.assertEqual(self.ok("GET", AP + "/namespaces/tools/agentpolicies")["items"], [])
        b = self.ok("GET", "/api/v1/namespaces/tools/pods/nope", code=404)
        self.assertStatus(b, 404, "NotFound")
        self.assertEqual(b["message"], 'pods "nope" not found')
        self.assertEqual(b["details"], {"name": "nope", "kind": "pods"})
        b = self.ok("GET", AP + "/namespaces/agents/agentpolicies/nope", code=404)
        self.assertEqual(b["message"], 'agentpolicies.sluice.dev "nope" not found')
        self.assertEqual(b["details"]["group"], "sluice.dev")
        for path in ("/api/v1/widgets", "/api/v1/pods/github-mcp-0", "/apis/nope.io/v1/x",
                     "/api/v2/pods", "/api/v1/namespaces/tools/pods/github-mcp-0/exec"):
            self.assertStatus(self.ok("GET", path, code=404), 404, "NotFound")

    def test_field_selector(self):
        def names(q):
            return sorted(p["metadata"]["name"] for p in self.ok("GET", PODS + "?" + q)["items"])
        self.assertEqual(names("fieldSelector=spec.nodeName%3Dnode-a"),
                         ["coding-agent-7d9f8", "research-agent-5c4b2"])
        self.assertEqual(names("fieldSelector=spec.nodeName%3D%3Dnode-b"),
                         ["github-mcp-0", "research-agent-9x8z7"])
        self.assertEqual(names("fieldSelector=spec.nodeName%3D"), ["pending-agent"])
        self.assertEqual(names("fieldSelector=spec.nodeName!%3Dnode-a,status.phase%3DRunning"),
                         ["github-mcp-0", "research-agent-9x8z7"])
        self.assertEqual(names("fieldSelector=metadata.name%3Dgithub-mcp-0"), ["github-mcp-0"])
        b = self.ok("GET", PODS + "?fieldSelector=spec.bogus%3Dx", code=400)
        self.assertStatus(b, 400, "BadRequest")
        self.assertEqual(b["message"], "field label not supported: spec.bogus")
        self.ok("GET", AP + "/agentpolicies?fieldSelector=spec.mode%3Denforce", code=400)

    def test_label_selector(self):
        def names(sel, path=PODS):
            q = urllib.parse.urlencode({"labelSelector": sel})
            return sorted(p["metadata"]["name"] for p in self.ok("GET", path + "?" + q)["items"])
        self.assertEqual(names("app=coding-agent"), ["coding-agent-7d9f8", "pending-agent"])
        self.assertEqual(names("app==coding-agent,tier=agent"),
                         ["coding-agent-7d9f8", "pending-agent"])
        self.assertEqual(names("app!=research-agent,tier"), ["coding-agent-7d9f8", "pending-agent"])
        self.assertEqual(names("app in (github-mcp, coding-agent)"),
                         ["coding-agent-7d9f8", "github-mcp-0", "pending-agent"])
        self.assertEqual(names("app notin (coding-agent,research-agent)"), ["github-mcp-0"])
        self.assertEqual(names("!tier"), ["github-mcp-0"])
        self.assertEqual(names("sluice.dev/agents=true", "/api/v1/namespaces"), ["agents"])
        for bad in ("app=(x", "a b", "app in x", "=x"):
            q = urllib.parse.urlencode({"labelSelector": bad})
            self.assertStatus(self.ok("GET", PODS + "?" + q, code=400), 400, "BadRequest")

    def test_chunked_list(self):
        k = self.k
        rv = k.rv()
        p1 = self.ok("GET", PODS + "?limit=2")
        self.assertEqual(len(p1["items"]), 2)
        self.assertEqual(p1["metadata"]["resourceVersion"], str(rv))
        self.assertEqual(p1["metadata"]["remainingItemCount"], 3)
        tok = p1["metadata"]["continue"]
        # the token is opaque to clients, but shaped like the real one
        raw = json.loads(base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4)))
        self.assertEqual(raw["v"], "meta.k8s.io/v1")
        # changes between pages do not show: every page is the list at rv
        k.apply(pod("aaa-new", "agents", node="node-a"), pod("zzz-new", "tools", node="node-a"))
        k.delete("Pod", "research-agent-9x8z7", "agents")
        k.patch("Pod", "github-mcp-0", {"metadata": {"labels": {"x": "y"}}}, "tools")
        p2 = self.ok("GET", PODS + "?limit=2&continue=" + tok)
        self.assertEqual(p2["metadata"]["resourceVersion"], str(rv))
        self.assertEqual(p2["metadata"]["remainingItemCount"], 1)
        p3 = self.ok("GET", PODS + "?limit=2&continue=" + p2["metadata"]["continue"])
        self.assertNotIn("continue", p3["metadata"])
        self.assertNotIn("remainingItemCount", p3["metadata"])
        names = [p["metadata"]["name"] for p in p1["items"] + p2["items"] + p3["items"]]
        self.assertEqual(names, ["coding-agent-7d9f8", "pending-agent", "research-agent-5c4b2",
                                 "research-agent-9x8z7", "github-mcp-0"])
        self.assertNotIn("x", p3["items"][0]["metadata"]["labels"])
        # a fresh list sees the changes
        self.assertEqual(len(self.ok("GET", PODS)["items"]), 6)
        # limit with a selector: no remainingItemCount
        b = self.ok("GET", PODS + "?limit=1&fieldSelector=spec.nodeName%3Dnode-a")
        self.assertIn("continue", b["metadata"])
        self.assertNotIn("remainingItemCount", b["metadata"])
        # bad tokens and bad combinations
        self.assertStatus(self.ok("GET", PODS + "?limit=2&continue=garbage", code=400),
                          400, "BadRequest")
        b = self.ok("GET", PODS + "?limit=2&resourceVersion=5&continue=" + tok, code=400)
        self.assertIn("specifying resource version is not allowed when using continue",
                      b["message"])
        # a token whose snapshot was compacted away: 410
        k.compact()
        b = self.ok("GET", PODS + "?limit=2&continue=" + tok, code=410)
        self.assertStatus(b, 410, "Expired")
        self.assertIn("continue parameter is too old", b["message"])

    def test_list_resource_version(self):
        k = self.k
        rv0 = k.rv()
        k.apply(pod("new-1", "agents"))
        self.assertEqual(self.ok("GET", PODS + "?resourceVersion=0")["metadata"]["resourceVersion"],
                         str(rv0 + 1))
        self.assertEqual(len(self.ok("GET", PODS + "?resourceVersion=%d" % rv0)["items"]), 6)
        # Exact: the state at that revision, from the history
        b = self.ok("GET", PODS + "?resourceVersion=%d&resourceVersionMatch=Exact" % rv0)
        self.assertEqual(b["metadata"]["resourceVersion"], str(rv0))
        self.assertEqual(len(b["items"]), 5)
        b = self.ok("GET", PODS + "?resourceVersionMatch=Exact", code=422)
        self.assertStatus(b, 422, "Invalid")
        self.ok("GET", PODS + "?resourceVersion=abc", code=400)
        # newer than the store: wait, then 504 Too large resource version
        k.config(tooLargeRVWait=0.3)
        t0 = time.monotonic()
        c, h, b = k.get(PODS + "?resourceVersion=%d" % (rv0 + 100))
        self.assertGreaterEqual(time.monotonic() - t0, 0.25)
        self.assertEqual(c, 504)
        self.assertStatus(b, 504, "Timeout")
        self.assertIn("Too large resource version", b["message"])
        self.assertEqual(b["details"]["retryAfterSeconds"], 1)
        self.assertEqual(b["details"]["causes"][0]["reason"], "ResourceVersionTooLarge")
        k.compact()
        b = self.ok("GET", PODS + "?resourceVersion=%d&resourceVersionMatch=Exact" % rv0, code=410)
        self.assertStatus(b, 410, "Expired")

    def test_keepalive(self):
        k = self.k
        conn = http.client.HTTPConnection("127.0.0.1", k.port, timeout=10)
        for path in (PODS, PODS + "?watch=1&timeoutSeconds=1", "/api/v1/namespaces",
                     "/api/v1/nodes/node-b"):
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            self.assertEqual(r.status, 200, body)
            self.assertEqual(r.getheader("Content-Type"), "application/json")
        self.assertTrue(body.endswith(b"\n"))
        self.assertEqual(json.loads(body)["metadata"]["name"], "node-b")
        conn.close()
        # one connection served them all
        reqs = k.requests()
        self.assertEqual(len(reqs), 4)
        self.assertEqual(len({r["peer"] for r in reqs}), 1)


class TestWatch(Base):
    server_kw = dict(bookmark_interval=0.2)

    def test_list_then_watch(self):
        k = self.k
        lst = self.ok("GET", PODS)
        rv = int(lst["metadata"]["resourceVersion"])
        # changes made before the watch opens are replayed from the history
        k.apply(pod("w1", "agents", node="node-a", labels={"app": "x"}))
        k.patch("Pod", "w1", {"metadata": {"labels": {"app": "y"}}}, "agents")
        k.apply(namespace("other"))  # another resource: not on this watch
        s = self.watch(PODS, resourceVersion=str(rv))
        self.assertEqual(s.status, 200)
        self.assertEqual(s.headers["content-type"], "application/json")
        self.assertEqual(s.headers["transfer-encoding"], "chunked")
        e1 = s.next_event()
        e2 = s.next_event()
        self.assertEqual((e1["type"], e2["type"]), ("ADDED", "MODIFIED"))
        self.assertEqual((e1["object"]["kind"], e1["object"]["apiVersion"]), ("Pod", "v1"))
        rv1 = int(e1["object"]["metadata"]["resourceVersion"])
        rv2 = int(e2["object"]["metadata"]["resourceVersion"])
        self.assertTrue(rv < rv1 < rv2)
        self.assertEqual(e2["object"]["metadata"]["labels"], {"app": "y"})
        self.assertEqual(e1["object"]["metadata"]["uid"], e2["object"]["metadata"]["uid"])
        # live events
        k.delete("Pod", "w1", "agents")
        e3 = s.next_event()
        self.assertEqual(e3["type"], "DELETED")
        self.assertGreater(int(e3["object"]["metadata"]["resourceVersion"]), rv2 + 1)
        self.assertEqual(e3["object"]["metadata"]["name"], "w1")
        # one event per chunk, each a JSON line
        self.assertGreaterEqual(len(s.chunks), 3)
        ws = k.watches("pods")
        self.assertEqual(len(ws), 1)
        self.assertEqual(ws[0]["startRV"], str(rv))
        self.assertEqual(ws[0]["eventsSent"], 3)

    def test_watch_without_rv_sends_state(self):
        s = self.watch("/api/v1/namespaces/agents/pods")
        evs = [s.next_event() for _ in range(4)]
        self.assertEqual({e["type"] for e in evs}, {"ADDED"})
        self.assertEqual({e["object"]["metadata"]["namespace"] for e in evs}, {"agents"})
        s.expect_quiet(0.3)
        self.k.apply(pod("late", "agents"))
        self.assertEqual(s.next_event()["object"]["metadata"]["name"], "late")

    def test_send_initial_events(self):
        s = self.watch(PODS, sendInitialEvents="true", allowWatchBookmarks="true",
                       resourceVersionMatch="NotOlderThan", resourceVersion="",
                       fieldSelector="spec.nodeName=node-a")
        evs = [s.next_event() for _ in range(3)]
        self.assertEqual([e["type"] for e in evs], ["ADDED", "ADDED", "BOOKMARK"])
        self.assertEqual(evs[2]["object"]["metadata"]["annotations"],
                         {"k8s.io/initial-events-end": "true"})
        c, _, b = self.k.get(PODS + "?watch=1&sendInitialEvents=true")
        self.assertEqual(c, 422)

    def test_selector_transitions(self):
        k = self.k
        rv = k.rv()
        s = self.watch(PODS, resourceVersion=str(rv), fieldSelector="spec.nodeName=node-b")
        # scheduled onto node-b: ADDED on this watch
        k.patch("Pod", "pending-agent", {"spec": {"nodeName": "node-b"}}, "agents")
        e = s.next_event()
        self.assertEqual((e["type"], e["object"]["metadata"]["name"]), ("ADDED", "pending-agent"))
        # changed while matching: MODIFIED
        k.patch("Pod", "pending-agent", {"status": {"phase": "Running"}}, "agents")
        self.assertEqual(s.next_event()["type"], "MODIFIED")
        # moved away: DELETED, carrying the last matching state at the new revision
        obj = k.patch("Pod", "pending-agent", {"spec": {"nodeName": "node-a"}}, "agents")
        e = s.next_event()
        self.assertEqual(e["type"], "DELETED")
        self.assertEqual(e["object"]["spec"]["nodeName"], "node-b")
        self.assertEqual(e["object"]["metadata"]["resourceVersion"],
                         obj["metadata"]["resourceVersion"])
        # labels too
        s2 = self.watch(PODS, resourceVersion=str(k.rv()), labelSelector="tier=agent")
        k.patch("Pod", "github-mcp-0", {"metadata": {"labels": {"tier": "agent"}}}, "tools")
        self.assertEqual(s2.next_event()["type"], "ADDED")
        k.patch("Pod", "github-mcp-0", {"metadata": {"labels": {"tier": None}}}, "tools")
        self.assertEqual(s2.next_event()["type"], "DELETED")
        s2.expect_quiet(0.2)

    def test_bookmarks(self):
        k = self.k
        rv = k.rv()
        s = self.watch(PODS, resourceVersion=str(rv), allowWatchBookmarks="true")
        b = s.next_event(timeout=2)
        self.assertEqual(b, {"type": "BOOKMARK", "object": {
            "kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": str(rv)}}})
        # progress on other resources moves the bookmark's rv
        k.apply(namespace("x1"), namespace("x2"))
        while True:
            b = s.next_event(timeout=2)
            self.assertEqual(b["type"], "BOOKMARK")
            if b["object"]["metadata"]["resourceVersion"] == str(rv + 2):
                break
        s2 = self.watch(AP + "/agentpolicies", resourceVersion=str(k.rv()),
                        allowWatchBookmarks="1")
        b = s2.next_event(timeout=2)
        self.assertEqual(b["object"]["kind"], "AgentPolicy")
        self.assertEqual(b["object"]["apiVersion"], "sluice.dev/v1alpha1")
        # none without allowWatchBookmarks
        s3 = self.watch(PODS, resourceVersion=str(k.rv()))
        s3.expect_quiet(0.6)
        # on demand
        k.config(bookmarkInterval=60)
        time.sleep(0.3)
        self.assertEqual(k.bookmark(), 2)
        self.assertEqual(s2.next_event(timeout=2)["type"], "BOOKMARK")

    def test_timeout_seconds(self):
        t0 = time.monotonic()
        s = self.watch(PODS, resourceVersion=str(self.k.rv()), timeoutSeconds="1")
        self.assertEqual(s.events_until_end(), [])
        self.assertEqual(s.end, "clean")
        self.assertTrue(0.9 < time.monotonic() - t0 < 3)
        self.assertEqual(self.k.watches(), [])

    def test_expired_history_window(self):
        k = self.k
        k.config(historyWindow=3)
        rv = k.rv()
        for i in range(5):
            k.apply(pod("h%d" % i, "agents"))
        s = self.watch(PODS, resourceVersion=str(rv), allowWatchBookmarks="true")
        e = s.next_event()
        self.assertEqual(e["type"], "ERROR")
        self.assertEqual(e["object"], {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "too old resource version: %d (%d)" % (rv, rv + 2),
            "reason": "Expired", "code": 410})
        self.assertRaises(StreamEnd, s.next_event)
        self.assertEqual(s.end, "clean")
        # within the window: fine
        s = self.watch(PODS, resourceVersion=str(rv + 2))
        self.assertEqual(s.next_event()["object"]["metadata"]["name"], "h2")
        # compaction expires everything older than now
        now = k.compact()
        s = self.watch(PODS, resourceVersion=str(now - 1))
        self.assertEqual(s.next_event()["object"]["code"], 410)
        s = self.watch(PODS, resourceVersion=str(now))
        s.expect_quiet(0.3)
        # resourceVersions below the server's first one are expired too
        s = self.watch(PODS, resourceVersion="1")
        self.assertEqual(s.next_event()["object"]["reason"], "Expired")

    def test_watcher_falls_behind(self):
        k = self.k
        k.config(historyWindow=3)
        s = self.watch(PODS, resourceVersion=str(k.rv()))
        k.wait_watches(resource="pods")
        k.fault("stall", seconds=0.5)
        for i in range(5):
            k.apply(pod("h%d" % i, "agents"))
        e = s.next_event(timeout=3)
        self.assertEqual(e["type"], "ERROR")
        self.assertEqual(e["object"]["code"], 410)

    def test_client_hangup_unregisters(self):
        k = self.k
        s = self.watch(PODS, resourceVersion=str(k.rv()))
        k.wait_watches()
        s.close()
        deadline = time.monotonic() + 3
        while k.watches() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(k.watches(), [])

    def test_bad_watch_params(self):
        c, _, b = self.k.get(PODS + "?watch=1&resourceVersion=x")
        self.assertEqual(c, 400)
        c, _, b = self.k.get(PODS + "?watch=1&timeoutSeconds=x")
        self.assertEqual(c, 400)
        c, _, b = self.k.get(PODS + "?watch=1&labelSelector=a%20b")
        self.assertEqual(c, 400)

    def test_relist_after_410_is_visible_in_request_log(self):
        k = self.k
        seq = k.last_request_seq()
        k.fault("gone")
        s = self.watch(PODS, resourceVersion=str(k.rv()))
        self.assertEqual(s.next_event()["type"], "ERROR")
        rv = self.ok("GET", PODS)["metadata"]["resourceVersion"]
        s = self.watch(PODS, resourceVersion=rv)
        k.wait_watches(resource="pods")
        reqs = k.requests(since=seq, resource="pods")
        self.assertEqual([r["verb"] for r in reqs], ["watch", "list", "watch"])
        self.assertEqual(reqs[2]["params"]["resourceVersion"], rv)
        self.assertEqual(reqs[0]["code"], 200)


class TestFaults(Base):
    server_kw = dict(bookmark_interval=0.2)

    def test_drop(self):
        k = self.k
        a = self.watch(PODS, resourceVersion=str(k.rv()))
        b = self.watch("/api/v1/namespaces", resourceVersion=str(k.rv()))
        k.wait_watches(2)
        self.assertEqual(k.fault("drop", resource="pods"), {"dropped": 1})
        self.assertRaises(StreamEnd, a.next_line)
        self.assertEqual(a.end, "eof")  # no terminating chunk
        self.assertEqual([w["resource"] for w in k.watches()], ["namespaces"])
        self.assertEqual(k.fault("drop"), {"dropped": 1})
        self.assertRaises(StreamEnd, b.next_line)
        self.assertEqual(b.end, "eof")
        self.assertEqual(k.watches(), [])
        # the server goes on serving
        c = self.watch(PODS, resourceVersion=str(k.rv()))
        k.apply(pod("after-drop", "agents"))
        self.assertEqual(c.next_event()["type"], "ADDED")

    def test_drop_rst(self):
        k = self.k
        a = self.watch(PODS, resourceVersion=str(k.rv()))
        k.wait_watches()
        self.assertEqual(k.fault("drop", rst=True)["dropped"], 1)
        self.assertRaises(StreamEnd, a.next_line)
        self.assertEqual(a.end, "reset")

    def test_drop_connections(self):
        k = self.k
        conn = http.client.HTTPConnection("127.0.0.1", k.port, timeout=5)
        conn.request("GET", PODS)
        conn.getresponse().read()
        k.fault("drop", connections=True)
        time.sleep(0.1)
        # the idle keep-alive connection was closed
        conn.sock.settimeout(2)
        self.assertEqual(conn.sock.recv(10), b"")
        conn.close()

    def test_gone_next_watch(self):
        k = self.k
        k.fault("gone", resource="pods")
        # other resources are not affected
        s = self.watch("/api/v1/namespaces", resourceVersion=str(k.rv()))
        s.expect_quiet(0.2)
        s = self.watch(PODS, resourceVersion=str(k.rv()))
        e = s.next_event()
        self.assertEqual(e["type"], "ERROR")
        self.assertEqual(e["object"]["reason"], "Expired")
        self.assertEqual(e["object"]["code"], 410)
        self.assertRaises(StreamEnd, s.next_event)
        self.assertEqual(s.end, "clean")
        s = self.watch(PODS, resourceVersion=str(k.rv()))
        s.expect_quiet(0.2)
        # count
        k.fault("gone", count=2)
        for _ in range(2):
            s = self.watch(PODS, resourceVersion=str(k.rv()))
            self.assertEqual(s.next_event()["type"], "ERROR")
        s = self.watch(PODS, resourceVersion=str(k.rv()))
        s.expect_quiet(0.2)

    def test_gone_http(self):
        k = self.k
        k.fault("gone", on="list")
        s = self.watch(PODS, resourceVersion=str(k.rv()))  # watches untouched
        s.expect_quiet(0.1)
        c, _, b = k.get(PODS + "?resourceVersion=5")
        self.assertEqual(c, 410)
        self.assertStatus(b, 410, "Expired")
        self.assertEqual(k.get(PODS)[0], 200)
        k.fault("gone", on="watch-http")
        c, _, b = k.get(PODS + "?watch=1&resourceVersion=5")
        self.assertEqual(c, 410)
        self.assertStatus(b, 410, "Expired")
        k.fault("gone", on="any", count=2)
        self.assertEqual(k.get(PODS)[0], 410)
        self.assertEqual(k.get(PODS + "?watch=1")[0], 410)
        self.assertEqual(k.get(PODS)[0], 200)

    def test_gone_open_watches(self):
        k = self.k
        s = self.watch(PODS, resourceVersion=str(k.rv()))
        k.wait_watches()
        self.assertEqual(k.fault("gone", on="open"), {"watches": 1})
        e = s.next_event()
        self.assertEqual((e["type"], e["object"]["code"]), ("ERROR", 410))
        self.assertRaises(StreamEnd, s.next_event)
        self.assertEqual(s.end, "clean")

    def test_stall(self):
        k = self.k
        s = self.watch(PODS, resourceVersion=str(k.rv()), allowWatchBookmarks="true")
        self.assertEqual(s.next_event(timeout=2)["type"], "BOOKMARK")
        k.fault("stall", seconds=1.0)
        k.apply(pod("during-stall", "agents"))
        t0 = time.monotonic()
        s.expect_quiet(0.8)  # no events, no bookmarks
        e = s.next_event(timeout=2)
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        self.assertEqual((e["type"], e["object"]["metadata"]["name"]), ("ADDED", "during-stall"))
        self.assertEqual(s.next_event(timeout=2)["type"], "BOOKMARK")
        # a stall ends early on clear
        k.fault("stall", seconds=30)
        k.apply(pod("during-stall-2", "agents"))
        s.expect_quiet(0.4)
        k.clear_faults()
        self.assertEqual(s.next_event(timeout=2, skip_bookmarks=True)["type"], "ADDED")

    def test_garbage_line(self):
        k = self.k
        s = self.watch(PODS, resourceVersion=str(k.rv()))
        k.wait_watches()
        self.assertEqual(k.fault("garbage"), {"watches": 1})
        line = s.next_line()
        self.assertRaises(ValueError, json.loads, line)
        # the stream stays open: the client has to decide
        k.apply(pod("after-garbage", "agents"))
        self.assertEqual(s.next_event()["type"], "ADDED")

    def test_garbage_truncated(self):
        k = self.k
        s = self.watch(PODS, resourceVersion=str(k.rv()))
        k.wait_watches()
        k.fault("garbage", mode="truncated")
        self.assertRaises(StreamEnd, s.next_line)
        self.assertEqual(s.end, "eof")
        self.assertTrue(s.data.startswith(b'{"type":"MODIFIED"'))  # half a line, no newline

    def test_garbage_badchunk(self):
        k = self.k
        s = self.watch(PODS, resourceVersion=str(k.rv()))
        k.wait_watches()
        k.fault("garbage", mode="badchunk")
        self.assertRaises(StreamEnd, s.next_line)
        self.assertEqual(s.end, "badchunk")

    def test_http500(self):
        k = self.k
        k.fault("http500", count=2)
        for _ in range(2):
            c, _, b = k.get(PODS)
            self.assertEqual(c, 500)
            self.assertStatus(b, 500, "InternalError")
        self.assertEqual(k.get(PODS)[0], 200)
        # scoped, other codes, Retry-After
        k.fault("http500", resource="pods", verb="watch", code=429, retryAfter=2)
        self.assertEqual(k.get(PODS)[0], 200)
        self.assertEqual(k.get("/api/v1/namespaces?watch=1&timeoutSeconds=1")[0], 200)
        c, h, b = k.get(PODS + "?watch=1")
        self.assertEqual(c, 429)
        self.assertEqual(h["Retry-After"], "2")
        self.assertStatus(b, 429, "TooManyRequests")
        self.assertEqual(b["details"]["retryAfterSeconds"], 2)
        # until cleared
        k.fault("http500", count=None, code=503)
        for _ in range(3):
            self.assertEqual(k.get(PODS)[0], 503)
        self.assertEqual(len(k.admin("GET", "fault")["armed"]), 1)
        k.clear_faults()
        self.assertEqual(k.get(PODS)[0], 200)
        # /_test, /version and /healthz are never faulted
        k.fault("http500", count=5)
        self.assertEqual(k.get("/version")[0], 200)
        self.assertEqual(k.get("/healthz")[0], 200)
        k.rv()
        self.assertEqual(k.get(PODS)[0], 500)

    def test_slow(self):
        k = self.k
        k.fault("slow", seconds=0.5, count=1)
        t0 = time.monotonic()
        self.assertEqual(k.get(PODS)[0], 200)
        self.assertGreaterEqual(time.monotonic() - t0, 0.5)
        t0 = time.monotonic()
        k.get(PODS)
        self.assertLess(time.monotonic() - t0, 0.4)
        k.fault("slow", seconds=0.3)  # every request until cleared
        for _ in range(2):
            t0 = time.monotonic()
            k.get(PODS)
            self.assertGreaterEqual(time.monotonic() - t0, 0.3)
        k.fault("clear")
        t0 = time.monotonic()
        k.get(PODS)
        self.assertLess(time.monotonic() - t0, 0.25)

    def test_split_chunks(self):
        k = self.k
        k.fault("split", bytes=7)
        s = self.watch(PODS, resourceVersion=str(k.rv()))
        k.apply(pod("s1", "agents"), pod("s2", "agents"))
        self.assertEqual(s.next_event()["object"]["metadata"]["name"], "s1")
        self.assertEqual(s.next_event()["object"]["metadata"]["name"], "s2")
        self.assertTrue(all(n <= 7 for n in s.chunks))
        self.assertGreater(len(s.chunks), 50)


class TestAuth(Base):
    server_kw = dict(token="tok-0")

    def test_token(self):
        k = self.k
        c, h, b = k.get(PODS, token=None)
        self.assertEqual(c, 401)
        self.assertStatus(b, 401, "Unauthorized")
        self.assertEqual(b["message"], "Unauthorized")
        self.assertEqual(k.get(PODS, token="wrong")[0], 401)
        self.assertEqual(k.get(PODS, headers={"Authorization": "Basic dG9rLTA="}, token=None)[0],
                         401)
        self.assertEqual(k.get(PODS)[0], 200)
        self.assertEqual(k.get(PODS, headers={"Authorization": "bearer tok-0"}, token=None)[0],
                         200)
        s = self.watch(PODS, token=None)
        self.assertEqual(s.status, 401)
        # the admin API needs no token
        self.assertGreater(k.rv(), 0)
        reqs = k.requests()
        self.assertEqual([(r["auth"], r["authOK"]) for r in reqs[:3]],
                         [(False, False), (True, False), (True, False)])
        with open(k.token_file) as f:
            self.assertEqual(f.read(), "tok-0")

    def test_rotation(self):
        k = self.k
        s = self.watch(PODS, resourceVersion=str(k.rv()))
        k.wait_watches()
        k.set_token("tok-1")
        self.assertEqual(k.get(PODS, token="tok-0")[0], 401)
        self.assertEqual(k.get(PODS, token="tok-1")[0], 200)
        with open(k.token_file) as f:
            self.assertEqual(f.read(), "tok-1")
        # an established watch goes on, as on a real API server
        k.apply(pod("r1", "agents"))
        self.assertEqual(s.next_event()["type"], "ADDED")
        # overlap, then drop watches on rotation
        k.admin("POST", "token", {"tokens": ["tok-1", "tok-2"]})
        self.assertEqual(k.get(PODS, token="tok-1")[0], 200)
        self.assertEqual(k.get(PODS, token="tok-2")[0], 200)
        out = k.set_token("tok-3", dropWatches=True, writeFile=False)
        self.assertEqual(out["dropped"], 1)
        self.assertRaises(StreamEnd, s.next_line)
        with open(k.token_file) as f:
            self.assertEqual(f.read(), "tok-1")  # writeFile=false left it stale
        self.assertEqual(k.get(PODS, token="tok-2")[0], 401)
        # no token at all: auth off
        k.admin("POST", "token", {"token": None})
        self.assertEqual(k.get(PODS, token=None)[0], 200)


class TestTLS(Base):
    server_kw = dict(tls=True, token="t")

    def test_https(self):
        k = self.k
        self.assertTrue(os.path.exists(k.ca))
        self.assertEqual(k.get(PODS)[0], 200)
        ctx = ssl.create_default_context(cafile=k.ca)
        for host in ("127.0.0.1", "localhost"):
            req = urllib.request.Request("https://%s:%d/version" % (host, k.port),
                                         headers={"Authorization": "Bearer t"})
            with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
                self.assertEqual(r.status, 200)
        # an untrusting client fails the handshake
        with self.assertRaises(urllib.error.URLError):
            urllib.request.urlopen("https://127.0.0.1:%d/version" % k.port,
                                   context=ssl.create_default_context(), timeout=5)
        # plain HTTP to the TLS port gets no HTTP answer
        conn = http.client.HTTPConnection("127.0.0.1", k.port, timeout=5)
        with self.assertRaises((http.client.HTTPException, OSError)):
            conn.request("GET", "/version")
            conn.getresponse().read()
        conn.close()
        # watch over TLS, and a drop
        s = self.watch(PODS, resourceVersion=str(k.rv()), allowWatchBookmarks="true")
        k.apply(pod("tls-1", "agents"))
        self.assertEqual(s.next_event(timeout=3, skip_bookmarks=True)["type"], "ADDED")
        k.fault("drop")
        self.assertRaises(StreamEnd, s.next_line)
        self.assertIsNotNone(s.end)
        self.assertEqual(k.get(PODS)[0], 200)
        # the kubeconfig names the CA, the server and the token
        with open(k.kubeconfig) as f:
            kc = f.read()
        self.assertIn("server: https://127.0.0.1:%d" % k.port, kc)
        self.assertIn("certificate-authority: %s" % k.ca, kc)
        self.assertIn("token: t", kc)

    def test_restart_keeps_ca(self):
        k = self.k
        with open(k.ca, "rb") as f:
            ca = f.read()
        port = k.port
        self.assertEqual(k.stop(), 0)
        k.port = port
        k.args += ["--initial-rv", "5000"]
        k.start()
        self.assertEqual(k.port, port)
        with open(k.ca, "rb") as f:
            self.assertEqual(f.read(), ca)
        self.assertEqual(k.get(PODS)[0], 200)
        self.assertGreater(k.rv(), 5000)


class TestWrites(Base):
    server_kw = dict(bookmark_interval=0.2)

    def test_events(self):
        k = self.k
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"generateName": "coding-agent-7d9f8.", "namespace": "agents"},
              "involvedObject": {"kind": "Pod", "namespace": "agents", "name": "coding-agent-7d9f8",
                                 "uid": "2f0c6a3e-1111-4d6e-9a39-3c1f00000001", "apiVersion": "v1"},
              "reason": "EgressDenied", "message": "connect to 1.2.3.4:443 denied", "type": "Warning",
              "source": {"component": "sluiced", "host": "node-a"}, "count": 1,
              "firstTimestamp": "2024-05-01T12:00:00Z", "lastTimestamp": "2024-05-01T12:00:00Z",
              "reportingComponent": "sluiced", "reportingInstance": "node-a"}
        b = self.ok("POST", "/api/v1/namespaces/agents/events", ev, code=201)
        self.assertTrue(b["metadata"]["name"].startswith("coding-agent-7d9f8."))
        self.assertEqual(len(b["metadata"]["name"]), len("coding-agent-7d9f8.") + 5)
        self.assertIn("uid", b["metadata"])
        evs = k.events()
        self.assertEqual(len(evs), 1)
        self.assertEqual(evs[0]["reason"], "EgressDenied")
        self.assertEqual(evs[0]["involvedObject"]["name"], "coding-agent-7d9f8")
        k.wait_events(reason="EgressDenied", **{"source.component": "sluiced"})
        # dedup by PATCH (what client-go's recorder does)
        name = b["metadata"]["name"]
        b = self.ok("PATCH", "/api/v1/namespaces/agents/events/" + name,
                    {"count": 2, "lastTimestamp": "2024-05-01T12:01:00Z"},
                    content_type="application/strategic-merge-patch+json")
        self.assertEqual(k.events()[0]["count"], 2)
        # field selectors on events
        b = self.ok("GET", "/api/v1/events?fieldSelector=involvedObject.name%3Dcoding-agent-7d9f8,"
                    "reason%3DEgressDenied")
        self.assertEqual(len(b["items"]), 1)
        # a fixed name twice: 409
        ev2 = dict(ev, metadata={"name": "fixed", "namespace": "agents"})
        self.ok("POST", "/api/v1/namespaces/agents/events", ev2, code=201)
        b = self.ok("POST", "/api/v1/namespaces/agents/events", ev2, code=409)
        self.assertStatus(b, 409, "AlreadyExists")
        # namespace mismatch, no name, no namespace on the path
        self.ok("POST", "/api/v1/namespaces/tools/events", ev2, code=400)
        b = self.ok("POST", "/api/v1/namespaces/agents/events", dict(ev, metadata={}), code=422)
        self.assertStatus(b, 422, "Invalid")
        self.ok("POST", "/api/v1/events", ev, code=405)
        self.ok("POST", "/api/v1/namespaces/agents/events", b"{not json", code=400)
        # events.k8s.io/v1 too
        ev3 = {"apiVersion": "events.k8s.io/v1", "kind": "Event",
               "metadata": {"name": "e3", "namespace": "agents"}, "reason": "X",
               "note": "n", "type": "Normal", "reportingController": "sluice.dev/sluiced",
               "reportingInstance": "node-a", "action": "Deny", "eventTime": "2024-05-01T12:00:00.000000Z",
               "regarding": {"kind": "Pod", "name": "p", "namespace": "agents"}}
        self.ok("POST", "/apis/events.k8s.io/v1/namespaces/agents/events", ev3, code=201)
        self.assertEqual(len(k.events()), 3)

    def test_agentpolicy_status(self):
        k = self.k
        base = AP + "/namespaces/agents/agentpolicies/coding-agent"
        s = self.watch(AP + "/agentpolicies", resourceVersion=str(k.rv()))
        cur = self.ok("GET", base)
        rv0 = cur["metadata"]["resourceVersion"]
        # PUT status: only status changes; generation stays
        put = json.loads(json.dumps(cur))
        put["status"] = {"observedGeneration": 1, "conditions": [
            {"type": "Ready", "status": "True", "reason": "Compiled", "message": "ok",
             "lastTransitionTime": "2024-05-01T12:00:00Z"}], "nodes": {"node-a": "Enforcing"}}
        put["spec"]["mode"] = "audit"  # ignored on /status
        b = self.ok("PUT", base + "/status", put)
        self.assertEqual(b["status"]["conditions"][0]["reason"], "Compiled")
        self.assertEqual(b["spec"]["mode"], "enforce")
        self.assertEqual(b["metadata"]["generation"], 1)
        self.assertGreater(int(b["metadata"]["resourceVersion"]), int(rv0))
        e = s.next_event()
        self.assertEqual(e["type"], "MODIFIED")
        self.assertEqual(e["object"]["status"]["nodes"], {"node-a": "Enforcing"})
        # stale resourceVersion: 409 Conflict
        b = self.ok("PUT", base + "/status", put, code=409)
        self.assertStatus(b, 409, "Conflict")
        self.assertIn("the object has been modified", b["message"])
        self.assertEqual(b["details"], {"name": "coding-agent", "group": "sluice.dev",
                                        "kind": "agentpolicies"})
        # merge PATCH on status
        b = self.ok("PATCH", base + "/status", {"status": {"nodes": {"node-b": "Enforcing"}}},
                    content_type="application/merge-patch+json")
        self.assertEqual(b["status"]["nodes"], {"node-a": "Enforcing", "node-b": "Enforcing"})
        self.assertEqual(s.next_event()["type"], "MODIFIED")
        # a PATCH with a stale resourceVersion is a precondition: 409
        self.ok("PATCH", base + "/status", {"metadata": {"resourceVersion": rv0},
                                            "status": {"x": 1}},
                content_type="application/merge-patch+json", code=409)
        # JSON patch
        b = self.ok("PATCH", base + "/status",
                    [{"op": "test", "path": "/metadata/name", "value": "coding-agent"},
                     {"op": "replace", "path": "/status/nodes/node-b", "value": "Degraded"},
                     {"op": "remove", "path": "/status/conditions"}],
                    content_type="application/json-patch+json")
        self.assertEqual(b["status"]["nodes"]["node-b"], "Degraded")
        self.assertNotIn("conditions", b["status"])
        self.assertEqual(s.next_event()["type"], "MODIFIED")
        self.ok("PATCH", base + "/status", [{"op": "test", "path": "/spec/mode", "value": "x"}],
                content_type="application/json-patch+json", code=422)
        # strategic merge patch is refused for custom resources, unknown types too
        self.assertStatus(self.ok("PATCH", base + "/status", {"status": {}}, code=415,
                                  content_type="application/strategic-merge-patch+json"),
                          415, "UnsupportedMediaType")
        self.ok("PATCH", base + "/status", {"status": {}}, code=415)
        # a no-op write changes nothing and emits nothing
        same = self.ok("GET", base)
        b = self.ok("PATCH", base + "/status", {"status": same["status"]},
                    content_type="application/merge-patch+json")
        self.assertEqual(b["metadata"]["resourceVersion"], same["metadata"]["resourceVersion"])
        s.expect_quiet(0.3)
        # main resource: spec changes bump generation, status is ignored
        upd = self.ok("GET", base)
        upd["spec"]["mode"] = "audit"
        upd["status"] = {"bogus": True}
        b = self.ok("PUT", base, upd)
        self.assertEqual(b["metadata"]["generation"], 2)
        self.assertEqual(b["spec"]["mode"], "audit")
        self.assertNotIn("bogus", b["status"])
        # a custom resource needs metadata.resourceVersion on PUT
        del upd["metadata"]["resourceVersion"]
        self.assertStatus(self.ok("PUT", base, upd, code=422), 422, "Invalid")
        # URL and body names must agree; unknown object: 404
        upd2 = dict(upd, metadata={"name": "other", "namespace": "agents"})
        self.ok("PUT", base, upd2, code=400)
        upd3 = dict(upd, metadata={"name": "nope", "namespace": "agents"})
        self.ok("PUT", AP + "/namespaces/agents/agentpolicies/nope/status", upd3, code=404)

    def test_clusteragentpolicy_status(self):
        base = AP + "/clusteragentpolicies/no-cloud-metadata"
        b = self.ok("PATCH", base + "/status", {"status": {"observedGeneration": 1}},
                    content_type="application/merge-patch+json")
        self.assertEqual(b["status"], {"observedGeneration": 1})
        self.assertEqual(self.ok("GET", base)["status"], {"observedGeneration": 1})
        self.ok("GET", AP + "/namespaces/agents/clusteragentpolicies/no-cloud-metadata", code=404)

    def test_create_delete_via_api(self):
        k = self.k
        s = self.watch(AP + "/namespaces/agents/agentpolicies", resourceVersion=str(k.rv()))
        pol = agentpolicy("p2", "agents", {"selector": {"podSelector": {}}, "egress": []})
        pol["status"] = {"set": "by client"}
        b = self.ok("POST", AP + "/namespaces/agents/agentpolicies", pol, code=201)
        self.assertEqual(b["metadata"]["generation"], 1)
        self.assertEqual(s.next_event()["type"], "ADDED")
        b = self.ok("DELETE", AP + "/namespaces/agents/agentpolicies/p2")
        e = s.next_event()
        self.assertEqual(e["type"], "DELETED")
        self.ok("DELETE", AP + "/namespaces/agents/agentpolicies/p2", code=404)

    def test_admin_semantics(self):
        k = self.k
        s = self.watch(PODS, resourceVersion=str(k.rv()))
        # a new uid under an old name: DELETED then ADDED
        p = pod("coding-agent-7d9f8", "agents", uid="11111111-2222-3333-4444-555555555555")
        k.apply(p)
        e1, e2 = s.next_event(), s.next_event()
        self.assertEqual((e1["type"], e2["type"]), ("DELETED", "ADDED"))
        self.assertEqual(e1["object"]["metadata"]["uid"], "2f0c6a3e-1111-4d6e-9a39-3c1f00000001")
        self.assertEqual(e2["object"]["metadata"]["uid"], p["metadata"]["uid"])
        # the same object again: a no-op, no event, same rv
        before = k.rv()
        stored = k.apply(p)[0]
        self.assertEqual(k.rv(), before)
        self.assertEqual(stored["metadata"]["uid"], p["metadata"]["uid"])
        s.expect_quiet(0.3)
        # apply without uid keeps the uid; generation follows the spec
        p2 = json.loads(json.dumps(p))
        del p2["metadata"]["uid"]
        p2["spec"]["containers"].append({"name": "x", "image": "y"})
        stored = k.apply(p2)[0]
        self.assertEqual(stored["metadata"]["uid"], p["metadata"]["uid"])
        self.assertEqual(stored["metadata"]["generation"], 2)
        self.assertEqual(s.next_event()["type"], "MODIFIED")
        # status through admin apply/patch is accepted (the kubelet's job)
        stored = k.patch("Pod", "coding-agent-7d9f8", {"status": {"phase": "Succeeded"}}, "agents")
        self.assertEqual(stored["status"]["phase"], "Succeeded")
        self.assertEqual(s.next_event()["object"]["status"]["phase"], "Succeeded")
        # errors
        with self.assertRaises(Exception):
            k.delete("Pod", "nope", "agents")
        with self.assertRaises(Exception):
            k.apply({"apiVersion": "v9", "kind": "Widget", "metadata": {"name": "w"}})
        # everything else
        k.apply(service("s", "tools"), endpointslice("s-1", "tools", "s", ["10.0.0.1"]),
                clusteragentpolicy("c", {}), namespace("n"))
        self.assertEqual(len(k.objects("endpointslices")), 2)
        self.assertRegex(container_id("x"), r"^containerd://[0-9a-f]{64}$")

    def test_disable_resource(self):
        k = self.k
        k.resources(disable=["agentpolicies.sluice.dev", "clusteragentpolicies"])
        c, _, b = k.get(AP + "/agentpolicies")
        self.assertEqual(c, 404)
        self.assertEqual(b["message"], "the server could not find the requested resource")
        self.assertEqual(k.get(AP)[0], 404)
        self.assertNotIn("sluice.dev", [g["name"] for g in self.ok("GET", "/apis")["groups"]])
        k.resources(enable=["agentpolicies", "clusteragentpolicies"])
        self.assertEqual(k.get(AP + "/agentpolicies")[0], 200)


class TestProcess(unittest.TestCase):
    def test_sigterm(self):
        with ApiServer(fixtures=FIXTURES) as k:
            s = k.watch(PODS, resourceVersion=str(k.rv()))
            k.wait_watches()
            t0 = time.monotonic()
            self.assertEqual(k.stop(), 0)
            self.assertLess(time.monotonic() - t0, 3)
            self.assertEqual(s.events_until_end(), [])
            self.assertEqual(s.end, "clean")
            self.assertFalse(os.path.exists(k.port_file))
            s.close()

    def test_stdin_eof(self):
        with ApiServer() as k:
            k.proc.stdin.close()
            self.assertEqual(k.proc.wait(5), 0)

    def test_fixture_formats(self):
        d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
        import tempfile
        tmp = tempfile.mkdtemp(prefix="sluice-kube-fix.")
        try:
            with open(os.path.join(tmp, "a.json"), "w") as f:
                json.dump(namespace("from-json"), f)
            with open(os.path.join(tmp, "ignored.txt"), "w") as f:
                f.write("not a fixture")
            if yaml is not None:
                with open(os.path.join(tmp, "b.yaml"), "w") as f:
                    f.write("apiVersion: v1\nkind: Namespace\nmetadata: {name: from-yaml}\n---\n"
                            "apiVersion: sluice.dev/v1alpha1\nkind: AgentPolicy\n"
                            "metadata: {name: y, namespace: from-yaml}\nspec: {}\n")
            with ApiServer(fixtures=tmp) as k:
                names = [o["metadata"]["name"] for o in k.objects("namespaces")]
                self.assertIn("from-json", names)
                if yaml is not None:
                    self.assertIn("from-yaml", names)
            with open(os.path.join(tmp, "c.json"), "w") as f:
                f.write('{"kind": "Widget"}')
            with self.assertRaises(RuntimeError):
                ApiServer(fixtures=tmp).start()
        finally:
            import shutil
            shutil.rmtree(tmp)
        self.assertTrue(os.path.isdir(d))

    def test_cli_port_output(self):
        p = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(
            os.path.abspath(__file__)), "apiserver.py"), "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            port = int(p.stdout.readline())
            with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=5) as r:
                self.assertEqual(r.read(), b"ok")
        finally:
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(5), 0)
            p.stdout.close()
            p.stderr.close()


if __name__ == "__main__":
    res = unittest.main(exit=False, verbosity=1 if "-v" not in sys.argv else 2).result
    failed = len(res.failures) + len(res.errors)
    print("%d passed, %d failed, %d skipped" % (res.testsRun - failed - len(res.skipped), failed,
                                                len(res.skipped)))
    sys.exit(1 if failed else 0)
