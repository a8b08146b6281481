// Lesson 06's engine: our fiber scheduler on lesson 05's loop. The order rules of spawn and yield,
// parking on timers and on sockets, join (results, exceptions), 100 000 parked fibers, the stack
// allocators' mapping costs, M:N stealing, skynet, stack overflows (in forked children) and the lag
// monitor naming a fiber that never parks. No test asserts a time, only orders and ratios; every
// wait has a deadline so a broken scheduler fails instead of hanging, and each test checks its
// descriptors.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <limits>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "lessons/06_fibers/fiber.hpp"
#include "lessons/06_fibers/stacks.hpp"
#include "support/sanitized.hpp"
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

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

/// Lines of /proc/self/maps: one per kernel mapping.
int mapping_count() {
  std::ifstream maps("/proc/self/maps");
  int n = 0;
  for (std::string line; std::getline(maps, line);) ++n;
  return n;
}

/// Resident set size in bytes (/proc/self/statm).
long resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  long size = 0, resident = 0;
  statm >> size >> resident;
  return resident * ::sysconf(_SC_PAGESIZE);
}

/// What a forked child left: how it ended and what it wrote to stderr.
struct child_result {
  bool exited = false;
  int exit_code = -1;
  int signal = 0;
  bool timed_out = false;
  std::string err;
};

/// Runs `body` in a forked child (which never returns into Catch), captures its stderr through a
/// pipe, waits at most 30 s (then kills it), and always reaps it.
template <class F>
child_result run_in_child(F body) {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // The default actions: Catch2's handlers would report the signal and go on running tests.
    for (const int sig : {SIGSEGV, SIGBUS, SIGABRT}) ::signal(sig, SIG_DFL);
    ::dup2(fds[1], STDERR_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    body();
    ::_exit(0);
  }
  ::close(fds[1]);
  child_result r;
  const auto give_up = clock_type::now() + 30s;
  char buf[4096];
  for (;;) {
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, 100) > 0) {
      const ssize_t n = ::read(fds[0], buf, sizeof buf);
      if (n <= 0) break;  // EOF: the child is gone (or closed stderr)
      r.err.append(buf, static_cast<std::size_t>(n));
    }
    if (clock_type::now() > give_up) {
      r.timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.exited = WIFEXITED(status);
  if (r.exited) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  return r;
}

/// Skynet: each fiber spawns 10 children over its share of [num, num + size) and sums their
/// results; a leaf returns its number. `spawn` is the scheduler's or the pool's.
template <class Spawner>
std::int64_t skynet(Spawner& spawner, std::int64_t num, std::int64_t size) {
  if (size == 1) return num;
  std::vector<fiber_handle<std::int64_t>> kids;
  kids.reserve(10);
  const std::int64_t part = size / 10;
  for (std::int64_t i = 0; i < 10; ++i) {
    kids.push_back(
        spawner.spawn([&spawner, n = num + i * part, part] { return skynet(spawner, n, part); },
                      static_cast<std::uint64_t>(num + i * part)));
  }
  std::int64_t sum = 0;
  for (auto& k : kids) sum += k.join();
  return sum;
}

// Under a sanitizer every spawn also clears the shadow of a reused 256 KiB stack and every access
// is checked: skynet then runs on 10^4 leaves (11 111 fibers) instead of 10^6, and the parked set
// is smaller (below). What they check is the same.
#if defined(__SANITIZE_THREAD__)
constexpr bool k_tsan = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr bool k_tsan = true;
#else
constexpr bool k_tsan = false;
#endif
#else
constexpr bool k_tsan = false;
#endif
// TSan is slower still: each fiber is a TSan fiber, created and destroyed at ~3 ms apiece here
// (it maps a shadow call stack for each), so its sets are 10x smaller again.
constexpr std::int64_t k_skynet_leaves = k_tsan ? 1'000 : testing::k_sanitized ? 10'000 : 1'000'000;
constexpr std::int64_t k_skynet_sum = k_skynet_leaves * (k_skynet_leaves - 1) / 2;
// A depth no recursion reaches (volatile: the compiler may not assume the recursion is endless).
volatile int k_unreachable_depth = 1 << 30;

// TSan also counts every live fiber as a thread and allows 8 128 at once: 5 000 parked there.
constexpr int k_parked = k_tsan ? 1'000 : testing::k_sanitized ? 5'000 : 100'000;

}  // namespace

TEST_CASE("fibers spawned from outside start in spawn order, yield goes to the back",
          "[06][fiber]") {
  fd_check fds;
  event_loop loop;
  fiber_scheduler fibers(loop);
  std::vector<std::string> log;
  for (const char* name : {"a", "b", "c"}) {
    fibers
        .spawn([&log, name] {
          for (int step = 0; step < 3; ++step) {
            log.push_back(std::string(name) + std::to_string(step));
            this_fiber::yield();
          }
        })
        .detach();
  }
  fibers.run();
  CHECK(log == std::vector<std::string>{"a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"});
  CHECK(fibers.live() == 0);
}

TEST_CASE("spawn from a fiber is work-first: the child runs at once, the parent next",
          "[06][fiber]") {
  fd_check fds;
  event_loop loop;
  fiber_scheduler fibers(loop);
  std::vector<std::string> log;
  fibers.spawn([&] { log.push_back("other"); }).detach();  // queued behind the parent
  fibers
      .spawn([&] {
        log.push_back("p1");
        auto child = fibers.spawn([&] {
          log.push_back("c1");
          this_fiber::yield();  // to the back: the parent waits at the front, "other" behind it
          log.push_back("c2");
        });
        log.push_back("p2");
        child.join();
        log.push_back("p3");
      })
      .detach();
  // The parent was spawned second, but both were queued at the back in order: "other" first.
  fibers.run();
  CHECK(log == std::vector<std::string>{"other", "p1", "c1", "p2", "c2", "p3"});
}

TEST_CASE("work-first order holds in the middle of a batch too", "[06][fiber]") {
  fd_check fds;
  event_loop loop;
  fiber_scheduler fibers(loop);
  std::vector<int> log;
  fibers
      .spawn([&] {
        log.push_back(1);
        this_fiber::yield();  // "b" runs, then us again
        log.push_back(3);
        fibers.spawn([&] { log.push_back(4); }).detach();
        log.push_back(5);
      })
      .detach();
  fibers.spawn([&] { log.push_back(2); }).detach();
  fibers.run();
  CHECK(log == std::vector<int>{1, 2, 3, 4, 5});
}

TEST_CASE("sleepers wake in deadline order and their sleeps overlap", "[06][fiber][timer]") {
  fd_check fds;
  event_loop loop;
  fiber_scheduler fibers(loop);
  std::vector<int> woke;
  // Spawned in reverse: each sleeps (8 - i) × 2 ms, so they must wake 7, 6, ..., 0 by deadline.
  const auto base = event_loop::clock::now() + 5ms;
  for (int i = 0; i < 8; ++i) {
    fibers
        .spawn([&woke, i, base] {
          this_fiber::sleep_until(base + (8 - i) * 2ms);
          woke.push_back(i);
        })
        .detach();
  }
  fibers.run();
  CHECK(woke == std::vector<int>{7, 6, 5, 4, 3, 2, 1, 0});

  // 8 fibers sleeping 20 ms each: serially 160 ms, overlapped one sleep (plus overheads). The
  // overlap itself is an order, not a time: every sleep began before the first one ended.
  const auto t0 = clock_type::now();
  std::vector<clock_type::time_point> began;
  std::vector<clock_type::time_point> ended;
  for (int i = 0; i < 8; ++i) {
    fibers
        .spawn([&] {
          began.push_back(clock_type::now());
          this_fiber::sleep_for(20ms);
          ended.push_back(clock_type::now());
        })
        .detach();
  }
  fibers.run();
  const double elapsed = seconds_since(t0);
  REQUIRE(ended.size() == 8);
  CHECK(*std::max_element(began.begin(), began.end()) <
        *std::min_element(ended.begin(), ended.end()));
  CHECK(elapsed >= 0.020);  // nobody woke early
  // Well under the serial 8 × 20 ms. Not asserted under sanitizers, where TSan's fiber creation
  // alone took 30 ms a fiber on a loaded machine.
  if (!testing::k_sanitized) CHECK(elapsed < 4 * 0.020);
}

TEST_CASE("the loop keeps turning while fibers are parked", "[06][fiber][timer]") {
  fd_check fds;
  event_loop loop;
  fiber_scheduler fibers(loop);
  int ticks = 0;
  // A plain loop timer between the sleeper's start and its wake-up runs while it is parked.
  fibers
      .spawn([&] {
        this_fiber::sleep_for(30ms);
        CHECK(ticks == 1);
      })
      .detach();
  loop.call_later(5ms, [&ticks] { ++ticks; });
  fibers.run();
  CHECK(ticks == 1);
}

TEST_CASE("a stop wakes sleeping fibers at once, a sleep that ends first reports so",
          "[06][fiber][timer][stop]") {
  fd_check fds;
  event_loop loop;
  fiber_scheduler fibers(loop);
  std::stop_source stop;
  std::atomic<int> slept{0};
  std::atomic<int> woken{0};
  // 10 fibers sleep 10 s each; a short one sleeps 1 ms and reports that it slept; the stop comes
  // from another thread 30 ms in and must wake the ten long before their deadline.
  for (int i = 0; i < 10; ++i) {
    fibers
        .spawn([&] { (this_fiber::sleep_for(10s, stop.get_token()) ? slept : woken).fetch_add(1); })
        .detach();
  }
  fibers.spawn([&] { (this_fiber::sleep_for(1ms, stop.get_token()) ? slept : woken).fetch_add(1); })
      .detach();
  const auto t0 = clock_type::now();
  std::jthread stopper([&stop] {
    std::this_thread::sleep_for(30ms);
    stop.request_stop();
  });
  fibers.run();
  const double elapsed = seconds_since(t0);
  CHECK(slept.load() == 1);
  CHECK(woken.load() == 10);
  CHECK(elapsed >= 0.029);
  CHECK(elapsed < 5.0);  // a tenth of one sleep that was never waited out: generous for TSan
  CHECK(loop.pending_timers() == 0);

  // Already stopped: no park at all, and the answer is "stopped".
  bool answer = true;
  fibers.spawn([&] { answer = this_fiber::sleep_for(10s, stop.get_token()); }).detach();
  fibers.run();
  CHECK_FALSE(answer);
  // A token that can never stop: an ordinary sleep.
  fibers.spawn([&] { answer = this_fiber::sleep_for(1ms, std::stop_token{}); }).detach();
  fibers.run();
  CHECK(answer);
}

TEST_CASE("M:N: a stop from outside wakes every sleeper on every thread",
          "[06][pool][timer][stop]") {
  fd_check fds;
  fiber_pool pool(3);
  std::stop_source stop;
  std::atomic<int> woken{0};
  for (int i = 0; i < 60; ++i) {
    pool.spawn([&] {
          this_fiber::sleep_for(1ms);  // woken on one thread, maybe resumed on another
          if (!this_fiber::sleep_for(10s, stop.get_token())) woken.fetch_add(1);
        })
        .detach();
  }
  const auto t0 = clock_type::now();
  std::jthread stopper([&stop] {
    std::this_thread::sleep_for(50ms);
    stop.request_stop();
  });
  pool.run();
  CHECK(woken.load() == 60);
  CHECK(seconds_since(t0) < 5.0);
}

TEST_CASE("join returns the fiber's result, parking the joiner until it is done", "[06][fiber]") {
  fd_check fds;
  event_loop loop;
  fiber_scheduler fibers(loop);
  auto slow = fibers.spawn([] {
    this_fiber::sleep_for(5ms);
    return std::string("slow");
  });
  std::string seen;
  auto joiner = fibers.spawn([&] {
    seen = slow.join();  // parks: slow is asleep
    return 7;
  });
  auto quick = fibers.spawn([] { return 40; }, 3);
  CHECK(quick.label() == 3);
  fibers.run();
  CHECK(seen == "slow");
  CHECK(joiner.done());
  CHECK(joiner.join() + quick.join() == 47);        // from outside, after run()
  CHECK_THROWS_AS(quick.join(), std::logic_error);  // once only
}

TEST_CASE("join outside a fiber on an unfinished fiber is a logic error", "[06][fiber]") {
  fd_check fds;
  event_loop loop;
  fiber_scheduler fibers(loop);
  auto h = fibers.spawn([] { return 1; });
  CHECK_FALSE(h.done());
  CHECK_THROWS_AS(h.join(), std::logic_error);
  fibers.run();
  CHECK(h.join() == 1);
}

TEST_CASE("join rethrows the fiber's exception, and the other fibers still finish", "[06][fiber]") {
  fd_check fds;
  event_loop loop;
  fiber_scheduler fibers(loop);
  int finished = 0;
  auto bad = fibers.spawn([]() -> int {
    this_fiber::sleep_for(1ms);
    throw std::runtime_error("boom");
  });
  bool caught = false;
  fibers
      .spawn([&] {
        try {
          bad.join();
        } catch (const std::runtime_error& e) {
          caught = std::string(e.what()) == "boom";
        }
      })
      .detach();
  for (int i = 0; i < 5; ++i) {
    fibers
        .spawn([&finished] {
          this_fiber::sleep_for(2ms);
          ++finished;
        })
        .detach();
  }
  fibers.run();  // the failure was joined: run() does not throw
  CHECK(caught);
  CHECK(finished == 5);
}

TEST_CASE("an exception nobody joins is rethrown by run() after the others finish", "[06][fiber]") {
  fd_check fds;
  event_loop loop;
  fiber_scheduler fibers(loop);
  int finished = 0;
  SECTION("a detached fiber") {
    fibers.spawn([] { throw std::runtime_error("detached"); }).detach();
  }
  SECTION("a handle destroyed unjoined while the fiber runs") {
    auto h = fibers.spawn([] {
      this_fiber::sleep_for(1ms);
      throw std::runtime_error("detached");
    });
  }
  for (int i = 0; i < 3; ++i) {
    fibers
        .spawn([&finished] {
          this_fiber::sleep_for(3ms);
          ++finished;
        })
        .detach();
  }
  CHECK_THROWS_WITH(fibers.run(), "detached");
  CHECK(finished == 3);
  CHECK(fibers.live() == 0);
  fibers.run();  // thrown once only
}

TEST_CASE("a handle kept past run() keeps the exception for its join", "[06][fiber]") {
  fd_check fds;
  event_loop loop;
  fiber_scheduler fibers(loop);
  auto h = fibers.spawn([]() -> int { throw std::out_of_range("kept"); });
  fibers.run();  // the handle lives: its join() will throw, so run() does not
  CHECK_THROWS_AS(h.join(), std::out_of_range);
}

TEST_CASE("100 000 fibers (fewer under sanitizers) parked at once on slab stacks all complete",
          "[06][fiber][stacks]") {
  fd_check fds;
  event_loop loop;
  loop.reserve_timers(k_parked);
  fiber_scheduler fibers(loop, stack_kind::slab);
  int parked = 0;
  int done = 0;
  long rss_parked = 0;
  const long rss_before = resident_bytes();
  const auto wake = event_loop::clock::now() + 200ms;
  for (int i = 0; i < k_parked; ++i) {
    fibers
        .spawn(
            [&, i] {
              ++parked;
              this_fiber::sleep_until(wake + std::chrono::microseconds(i % 100));
              ++done;
            },
            static_cast<std::uint64_t>(i))
        .detach();
  }
  // A timer that fires while all of them sleep: measure what the parked set costs.
  loop.call_at(wake - 50ms, [&] { rss_parked = resident_bytes(); });
  fibers.run();
  CHECK(parked == k_parked);
  CHECK(done == k_parked);
  // Slab stacks: ~100 mappings for 100 000 stacks, far from vm.max_map_count.
  CHECK(fibers.stack_mappings() <= static_cast<std::size_t>(k_parked / 1024 + 1));
  if (!testing::k_sanitized && rss_parked > 0) {
    // Physical bound: a parked fiber touches its stack's top page (its frames, its control
    // block) and the canary page at the bottom: 2-3 pages, plus the timer and the join state.
    const double per_fiber = static_cast<double>(rss_parked - rss_before) / k_parked;
    INFO("resident bytes per parked fiber: " << per_fiber);
    CHECK(per_fiber <= 3 * 4096 + 1024);
  }
}

TEST_CASE("guarded stacks cost two mappings each, slab stacks one per slab", "[06][stacks]") {
  SECTION("guarded") {
    guarded_stacks stacks;
    const int before = mapping_count();
    std::vector<boost::context::stack_context> got;
    for (int i = 0; i < 64; ++i) got.push_back(stacks.allocate());
    const int added = mapping_count() - before;
    CHECK(stacks.mappings() == 128);
    // The kernel lists two neighbouring mappings of the same kind as one line: our stacks never
    // merge with each other (a guard page lies between), but the first and the last may merge
    // with a mapping already there (a cached slab of another test, say).
    CHECK(added >= 128 - 2);
    // A malloc arena or two may appear meanwhile; a sanitizer also maps shadow for new memory.
    if (!testing::k_sanitized) CHECK(added <= 128 + 4);
    // Freed stacks are reused: no new mapping.
    for (auto& s : got) stacks.deallocate(s);
    auto again = stacks.allocate();
    CHECK(stacks.mappings() == 128);
    stacks.deallocate(again);
  }
  SECTION("slab") {
    slab_stacks stacks(64 * 1024, 1024);
    std::vector<boost::context::stack_context> got;
    for (int i = 0; i < 2000; ++i) got.push_back(stacks.allocate());
    CHECK(stacks.mappings() == 2);
    for (auto& s : got) {
      CHECK(slab_stacks::canary_intact(s));
      stacks.deallocate(s);
    }
  }
}

TEST_CASE("guarded stacks name vm.max_map_count when the kernel refuses a mapping",
          "[06][stacks]") {
  if (testing::k_sanitized) {
    // An address-space limit also stops the sanitizer's own allocator: not testable there.
    SUCCEED("skipped under a sanitizer");
    return;
  }
  fd_check fds;
  // In a child: an address-space limit just above what it uses makes mmap fail with ENOMEM, the
  // same error the map-count limit gives, without creating 32 000 mappings.
  const child_result r = run_in_child([] {
    guarded_stacks stacks;
    std::vector<boost::context::stack_context> got;
    got.reserve(1 << 16);
    rlimit lim{};
    ::getrlimit(RLIMIT_AS, &lim);
    std::ifstream statm("/proc/self/statm");
    long pages = 0;
    statm >> pages;
    lim.rlim_cur = static_cast<rlim_t>(pages * ::sysconf(_SC_PAGESIZE)) + (8 << 20);
    ::setrlimit(RLIMIT_AS, &lim);
    try {
      for (;;) got.push_back(stacks.allocate());
    } catch (const std::system_error& e) {
      std::fprintf(stderr, "%s\n", e.what());
      ::_exit(e.code().value() == ENOMEM ? 0 : 3);
    }
  });
  CHECK_FALSE(r.timed_out);
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("vm.max_map_count") != std::string::npos);
  CHECK(r.err.find(" stacks (") != std::string::npos);
}

TEST_CASE("fibers run on guarded stacks too", "[06][fiber][stacks]") {
  fd_check fds;
  event_loop loop;
  fiber_scheduler fibers(loop, stack_kind::guarded);
  int sum = 0;
  for (int i = 1; i <= 100; ++i) {
    fibers
        .spawn([&sum, i] {
          this_fiber::sleep_for(1ms);
          sum += i;
        })
        .detach();
  }
  fibers.run();
  CHECK(sum == 5050);
  CHECK(fibers.stack_mappings() == 200);  // 100 stacks at once, 2 mappings each
}

TEST_CASE("skynet on one thread: 1 111 111 fibers (fewer under sanitizers), bounded memory",
          "[06][fiber][skynet]") {
  fd_check fds;
  event_loop loop;
  fiber_scheduler fibers(loop);
  auto root = fibers.spawn([&] { return skynet(fibers, 0, k_skynet_leaves); });
  fibers.run();
  CHECK(root.join() == k_skynet_sum);
  // Work-first keeps the tree depth-first: a handful of slabs, not one stack per fiber.
  CHECK(fibers.stack_mappings() <= 2);
}

TEST_CASE("skynet on two threads through the pool", "[06][pool][skynet]") {
  fd_check fds;
  fiber_pool pool(2);
  auto root = pool.spawn([&] { return skynet(pool, 0, k_skynet_leaves); });
  pool.run();
  CHECK(root.join() == k_skynet_sum);
}

TEST_CASE("M:N: 10 000 fibers (fewer under TSan) on 4 threads each run once, and are stolen",
          "[06][pool]") {
  fd_check fds;
  constexpr int n = k_tsan ? 2'000 : 10'000;  // TSan: far under its 8 128 live fibers
  fiber_pool pool(4);
  std::vector<std::atomic<int>> runs(n);
  std::mutex threads_mutex;
  std::set<std::thread::id> threads;  // guarded by threads_mutex
  std::atomic<int> off_spawner_thread{0};
  pool.spawn([&] {
        const auto spawner = std::this_thread::get_id();
        for (int i = 0; i < n; ++i) {
          pool.spawn(
                  [&, i, spawner] {
                    this_fiber::yield();
                    if (i % 3 == 0) this_fiber::sleep_for(std::chrono::microseconds(i % 500));
                    this_fiber::yield();
                    runs[static_cast<std::size_t>(i)].fetch_add(1);
                    const auto me = std::this_thread::get_id();
                    if (me != spawner) off_spawner_thread.fetch_add(1);
                    std::lock_guard lock(threads_mutex);
                    threads.insert(me);
                  },
                  static_cast<std::uint64_t>(i))
              .detach();
        }
        // Keep this thread busy without parking: the fibers queued behind us can only run if
        // another thread steals them. Bounded: 20 s at most.
        const auto give_up = clock_type::now() + 20s;
        while (off_spawner_thread.load() == 0 && clock_type::now() < give_up) {
        }
      })
      .detach();
  pool.run();
  int wrong = 0;
  for (auto& r : runs) wrong += r.load() != 1;
  CHECK(wrong == 0);
  CHECK(off_spawner_thread.load() > 0);
  CHECK(threads.size() > 1);
  const auto per_thread = pool.switches_per_thread();
  CHECK(per_thread.size() == 4);
}

TEST_CASE("M:N: sleeps overlap across the pool", "[06][pool][timer]") {
  fd_check fds;
  fiber_pool pool(3);
  std::atomic<int> done{0};
  // The overlap as an order: the last fiber to start its first sleep did so before the first
  // sleep ended (a sleep long enough, under sanitizers, for three threads to start 30 fibers).
  const auto sleep = testing::k_sanitized ? 200ms : 20ms;
  std::atomic<std::int64_t> last_began{0};
  std::atomic<std::int64_t> first_ended{std::numeric_limits<std::int64_t>::max()};
  const auto ns = [] { return clock_type::now().time_since_epoch().count(); };
  const auto t0 = clock_type::now();
  for (int i = 0; i < 30; ++i) {
    pool.spawn([&] {
          const std::int64_t began = ns();
          for (auto seen = last_began.load(); seen < began;) {
            if (last_began.compare_exchange_weak(seen, began)) break;
          }
          this_fiber::sleep_for(sleep);
          const std::int64_t ended = ns();
          for (auto seen = first_ended.load(); seen > ended;) {
            if (first_ended.compare_exchange_weak(seen, ended)) break;
          }
          this_fiber::sleep_for(1ms);  // woken on one thread, maybe resumed on another
          done.fetch_add(1);
        })
        .detach();
  }
  pool.run();
  const double elapsed = seconds_since(t0);
  CHECK(done.load() == 30);
  CHECK(last_began.load() < first_ended.load());
  CHECK(elapsed >= std::chrono::duration<double>(sleep).count());
  // Serially 30 × 21 ms; overlapped, about one. Not asserted under sanitizers (see above).
  if (!testing::k_sanitized) CHECK(elapsed < 10 * 0.021);
}

TEST_CASE("M:N: an unjoined failure is rethrown by the pool's run()", "[06][pool]") {
  fd_check fds;
  fiber_pool pool(2);
  std::atomic<int> finished{0};
  for (int i = 0; i < 20; ++i) {
    pool.spawn([&finished, i] {
          this_fiber::sleep_for(1ms);
          if (i == 7) throw std::runtime_error("seven");
          finished.fetch_add(1);
        })
        .detach();
  }
  CHECK_THROWS_WITH(pool.run(), "seven");
  CHECK(finished.load() == 19);
}

TEST_CASE("a stack overflow on guarded stacks dies at the guard page", "[06][stacks][overflow]") {
  fd_check fds;
  const child_result r = run_in_child([] {
    event_loop loop;
    fiber_scheduler fibers(loop, stack_kind::guarded);
    fibers
        .spawn(
            [] {
              struct deep {
                static int down(int n) {
                  volatile char pad[512];
                  pad[0] = static_cast<char>(n);
                  if (n == k_unreachable_depth) return 0;
                  const int r = down(n + 1);
                  pad[1] =
                      static_cast<char>(r);  // after the call: the frame must live (no tail call)
                  return pad[0] + pad[1];
                }
              };
              return deep::down(0);
            },
            17)
        .detach();
    fibers.run();
  });
  CHECK_FALSE(r.timed_out);
  INFO("child stderr: " << r.err);
  // The child restores the default action for SIGSEGV, so it dies by the signal, under ASan too;
  // should a sanitizer's own handler run first, its report of the fault is accepted instead.
  const bool sanitizer_report =
      r.err.find("stack-overflow") != std::string::npos || r.err.find("SEGV") != std::string::npos;
  CHECK((r.signal == SIGSEGV || (testing::k_sanitized && sanitizer_report && !r.exited) ||
         (testing::k_sanitized && sanitizer_report && r.exit_code != 0)));
}

TEST_CASE("a stack overflow on slab stacks is caught by the canary and names the fiber",
          "[06][stacks][overflow]") {
  fd_check fds;
  const child_result r = run_in_child([] {
    event_loop loop;
    fiber_scheduler fibers(loop, stack_kind::slab);
    // Someone to yield to, spawned first: slabs are carved from the top down, so its stack is
    // above the overflowing one and stays intact (an overflow wrecks the stack below it).
    fibers
        .spawn([] {
          for (int i = 0; i < 3; ++i) this_fiber::yield();
        })
        .detach();
    fibers
        .spawn(
            [] {
              struct deep {
                // Runs 2 stacks deep (into the unused neighbour below), then parks: the switch away
                // checks the canary.
                static int down(int n) {
                  volatile char pad[1024];
                  for (auto& c : pad) c = static_cast<char>(n);  // every byte: over the canary
                  if (n == 0) {
                    this_fiber::yield();
                    return pad[0];
                  }
                  const int r = down(n - 1);
                  pad[1] =
                      static_cast<char>(r);  // after the call: the frame must live (no tail call)
                  return pad[0] + pad[1];
                }
              };
              return deep::down(static_cast<int>(2 * k_fiber_stack_size / 1024));
            },
            17)
        .detach();
    fibers.run();
  });
  CHECK_FALSE(r.timed_out);
  INFO("child stderr: " << r.err << " exit " << r.exit_code << " signal " << r.signal);
  const bool ours = r.signal == SIGABRT &&
                    r.err.find("fiber 17: stack overflow: the canary at the bottom of its " +
                               std::to_string(k_fiber_stack_size / 1024) +
                               " KiB stack was overwritten") != std::string::npos;
  // Under ASan the overflowing frames may be caught by ASan first, as they write over poisoned
  // shadow bytes below the stack: its stack-buffer report stands in for ours there.
  const bool asan_first = testing::k_sanitized && r.exit_code != 0 &&
                          r.err.find("ERROR: AddressSanitizer: stack") != std::string::npos;
  CHECK((ours || asan_first));
}

TEST_CASE("the lag monitor names a fiber that never parks", "[06][fiber][monitor]") {
  fd_check fds;
  event_loop loop;
  fiber_scheduler fibers(loop);
  std::mutex mutex;
  std::vector<slow_callback_report> reports;  // guarded by mutex
  static constexpr auto threshold = 20ms;
  fibers.set_slow_fiber(threshold, [&](const slow_callback_report& r) {
    std::lock_guard lock(mutex);
    reports.push_back(r);
  });
  for (std::uint64_t label : {1, 2}) {
    fibers
        .spawn(
            [] {
              for (int i = 0; i < 5; ++i) this_fiber::yield();
            },
            label)
        .detach();
  }
  fibers
      .spawn(
          [] {
            this_fiber::yield();  // labels are exact after a switch too, not only at a fiber's
                                  // start
            const auto until = clock_type::now() + 5 * threshold;
            while (clock_type::now() < until) {
            }
          },
          42)
      .detach();
  fibers.run();
  fibers.set_slow_fiber(0ns, {});
  std::lock_guard lock(mutex);
  bool named = false;
  for (const auto& r : reports) named = named || r.label == 42;
  CHECK(named);
}

TEST_CASE("yield costs a few raw switches (measured, not asserted)", "[06][fiber][.perf]") {
  // Raw: two boost::context::fibers bouncing; ours: two fibers yielding to each other.
  constexpr int rounds = 1'000'000;
  namespace ctx = boost::context;
  ctx::fiber f{[](ctx::fiber&& back) {
    for (;;) back = std::move(back).resume();
    return std::move(back);
  }};
  auto t0 = clock_type::now();
  for (int i = 0; i < rounds; ++i) f = std::move(f).resume();
  const double raw_ns = seconds_since(t0) * 1e9 / (2.0 * rounds);  // two switches a round
  event_loop loop;
  fiber_scheduler fibers(loop);
  for (int k = 0; k < 2; ++k) {
    fibers
        .spawn([] {
          for (int i = 0; i < rounds; ++i) this_fiber::yield();
        })
        .detach();
  }
  t0 = clock_type::now();
  fibers.run();
  const double yield_ns = seconds_since(t0) * 1e9 / (2.0 * rounds);
  WARN("raw switch " << raw_ns << " ns, yield " << yield_ns << " ns, ratio " << yield_ns / raw_ns);
  CHECK(yield_ns > 0);
}

// ---- parking on a descriptor (this_fiber::wait_readable / wait_writable) ----

namespace {

/// A connected pair of non-blocking stream sockets, closed on scope exit.
struct socket_pair {
  int fd[2] = {-1, -1};
  socket_pair() {
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fd) == 0);
  }
  ~socket_pair() {
    ::close(fd[0]);
    ::close(fd[1]);
  }
  socket_pair(const socket_pair&) = delete;
  socket_pair& operator=(const socket_pair&) = delete;
};

}  // namespace

TEST_CASE("a fiber parked on a socket wakes when it is readable, its thread runs others meanwhile",
          "[06][fiber][fd]") {
  fd_check fds;
  event_loop loop;
  fiber_scheduler fibers(loop);
  socket_pair s;
  std::vector<std::string> order;
  fibers
      .spawn([&] {
        order.emplace_back("reader parks");
        CHECK(this_fiber::wait_readable(s.fd[0]) == fd_wait::ready);
        char c = 0;
        CHECK(::read(s.fd[0], &c, 1) == 1);
        order.push_back(std::string("reader read ") + c);
      })
      .detach();
  fibers
      .spawn([&] {
        this_fiber::sleep_for(20ms);  // the reader stays parked through this
        order.emplace_back("writer writes");
        CHECK(this_fiber::wait_writable(s.fd[1]) == fd_wait::ready);  // an empty buffer: at once
        CHECK(::write(s.fd[1], "x", 1) == 1);
      })
      .detach();
  fibers.run();  // returns: nothing is left watched once the reader has woken
  CHECK(order == std::vector<std::string>{"reader parks", "writer writes", "reader read x"});
  CHECK(loop.pending_timers() == 0);
}

TEST_CASE("a park on a socket ends at its deadline or at a stop, and leaves it unwatched",
          "[06][fiber][fd][stop]") {
  fd_check fds;
  event_loop loop;
  fiber_scheduler fibers(loop);
  socket_pair s;  // nobody ever writes to it
  std::stop_source stop;
  fd_wait by_deadline = fd_wait::ready;
  fd_wait by_stop = fd_wait::ready;
  fd_wait already = fd_wait::ready;
  fibers
      .spawn([&] {
        by_deadline = this_fiber::wait_readable(s.fd[0], {}, event_loop::clock::now() + 10ms);
        // The same descriptor again, now until a stop from another thread.
        by_stop =
            this_fiber::wait_readable(s.fd[0], stop.get_token(), event_loop::clock::now() + 10s);
        already = this_fiber::wait_readable(s.fd[0], stop.get_token());  // no park at all
      })
      .detach();
  const auto t0 = clock_type::now();
  std::jthread stopper([&stop] {
    std::this_thread::sleep_for(50ms);
    stop.request_stop();
  });
  fibers.run();
  CHECK(by_deadline == fd_wait::timed_out);
  CHECK(by_stop == fd_wait::stopped);
  CHECK(already == fd_wait::stopped);
  CHECK(seconds_since(t0) < 5.0);  // half of the deadline that the stop cut short
  CHECK(loop.pending_timers() == 0);
  // A regular file: epoll refuses it, the fiber gets the error and nothing stays parked.
  bool refused = false;
  fibers
      .spawn([&] {
        std::FILE* f = std::tmpfile();
        REQUIRE(f != nullptr);
        try {
          (void)this_fiber::wait_readable(::fileno(f));
        } catch (const std::system_error&) {
          refused = true;
        }
        std::fclose(f);
      })
      .detach();
  fibers.run();
  CHECK(refused);
}

TEST_CASE("M:N: 100 fibers parked on sockets on 3 threads all wake, and a stop wakes the rest",
          "[06][pool][fd][stop]") {
  fd_check fds;
  fiber_pool pool(3);
  std::vector<std::unique_ptr<socket_pair>> pairs;
  for (int i = 0; i < 100; ++i) pairs.push_back(std::make_unique<socket_pair>());
  std::stop_source stop;
  std::atomic<int> read_ok{0};
  std::atomic<int> stopped{0};
  std::atomic<int> written{0};
  for (int i = 0; i < 100; ++i) {
    pool.spawn([&, i] {
          this_fiber::sleep_for(1ms);  // woken on one thread, maybe resumed on another
          if (this_fiber::wait_readable(pairs[i]->fd[0], stop.get_token()) == fd_wait::ready) {
            char c = 0;
            if (::read(pairs[i]->fd[0], &c, 1) == 1) read_ok.fetch_add(1);
          } else {
            stopped.fetch_add(1);
          }
        })
        .detach();
  }
  // The even sockets get a byte from another thread 20 ms in; the odd ones a stop after that.
  std::jthread writer([&] {
    std::this_thread::sleep_for(20ms);
    for (int i = 0; i < 100; i += 2) {
      if (::write(pairs[i]->fd[1], "x", 1) == 1)
        written.fetch_add(1);  // no Catch off the main thread
    }
    // Only once the readers have read (a stop first would rightly win their race), at most 10 s.
    const auto deadline = clock_type::now() + 10s;
    while (read_ok.load() < 50 && clock_type::now() < deadline) std::this_thread::sleep_for(1ms);
    stop.request_stop();
  });
  pool.run();
  CHECK(written.load() == 50);
  CHECK(read_ok.load() == 50);
  CHECK(stopped.load() == 50);
}
