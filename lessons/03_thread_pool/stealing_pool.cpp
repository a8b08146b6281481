#include "lessons/03_thread_pool/stealing_pool.hpp"

#include "lessons/03_thread_pool/start_workers.hpp"

namespace clab {

stealing_pool::stealing_pool(int workers) {
  for (int k = 0; k < workers; ++k) queues_.push_back(std::make_unique<queue>());
  workers_ = start_workers(
      static_cast<std::size_t>(workers), [this](std::size_t k) { work(k); },
      [this] { stop_workers(); });
}

stealing_pool::~stealing_pool() {
  stop_workers();
  workers_.clear();  // joins; each worker leaves only once every queued job has run
}

void stealing_pool::stop_workers() {
  {
    std::lock_guard lock(sleep_mutex_);
    stopping_.store(true);
  }
  wake_.notify_all();
}

// [snippet:stealing-submit]
void stealing_pool::submit(job j) {
  queue& q = *queues_[next_.fetch_add(1, std::memory_order_relaxed) % queues_.size()];
  {
    std::lock_guard lock(q.mutex);
    // Counted under the queue's lock, before any worker can take the job (taking decrements
    // under the same lock), so pending_ never dips below the jobs really queued.
    pending_.fetch_add(1);
    q.jobs.push_back(j);
  }
  // Sequentially consistent pair with the sleeper's sleepers_++ then pending_ check: either this
  // submit sees the sleeper and wakes it, or the sleeper sees this job and does not sleep.
  if (sleepers_.load() > 0) {
    std::lock_guard lock(sleep_mutex_);  // a sleeper between its check and its wait holds this
    wake_.notify_one();
  }
}
// [end-snippet]

// [snippet:stealing-take]
bool stealing_pool::take(std::size_t self, job& out) {
  const std::size_t n = queues_.size();
  for (std::size_t i = 0; i < n; ++i) {
    queue& q = *queues_[(self + i) % n];  // i = 0: my own queue, then the others in turn
    std::lock_guard lock(q.mutex);
    if (q.jobs.empty()) continue;
    if (i == 0) {  // my own work: oldest first
      out = q.jobs.front();
      q.jobs.pop_front();
    } else {  // stealing: from the other end, away from where the owner takes
      out = q.jobs.back();
      q.jobs.pop_back();
    }
    pending_.fetch_sub(1, std::memory_order_relaxed);
    return true;
  }
  return false;
}
// [end-snippet]

void stealing_pool::work(std::size_t self) {
  for (;;) {
    job j;
    if (take(self, j)) {
      j.fn(j.context, j.index);
      continue;
    }
    std::unique_lock lock(sleep_mutex_);
    sleepers_.fetch_add(1);
    wake_.wait(lock, [this] { return pending_.load() > 0 || stopping_.load(); });
    sleepers_.fetch_sub(1);
    if (pending_.load() == 0 && stopping_.load()) return;
  }
}

}  // namespace clab
