// Task sets for the executor tests: one calibration per test program, shared by every test case.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "workloads/calibration.hpp"
#include "workloads/task.hpp"

namespace clab::testing {

/// This machine, calibrated once, the first time a test asks.
inline const calibration& machine() {
  static const calibration m = calibrate();
  return m;
}

/// n tasks of the given kind, distribution and mean length (µs), from the given seed.
inline std::vector<task> tasks_of(std::size_t n, workload w, distribution d, double us,
                                  std::uint64_t seed) {
  return make_task_set({.tasks = n, .kind = w, .dist = d, .task_us = us, .seed = seed},
                       machine().ns_per_iteration);
}

}  // namespace clab::testing
