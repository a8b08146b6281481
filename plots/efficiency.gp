# Efficiency against task size: the lower bound max(Σc/min(P,C), Σt/P, max t) over the measured
# makespan. 1 means no overhead at all; where a curve falls, the executor's per-task cost eats the work.
# One panel per family of executors (blocking, asynchronous), on the same axes.
wide = 1
load "plots/common.gp"
set output data."/efficiency.".fmt
set logscale x 10
set xlabel "task size (µs of CPU work)"
set ylabel "efficiency (lower bound / makespan)"
set yrange [0:1.1]
set key bottom right box opaque
f = data."/efficiency.dat"
set multiplot layout 1, n_families title sprintf("Where overhead eats the work: CPU tasks on %d workers, %d cores (dashed: model)", cores, cores)
do for [k=0:n_families-1] {
  set title family_name(k)
  plot 1 ls 100 title "no overhead", \
       for [i=family_first(k):family_last(k)] f index i using 1:2 with linespoints lw 2 pt 5+2*(i%5) lc i+1 title columnheader(1), \
       for [i=family_first(k):family_last(k)] f index i using 1:3 with lines dt 3 lw 2 lc i+1 notitle
}
unset multiplot
