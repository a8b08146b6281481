# A timeline per executor: 12 mixed tasks with bimodal durations on as many workers as cores.
# Each task is a bar on the row of the worker that ran it: light while it waits, dark while it
# computes. Every panel shares one time axis, so the executors compare at a glance.
load "plots/common.gp"
height = 80 + 130 * n_executors  # each executor gets the same room, however many there are
if (fmt eq "svg") {
  set terminal svg size 960, height dynamic enhanced font "sans,12"
} else {
  set terminal pngcairo size 960, height enhanced font "sans,11"
}
set output data."/gantt.".fmt
set datafile separator ","
f = data."/timeline.csv"
stats f using (strcol(1) eq "measured" ? $6 / 1e6 : 1/0) nooutput
set xrange [0:STATS_max * 1.02]
set multiplot layout n_executors, 1 title sprintf("Measured timelines: 12 mixed bimodal tasks on %d workers, %d cores (time in ms)", cores, cores)
set ylabel "worker"
set key off
set grid noytics
set ytics 1
set mytics 1
set tmargin 1.5
set bmargin 1.5
n = 0
do for [ex in executors] {
  n = n + 1
  set label 1 ex at graph 0.99, graph 0.85 right front font ",11"
  plot f using ((strcol(1) eq "measured" && strcol(2) eq ex) ? ($5 + $7/2) / 1e6 : 1/0):4:($7/2e6):(0.35) with boxxyerror fs solid 0.3 lc rgb "#4477aa", \
       f using ((strcol(1) eq "measured" && strcol(2) eq ex) ? ($5 + $7 + $6) / 2e6 : 1/0):4:(($6 - $5 - $7)/2e6):(0.35) with boxxyerror fs solid 0.9 lc rgb "#4477aa", \
       f using ((strcol(1) eq "measured" && strcol(2) eq ex) ? ($5 + $6) / 2e6 : 1/0):4:(sprintf("%d", $3)) with labels tc rgb "white" font ",9"
}
unset multiplot
