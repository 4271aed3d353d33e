#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""A small MCP gateway for tests: an HTTP/1.1 reverse proxy (stdlib,
threaded) that forwards every request to one upstream (an MCP server over
streamable HTTP: POST with JSON or SSE answers, GET SSE streams, DELETE) and
writes ONE access-log line per request in agentgateway's text form, at the
request's end, as agentgateway does (time = end, duration = elapsed):

  <RFC3339 ns>\tinfo\trequest gateway=.. listener=.. route=.. endpoint=HOST:PORT
  src.addr=IP:PORT http.method=POST http.host=.. http.path=/mcp http.version=HTTP/1.1
  http.status=200 protocol=mcp mcp.method.name=tools/call mcp.target=everything
  gen_ai.tool.name=echo mcp.session.id=.. src.identity=spiffe://.. trace.id=.. duration=3ms

src.addr is the TCP peer of the request's connection. src.identity is the
configured SPIFFE id, or the value of the request header X-Sluice-Identity
(not forwarded), which stands in for a client presenting another identity.
Bodies are streamed back as they come (chunked when the upstream gave no
length), so SSE works.

As a library: Gateway(...).start() / .stop(), .lines (how many written),
.active (requests in flight, their lines still to come), format_line() and
append_line() for lines written by hand (forged ones).
As a script: gateway.py --listen 127.0.0.1:PORT --upstream HOST:PORT --log FILE
[--identity ID]; prints {"port": N} once listening.
"""
import argparse
import http.client
import http.server
import json
import os
import socketserver
import sys
import threading
import time
import uuid

IDENTITY_HEADER = "x-sluice-identity"
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
       "upgrade", "proxy-authenticate", "proxy-authorization", "content-length", "host",
       IDENTITY_HEADER}


def rfc3339_ns(ns):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1000000000)) + \
        ".%09dZ" % (ns % 1000000000)


def format_line(fields, end_ns=None):
    """One agentgateway text-form request line (no newline). FIELDS: an
    ordered list of (key, value); None and "" values are left out."""
    end_ns = end_ns or time.time_ns()
    kv = " ".join("%s=%s" % (k, v) for k, v in fields if v is not None and v != "")
    return "%s\tinfo\trequest %s" % (rfc3339_ns(end_ns), kv)


_append_lock = threading.Lock()


def append_line(path, line):
    """Append LINE (+ newline) to PATH in one write(2) with O_APPEND, as a
    logger does: a reader never sees half of it."""
    data = (line.rstrip("\n") + "\n").encode()
    with _append_lock:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


def jsonrpc_of(body):
    """(method, tool) of a JSON-RPC message or the first of a batch."""
    try:
        m = json.loads(body or b"null")
    except ValueError:
        return None, None
    if isinstance(m, list):
        m = m[0] if m else None
    if not isinstance(m, dict):
        return None, None
    method = m.get("method") if isinstance(m.get("method"), str) else None
    tool = None
    if method == "tools/call" and isinstance(m.get("params"), dict):
        tool = m["params"].get("name")
    return method, tool


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    gw = None

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):    # a client gone is no news
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sluice-test-gateway"

    def log_message(self, *a):
        pass

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                n = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(n))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _proxy(self):
        gw = self.server.gw
        with gw._lock:
            gw.active += 1
        try:
            self._forward(gw)
        finally:
            with gw._lock:
                gw.active -= 1

    def _forward(self, gw):
        t0 = time.monotonic_ns()
        peer = self.client_address
        body = self._body()
        method, tool = jsonrpc_of(body) if self.command == "POST" else (None, None)
        identity = self.headers.get(IDENTITY_HEADER) or gw.identity
        session = self.headers.get("mcp-session-id")
        status, reason, error = 502, None, None
        try:
            up = http.client.HTTPConnection(gw.upstream[0], gw.upstream[1], timeout=60)
            hdrs = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            hdrs["Host"] = "%s:%d" % gw.upstream
            if body or self.command == "POST":
                hdrs["Content-Length"] = str(len(body))
            up.request(self.command, self.path, body=body if body else None, headers=hdrs)
            resp = up.getresponse()
        except OSError as e:
            reason, error = "UpstreamFailure", str(e).replace("\n", " ")
            msg = b'{"error":"upstream failure"}'
            self.send_response(502)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)
        else:
            status = resp.status
            session = session or resp.getheader("mcp-session-id")
            chunked = resp.length is None and self.command != "HEAD" and \
                status not in (204, 304) and not 100 <= status < 200
            self.send_response(status)
            for k, v in resp.getheaders():
                if k.lower() not in HOP:
                    self.send_header(k, v)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(resp.length or 0))
            self.end_headers()
            try:
                while True:
                    data = resp.read1(65536)
                    if not data:
                        break
                    if chunked:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    else:
                        self.wfile.write(data)
                    self.wfile.flush()
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
            except OSError:
                self.close_connection = True    # the client went away
            finally:
                up.close()
        dur_ms = (time.monotonic_ns() - t0) // 1000000
        fields = [
            ("gateway", gw.name), ("listener", "l0"), ("route", gw.route),
            ("endpoint", "%s:%d" % gw.upstream),
            ("src.addr", "%s:%d" % (peer[0], peer[1])),
            ("http.method", self.command), ("http.host", self.headers.get("Host")),
            ("http.path", self.path), ("http.version", "HTTP/1.1"), ("http.status", status),
            ("protocol", "mcp"), ("mcp.method.name", method),
            ("mcp.target", gw.target if method else None), ("gen_ai.tool.name", tool),
            ("mcp.session.id", session), ("src.identity", identity),
            ("trace.id", uuid.uuid4().hex), ("reason", reason), ("error", error),
            ("duration", "%dms" % dur_ms),
        ]
        gw.write(format_line(fields))

    do_GET = do_POST = do_DELETE = _proxy


class Gateway:
    def __init__(self, log, upstream, identity=None, listen=("127.0.0.1", 0),
                 name="test/gateway", route="test/mcp", target="everything"):
        self.log, self.upstream, self.identity = log, tuple(upstream), identity
        self.name, self.route, self.target = name, route, target
        self.lines = 0
        self.active = 0         # requests being handled (their line not written yet)
        self._lock = threading.Lock()
        self.srv = _Server(listen, _Handler)
        self.srv.gw = self
        self.port = self.srv.server_address[1]
        self._t = None

    def write(self, line):
        append_line(self.log, line)
        with self._lock:
            self.lines += 1

    def start(self):
        self._t = threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.05},
                                   daemon=True)
        self._t.start()
        return self

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def _hostport(s):
    h, _, p = s.rpartition(":")
    return h.strip("[]"), int(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--identity")
    a = ap.parse_args()
    gw = Gateway(a.log, _hostport(a.upstream), a.identity, _hostport(a.listen)).start()
    print(json.dumps({"port": gw.port}), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        gw.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
