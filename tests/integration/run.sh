#!/bin/bash
# Root integration tests: real BPF, real cgroups. Under CI=true a missing
# privilege fails the run; elsewhere it is skipped loudly.
set -uo pipefail
cd "$(dirname "$0")"
status=0
for t in test_*.py; do
	echo "== integration: $t"
	python3 "$t" || status=1
done
exit $status
