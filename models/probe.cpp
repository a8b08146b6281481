#include "models/probe.hpp"

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

std::int64_t makespan_of(const executor& exec, std::size_t n, int workers) {
  const std::vector<task> tasks = empty_tasks(n);
  run_options options;
  options.workers = workers;
  const run_result r = measure(exec, tasks, options);
  if (r.records.size() != n) {
    throw std::runtime_error("probe: executor '" + std::string(exec.name) + "' completed " +
                             std::to_string(r.records.size()) + " of " + std::to_string(n) +
                             " empty tasks");
  }
  return r.makespan_ns;
}

std::int64_t measure_per_task(const executor& exec, int workers) {
  constexpr std::int64_t k_enough_ns = 2'000'000;
  constexpr std::size_t k_max_tasks = 1U << 16U;
  std::size_t k = 32;
  (void)makespan_of(exec, k, workers);  // warm-up: first-touch pages, lazy initialisation
  while (2 * k < k_max_tasks && makespan_of(exec, 2 * k, workers) < k_enough_ns) k *= 4;
  std::vector<std::int64_t> per_task;
  for (int rep = 0; rep < 3; ++rep) {
    const std::int64_t once = makespan_of(exec, k, workers);
    const std::int64_t twice = makespan_of(exec, 2 * k, workers);
    per_task.push_back(std::max<std::int64_t>(0, (twice - once) / static_cast<std::int64_t>(k)));
  }
  return median(std::move(per_task));
}

std::mutex probe_mutex;
std::map<std::string, std::int64_t, std::less<>> probed_costs;  // guarded by probe_mutex

}  // namespace

void forget_probes() {
  const std::lock_guard lock(probe_mutex);
  probed_costs.clear();
}

std::int64_t probe_per_task_ns(const executor& exec) {
  auto& known = probed_costs;
  const std::lock_guard lock(probe_mutex);
  const auto it = known.find(exec.name);
  if (it != known.end()) return it->second;
  const std::string key(exec.name);
  const std::int64_t ns = measure_per_task(exec, 1);
  known.emplace(key, ns);
  return ns;
}

}  // namespace clab
