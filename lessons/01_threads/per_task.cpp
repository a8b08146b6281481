// Lesson 01a — a thread per task. Look for: the launcher pays one thread start per task, and with
// more runnable threads than cores on CPU work the OS time-slices them (oversubscription).
#include <thread>
#include <vector>

#include "lessons/01_threads/threads.hpp"
#include "workloads/execute.hpp"

namespace clab {

// [snippet:per-task]
run_result run_thread_per_task(std::span<const task> tasks, const run_options& options) {
  result_slots slots(tasks.size(), options);
  {
    std::vector<std::jthread> threads;
    threads.reserve(tasks.size());
    for (std::size_t i = 0; i < tasks.size(); ++i) {
      const int worker = static_cast<int>(i);
      threads.emplace_back(
          [&slots, &t = tasks[i], &options, worker] { slots.run_into(t, options.origin, worker); });
    }
  }  // every jthread joins here, before the results are read
  return std::move(slots).collect(static_cast<int>(tasks.size()));
}
// [end-snippet]

const executor& thread_per_task_executor() {
  static const executor e{
      .name = "per-task",
      .lesson = "01",
      .summary =
          "one std::jthread per task, started in turn by the calling thread (--workers "
          "does not apply)",
      .plan = {.policy = placement::one_per_task,
               .workers = worker_rule::one_per_task,
               .worker_start = unit_cost::thread_start,
               .per_task = unit_cost::probed_worker_cpu},
      .run = run_thread_per_task,
  };
  return e;
}

}  // namespace clab
