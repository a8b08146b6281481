// Lesson 03's pools as classes: results and exceptions through futures, destruction with pending
// work (everything submitted still runs), stealing that really moves work, priority order, and a
// wake-up stress that would hang (and time out) if a submit could be lost while workers sleep.
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "lessons/03_thread_pool/naive_pool.hpp"
#include "lessons/03_thread_pool/priority_pool.hpp"
#include "lessons/03_thread_pool/stealing_pool.hpp"

using namespace clab;
using namespace std::chrono_literals;

namespace {

/// A gate a job can wait at (with a deadline, so a broken pool fails instead of hanging).
class gate {
 public:
  void open() {
    {
      std::lock_guard lock(m_);
      open_ = true;
    }
    cv_.notify_all();
  }
  bool wait() {
    std::unique_lock lock(m_);
    return cv_.wait_for(lock, 10s, [this] { return open_; });
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool open_ = false;
};

void count_up(void* c, std::size_t) { static_cast<std::atomic<int>*>(c)->fetch_add(1); }

}  // namespace

TEST_CASE("naive pool: results and exceptions arrive through futures", "[03][pool][naive]") {
  naive_pool pool(3);
  std::vector<std::future<int>> fs;
  for (int i = 0; i < 100; ++i) fs.push_back(pool.submit([i] { return i * i; }));
  for (int i = 0; i < 100; ++i) CHECK(fs[static_cast<std::size_t>(i)].get() == i * i);
  auto bad = pool.submit([]() -> int { throw std::runtime_error("task 7 failed"); });
  CHECK_THROWS_WITH(bad.get(), "task 7 failed");
}

TEST_CASE("every pool runs all submitted work before its destructor returns", "[03][pool]") {
  std::atomic<int> ran{0};
  {
    naive_pool pool(2);
    for (int i = 0; i < 1000; ++i) (void)pool.submit([&ran] { ran.fetch_add(1); });
  }
  CHECK(ran == 1000);
  ran = 0;
  {
    stealing_pool pool(3);
    for (std::size_t i = 0; i < 5000; ++i) pool.submit({count_up, &ran, i});
  }
  CHECK(ran == 5000);
  ran = 0;
  {
    priority_pool pool(2);
    for (std::size_t i = 0; i < 1000; ++i)
      pool.submit({count_up, &ran, i}, static_cast<double>(i % 7));
  }
  CHECK(ran == 1000);
}

namespace {

struct steal_test {
  gate blocker;
  std::atomic<int> stolen{0};
  std::atomic<bool> released{false};
};

// Job 1 lands in worker 1's queue and blocks until jobs 3 and 5, queued behind it on the same
// worker, have run: only a steal by worker 0 can run them.
void steal_job(void* c, std::size_t i) {
  auto& t = *static_cast<steal_test*>(c);
  if (i == 1) {
    t.released = t.blocker.wait();
  } else if (i == 3 || i == 5) {
    if (t.stolen.fetch_add(1) == 1) t.blocker.open();
  }
}

}  // namespace

TEST_CASE("stealing pool: an idle worker takes work queued behind a busy one",
          "[03][pool][stealing]") {
  steal_test t;
  {
    stealing_pool pool(2);
    for (std::size_t i = 0; i < 6; ++i)
      pool.submit({steal_job, &t, i});  // round robin: odd → worker 1
  }
  CHECK(t.stolen == 2);
  CHECK(t.released);  // opened by the stolen jobs, not by the 10 s deadline
}

namespace {

struct order_test {
  gate start;
  std::mutex m;
  std::vector<std::size_t> order;  // guarded by m
};

void record_order(void* c, std::size_t i) {
  auto& t = *static_cast<order_test*>(c);
  // Catch2's assertions are not thread-safe: a worker records what it saw, the test thread checks.
  if (i == 0 && t.start.wait()) return;
  std::lock_guard lock(t.m);
  t.order.push_back(i);  // a timed-out gate shows up here as job 0
}

}  // namespace

TEST_CASE("priority pool: the highest priority runs first, ties in submission order",
          "[03][pool][priority]") {
  order_test t;
  {
    priority_pool pool(1);
    pool.submit({record_order, &t, 0}, 100);  // occupies the only worker while the rest queue up
    std::this_thread::sleep_for(20ms);        // let the worker take it before the others arrive
    pool.submit({record_order, &t, 1}, 1);
    pool.submit({record_order, &t, 2}, 5);
    pool.submit({record_order, &t, 3}, 3);
    pool.submit({record_order, &t, 4}, 5);
    t.start.open();
  }
  CHECK(t.order == std::vector<std::size_t>{2, 4, 3, 1});
}

TEST_CASE("no lost wake-up: one job at a time into a sleeping pool, many times",
          "[03][pool][stealing]") {
  // Each round waits for its one job; a submit lost between a worker's check and its sleep would
  // leave the round waiting forever, which the deadline turns into a failure.
  stealing_pool pool(2);
  for (int round = 0; round < 2000; ++round) {
    std::atomic<int> ran{0};
    pool.submit({count_up, &ran, 0});
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (ran.load() == 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::yield();
    REQUIRE(ran.load() == 1);
  }
}
