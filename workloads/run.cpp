#include "workloads/run.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace clab {

int workers_used(const schedule& plan, int requested, std::size_t n) {
  switch (plan.workers) {
    case worker_rule::one:
      return n == 0 ? 0 : 1;
    case worker_rule::requested:
      return static_cast<int>(std::min<std::size_t>(requested, n));
    case worker_rule::one_per_task:
      return static_cast<int>(n);
  }
  return 0;
}

std::pair<std::size_t, std::size_t> block_range(std::size_t n, int parts, int k) {
  const auto p = static_cast<std::size_t>(parts);
  const auto i = static_cast<std::size_t>(k);
  const std::size_t base = n / p;
  const std::size_t extra = n % p;
  const std::size_t begin = i * base + std::min(i, extra);
  return {begin, begin + base + (i < extra ? 1 : 0)};
}

bool runs_io(const executor& exec) {
  return exec.plan.waits == wait_mode::blocking || exec.supports_io;
}

std::string predecessor_failed(std::uint32_t p) {
  return "predecessor " + std::to_string(p) + " failed";
}

run_result measure(const executor& exec, std::span<const task> tasks, run_options options) {
  if (options.deps != nullptr && !exec.supports_deps) {
    throw std::invalid_argument("executor '" + std::string(exec.name) +
                                "' does not run dependent tasks");
  }
  if (!runs_io(exec) &&
      std::any_of(tasks.begin(), tasks.end(), [](const task& t) { return t.is_io(); })) {
    throw std::invalid_argument("executor '" + std::string(exec.name) +
                                "' does not wait on sockets (the io workload)");
  }
  options.origin = run_clock::now();
  run_result r = exec.run(tasks, options);
  r.makespan_ns = ns_since(options.origin);
  return r;
}

}  // namespace clab
