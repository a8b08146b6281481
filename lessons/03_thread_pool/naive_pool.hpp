// Lesson 03a — the naive pool: P threads, one queue, one mutex, one condition variable, and a
// std::future per task. Correct, and the shape most first pools have. Look for what each task costs
// beyond its work: a heap-allocated packaged_task, a future's shared state, and every worker
// contending for the one mutex.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace clab {

/// Usage:
///   naive_pool pool(4);
///   std::future<int> f = pool.submit([] { return 42; });
///   f.get();  // 42, or rethrows what the task threw
/// The destructor runs every task already submitted, then joins the workers.
class naive_pool {
 public:
  explicit naive_pool(int workers);
  ~naive_pool();
  naive_pool(const naive_pool&) = delete;
  naive_pool& operator=(const naive_pool&) = delete;

  /// Queues `f`; the future holds its result or its exception.
  template <typename F>
  [[nodiscard]] std::future<std::invoke_result_t<F>> submit(F f) {
    // packaged_task is move-only and std::function must be copyable: share it. Per task: one
    // allocation for the packaged_task with its control block (make_shared), one for the state
    // the future reads, and one inside std::function, which keeps a lambda holding a shared_ptr
    // on the heap (it stores only trivially copyable functors of 16 bytes or less in place).
    auto job = std::make_shared<std::packaged_task<std::invoke_result_t<F>()>>(std::move(f));
    std::future<std::invoke_result_t<F>> result = job->get_future();
    {
      std::lock_guard lock(mutex_);
      queue_.emplace_back([job] { (*job)(); });
    }
    cv_.notify_one();  // after unlocking: the woken worker need not wait for the lock again
    return result;
  }

 private:
  /// Tells every worker to return once the queues are empty, and wakes the sleeping ones.
  void stop_workers();
  void work();

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;  // guarded by mutex_
  bool stopping_ = false;                    // guarded by mutex_
  std::vector<std::jthread> workers_;        // last: started after the members above exist
};

}  // namespace clab
