// A discrete-event simulator that predicts a run's makespan from the task set and the executor's
// declared schedule. CPU phases share the cores fairly (processor sharing: k runnable phases on
// C < k cores each advance at C/k), which is how Linux's scheduler looks over milliseconds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "workloads/calibration.hpp"
#include "workloads/run.hpp"
#include "workloads/task.hpp"

namespace clab {

struct sim_config {
  placement policy = placement::static_blocks;
  wait_mode waits = wait_mode::blocking;
  int workers = 1;
  int cores = 1;
  std::int64_t worker_start_ns = 0;  ///< the launcher starts worker k at (k + 1) · this
  std::int64_t per_task_ns = 0;      ///< CPU time a worker spends on each task besides its work
  overshoot_curve wait_overshoot;    ///< added to every non-zero wait (timer slack, wake-up)
};

struct sim_result {
  std::int64_t makespan_ns = 0;
  std::vector<task_record> timeline;  ///< one per task, in task order; checksum 0
};

/// Simulates the whole run. Non-blocking waits: a worker starts its tasks' waits as timers and
/// runs CPU parts as their timers fire, in firing order (starting new tasks comes first).
[[nodiscard]] sim_result simulate(std::span<const task> tasks, const sim_config& config);

/// The configuration an executor's schedule implies for P requested workers on this machine.
[[nodiscard]] sim_config configure(const schedule& plan, int requested_workers, std::size_t n,
                                   const calibration& machine);

}  // namespace clab
