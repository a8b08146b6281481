#!/usr/bin/env bash
# bench_sweep on four small points (two of them io), then bench_report: every report file must
# appear, the summary line must count the points, no io_service may outlive the sweep, and the
# temporary folder is removed whatever happens.
set -euo pipefail
sweep=$1
report=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# Two wait points and two io points: the io ones make the sweep start lesson 08's service.
"$sweep" --quick --timeline-out="$dir/timeline.csv" --benchmark_filter='^scaling/static/(wait|io)/fixed/n:[0-9]+/p:(1|2)/' \
  --benchmark_out="$dir/sweep.json" --benchmark_out_format=json >/dev/null 2>&1
"$report" --sweep "$dir/sweep.json" --out "$dir" --plots makespan_wait.png >"$dir/check.txt"
cat "$dir/check.txt"
grep -Eq '^model check: [0-9]+ of 4 points within tolerance' "$dir/check.txt"
for f in sweep.csv verdicts.md index.html timeline.csv makespan_wait.dat speedup_wait.dat \
  makespan_io.dat makespan_io_model.dat plotvars.gp; do
  [ -s "$dir/$f" ] || { echo "pipeline: $f missing or empty" >&2; exit 1; }
done
[ "$(wc -l <"$dir/sweep.csv")" -eq 5 ] || { echo "pipeline: sweep.csv should hold 4 points" >&2; exit 1; }
[ "$(grep -Ec '^scaling,static,io,fixed,[0-9]+,' "$dir/sweep.csv")" -eq 2 ] ||
  { echo "pipeline: sweep.csv should hold the two io points" >&2; exit 1; }
grep -q 'measured,static' "$dir/timeline.csv"
# The sweep's io_service child went with it.
service="$(cd "$(dirname "$sweep")/../lessons" && pwd)/io_service"
for c in /proc/[0-9]*/cmdline; do
  if tr '\0' ' ' <"$c" 2>/dev/null | grep -q "^$service "; then
    echo "pipeline: the sweep left its io_service running ($c)" >&2; exit 1
  fi
done
# An unverified sweep must stop the report with exit 1 before anything is plotted.
sed 's/"run_type": "iteration",/"run_type": "iteration", "error_occurred": true, "error_message": "unverified run: test",/' \
  "$dir/sweep.json" >"$dir/bad.json"
if "$report" --sweep "$dir/bad.json" --out "$dir" 2>/dev/null; then
  echo "pipeline: an unverified sweep was reported" >&2; exit 1
fi
echo "pipeline: ok"
