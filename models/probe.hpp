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

#include "workloads/run.hpp"

namespace clab {

struct probe_result {
  std::int64_t per_task_ns = 0;  ///< wall time per task at full throughput, one worker
  /// CPU time this process spent per task in the same runs. For an executor whose workers are
  /// other processes, that is the caller's own share of a hand-off (a process pool's parent).
  std::int64_t caller_cpu_ns = 0;
};

/// Nanoseconds per task through `exec` with one worker, on empty tasks (no CPU, no wait): the
/// median of three differences m(2K) − m(K) over K, with K grown until a run of 2K tasks takes at
/// least 2 ms; the same for this process's CPU time. Measured once per executor in a process,
/// then remembered. Never negative.
[[nodiscard]] probe_result probe_executor(const executor& exec);
/// probe_executor(exec).per_task_ns.
[[nodiscard]] std::int64_t probe_per_task_ns(const executor& exec);

/// Forgets every probe, so that the next call measures again: for a long-lived process whose
/// state changes what a unit costs (a fork costs more the more memory the parent holds).
void forget_probes();

}  // namespace clab
