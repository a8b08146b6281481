# Speedup T(1)/T(P) against P for executors whose worker count follows P, with the Universal
# Scalability Law fitted to the points, and the ideal: min(P, cores) for CPU work, P for waits.
load "plots/common.gp"
set xrange [1:max_p]
set yrange [0:*]
set xlabel "P (workers)"
set ylabel "speedup T(1) / T(P)"
do for [w in "cpu wait"] {
  set output data."/speedup_".w.".".fmt
  set title sprintf("Speedup on %s work (dist fixed), %d cores: points measured, curves the USL fit", w, cores)
  f = data."/speedup_".w.".dat"
  g = data."/speedup_".w."_fit.dat"
  ideal(p) = (w eq "cpu") ? (p < cores ? p : cores) : p
  plot ideal(x) ls 100 title (w eq "cpu" ? "ideal: min(P, cores)" : "ideal: P"), \
       for [i=0:n_scaling-1] f index i using 1:2 with points pt 7 ps 1.5 lc int(word(scaling_colours, i+1)) title columnheader(1), \
       for [i=0:n_scaling-1] g index i using 1:2 with lines lw 2 lc int(word(scaling_colours, i+1)) title columnheader(1)
}
