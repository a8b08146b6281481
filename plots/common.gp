# Shared by every plot script. scripts/bench runs each script as
#   gnuplot -e "data='RESULTS_DIR'; fmt='png'" plots/NAME.gp      (and again with fmt='svg')
# RESULTS_DIR holds the data files and plotvars.gp that bench_report wrote; images go there too.
if (!exists("fmt")) fmt = "png"
if (fmt eq "svg") {
  set terminal svg size 960,600 dynamic enhanced font "sans,12"
} else {
  set terminal pngcairo size 960,600 enhanced font "sans,11"
}
load data."/plotvars.gp"
set grid
set key top left box opaque
set style line 100 lc rgb "black" dt 2 lw 1.5
set style line 101 lc rgb "gray40" lw 2
