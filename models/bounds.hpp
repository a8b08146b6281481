// Closed-form models of a run's makespan: the formulas a student checks by hand before running.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "workloads/task.hpp"

namespace clab {

/// Serial: T = Σ t_i + N · per_task_ns.
[[nodiscard]] std::int64_t serial_makespan(std::span<const task> tasks,
                                           std::int64_t per_task_ns = 0);

/// N equal tasks of length t on P workers, each worker running one task at a time:
/// T = ⌈N/P⌉ · t, the exact form of the course's "T = N/P".
[[nodiscard]] std::int64_t equal_tasks_makespan(std::size_t n, int p, std::int64_t t_ns);

struct makespan_bounds {
  std::int64_t lower_ns = 0;
  std::int64_t upper_ns = 0;
};

/// Graham's bounds for any greedy (dynamic) schedule of independent tasks on P identical workers:
///   max(Σt/P, max t) ≤ T ≤ Σt/P + (1 − 1/P) · max t.
/// A static partition is not greedy and may exceed the upper bound: that is lesson 01's skew.
[[nodiscard]] makespan_bounds graham_bounds(std::span<const std::int64_t> durations, int p);
[[nodiscard]] makespan_bounds graham_bounds(std::span<const task> tasks, int p);

/// Brent's bounds for a greedy schedule of a task graph (--deps) with work W and span S (the
/// longest path) on P processors: max(W/P, S) ≤ T ≤ W/P + S. Which W, S and P fit an executor is in
/// models/README.md ("Dependent tasks"): Σt_i on P blocking workers, Σc_i on min(P, cores) where
/// the waits overlap; S the longest path of t_i in both.
[[nodiscard]] makespan_bounds brent_bounds(std::int64_t work_ns, std::int64_t span_ns, int p);

/// CPU work runs on at most min(P, cores) cores at once.
[[nodiscard]] int effective_parallelism(int p, int cores);

/// A lower bound for any executor with P workers on C cores and blocking waits:
/// max(Σc / min(P, C), Σt / P, max t).
[[nodiscard]] std::int64_t makespan_lower_bound(std::span<const task> tasks, int p, int cores);

/// Waits overlap: an asynchronous executor on one thread still needs T ≥ max(Σc, max t).
[[nodiscard]] std::int64_t overlap_lower_bound(std::span<const task> tasks);

}  // namespace clab
