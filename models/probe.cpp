#include "models/probe.hpp"

#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <functional>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "workloads/stats.hpp"
#include "workloads/task.hpp"

namespace clab {
namespace {

std::vector<task> empty_tasks(std::size_t n) {
  std::vector<task> tasks(n);
  for (std::size_t i = 0; i < n; ++i) {
    tasks[i].id = static_cast<std::uint32_t>(i);
    tasks[i].seed = i + 1;
  }
  return tasks;
}

struct timed {
  std::int64_t wall_ns = 0;
  std::int64_t cpu_ns = 0;  // CPU time of the calling thread: the launcher's side of the run
  // CPU time of every other thread of this process and of the child processes it reaped: the
  // workers' side of the run
  std::int64_t worker_cpu_ns = 0;
  std::int64_t tail_ns = 0;  // from the end of the last task to the executor's return
};

std::int64_t cpu_clock_ns(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::int64_t process_cpu_ns() { return cpu_clock_ns(CLOCK_PROCESS_CPUTIME_ID); }
std::int64_t thread_cpu_ns() { return cpu_clock_ns(CLOCK_THREAD_CPUTIME_ID); }

/// User and system time of the child processes this process has reaped (the executor reaps every
/// child before it returns).
std::int64_t children_cpu_ns() {
  rusage ru{};
  getrusage(RUSAGE_CHILDREN, &ru);
  const auto ns = [](const timeval& tv) {
    return static_cast<std::int64_t>(tv.tv_sec) * 1'000'000'000 +
           static_cast<std::int64_t>(tv.tv_usec) * 1000;
  };
  return ns(ru.ru_utime) + ns(ru.ru_stime);
}

timed run_empty(const executor& exec, std::size_t n, int workers) {
  const std::vector<task> tasks = empty_tasks(n);
  run_options options;
  options.workers = workers;
  const std::int64_t cpu0 = process_cpu_ns();
  const std::int64_t mine0 = thread_cpu_ns();
  const std::int64_t children0 = children_cpu_ns();
  const run_result r = measure(exec, tasks, options);
  const std::int64_t mine = thread_cpu_ns() - mine0;
  const std::int64_t others = process_cpu_ns() - cpu0 - mine + (children_cpu_ns() - children0);
  if (r.records.size() != n) {
    throw std::runtime_error("probe: executor '" + std::string(exec.name) + "' completed " +
                             std::to_string(r.records.size()) + " of " + std::to_string(n) +
                             " empty tasks");
  }
  std::int64_t last_end = 0;
  for (const task_record& rec : r.records) last_end = std::max(last_end, rec.end_ns);
  return {r.makespan_ns, mine, others, std::max<std::int64_t>(0, r.makespan_ns - last_end)};
}

probe_result measure_per_task(const executor& exec, int workers) {
  constexpr std::int64_t k_enough_ns = 2'000'000;
  constexpr std::size_t k_max_tasks = 1U << 16U;
  std::size_t k = 32;
  (void)run_empty(exec, k, workers);  // warm-up: first-touch pages, lazy initialisation
  while (2 * k < k_max_tasks && run_empty(exec, 2 * k, workers).wall_ns < k_enough_ns) k *= 4;
  std::vector<std::int64_t> wall;
  std::vector<std::int64_t> cpu;
  std::vector<std::int64_t> worker_cpu;
  const auto kk = static_cast<std::int64_t>(k);
  for (int rep = 0; rep < 5; ++rep) {
    const timed once = run_empty(exec, k, workers);
    const timed twice = run_empty(exec, 2 * k, workers);
    wall.push_back(std::max<std::int64_t>(0, (twice.wall_ns - once.wall_ns) / kk));
    cpu.push_back(std::max<std::int64_t>(0, (twice.cpu_ns - once.cpu_ns) / kk));
    worker_cpu.push_back(
        std::max<std::int64_t>(0, (twice.worker_cpu_ns - once.worker_cpu_ns) / kk));
  }
  return {median(std::move(wall)), median(std::move(cpu)), median(std::move(worker_cpu))};
}

std::mutex probe_mutex;
std::map<std::string, probe_result, std::less<>> probed_costs;  // guarded by probe_mutex
std::map<std::tuple<std::string, int, std::size_t>, std::int64_t> probed_ends;  // probe_mutex

}  // namespace

void forget_probes() {
  const std::lock_guard lock(probe_mutex);
  probed_costs.clear();
  probed_ends.clear();
}

probe_result probe_executor(const executor& exec) {
  auto& known = probed_costs;
  const std::lock_guard lock(probe_mutex);
  const auto it = known.find(exec.name);
  if (it != known.end()) return it->second;
  const probe_result measured = measure_per_task(exec, 1);
  known.emplace(std::string(exec.name), measured);
  return measured;
}

std::int64_t probe_per_task_ns(const executor& exec) { return probe_executor(exec).per_task_ns; }

std::int64_t probe_run_end_ns(const executor& exec, int workers, std::size_t n) {
  constexpr std::size_t k_most_tasks = 64;
  n = std::clamp<std::size_t>(n, 1, k_most_tasks);
  const std::lock_guard lock(probe_mutex);
  const auto key = std::make_tuple(std::string(exec.name), workers, n);
  const auto it = probed_ends.find(key);
  if (it != probed_ends.end()) return it->second;
  (void)run_empty(exec, n, workers);  // warm-up, as for the per-task probe
  std::vector<std::int64_t> tails;
  for (int rep = 0; rep < 5; ++rep) tails.push_back(run_empty(exec, n, workers).tail_ns);
  const std::int64_t measured = median(std::move(tails));
  probed_ends.emplace(key, measured);
  return measured;
}

}  // namespace clab
