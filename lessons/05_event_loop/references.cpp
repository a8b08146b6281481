// Lesson 05 — the reference rows: the same task sets on two established event loops, one thread
// each. `asio-loop`: boost::asio::io_context with a steady_timer per task. `libuv`: a uv_loop_t
// with a uv_timer_t per task. Look for: libuv counts time in whole milliseconds, so a wait must be
// rounded up to a millisecond and one more before it is sure to have passed.
#include <uv.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <mutex>
#include <optional>
#include <stop_token>
#include <vector>

#include "lessons/05_event_loop/executors.hpp"
#include "workloads/execute.hpp"

namespace clab {
namespace {

/// What both references share: computing a task whose wait is over, and the stop.
struct reference_run {
  reference_run(std::span<const task> t, const run_options& o)
      : tasks(t), options(o), slots(t.size(), o), start_ns(t.size(), 0) {}
  std::span<const task> tasks;
  const run_options& options;
  result_slots slots;
  std::vector<std::int64_t> start_ns;
  std::atomic<bool> stopping{false};

  void finish(std::size_t i) {
    if (stopping.load(std::memory_order_relaxed)) {
      slots.fail(tasks[i].id, std::string(k_cancelled));
      return;
    }
    task_record r{.id = tasks[i].id, .start_ns = start_ns[i], .worker = 0};
    try {
      r.checksum = compute(tasks[i]);
      r.end_ns = ns_since(options.origin);
      slots.complete(r);
    } catch (...) {
      slots.fail(tasks[i].id, describe_current_exception());
      if (options.on_error == error_policy::stop_at_first) stopping.store(true);
    }
  }
};

run_result run_asio_loop(std::span<const task> tasks, const run_options& options) {
  reference_run run(tasks, options);
  if (tasks.empty()) return std::move(run.slots).collect(0);
  if (options.stop.stop_requested()) {
    for (const task& t : tasks) run.slots.fail(t.id, std::string(k_cancelled));
    return std::move(run.slots).collect(1);
  }
  boost::asio::io_context io(1);  // one thread runs it
  // One timer per task, constructed in place: a timer with a pending wait must not move.
  std::vector<std::optional<boost::asio::steady_timer>> timers(tasks.size());
  const auto cancel_all = [&] {
    run.stopping.store(true);
    for (auto& t : timers) {
      if (t) t->cancel();  // its handler runs with operation_aborted and reports the task
    }
  };
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    run.start_ns[i] = ns_since(options.origin);
    if (tasks[i].wait_ns > 0) {
      timers[i].emplace(
          io, options.origin + std::chrono::nanoseconds(run.start_ns[i] + tasks[i].wait_ns));
      timers[i]->async_wait([&run, &cancel_all, i](const boost::system::error_code& ec) {
        const bool was_stopping = run.stopping.load();
        if (ec) {
          run.slots.fail(run.tasks[i].id, std::string(k_cancelled));
          return;
        }
        run.finish(i);
        if (!was_stopping && run.stopping.load()) cancel_all();  // a first error
      });
    } else {
      boost::asio::post(io, [&run, &cancel_all, i] {
        const bool was_stopping = run.stopping.load();
        run.finish(i);
        if (!was_stopping && run.stopping.load()) cancel_all();
      });
    }
  }
  const std::stop_callback on_stop(options.stop, [&] {
    run.stopping.store(true);
    boost::asio::post(io, cancel_all);  // timers belong to the loop's thread
  });
  io.run();
  return std::move(run.slots).collect(1);
}

/// libuv's loop time is in whole milliseconds, truncated, and cached at the start of each turn:
/// a timer of T ms armed at loop time L fires once the (truncated) time reaches L + T, which can
/// be as little as T − 1 ms after it was armed. So a wait of w ms is armed as ⌈w⌉ + 1 ms, never
/// sooner than w. The loop mostly sleeps the whole timeout from the arming, so the wait ends about
/// ⌈w⌉ + 1.1 ms after it began (measured on the development VM at 0.1, 1 and 10 ms).
std::uint64_t libuv_timeout_ms(std::int64_t wait_ns) {
  if (wait_ns <= 0) return 0;
  return static_cast<std::uint64_t>((wait_ns + 999'999) / 1'000'000) + 1;
}

struct libuv_run {
  reference_run& run;
  std::vector<uv_timer_t>& timers;
  uv_async_t stop_signal{};
  std::mutex stop_mutex;      // guards stop_open against the canceller's uv_async_send
  bool stop_open = true;      // stop_signal not yet closed
  std::size_t remaining = 0;  // tasks neither finished nor cancelled (loop thread)

  void settle_one() {
    if (--remaining > 0) return;
    const std::lock_guard lock(stop_mutex);  // the last task: the loop may end
    stop_open = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&stop_signal), nullptr);
  }
  void cancel_pending() {
    run.stopping.store(true);
    for (uv_timer_t& t : timers) {
      auto* h = reinterpret_cast<uv_handle_t*>(&t);
      if (!uv_is_active(h) || uv_is_closing(h)) continue;
      uv_timer_stop(&t);
      uv_close(h, nullptr);
      run.slots.fail(run.tasks[static_cast<std::size_t>(&t - timers.data())].id,
                     std::string(k_cancelled));
      settle_one();
    }
  }
};

void on_libuv_timer(uv_timer_t* timer) {
  auto& state = *static_cast<libuv_run*>(timer->data);
  const bool was_stopping = state.run.stopping.load();
  state.run.finish(static_cast<std::size_t>(timer - state.timers.data()));
  uv_close(reinterpret_cast<uv_handle_t*>(timer), nullptr);
  state.settle_one();
  if (!was_stopping && state.run.stopping.load() && state.remaining > 0) state.cancel_pending();
}

run_result run_libuv(std::span<const task> tasks, const run_options& options) {
  reference_run run(tasks, options);
  if (tasks.empty()) return std::move(run.slots).collect(0);
  if (options.stop.stop_requested()) {
    for (const task& t : tasks) run.slots.fail(t.id, std::string(k_cancelled));
    return std::move(run.slots).collect(1);
  }
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) throw std::runtime_error("libuv: uv_loop_init failed");
  std::vector<uv_timer_t> timers(tasks.size());
  libuv_run state{.run = run, .timers = timers, .remaining = tasks.size()};
  uv_async_init(&loop, &state.stop_signal,
                [](uv_async_t* a) { static_cast<libuv_run*>(a->data)->cancel_pending(); });
  state.stop_signal.data = &state;
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    uv_timer_init(&loop, &timers[i]);
    timers[i].data = &state;
    uv_update_time(&loop);  // the cached loop time would make the first waits short
    run.start_ns[i] = ns_since(options.origin);
    uv_timer_start(&timers[i], on_libuv_timer, libuv_timeout_ms(tasks[i].wait_ns), 0);
  }
  {
    // Only uv_async_send is safe from another thread; the mutex keeps it off a closed handle.
    const std::stop_callback on_stop(options.stop, [&state] {
      const std::lock_guard lock(state.stop_mutex);
      if (state.stop_open) uv_async_send(&state.stop_signal);
    });
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_loop_close(&loop);
  return std::move(run.slots).collect(1);
}

/// Both references: one thread, non-blocking waits on the library's own timers.
constexpr schedule k_one_loop{.policy = placement::static_blocks,
                              .waits = wait_mode::nonblocking,
                              .workers = worker_rule::one,
                              .per_task = unit_cost::probed,
                              .probe_wait_overshoot = true};

}  // namespace

const executor& asio_loop_executor() {
  static const executor e{
      .name = "asio-loop",
      .lesson = "05",
      .summary = "reference: boost::asio::io_context, a steady_timer per task, one thread",
      .plan = k_one_loop,
      .no_timeout_because = "a loop cannot interrupt a running callback",
      .reference = true,
      .run = run_asio_loop,
  };
  return e;
}

const executor& libuv_executor() {
  static const executor e{
      .name = "libuv",
      .lesson = "05",
      .summary = "reference: libuv, a uv_timer_t per task (millisecond timers), one thread",
      .plan = k_one_loop,
      .no_timeout_because = "a loop cannot interrupt a running callback",
      .reference = true,
      .run = run_libuv,
  };
  return e;
}

}  // namespace clab
