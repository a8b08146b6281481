#include "workloads/verify.hpp"

#include <sstream>

#include "workloads/kernel.hpp"

namespace clab {
namespace {

std::string hex(std::uint64_t x) {
  std::ostringstream s;
  s << "0x" << std::hex << x;
  return s.str();
}

}  // namespace

std::vector<std::uint64_t> reference_checksums(std::span<const task> tasks) {
  std::vector<std::uint64_t> sums;
  sums.reserve(tasks.size());
  for (const task& t : tasks) sums.push_back(spin(t.seed, t.cpu_iterations));
  return sums;
}

verification verify(std::span<const task> tasks, const run_result& result,
                    std::span<const std::uint64_t> reference) {
  verification v;
  if (reference.size() != tasks.size()) {
    v.problems.push_back("reference has " + std::to_string(reference.size()) + " checksums for " +
                         std::to_string(tasks.size()) + " tasks");
    return v;
  }
  std::vector<int> seen(tasks.size(), 0);
  auto note = [&](std::uint32_t id, const char* as) -> bool {
    if (id >= tasks.size()) {
      v.problems.push_back(std::string(as) + " for unknown task " + std::to_string(id));
      return false;
    }
    if (++seen[id] == 2) v.problems.push_back("task " + std::to_string(id) + " reported twice");
    return true;
  };
  for (const task_record& r : result.records) {
    if (!note(r.id, "record")) continue;
    if (r.checksum != reference[r.id]) {
      v.problems.push_back("task " + std::to_string(r.id) + ": checksum " + hex(r.checksum) +
                           " differs from serial's " + hex(reference[r.id]));
    } else {
      ++v.completed;
    }
  }
  for (const task_failure& f : result.failed) {
    if (note(f.id, "failure")) ++v.failed;
  }
  for (std::size_t id = 0; id < tasks.size(); ++id) {
    if (seen[id] == 0) {
      v.problems.push_back("task " + std::to_string(id) + " never ran and was not reported failed");
    }
  }
  v.ok = v.problems.empty();
  return v;
}

}  // namespace clab
