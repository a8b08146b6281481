# Makespan against P for each workload (dist fixed): every executor's measured points (solid) and
# its simulated prediction (dashed, same colour), beside the closed forms ⌈N/P⌉·t and Σt/P_eff.
# One panel per family of executors (blocking, asynchronous), on the same axes.
wide = 1
load "plots/common.gp"
set logscale x 2
set xrange [0.8:max_p * 1.25]
set xlabel "P (workers requested)"
set ylabel "makespan (ms)"
set yrange [0:*]
set key outside right top
do for [w in "cpu wait mixed io"] {
  set output data."/makespan_".w.".".fmt
  f = data."/makespan_".w.".dat"
  m = data."/makespan_".w."_model.dat"
  set multiplot layout 1, n_families title sprintf("Makespan against P: %d %s tasks of %g ms, %d cores (points measured, dashed predicted)", value("tasks_".w), w, value("task_us_".w) / 1000, cores)
  do for [k=0:n_families-1] {
    set title family_name(k)
    plot m using 1:2 with linespoints ls 100 pt 6 title "⌈N/P⌉·t", \
         m using 1:3 with lines ls 101 title "Σt / P_{eff}", \
         for [i=family_first(k):family_last(k)] f index i using 1:2 with linespoints lw 2 pt 5+2*(i%5) lc i+1 title columnheader(1), \
         for [i=family_first(k):family_last(k)] f index i using 1:3 with lines dt 3 lw 2 lc i+1 notitle
  }
  unset multiplot
}
