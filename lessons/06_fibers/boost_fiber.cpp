// Lesson 06 — the reference row `boost-fiber`: every task a Boost.Fiber fiber that sleeps through
// its wait on Boost's own timers (a condition variable's wait_until, so a stop can wake it), then
// computes. P = 1: the calling thread with Boost's round_robin scheduler. P > 1: P threads with
// Boost's work_stealing scheduler, in a forked child process per run. Look for: why the fork.
//
// Why P > 1 runs in a child process. Boost.Fiber 1.81's work_stealing (src/algo/work_stealing.cpp)
// keeps its scheduler table in process-wide statics, set up once per process:
//   - `schedulers_` (a static vector) is sized to the FIRST thread count ever given, once
//     (std::call_once), and every new work_stealing takes the slot `id_ = counter_++` of a static
//     counter that is never reset: the second set of threads writes past the end of the vector;
//   - the barrier its constructor waits on is a function-local static sized to that first count;
//   - a thief steals from `schedulers_[random id < thread_count]`, i.e. from the first set.
// Measured here (a test program starting one set of threads, running 1000 fibers, joining them,
// then starting another): sets of 2 then 2, 2 then 4, 4 then 2, all crash with SIGSEGV inside
// work_stealing's constructor, on the second set. A long-lived pool per P cannot help either: a
// pool for P = 2 and a later one for P = 4 are two sets in one process. So each run with P > 1
// forks a child whose copy of those statics is still untouched (the parent never constructs a
// work_stealing), runs there, and sends its records back through a pipe (boost_fiber_child.hpp).
// The cost, a fork of the caller plus P − 1 thread starts per run, is part of the makespan.
//
// Two more facts about work_stealing, read in the source and measured: its ready queue is a FIFO
// that owner and thieves both take from the front (context_spinlock_queue: pop() and steal() read
// the same end), so the tasks leave in task order, as from one shared queue (dynamic_queue). And
// an idle worker only sleeps if built with suspend = true, but then nothing wakes it when another
// thread's queue fills: 200 tasks spawned on thread 0 of 2 all ran on thread 0. So this row uses
// Boost's default (suspend = false), as Boost's own examples do: idle workers spin, looking for
// fibers to steal, and at P > cores they take time slices from the workers that compute.
#include <unistd.h>

#include <boost/fiber/algo/round_robin.hpp>
#include <boost/fiber/algo/work_stealing.hpp>
#include <boost/fiber/condition_variable.hpp>
#include <boost/fiber/fiber.hpp>
#include <boost/fiber/fixedsize_stack.hpp>
#include <boost/fiber/mutex.hpp>
#include <boost/fiber/operations.hpp>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "lessons/06_fibers/boost_fiber_child.hpp"
#include "lessons/06_fibers/executors.hpp"
#include "workloads/execute.hpp"

namespace clab {
namespace {

namespace fibers = boost::fibers;

/// Each fiber's stack: Boost's fixedsize_stack (malloc, no guard page) of 64 KiB, half Boost's
/// default of 128 KiB, which glibc would serve with one mmap each (at its 128 KiB threshold), so
/// that a run of more than about 65 000 tasks would hit vm.max_map_count. The kernel needs little.
constexpr std::size_t k_stack_bytes = 64 * 1024;

thread_local int this_worker = 0;  // the index of the thread this code runs on

/// Read through a call the compiler cannot see into: a fiber may resume on another thread after a
/// wait (work_stealing), and a thread_local's address computed before the wait would be stale.
[[gnu::noinline]] int current_worker() { return this_worker; }

/// The stop, as fibers can wait for it: a fiber sleeps on `wake_` until its deadline or the stop.
/// request() may come from any thread (a fiber, the canceller's stop callback, the child's
/// watcher thread); Boost.Fiber's mutex and condition variable work across threads.
class stop_waker {
 public:
  void request() {
    {
      const std::lock_guard lock(mutex_);
      stopped_ = true;
    }
    wake_.notify_all();
  }
  [[nodiscard]] bool requested() {
    const std::lock_guard lock(mutex_);
    return stopped_;
  }
  /// Sleeps until `deadline`; false if the stop came first.
  [[nodiscard]] bool sleep_until(run_clock::time_point deadline) {
    std::unique_lock lock(mutex_);
    return !wake_.wait_until(lock, deadline, [this] { return stopped_; });
  }

 private:
  fibers::mutex mutex_;
  fibers::condition_variable wake_;
  bool stopped_ = false;  // guarded by mutex_
};

/// One run's fibers, on whichever threads the caller has set up with a Boost scheduler.
struct fiber_run {
  std::span<const task> tasks;
  run_clock::time_point origin;
  error_policy on_error;
  result_slots& slots;
  stop_waker& waker;

  [[nodiscard]] bool stopping() { return slots.stopping() || waker.requested(); }

  /// Task i as a fiber: its wait on Boost's timers (parked, the thread runs other fibers), then
  /// the CPU part on whichever thread the fiber is on by then.
  void run_task(std::size_t i) {
    const task& t = tasks[i];
    if (stopping()) {
      slots.fail(t.id, std::string(k_cancelled));
      return;
    }
    task_record r{.id = t.id, .start_ns = ns_since(origin)};
    if (t.wait_ns > 0 &&
        !waker.sleep_until(origin + std::chrono::nanoseconds(r.start_ns + t.wait_ns))) {
      slots.fail(t.id, std::string(k_cancelled));  // the stop came during the wait
      return;
    }
    r.worker = current_worker();
    try {
      r.checksum = compute(t);
      r.end_ns = ns_since(origin);
      slots.complete(r);
    } catch (...) {  // a throw fails this task only, unless the run stops at the first error
      slots.fail(t.id, describe_current_exception());
      if (on_error == error_policy::stop_at_first) waker.request();
    }
  }

  /// Spawns a fiber per task on the calling thread's scheduler (Boost's default launch::post: each
  /// is queued, not run yet), then joins them all.
  void spawn_and_join() {
    fibers::fixedsize_stack stacks(k_stack_bytes);
    std::vector<fibers::fiber> all;
    all.reserve(tasks.size());
    for (std::size_t i = 0; i < tasks.size(); ++i) {
      all.emplace_back(std::allocator_arg, stacks, [this, i] { run_task(i); });
    }
    for (fibers::fiber& f : all) f.join();
  }
};

/// P = 1: the calling thread, Boost's round_robin scheduler (its default), in this process.
run_result run_one_thread(std::span<const task> tasks, const run_options& options) {
  result_slots slots(tasks.size(), options);
  stop_waker waker;
  fiber_run run{tasks, options.origin, options.on_error, slots, waker};
  {
    const std::stop_callback on_stop(options.stop, [&waker] { waker.request(); });
    this_worker = 0;
    fibers::use_scheduling_algorithm<fibers::algo::round_robin>();
    run.spawn_and_join();
  }
  return std::move(slots).collect(1);
}

/// P threads on work_stealing; the calling thread is worker 0 and spawns every fiber, the others
/// steal. Each work_stealing constructor waits until all P exist. Call only in a fresh process.
void run_work_stealing(fiber_run& run, int p) {
  const auto threads = static_cast<std::uint32_t>(p);
  fibers::mutex mutex;
  fibers::condition_variable all_done;
  bool done = false;  // guarded by mutex
  std::vector<std::thread> helpers;
  for (int k = 1; k < p; ++k) {
    helpers.emplace_back([&, k] {
      this_worker = k;
      fibers::use_scheduling_algorithm<fibers::algo::work_stealing>(threads);
      // While this thread's main fiber waits here, its scheduler steals and runs task fibers.
      std::unique_lock lock(mutex);
      all_done.wait(lock, [&done] { return done; });
    });
  }
  this_worker = 0;
  fibers::use_scheduling_algorithm<fibers::algo::work_stealing>(threads);
  run.spawn_and_join();
  {
    const std::lock_guard lock(mutex);
    done = true;
  }
  all_done.notify_all();
  for (std::thread& t : helpers) t.join();
}

/// What the child sends back: a record, or a failure (record.id, cause).
struct child_report {
  task_record record;
  bool failed = false;
  char cause[119] = {};  // truncated; the faults' messages are short
};

/// P > 1: a child process per run (see the top of this file), its records sent to this process.
run_result run_in_fresh_process(std::span<const task> tasks, const run_options& options, int p) {
  const auto body = [&](const child_channel<child_report>& channel) {
    run_options local = options;
    local.stop = {};  // the parent's stop reaches this process through the stop pipe instead
    result_slots slots(tasks.size(), local);
    // Never freed: the watcher thread may still touch it when the child _exits.
    auto* waker = new stop_waker;
    std::thread([waker, fd = channel.stop_fd()] {
      char byte = 0;
      ssize_t n = 0;
      while ((n = ::read(fd, &byte, 1)) < 0 && errno == EINTR) {
      }
      if (n == 1) waker->request();  // n == 0: the parent closed the pipe, the run is over
    }).detach();                     // the child's _exit ends it
    fiber_run run{tasks, options.origin, options.on_error, slots, *waker};
    run_work_stealing(run, p);
    const run_result r = std::move(slots).collect(p);
    for (const task_record& rec : r.records) channel.send({.record = rec});
    for (const task_failure& f : r.failed) {
      child_report m{.record = {.id = f.id}, .failed = true};
      std::strncpy(m.cause, f.cause.c_str(), sizeof m.cause - 1);
      channel.send(m);
    }
  };
  result_slots slots(tasks.size(), options);
  const auto on_report = [&slots](const child_report& m) {
    if (m.failed) {
      slots.fail(m.record.id, m.cause);
    } else {
      slots.complete(m.record);
    }
  };
  const child_end end = run_in_child<child_report>(body, on_report, options.stop);
  if (end.signal != 0) {
    // An injected abort or segfault killed the child. In one process it would have ended the whole
    // program, as it does for every thread executor and for this row at P = 1: so it does here.
    std::signal(end.signal, SIG_DFL);
    std::raise(end.signal);
  }
  if (end.exit_status != 0) {
    throw std::runtime_error("boost-fiber: the run's child process failed (exit status " +
                             std::to_string(end.exit_status) + ")");
  }
  return std::move(slots).collect(p);
}

/// Non-blocking waits like lesson 05's loops; tasks leave Boost's FIFO in task order (see the top
/// of the file); P threads started per run (in the child), and a probed cost per task.
constexpr schedule k_boost_fiber_plan{.policy = placement::dynamic_queue,
                                      .waits = wait_mode::nonblocking,
                                      .workers = worker_rule::requested,
                                      .worker_start = unit_cost::thread_start,
                                      .per_task = unit_cost::probed,
                                      .probe_wait_overshoot = true};

run_result run_boost_fiber(std::span<const task> tasks, const run_options& options) {
  const int p = workers_used(k_boost_fiber_plan, options.workers, tasks.size());
  if (tasks.empty()) {
    result_slots none(0, options);
    return std::move(none).collect(0);
  }
  if (options.stop.stop_requested()) {  // nothing starts: every task is cancelled
    result_slots slots(tasks.size(), options);
    for (const task& t : tasks) slots.fail(t.id, std::string(k_cancelled));
    return std::move(slots).collect(p);
  }
  return p == 1 ? run_one_thread(tasks, options) : run_in_fresh_process(tasks, options, p);
}

}  // namespace

const executor& boost_fiber_executor() {
  static const executor e{
      .name = "boost-fiber",
      .lesson = "06",
      .summary =
          "reference: Boost.Fiber, a fiber per task; round_robin on one thread, work_stealing on P "
          "(a child process per run)",
      .plan = k_boost_fiber_plan,
      .no_timeout_because =
          "a fiber cannot be interrupted while it computes (Boost.Fiber switches "
          "only when a fiber waits or yields)",
      .reference = true,
      .run = run_boost_fiber,
  };
  return e;
}

}  // namespace clab
