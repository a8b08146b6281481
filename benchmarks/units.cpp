// Per-unit costs, each reported as the counter ns_per_unit, for the one unit its name states:
//   thread_start_join          one std::jthread constructed, run (empty) and joined
//   kernel_iteration           one xorshift* round of the CPU kernel
//   sleep_overshoot/<us>       how late one blocking sleep of that length wakes (ns past the asked)
//   task_overhead/<executor>   one empty task run through that executor (the run / N, N = 1000)
// These are the overhead terms the models add; the report plots them on a log scale.
#include <benchmark/benchmark.h>

#include <chrono>
#include <string>
#include <thread>

#include "lessons/registry.hpp"
#include "workloads/calibration.hpp"
#include "workloads/kernel.hpp"
#include "workloads/verify.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

double ns_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double, std::nano>(b - a).count();
}

void thread_start_join(benchmark::State& state) {
  const auto t0 = clock_type::now();
  for (auto _ : state) {
    std::jthread t([] {});
  }
  state.counters["ns_per_unit"] =
      ns_between(t0, clock_type::now()) / static_cast<double>(state.iterations());
}
BENCHMARK(thread_start_join)->UseRealTime();

void kernel_iteration(benchmark::State& state) {
  constexpr std::uint64_t k_per_call = 1U << 16U;
  std::uint64_t seed = 1;
  const auto t0 = clock_type::now();
  for (auto _ : state) {
    seed = clab::spin(seed, k_per_call);
    benchmark::DoNotOptimize(seed);
  }
  state.counters["ns_per_unit"] =
      ns_between(t0, clock_type::now()) / (static_cast<double>(state.iterations()) * k_per_call);
}
BENCHMARK(kernel_iteration);

void sleep_overshoot(benchmark::State& state) {
  const auto asked = std::chrono::microseconds(state.range(0));
  double over_ns = 0;
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    std::this_thread::sleep_for(asked);
    over_ns += ns_between(t0, clock_type::now()) -
               static_cast<double>(std::chrono::nanoseconds(asked).count());
  }
  state.counters["ns_per_unit"] = over_ns / static_cast<double>(state.iterations());
}
BENCHMARK(sleep_overshoot)->Arg(100)->Arg(1000)->Arg(10000)->UseRealTime();

void task_overhead(benchmark::State& state, const clab::executor* e) {
  constexpr std::size_t k_tasks = 1000;
  const auto tasks = clab::make_task_set(
      {.tasks = k_tasks, .kind = clab::workload::cpu, .task_us = 0, .seed = 1}, 1.0);
  const auto reference = clab::reference_checksums(tasks);
  double total_ns = 0;
  for (auto _ : state) {
    const clab::run_result r = clab::measure(*e, tasks, {.workers = clab::available_cores()});
    total_ns += static_cast<double>(r.makespan_ns);
    if (!clab::verify(tasks, r, reference).ok) {
      state.SkipWithError("unverified run");
      return;
    }
  }
  state.counters["ns_per_unit"] = total_ns / (static_cast<double>(state.iterations()) * k_tasks);
}

}  // namespace

int main(int argc, char** argv) {
  for (const clab::executor* e : clab::all_executors()) {
    benchmark::RegisterBenchmark(("task_overhead/" + std::string(e->name)).c_str(), task_overhead,
                                 e)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
