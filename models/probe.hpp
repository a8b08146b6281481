// The hand-off cost of an executor, measured on the executor itself: how much longer a run of 2K
// empty tasks takes than a run of K, per task, with one worker. What it adds per task is the
// executor's own work (a queue operation and a wake-up for a pool, a fork and a reap for a process
// per task), with the start and the shutdown of the run cancelled out. One worker, because with
// several, empty tasks make them fight over the queue far harder than any real task set does: on
// the development machine the naive pool's cost per task grew sevenfold from P = 1 to P = 2 on
// empty tasks, while on 1 µs tasks it grew by less than half. What contention adds is left to the
// verdict to show. Look for: the models price an executor's overhead from a separate measurement
// made before the run, never from the run being judged.
#pragma once

#include <cstdint>

#include "workloads/calibration.hpp"
#include "workloads/run.hpp"

namespace clab {

struct probe_result {
  std::int64_t per_task_ns = 0;  ///< wall time per task at full throughput, one worker
  /// CPU time the calling thread spent per task in the same runs: the launcher's own share of a
  /// start or a hand-off (a process pool's parent).
  std::int64_t caller_cpu_ns = 0;
  /// CPU time per task of the workers themselves: every thread of this process but the caller,
  /// and every child process reaped, in the same runs. On empty tasks that is what a worker costs
  /// on a core besides its work: a new thread's start and exit, a child's copy-on-write faults and
  /// exit, a spawned program's loading (development machine: about 20 µs, 0.2–0.4 ms and 1.2 ms).
  std::int64_t worker_cpu_ns = 0;
};

/// Nanoseconds per task through `exec` with one worker, on empty tasks (no CPU, no wait): the
/// median of five differences m(2K) − m(K) over K, with K grown until a run of 2K tasks takes at
/// least 2 ms; the same for the calling thread's CPU time and for the workers'. Measured once per
/// executor in a process, then remembered. Never negative.
///
/// With `task_cpu_ns` > 0 the tasks compute that long each (kernel iterations at
/// `ns_per_iteration`), each run lasts at least 16 ms, and what the probe gives is each task's
/// cost beyond that nominal CPU time: for an executor whose per-task cost depends on how long its
/// tasks are (schedule::caller_waits_each). Remembered per executor and length. Throws
/// std::invalid_argument for a negative length, or a length without a kernel speed.
///
/// With `parked` the tasks also wait, 1 ns each, on the executor's own timers: what a task that
/// waits costs it (a fiber's park and resume around its timer; schedule::probe_parked).
/// Remembered apart from the probe on tasks that do not wait.
[[nodiscard]] probe_result probe_executor(const executor& exec, std::int64_t task_cpu_ns = 0,
                                          double ns_per_iteration = 0, bool parked = false);
/// probe_executor(exec) with the calling thread, and so every worker it starts, kept on one of its
/// CPUs for the probe: what a hand-off costs when the scheduler puts the launcher and the worker
/// it serves on the same core. Remembered like probe_executor(); where the thread cannot be
/// pinned, the same as probe_executor(exec).
[[nodiscard]] probe_result probe_executor_on_one_core(const executor& exec);
/// probe_executor(exec).per_task_ns.
[[nodiscard]] std::int64_t probe_per_task_ns(const executor& exec);

/// The end of a run through `exec`: how long it takes to return after its last task has ended
/// (joining its threads, closing its pipes and reaping its worker processes), with P = workers on
/// min(n, 64) empty tasks: the median of five runs. A process's exit costs more the more memory
/// its parent held when it forked, so this is measured in the process as it is, like the
/// per-task probe, and remembered per executor, P and task count until forget_probes().
[[nodiscard]] std::int64_t probe_run_end_ns(const executor& exec, int workers, std::size_t n);

/// How late `exec`'s own timers fire (an event loop's, whose timers are not a blocking sleep):
/// at each length of overshoot_curve, 8 tasks that only wait that long run through `exec` with
/// one worker, three times, and the curve holds the median of end − start − wait over the 24
/// records (the wake-up and the callback's dispatch, everything the loop adds to a wait).
/// Remembered per executor like the other probes.
[[nodiscard]] overshoot_curve probe_wait_overshoot(const executor& exec);

/// Forgets every probe, so that the next call measures again: for a long-lived process whose
/// state changes what a unit costs (a fork costs more the more memory the parent holds).
void forget_probes();

}  // namespace clab
