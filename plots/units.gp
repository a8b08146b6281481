# Per-unit costs from bench_units, in ns per unit on a log scale: each bar is one unit of the kind
# its name says (one thread start and join, one kernel iteration, one sleep's overshoot...).
load "plots/common.gp"
set output data."/units.".fmt
set logscale y 10
set ylabel "ns per unit"
set style fill solid 0.7
set boxwidth 0.6
set xtics rotate by -30 left
set key off
set title "Per-unit costs (median of repetitions)"
set bmargin 8
plot data."/units.dat" using 0:1:xtic(2) with boxes lc rgb "#4477aa", \
     "" using 0:1:(sprintf("%.3g", $1)) with labels offset 0,0.7 font ",9"
