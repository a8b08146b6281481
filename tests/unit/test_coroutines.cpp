// Lesson 07's engine: task<T> (results, exceptions, lazy start, destruction unfinished), the frame
// allocator's counters, the symmetric-transfer trap (1M-step synchronous chains, both shapes, in
// every preset), the scheduler's sleeps, yields and priorities, cancellation through stop tokens,
// when_all under both error policies and a million sleeping coroutines. No test asserts an
// absolute time, only orders and ratios with generous bounds; every sleep is finite.
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "lessons/07_coroutines/scheduler.hpp"
#include "lessons/07_coroutines/task.hpp"
#include "lessons/07_coroutines/when_all.hpp"
#include "support/sanitized.hpp"

using namespace clab;
using namespace clab::coro;
using namespace std::chrono_literals;

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

/// Resident set size in bytes (/proc/self/statm).
long resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  long size = 0, resident = 0;
  statm >> size >> resident;
  return resident * ::sysconf(_SC_PAGESIZE);
}

/// Counts its live instances: a task's parameters and locals must be destroyed with its frame.
struct counted {
  static inline int live = 0;
  counted() { ++live; }
  counted(const counted&) { ++live; }
  counted(counted&&) noexcept { ++live; }
  counted& operator=(const counted&) = default;
  counted& operator=(counted&&) = default;
  ~counted() { --live; }
};

task<int> leaf(int i) { co_return i; }

task<void> bump(int& n) {
  ++n;
  co_return;
}

task<int> add_two() {
  const int a = co_await leaf(20);
  const int b = co_await leaf(22);
  co_return a + b;
}

task<int> fails() {
  co_await leaf(0);
  throw std::runtime_error("boom");
}

// The trap's two shapes. A loop awaiting a million children that never suspend...
task<std::int64_t> sum_loop(int n) {
  std::int64_t sum = 0;
  for (int i = 0; i < n; ++i) sum += co_await leaf(i);
  co_return sum;
}
// ...and a chain a million deep, each awaiting the next, the last returning at once. The first
// and the last link note where the machine stack is when they run: it must not have moved far.
const char* g_stack_at_top = nullptr;
const char* g_stack_at_bottom = nullptr;
constexpr int k_chain = 1'000'000;
task<std::int64_t> chain(int depth) {
  if (depth == k_chain) g_stack_at_top = static_cast<const char*>(__builtin_frame_address(0));
  if (depth == 0) {
    g_stack_at_bottom = static_cast<const char*>(__builtin_frame_address(0));
    co_return 0;
  }
  co_return 1 + co_await chain(depth - 1);
}
/// How far the stack moved between the chain's first link and its last, in bytes.
long chain_stack_drift() {
  return std::labs(static_cast<long>(g_stack_at_top - g_stack_at_bottom));
}

task<void> sleeper(std::chrono::nanoseconds d, std::vector<int>& woke, int id) {
  co_await sleep_for(d);
  woke.push_back(id);
}

task<int> sleep_then(std::chrono::nanoseconds d, int value) {
  co_await sleep_for(d);
  co_return value;
}

task<int> stoppable(std::chrono::nanoseconds d, std::stop_token token, int value, int& cancelled) {
  try {
    co_await sleep_for(d, std::move(token));
  } catch (const task_cancelled&) {
    ++cancelled;
    throw;
  }
  co_return value;
}

task<int> fail_after(std::chrono::nanoseconds d) {
  co_await sleep_for(d);
  throw std::runtime_error("first failure");
}

}  // namespace

TEST_CASE("a task returns its result to the awaiter, void tasks run too", "[07][task]") {
  CHECK(run_sync(add_two()) == 42);
  int n = 0;
  run_sync(bump(n));
  CHECK(n == 1);
  CHECK(this_thread_frame_stats().live() == 0);
}

TEST_CASE("a task's exception reaches the awaiter", "[07][task]") {
  auto outer = []() -> task<std::string> {
    try {
      co_await fails();
    } catch (const std::runtime_error& e) {
      co_return std::string("caught ") + e.what();
    }
    co_return "not thrown";
  };
  CHECK(run_sync(outer()) == "caught boom");
  CHECK_THROWS_WITH(run_sync(fails()), "boom");
  CHECK(this_thread_frame_stats().live() == 0);
}

TEST_CASE("a task starts lazily, destroying it unstarted frees its frame and parameters",
          "[07][task]") {
  reset_frame_stats();
  int runs = 0;
  auto body = [](counted, int& r) -> task<void> {
    ++r;
    co_return;
  };
  {
    task<void> t = body(counted{}, runs);
    CHECK(t.valid());
    CHECK_FALSE(t.done());
    CHECK(counted::live == 1);  // the parameter's copy, in the frame
    CHECK(this_thread_frame_stats().live() == 1);
  }
  CHECK(runs == 0);  // never ran
  CHECK(counted::live == 0);
  CHECK(this_thread_frame_stats().live() == 0);
  task<void> moved = body(counted{}, runs);
  task<void> other = std::move(moved);
  CHECK_FALSE(moved.valid());  // NOLINT(bugprone-use-after-move): checking the moved-from state
  run_sync(std::move(other));
  CHECK(runs == 1);
  CHECK(counted::live == 0);
}

TEST_CASE("frames come from our allocator, which reports the size the compiler chose",
          "[07][frames]") {
  reset_frame_stats();
  { auto t = leaf(1); }
  const std::size_t leaf_bytes = this_thread_frame_stats().last_bytes;
  { auto t = add_two(); }
  const std::size_t two_wait_bytes = this_thread_frame_stats().last_bytes;
  INFO("leaf frame " << leaf_bytes << " B, two-wait frame " << two_wait_bytes << " B");
  CHECK(leaf_bytes > 0);
  CHECK(two_wait_bytes >= leaf_bytes);  // it holds a leaf's result and the awaiter besides
  WARN("frame sizes: leaf " << leaf_bytes << " B, a task awaiting two leaves " << two_wait_bytes
                            << " B");
  // The second frame of the same size came from the free list, not the heap.
  const auto before = this_thread_frame_stats().from_cache;
  { auto t = leaf(2); }
  CHECK(this_thread_frame_stats().from_cache == before + 1);
  CHECK(this_thread_frame_stats().live() == 0);
}

TEST_CASE("frames freed on another thread than they were made on", "[07][frames]") {
  std::vector<task<int>> made;
  for (int i = 0; i < 1000; ++i) made.push_back(leaf(i));
  std::int64_t freed_there = 0;
  std::thread other([&] {
    made.clear();  // destroyed here: the blocks join this thread's lists
    freed_there = static_cast<std::int64_t>(this_thread_frame_stats().deallocations);
  });
  other.join();
  CHECK(freed_there == 1000);
  // Counted per thread: here 1000 allocations whose deallocations the other thread counted.
  CHECK(this_thread_frame_stats().live() == 1000);
  reset_frame_stats();
}

TEST_CASE("frames of 8-byte classes interleaved with 16-aligned ones keep every alignment",
          "[07][frames]") {
  // A frame whose size is a multiple of 16 may hold a 16-aligned local (it starts at a multiple of
  // 16); the others (24, 40, 56, ... bytes) need only 8. Both kinds, carved in turns.
  struct alignas(16) wide {
    unsigned char bytes[16];
  };
  auto aligned = []() -> task<std::uintptr_t> {
    wide w{};
    w.bytes[0] = 1;
    co_await leaf(0);
    co_return reinterpret_cast<std::uintptr_t>(&w) % 16 + (w.bytes[0] - 1U);
  };
  std::vector<task<int>> small;
  std::vector<task<std::uintptr_t>> wides;
  for (int i = 0; i < 300; ++i) {
    small.push_back(leaf(i));
    wides.push_back(aligned());
  }
  for (auto& t : small) CHECK(reinterpret_cast<std::uintptr_t>(t.handle().address()) % 8 == 0);
  for (auto& t : wides) CHECK(run_sync(std::move(t)) == 0);
  small.clear();
  CHECK(this_thread_frame_stats().live() == 0);
}

TEST_CASE("a task's exception lives outside its frame until the frame goes", "[07][task]") {
  // Ended with an exception nobody took: destroying the task frees the boxed exception too (asan
  // sees a leak otherwise); a task that returned has none.
  reset_frame_stats();
  {
    task<int> t = fails();
    coro::detail::resume_from_outside(t.handle());
    REQUIRE(t.done());
    CHECK(t.handle().promise().error() != nullptr);
  }
  task<int> ok = leaf(3);
  coro::detail::resume_from_outside(ok.handle());
  CHECK(ok.handle().promise().error() == nullptr);
  CHECK(this_thread_frame_stats().live() == 1);
}

TEST_CASE("the trap: a 1M-step synchronous chain runs in constant stack, both shapes",
          "[07][trap]") {
  // Without the trampoline (task.hpp) these overflow the stack at -O0 and under sanitizers.
  INFO("trampoline: " << CLAB_CORO_TRAMPOLINE);
  CHECK(run_sync(sum_loop(k_chain)) == std::int64_t{k_chain} * (k_chain - 1) / 2);
  CHECK(run_sync(chain(k_chain)) == k_chain);
  // A million nested resumes would be megabytes apart; with tail calls or the trampoline the
  // millionth link runs where the first did, give or take a few frames of the driver.
  CHECK(chain_stack_drift() < 64 * 1024);
  CHECK(this_thread_frame_stats().live() == 0);
}

TEST_CASE("the trap on the scheduler: the same chains inside spawned tasks", "[07][trap]") {
  event_loop loop;
  coro_scheduler sched(loop);
  auto a = sched.spawn(sum_loop(k_chain));
  auto b = sched.spawn(chain(k_chain));
  sched.run();
  CHECK(a.join() == std::int64_t{k_chain} * (k_chain - 1) / 2);
  CHECK(b.join() == k_chain);
  CHECK(chain_stack_drift() < 64 * 1024);
  CHECK(sched.live() == 0);
}

TEST_CASE("spawned tasks deliver results and exceptions through their handles", "[07][sched]") {
  event_loop loop;
  coro_scheduler sched(loop);
  auto good = sched.spawn(sleep_then(2ms, 7), {.label = 3});
  auto bad = sched.spawn(fail_after(1ms));
  CHECK(good.label() == 3);
  CHECK_THROWS_AS(good.join(), std::logic_error);  // not finished: run() first
  CHECK(sched.live() == 2);
  sched.run();
  CHECK(good.done());
  CHECK(good.join() == 7);
  CHECK_THROWS_AS(good.join(), std::logic_error);  // once only
  CHECK_THROWS_WITH(bad.join(), "first failure");
  CHECK(sched.live() == 0);
  CHECK(this_thread_frame_stats().live() == 0);
}

TEST_CASE("an exception nobody takes is rethrown by run(), after the others finished",
          "[07][sched]") {
  event_loop loop;
  coro_scheduler sched(loop);
  sched.spawn(fail_after(1ms)).detach();
  auto slow = sched.spawn(sleep_then(5ms, 1));
  CHECK_THROWS_WITH(sched.run(), "first failure");
  CHECK(slow.join() == 1);
}

TEST_CASE("yield lets the other ready coroutines run, FIFO", "[07][sched]") {
  event_loop loop;
  coro_scheduler sched(loop);
  std::vector<std::string> log;
  auto body = [](std::vector<std::string>& out, std::string name) -> task<void> {
    for (int step = 0; step < 3; ++step) {
      out.push_back(name + std::to_string(step));
      co_await yield();
    }
  };
  for (const char* name : {"a", "b", "c"}) sched.spawn(body(log, name)).detach();
  sched.run();
  CHECK(log == std::vector<std::string>{"a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"});
}

TEST_CASE("a priority ready queue runs the larger key first, equal keys FIFO", "[07][priority]") {
  event_loop loop;
  std::vector<int> order;
  auto body = [](std::vector<int>& out, int id) -> task<void> {
    out.push_back(id);
    co_await yield();  // back into the queue with the same key
    out.push_back(id + 100);
  };
  SECTION("priority") {
    coro_scheduler sched(loop, ready_order::priority);
    const int keys[] = {1, 5, 3, 5};
    for (int i = 0; i < 4; ++i) sched.spawn(body(order, i), {.priority = keys[i]}).detach();
    sched.run();
    // Keys 5 (ids 1, 3 in spawn order), 3 (id 2), 1 (id 0); a yield requeues behind equal keys.
    CHECK(order == std::vector<int>{1, 3, 101, 103, 2, 102, 0, 100});
  }
  SECTION("fifo ignores the keys") {
    coro_scheduler sched(loop);
    for (int i = 0; i < 3; ++i) sched.spawn(body(order, i), {.priority = i}).detach();
    sched.run();
    CHECK(order == std::vector<int>{0, 1, 2, 100, 101, 102});
  }
}

TEST_CASE("sleepers wake in deadline order and their sleeps overlap", "[07][sleep]") {
  event_loop loop;
  coro_scheduler sched(loop);
  std::vector<int> woke;
  // Spawned in reverse deadline order: each sleeps (8 - i) × 2 ms.
  for (int i = 0; i < 8; ++i) sched.spawn(sleeper((8 - i) * 2ms, woke, i)).detach();
  sched.run();
  CHECK(woke == std::vector<int>{7, 6, 5, 4, 3, 2, 1, 0});

  // 8 sleeps of 20 ms: serially 160 ms, overlapped about one sleep.
  woke.clear();
  const auto t0 = clock_type::now();
  for (int i = 0; i < 8; ++i) sched.spawn(sleeper(20ms, woke, i)).detach();
  sched.run();
  const double elapsed = seconds_since(t0);
  CHECK(woke.size() == 8);
  CHECK(elapsed >= 0.020);  // nobody woke early
  CHECK(elapsed < (testing::k_sanitized ? 7 : 4) * 0.020);
}

TEST_CASE("destroying unfinished tasks frees their frames, their timers never fire",
          "[07][destroy]") {
  event_loop loop;
  counted::live = 0;
  reset_frame_stats();
  {
    coro_scheduler sched(loop);
    // A sleeper, a parent awaiting a sleeping child, and a when_all of sleepers: all asleep for
    // 60 s when the loop is stopped after 5 ms.
    auto lone = [](counted) -> task<void> { co_await sleep_for(60s); };
    auto parent = [](counted c) -> task<int> {
      auto child = [](counted) -> task<int> {
        co_await sleep_for(60s);
        co_return 1;
      };
      co_return co_await child(c);
    };
    auto group = [](counted c) -> task<void> {
      std::vector<task<int>> kids;
      for (int i = 0; i < 3; ++i) kids.push_back(sleep_then(60s, i));
      (void)c;
      co_await when_all(std::move(kids));
    };
    auto h1 = sched.spawn(lone(counted{}));
    auto h2 = sched.spawn(parent(counted{}));
    auto h3 = sched.spawn(group(counted{}));
    loop.call_later(5ms, [&loop] { loop.stop(); });
    sched.run();
    CHECK(sched.live() == 3);
    CHECK(sched.sleeping() == 5);       // lone, the child, three when_all children...
    CHECK(loop.pending_timers() == 1);  // ...on the scheduler's one loop timer
    // lone's, parent's, group's, the child's, and the argument the parent passed it: that one lives
    // until the end of the full expression `co_await child(c)`, which is suspended.
    CHECK(counted::live == 5);
    CHECK_FALSE(h1.done());
    h1.detach();  // h2 and h3 are destroyed after the scheduler: a handle may not outlive it,
    h2.detach();  // so let go here
    h3.detach();
  }
  CHECK(counted::live == 0);
  CHECK(this_thread_frame_stats().live() == 0);
  CHECK(loop.pending_timers() == 0);  // the sleep heap's timer went with the scheduler
  loop.run();                         // returns at once: nothing may fire into a destroyed frame
}

TEST_CASE("a stop request wakes a sleeper at once, from another thread", "[07][cancel]") {
  event_loop loop;
  coro_scheduler sched(loop);
  std::stop_source stop;
  std::atomic<bool> parked{false};
  int cancelled = 0;
  auto body = [](std::stop_token tok, std::atomic<bool>& p, int& c) -> task<int> {
    p.store(true);
    co_return co_await stoppable(30s, std::move(tok), 1, c);
  };
  auto h = sched.spawn(body(stop.get_token(), parked, cancelled));
  std::thread requester([&] {
    while (!parked.load()) std::this_thread::sleep_for(1ms);
    std::this_thread::sleep_for(20ms);  // let it park on the timer
    stop.request_stop();
  });
  const auto t0 = clock_type::now();
  sched.run();
  const double elapsed = seconds_since(t0);
  requester.join();
  CHECK_THROWS_AS(h.join(), task_cancelled);
  CHECK(cancelled == 1);
  CHECK(elapsed < 30.0 / 6);  // woke long before its 30 s deadline
  CHECK(loop.pending_timers() == 0);
}

TEST_CASE("a stop request does not interrupt a CPU part, the next sleep ends cancelled",
          "[07][cancel]") {
  event_loop loop;
  coro_scheduler sched(loop);
  std::stop_source stop;
  std::atomic<bool> started{false};
  std::atomic<std::int64_t> work_done{0};
  int cancelled = 0;
  auto body = [](std::stop_token tok, std::atomic<bool>& s, std::atomic<std::int64_t>& done,
                 int& c) -> task<int> {
    s.store(true);
    // The CPU part: it sees the stop arrive, and goes on to the end of its work all the same.
    while (!tok.stop_requested()) std::this_thread::yield();
    for (int i = 0; i < 1000; ++i) done.fetch_add(1, std::memory_order_relaxed);
    co_return co_await stoppable(30s, std::move(tok), 1, c);  // already stopped: throws at once
  };
  auto h = sched.spawn(body(stop.get_token(), started, work_done, cancelled));
  std::thread requester([&] {
    while (!started.load()) std::this_thread::sleep_for(1ms);
    stop.request_stop();
  });
  const auto t0 = clock_type::now();
  sched.run();
  const double elapsed = seconds_since(t0);
  requester.join();
  CHECK(work_done.load() == 1000);
  CHECK_THROWS_AS(h.join(), task_cancelled);
  CHECK(cancelled == 1);
  CHECK(elapsed < 30.0 / 6);
}

TEST_CASE("a stop requested on the loop thread wakes every sleeper on the token", "[07][cancel]") {
  event_loop loop;
  coro_scheduler sched(loop);
  std::stop_source stop;
  int cancelled = 0;
  std::vector<coro_handle<int>> hs;
  for (int i = 0; i < 5; ++i)
    hs.push_back(sched.spawn(stoppable(30s, stop.get_token(), i, cancelled)));
  auto unrelated = sched.spawn(sleep_then(20ms, 9));
  loop.call_later(10ms, [&stop] { stop.request_stop(); });  // a loop callback, not a coroutine
  const auto t0 = clock_type::now();
  sched.run();
  const double elapsed = seconds_since(t0);
  CHECK(cancelled == 5);
  for (auto& h : hs) CHECK_THROWS_AS(h.join(), task_cancelled);
  CHECK(unrelated.join() == 9);  // a sleep without the token is not touched
  CHECK(elapsed < 30.0 / 6);
}

TEST_CASE("when_all (all): outcomes in order, errors reported, children overlap",
          "[07][when_all]") {
  event_loop loop;
  coro_scheduler sched(loop);
  auto parent = []() -> task<std::vector<outcome<int>>> {
    std::vector<task<int>> kids;
    // Child i sleeps (6 - i) × 20 ms: they end in reverse order, the results stay in order.
    for (int i = 0; i < 6; ++i) {
      kids.push_back(i == 2 ? fail_after(5ms) : sleep_then((6 - i) * 20ms, i * 10));
    }
    co_return co_await when_all(std::move(kids), error_policy::all);
  };
  const auto t0 = clock_type::now();
  auto h = sched.spawn(parent());
  sched.run();
  const double elapsed = seconds_since(t0);
  auto got = h.join();
  REQUIRE(got.size() == 6);
  for (int i = 0; i < 6; ++i) {
    if (i == 2) {
      CHECK_FALSE(got[2].has_value());
      CHECK_THROWS_WITH(got[2].value(), "first failure");
    } else {
      CHECK(got[static_cast<std::size_t>(i)].value() == i * 10);
    }
  }
  // Serially 345 ms of sleeps; concurrently about the longest, 120 ms.
  CHECK(elapsed >= 0.120);
  CHECK(elapsed < (testing::k_sanitized ? 2.5 : 2.0) * 0.120);
  CHECK(this_thread_frame_stats().live() == 0);
}

TEST_CASE("when_all (first): the first error cancels the sleeping rest at once, then is rethrown",
          "[07][when_all]") {
  event_loop loop;
  coro_scheduler sched(loop);
  int cancelled = 0;
  auto parent = [](int& c) -> task<int> {
    std::stop_source stop;
    std::vector<task<int>> kids;
    for (int i = 0; i < 4; ++i) kids.push_back(stoppable(30s, stop.get_token(), i, c));
    kids.push_back(fail_after(10ms));
    try {
      co_await when_all(std::move(kids), error_policy::first, stop);
    } catch (const std::runtime_error& e) {
      // Every child has ended by now: the four sleepers were cancelled, not abandoned.
      co_return std::string(e.what()) == "first failure" ? c : -1;
    }
    co_return -2;
  };
  const auto t0 = clock_type::now();
  auto h = sched.spawn(parent(cancelled));
  sched.run();
  const double elapsed = seconds_since(t0);
  CHECK(h.join() == 4);
  CHECK(elapsed < 30.0 / 6);  // far less than the 30 s sleeps
  CHECK(loop.pending_timers() == 0);
  CHECK(this_thread_frame_stats().live() == 0);
}

TEST_CASE("when_all of void tasks, and of none", "[07][when_all]") {
  event_loop loop;
  coro_scheduler sched(loop);
  std::vector<int> woke;
  auto parent = [](std::vector<int>& w) -> task<std::size_t> {
    std::vector<task<void>> kids;
    for (int i = 0; i < 3; ++i) kids.push_back(sleeper((3 - i) * 1ms, w, i));
    auto got = co_await when_all(std::move(kids));
    auto none = co_await when_all(std::vector<task<void>>{});
    co_return got.size() + none.size();
  };
  auto h = sched.spawn(parent(woke));
  sched.run();
  CHECK(h.join() == 3);
  CHECK(woke == std::vector<int>{2, 1, 0});
}

namespace {
// Skynet: each task sums 10 children over its tenth of [num, num + size); a leaf returns num.
task<std::int64_t> skynet(std::int64_t num, std::int64_t size) {
  if (size == 1) co_return num;
  std::vector<task<std::int64_t>> kids;
  kids.reserve(10);
  const std::int64_t part = size / 10;
  for (std::int64_t i = 0; i < 10; ++i) kids.push_back(skynet(num + i * part, part));
  std::int64_t sum = 0;
  for (auto& o : co_await when_all(std::move(kids))) sum += o.value();
  co_return sum;
}
}  // namespace

TEST_CASE("skynet through when_all: the sum checks, depth-first keeps few frames alive",
          "[07][when_all]") {
  const std::int64_t leaves = testing::k_sanitized ? 100'000 : 1'000'000;
  event_loop loop;
  coro_scheduler sched(loop);
  reset_frame_stats();
  auto h = sched.spawn(skynet(0, leaves));
  sched.run();
  CHECK(h.join() == leaves * (leaves - 1) / 2);
  CHECK(this_thread_frame_stats().live() == 0);
  // when_all's children go to the front of the ready queue, so the tree is walked depth-first:
  // about depth × (10 children + a when_all) frames at once. Breadth-first would hold them all.
  const auto peak = this_thread_frame_stats().peak_live;
  INFO("frames alive at once: " << peak);
  CHECK(peak < 1000);
  CHECK(this_thread_frame_stats().allocations > static_cast<std::uint64_t>(leaves));
}

TEST_CASE("a million sleeping coroutines all complete", "[07][sleep][million]") {
  // 1M in every preset: a sleeping coroutine costs its frame, a 48-byte slot of the scheduler's
  // slab (spawn_detached: no join state) and a 16-byte entry of the sleep heap.
  constexpr int k_sleepers = 1'000'000;
  event_loop loop;
  coro_scheduler sched(loop);
  int done = 0;
  auto body = [](int& d) -> task<void> {
    co_await sleep_for(50ms);
    ++d;
  };
  const long rss0 = resident_bytes();
  long rss_peak = 0;
  for (int i = 0; i < k_sleepers; ++i) sched.spawn_detached(body(done));
  const std::size_t frame_bytes = this_thread_frame_stats().last_bytes;
  // Once all are asleep (the first batch has run them all), sample the resident set.
  loop.call_later(1ms, [&] { rss_peak = resident_bytes(); });
  sched.run();
  CHECK(done == k_sleepers);
  CHECK(sched.live() == 0);
  CHECK(this_thread_frame_stats().live() == 0);
  const double per = static_cast<double>(rss_peak - rss0) / k_sleepers;
  WARN("1M sleeping coroutines: about " << per << " B resident each (a frame of " << frame_bytes
                                        << " B, its slab slot, its sleep heap entry)");
}

TEST_CASE("spawn_detached: no handle, and an exception it ends with is rethrown by run()",
          "[07][sched][detached]") {
  event_loop loop;
  coro_scheduler sched(loop);
  int n = 0;
  sched.spawn_detached(bump(n), {.label = 5});
  sched.spawn_detached(fail_after(1ms));
  auto slow = sched.spawn(sleep_then(5ms, 1));
  CHECK(sched.live() == 3);
  CHECK_THROWS_WITH(sched.run(), "first failure");  // once the loop is idle: slow has finished
  CHECK(n == 1);
  CHECK(slow.join() == 1);
  CHECK(sched.live() == 0);
  CHECK_THROWS_AS(sched.spawn_detached(task<void>{}), std::invalid_argument);
  // The slab's slots are reused: a second round allocates no more of them (nothing to see but that
  // it runs; asan checks the rest).
  for (int i = 0; i < 3; ++i) sched.spawn_detached(bump(n));
  sched.run();
  CHECK(n == 4);
  CHECK(this_thread_frame_stats().live() == 0);
}

TEST_CASE("detached units with and without options: keys and labels kept, none leaks",
          "[07][sched][detached]") {
  event_loop loop;
  std::vector<int> order;
  auto body = [](std::vector<int>& out, int id) -> task<void> {
    out.push_back(id);
    co_await yield();
    out.push_back(id + 100);
  };
  {
    coro_scheduler sched(loop, ready_order::priority);
    sched.spawn_detached(body(order, 0));  // the scheduler's shared info: key 0
    sched.spawn_detached(body(order, 1), {.label = 7, .priority = 2});
    sched.spawn_detached(body(order, 2), {.label = 8});
    sched.spawn_detached(body(order, 3), {.priority = 9});
    sched.run();
    CHECK(order == std::vector<int>{3, 103, 1, 101, 0, 2, 100, 102});
    // Left asleep at the scheduler's end, with their own infos: freed with their frames.
    for (int i = 0; i < 3; ++i) {
      sched.spawn_detached(sleep_then(std::chrono::hours(1), i), {.label = 1U + i, .priority = i});
    }
    sched.spawn_detached(sleep_then(std::chrono::hours(1), 0));
    auto stop = [](coro_scheduler& s) -> task<void> {
      s.loop().stop();  // run() returns once this callback is done: everyone else asleep
      co_return;
    };
    sched.spawn_detached(stop(sched), {.priority = -1});  // the lowest key: after the sleepers
    sched.run();
    CHECK(sched.sleeping() == 4);
    CHECK(sched.live() == 4);
  }
  CHECK(this_thread_frame_stats().live() == 0);
}

TEST_CASE("many sleepers with interleaved deadlines wake in deadline order, ties FIFO",
          "[07][sleep]") {
  event_loop loop;
  coro_scheduler sched(loop);
  constexpr int k_n = 5000;
  const auto base = event_loop::clock::now() + 5ms;
  std::vector<std::pair<int, int>> woke;  // (deadline step, spawn index) in wake order
  auto body = [](event_loop::clock::time_point at, int step, int id,
                 std::vector<std::pair<int, int>>& out) -> task<void> {
    co_await sleep_until(at);
    out.emplace_back(step, id);
  };
  std::uint32_t x = 12345;  // a fixed pseudo-random sequence: many equal deadlines, out of order
  for (int i = 0; i < k_n; ++i) {
    x = x * 1664525U + 1013904223U;
    const int step = static_cast<int>((x >> 16U) % 40U);
    sched.spawn_detached(body(base + step * 500us, step, i, woke));
  }
  sched.run();
  REQUIRE(woke.size() == k_n);
  bool ordered = true;
  for (std::size_t i = 1; i < woke.size(); ++i) {
    if (woke[i - 1] >= woke[i]) ordered = false;  // by deadline, then by spawn order
  }
  CHECK(ordered);
  CHECK(sched.sleeping() == 0);
  CHECK(loop.pending_timers() == 0);
}

TEST_CASE("a sleep destroyed mid-sleep leaves the shared sleep heap and the others wake in order",
          "[07][sleep][destroy]") {
  // run_sync inside a coroutine of the scheduler: the task parks in the scheduler's heap, then
  // run_sync destroys it (it suspended) while six other sleepers stay in the heap around it.
  event_loop loop;
  coro_scheduler sched(loop);
  std::vector<int> woke;
  counted::live = 0;
  // Every deadline counts from one t0, taken before any coroutine starts, so the order holds
  // however late a sanitized run starts each one (with sleep_for, counted from each start, ASan
  // and TSan each once woke the destroyer out of its place).
  const auto t0 = event_loop::clock::now();
  auto sleeper_until = [](event_loop::clock::time_point at, std::vector<int>& out,
                          int id) -> task<void> {
    co_await sleep_until(at);
    out.push_back(id);
  };
  for (int i = 0; i < 6; ++i) {
    sched.spawn_detached(sleeper_until(t0 + (6 - i) * 10ms, woke, i));
  }
  auto destroyer = [](std::vector<int>& out, coro_scheduler& s,
                      event_loop::clock::time_point wake_at) -> task<void> {
    const std::size_t before = s.sleeping();
    for (const auto d : {30ms, 1ms, 70ms}) {  // the middle, the earliest, the last deadline
      auto doomed = [](counted, std::chrono::nanoseconds dd) -> task<int> {
        co_await sleep_for(dd);
        co_return 1;
      };
      CHECK_THROWS_AS(run_sync(doomed(counted{}, d)), std::logic_error);
      CHECK(s.sleeping() == before);  // in the heap while parked, out once destroyed
    }
    co_await sleep_until(wake_at);
    out.push_back(100);
  };
  sched.spawn_detached(destroyer(woke, sched, t0 + 35ms));
  sched.run();
  CHECK(counted::live == 0);
  // Deadlines 10, 20, 30 ms (ids 5, 4, 3), the destroyer's 35 ms, then 40, 50, 60 ms (ids 2, 1, 0).
  CHECK(woke == std::vector<int>{5, 4, 3, 100, 2, 1, 0});
  CHECK(sched.sleeping() == 0);
  CHECK(loop.pending_timers() == 0);
  CHECK(this_thread_frame_stats().live() == 0);
}

TEST_CASE(
    "a stop from another thread wakes one sleeper while the others sleep on to their deadlines",
    "[07][cancel][sleep]") {
  event_loop loop;
  coro_scheduler sched(loop);
  std::stop_source stop;
  std::stop_source never;  // its sleepers end by their deadline; a late stop finds nothing
  std::atomic<int> parked{0};
  int cancelled = 0;
  int plain_woke = 0;
  auto plain = [](int& w, std::atomic<int>& p) -> task<void> {
    p.fetch_add(1);
    co_await sleep_for(60ms);
    ++w;
  };
  auto stopped = [](std::stop_token tok, std::atomic<int>& p, int& c) -> task<int> {
    p.fetch_add(1);
    co_return co_await stoppable(30s, std::move(tok), 1, c);
  };
  constexpr int k_plain = 200;
  for (int i = 0; i < k_plain / 2; ++i) sched.spawn_detached(plain(plain_woke, parked));
  auto victim = sched.spawn(stopped(stop.get_token(), parked, cancelled));
  for (int i = 0; i < k_plain / 2; ++i) sched.spawn_detached(plain(plain_woke, parked));
  std::atomic<bool> survivor_done{false};
  auto survivor_body = [](std::stop_token tok, int& c, std::atomic<bool>& done) -> task<int> {
    const int v = co_await stoppable(5ms, std::move(tok), 7, c);
    done = true;
    co_return v;
  };
  auto survivor = sched.spawn(survivor_body(never.get_token(), cancelled, survivor_done));
  std::thread requester([&] {
    while (parked.load() < k_plain + 1) std::this_thread::sleep_for(1ms);
    std::this_thread::sleep_for(10ms);  // let them park in the heap
    stop.request_stop();
    // The survivor's sleep must have ended by its deadline first (waited for, at most 5 s, where a
    // fixed wait could be too short on a loaded sanitizer run), so the late stop finds nothing.
    for (int i = 0; i < 5000 && !survivor_done.load(); ++i) std::this_thread::sleep_for(1ms);
    never.request_stop();
  });
  const auto t0 = clock_type::now();
  sched.run();
  const double elapsed = seconds_since(t0);
  requester.join();
  CHECK_THROWS_AS(victim.join(), task_cancelled);
  CHECK(survivor.join() == 7);
  CHECK(cancelled == 1);
  CHECK(plain_woke == k_plain);
  CHECK(elapsed < 30.0 / 6);
  CHECK(sched.sleeping() == 0);
  CHECK(loop.pending_timers() == 0);
}

TEST_CASE("the lag monitor names a coroutine that runs long without suspending", "[07][lag]") {
  event_loop loop;
  coro_scheduler sched(loop);
  std::mutex m;
  std::vector<slow_callback_report> reports;  // guarded by m: the watchdog reports too
  sched.set_slow_coroutine(20ms, [&](const slow_callback_report& r) {
    std::lock_guard lock(m);
    reports.push_back(r);
  });
  auto polite = [](int& n) -> task<void> {
    for (int i = 0; i < 5; ++i) {
      ++n;
      co_await yield();
    }
  };
  auto hog = []() -> task<void> {
    co_await yield();
    const auto until = clock_type::now() + 120ms;  // six thresholds without a suspension
    while (clock_type::now() < until) {
    }
  };
  int n = 0;
  sched.spawn(polite(n), {.label = 7}).detach();
  sched.spawn(hog(), {.label = 42}).detach();
  sched.spawn(polite(n), {.label = 8}).detach();
  sched.run();
  sched.set_slow_coroutine(0ns, nullptr);  // joins the watchdog: reports are complete
  CHECK(n == 10);
  std::lock_guard lock(m);
  REQUIRE_FALSE(reports.empty());
  bool named = false;
  for (const auto& r : reports) {
    if (r.label == 42) named = true;
  }
  CHECK(named);
  // The after-return report of the hog carries its label and at least its threshold.
  bool after_return = false;
  for (const auto& r : reports) {
    if (r.label == 42 && !r.still_running && r.elapsed >= 20ms) after_return = true;
  }
  CHECK(after_return);
}

namespace {
/// A connected pair of stream sockets, closed by the destructor.
struct socket_pair {
  int fd[2] = {-1, -1};
  socket_pair() { REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fd) == 0); }
  ~socket_pair() {
    ::close(fd[0]);
    ::close(fd[1]);
  }
  socket_pair(const socket_pair&) = delete;
  socket_pair& operator=(const socket_pair&) = delete;
};

/// Awaits `fd` readable, then reads one byte; returns it, or -1 if the deadline came first.
task<int> read_one(int fd, std::stop_token token, event_loop::clock::time_point deadline) {
  if (co_await readable(fd, std::move(token), deadline) == fd_wake::timed_out) co_return -1;
  char c = 0;
  REQUIRE(::read(fd, &c, 1) == 1);
  co_return c;
}
}  // namespace

TEST_CASE("a socket wait resumes once the descriptor is ready, and leaves the loop", "[07][fd]") {
  event_loop loop;
  coro_scheduler sched(loop);
  socket_pair sp;
  auto reader = sched.spawn(read_one(sp.fd[0], {}, event_loop::clock::time_point::max()));
  // writable: a fresh socket is writable at once; then the byte that wakes the reader.
  auto writer = [](int fd) -> task<void> {
    co_await sleep_for(10ms);
    CHECK(co_await writable(fd, {}) == fd_wake::ready);
    REQUIRE(::write(fd, "x", 1) == 1);
  };
  sched.spawn(writer(sp.fd[1])).detach();
  sched.run();  // returns: neither descriptor is watched any more
  CHECK(reader.join() == 'x');
  CHECK(loop.pending_timers() == 0);
}

TEST_CASE("a socket wait's deadline: timed_out, and a deadline past returns at once", "[07][fd]") {
  event_loop loop;
  coro_scheduler sched(loop);
  socket_pair sp;  // nobody writes
  const auto t0 = clock_type::now();
  auto late = sched.spawn(read_one(sp.fd[0], {}, event_loop::clock::now() + 20ms));
  auto past = sched.spawn(read_one(sp.fd[0], {}, event_loop::clock::now() - 1ms));
  sched.run();
  CHECK(late.join() == -1);
  CHECK(past.join() == -1);
  CHECK(seconds_since(t0) < 30.0 / 6);
  CHECK(loop.pending_timers() == 0);
}

TEST_CASE("a stop wakes a socket wait from another thread, and on the loop thread", "[07][fd]") {
  event_loop loop;
  coro_scheduler sched(loop);
  socket_pair a;
  socket_pair b;
  std::stop_source remote;
  std::stop_source local;
  auto far = sched.spawn(read_one(a.fd[0], remote.get_token(), event_loop::clock::now() + 30s));
  auto near =
      sched.spawn(read_one(b.fd[0], local.get_token(), event_loop::clock::time_point::max()));
  loop.call_later(10ms, [&local] { local.request_stop(); });
  std::thread requester([&] {
    std::this_thread::sleep_for(20ms);
    remote.request_stop();
  });
  const auto t0 = clock_type::now();
  sched.run();
  requester.join();
  CHECK_THROWS_AS(far.join(), task_cancelled);
  CHECK_THROWS_AS(near.join(), task_cancelled);
  CHECK(seconds_since(t0) < 30.0 / 6);  // long before the 30 s deadline
  CHECK(loop.pending_timers() == 0);
}

TEST_CASE("destroying a task parked on a socket unwatches it: the loop goes idle", "[07][fd]") {
  event_loop loop;
  socket_pair sp;
  {
    coro_scheduler sched(loop);
    sched.spawn(read_one(sp.fd[0], {}, event_loop::clock::now() + 30s)).detach();
    loop.call_later(10ms, [&loop] { loop.stop(); });
    sched.run();  // stopped with the reader parked
    CHECK(sched.live() == 1);
  }  // the frame goes: its wait leaves the epoll and cancels its timer
  CHECK(loop.pending_timers() == 0);
  const auto t0 = clock_type::now();
  loop.run();  // nothing left: returns at once
  CHECK(seconds_since(t0) < 30.0 / 6);
}
