#include "lessons/03_thread_pool/naive_pool.hpp"

namespace clab {

naive_pool::naive_pool(int workers) {
  workers_.reserve(static_cast<std::size_t>(workers));
  try {
    for (int k = 0; k < workers; ++k) workers_.emplace_back([this] { work(); });
  } catch (...) {  // a thread did not start: stop the ones that did, or joining them never ends
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    workers_.clear();
    throw;
  }
}

naive_pool::~naive_pool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  workers_.clear();  // joins; each worker leaves only once the queue is empty
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
