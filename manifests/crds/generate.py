#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""Write the AgentPolicy and ClusterAgentPolicy CRDs (sluice.dev/v1alpha1).

The two kinds share most of their schema, so the schema is written once
here and the YAML next to this file is generated from it:

    python3 manifests/crds/generate.py           # rewrite the CRD files
    python3 manifests/crds/generate.py --check   # exit 1 if they are stale

Edit this file, never the YAML. Needs PyYAML (Debian: python3-yaml).

The schema follows the file validator, user/policy.c, check for check:
the same fields, types, enums, bounds and name rules, so that `kubectl
apply` refuses what `sluice policy validate` refuses. Where the API server
cannot say what the validator says (host bits in a CIDR, unknown fields
for clients that do not ask for strict field validation, ...), the
difference is listed in manifests/README.md.
"""
import sys
from pathlib import Path

import yaml

GROUP = "sluice.dev"
VERSION = "v1alpha1"
HERE = Path(__file__).resolve().parent

# --------------------------------------------------------------------------
# Patterns. Kubernetes matches `pattern` with Go's regexp (RE2, unanchored),
# so every pattern is anchored and uses nothing RE2 lacks (no look-around).

# RFC 1123 label, as dns_label_ok() checks it (lower case only).
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# metadata.name: dns_subdomain_ok(): dot-separated labels of at most 63.
_LABEL63 = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
DNS_SUBDOMAIN = rf"^{_LABEL63}(\.{_LABEL63})*$"
# Rule names: rule_name_ok(): like a label, dots allowed inside.
RULE_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"

# IPv4 as glibc's inet_pton() takes it: four decimal octets 0-255, no
# leading zeros ("01" is refused, "0" is not).
_OCT = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = rf"{_OCT}(\.{_OCT}){{3}}"

# IPv6 as inet_pton() takes it: RFC 4291 text forms, "::" for one or more
# zero groups, an IPv4 tail in place of the last two groups. Built from the
# RFC 3986 grammar, one alternative per position of "::".
_H16 = r"[0-9A-Fa-f]{1,4}"
_LS32 = rf"({_H16}:{_H16}|{IPV4})"


def _rep(n):
    return f"({_H16}:){{{n}}}" if n else ""


def _head(n):
    # up to n groups before "::": [ *(n-1)( h16 ":" ) h16 ]
    if n == 0:
        return ""
    if n == 1:
        return f"({_H16})?"
    return f"(({_H16}:){{0,{n - 1}}}{_H16})?"


IPV6 = "(" + "|".join([
    f"{_rep(6)}{_LS32}",
    f"::{_rep(5)}{_LS32}",
    f"{_head(1)}::{_rep(4)}{_LS32}",
    f"{_head(2)}::{_rep(3)}{_LS32}",
    f"{_head(3)}::{_rep(2)}{_LS32}",
    f"{_head(4)}::{_H16}:{_LS32}",
    f"{_head(5)}::{_LS32}",
    f"{_head(6)}::{_H16}",
    f"{_head(7)}::",
]) + ")"

# cidr__parse(): an address, optionally "/" and 1 to 3 digits whose value
# is at most 32 (IPv4) or 128 (IPv6); "/032" is taken as 32.
_V4LEN = r"(0{0,2}[0-9]|0?[12][0-9]|0?3[0-2])"
_V6LEN = r"(0{0,2}[0-9]|0?[1-9][0-9]|1[01][0-9]|12[0-8])"
CIDR = rf"^({IPV4}(/{_V4LEN})?|{IPV6}(/{_V6LEN})?)$"

# fqdn__check(): dot-separated RFC 1123 labels of 1 to 63 characters, in
# any case (the name is lower-cased), one trailing dot allowed. The total
# length (at most 253 without the trailing dot) and "not an IPv4 address"
# are separate checks in the schema (anyOf/not below).
_LABEL_ANYCASE = r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
FQDN = rf"^{_LABEL_ANYCASE}(\.{_LABEL_ANYCASE})*\.?$"

# selector__check(): a path below the cgroup2 mount. Leading slashes are
# ignored; something must follow them; no component may be "..". Without
# look-ahead, "a component that is not .." is spelled out: empty, one
# character, two characters that are not "..", or three or more.
_COMP = r"([^/]?|[^/.][^/]|\.[^/.]|[^/]{3,})"
_COMP1 = r"([^/]|[^/.][^/]|\.[^/.]|[^/]{3,})"
CGROUP_PATH = rf"^/*{_COMP1}(/{_COMP})*$"

# --------------------------------------------------------------------------
# Limits that exist only because the API server needs them to bound the cost
# of the CEL rules below (it refuses a CRD whose rules could cost more than
# 10^7 for the largest object the schema allows). Policies add up, so a
# policy that would need more rules can be split in two.
MAX_EGRESS = 512
MAX_EGRESS_DENY = 64
# One rule with more port entries than this can never be compiled: one
# address prefix holds at most 16 (SL_MAX_PORT_ENTRIES in sluice.h).
MAX_PORTS = 16


def s(description, **kw):
    return {"type": "string", "description": description, **kw}


def label_selector(what, scope):
    return {
        "type": "object",
        "description": (
            f"Selects {what} by their labels. Only matchLabels is supported: every "
            f"listed label must be present with the given value. An empty selector "
            f"({{}}) selects every {scope}."
        ),
        "properties": {
            "matchLabels": {
                "type": "object",
                "description": "Label keys and the exact values they must have.",
                "additionalProperties": {"type": "string"},
            },
            # Declared so that it is refused, not pruned: a client without
            # strict field validation would otherwise drop it silently and
            # the selector would select more than its author meant.
            "matchExpressions": {
                "type": "array",
                "description": (
                    "Not supported: sluice selects by matchLabels only. Declared so "
                    "that a policy using it is refused instead of having it dropped, "
                    "which would widen the selection."
                ),
                "items": {"type": "object", "description": "Not supported.",
                          "x-kubernetes-preserve-unknown-fields": True},
            },
        },
        "x-kubernetes-validations": [{
            "rule": "!has(self.matchExpressions)",
            "message": "matchExpressions is not supported; use matchLabels",
            "fieldPath": ".matchExpressions",
        }],
    }


def selector(cluster):
    pods = ("pods in the namespaces that namespaceSelector selects" if cluster
            else "pods in the policy's namespace")
    return {
        "type": "object",
        "description": (
            "The workloads the policy governs: pods (podSelector, Kubernetes mode) or "
            "cgroups (cgroupPaths, nodes and hosts without Kubernetes), or both. A "
            "selected workload is default-deny: it may reach only what the egress "
            "rules of the policies that select it allow, plus its DNS resolvers "
            "(see dns)."
        ),
        "properties": {
            "podSelector": label_selector("pods", "pod in the selected namespaces"
                                          if cluster else "pod in the policy's namespace"),
            "cgroupPaths": {
                "type": "array",
                "description": (
                    "Cgroups to govern, as paths below the cgroup2 mount with shell "
                    "globs (\"agents.slice/*\", \"agents.slice/coding-*.scope\"). Cgroups "
                    "created later are governed from their first socket, and so are "
                    "their descendants. A leading \"/\" is ignored; \"..\" is refused."
                ),
                "items": s("A cgroup path or glob below the cgroup2 mount.",
                           pattern=CGROUP_PATH),
            },
        },
        "x-kubernetes-validations": [{
            "rule": "has(self.podSelector) || has(self.cgroupPaths)",
            "message": "needs podSelector or cgroupPaths (or both)",
        }],
        "_pods": pods,
    }


def peer(cluster):
    svc_ns = (
        "Namespace of the Service. Required in a ClusterAgentPolicy, which has no "
        "namespace of its own." if cluster else
        "Namespace of the Service. Default: the policy's namespace."
    )
    svc = {
        "type": "object",
        "description": (
            "A Kubernetes Service (Kubernetes mode): its cluster IPs and the addresses "
            "of its endpoints, kept current as they change."
        ),
        "properties": {
            "name": s("Name of the Service.", pattern=DNS_LABEL, maxLength=63),
            "namespace": s(svc_ns, pattern=DNS_LABEL, maxLength=63),
        },
        "required": ["name", "namespace"] if cluster else ["name"],
    }
    return {
        "type": "object",
        "description": "One destination: exactly one of cidr, fqdn or service.",
        "properties": {
            "cidr": s(
                "An IPv4 or IPv6 prefix (\"104.18.0.0/16\", \"fd00:10:96::/112\") or a "
                "bare address (a host route). The host bits must be zero. IPv4 rules "
                "also govern IPv4-mapped IPv6 destinations (::ffff:a.b.c.d).",
                pattern=CIDR),
            "fqdn": {
                "type": "string",
                "description": (
                    "A host name (\"api.openai.com\"). sluice resolves it itself (A and "
                    "AAAA, honouring the TTLs) and allows the addresses of the answer; "
                    "a name that does not resolve matches nothing. Wildcards are not "
                    "supported: without a DNS proxy they cannot be enumerated."
                ),
                "pattern": FQDN,
                # at most 253 characters, not counting one trailing dot
                "anyOf": [{"maxLength": 253}, {"maxLength": 254, "pattern": r"\.$"}],
                # a dotted quad is an address: that is what cidr is for
                "not": {"pattern": rf"^{IPV4}$"},
            },
            "service": svc,
        },
        "oneOf": [{"required": ["cidr"]}, {"required": ["fqdn"]}, {"required": ["service"]}],
    }


def port():
    return {
        "type": "object",
        "description": (
            "A port or port range and a protocol. Without port, every port of the "
            "protocol."
        ),
        "properties": {
            "port": {"type": "integer", "minimum": 1, "maximum": 65535,
                     "description": "Destination port, or the first port of the range."},
            "endPort": {"type": "integer", "minimum": 1, "maximum": 65535,
                        "description": "Last port of the range (inclusive); needs port, "
                                       "and must not be less than it."},
            "protocol": s("TCP, UDP or SCTP.", enum=["TCP", "UDP", "SCTP"], default="TCP"),
        },
        "x-kubernetes-validations": [
            {"rule": "has(self.port) || !has(self.endPort)",
             "message": "endPort needs port (the start of the range)",
             "fieldPath": ".endPort"},
            {"rule": "!has(self.port) || !has(self.endPort) || self.endPort >= self.port",
             "message": "endPort must not be less than port",
             "fieldPath": ".endPort"},
        ],
    }


def rule(cluster, deny):
    if deny:
        what = ("A guardrail: destinations the selected workloads may never reach, "
                "whatever any policy allows.")
        name = ("Name of the rule, unique in the policy (across egress and egressDeny); "
                "reported as the rule of every refusal it decides.")
    else:
        what = "Destinations the selected workloads may reach."
        name = ("Name of the rule, unique in the policy; reported as the rule of every "
                "verdict it decides.")
    return {
        "type": "object",
        "description": what,
        "properties": {
            "name": s(name + " At most 63 of a-z, 0-9, '-' and '.', starting and ending "
                      "with a letter or digit.", pattern=RULE_NAME, maxLength=63),
            "class": s(
                "What the destination is, carried in every flow record the rule decides: "
                "llm (an LLM API), tool (an MCP server), agent (another agent, A2A), "
                "gateway (an AI gateway), dns, or other.",
                enum=["llm", "tool", "agent", "gateway", "dns", "other"], default="other"),
            "to": {
                "type": "array",
                "description": "The destinations; at least one.",
                "minItems": 1,
                "items": peer(cluster),
            },
            "ports": {
                "type": "array",
                "description": (
                    "Ports and protocols. Omitted or empty: every port and protocol. At "
                    f"most {MAX_PORTS}, the number of port entries one address can hold."
                ),
                "maxItems": MAX_PORTS,
                "items": port(),
            },
            "tools": {
                "type": "array",
                "description": (
                    "MCP tools the workload may call through this destination, compared "
                    "with the AI gateway's decision log (gen_ai.tool.name). Not enforced "
                    "in the kernel."
                ),
                "x-kubernetes-list-type": "set",
                "items": s("An MCP tool name.", minLength=1),
            },
        },
        "required": ["name", "to"],
    }


def spec(cluster):
    sel = selector(cluster)
    pods = sel.pop("_pods")
    props = {
        "selector": sel,
    }
    if cluster:
        props["namespaceSelector"] = label_selector("namespaces", "namespace")
        props["namespaceSelector"]["description"] += (
            " Without namespaceSelector the policy applies in every namespace.")
    props.update({
        "mode": s(
            "enforce: connections the policies do not allow fail with EPERM. audit: "
            "nothing is refused; what would have been is reported with verdict audit. "
            "A workload selected by several policies is enforced unless all of them "
            "say audit.", enum=["enforce", "audit"], default="enforce"),
        "dns": s(
            "allow: the workload may reach its DNS resolvers on port 53 (TCP and UDP), "
            "reported with class dns. deny: no implicit DNS rule.",
            enum=["allow", "deny"], default="allow"),
        "egress": {
            "type": "array",
            "description": (
                "Allow rules. The allows of every policy that selects a workload add up; "
                f"anything none of them allows is refused. At most {MAX_EGRESS} per "
                "policy: split larger sets across policies."
            ),
            "maxItems": MAX_EGRESS,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": rule(cluster, deny=False),
        },
    })
    if cluster:
        props["egressDeny"] = {
            "type": "array",
            "description": (
                "Deny rules (guardrails) that beat every allow, in this policy and in "
                f"every AgentPolicy. At most {MAX_EGRESS_DENY} per policy."
            ),
            "maxItems": MAX_EGRESS_DENY,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": rule(cluster, deny=True),
        }
    out = {
        "type": "object",
        "description": (
            f"The policy: which workloads ({pods}) and where they may connect."
        ),
        "properties": props,
        "required": ["selector"],
    }
    if cluster:
        out["x-kubernetes-validations"] = [{
            "rule": ("!has(self.egress) || !has(self.egressDeny) || "
                     "self.egress.all(a, !self.egressDeny.exists(d, d.name == a.name))"),
            "message": "rule names must be unique across egress and egressDeny",
        }]
    return out


def status():
    return {
        "type": "object",
        "description": "Written by sluiced; never by users.",
        "properties": {
            "observedGeneration": {
                "type": "integer", "format": "int64",
                "description": "The metadata.generation the status describes."},
            "rules": {
                "type": "integer", "format": "int32",
                "description": "Number of rules (egress and egressDeny) in that generation."},
            "conditions": {
                "type": "array",
                "description": (
                    "Accepted: the policy passed sluice's own checks (False, with the "
                    "reason in the message, if not: a rejected policy changes nothing "
                    "and the last good version stays in force). Applied: compiled into "
                    "the kernel on every node that runs a selected workload."
                ),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": {
                    "type": "object",
                    "description": "A condition, as in metav1.Condition.",
                    "properties": {
                        "type": s("Accepted or Applied.", maxLength=316),
                        "status": s("True, False or Unknown.",
                                    enum=["True", "False", "Unknown"]),
                        "observedGeneration": {
                            "type": "integer", "format": "int64", "minimum": 0,
                            "description": "The generation the condition was set for."},
                        "lastTransitionTime": s("When the status last changed.",
                                                format="date-time"),
                        "reason": s("A CamelCase reason.", maxLength=1024, minLength=1,
                                    pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"),
                        "message": s("What is wrong, or what was applied.",
                                     maxLength=32768),
                    },
                    "required": ["type", "status", "lastTransitionTime", "reason", "message"],
                },
            },
        },
    }


def crd(cluster):
    kind = "ClusterAgentPolicy" if cluster else "AgentPolicy"
    plural = kind.lower().replace("policy", "policies")
    if cluster:
        doc = (
            "ClusterAgentPolicy is a cluster-wide egress policy for AI agent workloads: "
            "it selects pods across namespaces (namespaceSelector) and adds egressDeny "
            "guardrails, which beat any allow of any policy. See AgentPolicy for the "
            "rest; the same document validates as a file with `sluice policy validate`."
        )
    else:
        doc = (
            "AgentPolicy is a node-enforced egress allow-list for AI agent workloads "
            "(pods that call LLM APIs, MCP tool servers and other agents). sluice tags "
            "every socket with the identity of the workload that created it and refuses "
            "connect() and sendmsg() to any destination no selecting policy allows, in "
            "the kernel, with EPERM. The same document validates as a file with `sluice "
            "policy validate`."
        )
    columns = [
        {"name": "Mode", "type": "string", "jsonPath": ".spec.mode",
         "description": "enforce or audit"},
        {"name": "Rules", "type": "integer", "jsonPath": ".status.rules",
         "description": ("egress and egressDeny rules" if cluster else "egress rules")
                        + ", counted by sluiced"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "sluice",
                       "app.kubernetes.io/component": "crd"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Cluster" if cluster else "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": ["cap", "clusteragentpol"] if cluster else ["ap", "agentpol"],
                "categories": ["sluice"],
            },
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": doc,
                    "properties": {
                        "apiVersion": s("sluice.dev/v1alpha1"),
                        "kind": s(kind),
                        "metadata": {
                            "type": "object",
                            # The API server allows labels longer than 63
                            # characters in names; the validator does not.
                            "properties": {"name": {
                                "type": "string", "maxLength": 253,
                                "pattern": DNS_SUBDOMAIN}},
                        },
                        "spec": spec(cluster),
                        "status": status(),
                    },
                    "required": ["spec"],
                }},
            }],
        },
    }


HEADER = """\
# Generated by manifests/crds/generate.py: edit that file, then run it.
# {kind} ({group}/{version}); the schema mirrors `sluice policy validate`.
"""


class Dumper(yaml.SafeDumper):
    pass


def _str(dumper, data):
    # Descriptions stay on one line each: long, but diff- and grep-friendly.
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


def _quoted(node):
    # Patterns and CEL rules single-quoted, so that no YAML reader takes
    # their backslashes, "!" or "|" for anything but text.
    if isinstance(node, dict):
        return {k: (Quoted(v) if k in ("pattern", "rule") else _quoted(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_quoted(v) for v in node]
    return node


class Quoted(str):
    pass


Dumper.add_representer(str, _str)
Dumper.add_representer(
    Quoted, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", str(v), style="'"))


def render(cluster):
    kind = "ClusterAgentPolicy" if cluster else "AgentPolicy"
    body = yaml.dump(_quoted(crd(cluster)), Dumper=Dumper, sort_keys=False, width=1 << 16,
                     default_flow_style=False)
    return HEADER.format(kind=kind, group=GROUP, version=VERSION) + body


def main(argv):
    check = "--check" in argv[1:]
    stale = 0
    for cluster in (False, True):
        plural = "clusteragentpolicies" if cluster else "agentpolicies"
        path = HERE / f"{GROUP}_{plural}.yaml"
        text = render(cluster)
        if check:
            if not path.exists() or path.read_text() != text:
                print(f"{path}: stale; run {Path(argv[0]).name}", file=sys.stderr)
                stale = 1
        else:
            path.write_text(text)
    return stale


if __name__ == "__main__":
    sys.exit(main(sys.argv))
