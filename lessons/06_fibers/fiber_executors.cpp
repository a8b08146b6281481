// Lesson 06 — the task set on our own fibers (fiber.hpp). `fibers`: every task a fiber on one
// thread and one loop; the task is straight-line code, and its wait, this_fiber::sleep_for, parks
// the fiber on a loop timer rather than the thread (an io task's request parks it on its socket
// instead). `fibers-mn`: P threads, each with its loop and scheduler, ready fibers balanced
// between them by work stealing, so the CPU parts run min(P, cores) wide while every wait still
// overlaps. Look for: run_task() reads like lesson 00's serial loop body, and request() like a
// blocking client; nothing in either is a callback.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <stop_token>
#include <string>

#include "lessons/05_event_loop/event_loop.hpp"
#include "lessons/06_fibers/executors.hpp"
#include "lessons/06_fibers/fiber.hpp"
#include "workloads/execute.hpp"
#include "workloads/io_exchange.hpp"

namespace clab {
namespace {

/// What every fiber of one run shares: the tasks, the result slots (which know the stop and the
/// error policy), the time origin, and one stop that both a cancellation (--cancel-after-ms) and
/// a first error (--errors first) request, so that either wakes every sleeping fiber at once.
struct fiber_run {
  fiber_run(std::span<const task> t, const run_options& o)
      : tasks(t), options(o), slots(t.size(), o), stop(o.stop, slots) {}
  std::span<const task> tasks;
  const run_options& options;
  result_slots slots;
  run_stop stop;
};

// [snippet:fiber-io]
/// An io task's wait: its request to the service, written as a blocking client would write it
/// (blocking_request() is this loop with poll() where we park). Each wait parks this fiber until
/// the socket is ready, and the thread runs the other fibers meanwhile: that is what a stackful
/// fiber buys, straight-line code on a non-blocking socket. A stop, or the task timeout, wakes
/// the fiber early and the request is given up; `ex` closes the socket on the way out (the loop
/// stopped watching it when it woke us). Throws io_error, which fails this task only.
fd_wait request(const fiber_run& run, const task& t, std::uint64_t& body) {
  const auto deadline = run.options.task_timeout
                            ? event_loop::clock::now() + *run.options.task_timeout
                            : event_loop::clock::time_point::max();
  io_exchange ex(t, /*blocking=*/false);
  for (auto w = ex.start(); w != io_exchange::want::done; w = ex.step()) {
    const fd_wait woke = w == io_exchange::want::read
                             ? this_fiber::wait_readable(ex.fd(), run.stop.token(), deadline)
                             : this_fiber::wait_writable(ex.fd(), run.stop.token(), deadline);
    if (woke != fd_wait::ready) return woke;
  }
  body = ex.body_checksum();
  return fd_wait::ready;
}
// [end-snippet]

// [snippet:fiber-task]
/// Task i, as a fiber runs it: straight through, as lesson 00 would, except that the wait parks
/// this fiber on the loop (its thread runs the other fibers meanwhile) and the CPU part runs on
/// whichever thread the fiber is on when it wakes.
void run_task(fiber_run& run, std::uint32_t i) {
  const task& t = run.tasks[i];
  if (run.slots.stopping()) {  // cancelled, or a first error under --errors first
    run.slots.fail(i, std::string(k_cancelled));
    return;
  }
  task_record r{.id = i, .start_ns = ns_since(run.options.origin)};
  try {
    // A stop wakes the sleeper at once; its CPU part then never starts.
    std::uint64_t body = 0;  // an io task's reply, folded into its checksum
    fd_wait woke = fd_wait::ready;
    if (t.is_io()) {
      woke = request(run, t, body);  // parked on its socket rather than on a timer
    } else if (t.wait_ns > 0 &&
               !this_fiber::sleep_for(std::chrono::nanoseconds(t.wait_ns), run.stop.token())) {
      woke = fd_wait::stopped;
    }
    if (woke == fd_wait::timed_out) {  // the request was given up at --task-timeout-ms
      run.slots.fail_error(i, io_timeout_cause(i, *run.options.task_timeout));
      return;
    }
    if (woke == fd_wait::stopped || run.slots.stopping()) {
      run.slots.fail(i, std::string(k_cancelled));
      return;
    }
    r.worker = this_fiber::worker();  // after the park: a fiber may wake on another thread
    r.checksum = io_checksum(t, compute(t), body);
    r.end_ns = ns_since(run.options.origin);
    run.slots.complete(r);
  } catch (...) {  // a throw fails this task only, unless the run stops at the first error
    run.slots.fail_error(i, describe_current_exception());
  }
}
// [end-snippet]

/// --slow-callback-ms: lesson 05's lag monitor, with each fiber resumed from a loop callback of
/// its own, so that a fiber that computes without parking is named while it holds its thread.
/// Labels are task id + 1 (0 is "no label").
slow_callback_reporter slow_fiber_reporter(int worker, std::chrono::milliseconds limit) {
  return [worker, ms = limit.count()](const slow_callback_report& r) {
    const double took_ms = static_cast<double>(r.elapsed.count()) / 1e6;
    const long long id = static_cast<long long>(r.label) - 1;
    if (r.still_running) {
      std::fprintf(stderr,
                   "slow callback: thread %d is stalled: task %lld's fiber has run %.1f ms "
                   "without parking (--slow-callback-ms %lld)\n",
                   worker, id, took_ms, static_cast<long long>(ms));
    } else {
      std::fprintf(stderr,
                   "slow callback: task %lld's fiber ran %.1f ms without parking on thread %d "
                   "(--slow-callback-ms %lld)\n",
                   id, took_ms, worker, static_cast<long long>(ms));
    }
  };
}

/// Every task a fiber on the calling thread, started in task order.
run_result run_fibers(std::span<const task> tasks, const run_options& options) {
  fiber_run run(tasks, options);
  if (tasks.empty()) return std::move(run.slots).collect(0);
  event_loop loop;
  fiber_scheduler fibers(loop);
  if (options.slow_callback) {
    fibers.set_slow_fiber(*options.slow_callback, slow_fiber_reporter(0, *options.slow_callback));
  }
  // One fiber spawns the tasks' fibers, in task order. Spawned from a fiber, each runs at once
  // (work-first) until it parks or ends: a stack is taken only by a task in flight, and a task
  // that never parks gives its stack back before the next one starts.
  fibers
      .spawn([&] {
        for (std::uint32_t i = 0; i < tasks.size(); ++i) {
          fibers.spawn([&run, i] { run_task(run, i); }, i + 1).detach();
        }
      })
      .detach();
  fibers.run();
  return std::move(run.slots).collect(1);
}

constexpr schedule k_fibers_mn_plan{.policy = placement::dynamic_queue,
                                    .waits = wait_mode::nonblocking,
                                    .workers = worker_rule::requested,
                                    .worker_start = unit_cost::thread_start,
                                    .per_task = unit_cost::probed,
                                    .probe_wait_overshoot = true,
                                    .probe_parked = true};

/// P threads: the tasks dealt round robin to the threads' deques before they start; a thread
/// whose deque runs dry steals the oldest ready fiber of another. (One spawner fiber, as on one
/// thread, was tried: thieves then took turns with the spawner, and 1–300 µs tasks ran 1.7–2.1
/// times the prediction.)
run_result run_fibers_mn(std::span<const task> tasks, const run_options& options) {
  fiber_run run(tasks, options);
  const int p = workers_used(k_fibers_mn_plan, options.workers, tasks.size());
  if (tasks.empty()) return std::move(run.slots).collect(0);
  fiber_pool pool(p);
  for (std::uint32_t i = 0; i < tasks.size(); ++i) {
    pool.spawn([&run, i] { run_task(run, i); }, i + 1).detach();
  }
  pool.run();
  return std::move(run.slots).collect(p);
}

constexpr std::string_view k_no_interrupt =
    "a fiber cannot be interrupted while it computes (it gives up its thread only when it parks)";

}  // namespace

const executor& fibers_executor() {
  static const executor e{
      .name = "fibers",
      .lesson = "06",
      .summary = "every task a fiber (our scheduler on Boost.Context), one thread, one loop",
      .plan = {.policy = placement::static_blocks,
               .waits = wait_mode::nonblocking,
               .workers = worker_rule::one,
               .per_task = unit_cost::probed,
               .probe_wait_overshoot = true,
               .probe_parked = true},
      .no_timeout_because = k_no_interrupt,
      .lag_monitor = true,
      .supports_io = true,
      .timeout_cancels_waits = true,
      .run = run_fibers,
  };
  return e;
}

const executor& fibers_mn_executor() {
  static const executor e{
      .name = "fibers-mn",
      .lesson = "06",
      .summary = "every task a fiber, P threads with a loop each, ready fibers work-stolen",
      .plan = k_fibers_mn_plan,
      .no_timeout_because = k_no_interrupt,
      .supports_io = true,
      .timeout_cancels_waits = true,
      .run = run_fibers_mn,
  };
  return e;
}

}  // namespace clab
