#!/usr/bin/env bash
# scripts/connections and scripts/service_load on small counts against the lesson programs in
# $1: each writes its CSV and its markdown section, a bad flag exits 2 with one line, and no
# io_service child is left behind. service_load's run needs wrk (scripts/bootstrap --bench).
set -euo pipefail
bin=$1
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$root/scripts/connections" --bin "$bin" --counts 4,16 --wait-us 20000 --out "$dir" >"$dir/out.txt"
grep -q '^# Many connections at once' "$dir/connections.md"
grep -q '| a thread per task | `per-task` | 16 |' "$dir/connections.md"
grep -q '^per-task,01,16,20000,' "$dir/connections.csv"
[ ! -e "$dir/.connections.md.tmp" ]
for bad in "--counts 5" "--counts 1,x" "--wait-us -1"; do
  rc=0; err=$("$root/scripts/connections" --bin "$bin" $bad --out "$dir" 2>&1 >/dev/null) || rc=$?
  [ "$rc" -eq 2 ] || { echo "scripts: connections $bad exited $rc, not 2" >&2; exit 1; }
  [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] || { echo "scripts: connections $bad: '$err'" >&2; exit 1; }
done
rc=0; "$root/scripts/service_load" --bin "$bin" --connections 0 --out "$dir" 2>/dev/null || rc=$?
[ "$rc" -eq 2 ] || { echo "scripts: service_load --connections 0 exited $rc, not 2" >&2; exit 1; }
if command -v wrk >/dev/null; then
  "$root/scripts/service_load" --bin "$bin" --quick --connections 10 --out "$dir" >/dev/null
  grep -q '^| 10 | [0-9]' "$dir/service_load.md"
else
  echo "scripts: wrk is not installed (scripts/bootstrap --bench): service_load's run not tested"
fi
for c in /proc/[0-9]*/cmdline; do
  if tr '\0' ' ' <"$c" 2>/dev/null | grep -q "^$bin/io_service "; then
    echo "scripts: an io_service was left running ($c)" >&2; exit 1
  fi
done
echo "scripts: ok"
