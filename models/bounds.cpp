#include "models/bounds.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

namespace clab {
namespace {

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

void require_workers(int p) {
  if (p < 1) throw std::invalid_argument("the models need at least one worker");
}

}  // namespace

std::int64_t serial_makespan(std::span<const task> tasks, std::int64_t per_task_ns) {
  std::int64_t sum = 0;
  for (const task& t : tasks) sum += t.duration_ns() + per_task_ns;
  return sum;
}

std::int64_t equal_tasks_makespan(std::size_t n, int p, std::int64_t t_ns) {
  require_workers(p);
  return ceil_div(static_cast<std::int64_t>(n), p) * t_ns;
}

makespan_bounds graham_bounds(std::span<const std::int64_t> durations, int p) {
  require_workers(p);
  double sum = 0;
  std::int64_t longest = 0;
  for (std::int64_t d : durations) {
    sum += static_cast<double>(d);
    longest = std::max(longest, d);
  }
  const double share = sum / p;
  const double upper = share + (1.0 - 1.0 / p) * static_cast<double>(longest);
  return {std::max(static_cast<std::int64_t>(std::ceil(share)), longest),
          static_cast<std::int64_t>(std::floor(upper))};
}

makespan_bounds graham_bounds(std::span<const task> tasks, int p) {
  std::vector<std::int64_t> d;
  d.reserve(tasks.size());
  for (const task& t : tasks) d.push_back(t.duration_ns());
  return graham_bounds(d, p);
}

makespan_bounds brent_bounds(std::int64_t work_ns, std::int64_t span_ns, int p) {
  require_workers(p);
  // Greedy: at every moment either all P processors compute (at most W/P of such time), or some
  // task on a longest path is running or waiting (at most S of such time).
  const double share = static_cast<double>(work_ns) / p;
  return {std::max(static_cast<std::int64_t>(std::ceil(share)), span_ns),
          static_cast<std::int64_t>(std::floor(share)) + span_ns};
}

int effective_parallelism(int p, int cores) { return std::max(1, std::min(p, cores)); }

std::int64_t makespan_lower_bound(std::span<const task> tasks, int p, int cores) {
  require_workers(p);
  const task_set_totals s = totals(tasks);
  return std::max(
      {ceil_div(s.sum_cpu_ns, effective_parallelism(p, cores)), ceil_div(s.sum_ns, p), s.max_ns});
}

std::int64_t overlap_lower_bound(std::span<const task> tasks) {
  const task_set_totals s = totals(tasks);
  return std::max(s.sum_cpu_ns, s.max_ns);
}

}  // namespace clab
