#include "lessons/03_thread_pool/priority_pool.hpp"

namespace clab {

priority_pool::priority_pool(int workers) {
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

priority_pool::~priority_pool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  workers_.clear();
}

void priority_pool::submit(job j, double priority) {
  {
    std::lock_guard lock(mutex_);
    queue_.push({priority, seq_++, j});
  }
  cv_.notify_one();
}

void priority_pool::work() {
  for (;;) {
    job j;
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      j = queue_.top().j;
      queue_.pop();
    }
    j.fn(j.context, j.index);
  }
}

}  // namespace clab
