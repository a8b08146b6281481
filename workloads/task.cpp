// Task-set generation: durations drawn from a seeded splitmix64 stream, then split into a wait
// part and a CPU part according to the workload.
#include "workloads/task.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <stdexcept>

namespace clab {
namespace {

/// A seeded stream of uniform doubles in [0, 1), identical on every platform.
class uniform_stream {
 public:
  explicit uniform_stream(std::uint64_t seed) : state_(seed) {}
  double next() {
    state_ = splitmix64(state_);
    return static_cast<double>(state_ >> 11U) * 0x1.0p-53;
  }
  std::uint64_t next_index(std::uint64_t bound) {
    return static_cast<std::uint64_t>(next() * static_cast<double>(bound));
  }

 private:
  std::uint64_t state_;
};

std::vector<double> draw_durations_ns(const task_set_spec& spec) {
  const double mean_ns = spec.task_us * 1000.0;
  const std::size_t n = spec.tasks;
  std::vector<double> d(n, mean_ns);
  uniform_stream rng(spec.seed);
  switch (spec.dist) {
    case distribution::fixed:
      break;
    case distribution::uniform:
      for (double& x : d) x = 2.0 * mean_ns * rng.next();
      break;
    case distribution::exp:
      for (double& x : d) x = -mean_ns * std::log1p(-rng.next());
      break;
    case distribution::bimodal: {
      if (n == 0) break;
      constexpr double k_long_factor = 10.0;
      const std::size_t n_long = std::max<std::size_t>(1, (n + 5) / 10);
      // Seeded Fisher-Yates shuffle of positions: the first n_long become the long tasks.
      std::vector<std::size_t> pos(n);
      std::iota(pos.begin(), pos.end(), std::size_t{0});
      for (std::size_t i = n - 1; i > 0; --i) std::swap(pos[i], pos[rng.next_index(i + 1)]);
      const double units =
          static_cast<double>(n - n_long) + k_long_factor * static_cast<double>(n_long);
      const double short_ns = static_cast<double>(n) * mean_ns / units;
      std::fill(d.begin(), d.end(), short_ns);
      for (std::size_t i = 0; i < n_long; ++i) d[pos[i]] = k_long_factor * short_ns;
      break;
    }
  }
  return d;
}

template <typename E, std::size_t K>
std::optional<E> parse_name(std::string_view name, const std::array<std::string_view, K>& names) {
  for (std::size_t i = 0; i < K; ++i) {
    if (names[i] == name) return static_cast<E>(i);
  }
  return std::nullopt;
}

constexpr std::array<std::string_view, 4> k_workload_names{"cpu", "wait", "io", "mixed"};
constexpr std::array<std::string_view, 4> k_distribution_names{"fixed", "uniform", "exp",
                                                               "bimodal"};
constexpr std::array<std::string_view, 5> k_fault_names{"none", "throw", "abort", "segv", "hang"};

}  // namespace

std::vector<task> make_task_set(const task_set_spec& spec, double ns_per_iteration) {
  if (spec.kind == workload::io && (!spec.service || spec.service->port == 0)) {
    throw std::invalid_argument("the io workload needs a service endpoint (a port)");
  }
  if (!(spec.task_us >= 0.0) || !(ns_per_iteration > 0.0)) {
    throw std::invalid_argument("task duration must be >= 0 and ns per iteration > 0");
  }
  const std::vector<double> d = draw_durations_ns(spec);
  std::vector<task> tasks(spec.tasks);
  for (std::size_t i = 0; i < spec.tasks; ++i) {
    task& t = tasks[i];
    t.id = static_cast<std::uint32_t>(i);
    t.seed = splitmix64(spec.seed ^ (0xA5A5A5A5ULL + i));
    const auto total = static_cast<std::int64_t>(std::llround(d[i]));
    switch (spec.kind) {
      case workload::cpu:
        t.cpu_ns = total;
        break;
      case workload::wait:
        t.wait_ns = total;
        break;
      case workload::mixed:
        t.wait_ns = total / 2;
        t.cpu_ns = total - t.wait_ns;
        break;
      case workload::io:
        // The service's wait is given in whole microseconds, so the task's is too.
        t.wait_ns = (total + 500) / 1000 * 1000;
        t.io = *spec.service;
        break;
    }
    t.cpu_iterations =
        static_cast<std::uint64_t>(std::llround(static_cast<double>(t.cpu_ns) / ns_per_iteration));
  }
  return tasks;
}

std::string_view to_string(workload w) { return k_workload_names.at(static_cast<std::size_t>(w)); }
std::string_view to_string(distribution d) {
  return k_distribution_names.at(static_cast<std::size_t>(d));
}
std::string_view to_string(fault f) { return k_fault_names.at(static_cast<std::size_t>(f)); }
std::optional<workload> parse_workload(std::string_view n) {
  return parse_name<workload>(n, k_workload_names);
}
std::optional<distribution> parse_distribution(std::string_view n) {
  return parse_name<distribution>(n, k_distribution_names);
}
std::optional<fault> parse_fault(std::string_view n) { return parse_name<fault>(n, k_fault_names); }

task_set_totals totals(std::span<const task> tasks) {
  task_set_totals s;
  for (const task& t : tasks) {
    s.sum_ns += t.duration_ns();
    s.sum_cpu_ns += t.cpu_ns;
    s.max_ns = std::max(s.max_ns, t.duration_ns());
  }
  return s;
}

}  // namespace clab
