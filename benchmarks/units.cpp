// Per-unit costs, each in ns per one unit named in the benchmark: a thread start + join, a kernel
// iteration, a blocking sleep's overshoot. These are the overhead terms the models add.
#include <benchmark/benchmark.h>

#include <chrono>
#include <thread>

#include "workloads/kernel.hpp"

namespace {

// Counting convention: one unit = one std::jthread constructed, run (empty) and joined.
void thread_start_join(benchmark::State& state) {
  for (auto _ : state) {
    std::jthread t([] {});
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(thread_start_join)->UseRealTime();

// Counting convention: one unit = one kernel iteration (one xorshift* round); 2^16 per call.
void kernel_iteration(benchmark::State& state) {
  constexpr std::uint64_t k_iterations = 1U << 16U;
  std::uint64_t seed = 1;
  for (auto _ : state) {
    seed = clab::spin(seed, k_iterations);
    benchmark::DoNotOptimize(seed);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(k_iterations));
  state.counters["ns_per_iteration"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * k_iterations,
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(kernel_iteration);

// Counting convention: one unit = one sleep_for(1 ms); the counter is the time past the 1 ms asked.
void sleep_overshoot(benchmark::State& state) {
  const auto asked = std::chrono::microseconds(state.range(0));
  double over_ns = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(asked);
    over_ns +=
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0 - asked)
            .count();
  }
  state.counters["overshoot_ns"] = over_ns / static_cast<double>(state.iterations());
}
BENCHMARK(sleep_overshoot)->Arg(100)->Arg(1000)->Arg(10000)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
