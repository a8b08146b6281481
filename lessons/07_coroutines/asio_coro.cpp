// Lesson 07 — the reference row: the same task set on Boost.Asio's C++20 coroutines, one thread.
// `asio-coro`: one boost::asio::io_context; every task a boost::asio::awaitable<void> started
// with co_spawn, whose wait is `co_await timer.async_wait(...)` on a steady_timer of its own, then
// its CPU part. Look for: the same straight-line task body as run_task in coro_executors.cpp, and
// what Asio needs from us that our scheduler does itself: a stop must find each sleeping task's
// timer, so the timers live in a registry (one per task, indexed by task) that the loop's thread
// cancels when the run stops.
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <exception>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "lessons/07_coroutines/executors.hpp"
#include "workloads/execute.hpp"

namespace clab {
namespace {

namespace asio = boost::asio;

/// What every awaitable of one run shares: the tasks, the result slots, the stop (a cancellation
/// or a first error under --errors first) and the registry of timers it cancels.
struct asio_coro_run {
  asio_coro_run(std::span<const task> t, const run_options& o)
      : tasks(t), options(o), slots(t.size(), o), stop(o.stop, slots), timers(t.size()) {}
  std::span<const task> tasks;
  const run_options& options;
  result_slots slots;
  run_stop stop;
  asio::io_context io{1};  // one thread runs it; declared before the timers, it outlives them
  // One timer per task, constructed in place when its wait begins (a timer with a pending wait
  // must not move, so the vector never grows). Loop thread only. A timer holds on to the
  // io_context's timer service: it must be destroyed first.
  std::vector<std::optional<asio::steady_timer>> timers;
  std::exception_ptr escaped;  // an exception out of an awaitable (the body catches its own)

  /// Loop thread: every timer still armed completes at once with operation_aborted, so its
  /// awaitable resumes and reports its task cancelled.
  void cancel_timers() {
    for (auto& t : timers) {
      if (t) t->cancel();
    }
  }
};

// [snippet:asio-coro-task]
/// Task i as an Asio awaitable: the wait suspends it on its own steady_timer (the io_context runs
/// the other awaitables meanwhile), then the CPU part runs on the loop's thread.
asio::awaitable<void> asio_task(asio_coro_run& run, std::uint32_t i) {
  const task& t = run.tasks[i];
  if (run.slots.stopping()) {  // cancelled, or a first error under --errors first
    run.slots.fail(i, std::string(k_cancelled));
    co_return;
  }
  task_record r{.id = i, .start_ns = ns_since(run.options.origin), .worker = 0};
  if (t.wait_ns > 0) {
    asio::steady_timer& timer = run.timers[i].emplace(
        co_await asio::this_coro::executor,
        run.options.origin + std::chrono::nanoseconds(r.start_ns + t.wait_ns));
    // as_tuple: a cancelled wait comes back as an error code, not as a thrown system_error.
    const auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    if (ec) {  // operation_aborted: the stop cancelled this timer
      run.slots.fail(i, std::string(k_cancelled));
      co_return;
    }
  }
  if (run.slots.stopping()) {  // stopped after the timer fired, before this awaitable resumed
    run.slots.fail(i, std::string(k_cancelled));
    co_return;
  }
  try {
    r.checksum = compute(t);
    r.end_ns = ns_since(run.options.origin);
    run.slots.complete(r);
  } catch (...) {  // a throw fails this task only, unless the run stops at the first error
    run.slots.fail_error(i, describe_current_exception());
  }
}
// [end-snippet]

run_result run_asio_coro(std::span<const task> tasks, const run_options& options) {
  asio_coro_run run(tasks, options);
  if (tasks.empty()) return std::move(run.slots).collect(0);
  asio::io_context& io = run.io;
  for (std::uint32_t i = 0; i < tasks.size(); ++i) {
    asio::co_spawn(io, asio_task(run, i), [&run](const std::exception_ptr& e) {
      if (e && !run.escaped) run.escaped = e;
    });
  }
  {
    // Either stop (--cancel-after-ms from another thread, or a first error on the loop's own
    // thread) reaches the timers through post(): they belong to the loop's thread.
    const std::stop_callback on_stop(run.stop.token(),
                                     [&] { asio::post(io, [&run] { run.cancel_timers(); }); });
    io.run();
  }
  if (run.escaped) std::rethrow_exception(run.escaped);
  return std::move(run.slots).collect(1);
}

}  // namespace

// The plan is `coroutines`' (one worker, tasks in order, non-blocking waits, costs probed). The
// per-task cost is probed on tasks that wait (probe_parked), which the model agreed with better:
// on 1000 waits of 1 ms (2-core VM) it predicted 3.0-3.6 ms with it and 5.3 ms without, for a
// measured 2.1-2.6 ms. Both overstate: an empty co_spawn is dearer the first time its memory is
// touched (about 3.8 µs a task on a fresh heap, 0.35 µs once warm), which the probe pays.
const executor& asio_coro_executor() {
  static const executor e{
      .name = "asio-coro",
      .lesson = "07",
      .summary =
          "reference: Boost.Asio awaitables, co_spawn and a steady_timer per task, one "
          "thread",
      .plan = {.policy = placement::static_blocks,
               .waits = wait_mode::nonblocking,
               .workers = worker_rule::one,
               .per_task = unit_cost::probed,
               .probe_wait_overshoot = true,
               .probe_parked = true},
      .no_timeout_because =
          "a coroutine cannot be interrupted while it computes (it gives up its thread only at a "
          "co_await)",
      .reference = true,
      .run = run_asio_coro,
  };
  return e;
}

}  // namespace clab
