// Per-unit costs, each reported as the counter ns_per_unit, for the one unit its name states:
//   thread_start_join          one std::jthread constructed, run (empty) and joined
//   kernel_iteration           one xorshift* round of the CPU kernel
//   sleep_overshoot/<us>       how late one blocking sleep of that length wakes (ns past the asked)
//   task_overhead/<executor>   one empty task run through that executor (the run / N, N = 1000;
//                              100 for a thread or process per task)
//   fork_wait_rss/<MiB>        one fork() of a parent holding that much resident memory, the
//                              child _exit(0)ing at once, and its waitpid(): page tables are
//                              copied, pages are not (copy-on-write)
//   fork_write_wait_rss/<MiB>  the same, but the child writes one byte to every page of that
//                              memory first: now every page is copied, one fault each
//   posix_spawn_wait_rss/<MiB> one posix_spawn() of /bin/true and its waitpid(), from the same
//                              parent: glibc's posix_spawn shares the address space until exec
//                              (CLONE_VM | CLONE_VFORK), so it copies no page tables at all
//   pool_round_trip            one empty task through a one-worker process pool (lesson 04): the
//                              task message down one pipe, the report up another
// These are the overhead terms the models add; the report plots them on a log scale.
//   bench_units [--quick] [Google Benchmark flags...]   --quick: make bench QUICK=1's budget
#include <benchmark/benchmark.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "lessons/04_process_pool/process_pool.hpp"
#include "lessons/registry.hpp"
#include "workloads/calibration.hpp"
#include "workloads/kernel.hpp"
#include "workloads/verify.hpp"

extern char** environ;

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
BENCHMARK(sleep_overshoot)->Arg(100)->Arg(1000)->Arg(10000)->MinTime(0.2)->UseRealTime();

void task_overhead(benchmark::State& state, const clab::executor* e) {
  // A thread or a process per task costs tens to hundreds of µs each: 100 tasks time it well.
  const std::size_t k_tasks = e->plan.workers == clab::worker_rule::one_per_task ? 100 : 1000;
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
  state.counters["ns_per_unit"] =
      total_ns / (static_cast<double>(state.iterations()) * static_cast<double>(k_tasks));
}

/// `mib` MiB of private memory, every page written (resident), in 4 KiB pages: transparent huge
/// pages are turned off for it, so that the page-table size follows the memory on every machine.
class resident_memory {
 public:
  explicit resident_memory(std::size_t mib) : size_(mib << 20U) {
    if (size_ == 0) return;
    void* p = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return;
    madvise(p, size_, MADV_NOHUGEPAGE);
    std::memset(p, 1, size_);
    data_ = static_cast<char*>(p);
  }
  resident_memory(const resident_memory&) = delete;
  resident_memory& operator=(const resident_memory&) = delete;
  ~resident_memory() {
    if (data_ != nullptr) munmap(data_, size_);
  }
  [[nodiscard]] bool ok() const { return size_ == 0 || data_ != nullptr; }
  /// Writes one byte per page: in a forked child, this copies every page.
  void touch_every_page() {
    for (std::size_t i = 0; i < size_; i += 4096) data_[i] = 2;
  }

 private:
  std::size_t size_;
  char* data_ = nullptr;
};

/// The memory for this size: Google Benchmark calls a benchmark several times (to pick an
/// iteration count, then once per repetition), and writing 1 GiB takes longer than the forks
/// themselves, so the last size stays mapped until another size is asked for.
resident_memory& memory_of(std::size_t mib) {
  static std::unique_ptr<resident_memory> kept;
  static std::size_t kept_mib = 0;
  if (!kept || kept_mib != mib) {
    kept.reset();  // unmap the old size before mapping the new one
    kept = std::make_unique<resident_memory>(mib);
    kept_mib = mib;
  }
  return *kept;
}

void wait_for(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

void fork_wait(benchmark::State& state, bool child_writes) {
  resident_memory& memory = memory_of(static_cast<std::size_t>(state.range(0)));
  if (!memory.ok()) {
    state.SkipWithError("could not map the memory");
    return;
  }
  const auto t0 = clock_type::now();
  for (auto _ : state) {
    const pid_t pid = fork();
    if (pid == 0) {
      if (child_writes) memory.touch_every_page();
      _exit(0);
    }
    if (pid < 0) {
      state.SkipWithError("fork failed");
      return;
    }
    wait_for(pid);
  }
  state.counters["ns_per_unit"] =
      ns_between(t0, clock_type::now()) / static_cast<double>(state.iterations());
}

void fork_wait_rss(benchmark::State& state) { fork_wait(state, false); }
// Each call maps and writes its memory first (up to 1 GiB, a few tenths of a second), so these
// run for a short minimum time: a fork of a large parent is slow enough to time in few iterations.
BENCHMARK(fork_wait_rss)->Arg(0)->Arg(64)->Arg(256)->Arg(1024)->MinTime(0.05)->UseRealTime();

void fork_write_wait_rss(benchmark::State& state) { fork_wait(state, true); }
BENCHMARK(fork_write_wait_rss)->Arg(0)->Arg(64)->Arg(256)->MinTime(0.05)->UseRealTime();

void posix_spawn_wait_rss(benchmark::State& state) {
  [[maybe_unused]] resident_memory& memory = memory_of(static_cast<std::size_t>(state.range(0)));
  char program[] = "/bin/true";
  char* argv[] = {program, nullptr};
  const auto t0 = clock_type::now();
  for (auto _ : state) {
    pid_t pid = -1;
    if (posix_spawn(&pid, program, nullptr, nullptr, argv, environ) != 0) {
      state.SkipWithError("posix_spawn failed");
      return;
    }
    wait_for(pid);
  }
  state.counters["ns_per_unit"] =
      ns_between(t0, clock_type::now()) / static_cast<double>(state.iterations());
}
// 1024 first and 0 last: the memory of the last size stays mapped, and the executors' benchmarks
// after this one must fork from a small parent.
BENCHMARK(posix_spawn_wait_rss)->Arg(1024)->Arg(0)->MinTime(0.05)->UseRealTime();

void pool_round_trip(benchmark::State& state) {
  clab::process_pool pool(1);
  pool.start(0);
  const auto origin = clock_type::now();
  const clab::task empty{.id = 0, .seed = 1};
  const auto t0 = clock_type::now();
  for (auto _ : state) {
    pool.send(0, empty, origin, std::nullopt);
    if (pool.next().what != clab::child_set::event::kind::report) {
      state.SkipWithError("the worker did not answer");
      return;
    }
  }
  state.counters["ns_per_unit"] =
      ns_between(t0, clock_type::now()) / static_cast<double>(state.iterations());
}
BENCHMARK(pool_round_trip)->UseRealTime();

}  // namespace

namespace clab_units {
void register_loop_timers_1m(int repetitions);   // units_loop.cpp
void register_fiber_parked(bool quick);          // units_fibers.cpp
void register_coro_sleepers(bool quick);         // units_coro_million.cpp
int sleepers_child_main(int argc, char** argv);  // units_coro_million.cpp: a fresh process
void register_coro_slow(bool quick);             // units_coro.cpp
}  // namespace clab_units

int main(int argc, char** argv) {
  // A row's fresh process (coro_sleepers_rss): no benchmark runs there.
  if (argc > 1 && std::string_view(argv[1]).rfind("--clab-sleepers-child=", 0) == 0) {
    return clab_units::sleepers_child_main(argc, argv);
  }
  // The full run measures the executors' task overhead for 0.1 s a repetition and the million
  // timers once (a repetition of the three takes 9 s), to keep make bench's ten minutes.
  // --quick (make bench QUICK=1): the slowest rows measured less, to keep the quick run's budget:
  // the executors' task overhead for 0.05 s each, and no million timers, no 100 000 parked
  // fibers, no fork of a 256 MiB parent that writes every page nor from a 1 GiB parent, nor
  // Asio's parallel_group skynet (the full run measures them all). Nor
  // the operation-by-operation comparisons of lessons 05-07 with their libraries (post, timer,
  // switch, spawn, create, skynet: each against Asio, libuv or Boost.Fiber), unless a
  // --benchmark_filter asks for rows itself: they are half the rows and none is a model's term.
  bool quick = false;
  bool filtered = false;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (i > 0 && a == "--quick") {
      quick = true;
    } else {
      filtered = filtered || a.rfind("--benchmark_filter=", 0) == 0;
      args.push_back(argv[i]);
    }
  }
  static char k_quick_filter[] =
      "--benchmark_filter=-^(loop_post_|loop_timer_fire|loop_timer_cancel|fiber_switch|"
      "fiber_spawn_join|coro_resume_suspend|coro_create_run_destroy|coro_when_all|"
      "fiber_skynet|coro_skynet|fork_write_wait_rss/256|fork_wait_rss/1024|"
      "posix_spawn_wait_rss/1024)";
  if (quick && !filtered) args.push_back(k_quick_filter);
  argc = static_cast<int>(args.size());
  for (const clab::executor* e : clab::all_executors()) {
    benchmark::RegisterBenchmark(("task_overhead/" + std::string(e->name)).c_str(), task_overhead,
                                 e)
        ->UseRealTime()
        ->MinTime(quick ? 0.05 : 0.1)
        ->Unit(benchmark::kMillisecond);
  }
  if (!quick) clab_units::register_loop_timers_1m(1);  // a million timers: 9 s a repetition
  clab_units::register_fiber_parked(quick);
  clab_units::register_coro_sleepers(quick);
  clab_units::register_coro_slow(quick);
  benchmark::Initialize(&argc, args.data());
  if (benchmark::ReportUnrecognizedArguments(argc, args.data())) return 2;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
