# Shared by every plot script. scripts/bench runs each script as
#   gnuplot -e "data='RESULTS_DIR'; fmt='png'" plots/NAME.gp      (and again with fmt='svg')
# RESULTS_DIR holds the data files and plotvars.gp that bench_report wrote; images go there too.
# A script that draws the two families side by side (see families below) sets wide = 1 first.
if (!exists("fmt")) fmt = "png"
if (!exists("wide")) wide = 0
width = wide ? 1700 : 960
if (fmt eq "svg") {
  set terminal svg size width,600 dynamic enhanced font "sans,12"
} else {
  set terminal pngcairo size width,600 enhanced font "sans,11"
}
load data."/plotvars.gp"
# The executors come in registry order, lesson by lesson: the first n_blocking are the blocking
# half (lessons 00-04), the rest the asynchronous half (05 on). A per-executor plot draws each
# family in its own panel, so that neither is lost among twice as many lines.
n_async = n_executors - n_blocking
n_families = (n_blocking > 0 ? 1 : 0) + (n_async > 0 ? 1 : 0)
family_first(k) = (k == 0 && n_blocking > 0) ? 0 : n_blocking
family_last(k) = (k == 0 && n_blocking > 0) ? n_blocking - 1 : n_executors - 1
family_name(k) = (k == 0 && n_blocking > 0) ? "blocking: lessons 00-04" : "asynchronous: lessons 05 on"
set grid
set key top left box opaque
set style line 100 lc rgb "black" dt 2 lw 1.5
set style line 101 lc rgb "gray40" lw 2
# Twelve colours, so that every executor of every lesson gets its own (gnuplot's default set has
# eight and then repeats); plots also vary the point shape by executor.
array lt_colors[12] = ["#332288", "#88ccee", "#44aa99", "#117733", "#999933", "#ddcc77", \
                       "#cc6677", "#882255", "#aa4499", "#e69f00", "#0072b2", "#d55e00"]
do for [k=1:12] { set linetype k lc rgb lt_colors[k] lw 1 }
set linetype cycle 12
