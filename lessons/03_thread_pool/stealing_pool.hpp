// Lesson 03b — the work-stealing pool: each worker owns a queue, takes from its front, and when it
// runs dry steals from the back of another's. A job is a plain function pointer and two words, so
// submitting allocates nothing; completion is counted by the caller (a latch), not by a future per
// task. Look for: the one lock a submit takes is the target queue's, and workers sleep only when
// every queue is empty.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace clab {

/// What a worker runs: fn(context, index). Trivially copyable, no allocation.
struct job {
  void (*fn)(void* context, std::size_t index) = nullptr;
  void* context = nullptr;
  std::size_t index = 0;
};

/// Usage:
///   stealing_pool pool(4);
///   std::latch done(n);
///   for (i < n) pool.submit({run_one, &ctx, i});   // run_one counts `done` down
///   done.wait();                                   // gather: wait for all
/// The destructor runs every job already submitted, then joins the workers.
class stealing_pool {
 public:
  explicit stealing_pool(int workers);
  ~stealing_pool();
  stealing_pool(const stealing_pool&) = delete;
  stealing_pool& operator=(const stealing_pool&) = delete;

  /// Queues `j` on the next worker's queue, round robin, and wakes a sleeping worker if any.
  void submit(job j);

  [[nodiscard]] int size() const { return static_cast<int>(queues_.size()); }

 private:
  /// Tells every worker to return once the queues are empty, and wakes the sleeping ones.
  void stop_workers();
  // One cache line each, so that two workers locking neighbouring queues do not false-share.
  struct alignas(64) queue {
    std::mutex mutex;
    std::deque<job> jobs;  // guarded by mutex
  };

  void work(std::size_t self);
  bool take(std::size_t self, job& out);

  std::vector<std::unique_ptr<queue>> queues_;
  std::atomic<std::size_t> next_{0};     // round-robin cursor for submit
  std::atomic<std::size_t> pending_{0};  // jobs queued and not yet taken
  std::atomic<int> sleepers_{0};         // workers inside the sleep below
  std::atomic<bool> stopping_{false};
  std::mutex sleep_mutex_;  // only for the condition variable's wait and notify
  std::condition_variable wake_;
  std::vector<std::jthread> workers_;  // last: started after the members above exist
};

}  // namespace clab
