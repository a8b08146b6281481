#include "lessons/03_thread_pool/naive_pool.hpp"

#include "lessons/03_thread_pool/start_workers.hpp"

namespace clab {

naive_pool::naive_pool(int workers) {
  workers_ = start_workers(
      static_cast<std::size_t>(workers), [this](std::size_t) { work(); },
      [this] { stop_workers(); });
}

naive_pool::~naive_pool() {
  stop_workers();
  workers_.clear();  // joins; each worker leaves only once every queued job has run
}

void naive_pool::stop_workers() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
}

// [snippet:naive-worker]
void naive_pool::work() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and nothing left to run
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    job();  // outside the lock: the others can take the next task meanwhile
  }
}
// [end-snippet]

}  // namespace clab
