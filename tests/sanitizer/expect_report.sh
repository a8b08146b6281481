#!/usr/bin/env bash
# Runs a planted faulty program and passes only if it exits non-zero AND its output holds the
# sanitizer's report: either alone could be an unrelated crash or a report that did not fail.
#   expect_report.sh PROGRAM 'PATTERN'
set -uo pipefail
prog=$1 pattern=$2
out=$("$prog" 2>&1)
rc=$?
if [ "$rc" -eq 0 ]; then
  echo "expect_report: $prog exited 0: the sanitizer did not fail it"; echo "$out"; exit 1
fi
if ! grep -qE -- "$pattern" <<<"$out"; then
  echo "expect_report: $prog exited $rc without the report /$pattern/:"; echo "$out"; exit 1
fi
echo "expect_report: $prog exited $rc with the expected report /$pattern/"
