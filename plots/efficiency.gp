# Efficiency against task size: the lower bound max(Σc/min(P,C), Σt/P, max t) over the measured
# makespan. 1 means no overhead at all; where a curve falls, the executor's per-task cost eats the work.
load "plots/common.gp"
set output data."/efficiency.".fmt
set logscale x 10
set xlabel "task size (µs of CPU work)"
set ylabel "efficiency (lower bound / makespan)"
set yrange [0:1.1]
set key bottom right box opaque
set title sprintf("Where overhead eats the work: CPU tasks on %d workers, %d cores (dashed: model)", cores, cores)
f = data."/efficiency.dat"
plot 1 ls 100 title "no overhead", \
     for [i=0:n_executors-1] f index i using 1:2 with linespoints lw 2 pt 5+2*(i%5) lc i+1 title columnheader(1), \
     for [i=0:n_executors-1] f index i using 1:3 with lines dt 3 lw 2 lc i+1 notitle
