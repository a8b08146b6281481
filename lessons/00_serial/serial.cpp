// Lesson 00 — serial: one task after another on the calling thread. Look for: nothing overlaps,
// so the makespan is the sum of the tasks, waits included; every later lesson is measured against
// it.
#include "lessons/00_serial/serial.hpp"

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

const executor& serial_executor() {
  static const executor e{
      .name = "serial",
      .lesson = "00",
      .summary = "one task after another on the calling thread",
      .plan = {.policy = placement::static_blocks,
               .workers = worker_rule::one,
               .per_task = unit_cost::probed},
      .run = run_serial,
  };
  return e;
}

}  // namespace clab
