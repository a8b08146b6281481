// Lesson 01b — P threads over a static partition. Look for: the partition is fixed before anything
// runs, so a thread whose block holds the long tasks finishes last while the others sit idle.
#include <thread>
#include <vector>

#include "lessons/01_threads/threads.hpp"
#include "workloads/execute.hpp"

namespace clab {

// [snippet:static-partition]
run_result run_static_threads(std::span<const task> tasks, const run_options& options) {
  const int p = workers_used(static_threads_executor().plan, options.workers, tasks.size());
  result_slots slots(tasks.size(), options);
  {
    std::vector<std::jthread> threads;
    threads.reserve(static_cast<std::size_t>(p));
    for (int k = 0; k < p; ++k) {
      threads.emplace_back([&slots, tasks, &options, p, k] {
        const auto [begin, end] = block_range(tasks.size(), p, k);  // decided before any task runs
        for (std::size_t i = begin; i < end; ++i) slots.run_into(tasks[i], options.origin, k);
      });
    }
  }  // join
  return std::move(slots).collect(p);
}
// [end-snippet]

const executor& static_threads_executor() {
  static const executor e{
      .name = "static",
      .lesson = "01",
      .summary = "P std::jthreads, thread k runs the k-th contiguous block of tasks",
      .plan = {.policy = placement::static_blocks,
               .workers = worker_rule::requested,
               .worker_start = unit_cost::thread_start,
               .per_task = unit_cost::probed},
      .run = run_static_threads,
  };
  return e;
}

}  // namespace clab
