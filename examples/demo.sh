#!/bin/bash
# sluice demo: an "agent" under `sluice run` on loopback only.
#
# Three local endpoints stand for an LLM API (127.0.0.1:18080), an MCP tool
# server (127.0.0.1:18081) and a host the agent must not reach
# (127.0.0.1:18082). The policy examples/policies/demo.yaml allows the first
# two; the kernel refuses the third with EPERM at connect() time.
set -euo pipefail
cd "$(dirname "$0")/.."

SLUICE=${SLUICE:-build/sluice}
# Tests run the demo on a pin path and cgroup subtree of their own.
run_opts=()
[ -n "${SLUICE_PIN_PATH:-}" ] && run_opts+=(--pin-path "$SLUICE_PIN_PATH")
[ -n "${SLUICE_CGROUP_ROOT:-}" ] && run_opts+=(--cgroup-root "$SLUICE_CGROUP_ROOT")
work=$(mktemp -d /tmp/sluice-demo.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

if [ "$(id -u)" != 0 ]; then
	echo "demo: needs root (BPF and cgroups); run: sudo make demo" >&2
	exit 1
fi

for port in 18080 18081 18082; do
	mkdir -p "$work/www$port"
	echo "hello from 127.0.0.1:$port" > "$work/www$port/index.html"
	python3 -m http.server --bind 127.0.0.1 --directory "$work/www$port" "$port" \
		>/dev/null 2>&1 &
	pids+=($!)
done
# wait for the listeners
for port in 18080 18081 18082; do
	for _ in $(seq 50); do
		(exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
		sleep 0.1
	done
done

cat > "$work/agent.sh" <<'AGENT'
#!/bin/bash
# The "agent": asks its LLM, calls its tool, then tries to go elsewhere.
for target in "llm-api 18080" "mcp-tools 18081" "forbidden 18082"; do
	set -- $target
	if out=$(curl -sS --max-time 3 "http://127.0.0.1:$2/" 2>&1); then
		echo "agent: $1 (127.0.0.1:$2): reached: $out"
	else
		echo "agent: $1 (127.0.0.1:$2): refused: $out"
	fi
done
AGENT
chmod +x "$work/agent.sh"

echo "== policy: examples/policies/demo.yaml"
"$SLUICE" policy validate examples/policies/demo.yaml
echo
echo "== sluice run --policy examples/policies/demo.yaml --events $work/events.jsonl -- agent.sh"
set +e
"$SLUICE" run "${run_opts[@]}" --policy examples/policies/demo.yaml --events "$work/events.jsonl" \
	-- "$work/agent.sh"
status=$?
set -e
echo "agent exited with status $status"
echo
echo "== summary (connect verdicts)"
python3 - "$work/events.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e["type"] != "connect":
        continue
    print(f'{e["verdict"]:6} {e["dst"]:18} rule={e["rule"]:13} class={e["class"] or "-":5} '
          f'pid={e["process"]["pid"]} comm={e["process"]["comm"]}')
PY
echo
echo "== events (JSON lines)"
cat "$work/events.jsonl"
