#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""Gateway decision logs joined with the kernel's flows, end to end.

A real MCP server (@modelcontextprotocol/server-everything, streamable HTTP)
and a real MCP client (@modelcontextprotocol/sdk, tests/gateway/agent.mjs)
from the npm registry; the client is the agent, run inside a cgroup that a
policy governs, and talks to the server through tests/gateway/gateway.py, a
small reverse proxy that writes one agentgateway text-format line per
request. sluiced follows that log (--gateway-log) and must emit:

- a "gateway" record per line of the agent's session naming the agent's
  cgroup and process (the node process), with the kernel's flow;
- finding policy_drift for a tools/call of a tool missing from `tools:`;
- finding identity_mismatch for a line whose src.identity names another
  workload than the cgroup's (standalone: the claim's service account is
  compared with the name derived from the cgroup, "x.scope" -> "x");
- finding bypass for the agent's direct connections to the MCP server:
  allowed by a class tool rule (basis "class"), and refused (EPERM) to the
  address the gateway names as its upstream (basis "upstream");
- finding unattributed for a forged line whose peer no flow has, after the
  tolerance (1 s).

Also: OTLP/HTTP JSON log export (POST /v1/logs on --metrics) joining a live
connection of the agent, a malformed export refused with 400 and counted;
and the log followed across a daemon restart (same --state-dir) while lines
are appended: every line is handled exactly once.

npm packages come from tests/gateway/package-lock.json (`npm ci` on first
run, into tests/gateway/node_modules). Without node/npm or the registry,
the npm-based test fails under CI=true and is SKIPPED loudly elsewhere.
Run one test: test_gateway.py test_otlp_logs.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from harness import CI, REPO, Env, Suite, eq, free_port, read_events  # noqa: E402
from test_daemon import ENTER, Daemon, Scope, poll, prom_value  # noqa: E402

GWDIR = os.path.join(REPO, "tests", "gateway")
sys.path.insert(0, GWDIR)
import gateway as testgw  # noqa: E402

AGENT = os.path.join(GWDIR, "agent.mjs")
SERVER = os.path.join(GWDIR, "node_modules", "@modelcontextprotocol", "server-everything",
                      "dist", "index.js")
SDK = os.path.join(GWDIR, "node_modules", "@modelcontextprotocol", "sdk", "package.json")
TD = "spiffe://sluice.test/ns/agents/sa/"

suite = Suite()
NPM_TESTS = set()


def needs_npm(fn):
    NPM_TESTS.add(fn.__name__)
    return fn


POLICY = """\
apiVersion: sluice.dev/v1alpha1
kind: AgentPolicy
metadata: {{name: {name}, namespace: itest}}
spec:
  selector: {{cgroupPaths: ["{pattern}"]}}
  egress:
    - name: gateway
      class: gateway
      to: [{{cidr: 127.0.0.1/32}}]
      ports: [{gw_ports}]
      tools: [echo]
{extra}"""

# The MCP server on loopback, reached directly: allowed, and a bypass.
DIRECT_RULE = """\
    - name: everything-direct
      class: tool
      to: [{{cidr: 127.0.0.1/32}}]
      ports: [{{port: {port}}}]
"""


def policy_text(name, pattern, gw_ports, extra=""):
    return POLICY.format(name=name, pattern=pattern, extra=extra,
                         gw_ports=", ".join("{port: %d}" % p for p in gw_ports))


# ---------------------------------------------------------------- set-up

def ensure_npm():
    """None when tests/gateway/node_modules is usable, else why not."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return "node and npm are needed (Debian: apt-get install nodejs npm)"
    v = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    m = re.match(r"v(\d+)", v)
    if not m or int(m.group(1)) < 18:
        return "node %s is too old (the MCP SDK wants 18 or later)" % v
    if os.path.exists(SERVER) and os.path.exists(SDK):
        return None
    print("installing tests/gateway/node_modules (npm ci) ...", flush=True)
    try:
        p = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=GWDIR,
                           capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return "npm ci timed out after 600 s"
    if p.returncode != 0 or not os.path.exists(SERVER):
        return "npm ci failed (%d): %s" % (p.returncode, (p.stderr or p.stdout)[-2000:])
    return None


def host_ipv4():
    """A non-loopback address of this host: the gateway's upstream must not
    be loopback, which is per network namespace and never learnt."""
    try:
        out = subprocess.run(["ip", "-o", "-4", "addr", "show", "scope", "global"],
                             capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            m = re.search(r"\binet (\d+\.\d+\.\d+\.\d+)/", line)
            if m:
                return m.group(1)
    except OSError:
        pass
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("192.0.2.1", 9))      # no packet is sent
        a = s.getsockname()[0]
        s.close()
        return None if a.startswith("127.") else a
    except OSError:
        return None


class Hold:
    """A listener standing for a gateway port: accepts and keeps every
    connection open until closed (this process is not governed)."""

    def __init__(self, env):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.s.bind(("127.0.0.1", 0))
        self.s.listen(512)
        self.port = self.s.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()
        env.closers.append(self.close)

    def _accept(self):
        while True:
            try:
                c, _ = self.s.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        self.s.close()
        for c in self.conns:
            c.close()


# Runs in an agent cgroup: "open" on stdin -> a new connection to PORT, kept
# open, and {"pid", "comm", "sport"} on stdout. EOF: exit.
HOLDER = r"""
import json, socket, sys
port = int(sys.argv[1])
comm = open("/proc/self/comm").read().strip()
socks = []
print(json.dumps({"op": "ready", "pid": __import__("os").getpid(), "comm": comm}), flush=True)
for line in sys.stdin:
    if line.strip() != "open":
        continue
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.connect(("127.0.0.1", port))
        socks.append(s)
        print(json.dumps({"op": "open", "sport": s.getsockname()[1]}), flush=True)
    except OSError as e:
        print(json.dumps({"op": "open", "error": e.errno}), flush=True)
"""


class Holder:
    def __init__(self, s, cg, port):
        self.p = s.spawn_in(cg, [sys.executable, "-c", HOLDER, port],
                            stdin=subprocess.PIPE, bufsize=1)
        hello = json.loads(self.p.stdout.readline())
        eq(hello["op"], "ready", "holder start")
        self.pid, self.comm = hello["pid"], hello["comm"]

    def open(self):
        self.p.stdin.write("open\n")
        self.p.stdin.flush()
        r = json.loads(self.p.stdout.readline())
        if "sport" not in r:
            raise AssertionError("holder connect failed: %r" % r)
        return r["sport"]

    def close(self):
        self.p.stdin.close()
        self.p.wait(5)


class Ctx:
    def __init__(self):
        self.env = Env()
        self.npm_error = ensure_npm()
        if self.npm_error:
            if not CI:
                print("!" * 72)
                print("SKIPPED: %s: %s" % (", ".join(sorted(NPM_TESTS)), self.npm_error))
                print("!" * 72, flush=True)
                # the suite iterates its list after making the context
                suite.tests[:] = [t for t in suite.tests if t.__name__ not in NPM_TESTS]
            return
        self.host_ip = host_ipv4()
        self.mcp_port = free_port()
        self.mcp = self.env.spawn(["node", SERVER, "streamableHttp"], cwd=GWDIR,
                                  env=dict(os.environ, PORT=str(self.mcp_port)),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def listening():
            if self.mcp.poll() is not None:
                raise AssertionError("server-everything exited %d" % self.mcp.returncode)
            try:
                socket.create_connection(("127.0.0.1", self.mcp_port), 0.2).close()
                return True
            except OSError:
                return False
        poll(listening, 15, "server-everything on port %d" % self.mcp_port)


# ---------------------------------------------------------------- helpers

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_post(port, path, body, timeout=3.0):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=body,
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with _opener.open(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def run_agent(cg, url, *calls, headers=()):
    """node agent.mjs in cgroup CG: (exit status, [JSON lines])."""
    argv = ["sh", "-c", ENTER, cg, "node", AGENT, url]
    for tool, args in calls:
        argv += ["--call", tool, json.dumps(args)]
    for h in headers:
        argv += ["--header", h]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=GWDIR)
    out = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    if not out or out[0].get("op") != "start":
        raise AssertionError("agent.mjs printed nothing (exit %d): %s %s"
                             % (p.returncode, p.stdout, p.stderr))
    return p.returncode, out


def agent_ok(cg, url, *calls, headers=()):
    rc, out = run_agent(cg, url, *calls, headers=headers)
    if rc != 0 or out[-1].get("op") != "done":
        raise AssertionError("agent failed (exit %d): %r" % (rc, out))
    return out[0]["pid"], out[-1]["session"], out


def records(path, **match):
    """Event-file records whose dotted fields (a__b) equal MATCH."""
    def get(d, k):
        for part in k.split("__"):
            d = d.get(part) if isinstance(d, dict) else None
        return d
    return [e for e in read_events(path) if all(get(e, k) == v for k, v in match.items())]


def log_lines(path, needle):
    with open(path) as f:
        return [l for l in f if needle in l]


def cgroup_id(path):
    return os.stat(path).st_ino


def assert_workload(e, rel, cg, pid, comm, what):
    eq(e["workload"]["cgroup"], rel, what + ": workload.cgroup")
    eq(e["workload"]["cgroup_id"], cgroup_id(cg), what + ": workload.cgroup_id")
    eq((e["process"]["pid"], e["process"]["comm"]), (pid, comm), what + ": process")


# ---------------------------------------------------------------- tests

@suite.test
@needs_npm
def test_mcp_agent_through_gateway(c):
    if c.npm_error:
        raise AssertionError("npm packages unavailable: " + c.npm_error)
    with Scope(c, "mcp") as s:
        cg = s.cgroup("research-agent.scope")
        rel = s.rel + "/agents/research-agent.scope"
        log = s.env.path("mcp-gateway.log")
        open(log, "w").close()
        upstream = (c.host_ip or "127.0.0.1", c.mcp_port)
        gw = testgw.Gateway(log, upstream, identity=TD + "research-agent").start()
        s.env.closers.append(gw.stop)
        url = "http://127.0.0.1:%d/mcp" % gw.port
        s.policy(policy_text("research-agent", s.pattern("*.scope"), [gw.port],
                             DIRECT_RULE.format(port=c.mcp_port)))
        ev = s.env.path("mcp-events.jsonl")
        d = Daemon(s, ["--events", ev, "--gateway-log", log,
                       "--state-dir", s.env.path("mcp-state")])
        d.wait_ready()

        # (a) through the gateway: echo (listed) and get-sum (not listed)
        pid, sess, out = agent_ok(cg, url, ("echo", {"message": "hello sluice"}),
                                  ("get-sum", {"a": 2, "b": 3}))
        eq([o.get("text") for o in out if o["op"] == "call"],
           ["Echo: hello sluice", "The sum of 2 and 3 is 5."], "tool results")
        if "echo" not in out[1]["names"] or "get-sum" not in out[1]["names"]:
            raise AssertionError("tools/list: %r" % out[1])

        # every line of the session (initialize ... DELETE, and the SDK's
        # GET stream's once it ends) becomes one gateway record of the agent
        def session_joined():
            n = len(log_lines(log, "mcp.session.id=" + sess))
            got = records(ev, type="gateway", gateway__session=sess)
            return gw.active == 0 and n >= 6 and len(got) == n and got
        got = poll(session_joined, 5, "a gateway record for every line of session " + sess)
        methods = ["initialize", "notifications/initialized", "tools/list", "tools/call",
                   "tools/call", "DELETE"]
        if log_lines(log, "http.method=GET "):
            methods.append("GET")
        eq(sorted(g["gateway"]["mcp_method"] or g["gateway"]["http_method"] for g in got),
           sorted(methods), "methods of the session's records")
        flows = {e["socket"]["cookie"]: e for e in records(ev, type="established",
                                                            process__pid=pid)}
        for g in got:
            f = flows.get(g["socket"]["cookie"])
            if not f or (f["src"], f["dst"]) != (g["src"], g["dst"]):
                raise AssertionError("record %r has no established flow of the agent (%r)"
                                     % (g, flows))
            assert_workload(g, rel, cg, pid, "node", "record %s" % g["gateway"]["mcp_method"])
            eq((g["policy"], g["rule"], g["class"], g["dst"]),
               ("itest/research-agent", "gateway", "gateway", "127.0.0.1:%d" % gw.port),
               "policy, rule, class, dst")
            eq(g["src"], g["gateway"]["peer"], "src is the gateway's peer")
            if not g["socket"]["established"] or g["socket"]["established"] > g["start"]:
                raise AssertionError("request not inside its flow: %r" % g)
        echo = [g for g in got if g["gateway"]["tool"] == "echo"]
        eq(len(echo), 1, "records of tools/call echo")
        gwf = echo[0]["gateway"]
        eq({k: gwf[k] for k in ("format", "name", "route", "endpoint", "protocol", "status",
                                "http_method", "http_path", "mcp_method", "mcp_target",
                                "identity", "identity_key")},
           {"format": "agentgateway", "name": "test/gateway", "route": "test/mcp",
            "endpoint": "%s:%d" % upstream, "protocol": "mcp", "status": 200,
            "http_method": "POST", "http_path": "/mcp", "mcp_method": "tools/call",
            "mcp_target": "everything", "identity": TD + "research-agent",
            "identity_key": "src.identity"}, "gateway fields of the echo record")

        # (b) get-sum: allowed by the gateway, absent from tools: [echo]
        drift = poll(lambda: records(ev, type="finding", finding="policy_drift"), 5,
                     "finding policy_drift")
        eq(len(drift), 1, "policy_drift findings")
        f = drift[0]
        eq((f["basis"], f["tool"], f["policy_tools"], f["policy"]),
           ("allowed_unlisted", "get-sum", ["echo"], "itest/research-agent"), "policy_drift")
        eq((f["evidence"]["gateway"]["status"], f["evidence"]["gateway"]["session"]),
           (200, sess), "policy_drift evidence")
        assert_workload(f, rel, cg, pid, "node", "policy_drift")
        eq(records(ev, type="finding", finding="identity_mismatch"), [],
           "identity_mismatch for the agent's own identity")

        # (e) another identity claimed by the gateway for this cgroup
        pid2, sess2, _ = agent_ok(cg, url, ("echo", {"message": "who am i"}),
                                  headers=["X-Sluice-Identity=%sintruder" % TD])

        def mismatches():
            n = len(log_lines(log, "mcp.session.id=" + sess2))
            got = records(ev, type="finding", finding="identity_mismatch",
                          evidence__gateway__session=sess2)
            joined = records(ev, type="gateway", gateway__session=sess2)
            return gw.active == 0 and n >= 5 and len(got) == n and len(joined) == n and got
        mm = poll(mismatches, 5, "identity_mismatch for every line of session " + sess2)
        for f in mm:
            eq((f["basis"], f["claimed"], f["seen"]),
               ("cgroup", {"value": TD + "intruder", "key": "src.identity",
                           "namespace": "agents", "service_account": "intruder"},
                {"namespace": None, "name": "research-agent"}), "identity_mismatch")
            assert_workload(f, rel, cg, pid2, "node", "identity_mismatch")
        eq(len(records(ev, type="finding", finding="identity_mismatch")), len(mm),
           "identity_mismatch only for the intruder's session")

        # (c1) direct to the MCP server on loopback: allowed by the class
        # tool rule, and a bypass all the same
        pid3, _, out3 = agent_ok(cg, "http://127.0.0.1:%d/mcp" % c.mcp_port,
                                 ("echo", {"message": "direct"}))
        eq(out3[2].get("text"), "Echo: direct", "direct call result")
        dst = "127.0.0.1:%d" % c.mcp_port
        byp = poll(lambda: records(ev, type="finding", finding="bypass", dst=dst), 5,
                   "bypass to " + dst)
        eq(len(byp), 1, "bypass findings to %s (one per window)" % dst)
        eq((byp[0]["basis"], byp[0]["verdict"], byp[0]["rule"], byp[0]["class"]),
           ("class", "allow", "everything-direct", "tool"), "bypass (allowed)")
        assert_workload(byp[0], rel, cg, pid3, "node", "bypass (allowed)")

        # (c2) direct to the gateway's upstream address: refused by the
        # kernel (no rule), a bypass learnt from the gateway's endpoint
        if not c.host_ip:
            msg = "no non-loopback IPv4 address: the refused bypass to the upstream is untested"
            if CI:
                raise AssertionError(msg)
            print("!" * 72 + "\nSKIPPED (part): " + msg + "\n" + "!" * 72)
        else:
            up = "%s:%d" % upstream
            rc, out4 = run_agent(cg, "http://%s/mcp" % up, ("echo", {"message": "around"}))
            pid4 = out4[0]["pid"]
            eq((rc, out4[-1]["op"], out4[-1]["step"]), (1, "error", "connect"), "agent to " + up)
            if "EPERM" not in out4[-1]["codes"]:
                raise AssertionError("connect error is not EPERM: %r" % out4[-1])
            deny = poll(lambda: records(ev, type="connect", dst=up, process__pid=pid4), 5,
                        "the kernel's connect record to " + up)
            eq({(e["verdict"], e["rule"], e["policy"]) for e in deny},
               {("deny", "default-deny", "itest/research-agent")}, "connect verdicts")
            byp = poll(lambda: records(ev, type="finding", finding="bypass", dst=up), 5,
                       "bypass to " + up)
            eq(len(byp), 1, "bypass findings to " + up)
            eq((byp[0]["basis"], byp[0]["verdict"], byp[0]["rule"]),
               ("upstream", "deny", "default-deny"), "bypass (refused)")
            if byp[0]["evidence"]["connect"]["cookie"] not in {e["socket"]["cookie"]
                                                               for e in deny}:
                raise AssertionError("bypass evidence is not the refused connect: %r" % byp)
            assert_workload(byp[0], rel, cg, pid4, "node", "bypass (refused)")

        # (d) a forged line: no flow has its peer
        path = "/forged-" + uuid.uuid4().hex
        t0 = time.time()
        testgw.append_line(log, testgw.format_line([
            ("gateway", "test/gateway"), ("listener", "l0"), ("route", "test/mcp"),
            ("src.addr", "127.0.0.1:1"), ("http.method", "POST"), ("http.path", path),
            ("http.status", 200), ("protocol", "mcp"), ("mcp.method.name", "tools/call"),
            ("gen_ai.tool.name", "echo"), ("src.identity", TD + "research-agent"),
            ("duration", "1ms")]))
        un = poll(lambda: records(ev, type="finding", finding="unattributed",
                                  evidence__gateway__http_path=path), 5,
                  "unattributed finding for the forged line")
        waited = time.time() - t0
        if waited < 0.95:
            raise AssertionError("unattributed after %.2fs, before the 1 s tolerance" % waited)
        eq(len(un), 1, "unattributed findings for the forged line")
        eq((un[0]["peer"], un[0]["workload"], un[0]["process"], un[0]["policy"]),
           ("127.0.0.1:1", None, None, None), "unattributed")
        eq(records(ev, type="gateway", gateway__http_path=path), [], "forged line joined")
        # nothing the real agent sent went unattributed
        eq([f["evidence"]["gateway"]["peer"] for f in
            records(ev, type="finding", finding="unattributed")], ["127.0.0.1:1"],
           "unattributed findings")
        eq(d.stop()[0], 0, "daemon exit")


@suite.test
def test_otlp_logs(c):
    with Scope(c, "otlp") as s:
        hold = Hold(s.env)
        cg = s.cgroup("otlp-agent.scope")
        rel = s.rel + "/agents/otlp-agent.scope"
        s.policy(policy_text("otlp-agent", s.pattern("*.scope"), [hold.port]))
        ev = s.env.path("otlp-events.jsonl")
        d = Daemon(s, ["--events", ev, "--state-dir", s.env.path("otlp-state")])
        d.wait_ready()
        h = Holder(s, cg, hold.port)
        sport = h.open()
        peer = "127.0.0.1:%d" % sport
        poll(lambda: records(ev, type="established", src=peer), 5, "established " + peer)

        def attr(k, v):
            return {"key": k, "value": ({"intValue": str(v)} if isinstance(v, int)
                                        else {"stringValue": v})}
        now = time.time_ns()
        p_attr, p_body = "/otlp-attrs-" + uuid.uuid4().hex, "/otlp-body-" + uuid.uuid4().hex
        body_line = testgw.format_line([("src.addr", peer), ("http.method", "POST"),
                                        ("http.path", p_body), ("http.status", 200),
                                        ("protocol", "mcp"), ("mcp.method.name", "tools/list"),
                                        ("duration", "1ms")], now)
        req = {"resourceLogs": [{
            "resource": {"attributes": [attr("service.name", "agentgateway")]},
            "scopeLogs": [{"scope": {"name": "agentgateway"}, "logRecords": [
                {"timeUnixNano": str(now), "severityText": "INFO", "attributes": [
                    attr("gateway", "test/otlp"), attr("src.addr", peer),
                    attr("http.method", "POST"), attr("http.path", p_attr),
                    attr("http.status", 200), attr("protocol", "mcp"),
                    attr("mcp.method.name", "tools/call"), attr("gen_ai.tool.name", "echo"),
                    attr("duration", "2ms")]},
                {"timeUnixNano": str(now), "body": {"stringValue": body_line}},
            ]}]}]}
        code, text = http_post(d.port, "/v1/logs", json.dumps(req).encode())
        eq(code, 200, "POST /v1/logs: " + text)
        for path, method in ((p_attr, "tools/call"), (p_body, "tools/list")):
            g = poll(lambda: records(ev, type="gateway", gateway__http_path=path), 5,
                     "gateway record of " + path)
            eq(len(g), 1, "records of " + path)
            g = g[0]
            eq((g["gateway"]["peer"], g["src"], g["gateway"]["mcp_method"], g["gateway"]["status"],
                g["rule"], g["class"], g["dst"]),
               (peer, peer, method, 200, "gateway", "gateway", "127.0.0.1:%d" % hold.port),
               "OTLP record " + path)
            assert_workload(g, rel, cg, h.pid, h.comm, "OTLP record " + path)
        eq(records(ev, type="gateway", gateway__http_path=p_attr)[0]["gateway"]["tool"], "echo",
           "tool from the attributes")

        def rejected():
            return prom_value(d.metrics()[0], "sluice_gateway_lines_rejected_total",
                              source="otlp") or 0
        before = rejected()
        for bad in (b"{not json", b'{"resourceSpans": []}'):
            code, text = http_post(d.port, "/v1/logs", bad)
            eq(code, 400, "malformed OTLP %r" % bad)
            if "error" not in json.loads(text):
                raise AssertionError("400 without an error: %r" % text)
        eq(rejected(), before + 2, "sluice_gateway_lines_rejected_total{source=otlp}")
        h.close()
        eq(d.stop()[0], 0, "daemon exit")


@suite.test
def test_tail_across_restart(c):
    """Lines appended while the daemon is stopped and started again with
    the same --state-dir: each handled once, none twice, none lost."""
    with Scope(c, "tail") as s:
        hold = Hold(s.env)
        cg = s.cgroup("tail-agent.scope")
        rel = s.rel + "/agents/tail-agent.scope"
        s.policy(policy_text("tail-agent", s.pattern("*.scope"), [hold.port]))
        ev = s.env.path("tail-events.jsonl")
        log = s.env.path("tail-gateway.log")
        open(log, "w").close()
        args = ["--events", ev, "--gateway-log", log, "--state-dir", s.env.path("tail-state")]
        d = Daemon(s, args)
        d.wait_ready()
        h = Holder(s, cg, hold.port)
        tag = uuid.uuid4().hex[:8]
        sent = []               # (path, time opened, time written)
        stop = threading.Event()
        errors = []

        def writer():
            try:
                i = 0
                while not stop.is_set():
                    t_open = time.time()
                    sport = h.open()
                    path = "/tail-%s/%d" % (tag, i)
                    testgw.append_line(log, testgw.format_line([
                        ("gateway", "test/tail"), ("src.addr", "127.0.0.1:%d" % sport),
                        ("http.method", "POST"), ("http.path", path), ("http.status", 200),
                        ("protocol", "mcp"), ("mcp.method.name", "tools/list"),
                        ("duration", "0ms")]))
                    sent.append((path, t_open, time.time()))
                    i += 1
                    time.sleep(0.01)
            except Exception as e:     # reported by the test below
                errors.append(e)
        t = threading.Thread(target=writer, daemon=True)
        t.start()
        time.sleep(0.6)
        t_term = time.time()
        rc = d.stop()[0]
        if rc != 0:
            raise AssertionError("first daemon exited %d on SIGTERM while lines were appended:\n%s"
                                 % (rc, d.stderr()[-2000:]))
        time.sleep(0.2)         # lines keep coming while no daemon runs
        d2 = Daemon(s, args, sock=d.sock)
        d2.wait_ready()
        t_ready = time.time()
        time.sleep(0.6)
        stop.set()
        t.join(5)
        if errors:
            raise errors[0]
        paths = {p for p, _, _ in sent}

        def handled():
            out = {}
            for e in read_events(ev):
                if e.get("type") == "gateway":
                    p = e["gateway"]["http_path"]
                elif e.get("type") == "finding" and e.get("finding") == "unattributed":
                    p = e["evidence"]["gateway"]["http_path"]
                else:
                    continue
                out.setdefault(p, []).append(e)
            return out
        got = poll(lambda: (lambda o: set(o) >= paths and o)(handled()), 5,
                   "a record for each of the %d lines" % len(sent))
        eq(sorted(set(got) - paths), [], "records of lines never written")
        twice = {p: [e["type"] for e in v] for p, v in got.items() if len(v) != 1}
        eq(twice, {}, "lines handled more than once")
        before = [p for p, t_open, t_written in sent if t_written < t_term]
        after = [p for p, t_open, _ in sent if t_open > t_ready]
        if len(before) < 10 or len(after) < 10:
            raise AssertionError("too few lines around the restart: %d before, %d after"
                                 % (len(before), len(after)))
        # written while the first daemon ran: it read them, even in its
        # last poll on SIGTERM, and had their flows; flows opened once the
        # second one was ready: it has them. Between: flows it never saw
        # (no reader) may be unattributed, but still once.
        for p in before + after:
            e = got[p][0]
            eq(e["type"], "gateway", "record of %s" % p)
            assert_workload(e, rel, cg, h.pid, h.comm, "record of %s" % p)
        h.close()
        eq(d2.stop()[0], 0, "second daemon exit")


@suite.test
def test_restart_knows_open_flows(c):
    """A connection opened while one daemon ran is joined by the next one
    (the kernel's flow iterator), not reported unattributed."""
    with Scope(c, "reopen") as s:
        hold = Hold(s.env)
        cg = s.cgroup("reopen-agent.scope")
        rel = s.rel + "/agents/reopen-agent.scope"
        s.policy(policy_text("reopen-agent", s.pattern("*.scope"), [hold.port]))
        log = s.env.path("reopen-gateway.log")
        open(log, "w").close()
        ev1, ev2 = s.env.path("reopen-1.jsonl"), s.env.path("reopen-2.jsonl")
        args = ["--gateway-log", log, "--gateway-format", "agentgateway",
                "--state-dir", s.env.path("reopen-state")]
        d1 = Daemon(s, ["--events", ev1] + args)
        d1.wait_ready()
        h = Holder(s, cg, hold.port)
        sport = h.open()
        peer = "127.0.0.1:%d" % sport
        poll(lambda: records(ev1, type="established", src=peer), 5, "established " + peer)
        eq(d1.stop()[0], 0, "first daemon exit")
        d2 = Daemon(s, ["--events", ev2] + args)
        d2.wait_ready()
        if "open flow(s) from before this start, 1 to gateway listeners" not in d2.stderr():
            raise AssertionError("no recovered flow:\n" + d2.stderr())
        path = "/reopen-" + uuid.uuid4().hex
        testgw.append_line(log, testgw.format_line([
            ("gateway", "test/reopen"), ("src.addr", peer), ("http.method", "POST"),
            ("http.path", path), ("http.status", 200), ("protocol", "mcp"),
            ("mcp.method.name", "tools/list"), ("duration", "1ms")]))
        g = poll(lambda: records(ev2, type="gateway", gateway__http_path=path), 5,
                 "record of " + path)
        eq((len(g), g[0]["src"], g[0]["rule"], g[0]["class"], g[0]["policy"]),
           (1, peer, "gateway", "gateway", "itest/reopen-agent"), "joined after the restart")
        assert_workload(g[0], rel, cg, h.pid, h.comm, "record after the restart")
        time.sleep(1.5)    # past the tolerance: nothing else comes of it
        eq(records(ev2, type="finding", finding="unattributed", evidence__gateway__http_path=path),
           [], "unattributed after the restart")
        h.close()
        eq(d2.stop()[0], 0, "second daemon exit")


@suite.test
def test_log_pattern_follows_pods(c):
    """--gateway-log with a glob, as the DaemonSet reads gateway pods' CRI
    logs: files there at start are read from their end, files that appear
    (a new pod) from their start, and a deleted pod's file is let go."""
    with Scope(c, "glob") as s:
        pods = s.env.path("pods")
        ev = s.env.path("glob-events.jsonl")

        def cri(path, http_path):
            line = testgw.format_line([("src.addr", "127.0.0.1:1"), ("http.method", "POST"),
                                       ("http.path", http_path), ("http.status", 200),
                                       ("protocol", "mcp"), ("duration", "1ms")])
            ts = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())
            testgw.append_line(path, "%s stdout F %s" % (ts, line))

        def pod_log(name):
            d = os.path.join(pods, "agw_%s_%s" % (name, uuid.uuid4()), "agentgateway")
            os.makedirs(d)
            return os.path.join(d, "0.log")

        def seen(http_path):
            return records(ev, type="finding", finding="unattributed",
                           evidence__gateway__http_path=http_path)

        def files():
            return prom_value(d.metrics()[0], "sluice_gateway_log_files")
        a = pod_log("gw-a")
        cri(a, "/before-start")
        d = Daemon(s, ["--events", ev, "--gateway-log", pods + "/agw_gw-*/*/*.log",
                       "--state-dir", s.env.path("glob-state")])
        d.wait_ready()
        cri(a, "/a-after-start")
        poll(lambda: seen("/a-after-start"), 8, "a line appended to a file there at start")
        b = pod_log("gw-b")
        cri(b, "/b-new-pod")
        poll(lambda: seen("/b-new-pod"), 8, "the first line of a new pod's log")
        eq(files(), 2, "files followed")
        eq(seen("/before-start"), [], "a line written before the daemon started")
        shutil.rmtree(os.path.dirname(os.path.dirname(a)))
        poll(lambda: files() == 1, 20, "the deleted pod's file let go")
        eq(d.stop()[0], 0, "daemon exit")


# ---------------------------------------------------------------- two nodes

def peer_post(port, body, token=None, timeout=3.0):
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request("http://127.0.0.1:%d/v1/flows/lookup" % port, data=body,
                                 headers=headers, method="POST")
    try:
        with _opener.open(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class TwoNodes:
    """Node A reads the gateway's log; node B's daemon (its own cgroup
    subtree and pin path) governs the agent. A has no flow for the agent's
    requests and must get it from B over the lookup API."""

    def __init__(self, c, name, a_peer_args, b_peer_args, peers):
        self.a = Scope(c, name + "a")
        self.b = Scope(c, name + "b", pin=c.env.pin + "-" + name + "b")
        self.hold = Hold(self.b.env)
        self.cg = self.b.cgroup("x-agent.scope")
        self.rel = self.b.rel + "/agents/x-agent.scope"
        self.b.policy(policy_text("x-agent", self.b.pattern("*.scope"), [self.hold.port]))
        self.log = c.env.path(name + "-gateway.log")
        open(self.log, "w").close()
        self.ev_a = c.env.path(name + "-a.jsonl")
        self.ev_b = c.env.path(name + "-b.jsonl")
        self.b_port = free_port()
        self.db = Daemon(self.b, ["--node", "node-b", "--events", self.ev_b,
                                  "--peer-listen", "127.0.0.1:%d" % self.b_port] + b_peer_args)
        self.db.wait_ready()
        self.da = Daemon(self.a, ["--node", "node-a", "--events", self.ev_a,
                                  "--gateway-log", self.log, "--gateway-format", "agentgateway",
                                  "--state-dir", c.env.path(name + "-state")] +
                         [x for p in peers(self.b_port) for x in ("--peer", p)] + a_peer_args)
        self.da.wait_ready()

    def close(self):
        for s in (self.b, self.a):
            s.__exit__(None, None, None)


def two_nodes_join(t, token=None):
    """An agent on B through the gateway: A's joined record names B's
    workload and process; a tool outside tools: is drift seen from A."""
    h = Holder(t.b, t.cg, t.hold.port)
    sport = h.open()
    peer = "127.0.0.1:%d" % sport
    poll(lambda: records(t.ev_b, type="established", src=peer), 5, "established on B " + peer)
    path = "/x-" + uuid.uuid4().hex
    testgw.append_line(t.log, testgw.format_line([
        ("gateway", "test/x"), ("src.addr", peer), ("http.method", "POST"),
        ("http.path", path), ("http.status", 200), ("protocol", "mcp"),
        ("mcp.method.name", "tools/call"), ("gen_ai.tool.name", "printEnv"),
        ("duration", "2ms")]))
    g = poll(lambda: records(t.ev_a, type="gateway", gateway__http_path=path), 8,
             "A's gateway record of " + path)
    eq(len(g), 1, "records of " + path)
    g = g[0]
    eq((g["node"], g["workload"]["node"], g["src"], g["rule"], g["class"], g["policy"]),
       ("node-a", "node-b", peer, "gateway", "gateway", "itest/x-agent"), "joined across nodes")
    assert_workload(g, t.rel, t.cg, h.pid, h.comm, "record from B")
    d = poll(lambda: records(t.ev_a, type="finding", finding="policy_drift",
                             evidence__gateway__http_path=path), 5, "drift of " + path)
    eq((d[0]["tool"], d[0]["policy_tools"], d[0]["workload"]["node"]),
       ("printEnv", ["echo"], "node-b"), "drift with B's tools")
    eq(records(t.ev_a, type="finding", finding="unattributed", evidence__gateway__http_path=path),
       [], "unattributed for a record B had")
    h.close()
    return peer


@suite.test
def test_cross_node_token(c):
    tok = c.env.path("peer-token")
    with open(tok, "w") as f:
        f.write(uuid.uuid4().hex + "\n")
    dead = free_port()
    t = TwoNodes(c, "xt", ["--peer-token-file", tok], ["--peer-token-file", tok],
                 lambda bp: ["http://127.0.0.1:%d" % bp, "http://127.0.0.1:%d" % dead])
    try:
        two_nodes_join(t)
        # forged: nobody has it, one peer unreachable (retried, then given up)
        path = "/forged-" + uuid.uuid4().hex
        testgw.append_line(t.log, testgw.format_line([
            ("src.addr", "127.0.0.1:1"), ("http.method", "POST"), ("http.path", path),
            ("http.status", 200), ("protocol", "mcp"), ("duration", "1ms")]))
        u = poll(lambda: records(t.ev_a, type="finding", finding="unattributed",
                                 evidence__gateway__http_path=path), 15, "unattributed " + path)
        eq(len(u), 1, "one unattributed finding")
        if "2 other nodes asked: 1 without it, 1 unreachable" not in u[0]["detail"]:
            raise AssertionError("detail: %r" % u[0]["detail"])
        ma, mb = t.da.metrics()[0], t.db.metrics()[0]
        bname, dname = "127.0.0.1:%d" % t.b_port, "127.0.0.1:%d" % dead
        eq(prom_value(ma, "sluice_peer_lookups_total", peer=bname, result="found"), 1,
           "A: found on B")
        eq(prom_value(ma, "sluice_peer_lookups_total", peer=bname, result="not_found"), 1,
           "A: forged not on B")
        eq(prom_value(ma, "sluice_peer_lookups_total", peer=dname, result="unreachable") >= 1,
           True, "A: dead peer unreachable")
        eq(prom_value(ma, "sluice_peer_retries_total", peer=dname) >= 1, True,
           "A: dead peer retried")
        eq(prom_value(ma, "sluice_peer_up", peer=dname), 0, "A: dead peer down")
        eq(prom_value(ma, "sluice_gateway_remote_joined_total"), 1, "A: joined remotely")
        eq(prom_value(mb, "sluice_peer_lookups_served_total", result="found"), 1, "B: served")
        # the API refuses without the token, with a wrong one, and a bad request
        body = json.dumps({"lookups": [{"peer": "127.0.0.1:1", "start_ns": "1"}]}).encode()
        eq(peer_post(t.b_port, body)[0], 401, "no token")
        eq(peer_post(t.b_port, body, "x" * 32)[0], 401, "wrong token")
        good = open(tok).read().strip()
        code, text = peer_post(t.b_port, body, good)
        eq((code, json.loads(text)), (200, {"node": "node-b", "results": [None]}), "valid lookup")
        code, text = peer_post(t.b_port, b'{"lookups":[{"peer":"nope","start_ns":"1"}]}', good)
        eq(code, 400, "bad lookup")
        if "lookups[0].peer" not in json.loads(text)["error"]:
            raise AssertionError("400 error: %r" % text)
        mb = t.db.metrics()[0]
        eq(prom_value(mb, "sluice_peer_requests_refused_total", reason="unauthorized"), 2,
           "B: refused unauthorized")
        eq(prom_value(mb, "sluice_peer_requests_refused_total", reason="bad_request"), 1,
           "B: refused bad request")
        # a rotated token is read again by both sides
        with open(tok + ".new", "w") as f:
            f.write(uuid.uuid4().hex)
        os.rename(tok + ".new", tok)
        new = open(tok).read().strip()
        eq(peer_post(t.b_port, body, good)[0], 200, "old token within the grace after rotation")
        eq(peer_post(t.b_port, body, new)[0], 200, "new token after rotation")
        eq(peer_post(t.b_port, body, "y" * 32)[0], 401, "wrong token after rotation")
        two_nodes_join(t)
        eq(t.da.stop()[0], 0, "A exit")
        eq(t.db.stop()[0], 0, "B exit")
    finally:
        t.close()


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


@suite.test
def test_cross_node_mtls(c):
    d = c.env.path("pki")
    os.makedirs(d)
    ca, cakey = os.path.join(d, "ca.crt"), os.path.join(d, "ca.key")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", cakey, "-out", ca, "-days", "1", "-subj", "/CN=sluice-test-ca")
    crt, key = os.path.join(d, "node.crt"), os.path.join(d, "node.key")
    csr = os.path.join(d, "node.csr")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", csr, "-subj", "/CN=sluiced")
    ext = os.path.join(d, "ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:sluiced\nextendedKeyUsage=serverAuth,clientAuth\n")
    openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", cakey, "-CAcreateserial",
            "-out", crt, "-days", "1", "-extfile", ext)
    # a certificate of another CA: refused
    oca, ocakey = os.path.join(d, "other.crt"), os.path.join(d, "other.key")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", ocakey, "-out", oca, "-days", "1", "-subj", "/CN=other")
    tls = ["--peer-tls-cert", crt, "--peer-tls-key", key, "--peer-tls-ca", ca]
    t = TwoNodes(c, "xm", tls, tls, lambda bp: ["https://127.0.0.1:%d" % bp])
    try:
        two_nodes_join(t)
        url = "https://127.0.0.1:%d/v1/flows/lookup" % t.b_port
        data = '{"lookups":[]}'

        def curl(*extra):
            r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                "--cacert", ca, "--resolve", "sluiced:%d:127.0.0.1" % t.b_port,
                                "-d", data, url.replace("127.0.0.1", "sluiced")] + list(extra),
                               capture_output=True, text=True, timeout=10)
            return r.stdout
        eq(curl("--cert", crt, "--key", key), "200", "client certificate of the CA")
        eq(curl(), "403", "no client certificate")
        eq(curl("--cert", oca, "--key", ocakey) in ("403", "000"), True,
           "client certificate of another CA")
        eq(t.da.stop()[0], 0, "A exit")
        eq(t.db.stop()[0], 0, "B exit")
    finally:
        t.close()


if __name__ == "__main__":
    sys.exit(suite.main(Ctx))
