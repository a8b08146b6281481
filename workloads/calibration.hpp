// What this machine costs, measured once per process: kernel speed, timer overshoot, thread start.
// The models' overhead terms come from here, so a prediction uses this machine's numbers.
#pragma once

#include <cstdint>

namespace clab {

struct calibration {
  int cores = 1;                        ///< CPUs this process may run on (its affinity mask)
  double ns_per_iteration = 1.0;        ///< kernel speed: lower quartile of timed samples
  double ns_per_iteration_cv = 0;       ///< spread of those samples (stddev / mean)
  std::int64_t sleep_overshoot_ns = 0;  ///< median of (slept − asked) for a 1 ms blocking sleep
  std::int64_t thread_start_ns = 0;     ///< median time the launcher spends in one thread start
};

/// CPUs this process may use: the size of its affinity mask (so `taskset -c 0` counts as 1).
[[nodiscard]] int available_cores();

/// Measures ns per kernel iteration: 41 samples of about 0.7 ms, their lower quartile.
[[nodiscard]] double calibrate_kernel(double* cv = nullptr);

/// Measures everything above; takes about 0.1 s.
[[nodiscard]] calibration calibrate();

}  // namespace clab
