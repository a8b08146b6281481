// Verification: every run is checked, in Release builds too. Each task must appear exactly once,
// as a record or as a reported failure; only a task with an injected fault may fail; every record's
// checksum must equal serial's, its times must lie within the run and cover at least its own wait,
// and it must name a worker the run started. With a task graph (--deps), every edge p→i between
// completed tasks must hold in the records: task i started no sooner than task p ended.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "workloads/run.hpp"
#include "workloads/task.hpp"

namespace clab {

/// The serial answer: each task's kernel checksum, computed on the calling thread, faults ignored.
[[nodiscard]] std::vector<std::uint64_t> reference_checksums(std::span<const task> tasks);

struct verification {
  bool ok = false;            ///< every task once, every completed checksum equal to serial's
  std::size_t completed = 0;  ///< records that matched
  std::size_t failed = 0;     ///< tasks reported failed
  std::vector<std::string> problems;  ///< one line each, naming the task
};

/// Checks `result` against `tasks` and the reference checksums (same order as tasks). With `deps`
/// also the order: for every edge p→i, record i starts at or after record p's end; a task whose
/// predecessor did not complete must not have run, and may fail as predecessor_failed(p) only if
/// p is its predecessor and failed.
[[nodiscard]] verification verify(std::span<const task> tasks, const run_result& result,
                                  std::span<const std::uint64_t> reference,
                                  const task_graph* deps = nullptr);

}  // namespace clab
