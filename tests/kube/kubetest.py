# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""Test-side helpers for tests/kube/apiserver.py (stdlib only).

    from kubetest import ApiServer, pod
    with ApiServer(fixtures="tests/kube/fixtures/basic", tls=True, token="t0") as k:
        k.apply(pod("a", "agents", node="node-a"))
        k.wait_watches(resource="pods")          # the daemon is watching
        k.fault("drop")                           # cut its watch
        k.wait_requests(verb="list", resource="pods", since=seq)   # it relisted

ApiServer starts the server as its own process, waits for its port, and wraps
the admin API (tests/kube/README.md). RawStream is a byte-exact HTTP/1.1
watch reader: it reports chunk boundaries and how a stream ended (clean
terminating chunk, EOF, reset, bad chunk), which urllib hides.
"""
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
APISERVER = os.path.join(HERE, "apiserver.py")
FIXTURES = os.path.join(HERE, "fixtures", "basic")


class AdminError(Exception):
    def __init__(self, code, body):
        super().__init__("admin request failed: %s %s" % (code, body))
        self.code = code
        self.body = body


class ApiServer:
    def __init__(self, fixtures=None, tls=False, token=None, args=(), tls_dir=None,
                 bookmark_interval=None, history=None, port=0, verbose=False):
        self.tmp = tempfile.mkdtemp(prefix="sluice-kube.")
        self.fixtures = fixtures
        self.tls_dir = tls_dir or (os.path.join(self.tmp, "tls") if tls else None)
        self.token = token
        self.port = port
        self.args = list(args)
        if bookmark_interval is not None:
            self.args += ["--bookmark-interval", str(bookmark_interval)]
        if history is not None:
            self.args += ["--history", str(history)]
        self.verbose = verbose
        self.proc = None
        self.port_file = os.path.join(self.tmp, "port")
        self.token_file = os.path.join(self.tmp, "token") if token else None
        self.kubeconfig = os.path.join(self.tmp, "kubeconfig")
        self._ctx = None

    # -- process ----------------------------------------------------------
    def start(self, timeout=15):
        argv = [sys.executable, APISERVER, "--port", str(self.port), "--port-file",
                self.port_file, "--exit-on-stdin-eof", "--kubeconfig", self.kubeconfig]
        if self.fixtures:
            argv += ["--fixtures", self.fixtures]
        if self.tls_dir:
            argv += ["--tls-dir", self.tls_dir]
        if self.token:
            argv += ["--token", self.token, "--token-file", self.token_file]
        if self.verbose:
            argv.append("-v")
        argv += self.args
        if getattr(self, "stderr", None):
            self.stderr.close()
        self.stderr = open(os.path.join(self.tmp, "apiserver.log"), "a")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr)
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.port_file):
            if self.proc.poll() is not None:
                err = RuntimeError("apiserver exited %s: %s" % (self.proc.returncode, self.log()))
                self.close()
                raise err
            if time.monotonic() > deadline:
                err = RuntimeError("apiserver did not start: %s" % self.log())
                self.close()
                raise err
            time.sleep(0.02)
        with open(self.port_file) as f:
            self.port = int(f.read())
        self._ctx = None
        return self

    def stop(self, sig=signal.SIGTERM, timeout=5):
        """Stop the server; returns its exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        finally:
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f.close()
                except Exception:
                    pass

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (getattr(self.proc, "stdin", None), getattr(self.proc, "stdout", None),
                  getattr(self, "stderr", None)):
            try:
                f.close()
            except Exception:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def log(self):
        try:
            with open(os.path.join(self.tmp, "apiserver.log")) as f:
                return f.read()
        except OSError:
            return ""

    # -- addresses ----------------------------------------------------------
    @property
    def scheme(self):
        return "https" if self.tls_dir else "http"

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % (self.scheme, self.port)

    @property
    def ca(self):
        return os.path.join(self.tls_dir, "ca.crt") if self.tls_dir else None

    def ssl_context(self):
        if not self.tls_dir:
            return None
        if self._ctx is None:
            self._ctx = ssl.create_default_context(cafile=self.ca)
        return self._ctx

    # -- plain HTTP ----------------------------------------------------------
    def request(self, method, path, body=None, token=True, headers=None, timeout=10,
                content_type="application/json"):
        """(status, headers, body) for one request; body is parsed JSON when it is JSON.
        token=True uses the server's current token as the test knows it, None sends none."""
        hdrs = dict(headers or {})
        if token is True:
            token = self.token
        if token:
            hdrs["Authorization"] = "Bearer " + token
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs.setdefault("Content-Type", content_type)
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context()) as r:
                code, rh, raw = r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            code, rh, raw = e.code, dict(e.headers), e.read()
        try:
            return code, rh, json.loads(raw)
        except ValueError:
            return code, rh, raw.decode(errors="replace")

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    # -- admin API -------------------------------------------------------
    def admin(self, method, op, body=None, query=None):
        path = "/_test/" + op + ("?" + urllib.parse.urlencode(query) if query else "")
        code, _, out = self.request(method, path, body, token=None)
        if code >= 300:
            raise AdminError(code, out)
        return out

    def apply(self, *objs):
        """Create or replace objects (ADDED / MODIFIED); returns them as stored."""
        return self.admin("POST", "apply", list(objs))["items"]

    def patch(self, kind, name, patch, namespace=None, api_version=None):
        b = {"kind": kind, "name": name, "patch": patch}
        if namespace:
            b["namespace"] = namespace
        if api_version:
            b["apiVersion"] = api_version
        return self.admin("POST", "patch", b)["object"]

    def delete(self, kind, name, namespace=None, api_version=None):
        b = {"kind": kind, "name": name}
        if namespace:
            b["namespace"] = namespace
        if api_version:
            b["apiVersion"] = api_version
        return self.admin("POST", "delete", b)["items"][0]

    def fault(self, fault, **kw):
        kw["fault"] = fault
        return self.admin("POST", "fault", kw)

    def clear_faults(self):
        return self.admin("DELETE", "fault")

    def set_token(self, token, **kw):
        """Rotate: only `token` is accepted afterwards (tokens=[...] to accept several)."""
        kw.setdefault("token", token)
        out = self.admin("POST", "token", kw)
        self.token = token
        return out

    def requests(self, since=0, **match):
        items = self.admin("GET", "requests", query={"since": since})["items"]
        return [r for r in items if all(_req_field(r, k) == v for k, v in match.items())]

    def last_request_seq(self):
        return self.admin("GET", "requests", query={"since": 1 << 62})["last"]

    def clear_requests(self):
        return self.admin("DELETE", "requests")

    def events(self):
        return self.admin("GET", "events")["items"]

    def watches(self, resource=None):
        ws = self.admin("GET", "watches")["items"]
        return [w for w in ws if resource in (None, w["resource"])]

    def objects(self, resource=None):
        return self.admin("GET", "objects", query={"resource": resource} if resource else None)["items"]

    def rv(self):
        return int(self.admin("GET", "rv")["resourceVersion"])

    def compact(self):
        return int(self.admin("POST", "compact")["compacted"])

    def bookmark(self):
        return self.admin("POST", "bookmark")["watches"]

    def config(self, **kw):
        return self.admin("POST", "config", kw)

    def resources(self, disable=(), enable=()):
        return self.admin("POST", "resources", {"disable": list(disable), "enable": list(enable)})

    def wait_watches(self, n=1, resource=None, timeout=10, pred=None):
        """Wait until at least n watches (on resource, matching pred) are open."""
        deadline = time.monotonic() + timeout
        while True:
            ws = [w for w in self.watches(resource) if pred is None or pred(w)]
            if len(ws) >= n:
                return ws
            if time.monotonic() > deadline:
                raise AssertionError("wanted %d watches on %s, have %s" % (n, resource, ws))
            time.sleep(0.02)

    def wait_requests(self, n=1, since=0, timeout=10, **match):
        deadline = time.monotonic() + timeout
        while True:
            rs = self.requests(since, **match)
            if len(rs) >= n:
                return rs
            if time.monotonic() > deadline:
                raise AssertionError("wanted %d requests %s since %d, have %s"
                                     % (n, match, since, self.requests(since)))
            time.sleep(0.02)

    def wait_events(self, n=1, timeout=10, **match):
        deadline = time.monotonic() + timeout
        while True:
            evs = [e for e in self.events() if all(_req_field(e, k) == v for k, v in match.items())]
            if len(evs) >= n:
                return evs
            if time.monotonic() > deadline:
                raise AssertionError("wanted %d events %s, have %s" % (n, match, self.events()))
            time.sleep(0.02)

    def watch(self, path, token=True, timeout=10, **params):
        """A RawStream on path?watch=1&params."""
        params.setdefault("watch", "1")
        q = urllib.parse.urlencode(params)
        if token is True:
            token = self.token
        return RawStream(self, path + "?" + q, token=token, timeout=timeout)


def _req_field(r, key):
    """Match keys: 'reason' or dotted paths like 'involvedObject.name' or 'params.watch'."""
    cur = r
    for part in key.replace("__", ".").split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


class StreamEnd(Exception):
    pass


class RawStream:
    """One HTTP/1.1 GET over a raw (TLS) socket, decoding the chunked body by hand.

    .status, .headers; .chunks (sizes of the data chunks received);
    .end: None while open, then "clean" (terminating 0 chunk), "eof" (connection
    closed mid-stream), "reset" (ECONNRESET), "badchunk" (invalid chunk framing).
    next_line()/next_event() raise StreamEnd when the stream has ended.
    """

    def __init__(self, srv, path, token=None, timeout=10, method="GET", host="127.0.0.1"):
        self.sock = socket.create_connection((host, srv.port), timeout=timeout)
        if srv.tls_dir:
            self.sock = srv.ssl_context().wrap_socket(self.sock, server_hostname=host)
        req = "%s %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: application/json\r\n" \
              "User-Agent: kubetest\r\n" % (method, path, host, srv.port)
        if token:
            req += "Authorization: Bearer %s\r\n" % token
        self.sock.sendall((req + "\r\n").encode())
        self.raw = b""
        self.data = b""
        self.chunks = []
        self.end = None
        self._state = "size"
        self._left = 0
        self._read_head()

    def _recv(self, timeout):
        self.sock.settimeout(timeout)
        try:
            b = self.sock.recv(65536)
        except socket.timeout:
            raise
        except ConnectionResetError:
            self.end = "reset"
            return b""
        except (ssl.SSLError, OSError) as e:
            self.end = "reset" if "reset" in str(e).lower() else "eof"
            return b""
        if not b and self.end is None:
            self.end = "eof"
        return b

    def _read_head(self):
        while b"\r\n\r\n" not in self.raw:
            b = self._recv(10)
            if not b:
                raise StreamEnd("no response head")
            self.raw += b
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "")
        if self.chunked:
            self._decode()
        else:
            n = int(self.headers.get("content-length", "0"))
            while len(self.raw) < n:
                b = self._recv(10)
                if not b:
                    break
                self.raw += b
            self.data, self.raw = self.raw[:n], b""
            self.end = "clean" if len(self.data) == n else "eof"

    def _decode(self):
        """Move whole chunk payloads from .raw to .data; set .end on the last chunk."""
        while self.end is None:
            if self._state == "size":
                i = self.raw.find(b"\r\n")
                if i < 0:
                    if len(self.raw) > 64:
                        self.end = "badchunk"
                    return
                line, self.raw = self.raw[:i], self.raw[i + 2:]
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    self.end = "badchunk"
                    return
                if size == 0:
                    self.end = "clean"
                    return
                self.chunks.append(size)
                self._left = size
                self._state = "data"
            elif self._state == "data":
                if not self.raw:
                    return
                take = self.raw[:self._left]
                self.data += take
                self.raw = self.raw[len(take):]
                self._left -= len(take)
                if self._left == 0:
                    self._state = "crlf"
            else:
                if len(self.raw) < 2:
                    return
                if self.raw[:2] != b"\r\n":
                    self.end = "badchunk"
                    return
                self.raw = self.raw[2:]
                self._state = "size"

    def _pump(self, timeout):
        """Read more; return False when the stream has ended."""
        if self.end is not None:
            return False
        b = self._recv(timeout)
        if not b:
            return False
        self.raw += b
        self._decode()
        return True

    def next_line(self, timeout=5):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no line within %ss" % timeout)
            if not self._pump(left):
                if b"\n" in self.data:
                    break
                raise StreamEnd(self.end)
        line, self.data = self.data.split(b"\n", 1)
        return line

    def next_event(self, timeout=5, skip_bookmarks=False):
        while True:
            ev = json.loads(self.next_line(timeout))
            if skip_bookmarks and ev["type"] == "BOOKMARK":
                continue
            return ev

    def events_until_end(self, timeout=10):
        out = []
        try:
            while True:
                out.append(self.next_event(timeout))
        except StreamEnd:
            return out

    def expect_quiet(self, seconds):
        """Assert nothing arrives for `seconds`."""
        try:
            line = self.next_line(seconds)
        except socket.timeout:
            return
        raise AssertionError("expected silence, got %r" % line)

    def body_json(self):
        return json.loads(self.data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# -- object builders: real shapes, minimal input --------------------------

def container_id(seed, runtime="containerd"):
    """A "<runtime>://<64 hex>" container ID, stable for a seed."""
    return "%s://%s" % (runtime, hashlib.sha256(seed.encode()).hexdigest())


def namespace(name, labels=None):
    lab = {"kubernetes.io/metadata.name": name}
    lab.update(labels or {})
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": lab},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


def pod(name, ns="default", node="node-a", labels=None, uid=None, ip="10.244.1.10",
        qos="Burstable", containers=("main",), phase="Running", container_ids=None):
    uid = uid or str(uuid.uuid4())
    spec = {"containers": [{"name": c, "image": "registry.example/%s:1" % c} for c in containers],
            "restartPolicy": "Always", "serviceAccountName": "default",
            "schedulerName": "default-scheduler"}
    status = {"phase": phase if node else "Pending", "qosClass": qos}
    if node:
        spec["nodeName"] = node
        ids = list(container_ids or [container_id(uid + c) for c in containers])
        status.update({"podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "192.168.10.11",
                       "startTime": "2024-05-01T12:00:00Z",
                       "containerStatuses": [
                           {"name": c, "containerID": cid, "image": "registry.example/%s:1" % c,
                            "imageID": "", "ready": True, "restartCount": 0, "started": True,
                            "state": {"running": {"startedAt": "2024-05-01T12:00:01Z"}}}
                           for c, cid in zip(containers, ids)]})
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": uid, "labels": dict(labels or {})},
            "spec": spec, "status": status}


def service(name, ns="default", cluster_ip="10.96.0.10", ports=((443, "TCP"),), selector=None):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                     "selector": dict(selector or {"app": name}),
                     "ports": [{"name": "p%d" % p, "port": p, "targetPort": p, "protocol": proto}
                               for p, proto in ports]},
            "status": {"loadBalancer": {}}}


def endpointslice(name, ns, service_name, addresses, ports=((443, "TCP"),), address_type="IPv4"):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": ns,
                         "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": address_type,
            "endpoints": [{"addresses": [a], "conditions": {"ready": True, "serving": True,
                                                            "terminating": False}}
                          for a in addresses],
            "ports": [{"name": "p%d" % p, "port": p, "protocol": proto} for p, proto in ports]}


def agentpolicy(name, ns, spec, labels=None):
    return {"apiVersion": "sluice.dev/v1alpha1", "kind": "AgentPolicy",
            "metadata": {"name": name, "namespace": ns, "labels": dict(labels or {})},
            "spec": spec}


def clusteragentpolicy(name, spec, labels=None):
    return {"apiVersion": "sluice.dev/v1alpha1", "kind": "ClusterAgentPolicy",
            "metadata": {"name": name, "labels": dict(labels or {})}, "spec": spec}
