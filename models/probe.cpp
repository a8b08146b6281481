#include "models/probe.hpp"

#include <time.h>

#include <algorithm>
#include <functional>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
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
  std::int64_t cpu_ns = 0;  // CPU time of this process (every thread; not of child processes)
};

std::int64_t process_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

timed run_empty(const executor& exec, std::size_t n, int workers) {
  const std::vector<task> tasks = empty_tasks(n);
  run_options options;
  options.workers = workers;
  const std::int64_t cpu0 = process_cpu_ns();
  const run_result r = measure(exec, tasks, options);
  const std::int64_t cpu = process_cpu_ns() - cpu0;
  if (r.records.size() != n) {
    throw std::runtime_error("probe: executor '" + std::string(exec.name) + "' completed " +
                             std::to_string(r.records.size()) + " of " + std::to_string(n) +
                             " empty tasks");
  }
  return {r.makespan_ns, cpu};
}

probe_result measure_per_task(const executor& exec, int workers) {
  constexpr std::int64_t k_enough_ns = 2'000'000;
  constexpr std::size_t k_max_tasks = 1U << 16U;
  std::size_t k = 32;
  (void)run_empty(exec, k, workers);  // warm-up: first-touch pages, lazy initialisation
  while (2 * k < k_max_tasks && run_empty(exec, 2 * k, workers).wall_ns < k_enough_ns) k *= 4;
  std::vector<std::int64_t> wall;
  std::vector<std::int64_t> cpu;
  const auto kk = static_cast<std::int64_t>(k);
  for (int rep = 0; rep < 3; ++rep) {
    const timed once = run_empty(exec, k, workers);
    const timed twice = run_empty(exec, 2 * k, workers);
    wall.push_back(std::max<std::int64_t>(0, (twice.wall_ns - once.wall_ns) / kk));
    cpu.push_back(std::max<std::int64_t>(0, (twice.cpu_ns - once.cpu_ns) / kk));
  }
  return {median(std::move(wall)), median(std::move(cpu))};
}

std::mutex probe_mutex;
std::map<std::string, probe_result, std::less<>> probed_costs;  // guarded by probe_mutex

}  // namespace

void forget_probes() {
  const std::lock_guard lock(probe_mutex);
  probed_costs.clear();
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

}  // namespace clab
