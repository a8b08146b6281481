// Lesson 04: a process pool. P worker processes, forked once, each fed task messages through its
// own pipe and answering through another; the parent hands the next task to whichever worker
// answers first (dynamic dispatch), replaces a worker that dies, and kills one that runs past the
// task timeout.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <span>

#include "workloads/process_io.hpp"
#include "workloads/run.hpp"

namespace clab {

/// Up to P worker processes, each forked once (by start()) and then running tasks until its task
/// pipe closes. Usage: process_pool pool(2); pool.start(0); pool.send(0, t, origin, {});
/// auto e = pool.next(); ... The destructor closes every task pipe and reaps every worker
/// (killing one still busy).
class process_pool {
 public:
  /// Room for `workers` workers; none is started yet.
  explicit process_pool(std::size_t workers) : size_(workers), workers_(workers) {}
  process_pool(const process_pool&) = delete;
  process_pool& operator=(const process_pool&) = delete;
  ~process_pool() { workers_.shut_down(); }

  [[nodiscard]] std::size_t size() const { return size_; }
  /// True if worker k's process is alive (it may have died or been killed since its last task).
  [[nodiscard]] bool alive(std::size_t k) const { return workers_.has_child(k); }
  [[nodiscard]] bool busy(std::size_t k) const { return workers_.busy(k); }
  /// Forks a worker into slot k: the first one, or a fresh one after the last one ended.
  void start(std::size_t k);
  /// Hands task t to idle worker k. False if the worker is gone (next() then reports its end).
  bool send(std::size_t k, const task& t, run_clock::time_point origin,
            std::optional<std::chrono::milliseconds> timeout);
  /// The next report, worker end, timeout or termination signal (see child_set::next()).
  [[nodiscard]] child_set::event next() { return workers_.next(); }
  [[nodiscard]] child_set& workers() { return workers_; }

 private:
  std::size_t size_;
  child_set workers_;
};

/// The pool executor: P = min(--workers, N) workers, dynamic dispatch in task order, a crashed
/// worker's task reported failed with its cause (not retried) and the worker replaced.
[[nodiscard]] run_result run_process_pool(std::span<const task> tasks, const run_options& options);

[[nodiscard]] const executor& process_pool_executor();  ///< name "prefork"

}  // namespace clab
