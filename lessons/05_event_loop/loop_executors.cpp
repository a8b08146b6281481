// Lesson 05 — the task set on our own loop. `loop`: each task's wait becomes a timer and the
// timer's callback computes the CPU part, so one thread overlaps every wait. `blocking`: the same
// loop, but each callback sleeps through its wait: one blocking call stalls every other task.
// `loops`: P loops on P threads with the tasks dealt round robin, so CPU parts run min(P, cores)
// wide while every wait still overlaps. An io task's wait (workload io) is a request to the
// service: `loop` and `loops` watch its socket with the loop's epoll and step the request on
// each readiness, so 200 requests in flight are 200 descriptors in one epoll, not 200 threads.
// Look for: nothing here blocks but the loop's own wait; and how a request is closed: unwatched
// first, then closed, whether it finished, failed, timed out or was cancelled by a stop.
#include <atomic>
#include <cstdio>
#include <exception>
#include <memory>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "lessons/05_event_loop/event_loop.hpp"
#include "lessons/05_event_loop/executors.hpp"
#include "workloads/execute.hpp"
#include "workloads/io_exchange.hpp"

namespace clab {
namespace {

class task_loop;

/// What every loop of one run shares: the tasks, the result slots and the stop.
struct shared_run {
  shared_run(std::span<const task> t, const run_options& o)
      : tasks(t), options(o), slots(t.size(), o) {}
  std::span<const task> tasks;
  const run_options& options;
  result_slots slots;
  std::atomic<bool> stopping{false};  // cancelled, or a first error under stop_at_first
  std::vector<std::unique_ptr<task_loop>> loops;
  void stop_all();  // any thread
};

/// One loop and the tasks dealt to it. Everything but request_stop() runs on the loop's thread.
class task_loop {
 public:
  task_loop(shared_run& run, int worker, bool blocking_waits)
      : run_(run), worker_(worker), blocking_(blocking_waits) {}

  void add(std::uint32_t id) { mine_.push_back({.id = id}); }

  // [snippet:loop-start]
  /// Starts every task of this loop (its wait becomes a timer; a task with no wait is simply
  /// queued), then turns the loop until each has finished or been cancelled.
  void run() {
    watch_for_slow_callbacks();
    loop_.reserve_timers(mine_.size());
    for (std::size_t k = 0; k < mine_.size(); ++k) {
      entry& e = mine_[k];
      const task& t = run_.tasks[e.id];
      e.start_ns = ns_since(run_.options.origin);
      if (t.is_io() && !blocking_) {
        start_request(k);  // its wait is the socket's: watched, not timed
      } else if (t.wait_ns > 0 && !blocking_) {
        const auto deadline =
            run_.options.origin + std::chrono::nanoseconds(e.start_ns + t.wait_ns);
        e.timer = loop_.call_at(
            deadline, [this, k] { finish(k); }, e.id + 1);
      } else {
        loop_.call_soon([this, k] { finish(k); }, e.id + 1);
      }
    }
    loop_.run();
  }
  // [end-snippet]

  /// Any thread: makes this loop cancel every timer that has not fired.
  void request_stop() {
    loop_.post([this] { cancel_pending(); });
  }

 private:
  struct entry {
    std::uint32_t id = 0;
    std::int64_t start_ns = 0;
    timer_handle timer;  // the wait's timer; for an io task, its --task-timeout-ms timer
    // An io task's request while it is in flight (null before and after): heap-allocated once
    // per request, because the loop's callbacks hold its address and `mine_` is a vector.
    std::unique_ptr<io_exchange> request;
    io_exchange::want watching = io_exchange::want::done;  // the readiness the epoll asks for
  };

  // [snippet:loop-finish]
  /// The callback of task k: its wait is over (or, for `blocking`, it sleeps through it here, and
  /// the loop with it), so compute its CPU part and record it. `body`: the checksum of an io
  /// task's reply, once finish_request() has closed it (0 for a timer's task).
  void finish(std::size_t k, std::uint64_t body = 0) {
    entry& e = mine_[k];
    if (run_.stopping.load(std::memory_order_relaxed)) {
      run_.slots.fail(e.id, std::string(k_cancelled));
      return;
    }
    const task& t = run_.tasks[e.id];
    task_record r{.id = e.id, .start_ns = e.start_ns, .worker = worker_};
    try {
      if (blocking_) {
        r.start_ns = ns_since(run_.options.origin);
        body = blocking_wait(t);  // the flaw: the whole loop sleeps with this task
      }
      r.checksum = io_checksum(t, compute(t), body);
      r.end_ns = ns_since(run_.options.origin);
      run_.slots.complete(r);
    } catch (...) {  // a throw fails this task only, unless the run stops at the first error
      run_.slots.fail(e.id, describe_current_exception());
      if (run_.options.on_error == error_policy::stop_at_first) run_.stop_all();
    }
  }
  // [end-snippet]

  // [snippet:loop-io]
  /// An io task: open its socket, start connecting, and watch the descriptor for what the request
  /// wants next. With --task-timeout-ms a timer races the request: whichever comes first cancels
  /// the other (finish_request() cancels the timer; the timer closes the request).
  void start_request(std::size_t k) {
    entry& e = mine_[k];
    if (run_.stopping.load(std::memory_order_relaxed)) {  // a first error while starting
      run_.slots.fail(e.id, std::string(k_cancelled));
      return;
    }
    try {
      e.request = std::make_unique<io_exchange>(run_.tasks[e.id], /*blocking=*/false);
      const io_exchange::want w = e.request->start();
      if (w == io_exchange::want::done) {
        finish_request(k);
        return;
      }
      watch_request(k, w);
      if (run_.options.task_timeout) {
        e.timer = loop_.call_later(
            *run_.options.task_timeout, [this, k] { request_timed_out(k); }, e.id + 1);
      }
    } catch (...) {
      fail_request(k, describe_current_exception());
    }
  }

  /// Asks the epoll for the readiness the request wants: EPOLLOUT while it connects and sends,
  /// EPOLLIN for the reply. Level-triggered, so an interest that stays the same stays armed and
  /// costs no system call; only a change (write -> read, once the request is sent) re-arms it.
  void watch_request(std::size_t k, io_exchange::want w) {
    entry& e = mine_[k];
    if (w == e.watching) return;
    loop_.watch(
        e.request->fd(),
        w == io_exchange::want::write ? event_loop::writable : event_loop::readable,
        [this, k](std::uint32_t /*events*/) { on_ready(k); }, e.id + 1);
    e.watching = w;
  }

  /// The socket is ready (or in error: step() then finds out which error and throws): one step.
  void on_ready(std::size_t k) {
    try {
      const io_exchange::want w = mine_[k].request->step();
      if (w == io_exchange::want::done) {
        finish_request(k);
      } else {
        watch_request(k, w);
      }
    } catch (...) {  // connection reset, service stopped, ...: this task fails, the loop goes on
      fail_request(k, describe_current_exception());
    }
  }

  /// The reply is whole: stop the timeout, unwatch, close, then compute and record as a timer's
  /// callback does (finish() also reports a task cancelled meanwhile by a stop).
  void finish_request(std::size_t k) {
    entry& e = mine_[k];
    const std::uint64_t body = e.request->body_checksum();
    close_request(e);
    finish(k, body);
  }

  /// The timeout won the race: close the request (the service's late reply goes nowhere).
  void request_timed_out(std::size_t k) {
    entry& e = mine_[k];
    e.timer = {};  // fired: nothing to cancel
    fail_request(k, io_timeout_cause(e.id, *run_.options.task_timeout));
  }
  // [end-snippet]

  /// A request that failed or timed out: closed, and its task failed as a throw fails one.
  void fail_request(std::size_t k, std::string cause) {
    entry& e = mine_[k];
    close_request(e);
    run_.slots.fail(e.id, std::move(cause));
    if (run_.options.on_error == error_policy::stop_at_first) run_.stop_all();
  }

  /// Unwatch before close: epoll forgets a closed descriptor by itself, but the loop's watcher
  /// table would not, and a new socket may get the same number at once.
  void close_request(entry& e) {
    loop_.cancel(e.timer);
    e.timer = {};
    if (!e.request) return;
    if (e.request->fd() >= 0) loop_.unwatch(e.request->fd());
    e.request->close();
    e.request.reset();
    e.watching = io_exchange::want::done;
  }

  /// A cancelled timer never runs its callback, so its task is reported here; a task whose
  /// callback is already queued sees `stopping` when it runs. A request in flight is closed now,
  /// so the run never waits for a reply after its stop.
  void cancel_pending() {
    run_.stopping.store(true, std::memory_order_relaxed);
    for (entry& e : mine_) {
      if (e.request) {
        close_request(e);
        run_.slots.fail(e.id, std::string(k_cancelled));
      } else if (loop_.cancel(e.timer)) {
        run_.slots.fail(e.id, std::string(k_cancelled));
      }
    }
  }

  /// --slow-callback-ms: asyncio's debug-mode warning, and a watchdog for a callback that never
  /// returns. Labels are task id + 1 (0 is "no label").
  void watch_for_slow_callbacks() {
    const auto& limit = run_.options.slow_callback;
    if (!limit) return;
    loop_.set_slow_callback(
        *limit, [worker = worker_, ms = limit->count()](const slow_callback_report& r) {
          const double took_ms = static_cast<double>(r.elapsed.count()) / 1e6;
          const long long id = static_cast<long long>(r.label) - 1;
          if (r.still_running) {
            std::fprintf(stderr,
                         "slow callback: loop %d is stalled: task %lld's callback has run %.1f ms "
                         "and has not returned (--slow-callback-ms %lld)\n",
                         worker, id, took_ms, static_cast<long long>(ms));
          } else {
            std::fprintf(stderr,
                         "slow callback: task %lld's callback ran %.1f ms on loop %d "
                         "(--slow-callback-ms %lld)\n",
                         id, took_ms, worker, static_cast<long long>(ms));
          }
        });
  }

  shared_run& run_;
  int worker_;
  bool blocking_;
  std::vector<entry> mine_;
  event_loop loop_;
};

void shared_run::stop_all() {
  stopping.store(true, std::memory_order_relaxed);
  for (const auto& l : loops) l->request_stop();
}

/// Runs the tasks on `p` loops (task i on loop i mod p); the calling thread turns loop 0.
run_result run_on_loops(std::span<const task> tasks, const run_options& options, int p,
                        bool blocking_waits) {
  shared_run run(tasks, options);
  if (tasks.empty()) return std::move(run.slots).collect(0);
  if (options.stop.stop_requested()) {  // nothing starts: every task is cancelled
    for (const task& t : tasks) run.slots.fail(t.id, std::string(k_cancelled));
    return std::move(run.slots).collect(p);
  }
  for (int k = 0; k < p; ++k)
    run.loops.push_back(std::make_unique<task_loop>(run, k, blocking_waits));
  for (std::size_t i = 0; i < tasks.size(); ++i)
    run.loops[i % p]->add(static_cast<std::uint32_t>(i));
  {
    // A stop from another thread (--cancel-after-ms) reaches every loop through its post().
    const std::stop_callback on_stop(options.stop, [&run] { run.stop_all(); });
    std::vector<std::exception_ptr> errors(p);
    std::vector<std::jthread> threads;
    for (int k = 1; k < p; ++k) {
      threads.emplace_back([&run, &errors, k] {
        try {
          run.loops[k]->run();
        } catch (...) {
          errors[k] = std::current_exception();
        }
      });
    }
    run.loops[0]->run();
    threads.clear();  // joins
    for (const auto& e : errors) {
      if (e) std::rethrow_exception(e);
    }
  }
  return std::move(run.slots).collect(p);
}

run_result run_loop(std::span<const task> tasks, const run_options& options) {
  return run_on_loops(tasks, options, 1, /*blocking_waits=*/false);
}

run_result run_blocking_loop(std::span<const task> tasks, const run_options& options) {
  return run_on_loops(tasks, options, 1, /*blocking_waits=*/true);
}

constexpr schedule k_loops_plan{.policy = placement::round_robin,
                                .waits = wait_mode::nonblocking,
                                .workers = worker_rule::requested,
                                .worker_start = unit_cost::thread_start,
                                .per_task = unit_cost::probed,
                                .probe_wait_overshoot = true};

run_result run_loops(std::span<const task> tasks, const run_options& options) {
  return run_on_loops(tasks, options, workers_used(k_loops_plan, options.workers, tasks.size()),
                      /*blocking_waits=*/false);
}

constexpr std::string_view k_no_interrupt =
    "a loop cannot interrupt a running callback (and a timer wait cannot hang)";

}  // namespace

const executor& loop_executor() {
  static const executor e{
      .name = "loop",
      .lesson = "05",
      .summary = "one thread, one event loop: every wait a timer, its callback computes",
      .plan = {.policy = placement::static_blocks,
               .waits = wait_mode::nonblocking,
               .workers = worker_rule::one,
               .per_task = unit_cost::probed,
               .probe_wait_overshoot = true},
      .no_timeout_because = k_no_interrupt,
      .lag_monitor = true,
      .supports_io = true,
      .timeout_cancels_waits = true,
      .run = run_loop,
  };
  return e;
}

const executor& blocking_executor() {
  static const executor e{
      .name = "blocking",
      .lesson = "05",
      .summary = "the flaw: the same loop, but each callback sleeps through its wait",
      .plan = {.policy = placement::static_blocks,
               .workers = worker_rule::one,
               .per_task = unit_cost::probed},
      .no_timeout_because = k_no_interrupt,
      .lag_monitor = true,
      .run = run_blocking_loop,
  };
  return e;
}

const executor& loops_executor() {
  static const executor e{
      .name = "loops",
      .lesson = "05",
      .summary = "P loops on P threads, tasks dealt round robin",
      .plan = k_loops_plan,
      .no_timeout_because = k_no_interrupt,
      .lag_monitor = true,
      .supports_io = true,
      .timeout_cancels_waits = true,
      .run = run_loops,
  };
  return e;
}

}  // namespace clab
