#!/usr/bin/env bash
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#
# sluice on a local kind cluster.
#
#   scripts/kind.sh up       create the cluster (manifests/kind/cluster.yaml)
#   scripts/kind.sh deploy   build the image, load it into the nodes, apply manifests/
#   scripts/kind.sh e2e      an agent pod reaches its tool and is refused elsewhere
#   scripts/kind.sh down     delete the cluster
#
# Environment:
#   CLUSTER          kind cluster name (default: sluice)
#   IMAGE            image to build and deploy (default: sluice:dev)
#   KIND_NODE_IMAGE  node image for `up` (default: kind's own)
#   E2E_IMAGE        image of the e2e workloads (default: busybox:1.36)
#   E2E_KEEP=1       keep the e2e namespace after the test
#
# Every kubectl call names the context kind-$CLUSTER: this script never
# touches another cluster, whatever the current context is.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=${CLUSTER:-sluice}
IMAGE=${IMAGE:-sluice:dev}
E2E_IMAGE=${E2E_IMAGE:-busybox:1.36}
CONTEXT="kind-${CLUSTER}"
NS=sluice-system
E2E_NS=sluice-e2e

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'kind.sh: %s\n' "$*" >&2; exit 1; }

need() {
	local tool=$1 hint=$2
	command -v "$tool" >/dev/null 2>&1 || die "$tool not found in PATH: $hint"
}

need_docker() {
	need docker "install Docker Engine (kind runs its nodes as Docker containers)"
	docker info >/dev/null 2>&1 ||
		die "docker is installed but its daemon does not answer (is it running, and may this user use it? try: docker info)"
}

need_kind() {
	need kind "install kind (a release binary, or: go install sigs.k8s.io/kind@latest)"
}

need_kubectl() {
	need kubectl "install kubectl (1.30 or later)"
}

k() { kubectl --context "$CONTEXT" "$@"; }

cluster_exists() { kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; }

need_cluster() {
	cluster_exists || die "no kind cluster named $CLUSTER: run 'make kind-up' (scripts/kind.sh up) first"
}

# The DaemonSet uses securityContext.appArmorProfile (Kubernetes 1.30).
check_version() {
	local json minor
	json=$(k version -o json 2>/dev/null) || die "cannot reach the API server of context $CONTEXT"
	minor=$(printf '%s\n' "$json" | sed -n '/"serverVersion"/,/}/s/.*"minor": *"\([0-9]*\).*/\1/p')
	[[ -n $minor ]] || die "cannot read the server version of context $CONTEXT"
	((minor >= 30)) || die "the cluster runs Kubernetes 1.$minor; sluice's manifests need 1.30 or later (set KIND_NODE_IMAGE)"
}

cmd_up() {
	need_docker
	need_kind
	need_kubectl
	if cluster_exists; then
		log "kind cluster $CLUSTER exists; reusing it"
	else
		log "creating kind cluster $CLUSTER"
		local args=(create cluster --name "$CLUSTER" --config "$ROOT/manifests/kind/cluster.yaml" --wait 180s)
		[[ -n ${KIND_NODE_IMAGE:-} ]] && args+=(--image "$KIND_NODE_IMAGE")
		kind "${args[@]}"
	fi
	check_version
	k get nodes -o wide
}

diagnose() {
	k -n "$NS" get pods -o wide >&2 || true
	local pod
	for pod in $(k -n "$NS" get pods -l app.kubernetes.io/component=sluiced -o name 2>/dev/null); do
		log "$pod: mount-bpffs"
		k -n "$NS" logs "$pod" -c mount-bpffs --tail=20 >&2 || true
		log "$pod: sluiced"
		k -n "$NS" logs "$pod" -c sluiced --tail=50 >&2 || true
	done
}

cmd_deploy() {
	need_docker
	need_kind
	need_kubectl
	need_cluster
	check_version
	log "building $IMAGE"
	docker build -t "$IMAGE" "$ROOT"
	log "loading $IMAGE into the nodes of $CLUSTER"
	kind load docker-image "$IMAGE" --name "$CLUSTER"
	local existed=0
	k -n "$NS" get daemonset sluiced >/dev/null 2>&1 && existed=1
	k apply -f "$ROOT/manifests/namespace.yaml"
	if ! k -n "$NS" get secret sluice-peer-token >/dev/null 2>&1; then
		log "creating the daemons' lookup token (secret sluice-peer-token)"
		k -n "$NS" create secret generic sluice-peer-token \
			--from-literal=token="$(head -c 32 /dev/urandom | base64)"
	fi
	log "applying manifests/"
	k apply -k "$ROOT/manifests"
	k wait --for=condition=Established --timeout=60s \
		crd/agentpolicies.sluice.dev crd/clusteragentpolicies.sluice.dev
	if [[ $IMAGE != sluice:dev ]]; then
		k -n "$NS" set image daemonset/sluiced sluiced="$IMAGE" mount-bpffs="$IMAGE"
	elif ((existed)); then
		# Same tag, new image: only new pods pick it up. Safe at any time:
		# each new pod adopts the pinned datapath.
		k -n "$NS" rollout restart daemonset/sluiced
	fi
	if ! k -n "$NS" rollout status daemonset/sluiced --timeout=180s; then
		diagnose
		die "sluiced is not ready (see the diagnosis above)"
	fi
	k -n "$NS" get pods -o wide
}

# ------------------------------------------------------------------ e2e

PASS=0
FAIL=0

ok() { PASS=$((PASS + 1)); printf 'ok   %s\n' "$*"; }
bad() { FAIL=$((FAIL + 1)); printf 'FAIL %s\n' "$*"; }

# wget from the agent pod; prints what wget printed, returns its status.
agent_get() {
	k -n "$E2E_NS" exec e2e-agent -- wget -q -T 5 -O - "http://$1:8080/" 2>&1
}

# "reach NAME WANT": NAME's page must contain WANT.
expect_reach() {
	local out
	if out=$(agent_get "$1") && [[ $out == *"$2"* ]]; then
		ok "agent reaches $1 ($3)"
	else
		bad "agent cannot reach $1 ($3): $out"
	fi
}

# connect() refused by the kernel: EPERM, which busybox wget reports as
# "Operation not permitted" (a timeout or "bad address" would be something
# else failing: no route, no DNS).
refused() {
	local out
	out=$(agent_get "$1") && return 1
	[[ $out == *"not permitted"* ]]
}

expect_refused() {
	local out
	if out=$(agent_get "$1"); then
		bad "agent reached $1 ($2)"
	elif [[ $out == *"not permitted"* ]]; then
		ok "agent refused $1 with EPERM ($2)"
	else
		bad "agent failed to reach $1, but not with EPERM ($2): $out"
	fi
}

# "wait_for SECONDS CMD...": until CMD succeeds.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		((SECONDS < deadline)) || return 1
		sleep 2
	done
}

sluiced_pod_on() {
	k -n "$NS" get pods -l app.kubernetes.io/component=sluiced \
		--field-selector "spec.nodeName=$1" -o jsonpath='{.items[0].metadata.name}'
}

deny_recorded() {
	k -n "$NS" exec "$1" -c sluiced -- \
		grep -c '"verdict":"deny".*"policy":"sluice-e2e/e2e-agent"' /var/log/sluice/flows.jsonl
}

cmd_e2e() {
	need_kubectl
	need_kind
	need_cluster
	k -n "$NS" rollout status daemonset/sluiced --timeout=10s >/dev/null 2>&1 ||
		die "sluiced is not running in $CLUSTER: run 'make kind-deploy' (scripts/kind.sh deploy) first"

	if command -v docker >/dev/null 2>&1 && docker image inspect "$E2E_IMAGE" >/dev/null 2>&1; then
		kind load docker-image "$E2E_IMAGE" --name "$CLUSTER" >/dev/null
	fi
	log "starting the e2e workloads in $E2E_NS"
	k delete agentpolicy e2e-agent -n "$E2E_NS" --ignore-not-found >/dev/null 2>&1 || true
	sed "s|busybox:1.36|$E2E_IMAGE|" "$ROOT/manifests/kind/e2e-workloads.yaml" | k apply -f -
	k -n "$E2E_NS" rollout status deployment/tool-server --timeout=120s
	k -n "$E2E_NS" rollout status deployment/forbidden --timeout=120s
	k -n "$E2E_NS" wait --for=condition=Ready pod/e2e-agent --timeout=120s

	log "without a policy: both servers are reachable"
	expect_reach tool-server tool-ok "no policy"
	expect_reach forbidden forbidden-ok "no policy"

	log "with the AgentPolicy: the tool only"
	k apply -f "$ROOT/manifests/kind/e2e-policy.yaml"
	if wait_for 60 refused forbidden; then
		ok "policy in force within 60 s"
	else
		bad "policy not in force after 60 s"
	fi
	expect_reach tool-server tool-ok "allowed by rule tool; name resolved through the DNS rule"
	expect_refused forbidden "default-deny"

	local node pod
	node=$(k -n "$E2E_NS" get pod e2e-agent -o jsonpath='{.spec.nodeName}')
	pod=$(sluiced_pod_on "$node")
	if [[ -n $pod ]] && wait_for 20 deny_recorded "$pod" >/dev/null; then
		ok "flow record: deny by sluice-e2e/e2e-agent on $node"
	else
		bad "no deny flow record of sluice-e2e/e2e-agent on $node (pod ${pod:-none})"
	fi

	log "enforcement while sluiced restarts on $node"
	k -n "$NS" delete pod "$pod" --wait=false
	k -n "$NS" wait --for=delete "pod/$pod" --timeout=60s >/dev/null
	expect_refused forbidden "old daemon gone, new one not ready"
	k -n "$NS" rollout status daemonset/sluiced --timeout=120s
	expect_refused forbidden "new daemon adopted the pins"
	expect_reach tool-server tool-ok "new daemon adopted the pins"

	log "policy deleted: the agent is ungoverned again"
	k -n "$E2E_NS" delete agentpolicy e2e-agent
	if wait_for 60 agent_get forbidden >/dev/null; then
		ok "agent reaches forbidden once no policy selects it"
	else
		bad "agent still refused 60 s after the policy was deleted"
	fi

	if ((FAIL)) || [[ ${E2E_KEEP:-0} == 1 ]]; then
		log "keeping namespace $E2E_NS for inspection (kubectl --context $CONTEXT -n $E2E_NS ...)"
	else
		k delete namespace "$E2E_NS" --wait=false >/dev/null
	fi
	printf 'e2e: %d passed, %d failed\n' "$PASS" "$FAIL"
	((FAIL == 0))
}

cmd_down() {
	need_kind
	if cluster_exists; then
		kind delete cluster --name "$CLUSTER"
	else
		log "no kind cluster named $CLUSTER"
	fi
}

usage() {
	cat <<'EOF'
usage: scripts/kind.sh up|deploy|e2e|down

  up       create the kind cluster (manifests/kind/cluster.yaml)
  deploy   build the image, load it into the nodes, kubectl apply -k manifests/
  e2e      an agent pod reaches its tool and is refused elsewhere
  down     delete the cluster

Environment: CLUSTER (sluice), IMAGE (sluice:dev), KIND_NODE_IMAGE,
E2E_IMAGE (busybox:1.36), E2E_KEEP=1.
EOF
}

main() {
	case ${1:-} in
	up) cmd_up ;;
	deploy) cmd_deploy ;;
	e2e) cmd_e2e ;;
	down) cmd_down ;;
	-h | --help | help) usage ;;
	*)
		usage >&2
		exit 2
		;;
	esac
}

main "$@"
