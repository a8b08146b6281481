#!/usr/bin/env bash
# bench_sweep on three small points, then bench_report: every report file must appear, the summary
# line must count the points, and the temporary folder is removed whatever happens.
set -euo pipefail
sweep=$1
report=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$sweep" --quick --timeline-out="$dir/timeline.csv" --benchmark_filter='^scaling/static/wait/fixed/n:[0-9]+/p:(1|2)/' \
  --benchmark_out="$dir/sweep.json" --benchmark_out_format=json >/dev/null 2>&1
"$report" --sweep "$dir/sweep.json" --out "$dir" --plots makespan_wait.png >"$dir/check.txt"
cat "$dir/check.txt"
grep -Eq '^model check: [0-9]+ of 2 points within tolerance' "$dir/check.txt"
for f in sweep.csv verdicts.md index.html timeline.csv makespan_wait.dat speedup_wait.dat plotvars.gp; do
  [ -s "$dir/$f" ] || { echo "pipeline: $f missing or empty" >&2; exit 1; }
done
[ "$(wc -l <"$dir/sweep.csv")" -eq 3 ] || { echo "pipeline: sweep.csv should hold 2 points" >&2; exit 1; }
grep -q 'measured,static' "$dir/timeline.csv"
# An unverified sweep must stop the report with exit 1 before anything is plotted.
sed 's/"run_type": "iteration",/"run_type": "iteration", "error_occurred": true, "error_message": "unverified run: test",/' \
  "$dir/sweep.json" >"$dir/bad.json"
if "$report" --sweep "$dir/bad.json" --out "$dir" 2>/dev/null; then
  echo "pipeline: an unverified sweep was reported" >&2; exit 1
fi
echo "pipeline: ok"
