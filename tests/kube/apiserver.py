#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""A test Kubernetes API server that speaks the real wire protocol.

Run as its own process:

    python3 tests/kube/apiserver.py --port 0 --port-file F --fixtures DIR \
        [--tls-dir D] [--token T]

It serves the resources sluiced reads (pods, namespaces, nodes, services,
endpointslices, sluice.dev agentpolicies / clusteragentpolicies) and the ones it
writes (events, agentpolicy status) with the API server's semantics: a global
monotonic resourceVersion, list chunking with consistent continue tokens, watch
streams replayed from an event history window, 410 Expired, bookmarks, bearer
tokens, TLS. The test drives it through an admin API under /_test/ on the same
port: see tests/kube/README.md, which is the contract.

Python 3 stdlib only (PyYAML, if installed, is used for *.yaml fixtures).
"""
import argparse
import base64
import collections
import copy
import json
import os
import random
import re
import select
import signal
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

try:
    import yaml  # optional, for *.yaml fixtures
except ImportError:  # pragma: no cover
    yaml = None

MAX_BODY = 16 << 20
GIT_VERSION = "v1.30.0-sluice-test"


# --------------------------------------------------------------------------
# Resource types
# --------------------------------------------------------------------------

class RType:
    def __init__(self, resource, kind, group, version, namespaced, *, status=False,
                 generation=False, crd=False, fields=(), short=()):
        self.resource = resource
        self.kind = kind
        self.group = group
        self.version = version
        self.namespaced = namespaced
        self.status = status          # has a status subresource
        self.generation = generation  # metadata.generation maintained
        self.crd = crd                # custom resource (list items keep kind)
        self.fields = ("metadata.name", "metadata.namespace") + tuple(fields)
        self.short = list(short)
        self.key = (group, resource)
        self.api_version = "%s/%s" % (group, version) if group else version
        self.qualified = "%s.%s" % (resource, group) if group else resource
        self.enabled = True

    def verbs(self):
        v = ["create", "delete", "get", "list", "patch", "update", "watch"]
        return v


TYPES = [
    RType("pods", "Pod", "", "v1", True, status=True, generation=True,
          fields=("spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
                  "spec.serviceAccountName", "spec.hostNetwork", "status.phase",
                  "status.podIP", "status.nominatedNodeName"), short=["po"]),
    RType("namespaces", "Namespace", "", "v1", False, status=True,
          fields=("status.phase",), short=["ns"]),
    RType("nodes", "Node", "", "v1", False, status=True,
          fields=("spec.unschedulable",), short=["no"]),
    RType("services", "Service", "", "v1", True, status=True,
          fields=("spec.clusterIP", "spec.type"), short=["svc"]),
    RType("configmaps", "ConfigMap", "", "v1", True, short=["cm"]),
    RType("events", "Event", "", "v1", True,
          fields=("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                  "involvedObject.uid", "involvedObject.apiVersion",
                  "involvedObject.resourceVersion", "involvedObject.fieldPath",
                  "reason", "reportingComponent", "source", "type"), short=["ev"]),
    RType("endpointslices", "EndpointSlice", "discovery.k8s.io", "v1", True, generation=True),
    RType("events", "Event", "events.k8s.io", "v1", True,
          fields=("reason", "reportingController", "type", "regarding.kind",
                  "regarding.namespace", "regarding.name", "regarding.uid")),
    RType("agentpolicies", "AgentPolicy", "sluice.dev", "v1alpha1", True, status=True,
          generation=True, crd=True, short=["ap"]),
    RType("clusteragentpolicies", "ClusterAgentPolicy", "sluice.dev", "v1alpha1", False,
          status=True, generation=True, crd=True, short=["cap"]),
]
BY_PATH = {(t.group, t.version, t.resource): t for t in TYPES}
BY_KEY = {t.key: t for t in TYPES}


def type_for(api_version, kind, resource=None):
    """The type of an object given apiVersion/kind (apiVersion optional)."""
    for t in TYPES:
        if resource and resource in (t.resource, t.qualified) and \
                (not api_version or api_version == t.api_version):
            return t
        if kind and t.kind == kind and (not api_version or api_version == t.api_version):
            return t
    return None


# --------------------------------------------------------------------------
# Errors and Status objects
# --------------------------------------------------------------------------

REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
           405: "MethodNotAllowed", 406: "NotAcceptable", 409: "Conflict", 410: "Expired",
           415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests",
           500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}


def status_obj(code, message, reason=None, details=None, status="Failure"):
    s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": status,
         "message": message, "reason": reason or REASONS.get(code, ""), "code": code}
    if details is not None:
        s["details"] = details
    if not s["reason"]:
        del s["reason"]
    return s


class ApiError(Exception):
    def __init__(self, code, message, reason=None, details=None, headers=None):
        super().__init__(message)
        self.code = code
        self.status = status_obj(code, message, reason, details)
        self.headers = headers or {}


def _details(t, name):
    d = {"name": name, "kind": t.resource}
    if t.group:
        d = {"name": name, "group": t.group, "kind": t.resource}
    return d


def not_found(t, name):
    return ApiError(404, '%s "%s" not found' % (t.qualified, name), details=_details(t, name))


def conflict(t, name):
    return ApiError(409, 'Operation cannot be fulfilled on %s "%s": the object has been '
                    'modified; please apply your changes to the latest version and try again'
                    % (t.qualified, name), details=_details(t, name))


def too_old(rv, oldest):
    return "too old resource version: %s (%d)" % (rv, oldest)


CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. "
    "You can start a new list without the continue parameter, or use the continue token "
    "in this response to retrieve the remainder of the results. Continuing with the "
    "provided token results in an inconsistent list - objects that were created, modified, "
    "or deleted between the time the first chunk was returned and now may show up in the "
    "list.")


# --------------------------------------------------------------------------
# Selectors
# --------------------------------------------------------------------------

_KEY = r"[A-Za-z0-9](?:[A-Za-z0-9._/-]*[A-Za-z0-9])?"
_VAL = r"(?:[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)?"
_RE_SET = re.compile(r"^\s*(%s)\s+(in|notin)\s*\(([^()]*)\)\s*$" % _KEY)
_RE_EQ = re.compile(r"^\s*(%s)\s*(==|=|!=)\s*(%s)\s*$" % (_KEY, _VAL))
_RE_EXIST = re.compile(r"^\s*(!?)\s*(%s)\s*$" % _KEY)


def _split_terms(s):
    terms, depth, cur = [], 0, []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    terms.append("".join(cur))
    return [x for x in terms if x.strip()]


def parse_label_selector(s):
    """A list of (key, op, values); ops: =, !=, in, notin, exists, !exists."""
    reqs = []
    for term in _split_terms(s or ""):
        m = _RE_SET.match(term)
        if m:
            vals = [v.strip() for v in m.group(3).split(",")]
            if any(not re.fullmatch(_VAL, v) for v in vals) or vals == [""]:
                raise ApiError(400, "unable to parse requirement: invalid label selector: %r" % term)
            reqs.append((m.group(1), m.group(2), set(vals)))
            continue
        m = _RE_EQ.match(term)
        if m:
            op = "!=" if m.group(2) == "!=" else "="
            reqs.append((m.group(1), op, {m.group(3)}))
            continue
        m = _RE_EXIST.match(term)
        if m:
            reqs.append((m.group(2), "!exists" if m.group(1) else "exists", None))
            continue
        raise ApiError(400, "unable to parse requirement: invalid label selector: %r" % term)
    return reqs


def label_match(reqs, labels):
    labels = labels or {}
    for key, op, vals in reqs:
        have = key in labels
        v = labels.get(key)
        if op == "=" or op == "in":
            if not have or v not in vals:
                return False
        elif op == "!=" or op == "notin":
            if have and v in vals:
                return False
        elif op == "exists":
            if not have:
                return False
        elif op == "!exists":
            if have:
                return False
    return True


def parse_field_selector(t, s):
    reqs = []
    for term in _split_terms(s or ""):
        m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not m:
            raise ApiError(400, "invalid selector: '%s'; can't understand '%s'" % (s, term))
        field, op, val = m.group(1), m.group(2), m.group(3)
        if field not in t.fields:
            raise ApiError(400, "field label not supported: %s" % field)
        reqs.append((field, "!=" if op == "!=" else "=", val))
    return reqs


def field_value(obj, path):
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if isinstance(cur, dict):  # Event "source" selects on source.component
        return str(cur.get("component", ""))
    return str(cur)


def field_match(reqs, obj):
    for field, op, val in reqs:
        have = field_value(obj, field)
        if (have == val) != (op == "="):
            return False
    return True


class Filter:
    def __init__(self, t, ns, lsel, fsel):
        self.t, self.ns = t, ns
        self.lsel = parse_label_selector(lsel)
        self.fsel = parse_field_selector(t, fsel)

    def match(self, obj):
        if obj is None:
            return False
        md = obj.get("metadata") or {}
        if self.ns is not None and md.get("namespace") != self.ns:
            return False
        return label_match(self.lsel, md.get("labels")) and field_match(self.fsel, obj)


# --------------------------------------------------------------------------
# Patches
# --------------------------------------------------------------------------

def merge_patch(target, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _ptr(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "invalid JSON pointer: %r" % path)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc, parts):
    cur = doc
    for p in parts:
        if isinstance(cur, list):
            try:
                cur = cur[int(p)]
            except (ValueError, IndexError):
                raise ApiError(422, "path not found: /%s" % "/".join(parts))
        elif isinstance(cur, dict):
            if p not in cur:
                raise ApiError(422, "path not found: /%s" % "/".join(parts))
            cur = cur[p]
        else:
            raise ApiError(422, "path not found: /%s" % "/".join(parts))
    return cur


def json_patch(doc, ops):
    """RFC 6902."""
    if not isinstance(ops, list):
        raise ApiError(400, "json patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        kind = op.get("op")
        parts = _ptr(op.get("path", ""))

        def remove(parts):
            parent = _walk(doc, parts[:-1])
            last = parts[-1]
            if isinstance(parent, list):
                try:
                    return parent.pop(int(last))
                except (ValueError, IndexError):
                    raise ApiError(422, "remove: no element %s" % last)
            if last not in parent:
                raise ApiError(422, "remove: no field %s" % last)
            return parent.pop(last)

        def add(parts, value):
            nonlocal doc
            if not parts:
                doc = value
                return
            parent = _walk(doc, parts[:-1])
            last = parts[-1]
            if isinstance(parent, list):
                idx = len(parent) if last == "-" else int(last)
                if idx > len(parent):
                    raise ApiError(422, "add: index out of range")
                parent.insert(idx, value)
            elif isinstance(parent, dict):
                parent[last] = value
            else:
                raise ApiError(422, "add: parent is not a container")

        if kind == "add":
            add(parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            remove(parts)
        elif kind == "replace":
            remove(parts)
            add(parts, copy.deepcopy(op.get("value")))
        elif kind == "move":
            v = remove(_ptr(op.get("from", "")))
            add(parts, v)
        elif kind == "copy":
            add(parts, copy.deepcopy(_walk(doc, _ptr(op.get("from", "")))))
        elif kind == "test":
            if _walk(doc, parts) != op.get("value"):
                raise ApiError(422, "test operation failed at %s" % op.get("path"))
        else:
            raise ApiError(422, "unknown json patch op %r" % kind)
    return doc


# --------------------------------------------------------------------------
# The store: objects, global resourceVersion, event history
# --------------------------------------------------------------------------

HistEntry = collections.namedtuple("HistEntry", "rv tkey type obj prev")


def now_ts():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _rand5():
    return "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))


def _body(obj):
    """Everything but metadata and status: what bumps generation."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}


class Store:
    def __init__(self, initial_rv, window):
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.rv = initial_rv
        self.compacted = initial_rv   # a watch from rv >= compacted can be served
        self.window = window
        self.objs = {t.key: {} for t in TYPES}
        self.hist = collections.deque()
        self.created_seq = 0
        self.watches = {}
        self.watch_seq = 0

    # -- history --------------------------------------------------------
    def _record(self, t, etype, obj, prev):
        self.hist.append(HistEntry(self.rv, t.key, etype, obj, prev))
        while len(self.hist) > self.window:
            e = self.hist.popleft()
            self.compacted = e.rv
        self.cond.notify_all()

    def compact(self):
        with self.lock:
            self.hist.clear()
            self.compacted = self.rv
            self.cond.notify_all()
            return self.rv

    def state_at(self, t, rv):
        """{(ns, name): obj} for type t as it was at resourceVersion rv."""
        if rv < self.compacted:
            return None
        state = dict(self.objs[t.key])
        for e in reversed(self.hist):
            if e.rv <= rv:
                break
            if e.tkey != t.key:
                continue
            md = e.obj["metadata"]
            k = (md.get("namespace", ""), md["name"])
            if e.type == "ADDED":
                state.pop(k, None)
            else:
                state[k] = e.prev
        return state

    def events_since(self, last_rv, flt):
        """Watch events for flt after last_rv, converted as the watch cache does."""
        pend = []
        for e in reversed(self.hist):
            if e.rv <= last_rv:
                break
            if e.tkey == flt.t.key:
                pend.append(e)
        out = []
        for e in reversed(pend):
            if e.type == "ADDED":
                if flt.match(e.obj):
                    out.append(("ADDED", e.obj))
            elif e.type == "DELETED":
                if flt.match(e.obj):
                    out.append(("DELETED", e.obj))
            else:
                cur, old = flt.match(e.obj), flt.match(e.prev)
                if cur and old:
                    out.append(("MODIFIED", e.obj))
                elif cur:
                    out.append(("ADDED", e.obj))
                elif old:
                    o = copy.deepcopy(e.prev)
                    o["metadata"]["resourceVersion"] = str(e.rv)
                    out.append(("DELETED", o))
        return out

    # -- writes ---------------------------------------------------------
    def _prepare_new(self, t, obj, ns_hint, admin):
        obj = copy.deepcopy(obj)
        obj["apiVersion"] = t.api_version
        obj["kind"] = t.kind
        md = obj.get("metadata")
        if not isinstance(md, dict):
            md = obj["metadata"] = {}
        if not md.get("name"):
            if md.get("generateName"):
                md["name"] = md["generateName"] + _rand5()
            else:
                raise ApiError(422, "%s.%s \"\" is invalid: metadata.name: Required value: name "
                               "or generateName is required" % (t.kind, t.group or "core"),
                               details={"kind": t.kind, "group": t.group, "causes": [
                                   {"reason": "FieldValueRequired", "field": "metadata.name",
                                    "message": "Required value: name or generateName is required"}]})
        if t.namespaced:
            if ns_hint is not None:
                if md.get("namespace") and md["namespace"] != ns_hint:
                    raise ApiError(400, "the namespace of the provided object does not match "
                                   "the namespace sent on the request")
                md["namespace"] = ns_hint
            elif not md.get("namespace"):
                md["namespace"] = "default"
        else:
            md.pop("namespace", None)
        return obj

    def _key(self, obj):
        md = obj["metadata"]
        return (md.get("namespace", ""), md["name"])

    def create(self, t, obj, ns_hint=None, admin=False):
        with self.lock:
            obj = self._prepare_new(t, obj, ns_hint, admin)
            k = self._key(obj)
            if k in self.objs[t.key]:
                raise ApiError(409, '%s "%s" already exists' % (t.qualified, k[1]),
                               reason="AlreadyExists", details=_details(t, k[1]))
            return self._insert(t, obj, admin)

    def _insert(self, t, obj, admin):
        md = obj["metadata"]
        if not (admin and md.get("uid")):
            md["uid"] = str(uuid.uuid4())
        if not (admin and md.get("creationTimestamp")):
            md["creationTimestamp"] = now_ts()
        if t.generation:
            md["generation"] = 1
        else:
            md.pop("generation", None)
        for f in ("resourceVersion", "selfLink"):
            md.pop(f, None)
        if not admin:
            md.pop("deletionTimestamp", None)
        self.rv += 1
        md["resourceVersion"] = str(self.rv)
        self.created_seq += 1
        self.objs[t.key][self._key(obj)] = obj
        self._record(t, "ADDED", obj, None)
        return obj

    def update(self, t, new, *, admin=False, status_only=False, ns_hint=None,
               require_rv=False, old_override=None):
        """Replace an object. Returns (obj, changed)."""
        with self.lock:
            new = self._prepare_new(t, new, ns_hint, admin)
            k = self._key(new)
            old = self.objs[t.key].get(k)
            if old is None:
                if admin:
                    return self._insert(t, new, admin), True
                raise not_found(t, k[1])
            nmd = new["metadata"]
            want_rv = nmd.get("resourceVersion")
            if not admin:
                if want_rv:
                    if want_rv != old["metadata"]["resourceVersion"]:
                        raise conflict(t, k[1])
                elif require_rv:
                    raise ApiError(422, '%s.%s "%s" is invalid: metadata.resourceVersion: '
                                   'Invalid value: 0x0: must be specified for an update'
                                   % (t.kind, t.group, k[1]),
                                   details={"name": k[1], "group": t.group, "kind": t.kind,
                                            "causes": [{"reason": "FieldValueInvalid",
                                                        "field": "metadata.resourceVersion"}]})
            if admin and nmd.get("uid") and nmd["uid"] != old["metadata"]["uid"]:
                # a new object under the same name: watchers see DELETED then ADDED
                self._delete(t, k)
                return self._insert(t, new, admin), True
            omd = old["metadata"]
            if status_only:
                merged = copy.deepcopy(old)
                if "status" in new:
                    merged["status"] = new["status"]
                else:
                    merged.pop("status", None)
            else:
                merged = new
                if t.status and not admin:
                    if "status" in old:
                        merged["status"] = copy.deepcopy(old["status"])
                    else:
                        merged.pop("status", None)
            mmd = merged["metadata"]
            mmd["uid"] = omd["uid"]
            if not (admin and nmd.get("creationTimestamp")):
                mmd["creationTimestamp"] = omd["creationTimestamp"]
            if not admin and not status_only:
                if "deletionTimestamp" in omd:
                    mmd["deletionTimestamp"] = omd["deletionTimestamp"]
                else:
                    mmd.pop("deletionTimestamp", None)
            if t.generation:
                gen = omd.get("generation", 1)
                if _body(merged) != _body(old):
                    gen += 1
                mmd["generation"] = gen
            mmd["resourceVersion"] = omd["resourceVersion"]
            mmd.pop("selfLink", None)
            if merged == old:
                return old, False  # a no-op update writes nothing and emits nothing
            self.rv += 1
            mmd["resourceVersion"] = str(self.rv)
            self.objs[t.key][k] = merged
            self._record(t, "MODIFIED", merged, old)
            return merged, True

    def _delete(self, t, k):
        old = self.objs[t.key].pop(k)
        gone = copy.deepcopy(old)
        self.rv += 1
        gone["metadata"]["resourceVersion"] = str(self.rv)
        self._record(t, "DELETED", gone, old)
        return gone

    def delete(self, t, ns, name, precondition_rv=None, precondition_uid=None):
        with self.lock:
            k = (ns or "", name)
            old = self.objs[t.key].get(k)
            if old is None:
                raise not_found(t, name)
            if precondition_rv and precondition_rv != old["metadata"]["resourceVersion"]:
                raise conflict(t, name)
            if precondition_uid and precondition_uid != old["metadata"]["uid"]:
                raise conflict(t, name)
            return self._delete(t, k)

    def get(self, t, ns, name):
        with self.lock:
            o = self.objs[t.key].get((ns or "", name))
            if o is None:
                raise not_found(t, name)
            return o


# --------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------

class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.armed = []              # dicts; "count": None means until cleared
        self.stall_until = 0.0
        self.stall_resource = None
        self.split = 0

    def _match(self, f, t, verb):
        if f.get("resource") and f["resource"] not in (t.resource, t.qualified):
            return False
        if f.get("verb") and f["verb"] != verb:
            return False
        return True

    def take(self, name, t, verb, pred=None):
        with self.lock:
            for f in self.armed:
                if f["fault"] != name or not self._match(f, t, verb):
                    continue
                if pred and not pred(f):
                    continue
                if f.get("count") is not None:
                    f["count"] -= 1
                    if f["count"] <= 0:
                        self.armed.remove(f)
                return dict(f)
        return None

    def stalled(self, t):
        with self.lock:
            if self.stall_until and (not self.stall_resource or
                                     self.stall_resource in (t.resource, t.qualified)):
                return self.stall_until
        return 0.0

    def snapshot(self):
        with self.lock:
            return {"armed": [dict(f) for f in self.armed],
                    "stallRemaining": max(0.0, self.stall_until - time.monotonic()),
                    "stallResource": self.stall_resource,
                    "split": self.split}

    def clear(self):
        with self.lock:
            self.armed = []
            self.stall_until = 0.0
            self.stall_resource = None
            self.split = 0


# --------------------------------------------------------------------------
# Watches
# --------------------------------------------------------------------------

class Watch:
    def __init__(self, wid, t, flt, params, peer, sock):
        self.id = wid
        self.t = t
        self.flt = flt
        self.params = params
        self.peer = peer
        self.sock = sock
        self.started = time.time()
        self.start_rv = None
        self.last_rv = None
        self.sent = 0
        self.bookmarks = False
        self.drop = False
        self.rst = False
        self.garbage = None
        self.expire = False
        self.bookmark_now = False
        self.done = threading.Event()

    def describe(self):
        return {"id": self.id, "resource": self.t.resource, "group": self.t.group,
                "namespace": self.flt.ns, "labelSelector": self.params.get("labelSelector", ""),
                "fieldSelector": self.params.get("fieldSelector", ""),
                "resourceVersion": self.params.get("resourceVersion", ""),
                "startRV": str(self.start_rv) if self.start_rv is not None else None,
                "lastRV": str(self.last_rv) if self.last_rv is not None else None,
                "allowWatchBookmarks": self.bookmarks, "eventsSent": self.sent,
                "started": self.started, "peer": self.peer}


def _raw_shutdown(sock):
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


# --------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------

def truthy(v):
    return v is not None and v.lower() in ("1", "true", "t", "yes")


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, cfg):
        self.cfg = cfg
        self.store = Store(cfg.initial_rv, cfg.history)
        self.faults = Faults()
        self.tokens = [cfg.token] if cfg.token else []
        self.token_file = cfg.token_file
        self.requests_log = []
        self.req_seq = 0
        self.log_lock = threading.Lock()
        self.stopping = False
        self.conns = set()
        self.conns_lock = threading.Lock()
        self.ssl_ctx = None
        self.bookmark_interval = cfg.bookmark_interval
        self.too_large_wait = cfg.too_large_rv_wait
        self.default_watch_timeout = cfg.default_watch_timeout
        family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.address_family = family
        super().__init__(addr, Handler)

    def server_bind(self):
        # HTTPServer.server_bind would resolve the host name (getfqdn): skip that
        socketserver.TCPServer.server_bind(self)
        self.server_name = self.server_address[0]
        self.server_port = self.server_address[1]

    def handle_error(self, request, client_address):
        if self.cfg.verbose:
            super().handle_error(request, client_address)

    def log_request_entry(self, entry):
        with self.log_lock:
            self.req_seq += 1
            entry["seq"] = self.req_seq
            self.requests_log.append(entry)
            if len(self.requests_log) > 100000:
                del self.requests_log[:50000]

    def stop_watches(self):
        with self.store.lock:
            self.stopping = True
            self.store.cond.notify_all()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 90  # idle keep-alive and stuck-write limit, like the API server's

    # -- connection plumbing --------------------------------------------
    def setup(self):
        srv = self.server
        if srv.ssl_ctx is not None:
            self.request.settimeout(10)
            self.request = srv.ssl_ctx.wrap_socket(self.request, server_side=True)
        super().setup()
        with srv.conns_lock:
            srv.conns.add(self)

    def handle(self):
        try:
            super().handle()
        except (OSError, ssl.SSLError, ValueError):
            self.close_connection = True

    def finish(self):
        with self.server.conns_lock:
            self.server.conns.discard(self)
        try:
            super().finish()
        except Exception:
            pass
        try:
            self.request.close()
        except Exception:
            pass

    def log_message(self, fmt, *args):
        if self.server.cfg.verbose:
            sys.stderr.write("apiserver: %s %s\n" % (self.address_string(), fmt % args))

    def send_response(self, code, message=None):
        # no Server header: the API server sends none
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    # -- responses ------------------------------------------------------
    def _headers(self, code, ctype, length=None, extra=None, chunked=False):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", str(uuid.uuid4()))
        for k, v in (extra or {}).items():
            self.send_header(k, str(v))
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.entry is not None:
            self.entry["code"] = code

    def send_json(self, code, obj, headers=None):
        body = (dumps(obj) + "\n").encode()
        self._headers(code, "application/json", len(body), headers)
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_text(self, code, text):
        body = text.encode()
        self._headers(code, "text/plain; charset=utf-8", len(body))
        self.wfile.write(body)

    def send_api_error(self, e):
        self.send_json(e.code, e.status, e.headers)

    # -- request body ---------------------------------------------------
    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            data = b""
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ValueError("eof in chunked body")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline(65537)
                if len(data) > MAX_BODY:
                    raise ValueError("body too large")
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(n) if n else b""

    def _json_body(self):
        try:
            v = json.loads(self.body.decode() or "null")
        except (ValueError, UnicodeDecodeError) as e:
            if yaml is not None and self.ctype.endswith("yaml"):
                try:
                    return yaml.safe_load(self.body.decode())
                except Exception:
                    pass
            raise ApiError(400, "couldn't get version/kind; json parse error: %s" % e)
        return v

    # -- dispatch -------------------------------------------------------
    def _dispatch(self):
        self.entry = None
        try:
            self.body = b""
            if self.command in ("POST", "PUT", "PATCH", "DELETE"):
                try:
                    self.body = self._read_body()
                except (ValueError, OSError):
                    self.close_connection = True
                    self.send_json(400, status_obj(400, "unreadable request body"))
                    return
            u = urlsplit(self.path)
            self.rawpath = u.path
            self.query = u.query
            q = parse_qs(u.query, keep_blank_values=True)
            self.params = {k: v[-1] for k, v in q.items()}
            self.ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            segs = [unquote(s) for s in u.path.split("/") if s]
            if segs and segs[0] == "_test":
                self._admin(segs[1:])
                return
            self._api(segs)
        except ApiError as e:
            self.send_api_error(e)
        except (OSError, ssl.SSLError):
            self.close_connection = True
        except Exception as e:  # a bug here must not kill the connection silently
            import traceback
            traceback.print_exc()
            try:
                self.send_json(500, status_obj(500, "Internal error occurred: %s" % e))
            except Exception:
                self.close_connection = True

    def _auth_ok(self):
        toks = self.server.tokens
        if not toks:
            return True
        h = self.headers.get("Authorization") or ""
        parts = h.split(" ")
        if len(parts) != 2 or parts[0].lower() != "bearer":
            return False
        return parts[1] in toks

    def _api(self, segs):
        srv = self.server
        entry = {"time": time.time(), "method": self.command, "path": self.rawpath,
                 "query": self.query, "params": self.params,
                 "auth": "Authorization" in self.headers, "authOK": None, "code": None,
                 "verb": None, "resource": None, "group": None, "namespace": None,
                 "name": None, "subresource": None, "watch": False,
                 "userAgent": self.headers.get("User-Agent"),
                 "peer": "%s:%s" % self.client_address[:2],
                 "accept": self.headers.get("Accept"), "contentType": self.ctype or None}
        self.entry = entry
        srv.log_request_entry(entry)
        ok = self._auth_ok()
        entry["authOK"] = ok
        if not ok:
            self.send_json(401, status_obj(401, "Unauthorized"))
            return
        if self.command == "OPTIONS":
            raise ApiError(405, "the server does not allow this method on the requested resource")
        path = "/" + "/".join(segs)
        if path in ("/healthz", "/livez", "/readyz"):
            self.send_text(200, "ok")
            return
        if path == "/version":
            self.send_json(200, {"major": "1", "minor": "30", "gitVersion": GIT_VERSION,
                                 "gitCommit": "0" * 40, "gitTreeState": "clean",
                                 "buildDate": "2024-04-17T00:00:00Z", "goVersion": "go1.22.2",
                                 "compiler": "gc", "platform": "linux/amd64"})
            return
        if not segs:
            self.send_json(200, {"paths": ["/api", "/api/v1", "/apis", "/healthz", "/version"] +
                                 sorted({"/apis/%s/%s" % (t.group, t.version)
                                         for t in TYPES if t.group and t.enabled})})
            return
        if segs[0] == "api":
            if len(segs) == 1:
                self.send_json(200, {"kind": "APIVersions", "versions": ["v1"],
                                     "serverAddressByClientCIDRs": [
                                         {"clientCIDR": "0.0.0.0/0",
                                          "serverAddress": "%s:%d" % self.server.server_address[:2]}]})
                return
            if segs[1] != "v1":
                raise ApiError(404, "the server could not find the requested resource", details={})
            group, version, rest = "", "v1", segs[2:]
        elif segs[0] == "apis":
            if len(segs) == 1:
                self.send_json(200, self._group_list())
                return
            if len(segs) == 2:
                g = self._group(segs[1])
                if g is None:
                    raise ApiError(404, "the server could not find the requested resource",
                                   details={})
                self.send_json(200, g)
                return
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            raise ApiError(404, "the server could not find the requested resource", details={})
        if not rest:
            rl = self._resource_list(group, version)
            if rl is None:
                raise ApiError(404, "the server could not find the requested resource", details={})
            self.send_json(200, rl)
            return
        self._resource(group, version, rest)

    # -- discovery ------------------------------------------------------
    def _group_list(self):
        groups = []
        seen = []
        for t in TYPES:
            if t.group and t.enabled and t.group not in seen:
                seen.append(t.group)
                groups.append(self._group(t.group))
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _group(self, group):
        vs = []
        for t in TYPES:
            if t.group == group and t.enabled and t.version not in vs:
                vs.append(t.version)
        if not vs:
            return None
        gv = [{"groupVersion": "%s/%s" % (group, v), "version": v} for v in vs]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": gv,
                "preferredVersion": gv[0]}

    def _resource_list(self, group, version):
        ts = [t for t in TYPES if t.group == group and t.version == version and t.enabled]
        if not ts:
            return None
        res = []
        for t in ts:
            r = {"name": t.resource, "singularName": t.kind.lower(), "namespaced": t.namespaced,
                 "kind": t.kind, "verbs": t.verbs()}
            if t.short:
                r["shortNames"] = t.short
            res.append(r)
            if t.status:
                res.append({"name": t.resource + "/status", "singularName": "",
                            "namespaced": t.namespaced, "kind": t.kind,
                            "verbs": ["get", "patch", "update"]})
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": ts[0].api_version, "resources": res}

    # -- resources ------------------------------------------------------
    def _resource(self, group, version, rest):
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            t2 = BY_PATH.get((group, version, rest[2]))
            if t2 is not None and t2.namespaced:
                ns, rest = rest[1], rest[2:]
        t = BY_PATH.get((group, version, rest[0]))
        if t is None or not t.enabled or len(rest) > 3:
            raise ApiError(404, "the server could not find the requested resource", details={})
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and not (sub == "status" and t.status):
            raise ApiError(404, "the server could not find the requested resource", details={})
        if t.namespaced and ns is None and name is not None:
            raise ApiError(404, "the server could not find the requested resource", details={})
        m = self.command
        if m in ("GET", "HEAD"):
            verb = "get" if name else ("watch" if truthy(self.params.get("watch")) else "list")
        elif m == "POST" and name is None:
            verb = "create"
        elif m == "PUT" and name:
            verb = "update"
        elif m == "PATCH" and name:
            verb = "patch"
        elif m == "DELETE" and name and sub is None:
            verb = "delete"
        else:
            raise ApiError(405, "the server does not allow this method on the requested resource")
        e = self.entry
        e.update(verb=verb, resource=t.resource, group=t.group, namespace=ns, name=name,
                 subresource=sub, watch=verb == "watch")
        if verb == "create" and t.namespaced and ns is None:
            raise ApiError(405, "the server does not allow this method on the requested resource")
        self._faults(t, verb)
        if verb == "list":
            self._list(t, ns)
        elif verb == "watch":
            self._watch(t, ns)
        elif verb == "get":
            self.send_json(200, self.server.store.get(t, ns, name))
        elif verb == "create":
            obj = self._json_body()
            if not isinstance(obj, dict):
                raise ApiError(400, "the body of the request is not an object")
            self._check_kind(t, obj)
            self.send_json(201, self.server.store.create(t, obj, ns_hint=ns))
        elif verb == "update":
            obj = self._json_body()
            if not isinstance(obj, dict):
                raise ApiError(400, "the body of the request is not an object")
            self._check_kind(t, obj)
            md = obj.get("metadata") or {}
            if md.get("name") != name:
                raise ApiError(400, "the name of the object (%s) does not match the name on "
                               "the URL (%s)" % (md.get("name"), name))
            o, _ = self.server.store.update(t, obj, status_only=sub == "status", ns_hint=ns,
                                            require_rv=t.crd)
            self.send_json(200, o)
        elif verb == "patch":
            self._patch(t, ns, name, sub)
        elif verb == "delete":
            pre = {}
            if self.body:
                opts = self._json_body() or {}
                pre = (opts.get("preconditions") or {}) if isinstance(opts, dict) else {}
            o = self.server.store.delete(t, ns, name, pre.get("resourceVersion"), pre.get("uid"))
            self.send_json(200, o)

    def _check_kind(self, t, obj):
        if obj.get("kind") and obj["kind"] != t.kind:
            raise ApiError(400, "the API version in the data (%s) does not match the expected "
                           "API version (%s)" % (obj.get("apiVersion"), t.api_version))

    def _faults(self, t, verb):
        srv = self.server
        f = srv.faults.take("slow", t, verb)
        if f:
            time.sleep(float(f.get("seconds", 1)))
        f = srv.faults.take("http500", t, verb)
        if f:
            code = int(f.get("code", 500))
            msg = f.get("message") or ("Internal error occurred: injected fault" if code == 500
                                       else "injected fault")
            hdr = {}
            det = None
            if f.get("retryAfter") is not None:
                hdr["Retry-After"] = str(int(f["retryAfter"]))
                det = {"retryAfterSeconds": int(f["retryAfter"])}
            if code == 500:
                det = dict(det or {}, causes=[{"message": "injected fault"}])
            raise ApiError(code, msg, details=det, headers=hdr)
        if verb in ("list", "watch"):
            ons = ("list", "any") if verb == "list" else ("watch-http", "any")
            f = srv.faults.take("gone", t, None, lambda f: f.get("on", "watch") in ons)
            if f:
                rv = self.params.get("resourceVersion") or "0"
                raise ApiError(410, too_old(rv, srv.store.compacted))

    def _list(self, t, ns):
        st = self.server.store
        p = self.params
        flt = Filter(t, ns, p.get("labelSelector"), p.get("fieldSelector"))
        rvp = p.get("resourceVersion", "")
        match = p.get("resourceVersionMatch", "")
        cont = p.get("continue", "")
        limit = p.get("limit", "")
        try:
            limit = int(limit) if limit else 0
        except ValueError:
            raise ApiError(400, "invalid limit: %r" % limit)
        if match and not rvp:
            raise ApiError(422, "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: "
                           "Forbidden: resourceVersionMatch is forbidden unless resourceVersion "
                           "is provided")
        if match and cont:
            raise ApiError(422, "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: "
                           "Forbidden: resourceVersionMatch is forbidden when continue is provided")
        if match not in ("", "Exact", "NotOlderThan"):
            raise ApiError(422, "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: "
                           "Unsupported value: %r" % match)
        if cont and rvp and rvp != "0":
            raise ApiError(400, "specifying resource version is not allowed when using continue")
        want = None
        if rvp and rvp != "0":
            try:
                want = int(rvp)
            except ValueError:
                raise ApiError(400, "invalid resource version: %r" % rvp)
        start = None
        with st.lock:
            if cont:
                try:
                    tok = json.loads(base64.urlsafe_b64decode(cont + "=" * (-len(cont) % 4)))
                    at = int(tok["rv"])
                    start = tok["start"]
                    if tok.get("v") != "meta.k8s.io/v1" or at <= 0:
                        raise ValueError
                except (ValueError, KeyError, TypeError):
                    raise ApiError(400, "continue key is not valid: incorrect encoded start "
                                   "resourceVersion (version meta.k8s.io/v1)")
                state = st.state_at(t, at)
                if state is None:
                    raise ApiError(410, CONTINUE_EXPIRED)
            elif match == "Exact":
                self._wait_rv(want)
                at = want
                state = st.state_at(t, at)
                if state is None:
                    raise ApiError(410, too_old(want, st.compacted))
            else:
                if want is not None:
                    self._wait_rv(want)
                at = st.rv
                state = st.objs[t.key]
            # ordered by storage key, as etcd returns them
            items = sorted(("/%s/%s" % k, o) for k, o in state.items() if flt.match(o))
        if start is not None:
            items = [(k, o) for k, o in items if k >= start]
        md = {"resourceVersion": str(at)}
        if limit > 0 and len(items) > limit:
            last = items[limit - 1][0]
            tok = {"v": "meta.k8s.io/v1", "rv": at, "start": last + "\x00"}
            md["continue"] = base64.urlsafe_b64encode(dumps(tok).encode()).decode().rstrip("=")
            if not flt.lsel and not flt.fsel:
                md["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        out = []
        for _, o in items:
            if not t.crd:  # built-in list items carry no kind/apiVersion
                o = {k: v for k, v in o.items() if k not in ("kind", "apiVersion")}
            out.append(o)
        self.send_json(200, {"kind": t.kind + "List", "apiVersion": t.api_version,
                             "metadata": md, "items": out})

    def _wait_rv(self, want):
        """Called with the store lock held: wait for rv >= want, or 504 as the API server does."""
        st = self.server.store
        deadline = time.monotonic() + self.server.too_large_wait
        while st.rv < want:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ApiError(504, "Too large resource version: %d, current: %d" % (want, st.rv),
                               details={"causes": [{"reason": "ResourceVersionTooLarge",
                                                    "message": "Too large resource version"}],
                                        "retryAfterSeconds": 1},
                               headers={"Retry-After": "1"})
            st.cond.wait(left)

    def _patch(self, t, ns, name, sub):
        st = self.server.store
        ct = self.ctype
        patch = self._json_body()
        if ct == "application/strategic-merge-patch+json" and t.crd:
            raise ApiError(415, "strategic merge patch is not supported for custom resources "
                           "(%s)" % t.qualified)
        apply = ct == "application/apply-patch+yaml"
        if apply and not self.params.get("fieldManager"):
            raise ApiError(422, "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: "
                           "Required value: is required for apply patch")
        if ct not in ("application/merge-patch+json", "application/strategic-merge-patch+json",
                      "application/json-patch+json", "application/apply-patch+yaml"):
            raise ApiError(415, "the body of the request was in an unknown format - accepted "
                           "media types include: application/json-patch+json, "
                           "application/merge-patch+json, application/apply-patch+yaml")
        with st.lock:
            try:
                cur = st.get(t, ns, name)
            except ApiError:
                if not apply:
                    raise
                cur = None
            if cur is None:
                code, o = 201, st.create(t, merge_patch({}, patch), ns_hint=ns)
            else:
                code, o = 200, self._patched(st, t, ns, name, sub, cur, patch)
        self.send_json(code, o)

    def _patched(self, st, t, ns, name, sub, cur, patch):
        ct = self.ctype
        if ct == "application/json-patch+json":
            new = json_patch(cur, patch)
        else:
            if not isinstance(patch, dict):
                raise ApiError(400, "merge patch must be an object")
            new = merge_patch(cur, patch)
        if not isinstance(new, dict):
            raise ApiError(422, "patch result is not an object")
        nmd = new.setdefault("metadata", {})
        if nmd.get("name") != name:
            raise ApiError(422, "metadata.name: Invalid value: the name cannot be changed")
        if nmd.get("uid") != cur["metadata"]["uid"]:
            raise conflict(t, name)
        want_rv = nmd.get("resourceVersion")
        if not want_rv:
            nmd["resourceVersion"] = cur["metadata"]["resourceVersion"]
        o, _ = st.update(t, new, status_only=sub == "status", ns_hint=ns)
        return o

    # -- watch ----------------------------------------------------------
    def _watch(self, t, ns):
        srv = self.server
        st = srv.store
        p = self.params
        flt = Filter(t, ns, p.get("labelSelector"), p.get("fieldSelector"))
        rvp = p.get("resourceVersion", "")
        bookmarks = truthy(p.get("allowWatchBookmarks"))
        send_initial = p.get("sendInitialEvents")
        if p.get("resourceVersionMatch") and send_initial is None:
            raise ApiError(422, "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: "
                           "Forbidden: resourceVersionMatch is forbidden for watch unless "
                           "sendInitialEvents is provided")
        send_initial = truthy(send_initial)
        if send_initial and (not bookmarks or p.get("resourceVersionMatch") != "NotOlderThan"):
            raise ApiError(422, "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: "
                           "Forbidden: sendInitialEvents requires allowWatchBookmarks=true and "
                           "resourceVersionMatch=NotOlderThan")
        ts = p.get("timeoutSeconds")
        try:
            timeout = float(ts) if ts not in (None, "") else srv.default_watch_timeout
        except ValueError:
            raise ApiError(400, "invalid timeoutSeconds: %r" % ts)
        want = None
        if rvp and rvp != "0":
            try:
                want = int(rvp)
            except ValueError:
                raise ApiError(400, "invalid resource version: %r" % rvp)
        forced = srv.faults.take("gone", t, "watch", lambda f: f.get("on", "watch") == "watch")
        w = Watch(None, t, flt, p, "%s:%s" % self.client_address[:2], self.connection)
        w.bookmarks = bookmarks
        initial = []
        expired = None
        with st.lock:
            cur = st.rv
            if forced:
                expired = too_old(rvp or cur, st.compacted)
            elif want is not None and want < st.compacted and not send_initial:
                expired = too_old(want, st.compacted)
            elif want is None or send_initial:
                initial = [o for _, o in sorted(("/%s/%s" % k, o) for k, o in
                                                st.objs[t.key].items()) if flt.match(o)]
                w.start_rv = cur
            else:
                w.start_rv = want
            w.last_rv = w.start_rv
            if expired is None:
                st.watch_seq += 1
                w.id = st.watch_seq
                st.watches[w.id] = w
        try:
            self._headers(200, "application/json", chunked=True)
            if expired is not None:
                self._chunk(self._line("ERROR", status_obj(410, expired)))
                self._end_chunks()
                return
            self._stream(w, initial, send_initial, timeout)
        finally:
            with st.lock:
                st.watches.pop(w.id, None)
            w.done.set()

    def _line(self, etype, obj):
        return (dumps({"type": etype, "object": obj}) + "\n").encode()

    def _bookmark(self, t, rv, initial_end=False):
        md = {"resourceVersion": str(rv)}
        if initial_end:
            md["annotations"] = {"k8s.io/initial-events-end": "true"}
        return self._line("BOOKMARK", {"kind": t.kind, "apiVersion": t.api_version,
                                       "metadata": md})

    def _chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _write_lines(self, lines):
        split = self.server.faults.split
        if split > 0:
            data = b"".join(lines)
            for i in range(0, len(data), split):
                self._chunk(data[i:i + split])
        else:
            for line in lines:
                self._chunk(line)

    def _end_chunks(self):
        self.wfile.write(b"0\r\n\r\n")

    def _abort(self, rst=False):
        """Close the connection without ending the chunked stream."""
        self.close_connection = True
        if rst:
            try:
                socket.socket.setsockopt(self.connection, socket.SOL_SOCKET, socket.SO_LINGER,
                                         struct.pack("ii", 1, 0))
                socket.socket.close(self.connection)
            except OSError:
                pass
        else:
            _raw_shutdown(self.connection)

    def _client_gone(self):
        sock = self.connection
        try:
            r, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True
        if not r:
            return False
        try:
            sock.settimeout(0.0)
            try:
                data = sock.recv(4096)
            finally:
                sock.settimeout(self.timeout)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return False
        except (OSError, ssl.SSLError):
            return True
        return data == b""

    def _stream(self, w, initial, send_initial, timeout):
        srv = self.server
        st = srv.store
        t = w.t
        deadline = time.monotonic() + timeout if timeout > 0 else float("inf")
        pending = [self._line("ADDED", o) for o in initial]
        w.sent += len(initial)
        if send_initial:
            pending.append(self._bookmark(t, w.start_rv, initial_end=True))
        next_bm = time.monotonic() + srv.bookmark_interval
        while True:
            action = None
            out = []
            with st.lock:
                while True:
                    now = time.monotonic()
                    if srv.stopping:
                        action = "end"
                        break
                    if w.drop:
                        action = "drop"
                        break
                    if w.garbage:
                        action = w.garbage
                        w.garbage = None
                        break
                    if w.expire:
                        action = "expire"
                        break
                    if now >= deadline:
                        action = "end"
                        break
                    stall = srv.faults.stalled(t)
                    if stall > now:
                        next_bm = stall + srv.bookmark_interval
                        st.cond.wait(min(stall - now, deadline - now, 0.5))
                        continue
                    if pending:
                        out, pending = pending, []
                        break
                    if w.last_rv < st.compacted:
                        action = "fell-behind"
                        break
                    evs = st.events_since(w.last_rv, w.flt)
                    w.last_rv = max(w.last_rv, st.rv)
                    if evs:
                        out = [self._line(et, o) for et, o in evs]
                        w.sent += len(evs)
                        break
                    if w.bookmarks and (now >= next_bm or w.bookmark_now):
                        out = [self._bookmark(t, w.last_rv)]
                        w.bookmark_now = False
                        next_bm = now + srv.bookmark_interval
                        break
                    waits = [deadline - now, 0.5]
                    if w.bookmarks:
                        waits.append(next_bm - now)
                    st.cond.wait(max(0.005, min(waits)))
                    if self._client_gone():
                        action = "gone"
                        break
                if action is not None and action != "line":
                    # gone from /_test/watches before the client can see the end
                    st.watches.pop(w.id, None)
            try:
                if out:
                    self._write_lines(out)
                if action is None:
                    continue
                if action == "end":
                    self._end_chunks()
                elif action in ("expire", "fell-behind"):
                    msg = too_old(w.last_rv if action == "fell-behind" else w.start_rv,
                                  st.compacted)
                    self._chunk(self._line("ERROR", status_obj(410, msg)))
                    self._end_chunks()
                elif action == "drop":
                    self._abort(w.rst)
                elif action == "gone":
                    self.close_connection = True
                elif action == "line":
                    self._chunk(b"this is not json {\"type\":\n")
                    continue
                elif action == "truncated":
                    line = self._line("MODIFIED", {"kind": t.kind, "apiVersion": t.api_version,
                                                   "metadata": {"name": "truncated"}})
                    self.wfile.write(b"%x\r\n" % (len(line) + 100) + line[:len(line) // 2])
                    self._abort()
                elif action == "badchunk":
                    self.wfile.write(b"zz\r\nnot a chunk\r\n")
                    self._abort()
                return
            except (OSError, ssl.SSLError, ValueError):
                self.close_connection = True
                return

    # -- admin API ------------------------------------------------------
    def _admin(self, segs):
        srv = self.server
        st = srv.store
        op = "/".join(segs)
        m = self.command
        try:
            if op == "rv" and m == "GET":
                with st.lock:
                    self.send_json(200, {"resourceVersion": str(st.rv),
                                         "compacted": str(st.compacted),
                                         "history": len(st.hist)})
            elif op == "apply" and m == "POST":
                body = self._json_body()
                objs = body
                if isinstance(body, dict) and str(body.get("kind", "")).endswith("List") \
                        and "items" in body:
                    objs = body["items"]
                if isinstance(objs, dict):
                    objs = [objs]
                if not isinstance(objs, list):
                    raise ApiError(400, "apply wants an object, a list, or a List")
                out = [self._admin_apply(o) for o in objs]
                self.send_json(200, {"items": out, "resourceVersion": str(st.rv)})
            elif op == "patch" and m == "POST":
                b = self._json_body() or {}
                t = self._admin_type(b)
                ns = b.get("namespace") if t.namespaced else None
                if t.namespaced and not ns:
                    ns = "default"
                with st.lock:
                    cur = st.get(t, ns, b.get("name"))
                    new = merge_patch(cur, b.get("patch") or {})
                    new["metadata"]["uid"] = cur["metadata"]["uid"]
                    o, changed = st.update(t, new, admin=True)
                self.send_json(200, {"object": o, "changed": changed,
                                     "resourceVersion": str(st.rv)})
            elif op == "delete" and m == "POST":
                b = self._json_body() or {}
                items = b if isinstance(b, list) else [b]
                out = []
                for d in items:
                    t = self._admin_type(d)
                    ns = (d.get("namespace") or "default") if t.namespaced else None
                    out.append(st.delete(t, ns, d.get("name")))
                self.send_json(200, {"items": out, "resourceVersion": str(st.rv)})
            elif op == "objects" and m == "GET":
                with st.lock:
                    items = []
                    for t in TYPES:
                        if self.params.get("resource") not in (None, t.resource):
                            continue
                        items += [o for _, o in sorted(st.objs[t.key].items())]
                self.send_json(200, {"items": items, "resourceVersion": str(st.rv)})
            elif op == "events" and m == "GET":
                with st.lock:
                    evs = list(st.objs[("", "events")].values()) + \
                        list(st.objs[("events.k8s.io", "events")].values())
                evs.sort(key=lambda o: int(o["metadata"]["resourceVersion"]))
                self.send_json(200, {"items": evs})
            elif op == "requests" and m == "GET":
                since = int(self.params.get("since") or 0)
                with srv.log_lock:
                    items = [dict(e) for e in srv.requests_log if e["seq"] > since]
                self.send_json(200, {"items": items, "last": srv.req_seq})
            elif op == "requests" and m == "DELETE":
                with srv.log_lock:
                    srv.requests_log = []
                self.send_json(200, {"last": srv.req_seq})
            elif op == "watches" and m == "GET":
                with st.lock:
                    ws = [w.describe() for w in st.watches.values()]
                self.send_json(200, {"items": ws})
            elif op == "token" and m == "POST":
                b = self._json_body() or {}
                if "tokens" in b:
                    toks = [x for x in (b["tokens"] or []) if x]
                else:
                    toks = [b["token"]] if b.get("token") else []
                srv.tokens = toks
                if srv.token_file and b.get("writeFile", True) and toks:
                    _write_atomic(srv.token_file, toks[0])
                dropped = self._drop({"fault": "drop"}) if b.get("dropWatches") else 0
                self.send_json(200, {"tokens": len(toks), "dropped": dropped})
            elif op == "fault" and m == "POST":
                self.send_json(200, self._fault(self._json_body() or {}))
            elif op == "fault" and m == "GET":
                self.send_json(200, srv.faults.snapshot())
            elif op == "fault" and m == "DELETE":
                srv.faults.clear()
                with st.lock:
                    st.cond.notify_all()
                self.send_json(200, {"cleared": True})
            elif op == "compact" and m == "POST":
                self.send_json(200, {"compacted": str(st.compact())})
            elif op == "bookmark" and m == "POST":
                n = 0
                with st.lock:
                    for w in st.watches.values():
                        if w.bookmarks:
                            w.bookmark_now = True
                            n += 1
                    st.cond.notify_all()
                self.send_json(200, {"watches": n})
            elif op == "config" and m == "POST":
                b = self._json_body() or {}
                with st.lock:
                    if "bookmarkInterval" in b:
                        srv.bookmark_interval = float(b["bookmarkInterval"])
                    if "historyWindow" in b:
                        st.window = max(1, int(b["historyWindow"]))
                    if "tooLargeRVWait" in b:
                        srv.too_large_wait = float(b["tooLargeRVWait"])
                    if "defaultWatchTimeout" in b:
                        srv.default_watch_timeout = float(b["defaultWatchTimeout"])
                    st.cond.notify_all()
                self.send_json(200, self._config())
            elif op == "config" and m == "GET":
                self.send_json(200, self._config())
            elif op == "resources" and m == "POST":
                b = self._json_body() or {}
                for name, on in [(n, False) for n in b.get("disable", [])] + \
                        [(n, True) for n in b.get("enable", [])]:
                    hit = [t for t in TYPES if name in (t.resource, t.qualified)]
                    if not hit:
                        raise ApiError(400, "unknown resource %r" % name)
                    for t in hit:
                        t.enabled = on
                self.send_json(200, {"disabled": [t.qualified for t in TYPES if not t.enabled]})
            else:
                raise ApiError(404, "no admin endpoint %s %s" % (m, self.rawpath))
        except ApiError as e:
            self.send_api_error(e)

    def _config(self):
        srv = self.server
        return {"bookmarkInterval": srv.bookmark_interval, "historyWindow": srv.store.window,
                "tooLargeRVWait": srv.too_large_wait,
                "defaultWatchTimeout": srv.default_watch_timeout}

    def _admin_type(self, b):
        if not isinstance(b, dict):
            raise ApiError(400, "expected an object")
        t = type_for(b.get("apiVersion"), b.get("kind"), b.get("resource"))
        if t is None:
            raise ApiError(400, "unknown kind %r / apiVersion %r" % (b.get("kind"),
                                                                     b.get("apiVersion")))
        if not b.get("name"):
            raise ApiError(400, "name is required")
        return t

    def _admin_apply(self, o):
        if not isinstance(o, dict):
            raise ApiError(400, "apply: not an object")
        t = type_for(o.get("apiVersion"), o.get("kind"))
        if t is None:
            raise ApiError(400, "apply: unknown kind %r / apiVersion %r" % (o.get("kind"),
                                                                           o.get("apiVersion")))
        obj, _ = self.server.store.update(t, o, admin=True)
        return obj

    def _drop(self, f):
        srv = self.server
        st = srv.store
        with st.lock:
            ws = [w for w in st.watches.values() if self._watch_match(w, f)]
            for w in ws:
                w.drop = True
                w.rst = bool(f.get("rst"))
            st.cond.notify_all()
        for w in ws:
            if not w.done.wait(2.0):
                _raw_shutdown(w.sock)
                w.done.wait(2.0)
        n = len(ws)
        if f.get("connections"):
            with srv.conns_lock:
                others = [h for h in srv.conns if h is not self]
            for h in others:
                _raw_shutdown(h.connection)
        return n

    def _watch_match(self, w, f):
        r = f.get("resource")
        return not r or r in (w.t.resource, w.t.qualified)

    def _fault(self, f):
        srv = self.server
        st = srv.store
        kind = f.get("fault")
        if kind == "clear":
            srv.faults.clear()
            with st.lock:
                st.cond.notify_all()
            return {"cleared": True}
        if kind == "drop":
            return {"dropped": self._drop(f)}
        if kind == "stall":
            with srv.faults.lock:
                srv.faults.stall_until = time.monotonic() + float(f.get("seconds", 5))
                srv.faults.stall_resource = f.get("resource")
            with st.lock:
                st.cond.notify_all()
            return {"stalled": float(f.get("seconds", 5))}
        if kind == "garbage":
            mode = f.get("mode", "line")
            if mode not in ("line", "truncated", "badchunk"):
                raise ApiError(400, "garbage mode must be line, truncated or badchunk")
            with st.lock:
                ws = [w for w in st.watches.values() if self._watch_match(w, f)]
                for w in ws:
                    w.garbage = mode
                st.cond.notify_all()
            return {"watches": len(ws)}
        if kind == "split":
            srv.faults.split = max(0, int(f.get("bytes", 0)))
            return {"split": srv.faults.split}
        if kind == "gone" and f.get("on") == "open":
            with st.lock:
                ws = [w for w in st.watches.values() if self._watch_match(w, f)]
                for w in ws:
                    w.expire = True
                st.cond.notify_all()
            return {"watches": len(ws)}
        if kind in ("gone", "http500", "http", "slow"):
            rec = {"fault": "http500" if kind == "http" else kind}
            for k in ("resource", "verb", "on", "code", "retryAfter", "seconds", "message"):
                if k == "verb" and kind == "gone":
                    continue  # gone picks list/watch with "on"
                if f.get(k) is not None:
                    rec[k] = f[k]
            if kind == "gone" and rec.get("on", "watch") not in ("watch", "watch-http", "list",
                                                                 "any"):
                raise ApiError(400, "gone: on must be watch, watch-http, list, any or open")
            if "count" in f:
                rec["count"] = None if f["count"] is None else int(f["count"])
            else:
                rec["count"] = None if kind == "slow" else 1
            if rec["count"] is not None and rec["count"] <= 0:
                raise ApiError(400, "count must be positive (or null for until cleared)")
            with srv.faults.lock:
                srv.faults.armed.append(rec)
            return {"armed": rec}
        raise ApiError(400, "unknown fault %r" % kind)


# --------------------------------------------------------------------------
# TLS, fixtures, main
# --------------------------------------------------------------------------

def _write_atomic(path, text):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def make_certs(d):
    """A CA and a server certificate for 127.0.0.1, ::1 and localhost, made with
    the openssl CLI. Existing files are reused, so a restarted server keeps its CA."""
    os.makedirs(d, exist_ok=True)
    ca_crt, ca_key = os.path.join(d, "ca.crt"), os.path.join(d, "ca.key")
    crt, key = os.path.join(d, "server.crt"), os.path.join(d, "server.key")
    if all(os.path.exists(p) for p in (ca_crt, ca_key, crt, key)):
        return crt, key

    def run(*args):
        r = subprocess.run(["openssl"] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise SystemExit("apiserver: openssl %s failed: %s" % (args[0], r.stderr))

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_crt,
        "-days", "3650", "-subj", "/CN=sluice-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash")
    csr = os.path.join(d, "server.csr")
    ext = os.path.join(d, "server.ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectKeyIdentifier=hash\n"
                "authorityKeyIdentifier=keyid:always\n"
                "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost,DNS:kubernetes,"
                "DNS:kubernetes.default,DNS:kubernetes.default.svc\n")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
        "-subj", "/CN=kube-apiserver")
    run("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-out", crt,
        "-days", "3650", "-set_serial", str(random.getrandbits(63)), "-extfile", ext)
    for p in (csr, ext):
        os.unlink(p)
    return crt, key


def load_fixture_docs(path):
    with open(path) as f:
        text = f.read()
    if path.endswith(".json"):
        docs = [json.loads(text)]
    else:
        if yaml is None:
            raise SystemExit("apiserver: %s needs PyYAML (python3-yaml), which is not "
                             "installed; use a .json fixture" % path)
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    out = []
    for d in docs:
        if isinstance(d, list):
            out += d
        elif isinstance(d, dict) and d.get("kind", "").endswith("List") and "items" in d:
            out += d["items"]
        else:
            out.append(d)
    return out


def load_fixtures(store, d):
    n = 0
    for fn in sorted(os.listdir(d)):
        if not fn.endswith((".json", ".yaml", ".yml")):
            continue
        for o in load_fixture_docs(os.path.join(d, fn)):
            t = type_for(o.get("apiVersion"), o.get("kind"))
            if t is None:
                raise SystemExit("apiserver: %s: unknown kind %r / apiVersion %r"
                                 % (fn, o.get("kind"), o.get("apiVersion")))
            store.update(t, o, admin=True)
            n += 1
    return n


def write_kubeconfig(path, url, ca, token):
    lines = ["apiVersion: v1", "kind: Config", "clusters:", "- name: test", "  cluster:",
             "    server: %s" % url]
    if ca:
        lines.append("    certificate-authority: %s" % ca)
    lines += ["users:", "- name: test", "  user:"]
    lines.append("    token: %s" % token if token else "    {}")
    lines += ["contexts:", "- name: test", "  context:", "    cluster: test",
              "    user: test", "current-context: test", ""]
    _write_atomic(path, "\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--fixtures", help="directory of *.json (and *.yaml with PyYAML) objects")
    ap.add_argument("--tls-dir", help="serve HTTPS; CA and server cert made (or reused) here")
    ap.add_argument("--token", help="require Authorization: Bearer TOKEN")
    ap.add_argument("--token-file", help="write the token here (and on rotation)")
    ap.add_argument("--kubeconfig", help="write a kubeconfig for this server here")
    ap.add_argument("--bookmark-interval", type=float, default=1.0)
    ap.add_argument("--history", type=int, default=1000,
                    help="watch event history window (events)")
    ap.add_argument("--initial-rv", type=int, default=1000)
    ap.add_argument("--too-large-rv-wait", type=float, default=3.0)
    ap.add_argument("--default-watch-timeout", type=float, default=1800.0)
    ap.add_argument("--exit-on-stdin-eof", action="store_true",
                    help="exit when stdin closes (the test process died)")
    ap.add_argument("--verbose", "-v", action="store_true")
    cfg = ap.parse_args(argv)
    if cfg.token_file and not cfg.token:
        ap.error("--token-file needs --token")

    srv = Server((cfg.host, cfg.port), cfg)
    scheme = "http"
    ca = None
    if cfg.tls_dir:
        crt, key = make_certs(cfg.tls_dir)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(crt, key)
        ctx.set_alpn_protocols(["http/1.1"])
        srv.ssl_ctx = ctx
        scheme = "https"
        ca = os.path.abspath(os.path.join(cfg.tls_dir, "ca.crt"))
    if cfg.fixtures:
        load_fixtures(srv.store, cfg.fixtures)
    if cfg.token_file:
        _write_atomic(cfg.token_file, cfg.token)
    port = srv.server_address[1]
    host = cfg.host if ":" not in cfg.host else "[%s]" % cfg.host
    url = "%s://%s:%d" % (scheme, host, port)
    if cfg.kubeconfig:
        write_kubeconfig(cfg.kubeconfig, url, ca, cfg.token)

    def stop(*_):
        srv.stop_watches()
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if cfg.exit_on_stdin_eof:
        def stdin_watch():
            try:  # os.read: a buffered stdin in a daemon thread aborts interpreter exit
                while os.read(0, 4096):
                    pass
            except OSError:
                pass
            stop()
        threading.Thread(target=stdin_watch, daemon=True).start()

    if cfg.port_file:
        _write_atomic(cfg.port_file, "%d\n" % port)
    print(port, flush=True)
    if cfg.verbose:
        sys.stderr.write("apiserver: serving %s\n" % url)
    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        srv.stop_watches()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            with srv.store.lock:
                if not srv.store.watches:
                    break
            time.sleep(0.02)
        srv.server_close()
        if cfg.port_file:
            try:
                os.unlink(cfg.port_file)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
