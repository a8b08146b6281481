// Running one task. Blocking executors call run_blocking(); asynchronous executors do the wait
// their own way (a timer, a parked fiber) and then call compute(). Either way the injected fault
// fires in compute(), so every executor meets it at the same point of the task.
#pragma once

#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <vector>

#include "workloads/run.hpp"
#include "workloads/task.hpp"

namespace clab {

/// Thrown by compute() for fault::throw_exception; names the task.
class task_error : public std::runtime_error {
 public:
  task_error(std::uint32_t id, const std::string& what) : std::runtime_error(what), id_(id) {}
  [[nodiscard]] std::uint32_t id() const { return id_; }

 private:
  std::uint32_t id_;
};

/// The CPU part: fires the task's injected fault (throw, abort, segfault or hang forever), then
/// runs the kernel. Returns the task's checksum.
[[nodiscard]] std::uint64_t compute(const task& t);

/// The wait part for blocking executors: the calling thread sleeps for t.wait_ns, or, for an io
/// task, makes its request on a blocking socket. Returns the reply body's checksum (0 for a
/// timer's wait), for io_checksum(). Throws io_error when the request fails.
[[nodiscard]] std::uint64_t blocking_wait(const task& t);

/// A whole task on the calling thread: wait, compute, and the record stamped against `origin`.
[[nodiscard]] task_record run_blocking(const task& t, run_clock::time_point origin, int worker);

/// "exception: <what>" for the exception in flight; call from a catch block.
[[nodiscard]] std::string describe_current_exception();

/// One result slot per task. Slot i is written only by the worker that runs task i and read only
/// after every worker has been joined; the join orders the writes before the reads, so no lock is
/// needed. Failures are rare and carry a string, so they go to one small list under a mutex
/// instead of a string per slot. Usage: result_slots slots(n); ...workers call run_into()...;
/// join; slots.collect(p).
class result_slots {
 public:
  /// n slots, honouring `options`' cancellation and error policy.
  explicit result_slots(std::size_t n, const run_options& options = {})
      : records_(n), done_(n, 0), stop_(options.stop), on_error_(options.on_error) {}

  /// run_blocking() for task t, on the calling worker; a thrown fault becomes t's failure. If
  /// the run has been stopped (cancelled, or a first error under stop_at_first), t does not start
  /// and is reported as cancelled.
  void run_into(const task& t, run_clock::time_point origin, int worker);

  /// True once the run should start no more tasks.
  [[nodiscard]] bool stopping() const {
    return stop_.stop_requested() || first_error_.stop_requested();
  }
  /// True once task `id` has completed (its record is in). Read it on the thread that runs the
  /// tasks (serial, a coroutine scheduler's), or after the joins: slots carry no lock.
  [[nodiscard]] bool completed(std::uint32_t id) const { return done_.at(id) != 0; }
  /// Stopped by the first task failure under stop_at_first (for executors whose waits can be
  /// woken; the caller's own cancellation is options.stop).
  [[nodiscard]] std::stop_token first_error_token() const noexcept {
    return first_error_.get_token();
  }
  void complete(const task_record& r);
  void fail(std::uint32_t id, std::string cause);
  /// A task's own failure (it threw): fail(), and under stop_at_first the run stops with it.
  void fail_error(std::uint32_t id, std::string cause);

  /// The result: a record per completed slot and every failure (empty slots are left out, for
  /// verification to report). Call after every worker has been joined.
  [[nodiscard]] run_result collect(int workers_used) &&;

 private:
  std::vector<task_record> records_;
  std::vector<std::uint8_t> done_;  // 1 once slot i holds a record
  std::mutex failed_mutex_;
  std::vector<task_failure> failed_;  // guarded by failed_mutex_
  std::stop_token stop_;              // the caller's cancellation
  std::stop_source first_error_;      // requested by the first failure under stop_at_first
  error_policy on_error_;
};

/// One stop for an executor whose waits can be woken (a loop timer, not a sleeping thread): it is
/// requested by the caller's cancellation and by the first failure under stop_at_first, so either
/// wakes every waiting task at once. Declare it after the result_slots it watches.
class run_stop {
 public:
  run_stop(const std::stop_token& cancel, const result_slots& slots)
      : on_cancel_(cancel, request{&source_}),
        on_first_error_(slots.first_error_token(), request{&source_}) {}
  [[nodiscard]] std::stop_token token() const noexcept { return source_.get_token(); }

 private:
  struct request {
    std::stop_source* source;
    void operator()() const noexcept { source->request_stop(); }
  };
  std::stop_source source_;
  std::stop_callback<request> on_cancel_;
  std::stop_callback<request> on_first_error_;
};

}  // namespace clab
