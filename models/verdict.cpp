#include "models/verdict.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace clab {
namespace {

std::string percent(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f%%", x * 100.0);
  return buf;
}

}  // namespace

verdict judge(const verdict_input& in) {
  verdict v;
  if (in.predicted_ns <= 0 || in.work_ns <= 0) {
    v.ratio = in.measured_ns <= 0 ? 1.0 : INFINITY;
  } else {
    v.ratio = static_cast<double>(in.measured_ns) / static_cast<double>(in.predicted_ns);
  }
  v.within = std::fabs(v.ratio - 1.0) <= in.tolerance;
  const auto low = static_cast<double>(
      in.predicted_low_ns > 0 ? std::min(in.predicted_low_ns, in.predicted_ns) : in.predicted_ns);
  const auto high = static_cast<double>(std::max(in.predicted_high_ns, in.predicted_ns));
  const auto measured = static_cast<double>(in.measured_ns);
  if (!v.within && measured >= low * (1.0 - in.tolerance) &&
      measured <= high * (1.0 + in.tolerance)) {
    v.within = true;
    v.by_range = true;
    v.cause = "within tolerance of the range the scheduler's choices allow (slice, placement)";
  }
  if (in.predicted_ns <= 0 || in.work_ns <= 0) {
    v.within = false;
    v.by_range = false;
    v.cause = "nothing to judge: tasks of zero length measure only overhead (see bench_units)";
    return v;
  }
  if (v.within) return v;  // by_range keeps its note
  if (v.ratio < 1.0) {
    v.cause =
        "faster than predicted: the calibration ran on a busy core, or the model counts an "
        "overhead this executor does not pay";
  } else if (in.cv > in.tolerance / 2 && v.ratio - 1.0 <= 2 * in.cv) {
    // Noise explains a deviation no larger than twice the runs' own spread; a larger one, even
    // from spread-out runs, has a cause of its own.
    v.cause = "noise: repeated runs spread by CV " + percent(in.cv);
  } else if (in.cpu_work && in.runnable_threads > in.cores) {
    v.cause = "oversubscription: " + std::to_string(in.runnable_threads) + " workers on " +
              std::to_string(in.cores) +
              " cores: Linux queues them per core, unevenly, and moves one to an idle core only "
              "once it has not run for 0.5 ms, where the model shares the cores evenly; each "
              "switch also costs cache refills";
  } else if (in.task_stretch > 1.0 + in.tolerance / 2) {
    v.cause =
        "the tasks themselves ran " + percent(in.task_stretch - 1.0) +
        " longer than modelled: other load on the cores (noise), this run's own workers starting "
        "and waking in numbers the model does not price, or a lower clock";
  } else {
    v.cause = "overhead the model leaves out (wake-up latency, hand-off, scheduling)";
  }
  return v;
}

double default_tolerance(workload w) { return w == workload::wait ? 0.05 : 0.10; }

}  // namespace clab
