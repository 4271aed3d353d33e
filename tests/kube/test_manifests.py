#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""The Kubernetes manifests parse, the CRDs are current and complete, every
example policy passes `sluice policy validate`, the DaemonSet keeps the
properties the README promises, and scripts/kind.sh is shellcheck-clean."""
import glob
import os
import subprocess
import sys
import tempfile
import unittest

import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SLUICE = os.path.join(REPO, "build", "sluice")


def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


class Manifests(unittest.TestCase):
    def test_every_yaml_parses(self):
        files = glob.glob(os.path.join(REPO, "manifests", "**", "*.yaml"), recursive=True)
        self.assertGreater(len(files), 8)
        for f in files:
            with self.subTest(f=f):
                self.assertTrue(docs(f), f + " is empty")

    def test_crds_current_and_complete(self):
        r = subprocess.run([sys.executable, os.path.join(REPO, "manifests", "crds", "generate.py"),
                            "--check"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        kinds = {}
        for f in glob.glob(os.path.join(REPO, "manifests", "crds", "*.yaml")):
            for d in docs(f):
                kinds[d["spec"]["names"]["kind"]] = d
        self.assertEqual(set(kinds), {"AgentPolicy", "ClusterAgentPolicy"})
        self.assertEqual(kinds["AgentPolicy"]["spec"]["scope"], "Namespaced")
        self.assertEqual(kinds["ClusterAgentPolicy"]["spec"]["scope"], "Cluster")
        for k, d in kinds.items():
            self.assertEqual(d["spec"]["group"], "sluice.dev")
            v = d["spec"]["versions"][0]
            self.assertEqual(v["name"], "v1alpha1")
            self.assertIn("status", v["subresources"])
            cols = {c["name"].lower() for c in v["additionalPrinterColumns"]}
            self.assertTrue({"mode", "rules", "age"} <= cols, cols)
            self.assertTrue(d["spec"]["names"].get("shortNames"))
            spec = v["schema"]["openAPIV3Schema"]["properties"]["spec"]
            self.assertTrue(spec.get("description"))
        cap = kinds["ClusterAgentPolicy"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        self.assertIn("egressDeny", cap["properties"]["spec"]["properties"])
        self.assertIn("namespaceSelector", cap["properties"]["spec"]["properties"])

    def test_example_policies_validate(self):
        paths = (glob.glob(os.path.join(REPO, "manifests", "examples", "*.yaml")) +
                 glob.glob(os.path.join(REPO, "manifests", "kind", "*.yaml")) +
                 glob.glob(os.path.join(REPO, "examples", "policies", "*")))
        n = 0
        with tempfile.TemporaryDirectory() as tmp:
            for p in paths:
                if p.endswith(".json"):
                    pol = [p]
                else:
                    ds = [d for d in docs(p) if d.get("kind") in ("AgentPolicy", "ClusterAgentPolicy")]
                    if not ds:
                        continue
                    out = os.path.join(tmp, "%d.yaml" % n)
                    with open(out, "w") as f:
                        yaml.safe_dump_all(ds, f)
                    pol = [out]
                r = subprocess.run([SLUICE, "policy", "validate"] + pol, capture_output=True,
                                   text=True)
                n += 1
                self.assertEqual(r.returncode, 0, "%s: %s" % (p, r.stderr))
        self.assertGreaterEqual(n, 6)

    def test_daemonset(self):
        ds = [d for d in docs(os.path.join(REPO, "manifests", "daemonset.yaml"))
              if d["kind"] == "DaemonSet"][0]
        pod = ds["spec"]["template"]["spec"]
        main = [c for c in pod["containers"] if c["name"] == "sluiced"][0]
        self.assertFalse(main.get("securityContext", {}).get("privileged", False))
        self.assertTrue(main["securityContext"]["capabilities"]["add"])
        self.assertIn("ALL", main["securityContext"]["capabilities"]["drop"])
        self.assertIn("--kubernetes", main["args"])
        env = {e["name"]: e for e in main["env"]}
        self.assertEqual(env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName")
        self.assertEqual(main["livenessProbe"]["httpGet"]["path"], "/healthz")
        self.assertEqual(main["readinessProbe"]["httpGet"]["path"], "/readyz")
        self.assertTrue(main["resources"]["limits"] and main["resources"]["requests"])
        self.assertEqual(pod["priorityClassName"], "system-node-critical")
        self.assertIn({"operator": "Exists"}, pod["tolerations"])
        self.assertEqual(ds["spec"]["updateStrategy"]["type"], "RollingUpdate")
        # the cross-node lookups: the Service finds these pods on the port
        # they listen on, and each leaves its own address out
        svc = docs(os.path.join(REPO, "manifests", "peer-service.yaml"))[0]
        labels = ds["spec"]["template"]["metadata"]["labels"]
        self.assertEqual(svc["spec"]["clusterIP"], "None")
        self.assertTrue(svc["spec"]["selector"].items() <= labels.items())
        port = [p for p in main["ports"] if p["name"] == svc["spec"]["ports"][0]["targetPort"]][0]
        cm = docs(os.path.join(REPO, "manifests", "configmap.yaml"))[0]["data"]
        self.assertEqual(cm["SLUICE_PEER_LISTEN"], ":%d" % port["containerPort"])
        self.assertIn("--peer-service=%s/%s" % (svc["metadata"]["namespace"], svc["metadata"]["name"]),
                      main["args"])
        self.assertEqual(env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP")
        kust = docs(os.path.join(REPO, "manifests", "kustomization.yaml"))[0]
        self.assertIn("peer-service.yaml", kust["resources"])

    def test_kind_script_shellcheck(self):
        if not shutil_which("shellcheck"):
            if os.environ.get("CI") == "true":
                self.fail("shellcheck missing under CI")
            self.skipTest("shellcheck not installed")
        r = subprocess.run(["shellcheck", os.path.join(REPO, "scripts", "kind.sh"),
                            os.path.join(REPO, "examples", "demo.sh")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout)


def shutil_which(cmd):
    import shutil
    return shutil.which(cmd)


if __name__ == "__main__":
    res = unittest.main(exit=False).result
    failed = len(res.failures) + len(res.errors)
    print("%d passed, %d failed, %d skipped" % (res.testsRun - failed - len(res.skipped), failed,
                                                len(res.skipped)))
    sys.exit(1 if failed else 0)
