#include "lessons/03_thread_pool/priority_pool.hpp"

#include "lessons/03_thread_pool/start_workers.hpp"

namespace clab {

priority_pool::priority_pool(int workers) {
  workers_ = start_workers(
      static_cast<std::size_t>(workers), [this](std::size_t) { work(); },
      [this] { stop_workers(); });
}

priority_pool::~priority_pool() {
  stop_workers();
  workers_.clear();  // joins; each worker leaves only once every queued job has run
}

void priority_pool::stop_workers() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
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
