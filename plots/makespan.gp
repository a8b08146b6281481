# Makespan against P for each workload (dist fixed): every executor's measured points (solid) and
# its simulated prediction (dashed, same colour), beside the closed forms ⌈N/P⌉·t and Σt/P_eff.
load "plots/common.gp"
set logscale x 2
set xrange [0.8:max_p * 1.25]
set xlabel "P (workers requested)"
set ylabel "makespan (ms)"
set yrange [0:*]
set key outside right top
do for [w in "cpu wait mixed"] {
  set output data."/makespan_".w.".".fmt
  set title sprintf("Makespan against P: %d %s tasks of %g ms, %d cores (points measured, dashed predicted)", tasks, w, task_us / 1000, cores)
  f = data."/makespan_".w.".dat"
  m = data."/makespan_".w."_model.dat"
  plot m using 1:2 with linespoints ls 100 pt 6 title "⌈N/P⌉·t", \
       m using 1:3 with lines ls 101 title "Σt / P_{eff}", \
       for [i=0:n_executors-1] f index i using 1:2 with linespoints lw 2 pt 5+2*(i%5) lc i+1 title columnheader(1), \
       for [i=0:n_executors-1] f index i using 1:3 with lines dt 3 lw 2 lc i+1 notitle
}
