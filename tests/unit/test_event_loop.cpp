// Lesson 05's event loop as a class: timer order and cancellation, posts from other threads,
// descriptor readiness, when run() returns (idle, stop, exception), and the lag monitor naming a
// hanging callback while it hangs. No test asserts a time, only orders; every test checks that no
// descriptor is left open, and waits with a deadline so a broken loop fails instead of hanging.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

#include "lessons/05_event_loop/event_loop.hpp"
#include "support/subprocess.hpp"

using namespace clab;
using namespace std::chrono_literals;

namespace {

/// Checks on scope exit that the test left as many descriptors open as it found.
class fd_check {
 public:
  fd_check() : before_(clab::test::open_fd_count()) {}
  fd_check(const fd_check&) = delete;
  fd_check& operator=(const fd_check&) = delete;
  ~fd_check() { CHECK(clab::test::open_fd_count() == before_); }

 private:
  int before_;
};

/// Spins (yielding) until `done()` or 10 s pass; returns done().
template <class F>
bool eventually(F done) {
  const auto give_up = std::chrono::steady_clock::now() + 10s;
  while (!done()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(100us);
  }
  return true;
}

}  // namespace

TEST_CASE("run() returns at once on a loop that never had anything", "[05][loop]") {
  fd_check fds;
  event_loop loop;
  loop.run();
  loop.run();
  CHECK_FALSE(loop.running());
  CHECK(loop.pending_timers() == 0);
}

TEST_CASE("timers fire in deadline order, equal deadlines in arming order", "[05][loop]") {
  fd_check fds;
  event_loop loop;
  std::vector<int> fired;
  SECTION("future deadlines armed in shuffled order") {
    std::vector<int> order(200);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937(5));
    // One base, not call_later: a preemption between two armings must not reorder deadlines.
    const auto base = event_loop::clock::now() + 1ms;
    for (const int i : order) loop.call_at(base + i * 20us, [&fired, i] { fired.push_back(i); });
    CHECK(loop.pending_timers() == 200);
    loop.run();
    std::vector<int> expected(200);
    std::iota(expected.begin(), expected.end(), 0);
    CHECK(fired == expected);
  }
  SECTION("deadlines already past, many equal: FIFO among equals") {
    // Deadlines in the past are all due at the first turn, so the order is the heap's alone.
    const auto base = event_loop::clock::now() - 1s;
    std::vector<std::pair<int, int>> armed;  // {deadline step, arming index}
    std::mt19937 rng(7);
    for (int i = 0; i < 3000; ++i) {
      const int step = static_cast<int>(rng() % 10);  // ten distinct deadlines, 300 timers each
      armed.emplace_back(step, i);
      loop.call_at(base + step * 1ms, [&fired, i] { fired.push_back(i); });
    }
    loop.run();
    std::stable_sort(armed.begin(), armed.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<int> expected;
    expected.reserve(armed.size());
    for (const auto& a : armed) expected.push_back(a.second);
    CHECK(fired == expected);
  }
}

TEST_CASE("a cancelled timer never runs, cancel after firing returns false", "[05][loop]") {
  fd_check fds;
  event_loop loop;
  std::vector<int> fired;
  SECTION("cancel before run, twice, and a handle that names none") {
    const timer_handle a = loop.call_later(1ms, [&] { fired.push_back(1); });
    const timer_handle b = loop.call_later(2ms, [&] { fired.push_back(2); });
    const timer_handle c = loop.call_later(3ms, [&] { fired.push_back(3); });
    CHECK(loop.cancel(b));
    CHECK_FALSE(loop.cancel(b));
    CHECK_FALSE(loop.cancel(timer_handle{}));
    CHECK(loop.pending_timers() == 2);
    loop.run();
    CHECK(fired == std::vector<int>{1, 3});
    CHECK_FALSE(loop.cancel(a));  // already fired
    CHECK_FALSE(loop.cancel(c));
  }
  SECTION("cancel from inside another timer's callback, and of itself") {
    // A callback captures at most 16 bytes: state shared by a callback goes in a struct.
    struct state {
      event_loop& loop;
      std::vector<int>& fired;
      timer_handle later, self;
      bool cancelled_other = false;
      bool cancelled_self = true;
    } st{loop, fired};
    st.self = loop.call_later(1ms, [s = &st] {
      s->fired.push_back(1);
      s->cancelled_other = s->loop.cancel(s->later);
      s->cancelled_self = s->loop.cancel(s->self);  // it is firing: no longer pending
    });
    st.later = loop.call_later(50ms, [&] { fired.push_back(2); });
    loop.run();
    CHECK(fired == std::vector<int>{1});
    CHECK(st.cancelled_other);
    CHECK_FALSE(st.cancelled_self);
  }
  SECTION("a stale handle does not cancel the timer that reuses its slot") {
    const timer_handle old = loop.call_later(1ms, [&] { fired.push_back(1); });
    loop.run();
    const timer_handle reused = loop.call_later(1ms, [&] { fired.push_back(2); });
    CHECK(reused.slot == old.slot);  // the free list hands the slot out again
    CHECK_FALSE(loop.cancel(old));
    loop.run();
    CHECK(fired == std::vector<int>{1, 2});
  }
  SECTION("mass cancellation: the survivors still fire in order") {
    loop.reserve_timers(20000);
    const auto base = event_loop::clock::now() + 2ms;
    std::vector<timer_handle> handles;
    handles.reserve(20000);
    for (int i = 0; i < 20000; ++i) {
      handles.push_back(loop.call_at(base + i * 10ns, [&fired, i] { fired.push_back(i); }));
    }
    std::vector<int> expected;
    for (int i = 0; i < 20000; ++i) {
      if (i % 10 == 3) {
        expected.push_back(i);
      } else {
        CHECK(loop.cancel(handles[static_cast<std::size_t>(i)]));
      }
    }
    CHECK(loop.pending_timers() == 2000);
    loop.run();
    CHECK(fired == expected);
    CHECK(loop.pending_timers() == 0);
  }
}

TEST_CASE("call_soon: FIFO, and what a callback queues runs on the next turn", "[05][loop]") {
  fd_check fds;
  event_loop loop;
  std::vector<int> seen;
  loop.call_soon([&] {
    seen.push_back(1);
    loop.call_soon([&] { seen.push_back(4); });
    // Due now: fires at the start of the next turn, before the callback queued above.
    loop.call_at(event_loop::clock::now() - 1s, [&] { seen.push_back(3); });
  });
  loop.call_soon([&] { seen.push_back(2); });
  loop.run();
  CHECK(seen == std::vector<int>{1, 2, 3, 4});
}

TEST_CASE("posts from many threads each run exactly once, on the loop thread", "[05][loop]") {
  fd_check fds;
  event_loop loop;
  constexpr std::size_t k_threads = 4;
  constexpr std::size_t k_posts = 20000;
  struct state {  // touched on the loop thread only (loop_thread: before run())
    std::vector<int> count = std::vector<int>(k_threads * k_posts, 0);
    std::vector<std::int64_t> last = std::vector<std::int64_t>(k_threads, -1);  // in post order
    bool in_order = true;
    bool on_loop_thread = true;
    std::thread::id loop_thread;
    void ran(std::size_t t, std::size_t i) {
      ++count[t * k_posts + i];
      if (last[t] != static_cast<std::int64_t>(i) - 1) in_order = false;
      last[t] = static_cast<std::int64_t>(i);
      if (std::this_thread::get_id() != loop_thread) on_loop_thread = false;
    }
  } st;
  std::vector<int>& count = st.count;
  bool& in_order = st.in_order;
  bool& on_loop_thread = st.on_loop_thread;
  {
    loop_hold hold = loop.hold();  // released once every poster has finished
    std::thread runner([&] {
      st.loop_thread = std::this_thread::get_id();
      loop.run();
    });
    std::vector<std::thread> posters;
    posters.reserve(k_threads);
    for (std::size_t t = 0; t < k_threads; ++t) {
      posters.emplace_back([&, t] {
        // t and i as 32-bit values: with the state pointer they fill the 16-byte capture.
        for (std::uint32_t i = 0; i < k_posts; ++i) {
          loop.post([s = &st, t32 = static_cast<std::uint32_t>(t), i] { s->ran(t32, i); });
        }
      });
    }
    for (auto& p : posters) p.join();
    hold.release();  // from this thread: run() may now return once the inbox is drained
    runner.join();
  }
  CHECK(std::all_of(count.begin(), count.end(), [](int c) { return c == 1; }));
  CHECK(in_order);
  CHECK(on_loop_thread);
}

TEST_CASE("a hold keeps an empty loop running until another thread releases it", "[05][loop]") {
  fd_check fds;
  event_loop loop;
  std::atomic<bool> returned{false};
  loop_hold hold = loop.hold();
  std::thread runner([&] {
    loop.run();
    returned = true;
  });
  std::this_thread::sleep_for(20ms);
  CHECK_FALSE(returned.load());  // nothing to do, but held: it sleeps instead of returning
  std::thread releaser([h = std::move(hold)]() mutable { h.release(); });
  releaser.join();
  runner.join();
  CHECK(returned.load());
}

TEST_CASE("descriptor readiness: a pipe and an eventfd", "[05][loop]") {
  fd_check fds;
  int p[2];
  REQUIRE(pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
  {
    event_loop loop;
    SECTION("level-triggered: called until drained, unwatch from inside the callback") {
      struct state {
        event_loop& loop;
        int fd;
        std::string got;
        int calls = 0;
      } st{loop, p[0]};
      std::string& got = st.got;
      int& calls = st.calls;
      loop.watch(p[0], event_loop::readable, [s = &st](std::uint32_t ev) {
        ++s->calls;
        CHECK((ev & event_loop::readable) != 0);
        char c = 0;
        if (read(s->fd, &c, 1) == 1) s->got.push_back(c);  // one byte per call: level-triggered
        if (s->got.size() == 5) CHECK(s->loop.unwatch(s->fd));
      });
      std::thread writer([&] {
        std::this_thread::sleep_for(5ms);  // the loop is asleep in epoll by now (or soon)
        CHECK(write(p[1], "hello", 5) == 5);
      });
      loop.run();  // returns once unwatched: nothing else keeps it
      writer.join();
      CHECK(got == "hello");
      CHECK(calls == 5);
      CHECK_FALSE(loop.unwatch(p[0]));
    }
    SECTION("edge-triggered: one call per write, the callback drains") {
      const int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      REQUIRE(efd >= 0);
      struct state {
        event_loop& loop;
        int fd;
        std::uint64_t total = 0;
        int calls = 0;
      } st{loop, efd};
      const std::uint64_t& total = st.total;
      const int& calls = st.calls;
      loop.watch(efd, event_loop::readable | event_loop::edge_triggered, [s = &st](std::uint32_t) {
        ++s->calls;
        std::uint64_t v = 0;
        while (read(s->fd, &v, sizeof v) == sizeof v) s->total += v;
        if (s->total == 3) s->loop.unwatch(s->fd);
      });
      std::thread writer([&] {
        for (std::uint64_t v : {1, 2}) {
          CHECK(write(efd, &v, sizeof v) == sizeof v);
          std::this_thread::sleep_for(5ms);
        }
      });
      loop.run();
      writer.join();
      close(efd);
      CHECK(total == 3);
      CHECK(calls >= 1);
      CHECK(calls <= 2);
    }
    SECTION("writable at once; re-watching replaces the callback") {
      struct state {
        event_loop& loop;
        int fd;
        int first = 0;
        int second = 0;
      } st{loop, p[1]};
      loop.watch(p[1], event_loop::writable, [s = &st](std::uint32_t) { ++s->first; });
      loop.watch(p[1], event_loop::writable, [s = &st](std::uint32_t ev) {
        ++s->second;
        CHECK((ev & event_loop::writable) != 0);
        s->loop.unwatch(s->fd);
      });
      loop.run();
      CHECK(st.first == 0);
      CHECK(st.second == 1);
    }
    SECTION("epoll refuses a regular file") {
      std::FILE* f = std::tmpfile();
      REQUIRE(f != nullptr);
      CHECK_THROWS_AS(loop.watch(fileno(f), event_loop::readable, [](std::uint32_t) {}),
                      std::system_error);
      std::fclose(f);
      loop.run();  // the refused descriptor is not watched: returns at once
    }
  }
  close(p[0]);
  close(p[1]);
}

TEST_CASE("posts and stop reach a loop that sleeps in epoll (a descriptor watched)", "[05][loop]") {
  // With a descriptor watched the loop sleeps in epoll_pwait2 and is woken through its eventfd
  // (without one, on a futex: the tests above). The pipe never becomes readable.
  fd_check fds;
  int p[2];
  REQUIRE(pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
  {
    event_loop loop;
    loop.set_post_spin(0ns);  // every post finds the loop asleep (or about to be)
    loop.watch(p[0], event_loop::readable,
               [](std::uint32_t) { FAIL("the pipe was never written"); });
    struct state {
      event_loop& loop;
      int fd;
      int ran = 0;
    } st{loop, p[0]};
    std::thread poster([&] {
      for (int i = 0; i < 200; ++i) {
        loop.post([s = &st] { ++s->ran; });
        if (i % 20 == 0) std::this_thread::sleep_for(1ms);
      }
      loop.post([s = &st] { s->loop.unwatch(s->fd); });  // the last post lets run() return
    });
    loop.run();
    poster.join();
    CHECK(st.ran == 200);

    loop.watch(p[0], event_loop::readable,
               [](std::uint32_t) { FAIL("the pipe was never written"); });
    std::thread stopper([&] {
      std::this_thread::sleep_for(5ms);
      loop.stop();
    });
    loop.run();  // only the stop ends this one
    stopper.join();
    CHECK(loop.unwatch(p[0]));
  }
  close(p[0]);
  close(p[1]);
}

TEST_CASE("stop() from another thread returns run() with a far timer pending", "[05][loop]") {
  fd_check fds;
  event_loop loop;
  bool fired = false;
  const timer_handle far = loop.call_later(1h, [&] { fired = true; });
  std::thread stopper([&] {
    std::this_thread::sleep_for(10ms);
    loop.stop();
  });
  loop.run();  // would sleep an hour without the stop (the test's timeout would fail it)
  stopper.join();
  CHECK_FALSE(fired);
  CHECK(loop.pending_timers() == 1);  // stop leaves what is queued
  CHECK(loop.cancel(far));
  loop.run();  // the stop was consumed: with nothing left this returns because idle
  CHECK_FALSE(fired);
}

TEST_CASE("stop() before run() makes the next run() return at once, only that one", "[05][loop]") {
  fd_check fds;
  event_loop loop;
  int ran = 0;
  loop.call_soon([&] { ++ran; });
  loop.stop();
  loop.run();
  CHECK(ran == 0);
  loop.run();
  CHECK(ran == 1);
}

TEST_CASE("stop() from a callback: the rest stays queued for the next run()", "[05][loop]") {
  fd_check fds;
  event_loop loop;
  std::vector<int> seen;
  loop.call_soon([&] {
    seen.push_back(1);
    loop.stop();
  });
  loop.call_soon([&] { seen.push_back(2); });
  loop.run();
  CHECK(seen == std::vector<int>{1});
  loop.run();
  CHECK(seen == std::vector<int>{1, 2});
}

TEST_CASE("an exception leaves run(), then the loop is consistent and runs again", "[05][loop]") {
  fd_check fds;
  event_loop loop;
  std::vector<int> seen;
  loop.call_soon([&] { seen.push_back(1); });
  loop.call_soon([] { throw std::runtime_error("task 2 failed"); });
  loop.call_soon([&] { seen.push_back(3); });
  CHECK_THROWS_WITH(loop.run(), "task 2 failed");
  CHECK_FALSE(loop.running());
  CHECK(seen == std::vector<int>{1});
  loop.run();
  CHECK(seen == std::vector<int>{1, 3});
  loop.call_later(1ms, [] { throw std::runtime_error("timer failed"); });
  loop.call_later(2ms, [&] { seen.push_back(5); });
  CHECK_THROWS_WITH(loop.run(), "timer failed");
  CHECK(loop.pending_timers() == 1);
  loop.run();
  CHECK(seen == std::vector<int>{1, 3, 5});

  SECTION("a throwing descriptor callback stays watched") {
    const int efd = eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK);
    REQUIRE(efd >= 0);
    struct state {
      event_loop& loop;
      int fd;
      int calls = 0;
    } st{loop, efd};
    loop.watch(efd, event_loop::readable, [s = &st](std::uint32_t) {
      if (++s->calls == 1) throw std::runtime_error("fd failed");
      s->loop.unwatch(s->fd);
    });
    CHECK_THROWS_WITH(loop.run(), "fd failed");
    loop.run();
    CHECK(st.calls == 2);
    close(efd);
  }
}

TEST_CASE("run() from inside a callback throws, run() twice in a row works", "[05][loop]") {
  fd_check fds;
  event_loop loop;
  bool refused = false;
  loop.call_soon([&] {
    try {
      loop.run();
    } catch (const std::logic_error&) {
      refused = true;
    }
  });
  loop.run();
  CHECK(refused);
  int ran = 0;
  for (int round = 0; round < 3; ++round) {
    loop.call_later(1ms, [&] { ++ran; });
    loop.call_soon([&] { ++ran; });
    loop.run();
    CHECK(ran == 2 * (round + 1));
  }
}

TEST_CASE("the watchdog names a hanging callback while it hangs, once per stall", "[05][loop]") {
  fd_check fds;
  event_loop loop;
  std::mutex m;
  std::vector<slow_callback_report> reports;  // guarded by m
  std::atomic<int> hanging_reports{0};
  loop.set_slow_callback(5ms, [&](const slow_callback_report& r) {
    std::lock_guard lock(m);
    reports.push_back(r);
    if (r.still_running && r.label == 42) ++hanging_reports;
  });
  bool seen_while_hanging = false;
  loop.call_soon(
      [&] {
        // Hangs until the watchdog has named it, then for 20 more thresholds: one report only.
        seen_while_hanging = eventually([&] { return hanging_reports.load() > 0; });
        std::this_thread::sleep_for(100ms);
      },
      42);
  loop.call_soon([] {}, 43);
  loop.run();
  loop.set_slow_callback(0ns, nullptr);  // joins the watchdog: no report after this
  CHECK(seen_while_hanging);
  CHECK(hanging_reports.load() == 1);
  std::lock_guard lock(m);
  const auto after = std::find_if(reports.begin(), reports.end(),
                                  [](const auto& r) { return !r.still_running && r.label == 42; });
  REQUIRE(after != reports.end());
  CHECK(after->elapsed >= 100ms);  // it slept that long after the report, at least
  const auto hung =
      std::find_if(reports.begin(), reports.end(), [](const auto& r) { return r.still_running; });
  REQUIRE(hung != reports.end());
  CHECK(hung->label == 42);
  CHECK(hung->elapsed >= 5ms);
  CHECK(hung->elapsed <= after->elapsed);
}

TEST_CASE("a slow callback is reported with its label after it returns", "[05][loop]") {
  fd_check fds;
  event_loop loop;
  std::mutex m;
  std::vector<slow_callback_report> reports;  // guarded by m
  loop.set_slow_callback(50ms, [&](const slow_callback_report& r) {
    std::lock_guard lock(m);
    reports.push_back(r);
  });
  // Fast callbacks of every kind, labelled 1, and one slow timer callback labelled 7.
  for (int i = 0; i < 100; ++i) loop.call_soon([] {}, 1);
  loop.call_later(
      1ms, [] { std::this_thread::sleep_for(120ms); }, 7);
  std::thread poster([&] { loop.post([] {}, 1); });
  poster.join();
  loop.run();
  loop.set_slow_callback(0ns, nullptr);
  std::lock_guard lock(m);
  const auto after = std::find_if(reports.begin(), reports.end(),
                                  [](const auto& r) { return !r.still_running && r.label == 7; });
  REQUIRE(after != reports.end());
  CHECK(after->elapsed >= 120ms);
  // A 50 ms preemption of an empty callback on a loaded machine is possible, not likely; the
  // slow one must be there either way, and no fast one may be reported as the slow one's label.
  CHECK(std::count_if(reports.begin(), reports.end(),
                      [](const auto& r) { return r.label == 7 && !r.still_running; }) == 1);
}

namespace {

/// Counts its live copies: a capture that is not trivially copyable, like a shared_ptr, in 8 bytes.
class live_token {
 public:
  explicit live_token(int* live) : live_(live) { ++*live_; }
  live_token(const live_token& o) : live_(o.live_) { ++*live_; }
  live_token(live_token&& o) noexcept : live_(o.live_) { ++*live_; }
  live_token& operator=(const live_token&) = delete;
  live_token& operator=(live_token&&) = delete;
  ~live_token() { --*live_; }

 private:
  int* live_;
};

}  // namespace

TEST_CASE("the loop destroys what it never ran, and runs nothing on destruction", "[05][loop]") {
  fd_check fds;
  int live = 0;
  const int efd = eventfd(0, EFD_CLOEXEC);
  REQUIRE(efd >= 0);
  bool ran = false;
  {
    event_loop loop;
    loop.call_soon([t = live_token(&live), r = &ran] { *r = true; });
    loop.call_later(1h, [t = live_token(&live), r = &ran] { *r = true; });
    const timer_handle h = loop.call_later(2h, [t = live_token(&live), r = &ran] { *r = true; });
    loop.post([t = live_token(&live), r = &ran] { *r = true; });
    loop.watch(efd, event_loop::readable,
               [t = live_token(&live), r = &ran](std::uint32_t) { *r = true; });
    CHECK(live == 5);
    CHECK(loop.cancel(h));  // a cancel destroys the callback at once
    CHECK(live == 4);
  }
  CHECK_FALSE(ran);
  CHECK(live == 0);
  close(efd);
}

TEST_CASE("inline_function: moves and destroys a non-trivial capture once", "[05][loop]") {
  auto p = std::make_unique<int>(7);
  int got = 0;
  loop_callback a([q = std::move(p), &got] { got = *q; });
  loop_callback b(std::move(a));
  CHECK_FALSE(static_cast<bool>(a));  // NOLINT(bugprone-use-after-move): a moved-from is empty
  REQUIRE(static_cast<bool>(b));
  b();
  CHECK(got == 7);
  a = std::move(b);
  a.reset();
  CHECK_FALSE(static_cast<bool>(a));
}

TEST_CASE("measure_timer_overshoot: lateness is never negative and its order holds", "[05][loop]") {
  fd_check fds;
  for (const auto spin : {0us, 50us}) {  // sleeping to the deadline, and spinning its last 50 µs
    const timer_overshoot o = measure_timer_overshoot(200us, 50, spin);
    CHECK(o.samples == 50);
    CHECK(o.median.count() >= 0);  // a timer never fires before its deadline
    CHECK(o.median <= o.p90);
    CHECK(o.p90 <= o.p99);
    CHECK(o.p99 <= o.max);
  }
}
