// The verdict: a measurement against its prediction. Within tolerance, or deviating with the most
// likely cause, judged from evidence the run itself collected (spread, task stretch, threads).
#pragma once

#include <cstdint>
#include <string>

#include "workloads/task.hpp"

namespace clab {

struct verdict_input {
  std::int64_t measured_ns = 0;
  std::int64_t predicted_ns = 0;
  /// The prediction's range over the scheduler's choices (see prediction::low_ns); 0 for
  /// none, and a range that does not hold predicted_ns is widened to hold it.
  std::int64_t predicted_low_ns = 0;
  std::int64_t predicted_high_ns = 0;
  std::int64_t work_ns = 1;   ///< Σ t_i: 0 means the tasks are empty and only overhead is measured
  double tolerance = 0.10;    ///< relative: 0.10 accepts ratios in [0.90, 1.10]
  double cv = 0;              ///< spread of repeated measurements (stddev / mean); 0 for one run
  double task_stretch = 1.0;  ///< Σ measured task durations / Σ simulated ones
  bool cpu_work = true;       ///< the tasks have CPU parts
  int runnable_threads = 1;   ///< workers that compete for cores
  int cores = 1;
};

struct verdict {
  double ratio = 0;  ///< measured / predicted
  /// |ratio − 1| ≤ tolerance, or the measurement lies within tolerance of the prediction's
  /// range: low · (1 − tolerance) ≤ measured ≤ high · (1 + tolerance)
  bool within = false;
  bool by_range = false;  ///< within only thanks to the range: the ratio alone is outside
  std::string cause;      ///< empty when within (a note when by_range); else the likely cause
};

[[nodiscard]] verdict judge(const verdict_input& in);

/// The tolerance this project holds each workload to on a noisy machine: 5 % for waits (the
/// timer is precise), 10 % where CPU time is shared with whatever else runs.
[[nodiscard]] double default_tolerance(workload w);

}  // namespace clab
