// Lesson 00 — serial: one task after another on the calling thread. Look for: nothing overlaps,
// so the makespan is the sum of the tasks, waits included; every later lesson is measured against
// it.
#include "lessons/00_serial/serial.hpp"

#include <algorithm>

#include "workloads/deps.hpp"
#include "workloads/execute.hpp"

namespace clab {

// [snippet:serial-loop]
run_result run_serial(std::span<const task> tasks, const run_options& options) {
  result_slots slots(tasks.size(), options);
  for (const task& t : tasks) {
    slots.run_into(t, options.origin, /*worker=*/0);  // wait, then compute; a throw is recorded
  }
  return std::move(slots).collect(tasks.empty() ? 0 : 1);
}
// [end-snippet]

namespace {

/// --deps: the same loop. The ids are a topological order (every predecessor has a smaller id), so
/// in id order each task's predecessors have ended before it starts: every edge holds by
/// construction, and the makespan is still Σ t_i. What a graph adds is its failures: a task whose
/// predecessor did not complete does not run ("predecessor N failed").
run_result run_serial_graph(std::span<const task> tasks, const run_options& options) {
  result_slots slots(tasks.size(), options);
  for (std::uint32_t i = 0; i < tasks.size(); ++i) {
    const auto preds = options.deps->preds(i);
    const auto failed = std::find_if(preds.begin(), preds.end(),
                                     [&](std::uint32_t p) { return !slots.completed(p); });
    if (failed != preds.end() && !slots.stopping()) {
      slots.fail(i, predecessor_failed(*failed));
      continue;
    }
    slots.run_into(tasks[i], options.origin, /*worker=*/0);
  }
  return std::move(slots).collect(tasks.empty() ? 0 : 1);
}

run_result run_serial_any(std::span<const task> tasks, const run_options& options) {
  return options.deps != nullptr ? run_serial_graph(tasks, options) : run_serial(tasks, options);
}

}  // namespace

const executor& serial_executor() {
  static const executor e{
      .name = "serial",
      .lesson = "00",
      .summary = "one task after another on the calling thread",
      .plan = {.policy = placement::static_blocks,
               .workers = worker_rule::one,
               .per_task = unit_cost::probed},
      .supports_deps = true,
      .run = run_serial_any,
  };
  return e;
}

}  // namespace clab
