#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""The datapath end to end: `sluice run` with real BPF in real cgroups.

Each test asserts what a user sees: the syscall's real result (from
sockprobe) and the event the kernel reported for it (verdict, rule,
destination, pid, comm). Run one test: test_datapath.py test_tcp4.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (PROBE, SLUICE, Env, Suite, TcpEcho, Udp, eq, get, iter_events, read_events,  # noqa: E402
                     sluice, sluice_run, sluice_run_argv, wait_for, write_policy)

suite = Suite()

POLICY = """\
apiVersion: sluice.dev/v1alpha1
kind: AgentPolicy
metadata: {{name: itest, namespace: agents}}
spec:
  selector: {{cgroupPaths: ["*"]}}
{extra_spec}  egress:
    - name: llm
      class: llm
      to: [{{cidr: 127.0.0.1/32}}, {{cidr: "::1/128"}}]
      ports: [{{port: {allow}, protocol: TCP}}]
    - name: tool-udp
      class: tool
      to: [{{cidr: 127.0.0.1/32}}]
      ports: [{{port: {udp_allow}, protocol: UDP}}]
{extra_rules}"""


class Ctx:
    def __init__(self):
        self.env = Env()
        self.allow = TcpEcho(self.env)      # allowed by the policy
        self.deny = TcpEcho(self.env)       # listening, but not allowed
        self.udp_allow = Udp(self.env)
        self.udp_deny = Udp(self.env)
        self.policy = self.make_policy()

    def make_policy(self, extra_spec="", extra_rules="", name=None):
        return write_policy(self.env, POLICY.format(
            allow=self.allow.port, udp_allow=self.udp_allow.port,
            extra_spec=extra_spec, extra_rules=extra_rules), name)


def probe_event(run, res, type_="connect", **match):
    """The one event of TYPE from the probe's own pid."""
    evs = run.ev(type=type_, process__pid=res["pid"], **match)
    if len(evs) != 1:
        raise AssertionError("expected one %s event of pid %s matching %s, got %d:\n%s\nstderr: %s"
                             % (type_, res["pid"], match, len(evs),
                                "\n".join(json.dumps(e) for e in run.events), run.stderr))
    return evs[0]


def assert_verdict(ev, verdict, rule, dst, comm="sockprobe"):
    eq(ev["verdict"], verdict, "verdict")
    eq(ev["rule"], rule, "rule")
    eq(ev["dst"], dst, "dst")
    eq(ev["process"]["comm"], comm, "comm")
    eq(ev["mode"], "enforce" if verdict != "audit" else "audit", "mode")


@suite.test
def test_tcp4_allow(c):
    r = sluice_run(c.env, [c.policy], [PROBE, "tcp-connect", "127.0.0.1", str(c.allow.port),
                                       "--send", "1000"])
    res = r.probe()
    eq(res["ret"], 0, "connect ret")
    eq(r.rc, 0, "sluice run exit status (CMD's)")
    ev = probe_event(r, res)
    assert_verdict(ev, "allow", "llm", "127.0.0.1:%d" % c.allow.port)
    eq(ev["class"], "llm", "class")
    eq(ev["policy"], "agents/itest", "policy")
    eq(ev["socket"]["family"], "ipv4", "family")
    eq(ev["socket"]["protocol"], "tcp", "protocol")
    # lifecycle: the same socket, with the source address the probe saw
    est = probe_event(r, res, "established")
    eq(est["socket"]["cookie"], ev["socket"]["cookie"], "cookie")
    eq(est["src"], res["local"], "established src")
    eq(est["rule"], "llm", "established rule")
    close = probe_event(r, res, "close")
    eq(close["bytes_sent"], 1000, "bytes_sent")
    eq(close["bytes_received"], 1000, "bytes_received")
    if close["duration_ns"] <= 0:
        raise AssertionError("close duration_ns %r" % close["duration_ns"])


@suite.test
def test_tcp4_deny(c):
    r = sluice_run(c.env, [c.policy], [PROBE, "tcp-connect", "127.0.0.1", str(c.deny.port)])
    res = r.probe()
    eq(res["errname"], "EPERM", "connect errno")
    ev = probe_event(r, res)
    assert_verdict(ev, "deny", "default-deny", "127.0.0.1:%d" % c.deny.port)
    eq(ev["policy"], "agents/itest", "policy")
    # without --events, refusals are told on stderr
    p = subprocess.run([SLUICE, "run", "--pin-path", c.env.pin, "--cgroup-root", c.env.cg_root,
                        "--policy", c.policy, "--", PROBE, "tcp-connect", "127.0.0.1",
                        str(c.deny.port)], capture_output=True, text=True, timeout=30)
    if "refused connect to 127.0.0.1:%d" % c.deny.port not in p.stderr:
        raise AssertionError("no refusal on stderr: %r" % p.stderr)


@suite.test
def test_tcp6(c):
    r = sluice_run(c.env, [c.policy], [PROBE, "tcp-connect", "::1", str(c.allow.port)])
    res = r.probe()
    eq(res["ret"], 0, "connect ::1 allowed")
    assert_verdict(probe_event(r, res), "allow", "llm", "[::1]:%d" % c.allow.port)
    r = sluice_run(c.env, [c.policy], [PROBE, "tcp-connect", "::1", str(c.deny.port)])
    res = r.probe()
    eq(res["errname"], "EPERM", "connect ::1 denied")
    ev = probe_event(r, res)
    assert_verdict(ev, "deny", "default-deny", "[::1]:%d" % c.deny.port)
    eq(ev["socket"]["family"], "ipv6", "family")


@suite.test
def test_v4_mapped(c):
    """A dual-stack socket to ::ffff:a.b.c.d meets the IPv4 rules."""
    r = sluice_run(c.env, [c.policy], [PROBE, "tcp-connect", "::ffff:127.0.0.1", str(c.deny.port)])
    res = r.probe()
    eq(res["errname"], "EPERM", "mapped connect denied")
    ev = probe_event(r, res)
    assert_verdict(ev, "deny", "default-deny", "[::ffff:127.0.0.1]:%d" % c.deny.port)
    r = sluice_run(c.env, [c.policy], [PROBE, "tcp-connect", "::ffff:127.0.0.1", str(c.allow.port)])
    res = r.probe()
    eq(res["ret"], 0, "mapped connect allowed by the v4 rule")
    assert_verdict(probe_event(r, res), "allow", "llm", "[::ffff:127.0.0.1]:%d" % c.allow.port)


@suite.test
def test_udp_connect(c):
    r = sluice_run(c.env, [c.policy], [PROBE, "udp-connect", "127.0.0.1", str(c.udp_deny.port)])
    res = r.probe()
    eq(res["errname"], "EPERM", "udp connect denied")
    ev = probe_event(r, res)
    assert_verdict(ev, "deny", "default-deny", "127.0.0.1:%d" % c.udp_deny.port)
    eq(ev["socket"]["protocol"], "udp", "protocol")
    r = sluice_run(c.env, [c.policy], [PROBE, "udp-connect", "127.0.0.1", str(c.udp_allow.port)])
    res = r.probe()
    eq(res["ret"], 0, "udp connect allowed")
    ev = probe_event(r, res)
    assert_verdict(ev, "allow", "tool-udp", "127.0.0.1:%d" % c.udp_allow.port)
    eq(ev["class"], "tool", "class")


@suite.test
def test_udp_sendto(c):
    c.udp_deny.drain()
    r = sluice_run(c.env, [c.policy], [PROBE, "udp-sendto", "127.0.0.1", str(c.udp_deny.port)])
    res = r.probe()
    eq(res["errname"], "EPERM", "sendto denied")
    assert_verdict(probe_event(r, res, "sendmsg"), "deny", "default-deny",
                   "127.0.0.1:%d" % c.udp_deny.port)
    eq(c.udp_deny.drain(), 0, "datagrams that reached the denied port")
    r = sluice_run(c.env, [c.policy], [PROBE, "udp-sendto", "127.0.0.1", str(c.udp_allow.port)])
    res = r.probe()
    eq(res["ret"], 1, "sendto allowed")
    assert_verdict(probe_event(r, res, "sendmsg"), "allow", "tool-udp",
                   "127.0.0.1:%d" % c.udp_allow.port)


@suite.test
def test_sendmmsg_stops_at_denied(c):
    a, d = "127.0.0.1:%d" % c.udp_allow.port, "127.0.0.1:%d" % c.udp_deny.port
    c.udp_allow.drain()
    c.udp_deny.drain()
    r = sluice_run(c.env, [c.policy], [PROBE, "sendmmsg", a, d, a])
    res = r.probe()
    eq(res["ret"], 1, "messages sent (the batch stops at the denied one)")
    evs = [e for e in r.ev(type="sendmsg", process__pid=res["pid"])]
    eq([e["verdict"] for e in evs], ["allow", "deny"], "verdicts in order")
    eq(evs[1]["dst"], d, "denied destination")
    eq(c.udp_deny.drain(), 0, "datagrams that reached the denied port")
    eq(c.udp_allow.drain(), 1, "datagrams that reached the allowed port")


@suite.test
def test_tcp_fast_open(c):
    for op in ("tfo", "tfo-connect"):
        r = sluice_run(c.env, [c.policy], [PROBE, op, "127.0.0.1", str(c.deny.port)])
        res = r.probe()
        eq(res["errname"], "EPERM", op + " denied")
        assert_verdict(probe_event(r, res), "deny", "default-deny", "127.0.0.1:%d" % c.deny.port)


@suite.test
def test_io_uring_connect(c):
    for extra in ([], ["--async"]):
        r = sluice_run(c.env, [c.policy],
                       [PROBE, "uring-connect", "127.0.0.1", str(c.deny.port)] + extra)
        res = r.probe()
        eq(res["errname"], "EPERM", "io_uring connect %s denied" % extra)
        evs = r.ev(type="connect", process__pid=res["pid"])
        eq(len(evs), 1, "one connect event")
        eq(evs[0]["verdict"], "deny", "verdict")
        eq(evs[0]["dst"], "127.0.0.1:%d" % c.deny.port, "dst")
        # with IOSQE_ASYNC the hook runs in an io-wq worker of the same process
        if extra and not evs[0]["process"]["comm"].startswith(("iou-wrk", "sockprobe")):
            raise AssertionError("unexpected comm %r" % evs[0]["process"]["comm"])
    r = sluice_run(c.env, [c.policy], [PROBE, "uring-connect", "127.0.0.1", str(c.allow.port)])
    eq(r.probe()["ret"], 0, "io_uring connect allowed")


@suite.test
def test_raw_socket_refused(c):
    for fam in ("4", "6"):
        r = sluice_run(c.env, [c.policy], [PROBE, "raw", fam])
        res = r.probe()
        eq(res["errname"], "EPERM", "raw socket v%s refused" % fam)
        ev = probe_event(r, res, "sock_create")
        eq(ev["verdict"], "deny", "verdict")
        eq(ev["rule"], "raw-socket", "rule")
        eq(ev["socket"]["type"], "raw", "socket type")
    # ICMP "ping" sockets carry payloads without a sendmsg hook: refused too
    code = ("import socket,errno\n"
            "try:\n socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP); print('ok')\n"
            "except OSError as e: print(errno.errorcode[e.errno])")
    # root may open them only if its group is in ping_group_range: open it
    # up for this check and put it back whatever happens
    rng = "/proc/sys/net/ipv4/ping_group_range"
    saved = open(rng).read().strip()
    try:
        with open(rng, "w") as f:
            f.write("0 0")
        r = sluice_run(c.env, [c.policy], ["python3", "-c", code])
        plain = subprocess.run(["python3", "-c", code], capture_output=True, text=True).stdout
    finally:
        with open(rng, "w") as f:
            f.write(saved)
    eq(plain.strip(), "ok", "ping socket outside (the kernel allows it)")
    eq(r.stdout.strip(), "EPERM", "ping socket in a governed cgroup")
    ev = [e for e in r.events if e["type"] == "sock_create"]
    eq([(e["verdict"], e["socket"]["type"]) for e in ev], [("deny", "dgram")], "ping socket event")
    # Outside any governed cgroup raw sockets are untouched.
    p = subprocess.run([PROBE, "raw", "4"], capture_output=True, text=True)
    eq(json.loads(p.stdout.strip().splitlines()[-1])["ret"] >= 0, True, "ungoverned raw socket")


@suite.test
def test_accepted_socket_inherits_listener_tag(c):
    port = TcpEcho.__init__.__defaults__ and None
    from harness import free_port
    port = free_port()
    ready = c.env.path("ready-%d" % port)
    events = c.env.path("accept-events.jsonl")
    p = c.env.spawn(sluice_run_argv(c.env, [c.policy],
                                    [PROBE, "serve-echo", "127.0.0.1", str(port), "--count", "1",
                                     "--ready-file", ready], events))
    wait_for(lambda: os.path.exists(ready) and os.path.getsize(ready) > 0, 10, "listener")
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    client = "127.0.0.1:%d" % s.getsockname()[1]
    s.sendall(b"x" * 10)
    eq(s.recv(100), b"x" * 10, "echo")
    s.close()
    p.wait(10)
    evs = [e for e in read_events(events) if e["type"] == "established"]
    eq(len(evs), 1, "established events of the accepted socket")
    ev = evs[0]
    eq(ev["direction"], "in", "direction")
    eq(ev["src"], "127.0.0.1:%d" % port, "local address")
    eq(ev["dst"], client, "peer address")
    eq(ev["process"]["comm"], "sockprobe", "the listener's creator")
    eq(ev["mode"], "enforce", "governed by the listener's identity")
    eq(ev["rule"], "inbound", "rule of an accepted connection")


@suite.test
def test_scm_rights_into_governed(c):
    """A socket made outside and handed in is governed by the process using it.

    "Outside" is an ungoverned cgroup below the attach point: the kernel runs
    the hooks of a socket's creation cgroup, so a socket made outside the
    attached subtree is never seen (production attaches at the root)."""
    path = c.env.path("fd-in.sock")
    outside = os.path.join(c.env.cg_root, "ungoverned")
    os.makedirs(outside, exist_ok=True)
    events = c.env.path("scm-in.jsonl")
    recv = c.env.spawn(sluice_run_argv(c.env, [c.policy],
                                       [PROBE, "fd-recv", path, "127.0.0.1", str(c.deny.port)],
                                       events))
    wait_for(lambda: os.path.exists(path), 10, "unix socket")
    send = subprocess.run(["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$1" fd-send "$2" '
                           '--create tcp4', outside, PROBE, path],
                          capture_output=True, text=True, timeout=10)
    eq(send.returncode, 0, "fd-send exit")
    out, err = recv.communicate(timeout=10)
    res = [json.loads(l) for l in out.splitlines() if l.startswith("{")][-1]
    eq(res["errname"], "EPERM", "connect of a received socket")
    ev = [e for e in read_events(events) if e["type"] == "connect"]
    eq(len(ev), 1, "connect events")
    eq(ev[0]["verdict"], "deny", "verdict")
    eq(ev[0]["process"]["pid"], res["pid"], "pid of the user")


@suite.test
def test_scm_rights_out_of_governed(c):
    """A socket made in a governed cgroup keeps its identity when handed out."""
    path = c.env.path("fd-out.sock")
    recv = c.env.spawn([PROBE, "fd-recv", path, "127.0.0.1", str(c.deny.port)])
    wait_for(lambda: os.path.exists(path), 10, "unix socket")
    events = c.env.path("scm-out.jsonl")
    # the sender lingers so that its identity is still registered
    snd = c.env.spawn(sluice_run_argv(c.env, [c.policy],
                                      ["sh", "-c", '"$0" fd-send "$1" --create tcp4 && sleep 1',
                                       PROBE, path], events))
    out, _ = recv.communicate(timeout=10)
    snd.wait(15)
    res = [json.loads(l) for l in out.splitlines() if l.startswith("{")][-1]
    eq(res["errname"], "EPERM", "connect outside of a socket created inside")
    ev = [e for e in read_events(events) if e["type"] == "connect"]
    eq(len(ev), 1, "connect events in the creator's stream")
    eq(ev[0]["verdict"], "deny", "verdict")
    eq(ev[0]["process"]["pid"], res["pid"], "pid of the (ungoverned) user")


@suite.test
def test_audit_mode(c):
    r = sluice_run(c.env, [c.policy], [PROBE, "tcp-connect", "127.0.0.1", str(c.deny.port)],
                   extra=["--audit"])
    res = r.probe()
    eq(res["ret"], 0, "audit mode refuses nothing")
    ev = probe_event(r, res)
    assert_verdict(ev, "audit", "default-deny", "127.0.0.1:%d" % c.deny.port)
    # a policy with mode: audit does the same
    pol = c.make_policy(extra_spec="  mode: audit\n")
    r = sluice_run(c.env, [pol], [PROBE, "raw", "4"])
    res = r.probe()
    if res["ret"] < 0:
        raise AssertionError("raw socket refused in audit mode: %r" % res)
    eq(probe_event(r, res, "sock_create")["verdict"], "audit", "raw socket verdict")


@suite.test
def test_own_netns_loopback_allowed(c):
    """Loopback inside the workload's own network namespace is not egress."""
    from harness import free_port
    port = free_port()
    script = ('ip link set lo up && "$0" serve-echo 127.0.0.1 "$1" --count 1 --ready-file "$2" & '
              'for i in $(seq 100); do [ -s "$2" ] && break; sleep 0.05; done; '
              '"$0" tcp-connect 127.0.0.1 "$1" --send 5; wait')
    ready = c.env.path("netns-ready")
    r = sluice_run(c.env, [c.policy], ["unshare", "-n", "sh", "-c", script, PROBE, str(port), ready])
    res = r.probe("tcp-connect")
    eq(res["ret"], 0, "loopback connect in own netns")
    ev = probe_event(r, res)
    eq(ev["verdict"], "allow", "verdict")
    eq(ev["rule"], "loopback", "rule")


@suite.test
def test_dns_implicit_rule(c):
    """Port 53 to the configured resolvers is allowed unless spec.dns: deny."""
    conf = c.env.path("resolv-dns.conf")
    with open(conf, "w") as f:
        f.write("nameserver 127.0.53.54\n")
    r = sluice_run(c.env, [c.policy], [PROBE, "udp-sendto", "127.0.53.54", "53"],
                   extra=["--resolv-conf", conf])
    res = r.probe()
    eq(res["ret"], 1, "DNS to the resolver allowed")
    ev = probe_event(r, res, "sendmsg")
    eq((ev["verdict"], ev["rule"], ev["class"]), ("allow", "dns", "dns"), "dns verdict")
    pol = c.make_policy(extra_spec="  dns: deny\n")
    r = sluice_run(c.env, [pol], [PROBE, "udp-sendto", "127.0.53.54", "53"],
                   extra=["--resolv-conf", conf])
    eq(r.probe()["errname"], "EPERM", "DNS denied by spec.dns: deny")


@suite.test
def test_fqdn_rule_with_local_resolver(c):
    dns_addr = "127.0.53.53"
    conf = c.env.path("resolv-fqdn.conf")
    with open(conf, "w") as f:
        f.write("nameserver %s\n" % dns_addr)
    dnsmasq = c.env.spawn(["/usr/sbin/dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts",
                           "--bind-interfaces", "--listen-address=" + dns_addr, "--port=53",
                           "--address=/agent.test/127.0.0.77", "--local-ttl=60",
                           "--pid-file=" + c.env.path("dnsmasq.pid")],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    eq(dnsmasq.poll(), None, "dnsmasq running")
    pol = c.make_policy(extra_rules="""\
    - name: agent-by-name
      class: agent
      to: [{fqdn: agent.test}]
      ports: [{port: %d}]
""" % c.allow.port)
    # explain from inside the governed cgroup, while its identity exists
    script = ('"$0" tcp-connect 127.0.0.77 "$1"; "$0" tcp-connect 127.0.0.78 "$1"; '
              '"$2" explain --pin-path "$3" -o json --cgroup "$(sed -n "s/^0:://p" /proc/self/cgroup)" '
              '127.0.0.77:"$1"')
    r = sluice_run(c.env, [pol], ["sh", "-c", script, PROBE, str(c.allow.port), SLUICE, c.env.pin],
                   extra=["--resolv-conf", conf])
    lines = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    ok, bad, explain = lines[0], lines[1], lines[2]
    eq(ok["ret"], 0, "connect to the name's address")
    eq(bad["errname"], "EPERM", "connect to another address")
    assert_verdict(probe_event(r, ok), "allow", "agent-by-name", "127.0.0.77:%d" % c.allow.port)
    eq(explain["governed"], True, "explain: governed")
    eq(explain["results"][0]["verdict"], "allow", "explain verdict")
    eq(explain["results"][0]["rule"], "agent-by-name", "explain rule")
    eq(explain["results"][0]["fqdn"], "agent.test", "explain: the name the address came from")


def run_two_loops(c, policy, stop):
    """sluice run under POLICY of two connect loops until STOP exists: one to
    the allowed port, one to the denied port (expecting refusals)."""
    script = ('"$0" connect-loop 127.0.0.1 "$1" --until-file "$3" & p1=$!; '
              '"$0" connect-loop 127.0.0.1 "$2" --until-file "$3" --expect-deny & p2=$!; '
              'wait $p1 $p2')
    return c.env.spawn(sluice_run_argv(c.env, [policy], ["sh", "-c", script, PROBE,
                                                         str(c.allow.port), str(c.deny.port),
                                                         stop]))


@suite.test
def test_policy_swap_under_connect_loop(c):
    """SIGHUP swaps the policy set while connects run: no wrong verdict."""
    a = c.make_policy(name="swap.yaml")
    b_text = open(a).read().replace("name: tool-udp", "name: tool-udp-v2")
    stop = c.env.path("swap-stop")
    p = run_two_loops(c, a, stop)
    time.sleep(0.5)
    orig = open(a).read()
    for i in range(30):
        with open(a, "w") as f:
            f.write(b_text if i % 2 == 0 else orig)
        p.send_signal(signal.SIGHUP)
        time.sleep(0.05)
    open(stop, "w").close()
    out, err = p.communicate(timeout=30)
    loops = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    eq(len(loops), 2, "two loop summaries (stderr: %s)" % err)
    allowed = [l for l in loops if l["eperm"] == 0 or l["ok"] > 0]
    for l in loops:
        total = l["ok"] + l["eperm"] + l["other"]
        if total < 100:
            raise AssertionError("too few connects to mean anything: %r" % l)
    # one loop only ever succeeded, the other was only ever refused
    oks = sorted((l["ok"], l["eperm"], l["other"]) for l in loops)
    eq(oks[0][0], 0, "connects to the denied port that succeeded")
    eq(oks[0][2], 0, "other errors on the denied port")
    eq(oks[1][1], 0, "connects to the allowed port refused")
    eq(oks[1][2], 0, "other errors on the allowed port")
    if err.count("policies reloaded") < 20:
        raise AssertionError("reloads seen: %d\n%s" % (err.count("policies reloaded"), err))
    del allowed


@suite.test
def test_policy_reload_in_place_under_connect_loop(c):
    """SIGHUP with the rules' names kept writes the change into the set in
    force (the same set id every time), with connects running: no wrong
    verdict, and the last version is what the kernel decides."""
    a = c.make_policy(name="patch.yaml")
    orig = open(a).read()
    wide = orig.replace("to: [{cidr: 127.0.0.1/32}]\n      ports: [{port: %d, protocol: UDP}]"
                        % c.udp_allow.port,
                        "to: [{cidr: 127.0.0.0/8}]\n      ports: [{port: %d, protocol: UDP}]"
                        % c.udp_allow.port)
    if wide == orig:
        raise AssertionError("the test's policy edit did not apply")
    stop = c.env.path("patch-stop")
    p = run_two_loops(c, a, stop)
    time.sleep(0.5)
    cg = os.path.join(c.env.cg_root, "sluice-run.%d" % p.pid)

    def explain(dst):
        r = sluice("explain", "--pin-path", c.env.pin, "--cgroup", cg, "-o", "json", dst)
        x = json.loads(r.stdout)["results"][0]
        return x["verdict"], x["rule"]
    udp2 = "127.0.0.2:%d/udp" % c.udp_allow.port
    eq(explain(udp2), ("deny", "default-deny"), "127.0.0.2 before the change")
    for i in range(31):
        with open(a, "w") as f:
            f.write(wide if i % 2 == 0 else orig)
        p.send_signal(signal.SIGHUP)
        time.sleep(0.05)
    time.sleep(0.3)
    eq(explain(udp2), ("allow", "tool-udp"), "127.0.0.0/8 written in place (the last version)")
    eq(explain("127.0.0.1:%d" % c.allow.port), ("allow", "llm"), "the llm rule kept")
    open(stop, "w").close()
    out, err = p.communicate(timeout=30)
    loops = sorted((l["ok"], l["eperm"], l["other"])
                   for l in (json.loads(x) for x in out.splitlines() if x.startswith("{")))
    eq(len(loops), 2, "two loop summaries (stderr: %s)" % err)
    eq(loops[0][0] + loops[0][2], 0, "denied port: connects that were not refused")
    eq(loops[1][1] + loops[1][2], 0, "allowed port: connects that did not succeed")
    if min(sum(x) for x in loops) < 100:
        raise AssertionError("too few connects to mean anything: %r" % loops)
    sets = re.findall(r"policies reloaded in place \(set (\d+)\)", err)
    if len(sets) < 20 or len(set(sets)) != 1:
        raise AssertionError("reloads in place into one set: %r\n%s" % (sets, err))
    if "making a new set" in err or re.search(r"policies reloaded \(set", err):
        raise AssertionError("a reload made a new set:\n" + err)


@suite.test
def test_sigkill_keeps_enforcement_and_next_loader_adopts(c):
    stop = c.env.path("kill-stop")
    events = c.env.path("kill-events.jsonl")
    p = c.env.spawn(sluice_run_argv(c.env, [c.policy],
                                    [PROBE, "connect-loop", "127.0.0.1", str(c.deny.port),
                                     "--until-file", stop, "--expect-deny"], events),
                    stdout=open(c.env.path("kill-out"), "w"))
    wait_for(lambda: any(e["verdict"] == "deny" for e in iter_events(events)), 10, "first deny")
    before = json.loads(sluice("status", "--pin-path", c.env.pin, "-o", "json").stdout)
    p.send_signal(signal.SIGKILL)
    p.wait(5)
    time.sleep(0.3)
    after = json.loads(sluice("status", "--pin-path", c.env.pin, "-o", "json").stdout)
    progs = lambda st: {x["name"]: x.get("prog_id") for x in st["datapath"]["programs"]}
    eq(progs(after), progs(before), "programs still attached after SIGKILL")
    orphan = [i for i in after["identities"] if not i["owner_alive"]]
    eq(len(orphan), 1, "the killed run's identity is still enforced")
    # a second loader adopts the pins: same programs, nothing re-attached
    r = sluice_run(c.env, [c.policy], [PROBE, "tcp-connect", "127.0.0.1", str(c.deny.port)])
    eq(r.probe()["errname"], "EPERM", "second loader enforces")
    during = json.loads(sluice("status", "--pin-path", c.env.pin, "-o", "json").stdout)
    eq(progs(during), progs(before), "programs after adoption")
    eq(len([i for i in during["identities"] if not i["owner_alive"]]), 1,
       "the orphan is kept while its command runs")
    open(stop, "w").close()
    wait_for(lambda: os.path.getsize(c.env.path("kill-out")) > 0, 10, "loop summary")
    res = json.loads(open(c.env.path("kill-out")).read().strip().splitlines()[-1])
    eq(res["ok"], 0, "denied connects that got through")
    if res["eperm"] < 10:
        raise AssertionError("loop did too little: %r" % res)
    time.sleep(0.2)
    # the next loader removes the orphan now that its command is gone
    sluice_run(c.env, [c.policy], ["true"])
    st = sluice("status", "--pin-path", c.env.pin, "-o", "json", check=False)
    if st.returncode == 0 and json.loads(st.stdout)["datapath"]["loaded"]:
        eq(json.loads(st.stdout)["identities"], [], "identities left")
    eq([d for d in os.listdir(c.env.cg_root) if d.startswith("sluice-run.")], [],
       "run cgroups left")


@suite.test
def test_counters_agree_with_events(c):
    script = ('"$0" tcp-connect 127.0.0.1 "$1"; "$0" tcp-connect 127.0.0.1 "$2"; '
              '"$0" udp-sendto 127.0.0.1 "$2"; "$0" raw 4; "$0" tcp-connect ::1 "$1"')
    r = sluice_run(c.env, [c.policy], ["sh", "-c", script, PROBE, str(c.allow.port),
                                       str(c.deny.port)], extra=["-v"])
    line = [l for l in r.stderr.splitlines() if "verdicts:" in l]
    eq(len(line), 1, "counter summary on stderr")
    words = line[0].split("verdicts:")[1].replace(",", "").replace(";", "").split()
    allow, deny, audit, read = int(words[0]), int(words[2]), int(words[4]), int(words[6])
    verdicts = [e["verdict"] for e in r.events if e["type"] in ("connect", "sendmsg", "sock_create")]
    eq(allow, verdicts.count("allow"), "allow counter vs events")
    eq(deny, verdicts.count("deny"), "deny counter vs events")
    eq(audit, 0, "audit counter")
    eq(read, len(r.events), "events read vs written")
    eq(deny, 3, "denials (tcp, udp, raw)")
    if "lost" in r.stderr:
        raise AssertionError("events lost: " + r.stderr)


@suite.test
def test_two_runs_do_not_disturb_each_other(c):
    only_b = c.make_policy(extra_rules="", name="only-b.yaml")
    # B's policy allows the "deny" echo port instead of the allow one
    text = open(only_b).read().replace("port: %d, protocol: TCP" % c.allow.port,
                                       "port: %d, protocol: TCP" % c.deny.port)
    open(only_b, "w").write(text)
    ea, eb = c.env.path("two-a.jsonl"), c.env.path("two-b.jsonl")
    cmd = lambda port: [PROBE, "connect-loop", "127.0.0.1", str(port), "--count", "300"]
    pa = c.env.spawn(sluice_run_argv(c.env, [c.policy], cmd(c.allow.port), ea))
    pb = c.env.spawn(sluice_run_argv(c.env, [only_b], cmd(c.allow.port), eb))
    ra = json.loads(pa.communicate(timeout=60)[0].strip().splitlines()[-1])
    rb = json.loads(pb.communicate(timeout=60)[0].strip().splitlines()[-1])
    eq((ra["ok"], ra["eperm"]), (300, 0), "run A: allowed")
    eq((rb["ok"], rb["eperm"]), (0, 300), "run B: refused")
    a, b = read_events(ea), read_events(eb)
    eq(len([e for e in a if e["type"] == "connect"]), 300, "A's connect events")
    eq(len([e for e in b if e["type"] == "connect"]), 300, "B's connect events")
    eq({e["process"]["pid"] for e in a if e["process"]} & {e["process"]["pid"] for e in b if e["process"]},
       set(), "pids seen by both")
    eq({e["verdict"] for e in b if e["type"] == "connect"}, {"deny"}, "B's verdicts")


@suite.test
def test_status_and_explain(c):
    script = ('"$0" explain --pin-path "$1" --cgroup "$(sed -n "s/^0:://p" /proc/self/cgroup)" '
              '127.0.0.1:"$2"; "$0" explain --pin-path "$1" -o json '
              '--cgroup "$(sed -n "s/^0:://p" /proc/self/cgroup)" 127.0.0.1:"$3"/tcp; '
              '"$0" status --pin-path "$1" -o json; "$0" status --pin-path "$1"; '
              '"$0" explain --pin-path "$1" --cgroup / 127.0.0.1:"$3"')
    r = sluice_run(c.env, [c.policy], ["sh", "-c", script, SLUICE, c.env.pin, str(c.allow.port),
                                       str(c.deny.port)])
    eq(r.rc, 0, "status/explain exit (stderr %s)" % r.stderr)
    text = r.stdout
    if "allow by rule llm of policy agents/itest (class llm)" not in text:
        raise AssertionError("explain table:\n" + text)
    js = [json.loads(l) for l in text.splitlines() if l.startswith("{")]
    eq(js[0]["results"][0]["verdict"], "deny", "explain json verdict")
    eq(js[0]["results"][0]["rule"], "default-deny", "explain json rule")
    st = js[1]
    eq(st["datapath"]["loaded"], True, "status loaded")
    eq(all(p["attached"] for p in st["datapath"]["programs"]), True, "all programs attached")
    eq(len(st["identities"]), 1, "identities")
    eq(st["identities"][0]["policies"], "agents/itest", "identity policies")
    if "IDENTITY CGROUP" not in text or "events_lost_ring_full" not in text:
        raise AssertionError("status table:\n" + text)
    # explain of an ungoverned cgroup
    if "cgroup %s is not governed" % c.env.mount not in text:
        raise AssertionError(text)
    # once the last user is gone, the datapath is gone too
    eq(os.path.exists(c.env.pin), False, "pins after the last run")
    p = sluice("status", "--pin-path", c.env.pin)
    if "not loaded" not in p.stdout:
        raise AssertionError(p.stdout)


@suite.test
def test_bad_policy_runs_nothing(c):
    bad = write_policy(c.env, open(c.policy).read().replace("class: llm", "class: lmm"), "bad.yaml")
    marker = c.env.path("ran")
    p = subprocess.run(sluice_run_argv(c.env, [bad], ["touch", marker]), capture_output=True,
                       text=True, timeout=30)
    eq(p.returncode, 1, "exit status")
    if "bad.yaml:" not in p.stderr or "lmm" not in p.stderr:
        raise AssertionError("message: " + p.stderr)
    eq(os.path.exists(marker), False, "command ran")
    v = subprocess.run([SLUICE, "policy", "validate", bad], capture_output=True, text=True)
    eq(v.returncode, 1, "validate exit")
    v = subprocess.run([SLUICE, "policy", "validate", c.policy], capture_output=True, text=True)
    eq(v.returncode, 0, "validate good exit")


@suite.test
def test_bpftool_shows_field_names(c):
    p = c.env.spawn(sluice_run_argv(c.env, [c.policy], ["sleep", "2"]))
    wait_for(lambda: os.path.exists(os.path.join(c.env.pin, "sl_ident")), 10, "pins")
    time.sleep(0.3)
    out = subprocess.run(["bpftool", "map", "dump", "pinned", os.path.join(c.env.pin, "sl_ident")],
                         capture_output=True, text=True).stdout
    for field in ("set_id", "flags", "ring", "owner_pid"):
        if field not in out:
            raise AssertionError("bpftool output lacks %s:\n%s" % (field, out))
    out = subprocess.run(["bpftool", "map", "dump", "pinned", os.path.join(c.env.pin, "sl_rules")],
                         capture_output=True, text=True).stdout
    for field in ("prefixlen", "port_lo", "rule_id"):
        if field not in out:
            raise AssertionError("bpftool output lacks %s:\n%s" % (field, out[:2000]))
    p.wait(10)


@suite.test
def test_run_forwards_signals_and_exit_status(c):
    ready = c.env.path("sig-ready")
    p = c.env.spawn(sluice_run_argv(c.env, [c.policy],
                                    ["sh", "-c", 'trap "exit 42" TERM; touch "$0"; '
                                     'while :; do sleep 0.05; done', ready]))
    wait_for(lambda: os.path.exists(ready), 10, "command started")
    p.send_signal(signal.SIGTERM)
    eq(p.wait(10), 42, "exit status of CMD after a forwarded SIGTERM")
    r = sluice_run(c.env, [c.policy], ["sh", "-c", "kill -KILL $$"])
    eq(r.rc, 128 + 9, "CMD killed by a signal")
    r = sluice_run(c.env, [c.policy], ["/nonexistent/cmd"])
    eq(r.rc, 127, "CMD not found")
    # --user: CMD without root, still governed
    r = sluice_run(c.env, [c.policy], [PROBE, "tcp-connect", "127.0.0.1", str(c.deny.port)],
                   extra=["--user", "nobody"])
    res = r.probe()
    eq(res["errname"], "EPERM", "connect as nobody")
    eq(probe_event(r, res)["process"]["uid"], 65534, "uid in the event")
    if "CAP_NET_RAW" in r.stderr:
        raise AssertionError("warning about CAP_NET_RAW with --user: " + r.stderr)
    r = sluice_run(c.env, [c.policy], ["true"])
    if "keeps CAP_NET_RAW" not in r.stderr:
        raise AssertionError("no CAP_NET_RAW warning for a root CMD: " + r.stderr)


@suite.test
def test_demo(c):
    """The README's main job, on this test's own pins and cgroups."""
    env = dict(os.environ, SLUICE_PIN_PATH=c.env.pin, SLUICE_CGROUP_ROOT=c.env.cg_root)
    from harness import REPO
    p = subprocess.run([os.path.join(REPO, "examples", "demo.sh")], capture_output=True, text=True,
                       timeout=120, env=env)
    eq(p.returncode, 0, "demo exit (stderr: %s)" % p.stderr)
    lines = [l.split() for l in p.stdout.splitlines() if l.startswith(("allow ", "deny "))]
    eq([(l[0], l[1]) for l in lines],
       [("allow", "127.0.0.1:18080"), ("allow", "127.0.0.1:18081"), ("deny", "127.0.0.1:18082")],
       "demo verdicts")
    if "refused" not in p.stdout or "reached: hello" not in p.stdout:
        raise AssertionError(p.stdout)


if __name__ == "__main__":
    sys.exit(suite.main(Ctx))
