# Every point of the sweep: measured makespan against predicted, on log axes, with the diagonal and
# the ±10 % band. Points inside the band are within tolerance (wait work is held to ±5 %). A grey
# bar is the range the scheduler's choices allow (its time slice, its queue per core), where it is
# 1 % wide or more (more CPU phases runnable than cores): a point within tolerance of its bar is
# within too.
load "plots/common.gp"
set output data."/predicted_vs_measured.".fmt
set logscale xy 10
set xlabel "predicted makespan (ms)"
set ylabel "measured makespan (ms)"
set size square
set title "Measured against predicted, every point of the sweep"
f = data."/predicted_vs_measured.dat"
plot x ls 100 title "measured = predicted", \
     1.1 * x lc rgb "gray60" title "±10 %", 0.9 * x lc rgb "gray60" notitle, \
     f using ($5 > 1.01 * $4 ? $1 : 1/0):2:4:5 with xerrorbars pt 0 lc rgb "gray50" \
       title "the scheduler's range", \
     f using ($3 == 1 ? $1 : 1/0):2 with points pt 7 lc rgb "#228833" title "within", \
     f using ($3 == 0 ? $1 : 1/0):2 with points pt 9 ps 1.3 lc rgb "#cc3311" title "deviating"
