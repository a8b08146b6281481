// Lesson 06 — the reference row `boost-fiber`: every task a Boost.Fiber fiber that sleeps through
// its wait on Boost's own timers (a condition variable's wait_until, so a stop can wake it), then
// computes; an io task's fiber waits for its socket on a reactor thread instead (io_reactor).
// P = 1: the calling thread with Boost's round_robin scheduler. P > 1: P threads with Boost's
// work_stealing scheduler, in a forked child process per run. Look for: why the fork, and why a
// reactor thread.
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
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/fiber/algo/round_robin.hpp>
#include <boost/fiber/algo/work_stealing.hpp>
#include <boost/fiber/condition_variable.hpp>
#include <boost/fiber/fiber.hpp>
#include <boost/fiber/fixedsize_stack.hpp>
#include <boost/fiber/future.hpp>
#include <boost/fiber/mutex.hpp>
#include <boost/fiber/operations.hpp>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <vector>

#include "lessons/06_fibers/boost_fiber_child.hpp"
#include "lessons/06_fibers/executors.hpp"
#include "workloads/execute.hpp"
#include "workloads/io_exchange.hpp"

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

/// What ended an io task's wait on its socket.
enum class io_wake : std::uint8_t { ready, stopped, timed_out };

// [snippet:boost-fiber-reactor]
/// Boost.Fiber has no reactor: its schedulers know ready fibers and timers, not descriptors. There
/// are two ways to give it one. (1) A scheduling algorithm whose suspend_until(), called when its
/// thread has nothing ready, waits in epoll_wait (as Boost's own Asio examples do with an
/// io_context). (2) A reactor thread that watches every socket and fulfils a fiber's promise when
/// its socket is ready. We take (2): under work_stealing an idle thread never suspends (it spins:
/// suspend = false, see the top of the file) and a fiber may resume on any thread, so with (1) a
/// socket watched by one thread's idle path could sit ready while that thread computes, and it
/// would mean a new algorithm for each of Boost's two. The reactor works alike at P = 1 and P > 1
/// through Boost's own cross-thread wake: a promise set from a thread that runs no fiber of ours.
/// Its cost: one more thread per run, and per readiness a wake through the worker's remote ready
/// queue (and its condition variable when the worker sleeps) instead of a loop's own callback.
class io_reactor {
 public:
  io_reactor() {
    epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = 0;  // the wake descriptor; waits are numbered from 1
    if (epoll_fd_ < 0 || wake_fd_ < 0 ||
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev) != 0) {
      const int err = errno;
      close_fds();
      throw std::system_error(err, std::generic_category(), "boost-fiber: the io reactor");
    }
    thread_ = std::thread([this] { watch(); });
  }
  /// No wait may be parked any more (every task's fiber has ended).
  ~io_reactor() {
    quit_.store(true);
    const std::uint64_t one = 1;
    while (::write(wake_fd_, &one, sizeof one) < 0 && errno == EINTR) {
    }
    thread_.join();
    close_fds();
  }
  io_reactor(const io_reactor&) = delete;
  io_reactor& operator=(const io_reactor&) = delete;

  /// From a fiber: parks it until `fd` is ready for `events` (EPOLLIN, EPOLLOUT; an error or a
  /// hangup counts as ready), stop_all(), or `deadline`. The descriptor is no longer watched on
  /// return. Throws std::system_error if epoll refuses it.
  io_wake wait(int fd, std::uint32_t events, run_clock::time_point deadline) {
    fibers::promise<io_wake> woken;
    fibers::future<io_wake> result = woken.get_future();
    std::uint64_t id = 0;
    {
      const std::lock_guard lock(mutex_);
      if (stopped_) return io_wake::stopped;
      id = next_id_++;
      waiting_.emplace(id, &woken);
      // One-shot: the reactor hears of the socket once, however long the fiber takes to wake.
      epoll_event ev{};
      ev.events = events | EPOLLONESHOT;
      ev.data.u64 = id;
      if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
        const int err = errno;
        waiting_.erase(id);
        throw std::system_error(err, std::generic_category(), "boost-fiber: epoll_ctl");
      }
    }
    // The park: Boost's scheduler runs other fibers until the promise is set or the deadline.
    if (deadline == run_clock::time_point::max()) {
      result.wait();
    } else {
      (void)result.wait_until(deadline);
    }
    const std::lock_guard lock(mutex_);
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);  // before the caller closes it
    // Still listed: nobody set the promise, so the deadline came first (a readiness reported
    // after this finds the number gone and is dropped).
    if (waiting_.erase(id) == 1) return io_wake::timed_out;
    return result.get();
  }

  /// Any thread: wakes every parked wait with `stopped`, and every later one returns it at once.
  void stop_all() {
    const std::lock_guard lock(mutex_);
    stopped_ = true;
    for (auto& [id, promise] : waiting_) promise->set_value(io_wake::stopped);
    waiting_.clear();
  }

 private:
  /// The reactor thread: epoll_wait, and a promise set per ready socket.
  void watch() {
    epoll_event events[64];
    for (;;) {
      const int n = ::epoll_wait(epoll_fd_, events, 64, -1);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 || quit_.load()) return;
      const std::lock_guard lock(mutex_);
      for (int k = 0; k < n; ++k) {
        const std::uint64_t id = events[k].data.u64;
        if (id == 0) continue;  // a wake-up for quit_, which is checked above
        if (const auto it = waiting_.find(id); it != waiting_.end()) {
          it->second->set_value(io_wake::ready);
          waiting_.erase(it);
        }
      }
    }
  }
  void close_fds() noexcept {
    if (epoll_fd_ >= 0) ::close(epoll_fd_);
    if (wake_fd_ >= 0) ::close(wake_fd_);
  }

  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::atomic<bool> quit_{false};
  // A plain std::mutex, held for a few instructions and never across a park: the fiber locks it
  // before it parks and after it wakes, maybe on another thread, in two separate scopes.
  std::mutex mutex_;
  std::unordered_map<std::uint64_t, fibers::promise<io_wake>*> waiting_;  // guarded by mutex_
  std::uint64_t next_id_ = 1;                                             // guarded by mutex_
  bool stopped_ = false;                                                  // guarded by mutex_
  std::thread thread_;
};
// [end-snippet]

/// True if some task waits on the service.
bool has_io(std::span<const task> tasks) {
  return std::any_of(tasks.begin(), tasks.end(), [](const task& t) { return t.is_io(); });
}

/// The stop, as fibers can wait for it: a fiber sleeps on `wake_` until its deadline or the stop,
/// or parks in `reactor`'s wait (io tasks). request() may come from any thread (a fiber, the
/// canceller's stop callback, the child's watcher thread); Boost.Fiber's mutex and condition
/// variable work across threads.
class stop_waker {
 public:
  explicit stop_waker(io_reactor* reactor = nullptr) : reactor_(reactor) {}
  void request() {
    {
      const std::lock_guard lock(mutex_);
      stopped_ = true;
    }
    wake_.notify_all();
    if (reactor_ != nullptr) reactor_->stop_all();  // and every request parked on its socket
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
  io_reactor* reactor_;
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
  io_reactor* reactor = nullptr;  // where the run has io tasks
  std::optional<std::chrono::milliseconds> task_timeout;

  [[nodiscard]] bool stopping() { return slots.stopping() || waker.requested(); }

  /// An io task's request, as straight-line code: each wait parks this fiber on the reactor until
  /// the socket is ready (the thread runs other fibers meanwhile). Throws io_error.
  io_wake request(const task& t, std::uint64_t& body) {
    const auto deadline =
        task_timeout ? run_clock::now() + *task_timeout : run_clock::time_point::max();
    io_exchange ex(t, /*blocking=*/false);
    for (auto w = ex.start(); w != io_exchange::want::done; w = ex.step()) {
      const io_wake woke =
          reactor->wait(ex.fd(), w == io_exchange::want::read ? EPOLLIN : EPOLLOUT, deadline);
      if (woke != io_wake::ready) return woke;  // ex closes the socket, no longer watched
    }
    body = ex.body_checksum();
    return io_wake::ready;
  }

  /// Task i as a fiber: its wait on Boost's timers, or its request on its socket (parked, the
  /// thread runs other fibers), then the CPU part on whichever thread the fiber is on by then.
  void run_task(std::size_t i) {
    const task& t = tasks[i];
    if (stopping()) {
      slots.fail(t.id, std::string(k_cancelled));
      return;
    }
    task_record r{.id = t.id, .start_ns = ns_since(origin)};
    try {
      std::uint64_t body = 0;
      io_wake woke = io_wake::ready;
      if (t.is_io()) {
        woke = request(t, body);
      } else if (t.wait_ns > 0 &&
                 !waker.sleep_until(origin + std::chrono::nanoseconds(r.start_ns + t.wait_ns))) {
        woke = io_wake::stopped;
      }
      if (woke == io_wake::timed_out) {  // given up at --task-timeout-ms
        fail_task(t.id, io_timeout_cause(t.id, *task_timeout));
        return;
      }
      if (woke == io_wake::stopped) {  // the stop came during the wait
        slots.fail(t.id, std::string(k_cancelled));
        return;
      }
      r.worker = current_worker();
      r.checksum = io_checksum(t, compute(t), body);
      r.end_ns = ns_since(origin);
      slots.complete(r);
    } catch (...) {  // a throw fails this task only, unless the run stops at the first error
      fail_task(t.id, describe_current_exception());
    }
  }

  void fail_task(std::uint32_t id, std::string cause) {
    slots.fail(id, std::move(cause));
    if (on_error == error_policy::stop_at_first) waker.request();
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
  const std::unique_ptr<io_reactor> reactor =
      has_io(tasks) ? std::make_unique<io_reactor>() : nullptr;
  stop_waker waker(reactor.get());
  fiber_run run{tasks, options.origin, options.on_error,    slots,
                waker, reactor.get(),  options.task_timeout};
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
    // Never freed: the watcher thread may still touch them when the child _exits (and the
    // reactor's thread, parked in epoll_wait, ends with the child).
    auto* reactor = has_io(tasks) ? new io_reactor : nullptr;
    auto* waker = new stop_waker(reactor);
    std::thread([waker, fd = channel.stop_fd()] {
      char byte = 0;
      ssize_t n = 0;
      while ((n = ::read(fd, &byte, 1)) < 0 && errno == EINTR) {
      }
      if (n == 1) waker->request();  // n == 0: the parent closed the pipe, the run is over
    }).detach();                     // the child's _exit ends it
    fiber_run run{tasks,  options.origin, options.on_error,    slots,
                  *waker, reactor,        options.task_timeout};
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
      .supports_io = true,
      .timeout_cancels_waits = true,
      .run = run_boost_fiber,
  };
  return e;
}

}  // namespace clab
