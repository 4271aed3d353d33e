#!/bin/bash
# make test: every unit test (ASan/UBSan) and every root integration suite,
# then one closing line "N passed, M failed" over all of them.
set -uo pipefail
cd "$(dirname "$0")/.."
passed=0 failed=0 status=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

count() {	# count "$pass_regex" "$fail_regex" from $log
	local p f
	p=$(grep -oE "$1" "$log" | grep -oE '[0-9]+' | awk '{s += $1} END {print s + 0}')
	f=$(grep -oE "$2" "$log" | grep -oE '[0-9]+' | awk '{s += $1} END {print s + 0}')
	passed=$((passed + p))
	failed=$((failed + f))
}

for t in build/unit/test_*; do
	echo "== unit: $t"
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 "$t" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	count '\[  PASSED  \] [0-9]+ test' '\[  FAILED  \] [0-9]+ test'
	if [ "$rc" != 0 ] && ! grep -q '\[  FAILED  \]' "$log"; then
		failed=$((failed + 1))	# crashed before cmocka could count
	fi
	[ "$rc" = 0 ] || status=1
done
for t in tests/integration/test_*.py tests/kube/test_*.py; do
	echo "== integration: $t"
	python3 "$t" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	count '^[0-9]+ passed' ', [0-9]+ failed'
	if [ "$rc" != 0 ] && ! grep -qE '^[0-9]+ passed, [0-9]+ failed' "$log"; then
		failed=$((failed + 1))
	fi
	[ "$rc" = 0 ] || status=1
done
# The benchmark harness at tiny sizes, so that it does not rot; it asserts
# no timing, only that every part runs and cleans up.
echo "== bench smoke: tests/bench/run.py --smoke"
if python3 tests/bench/run.py --smoke > "$log" 2>&1; then
	passed=$((passed + 1))
	tail -3 "$log"
else
	cat "$log"
	failed=$((failed + 1))
	status=1
fi
echo
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] || status=1
exit $status
