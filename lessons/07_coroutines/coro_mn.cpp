// Lesson 07 — M:N coroutines. `coroutines-mn`: P threads, each with its own event_loop and
// coro_scheduler; the tasks are dealt round robin, not started, and a thread starts its next one
// only when it has nothing else ready to run, stealing a task nobody has started from another
// thread once it has nothing in flight, so the starts spread over the threads as they get free.
// Look for: a started coroutine never moves. Its frame, its sleep's timer and its stop callback
// belong to the loop it started on (a timer lives on one loop), so only the starts are balanced,
// not the work a woken coroutine still has to do.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <latch>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "lessons/05_event_loop/event_loop.hpp"
#include "lessons/07_coroutines/executors.hpp"
#include "lessons/07_coroutines/io_request.hpp"
#include "lessons/07_coroutines/scheduler.hpp"
#include "lessons/07_coroutines/task.hpp"
#include "workloads/execute.hpp"
#include "workloads/io_exchange.hpp"

namespace clab {
namespace {

/// The tasks dealt to one thread and not started yet: its tasks are worker, worker + P, worker +
/// 2P, ..., and [lo, hi) of them are left, packed in one word so that the owner (taking the lowest
/// from the front) and a thief (taking the highest from the back) agree with a single CAS. A line
/// of its own: the owner writes it once per start, another thread only when it steals.
struct alignas(64) unstarted {
  std::atomic<std::uint64_t> range{0};  // lo in the low 32 bits, hi in the high 32
  static constexpr std::uint64_t pack(std::uint64_t lo, std::uint64_t hi) { return hi << 32 | lo; }
};

/// What the P threads of one run share: the tasks, the result slots, the stop (a cancellation or
/// a first error: each sleeping coroutine's stop callback posts the wake-up to its own loop, so
/// one request reaches every loop), and each thread's tasks not yet started.
struct mn_run {
  mn_run(std::span<const task> t, const run_options& o, int threads)
      : tasks(t),
        options(o),
        slots(t.size(), o),
        stop(o.stop, slots),
        started(threads),
        p(static_cast<std::size_t>(threads)),
        dealt(p) {
    for (std::size_t k = 0; k < p; ++k) {
      const std::size_t mine = t.size() > k ? (t.size() - k + p - 1) / p : 0;
      dealt[k].range.store(unstarted::pack(0, mine), std::memory_order_relaxed);
    }
  }
  std::span<const task> tasks;
  const run_options& options;
  result_slots slots;
  run_stop stop;
  std::latch started;  // every thread is up: none takes a task before all can (see run_worker)
  std::size_t p;
  std::vector<unstarted> dealt;

  /// Takes one unstarted task of thread v: the lowest if `own` (v is the caller), else the
  /// highest (the one furthest from what its owner takes next). False when v has none left.
  bool take(std::size_t v, bool own, std::uint32_t& id) {
    std::atomic<std::uint64_t>& range = dealt[v].range;
    std::uint64_t s = range.load(std::memory_order_relaxed);
    for (;;) {
      const std::uint64_t lo = s & 0xffff'ffffU;
      const std::uint64_t hi = s >> 32;
      if (lo >= hi) return false;
      const std::uint64_t taken = own ? lo : hi - 1;
      const std::uint64_t left = own ? unstarted::pack(lo + 1, hi) : unstarted::pack(lo, hi - 1);
      if (range.compare_exchange_weak(s, left, std::memory_order_relaxed)) {
        id = static_cast<std::uint32_t>(v + taken * p);
        return true;
      }
    }
  }
  /// Steals for thread k: from the next thread round that has an unstarted task left.
  bool steal(std::size_t k, std::uint32_t& id) {
    for (std::size_t i = 1; i < p; ++i) {
      if (take((k + i) % p, /*own=*/false, id)) return true;
    }
    return false;
  }
};

/// One thread's share: its loop's scheduler and what it has in flight. Only this thread reads or
/// writes it (nothing here is shared, so it costs no cache line between threads).
struct mn_worker {
  mn_run& run;
  coro::coro_scheduler& sched;
  int index;
  std::size_t in_flight = 0;   // tasks started here and not ended
  bool feeder_parked = false;  // the feeder ended with tasks in flight: the last to end restarts it
  void task_ended();
};

// [snippet:coro-mn-task]
/// Task i on thread w: the body of coro_executors.cpp's run_task, written with one way out (so
/// that every task's end is counted), with the thread recorded: a coroutine ends on the thread it
/// started on.
coro::task<void> run_mn_task(mn_worker& w, std::uint32_t i) {
  mn_run& run = w.run;
  const task& t = run.tasks[i];
  task_record r{.id = i, .start_ns = ns_since(run.options.origin), .worker = w.index};
  bool cancelled = run.slots.stopping();  // cancelled, or a first error under --errors first
  std::optional<std::string> failed;      // the wait's own failure (an io task's request)
  std::uint64_t body = 0;
  if (!cancelled && (t.wait_ns > 0 || t.is_io())) {
    try {
      // A stop wakes the waiter at once (through a post to this thread's loop): task_cancelled.
      if (t.is_io()) {
        // The socket is watched by this thread's loop: the request, like the frame, stays here.
        const auto reply = co_await coro::io_request(t, run.stop.token(), run.options.task_timeout);
        if (reply) {
          body = *reply;
        } else {
          failed = io_timeout_cause(i, *run.options.task_timeout);
        }
      } else {
        co_await coro::sleep_for(std::chrono::nanoseconds(t.wait_ns), run.stop.token());
      }
    } catch (const coro::task_cancelled&) {
      cancelled = true;
    } catch (...) {  // io_error (the request failed): this task only, unless --errors first
      failed = describe_current_exception();
    }
  }
  if (failed) {
    run.slots.fail_error(i, std::move(*failed));
  } else if (cancelled || run.slots.stopping()) {  // or stopped while it sat in the ready queue
    run.slots.fail(i, std::string(k_cancelled));
  } else {
    try {
      r.checksum = io_checksum(t, compute(t), body);
      r.end_ns = ns_since(run.options.origin);
      run.slots.complete(r);
    } catch (...) {  // a throw fails this task only, unless the run stops at the first error
      run.slots.fail_error(i, describe_current_exception());
    }
  }
  w.task_ended();
}
// [end-snippet]

// [snippet:coro-mn-feeder]
/// Each thread's feeder: starts this thread's next task and yields. The yield puts it at the back
/// of the ready queue, behind the task it just started and every coroutine already woken, so it
/// starts another only once each of them has run up to its next suspension: a thread busy
/// computing starts its tasks late and leaves them to be stolen; a thread whose coroutines all
/// sleep starts its next at once. It steals (a task no thread has started) only with nothing in
/// flight here at all: a thread whose own coroutines sleep is not idle, it has their CPU parts to
/// come, and taking more would pile them on this thread while another has none. So with tasks in
/// flight and none of its own left the feeder ends, parked: the last task to end here restarts it.
/// With nothing left anywhere it ends for good; the loop turns on while any coroutine here sleeps
/// (its timer keeps the loop from going idle), so a thread never leaves a sleeper behind.
coro::task<void> feed(mn_worker& w) {
  const auto k = static_cast<std::size_t>(w.index);
  std::uint32_t id = 0;
  for (;;) {
    if (!w.run.take(k, /*own=*/true, id)) {
      if (w.in_flight > 0) {
        w.feeder_parked = true;
        co_return;
      }
      if (!w.run.steal(k, id)) co_return;
    }
    w.sched.spawn(run_mn_task(w, id), {.label = id + std::uint64_t{1}}).detach();
    ++w.in_flight;
    co_await coro::yield();
  }
}
// [end-snippet]

void mn_worker::task_ended() {
  if (--in_flight == 0 && feeder_parked) {
    feeder_parked = false;
    sched.spawn(feed(*this)).detach();
  }
}

/// Thread `worker`'s whole life: its own loop and scheduler (made, run and destroyed on this
/// thread, so every frame is allocated and freed from this thread's free lists). No thread pulls
/// before every thread is up: starting a coroutine up to its sleep takes well under a microsecond
/// and starting a thread tens, so the first thread would otherwise start every task of a short
/// run before the others exist, and each task's CPU part, which stays where it started, with it.
void run_worker(mn_run& run, int worker) {
  run.started.arrive_and_wait();
  event_loop loop;
  coro::coro_scheduler sched(loop);
  mn_worker w{.run = run, .sched = sched, .index = worker};
  sched.spawn(feed(w)).detach();
  sched.run();
}

// The plan: the simulator's dynamic_queue, whose free worker takes the next unstarted task, and
// whose woken tasks (non-blocking) sit in one ready queue any worker takes from. What it leaves
// out: here a woken coroutine finishes on its own thread, so the CPU parts after the waits are
// balanced only as well as the starts were. Its work_stealing (own deques, a ready queue each)
// is nearer that, but a simulated worker starts all of its tasks before it computes any and
// steals before the others are up: on 16 cpu tasks it put all on one worker (160 ms predicted,
// 84 ms measured), where this executor starts a task only when the last has run. Measured on the
// 2-core VM, P = 2, 16 tasks of 10 ms, --repeat 3: within tolerance on cpu, wait and mixed, fixed
// and bimodal; a probe on parked tasks (probe_parked) prices the sleep's own work.
constexpr schedule k_mn_plan{.policy = placement::dynamic_queue,
                             .waits = wait_mode::nonblocking,
                             .workers = worker_rule::requested,
                             .worker_start = unit_cost::thread_start,
                             .per_task = unit_cost::probed,
                             .probe_wait_overshoot = true,
                             .probe_parked = true};

/// P threads (the calling thread is worker 0), each pulling tasks until none is left.
run_result run_coroutines_mn(std::span<const task> tasks, const run_options& options) {
  const int p = workers_used(k_mn_plan, options.workers, tasks.size());
  mn_run run(tasks, options, std::max(p, 1));
  if (tasks.empty()) return std::move(run.slots).collect(0);
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(p));
  {
    std::vector<std::jthread> threads;
    threads.reserve(static_cast<std::size_t>(p));
    try {
      for (int k = 1; k < p; ++k) {
        threads.emplace_back([&run, &errors, k] {
          try {
            run_worker(run, k);
          } catch (...) {
            errors[static_cast<std::size_t>(k)] = std::current_exception();
          }
        });
      }
    } catch (...) {  // no thread: the ones started must not wait for it at the latch
      errors[0] = std::current_exception();
      run.started.count_down(p - 1 - static_cast<std::ptrdiff_t>(threads.size()));
    }
    try {
      run_worker(run, 0);  // the calling thread is worker 0
    } catch (...) {
      if (!errors[0]) errors[0] = std::current_exception();
    }
  }  // joins
  for (const auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  return std::move(run.slots).collect(p);
}

}  // namespace

const executor& coroutines_mn_executor() {
  static const executor e{
      .name = "coroutines-mn",
      .lesson = "07",
      .summary =
          "P threads, a loop and a coroutine scheduler each; a free thread starts the next "
          "task",
      .plan = k_mn_plan,
      .no_timeout_because =
          "a coroutine cannot be interrupted while it computes (it gives up its thread only at a "
          "co_await)",
      .supports_io = true,
      .timeout_cancels_waits = true,
      .run = run_coroutines_mn,
  };
  return e;
}

}  // namespace clab
