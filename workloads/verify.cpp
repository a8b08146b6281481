#include "workloads/verify.hpp"

#include <sstream>

#include "workloads/deps.hpp"
#include "workloads/io_body.hpp"
#include "workloads/io_exchange.hpp"
#include "workloads/kernel.hpp"

namespace clab {
namespace {

std::string hex(std::uint64_t x) {
  std::ostringstream s;
  s << "0x" << std::hex << x;
  return s.str();
}

/// The order of a graph run: each edge p→i whose task i completed needs p completed before i began.
void check_order(std::span<const task> tasks, const run_result& result, const task_graph& g,
                 verification& v) {
  if (g.size() != tasks.size()) {
    v.problems.push_back("the task graph has " + std::to_string(g.size()) + " tasks, the set " +
                         std::to_string(tasks.size()));
    return;
  }
  std::vector<const task_record*> rec(tasks.size(), nullptr);
  for (const task_record& r : result.records) {
    if (r.id < tasks.size()) rec[r.id] = &r;
  }
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    if (rec[i] == nullptr) continue;
    for (const std::uint32_t p : g.preds(i)) {
      const std::string edge = "edge " + std::to_string(p) + "→" + std::to_string(i);
      if (rec[p] == nullptr) {
        v.problems.push_back(edge + ": task " + std::to_string(i) + " ran, but its predecessor " +
                             std::to_string(p) + " did not complete");
      } else if (rec[i]->start_ns < rec[p]->end_ns) {
        v.problems.push_back(edge + ": task " + std::to_string(i) + " started at " +
                             std::to_string(rec[i]->start_ns) + " ns, before task " +
                             std::to_string(p) + " ended at " + std::to_string(rec[p]->end_ns) +
                             " ns");
      }
    }
  }
}

}  // namespace

std::vector<std::uint64_t> reference_checksums(std::span<const task> tasks) {
  std::vector<std::uint64_t> sums;
  sums.reserve(tasks.size());
  for (const task& t : tasks) {
    // An io task's reply is io_body(seed) from a correct service: folded in, it is what the
    // socket must have delivered.
    sums.push_back(io_checksum(t, spin(t.seed, t.cpu_iterations),
                               t.is_io() ? io_body_checksum(io_body(t.seed)) : 0));
  }
  return sums;
}

verification verify(std::span<const task> tasks, const run_result& result,
                    std::span<const std::uint64_t> reference, const task_graph* deps) {
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
    const std::string name = "task " + std::to_string(r.id);
    // Physics: a task cannot finish sooner than its own wait, nor outside the run.
    if (r.start_ns < 0 || r.end_ns < r.start_ns ||
        (result.makespan_ns > 0 && r.end_ns > result.makespan_ns)) {
      v.problems.push_back(name + ": times " + std::to_string(r.start_ns) + " to " +
                           std::to_string(r.end_ns) + " ns lie outside the run");
    } else if (r.end_ns - r.start_ns < tasks[r.id].wait_ns) {
      v.problems.push_back(name + " took " + std::to_string(r.end_ns - r.start_ns) +
                           " ns but its wait alone is " + std::to_string(tasks[r.id].wait_ns) +
                           " ns: the wait was skipped");
    }
    if (r.worker < 0 || r.worker >= result.workers_used) {
      v.problems.push_back(name + " ran on worker " + std::to_string(r.worker) + ", but the run " +
                           "reports " + std::to_string(result.workers_used) + " workers");
    }
    if (r.checksum != reference[r.id]) {
      v.problems.push_back("task " + std::to_string(r.id) + ": checksum " + hex(r.checksum) +
                           " differs from serial's " + hex(reference[r.id]));
    } else {
      ++v.completed;
    }
  }
  // With a graph, a task may also fail because a predecessor failed: it must name one that did.
  std::vector<std::uint8_t> failed(tasks.size(), 0);
  for (const task_failure& f : result.failed) {
    if (f.id < tasks.size()) failed[f.id] = 1;
  }
  const auto after_failure = [&](const task_failure& f) {
    if (deps == nullptr || deps->size() != tasks.size()) return false;
    for (const std::uint32_t p : deps->preds(f.id)) {
      if (failed[p] != 0 && f.cause == predecessor_failed(p)) return true;
    }
    return false;
  };
  for (const task_failure& f : result.failed) {
    if (!note(f.id, "failure")) continue;
    ++v.failed;
    // Only a task that was told to fail may fail, or one that a stop kept from starting:
    // anything else is the executor losing it.
    const bool cancelled = result.stopped && f.cause == k_cancelled;
    if (tasks[f.id].inject == fault::none && !cancelled && !after_failure(f)) {
      v.problems.push_back("task " + std::to_string(f.id) +
                           " failed without an injected fault: " + f.cause);
    }
  }
  for (std::size_t id = 0; id < tasks.size(); ++id) {
    if (seen[id] == 0) {
      v.problems.push_back("task " + std::to_string(id) + " never ran and was not reported failed");
    }
  }
  if (deps != nullptr) check_order(tasks, result, *deps, v);
  v.ok = v.problems.empty();
  return v;
}

}  // namespace clab
