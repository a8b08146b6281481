# A timeline per executor: 12 mixed tasks with bimodal durations on as many workers as cores.
# Each task is a bar on the row of the worker that ran it: light while it waits, dark while it computes.
load "plots/common.gp"
set output data."/gantt.".fmt
set datafile separator ","
f = data."/timeline.csv"
set multiplot layout n_executors, 1 title sprintf("Measured timelines: 12 mixed bimodal tasks on %d workers, %d cores", cores, cores)
set xlabel "time (ms)"
set ylabel "worker"
set key off
set grid x
set grid noytics
set ytics 1
set mytics 1
do for [ex in executors] {
  set title ex
  plot f using ((strcol(1) eq "measured" && strcol(2) eq ex) ? ($5 + $7/2) / 1e6 : 1/0):4:($7/2e6):(0.35) with boxxyerror fs solid 0.3 lc rgb "#4477aa", \
       f using ((strcol(1) eq "measured" && strcol(2) eq ex) ? ($5 + $7 + $6) / 2e6 : 1/0):4:(($6 - $5 - $7)/2e6):(0.35) with boxxyerror fs solid 0.9 lc rgb "#4477aa", \
       f using ((strcol(1) eq "measured" && strcol(2) eq ex) ? ($5 + $6) / 2e6 : 1/0):4:(sprintf("%d", $3)) with labels tc rgb "white" font ",9"
}
unset multiplot
