#!/usr/bin/env bash
# `make test`: cargo test, then a last line that counts the tests that could not run here. Each
# such test prints `SKIPPED: <test>: <why>` (tests/common::skip); under CI=true a skip is a
# failure instead, so a CI run can never pass by skipping.
set -uo pipefail
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
# grep -o: a SKIPPED line may share a line with libtest's own output (tests run in parallel).
skips=$(grep -o 'SKIPPED: .*' "$log" | sort -u)
n=$(printf '%s' "$skips" | grep -c 'SKIPPED: ' || true)
status=$([ "$rc" -eq 0 ] && echo "passed" || echo "FAILED (exit $rc)")
if [ "$n" -gt 0 ]; then
  printf '%s\n' "$skips" | sed 's/^/  /'
  echo "make test: $status; $n tests skipped (listed above)"
else
  echo "make test: $status; 0 tests skipped"
fi
exit "$rc"
