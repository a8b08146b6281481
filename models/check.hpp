// Predict, run, verify, judge: the one path from a task set to a verdict, shared by the lesson
// programs, the tests and the benchmarks. Look for: the prediction is made before the run, from
// the executor's declared schedule and this machine's calibration, and every repetition is
// verified.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "models/bounds.hpp"
#include "models/simulate.hpp"
#include "models/verdict.hpp"
#include "workloads/calibration.hpp"
#include "workloads/run.hpp"
#include "workloads/stats.hpp"
#include "workloads/verify.hpp"

namespace clab {

struct prediction {
  sim_config config;     ///< what was simulated
  sim_result simulated;  ///< the predicted makespan and per-task timeline
  /// The makespan's range over the scheduler's choices. Where more CPU phases are runnable than
  /// there are cores, Linux decides how they take turns, and with it the makespan: a phase may
  /// keep its core for a whole slice or lose it at once to a thread that wakes, depending on where
  /// the timer ticks fall (calibration::time_slice_long_ns); and Linux keeps a queue per core and
  /// moves a thread to an idle core only after a delay (calibration::balance_delay_ns). The
  /// simulator runs again with no slice at all (processor sharing), at 1/4 and 1/2 of the median
  /// slice and at the long one, all with one queue that every core serves, and, with more workers
  /// than cores or workers that compute from their start (static blocks, a process pool), with a
  /// queue per core at the median and the long slice; low and high are the
  /// least and the most of these and of simulated. A launcher that dispatches every task adds one
  /// more: its hand-offs at the cost probed with it and its worker on one core
  /// (near_handoff_ns). Equal to simulated.makespan_ns where none of this changes anything.
  std::int64_t low_ns = 0;
  std::int64_t high_ns = 0;
  /// A dispatching launcher's hand-off per task with everything on one core (see
  /// probe_executor_on_one_core()); 0 where there is no such launcher.
  std::int64_t near_handoff_ns = 0;
  /// io tasks: a request with no wait, probed (probe_io_costs()); 0 without io tasks.
  std::int64_t io_round_trip_ns = 0;
  /// io tasks: the service's CPU per request, probed where the service is our child; else 0.
  std::int64_t io_service_cpu_ns = 0;
  /// io tasks: the client's own CPU per request, probed; 0 without io tasks.
  std::int64_t io_client_cpu_ns = 0;
  /// Graham's bounds hold where every worker is an identical machine: pure CPU work on
  /// min(P, cores) workers, or pure waits on P (a sleeping worker needs no core). For mixed work
  /// there is no such P, and only lower_bound_ns applies.
  bool graham_applies = false;
  int graham_workers = 1;
  makespan_bounds graham;
  /// Blocking waits: max(Σc / min(P, C), Σt / P, max t). Non-blocking: max(Σc / min(P, C), max t).
  std::int64_t lower_bound_ns = 0;
  std::int64_t serial_ns = 0;  ///< Σ t_i
  /// --deps: Brent's bounds max(W/P, S) ≤ T ≤ W/P + S, with W = Σt_i and P the workers for a
  /// blocking executor, W = Σc_i and P = min(workers, cores) for a non-blocking one, and S the
  /// longest path of t_i (see models/README.md, "Dependent tasks"). Graham's do not apply then.
  bool brent_applies = false;
  int brent_workers = 1;
  std::int64_t work_ns = 0;
  std::int64_t span_ns = 0;
  makespan_bounds brent;
};

/// The prediction for `exec` running `tasks` with P = workers requested on this machine; with
/// `deps`, the tasks in that graph's order (the simulation releases a task when its predecessors
/// end). `deps` must outlive the prediction (its config points to it).
[[nodiscard]] prediction predict(const executor& exec, std::span<const task> tasks, int workers,
                                 const calibration& machine, const task_graph* deps = nullptr);

struct check_options {
  int workers = 1;
  int repeats = 1;          ///< runs; the median makespan is judged, their CV reported
  double tolerance = 0.10;  ///< see default_tolerance()
  std::optional<std::chrono::milliseconds> task_timeout;
  std::stop_token stop;  ///< cancellation, passed to every run
  error_policy on_error = error_policy::collect_all;
  std::optional<std::chrono::milliseconds> slow_callback;  ///< see run_options::slow_callback
  const task_graph* deps = nullptr;  ///< see run_options::deps; also checked by verification
};

struct checked_run {
  run_result run;                       ///< the repetition with the median makespan
  verification verified;                ///< ok only if every repetition verified
  std::vector<std::int64_t> makespans;  ///< every repetition, in order
  std::int64_t makespan_ns = 0;         ///< median
  double cv = 0;                        ///< stddev / mean of makespans (0 for one run)
  double task_stretch = 1.0;            ///< Σ measured task durations / Σ simulated ones
  verdict judged;
};

/// Runs `repeats` times, verifies each run against `reference` (see reference_checksums()), and
/// judges the median makespan against the prediction.
[[nodiscard]] checked_run run_and_check(const executor& exec, std::span<const task> tasks,
                                        const prediction& predicted, const check_options& options,
                                        std::span<const std::uint64_t> reference);

}  // namespace clab
