// A discrete-event simulator that predicts a run's makespan from the task set and the executor's
// declared schedule. When more CPU phases are runnable than there are cores, they take turns in
// time slices of the length measured on this machine (round robin over one run queue), which is
// how Linux's scheduler looks at the scale of a slice: a thread that is running keeps its core
// until its slice ends, so threads that compute in bursts between waits interleave instead of
// all crawling together. A worker that goes straight on from one task to the next keeps its place
// and the rest of its slice; a worker just started takes its launcher's core when no core is
// free (Linux places a new thread or process ahead of its parent), and the launcher, having run
// less than its share, is next in line. With no slice given, the cores are shared fairly instead
// (processor sharing: k runnable phases on C < k cores each advance at C/k), the limit of very
// short slices.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "workloads/calibration.hpp"
#include "workloads/deps.hpp"
#include "workloads/run.hpp"
#include "workloads/task.hpp"

namespace clab {

struct sim_config {
  placement policy = placement::static_blocks;
  wait_mode waits = wait_mode::blocking;
  int workers = 1;
  int cores = 1;
  /// CPU time the launcher spends starting each worker, one after another; the launcher competes
  /// for the cores with the workers it has started.
  std::int64_t worker_start_ns = 0;
  std::int64_t per_task_ns = 0;  ///< CPU time a worker spends on each task besides its work
  /// Added to every non-zero wait (timer slack, wake-up), and to every io task's request (its
  /// round trip: see probe_io_costs()).
  overshoot_curve wait_overshoot;
  std::int64_t io_zero_wait_ns = 0;  ///< an io task's request with no wait: its bare round trip
  /// The service's CPU per request and its threads: each request occupies one service thread
  /// for this long when it arrives, in arrival order, so concurrent requests queue there and
  /// their replies come that much later. 0: no queue (a service whose CPU was not probed).
  std::int64_t io_service_cpu_ns = 0;
  int io_service_threads = 1;
  /// The client's own CPU per request (its socket calls and the kernel's work for them): part of
  /// the probed round trip that is not wait, so an io task computes this long on its worker
  /// before its wait, and its wait is that much shorter. 0: all of the round trip is wait.
  std::int64_t io_client_cpu_ns = 0;
  std::int64_t time_slice_ns = 0;  ///< round-robin slice; 0 for processor sharing
  /// With a slice: 0 for one run queue that every core serves (the cores perfectly balanced); more
  /// for a queue per core, as Linux keeps them. A worker just started goes to the core with the
  /// fewest phases computing (a tie away from its launcher's core; on that core it runs ahead of
  /// the launcher); a phase that starts computing again goes back to its core unless that core is
  /// busy and another empty; and a core with nothing to run takes a waiting phase from the
  /// busiest core only after this long (calibration::balance_delay_ns).
  std::int64_t balance_delay_ns = 0;
  /// Per-core queues: where a new worker finds two equally busy cores, every other one goes to its
  /// launcher's core (of 200 threads of 100 µs or more, about half started there); false sends
  /// each one away from it. Linux's choice varies from run to run, so a range takes both.
  bool ties_alternate = true;
  bool launcher_dispatches = false;   ///< no worker takes a second task before all are started
  std::int64_t handoff_delay_ns = 0;  ///< launcher_dispatches: wake-ups before a handed task starts
  std::int64_t launcher_handoff_ns = 0;  ///< launcher_dispatches: its CPU per hand-off
  /// From the end of the last task to the executor's return: joining threads, closing pipes and
  /// reaping processes (see probe_run_end_ns()); added to the makespan, not to any task.
  std::int64_t run_end_ns = 0;
  /// CPU time the caller spends submitting each task to a pool, after starting the workers and
  /// beside them (the probe's caller_cpu_ns); 0 where the tasks need no submission.
  std::int64_t submit_ns = 0;
  /// --deps: a task becomes available only once its predecessors have ended (its release time).
  /// A blocking worker whose next task is not released waits for it (a thread blocked on its
  /// predecessors' results); a non-blocking one parks it, as a coroutine awaiting an event, and
  /// starts it from the ready queue once its last predecessor ends. Null: independent tasks.
  const task_graph* deps = nullptr;
};

struct sim_result {
  std::int64_t makespan_ns = 0;
  std::vector<task_record> timeline;  ///< one per task, in task order; checksum 0
};

/// Simulates the whole run. Non-blocking waits: a worker starts its tasks' waits as timers and
/// runs CPU parts as their timers fire, in firing order (starting new tasks comes first).
[[nodiscard]] sim_result simulate(std::span<const task> tasks, const sim_config& config);

/// The configuration an executor's schedule implies for P requested workers on this machine.
/// `probed_ns` is the executor's own per-task cost measured on empty tasks (see models/probe.hpp),
/// used where the schedule names unit_cost::probed; `probed_worker_cpu_ns` where it names
/// unit_cost::probed_worker_cpu.
/// `probed_caller_ns` is the caller's CPU share of it: for a schedule whose launcher dispatches,
/// the launcher's work per hand-off.
[[nodiscard]] sim_config configure(const schedule& plan, int requested_workers, std::size_t n,
                                   const calibration& machine, std::int64_t probed_ns = 0,
                                   std::int64_t probed_caller_ns = 0,
                                   std::int64_t probed_worker_cpu_ns = 0);

}  // namespace clab
