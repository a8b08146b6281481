// Per-unit costs of stackless coroutines: ours (lessons/07_coroutines) and Boost.Asio's
// awaitables, each row as the counter ns_per_unit for the unit its name states:
//   coro_resume_suspend/ours         one resume plus one suspend of one of our coroutines: a task
//                                    that loops on `co_await` of an awaiter that always suspends
//                                    (await_suspend returns void), resumed by the benchmark's
//                                    loop through detail::resume_from_outside (the engine's one way
//                                    in); no scheduler, no loop
//   coro_create_run_destroy/ours     one empty task<void> created, awaited from a parent
//                                    coroutine (symmetric transfer there and back), and destroyed:
//                                    its frame from the per-thread free list and back; compare
//                                    fiber_spawn_join/ours (units_fibers.cpp) in the same run
//   coro_create_run_destroy/asio-coro  one empty boost::asio::awaitable<void> co_spawned on one
//                                    io_context (detached) and run to its end by io.run(), in
//                                    batches of 1000 spawns per run()
//   coro_create_run_destroy/asio-coro-inline  one empty awaitable<void> created, co_awaited from
//                                    a parent awaitable and destroyed: the form of ours
//   coro_when_all/ours               one child of a when_all over 1000 empty task<void> children,
//                                    on a coro_scheduler (the child's frame, its unit, its run
//                                    from the ready queue, its outcome; the vector and the gather
//                                    divided among the children)
//   coro_skynet/ours/<P>             one task of the full skynet tree (10-ary, 1 000 000 leaves,
//                                    1 111 111 tasks, the sum 499 999 500 000 checked), each task a
//                                    when_all over its 10 children's tasks, a leaf returning its
//                                    index. P = 1: the whole tree on one coro_scheduler. P > 1: P
//                                    threads, each with its own loop and coro_scheduler; the
//                                    root's 10 subtrees (100 000 leaves each) are dealt round robin
//                                    to the threads, each thread runs its subtrees to their sums,
//                                    and the calling thread (thread 0) adds up the 10 sums as the
//                                    root; the time is from before the threads start to after the
//                                    last joins
//   coro_skynet/asio-coro/1          the same tree as Boost.Asio awaitables on one io_context,
//                                    each awaitable co_awaiting its 10 children one after another
//                                    (`co_await child(...)` runs a child inline, in the depth-first
//                                    order our when_all runs its children in): Asio's fast form
//   coro_skynet/asio-coro-group/1    the same with Asio's concurrent gather, the form of ours:
//                                    each child co_spawned (deferred) into an experimental ranged
//                                    parallel_group, co_awaited with wait_for_all (one tree, in
//                                    the full run only: it takes seconds)
//   coro_skynet/ours-inline/1        ours in asio-coro/1's form: each child task co_awaited in
//                                    turn (no scheduler, no gather: run_sync on the root)
// Frames: ours come from the per-thread free lists (frames.cpp); Asio's awaitable frames from its
// thread-local recycling allocator.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <thread>
#include <vector>

#include "lessons/05_event_loop/event_loop.hpp"
#include "lessons/07_coroutines/scheduler.hpp"
#include "lessons/07_coroutines/task.hpp"
#include "lessons/07_coroutines/when_all.hpp"

namespace {

namespace asio = boost::asio;
namespace coro = clab::coro;
using clock_type = std::chrono::steady_clock;

double ns_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double, std::nano>(b - a).count();
}

// --- one resume + one suspend -----------------------------------------------------------------

/// Hands control back to whoever resumed the coroutine, every time.
struct always_suspend {
  [[nodiscard]] bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<>) const noexcept {}
  void await_resume() const noexcept {}
};

coro::task<void> suspend_forever(std::uint64_t& count) {
  for (;;) {
    co_await always_suspend{};
    ++count;
  }
}

void coro_resume_suspend_ours(benchmark::State& state) {
  std::uint64_t count = 0;
  coro::task<void> t = suspend_forever(count);    // destroyed suspended, at the end (never returns)
  coro::detail::resume_from_outside(t.handle());  // up to its first suspension
  const auto t0 = clock_type::now();
  for (auto _ : state) coro::detail::resume_from_outside(t.handle());
  const double ns = ns_between(t0, clock_type::now());
  benchmark::DoNotOptimize(count);
  state.counters["ns_per_unit"] = ns / static_cast<double>(state.iterations());
}

// --- create + run + destroy -------------------------------------------------------------------

coro::task<void> empty_task() { co_return; }

coro::task<void> await_empties(benchmark::State& state, double& ns) {
  const auto t0 = clock_type::now();
  for (auto _ : state) co_await empty_task();
  ns = ns_between(t0, clock_type::now()) / static_cast<double>(state.iterations());
}

void coro_create_run_destroy_ours(benchmark::State& state) {
  double ns = 0;
  coro::run_sync(await_empties(state, ns));
  state.counters["ns_per_unit"] = ns;
}

asio::awaitable<void> empty_awaitable() { co_return; }

void coro_create_run_destroy_asio(benchmark::State& state) {
  constexpr int k_batch = 1000;
  asio::io_context io(1);
  std::int64_t spawned = 0;
  const auto t0 = clock_type::now();
  for (auto _ : state) {
    for (int i = 0; i < k_batch; ++i) asio::co_spawn(io, empty_awaitable(), asio::detached);
    io.run();
    io.restart();
    spawned += k_batch;
  }
  state.counters["ns_per_unit"] = ns_between(t0, clock_type::now()) / static_cast<double>(spawned);
}

asio::awaitable<void> await_empty_awaitables(benchmark::State& state, double& ns) {
  const auto t0 = clock_type::now();
  for (auto _ : state) co_await empty_awaitable();
  ns = ns_between(t0, clock_type::now()) / static_cast<double>(state.iterations());
}

void coro_create_run_destroy_asio_inline(benchmark::State& state) {
  asio::io_context io(1);
  double ns = 0;
  asio::co_spawn(io, await_empty_awaitables(state, ns), asio::detached);
  io.run();
  state.counters["ns_per_unit"] = ns;
}

// --- when_all ---------------------------------------------------------------------------------

coro::task<void> when_all_rounds(benchmark::State& state, std::size_t children, double& ns) {
  std::uint64_t done = 0;
  const auto t0 = clock_type::now();
  for (auto _ : state) {
    std::vector<coro::task<void>> kids;
    kids.reserve(children);
    for (std::size_t i = 0; i < children; ++i) kids.push_back(empty_task());
    auto outcomes = co_await coro::when_all(std::move(kids));
    done += outcomes.size();
  }
  ns = ns_between(t0, clock_type::now()) / static_cast<double>(done);
}

void coro_when_all_ours(benchmark::State& state) {
  clab::event_loop loop;
  coro::coro_scheduler sched(loop);
  double ns = 0;
  sched.spawn(when_all_rounds(state, 1000, ns)).detach();
  sched.run();
  state.counters["ns_per_unit"] = ns;
}

// --- skynet -----------------------------------------------------------------------------------

constexpr std::uint64_t k_leaves = 1'000'000;
constexpr std::uint64_t k_tasks = 1'111'111;
constexpr std::uint64_t k_sum = 499'999'500'000;
static_assert(k_sum == k_leaves * (k_leaves - 1) / 2);

/// The subtree of `leaves` leaves numbered from `first`: a when_all over its 10 children.
coro::task<std::uint64_t> skynet_ours(std::uint64_t first, std::uint64_t leaves) {
  if (leaves == 1) co_return first;
  const std::uint64_t part = leaves / 10;
  std::vector<coro::task<std::uint64_t>> kids;
  kids.reserve(10);
  for (std::uint64_t k = 0; k < 10; ++k) kids.push_back(skynet_ours(first + k * part, part));
  std::uint64_t sum = 0;
  for (auto& o : co_await coro::when_all(std::move(kids))) sum += o.value();
  co_return sum;
}

/// One thread's share of the tree at P > 1: the root's subtrees k, k + P, ... on its own loop.
std::uint64_t skynet_subtrees(int k, int p) {
  clab::event_loop loop;
  coro::coro_scheduler sched(loop);
  constexpr std::uint64_t part = k_leaves / 10;
  std::vector<coro::coro_handle<std::uint64_t>> mine;
  for (int s = k; s < 10; s += p) mine.push_back(sched.spawn(skynet_ours(s * part, part)));
  sched.run();
  std::uint64_t sum = 0;
  for (auto& h : mine) sum += h.join();
  return sum;
}

void coro_skynet_ours(benchmark::State& state) {
  const int p = static_cast<int>(state.range(0));
  for (auto _ : state) {
    std::uint64_t sum = 0;
    const auto t0 = clock_type::now();
    if (p == 1) {
      clab::event_loop loop;
      coro::coro_scheduler sched(loop);
      auto h = sched.spawn(skynet_ours(0, k_leaves));
      sched.run();
      sum = h.join();
    } else {
      std::vector<std::uint64_t> sums(static_cast<std::size_t>(p), 0);
      {
        std::vector<std::jthread> threads;
        for (int k = 1; k < p; ++k) {
          threads.emplace_back(
              [&sums, k, p] { sums[static_cast<std::size_t>(k)] = skynet_subtrees(k, p); });
        }
        sums[0] = skynet_subtrees(0, p);
      }
      for (const std::uint64_t s : sums) sum += s;
    }
    const double ns = ns_between(t0, clock_type::now());
    if (sum != k_sum) {
      state.SkipWithError("skynet: wrong sum");
      return;
    }
    state.SetIterationTime(ns / 1e9);
    state.counters["ns_per_unit"] = ns / static_cast<double>(k_tasks);
  }
}

/// The same tree in Asio's awaitables: each child co_awaited in turn (inline, no co_spawn).
asio::awaitable<std::uint64_t> skynet_asio(std::uint64_t first, std::uint64_t leaves) {
  if (leaves == 1) co_return first;
  const std::uint64_t part = leaves / 10;
  std::uint64_t sum = 0;
  for (std::uint64_t k = 0; k < 10; ++k) sum += co_await skynet_asio(first + k * part, part);
  co_return sum;
}

asio::awaitable<void> skynet_asio_root(std::uint64_t& sum) {
  sum = co_await skynet_asio(0, k_leaves);
}

void coro_skynet_asio(benchmark::State& state) {
  for (auto _ : state) {
    std::uint64_t sum = 0;
    const auto t0 = clock_type::now();
    asio::io_context io(1);
    asio::co_spawn(io, skynet_asio_root(sum), asio::detached);
    io.run();
    const double ns = ns_between(t0, clock_type::now());
    if (sum != k_sum) {
      state.SkipWithError("skynet: wrong sum");
      return;
    }
    state.SetIterationTime(ns / 1e9);
    state.counters["ns_per_unit"] = ns / static_cast<double>(k_tasks);
  }
}

/// The same tree with Asio's concurrent gather: each child co_spawned (deferred) into a ranged
/// parallel_group, awaited with wait_for_all: the children run as separate spawned threads of
/// execution, as ours do under when_all.
asio::awaitable<std::uint64_t> skynet_asio_group(std::uint64_t first, std::uint64_t leaves) {
  if (leaves == 1) co_return first;
  const std::uint64_t part = leaves / 10;
  const auto ex = co_await asio::this_coro::executor;
  using op = decltype(asio::co_spawn(ex, skynet_asio_group(0, 1), asio::deferred));
  std::vector<op> ops;
  ops.reserve(10);
  for (std::uint64_t k = 0; k < 10; ++k) {
    ops.push_back(asio::co_spawn(ex, skynet_asio_group(first + k * part, part), asio::deferred));
  }
  auto [order, errors, values] =
      co_await asio::experimental::make_parallel_group(std::move(ops))
          .async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);
  std::uint64_t sum = 0;
  for (std::size_t k = 0; k < values.size(); ++k) {
    if (errors[k]) std::rethrow_exception(errors[k]);
    sum += values[k];
  }
  co_return sum;
}

asio::awaitable<void> skynet_asio_group_root(std::uint64_t& sum) {
  sum = co_await skynet_asio_group(0, k_leaves);
}

void coro_skynet_asio_group(benchmark::State& state) {
  for (auto _ : state) {
    std::uint64_t sum = 0;
    const auto t0 = clock_type::now();
    asio::io_context io(1);
    asio::co_spawn(io, skynet_asio_group_root(sum), asio::detached);
    io.run();
    const double ns = ns_between(t0, clock_type::now());
    if (sum != k_sum) {
      state.SkipWithError("skynet: wrong sum");
      return;
    }
    state.SetIterationTime(ns / 1e9);
    state.counters["ns_per_unit"] = ns / static_cast<double>(k_tasks);
  }
}

/// Ours without the gather: each child task co_awaited in turn (the form of asio-coro's row).
coro::task<std::uint64_t> skynet_ours_inline(std::uint64_t first, std::uint64_t leaves) {
  if (leaves == 1) co_return first;
  const std::uint64_t part = leaves / 10;
  std::uint64_t sum = 0;
  for (std::uint64_t k = 0; k < 10; ++k) sum += co_await skynet_ours_inline(first + k * part, part);
  co_return sum;
}

void coro_skynet_ours_inline(benchmark::State& state) {
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    const std::uint64_t sum = coro::run_sync(skynet_ours_inline(0, k_leaves));
    const double ns = ns_between(t0, clock_type::now());
    if (sum != k_sum) {
      state.SkipWithError("skynet: wrong sum");
      return;
    }
    state.SetIterationTime(ns / 1e9);
    state.counters["ns_per_unit"] = ns / static_cast<double>(k_tasks);
  }
}

/// P = 1, 2 and every count up to the hardware threads.
void skynet_threads(benchmark::internal::Benchmark* b) {
  const int most = std::max(2, static_cast<int>(std::thread::hardware_concurrency()));
  for (int p = 1; p <= most; p = p < 2 ? 2 : p * 2) b->Arg(p);
  if ((most & (most - 1)) != 0) b->Arg(most);
}

}  // namespace

// The resume and create rows run 0.1 s per repetition, as the fiber and loop rows do.
BENCHMARK(coro_resume_suspend_ours)->Name("coro_resume_suspend/ours")->MinTime(0.1);
BENCHMARK(coro_create_run_destroy_ours)->Name("coro_create_run_destroy/ours")->MinTime(0.1);
BENCHMARK(coro_create_run_destroy_asio)->Name("coro_create_run_destroy/asio-coro")->MinTime(0.1);
BENCHMARK(coro_create_run_destroy_asio_inline)
    ->Name("coro_create_run_destroy/asio-coro-inline")
    ->MinTime(0.1);
BENCHMARK(coro_when_all_ours)->Name("coro_when_all/ours")->MinTime(0.1);
// The full tree, timed in this process, three repetitions of one tree each.
BENCHMARK(coro_skynet_ours)
    ->Name("coro_skynet/ours")
    ->Apply(skynet_threads)
    ->Iterations(1)
    ->Repetitions(3)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(coro_skynet_asio)
    ->Name("coro_skynet/asio-coro")
    ->Arg(1)
    ->Iterations(1)
    ->Repetitions(3)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(coro_skynet_ours_inline)
    ->Name("coro_skynet/ours-inline")
    ->Arg(1)
    ->Iterations(1)
    ->Repetitions(3)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

namespace clab_units {
// Asio's parallel_group tree takes seconds (about 5 µs a task on the development VM): measured
// once, in the full run only (bench_units --quick leaves it out).
void register_coro_slow(bool quick) {
  if (quick) return;
  benchmark::RegisterBenchmark("coro_skynet/asio-coro-group/1", coro_skynet_asio_group)
      ->Iterations(1)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
}
}  // namespace clab_units
