// Lesson 04 — the task set through the process pool. The pool is created inside the run, so the
// makespan includes forking its P workers, as lesson 03's pools include starting their threads.
#include <algorithm>

#include "lessons/04_process_pool/process_pool.hpp"

namespace clab {
namespace {

constexpr schedule k_pool_plan{.policy = placement::dynamic_queue,
                               .workers = worker_rule::requested,
                               .worker_start = unit_cost::process_start,
                               .per_task = unit_cost::probed,
                               .launcher_dispatches = true};

}  // namespace

// [snippet:pool-run]
run_result run_process_pool(std::span<const task> tasks, const run_options& options) {
  const auto p = static_cast<std::size_t>(workers_used(k_pool_plan, options.workers, tasks.size()));
  outcomes out(tasks.size(), options);
  if (p == 0) return std::move(out).collect(0);
  ensure_descriptors(2 * p);  // two pipe ends per worker (P may be far above 1024 / 2)
  process_pool pool(p);
  std::size_t next = 0;  // the next task to hand out: tasks go in order, each exactly once
  auto feed = [&](std::size_t k) {
    if (next == tasks.size() || out.stopping()) return;
    if (!pool.alive(k)) pool.start(k);  // the first time, or the last worker here died: fork
    pool.send(k, tasks[next++], options.origin, options.task_timeout);
  };
  for (std::size_t k = 0; k < p; ++k) feed(k);  // worker k starts its first task as it is forked
  while (pool.workers().outstanding()) {
    const child_set::event e = pool.next();  // a report, a death, a timeout or a signal
    out.handle(e, pool.workers());           // a death or a timeout fails the worker's task
    if (e.what != child_set::event::kind::interrupted) feed(e.slot);  // the idle one gets more
  }
  while (next < tasks.size()) out.cancel(tasks[next++].id);  // stopped: these never started
  return std::move(out).collect(static_cast<int>(p));
}  // ~process_pool: close every task pipe, reap every worker
// [end-snippet]

const executor& process_pool_executor() {
  static const executor e{
      .name = "prefork",
      .lesson = "04",
      .summary =
          "P pre-forked worker processes fed over pipes; an idle worker gets the next task; a "
          "dead worker is replaced",
      .plan = k_pool_plan,
      .can_enforce_timeout = true,
      .run = run_process_pool,
  };
  return e;
}

}  // namespace clab
