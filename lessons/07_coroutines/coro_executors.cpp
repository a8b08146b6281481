// Lesson 07 — the task set on our stackless coroutines (task.hpp, scheduler.hpp). `coroutines`:
// every task a coroutine on one thread and one loop, spawned in task order; its wait, co_await
// sleep_for, parks the coroutine in its scheduler's sleep heap and keeps nothing but its frame; an
// io task's request awaits its socket's readiness instead (io_request.hpp).
// `coro-priority`: the same, with the ready coroutines taken longest CPU part first. Look for:
// run_task() reads like lesson 00's loop body, as lesson 06's does, but every place it may give
// up its thread is spelled `co_await`. With --deps each task first awaits an event per
// predecessor (event.hpp), set when that predecessor ends, however it ends.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <stop_token>
#include <string>
#include <vector>

#include "lessons/05_event_loop/event_loop.hpp"
#include "lessons/07_coroutines/event.hpp"
#include "lessons/07_coroutines/executors.hpp"
#include "lessons/07_coroutines/io_request.hpp"
#include "lessons/07_coroutines/scheduler.hpp"
#include "lessons/07_coroutines/task.hpp"
#include "workloads/deps.hpp"
#include "workloads/execute.hpp"
#include "workloads/io_exchange.hpp"

namespace clab {
namespace {

/// What every coroutine of one run shares: the tasks, the result slots (which know the stop and
/// the error policy), the time origin, and one stop that both a cancellation (--cancel-after-ms)
/// and a first error (--errors first) request, so that either wakes every sleeping coroutine at
/// once (each sleep's stop callback cancels its timer). With --deps, an event per task, set when
/// the task ends (completed, failed or cancelled).
struct coro_run {
  coro_run(std::span<const task> t, const run_options& o)
      : tasks(t),
        options(o),
        slots(t.size(), o),
        stop(o.stop, slots),
        ended(o.deps != nullptr ? t.size() : 0) {}
  std::span<const task> tasks;
  const run_options& options;
  result_slots slots;
  run_stop stop;
  std::vector<coro::event> ended;  // outlives the scheduler, so no waiter outlives its event
};

// [snippet:coro-task]
/// Task i, as a coroutine runs it: straight through, as lesson 00 would, except that the wait
/// parks this coroutine (the thread runs the others meanwhile): in the scheduler's sleep heap, or,
/// for an io task, on its socket in the loop's epoll, step by step (io_request.hpp).
/// `run` outlives every coroutine of the run (the scheduler is gone before it is).
coro::task<void> run_task(coro_run& run, std::uint32_t i) {
  const task& t = run.tasks[i];
  if (run.slots.stopping()) {  // cancelled, or a first error under --errors first
    run.slots.fail(i, std::string(k_cancelled));
    co_return;
  }
  task_record r{.id = i, .start_ns = ns_since(run.options.origin)};
  std::uint64_t body = 0;  // an io task's reply, folded into its checksum
  try {
    // A stop wakes the waiter at once, with task_cancelled; its CPU part then never starts.
    if (t.is_io()) {
      const auto reply = co_await coro::io_request(t, run.stop.token(), run.options.task_timeout);
      if (!reply) {  // --task-timeout-ms passed first: the request is closed already
        run.slots.fail_error(i, io_timeout_cause(i, *run.options.task_timeout));
        co_return;
      }
      body = *reply;
    } else if (t.wait_ns > 0) {
      co_await coro::sleep_for(std::chrono::nanoseconds(t.wait_ns), run.stop.token());
    }
  } catch (const coro::task_cancelled&) {
    run.slots.fail(i, std::string(k_cancelled));
    co_return;
  } catch (...) {  // io_error (the request failed): this task only, unless --errors first
    run.slots.fail_error(i, describe_current_exception());
    co_return;
  }
  if (run.slots.stopping()) {  // stopped while this coroutine sat in the ready queue
    run.slots.fail(i, std::string(k_cancelled));
    co_return;
  }
  try {
    r.worker = 0;  // one thread: a coroutine never migrates here
    r.checksum = io_checksum(t, compute(t), body);
    r.end_ns = ns_since(run.options.origin);
    run.slots.complete(r);
  } catch (...) {  // a throw fails this task only, unless the run stops at the first error
    run.slots.fail_error(i, describe_current_exception());
  }
}
// [end-snippet]

/// Task i of a graph (--deps): it awaits each predecessor's end, then runs as above, then tells
/// its successors. A predecessor that did not complete keeps it from running ("predecessor N
/// failed"), so a failure propagates down the graph. Under a stop nothing here needs waking: a
/// stop wakes every sleeping task, each ending one sets its event, and the tasks it releases find
/// the run stopping and end cancelled in run_task(), so every waiter is released in turn.
coro::task<void> run_after_predecessors(coro_run& run, std::uint32_t i) {
  const auto preds = run.options.deps->preds(i);
  for (const std::uint32_t p : preds) co_await run.ended[p];
  const auto failed = std::find_if(preds.begin(), preds.end(),
                                   [&](std::uint32_t p) { return !run.slots.completed(p); });
  if (failed != preds.end() && !run.slots.stopping()) {
    run.slots.fail(i, predecessor_failed(*failed));
  } else {
    co_await run_task(run, i);  // its start_ns is taken now, after the predecessors
  }
  run.ended[i].set();
}

/// --slow-callback-ms: lesson 05's lag monitor, with each coroutine resumed from a loop callback
/// of its own, so that a coroutine that computes without suspending is named while it holds its
/// thread. Labels are task id + 1 (0 is "no label").
slow_callback_reporter slow_coroutine_reporter(int worker, std::chrono::milliseconds limit) {
  return [worker, ms = limit.count()](const slow_callback_report& r) {
    const double took_ms = static_cast<double>(r.elapsed.count()) / 1e6;
    const long long id = static_cast<long long>(r.label) - 1;
    if (r.still_running) {
      std::fprintf(stderr,
                   "slow callback: thread %d is stalled: task %lld's coroutine has run %.1f ms "
                   "without suspending (--slow-callback-ms %lld)\n",
                   worker, id, took_ms, static_cast<long long>(ms));
    } else {
      std::fprintf(stderr,
                   "slow callback: task %lld's coroutine ran %.1f ms without suspending on "
                   "thread %d (--slow-callback-ms %lld)\n",
                   id, took_ms, worker, static_cast<long long>(ms));
    }
  };
}

/// Every task a coroutine on the calling thread, spawned in task order before the loop turns. In
/// priority order a task's key is its CPU part (cpu_ns), not its whole length t_i as lesson 03's
/// LPT pool uses: on one thread the waits all overlap, and only the CPU parts queue for the thread,
/// so the CPU part is what a ready coroutine still has to do and what ordering them changes. With
/// --deps every task is still spawned at once, in id order; those with predecessors park on them.
run_result run_coroutines(std::span<const task> tasks, const run_options& options,
                          coro::ready_order order) {
  coro_run run(tasks, options);
  if (tasks.empty()) return std::move(run.slots).collect(0);
  event_loop loop;
  coro::coro_scheduler sched(loop, order);  // destroyed before the loop and the run's stop
  if (options.slow_callback) {
    sched.set_slow_coroutine(*options.slow_callback,
                             slow_coroutine_reporter(0, *options.slow_callback));
  }
  const bool keyed = order == coro::ready_order::priority;
  for (std::uint32_t i = 0; i < tasks.size(); ++i) {
    sched.spawn_detached(
        options.deps != nullptr ? run_after_predecessors(run, i) : run_task(run, i),
        {.label = i + 1, .priority = keyed ? tasks[i].cpu_ns : std::int64_t{0}});
  }
  sched.run();
  return std::move(run.slots).collect(1);
}

run_result run_fifo(std::span<const task> tasks, const run_options& options) {
  return run_coroutines(tasks, options, coro::ready_order::fifo);
}

run_result run_priority(std::span<const task> tasks, const run_options& options) {
  return run_coroutines(tasks, options, coro::ready_order::priority);
}

constexpr std::string_view k_no_interrupt =
    "a coroutine cannot be interrupted while it computes (it gives up its thread only at a "
    "co_await)";

}  // namespace

const executor& coroutines_executor() {
  static const executor e{
      .name = "coroutines",
      .lesson = "07",
      .summary = "every task a stackless coroutine (our task<T>), one thread, one loop",
      .plan = {.policy = placement::static_blocks,
               .waits = wait_mode::nonblocking,
               .workers = worker_rule::one,
               .per_task = unit_cost::probed,
               .probe_wait_overshoot = true,
               .probe_parked = true},
      .no_timeout_because = k_no_interrupt,
      .lag_monitor = true,
      .supports_deps = true,
      .supports_io = true,
      .timeout_cancels_waits = true,
      .run = run_fifo,
  };
  return e;
}

const executor& coro_priority_executor() {
  // The simulator's longest_first, on one worker: it starts the tasks longest t_i first and runs
  // the woken ones in the order their waits end. What it leaves out: our ready queue orders the
  // woken coroutines by their CPU part too, when several are ready at once. On one thread that
  // changes which task ends when, not the makespan: a thread that never idles while a coroutine is
  // ready finishes the same work at the same time in any order.
  static const executor e{
      .name = "coro-priority",
      .lesson = "07",
      .summary = "every task a coroutine, one thread, ready ones longest CPU part first",
      .plan = {.policy = placement::longest_first,
               .waits = wait_mode::nonblocking,
               .workers = worker_rule::one,
               .per_task = unit_cost::probed,
               .probe_wait_overshoot = true,
               .probe_parked = true},
      .no_timeout_because = k_no_interrupt,
      .lag_monitor = true,
      .supports_deps = true,
      .supports_io = true,
      .timeout_cancels_waits = true,
      .run = run_priority,
  };
  return e;
}

}  // namespace clab
