// Lesson 03c — a priority pool: the naive pool's one queue and one lock, ordered by priority
// instead of arrival. With priority = task length it is Graham's LPT rule (longest first), which
// keeps a long task from starting last and leaving one worker busy while the others idle.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <queue>
#include <thread>
#include <vector>

#include "lessons/03_thread_pool/stealing_pool.hpp"

namespace clab {

/// Usage: priority_pool pool(4); pool.submit(j, 10.0); pool.submit(k, 99.0);  // k runs first
/// Equal priorities run in submission order. The destructor runs what was submitted, then joins.
class priority_pool {
 public:
  explicit priority_pool(int workers);
  ~priority_pool();
  priority_pool(const priority_pool&) = delete;
  priority_pool& operator=(const priority_pool&) = delete;

  /// Queues `j`; the highest priority runs next.
  void submit(job j, double priority);

 private:
  /// Tells every worker to return once the queues are empty, and wakes the sleeping ones.
  void stop_workers();
  struct entry {
    double priority;
    std::uint64_t seq;  // submission order, to break ties first-come first-served
    job j;
    bool operator<(const entry& o) const {
      return priority != o.priority ? priority < o.priority : seq > o.seq;
    }
  };
  void work();

  std::mutex mutex_;
  std::condition_variable cv_;
  std::priority_queue<entry> queue_;  // guarded by mutex_
  std::uint64_t seq_ = 0;             // guarded by mutex_
  bool stopping_ = false;             // guarded by mutex_
  std::vector<std::jthread> workers_;
};

}  // namespace clab
