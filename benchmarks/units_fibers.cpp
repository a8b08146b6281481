// Per-unit costs of stackful fibers: raw Boost.Context, our scheduler (lessons/06_fibers) and
// Boost.Fiber, each row as the counter ns_per_unit for the unit its name states:
//   fiber_switch/raw               one switch of a boost::context::fiber ping-pong between the
//                                  benchmark's thread and one fiber (one resume = one switch; a
//                                  round trip is two)
//   fiber_switch/ours              one switch between two of our fibers on one thread, each calling
//                                  this_fiber::yield() in turn (a loop turn every 64 resumes)
//   fiber_spawn_join/ours          one empty fiber of ours spawned (work-first: it runs at once),
//                                  run and joined, from a fiber, on one thread (slab stacks)
//   fiber_skynet/ours/<P>          one fiber of the full skynet tree (10-ary, 1 000 000 leaves,
//                                  1 111 111 fibers, the sum 499 999 500 000 checked), each fiber
//                                  joining its 10 children's handles: P = 1 on one scheduler, P
//                                  threads through a fiber_pool
//   fiber_parked_rss/ours          resident memory per fiber with 100 000 of ours parked at once,
//                                  each in sleep_until on the loop (bytes_per_fiber, VmRSS above
//                                  the baseline in a fresh child; ns_per_unit: CPU per spawn and
//                                  park)
//   fiber_switch/boost-fiber       one switch between two Boost.Fiber fibers on one thread, each
//                                  calling boost::this_fiber::yield() in turn (round_robin)
//   fiber_spawn_join/boost-fiber   one empty fiber spawned, run and joined, on one thread
//                                  (round_robin, Boost's default stack: fixedsize_stack, 128 KiB)
//   fiber_skynet/boost-fiber/<P>   one fiber of the skynet tree (10-ary, 10 000 leaves, 11 111
//                                  fibers; each fiber spawns 10 children, joins them and returns
//                                  the sum of what they wrote into its array; a leaf returns its
//                                  index; the sum 49 995 000 is checked), P threads: round_robin
//                                  at P = 1, work_stealing above. Each repetition is a fresh child
//                                  process (work_stealing cannot start twice in one process: see
//                                  lessons/06_fibers/boost_fiber.cpp) that builds the tree once to
//                                  warm its memory (malloc told not to give it back), then once
//                                  timed
//   fiber_parked_rss/boost-fiber   resident memory per fiber with 100 000 fibers parked at once on
//                                  one condition variable (bytes_per_fiber, VmRSS above the
//                                  baseline, in a fresh child process; ns_per_unit: the CPU per
//                                  fiber to spawn and park it)
// Stacks: skynet and the parked fibers use Boost's fixedsize_stack (malloc, no guard page) of
// 16 KiB, as Boost's own skynet benchmarks use fixedsize_stack (of 8 KiB there; launch::dispatch
// overflows 8 KiB here): its default 128 KiB, served by one mmap each, would hit vm.max_map_count
// (65 530) near 65 000 fibers, and the pooled_fixedsize_stack is not thread-safe, which
// work_stealing needs (a stolen fiber's stack is freed on the thief's thread).
#include <benchmark/benchmark.h>
#include <malloc.h>
#include <time.h>

#include <array>
#include <atomic>
#include <boost/context/fiber.hpp>
#include <boost/fiber/algo/round_robin.hpp>
#include <boost/fiber/algo/work_stealing.hpp>
#include <boost/fiber/condition_variable.hpp>
#include <boost/fiber/fiber.hpp>
#include <boost/fiber/fixedsize_stack.hpp>
#include <boost/fiber/mutex.hpp>
#include <boost/fiber/operations.hpp>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "lessons/05_event_loop/event_loop.hpp"
#include "lessons/06_fibers/boost_fiber_child.hpp"
#include "lessons/06_fibers/fiber.hpp"

namespace {

namespace fibers = boost::fibers;
namespace ctx = boost::context;
using clock_type = std::chrono::steady_clock;

double ns_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double, std::nano>(b - a).count();
}

// --- one switch -------------------------------------------------------------------------------

void fiber_switch_raw(benchmark::State& state) {
  // The fiber hands control straight back each time it is resumed. It never returns: destroying
  // `f` at the end unwinds its stack (Boost.Context's forced_unwind), which must not be caught.
  ctx::fiber f{[](ctx::fiber&& caller) {
    for (;;) caller = std::move(caller).resume();
    return std::move(caller);
  }};
  const auto t0 = clock_type::now();
  for (auto _ : state) f = std::move(f).resume();  // there and back: two switches
  state.counters["ns_per_unit"] =
      ns_between(t0, clock_type::now()) / (2.0 * static_cast<double>(state.iterations()));
}

void fiber_switch_boost_fiber(benchmark::State& state) {
  fibers::use_scheduling_algorithm<fibers::algo::round_robin>();
  bool done = false;
  double ns = 0;
  // The benchmark loop itself runs in fiber `a`: each iteration yields to `b`, which yields back.
  // The main fiber sits in join(), off the ready queue, so only a and b take turns.
  fibers::fiber a([&] {
    const auto t0 = clock_type::now();
    for (auto _ : state) boost::this_fiber::yield();  // a → b → a: two switches
    ns = ns_between(t0, clock_type::now());
    done = true;
  });
  fibers::fiber b([&done] {
    while (!done) boost::this_fiber::yield();
  });
  a.join();
  b.join();
  state.counters["ns_per_unit"] = ns / (2.0 * static_cast<double>(state.iterations()));
}

// --- spawn and join ---------------------------------------------------------------------------

void fiber_spawn_join_boost_fiber(benchmark::State& state) {
  fibers::use_scheduling_algorithm<fibers::algo::round_robin>();
  const auto t0 = clock_type::now();
  for (auto _ : state) {
    fibers::fiber f([] {});
    f.join();
  }
  state.counters["ns_per_unit"] =
      ns_between(t0, clock_type::now()) / static_cast<double>(state.iterations());
}

// --- skynet ------------------------------------------------------------------------------------

constexpr std::size_t k_stack_bytes = 16 * 1024;
constexpr std::uint64_t k_skynet_leaves = 10'000;
constexpr std::uint64_t k_skynet_fibers = 11'111;   // 10 000 + 1000 + 100 + 10 + 1
constexpr std::uint64_t k_skynet_sum = 49'995'000;  // 0 + 1 + ... + 9 999
static_assert(k_skynet_sum == k_skynet_leaves * (k_skynet_leaves - 1) / 2);

/// The subtree of `leaves` leaves numbered from `first`: a leaf returns its number; any other
/// node spawns 10 children, each writing its result into this fiber's array, and joins them. The
/// join orders a child's write before the parent's read, on any thread: no future, no channel.
std::uint64_t skynet(fibers::fixedsize_stack& stacks, std::uint64_t first, std::uint64_t leaves) {
  if (leaves == 1) return first;
  const std::uint64_t sub = leaves / 10;
  std::array<std::uint64_t, 10> part{};
  std::array<fibers::fiber, 10> children;
  for (std::size_t k = 0; k < 10; ++k) {
    children[k] = fibers::fiber(std::allocator_arg, stacks, [&part, &stacks, k, first, sub] {
      part[k] = skynet(stacks, first + k * sub, sub);
    });
  }
  std::uint64_t sum = 0;
  for (std::size_t k = 0; k < 10; ++k) {
    children[k].join();
    sum += part[k];
  }
  return sum;
}

struct skynet_report {
  double ns = 0;
  std::uint64_t sum = 0;
};

/// In the child: P threads (round_robin at P = 1, work_stealing above; the calling thread builds
/// the tree, the others steal), the tree once to warm the memory, then once timed.
void skynet_in_child(int p, const clab::child_channel<skynet_report>& channel) {
  const auto threads = static_cast<std::uint32_t>(p);
  fibers::mutex mutex;
  fibers::condition_variable all_done;
  bool done = false;  // guarded by mutex
  std::vector<std::thread> helpers;
  for (int k = 1; k < p; ++k) {
    helpers.emplace_back([&] {
      fibers::use_scheduling_algorithm<fibers::algo::work_stealing>(threads);
      std::unique_lock lock(mutex);
      all_done.wait(lock, [&done] { return done; });
    });
  }
  if (p > 1) {
    fibers::use_scheduling_algorithm<fibers::algo::work_stealing>(threads);
  } else {
    fibers::use_scheduling_algorithm<fibers::algo::round_robin>();
  }
  // Boost frees a finished fiber's stack only when its dispatcher runs, i.e. when no fiber is
  // ready, which skynet never allows before the end: all 11 111 stacks are live at once. A first
  // touch of a page costs tens of µs on the development VM, more than the fiber itself, so the
  // child keeps freed memory (no trimming) and the timed tree reuses the warm-up's pages.
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  fibers::fixedsize_stack stacks(k_stack_bytes);
  skynet_report r;
  r.sum = skynet(stacks, 0, k_skynet_leaves);  // warm-up: every stack page touched once
  if (r.sum == k_skynet_sum) {
    const auto t0 = clock_type::now();
    r.sum = skynet(stacks, 0, k_skynet_leaves);
    r.ns = ns_between(t0, clock_type::now());
  }
  {
    const std::lock_guard lock(mutex);
    done = true;
  }
  all_done.notify_all();
  for (std::thread& t : helpers) t.join();
  channel.send(r);
}

void fiber_skynet_boost_fiber(benchmark::State& state) {
  const int p = static_cast<int>(state.range(0));
  for (auto _ : state) {
    skynet_report got;
    const clab::child_end end = clab::run_in_child<skynet_report>(
        [p](const clab::child_channel<skynet_report>& ch) { skynet_in_child(p, ch); },
        [&got](const skynet_report& r) { got = r; });
    if (end.exit_status != 0 || got.sum != k_skynet_sum) {
      state.SkipWithError("skynet: wrong sum, or the child failed");
      return;
    }
    state.SetIterationTime(got.ns / 1e9);
    state.counters["ns_per_unit"] = got.ns / static_cast<double>(k_skynet_fibers);
  }
}

// --- parked fibers -----------------------------------------------------------------------------

constexpr int k_parked = 100'000;

/// The resident set of this process now (VmRSS, kB in /proc/self/status), in bytes.
std::int64_t rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == "VmRSS:") {
      std::int64_t kb = 0;
      status >> kb;
      return kb * 1024;
    }
    status.ignore(4096, '\n');
  }
  return -1;
}

std::int64_t process_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

struct parked_report {
  std::int64_t bytes = 0;   // VmRSS with every fiber parked, above the baseline
  std::int64_t cpu_ns = 0;  // spawning and parking them all
  int parked = 0;
};

/// In a fresh child (its memory is its own, not the benchmark's freed heap): the baseline, then
/// 100 000 fibers each waiting on one condition variable, the resident set read once all wait.
void parked_in_child(const clab::child_channel<parked_report>& channel) {
  fibers::use_scheduling_algorithm<fibers::algo::round_robin>();
  fibers::fixedsize_stack stacks(k_stack_bytes);
  fibers::mutex mutex;
  fibers::condition_variable wake;
  bool release = false;  // guarded by mutex
  int parked = 0;        // this thread only
  std::vector<fibers::fiber> all;
  all.reserve(k_parked);  // the vector's own memory is outside the measurement
  parked_report r;
  const std::int64_t base = rss_bytes();
  const std::int64_t cpu0 = process_cpu_ns();
  for (int i = 0; i < k_parked; ++i) {
    all.emplace_back(std::allocator_arg, stacks, [&] {
      std::unique_lock lock(mutex);
      ++parked;
      wake.wait(lock, [&release] { return release; });
    });
  }
  while (parked < k_parked) boost::this_fiber::yield();  // each new fiber runs up to its wait
  r.cpu_ns = process_cpu_ns() - cpu0;
  r.bytes = rss_bytes() - base;
  r.parked = parked;
  {
    const std::lock_guard lock(mutex);
    release = true;
  }
  wake.notify_all();
  for (fibers::fiber& f : all) f.join();
  channel.send(r);
}

void fiber_parked_rss_boost_fiber(benchmark::State& state) {
  for (auto _ : state) {
    parked_report got;
    const clab::child_end end = clab::run_in_child<parked_report>(
        parked_in_child, [&got](const parked_report& r) { got = r; });
    if (end.exit_status != 0 || got.parked != k_parked || got.bytes <= 0) {
      state.SkipWithError("the child did not park every fiber");
      return;
    }
    state.counters["bytes_per_fiber"] = static_cast<double>(got.bytes) / k_parked;
    state.counters["ns_per_unit"] = static_cast<double>(got.cpu_ns) / k_parked;
  }
}

// --- ours -----------------------------------------------------------------------------------

void fiber_switch_ours(benchmark::State& state) {
  clab::event_loop loop;
  clab::fiber_scheduler fibers(loop);
  bool done = false;
  std::int64_t iterations = 0;
  const auto t0 = clock_type::now();
  fibers
      .spawn([&] {
        for (auto _ : state) clab::this_fiber::yield();  // to the other fiber, and back: 2 switches
        iterations = static_cast<std::int64_t>(state.iterations());
        done = true;
      })
      .detach();
  fibers
      .spawn([&done] {
        while (!done) clab::this_fiber::yield();
      })
      .detach();
  fibers.run();
  state.counters["ns_per_unit"] =
      ns_between(t0, clock_type::now()) /
      (2.0 * static_cast<double>(std::max<std::int64_t>(1, iterations)));
}

void fiber_spawn_join_ours(benchmark::State& state) {
  clab::event_loop loop;
  clab::fiber_scheduler fibers(loop);
  double ns = 0;
  fibers
      .spawn([&] {
        const auto t0 = clock_type::now();
        for (auto _ : state) fibers.spawn([] {}).join();
        ns = ns_between(t0, clock_type::now()) / static_cast<double>(state.iterations());
      })
      .detach();
  fibers.run();
  state.counters["ns_per_unit"] = ns;
}

constexpr std::uint64_t k_full_leaves = 1'000'000;
constexpr std::uint64_t k_full_fibers = 1'111'111;
constexpr std::uint64_t k_full_sum = 499'999'500'000;
static_assert(k_full_sum == k_full_leaves * (k_full_leaves - 1) / 2);

/// The subtree of `leaves` leaves numbered from `first`, each node a fiber spawned through `s` (a
/// fiber_scheduler or a fiber_pool: work-first from inside a fiber either way).
template <class Spawner>
std::uint64_t skynet_ours(Spawner& s, std::uint64_t first, std::uint64_t leaves) {
  if (leaves == 1) return first;
  const std::uint64_t part = leaves / 10;
  std::array<clab::fiber_handle<std::uint64_t>, 10> kids;
  for (std::uint64_t k = 0; k < 10; ++k) {
    kids[k] = s.spawn([&s, from = first + k * part, part] { return skynet_ours(s, from, part); });
  }
  std::uint64_t sum = 0;
  for (auto& kid : kids) sum += kid.join();
  return sum;
}

void fiber_skynet_ours(benchmark::State& state) {
  const int p = static_cast<int>(state.range(0));
  for (auto _ : state) {
    std::uint64_t sum = 0;
    const auto t0 = clock_type::now();
    if (p == 1) {
      clab::event_loop loop;
      clab::fiber_scheduler fibers(loop);
      fibers.spawn([&] { sum = skynet_ours(fibers, 0, k_full_leaves); }).detach();
      fibers.run();
    } else {
      clab::fiber_pool pool(p);
      pool.spawn([&] { sum = skynet_ours(pool, 0, k_full_leaves); }).detach();
      pool.run();
    }
    const double ns = ns_between(t0, clock_type::now());
    if (sum != k_full_sum) {
      state.SkipWithError("skynet: wrong sum");
      return;
    }
    state.SetIterationTime(ns / 1e9);
    state.counters["ns_per_unit"] = ns / static_cast<double>(k_full_fibers);
  }
}

/// In a fresh child: the baseline, then 100 000 of our fibers parked in sleep_until at once (a
/// fiber spawned last reads the resident set once every one has parked), then all woken. The
/// common deadline is set once they are spawned: as long again as spawning took (running each up
/// to its park touches about as many pages), plus 0.3 s; a fiber awake before the reading spoils
/// it, and the row says so.
void parked_ours_in_child(const clab::child_channel<parked_report>& channel) {
  clab::event_loop loop;
  clab::fiber_scheduler fibers(loop);
  parked_report r;
  int parked = 0;
  int woken = 0;
  clab::event_loop::clock::time_point deadline{};
  const std::int64_t base = rss_bytes();
  const std::int64_t cpu0 = process_cpu_ns();
  const auto t0 = clab::event_loop::clock::now();
  for (int i = 0; i < k_parked; ++i) {
    fibers
        .spawn([&] {
          ++parked;
          clab::this_fiber::sleep_until(deadline);
          ++woken;
        })
        .detach();
  }
  fibers
      .spawn([&] {
        while (parked < k_parked) clab::this_fiber::yield();  // every one has run up to its park
        r.cpu_ns = process_cpu_ns() - cpu0;
        r.bytes = rss_bytes() - base;
        r.parked = woken == 0 ? parked : -woken;
      })
      .detach();
  const auto now = clab::event_loop::clock::now();
  deadline = now + (now - t0) + std::chrono::milliseconds(300);
  fibers.run();
  channel.send(r);
}

void fiber_parked_rss_ours(benchmark::State& state) {
  for (auto _ : state) {
    parked_report got;
    const clab::child_end end = clab::run_in_child<parked_report>(
        parked_ours_in_child, [&got](const parked_report& r) { got = r; });
    if (got.parked < 0) {
      state.SkipWithError("fibers woke before the reading (the machine is slow): not measured");
      return;
    }
    if (end.exit_status != 0 || got.parked != k_parked || got.bytes <= 0) {
      state.SkipWithError("the child did not park every fiber");
      return;
    }
    state.counters["bytes_per_fiber"] = static_cast<double>(got.bytes) / k_parked;
    state.counters["ns_per_unit"] = static_cast<double>(got.cpu_ns) / k_parked;
  }
}

}  // namespace

// The switch and spawn rows run 0.1 s per repetition, as the loop rows do.
BENCHMARK(fiber_switch_raw)->Name("fiber_switch/raw")->MinTime(0.1);
BENCHMARK(fiber_switch_boost_fiber)->Name("fiber_switch/boost-fiber")->MinTime(0.1);
BENCHMARK(fiber_spawn_join_boost_fiber)->Name("fiber_spawn_join/boost-fiber")->MinTime(0.1);

BENCHMARK(fiber_switch_ours)->Name("fiber_switch/ours")->MinTime(0.1);
BENCHMARK(fiber_spawn_join_ours)->Name("fiber_spawn_join/ours")->MinTime(0.1);
// The full tree, timed in this process (ours frees a finished fiber's stack at once: depth-first,
// a few dozen stacks at a time), P = 1 and 2.
BENCHMARK(fiber_skynet_ours)
    ->Name("fiber_skynet/ours")
    ->Arg(1)
    ->Arg(2)
    ->Iterations(1)
    ->Repetitions(3)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// One child process per repetition (the tree twice, a fraction of a second); the time is the
// child's own timing of the second tree (manual time).
BENCHMARK(fiber_skynet_boost_fiber)
    ->Name("fiber_skynet/boost-fiber")
    ->Arg(1)
    ->Arg(2)
    ->Iterations(1)
    ->Repetitions(3)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

namespace clab_units {

// 100 000 parked fibers take several seconds each (first touches of 200 000 stack pages, and the
// sleep): measured once, in the full run only (bench_units --quick leaves them out).
void register_fiber_parked(bool quick) {
  if (quick) return;
  benchmark::RegisterBenchmark("fiber_parked_rss/ours", fiber_parked_rss_ours)
      ->Iterations(1)
      ->Repetitions(1)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("fiber_parked_rss/boost-fiber", fiber_parked_rss_boost_fiber)
      ->Iterations(1)
      ->Repetitions(1)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

}  // namespace clab_units
