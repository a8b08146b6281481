// The shared lesson CLI. Flags are parsed by CLI11; every check that CLI11 cannot express (the io
// workload, --fail-task past the task set, work past an hour, timeouts an executor cannot enforce)
// throws usage_error, which main turns into one line and exit status 2.
#include "lessons/common/lesson_cli.hpp"

#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "lessons/common/print.hpp"
#include "models/check.hpp"
#include "workloads/calibration.hpp"
#include "workloads/deps.hpp"
#include "workloads/io_exchange.hpp"
#include "workloads/service_process.hpp"
#include "workloads/verify.hpp"

namespace clab {
namespace {

constexpr std::size_t k_max_tasks = 1'000'000;
constexpr int k_max_workers = 1024;
constexpr std::size_t k_max_threads_per_task = 4096;
constexpr double k_max_task_us = 10'000'000.0;       // 10 s
constexpr double k_max_work_s = 3600.0;              // Σ t_i of one run
constexpr std::size_t k_max_task_runs = 10'000'000;  // --tasks × --repeat

class usage_error : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct flags {
  std::size_t tasks = 16;
  int workers = 0;  // 0: the number of cores
  std::string workload = "cpu";
  double task_us = 10'000.0;
  std::string dist = "fixed";
  std::string seed = "1";  // parsed in check(): CLI11 would wrap -1 and saturate 2^64
  std::string executor;
  bool list = false;
  bool predict = false;
  bool json = false;
  bool gantt = false;
  int repeat = 1;
  std::optional<std::size_t> fail_task;
  std::string fail_how = "throw";
  std::optional<int> task_timeout_ms;
  std::optional<int> cancel_after_ms;
  std::string errors = "all";
  std::optional<int> slow_callback_ms;
  std::string deps = "none";
  std::string service;  // --service HOST:PORT; empty: start one for the run
};

struct plan {
  const executor* exec = nullptr;
  task_set_spec spec;
  int workers = 1;
  fault inject = fault::none;
  deps_shape deps = deps_shape::none;
  std::optional<io_endpoint> service;  // --service, resolved; unset: start one for an io run
};

// The executors whose run honours run_options::deps (executor::supports_deps), for the refusal's
// line; the CLI sees one lesson's executors only, so the list is kept here, beside that flag.
constexpr const char* k_deps_executors = "serial, coroutines, coro-priority";

std::string names_of(std::span<const executor* const> execs) {
  std::string s;
  for (const executor* e : execs) s += (s.empty() ? "" : ", ") + std::string(e->name);
  return s;
}

plan check(const flags& f, const lesson_info& lesson) {
  plan p;
  p.exec = lesson.executors.front();
  if (!f.executor.empty()) {
    const auto it = std::find_if(lesson.executors.begin(), lesson.executors.end(),
                                 [&](const executor* e) { return e->name == f.executor; });
    if (it == lesson.executors.end()) {
      throw usage_error("--executor: unknown '" + f.executor +
                        "'; allowed: " + names_of(lesson.executors));
    }
    p.exec = *it;
  }
  p.spec.tasks = f.tasks;
  p.spec.kind = parse_workload(f.workload).value();
  if (p.spec.kind == workload::io && !runs_io(*p.exec)) {
    std::vector<const executor*> able;
    for (const executor* e : lesson.executors) {
      if (runs_io(*e)) able.push_back(e);
    }
    throw usage_error("--workload io: executor '" + std::string(p.exec->name) +
                      "' does not wait on sockets" +
                      (able.empty() ? std::string("; no executor of this lesson does")
                                    : "; allowed: " + names_of(able)));
  }
  if (!f.service.empty()) {
    if (p.spec.kind != workload::io) {
      throw usage_error("--service: only with --workload io (the service answers io tasks)");
    }
    const auto parsed = parse_service_address(f.service);
    if (const auto* why = std::get_if<std::string>(&parsed)) {
      throw usage_error("--service: " + *why);
    }
    const auto& address = std::get<service_address>(parsed);
    try {
      p.service = resolve_endpoint(address.host, address.port);
    } catch (const std::runtime_error& e) {
      throw usage_error(std::string("--service: ") + e.what());
    }
  }
  p.spec.dist = parse_distribution(f.dist).value();
  if (!std::isfinite(f.task_us)) {
    throw usage_error("--task-us: must be a number in 0-10000000 (got " +
                      std::to_string(f.task_us) + ")");
  }
  p.spec.task_us = f.task_us;
  const char* first = f.seed.data();
  const char* last = first + f.seed.size();
  const auto [end, err] = std::from_chars(first, last, p.spec.seed);
  if (f.seed.empty() || err != std::errc() || end != last) {
    throw usage_error("--seed: '" + f.seed + "' is not a whole number in 0-18446744073709551615");
  }
  p.workers = f.workers > 0 ? f.workers : available_cores();
  // The requests an io run holds open at once: one per worker where a worker sits in its wait,
  // every one where waits overlap (a loop's, or a thread per task). Room for a socket each here,
  // and in the service started afterwards, which inherits the limit.
  if (p.spec.kind == workload::io) {
    const bool all_at_once = p.exec->plan.waits == wait_mode::nonblocking ||
                             p.exec->plan.workers == worker_rule::one_per_task;
    const std::size_t open =
        all_at_once ? f.tasks : std::min<std::size_t>(f.tasks, static_cast<std::size_t>(p.workers));
    if (const std::string why = ensure_descriptors(open); !why.empty()) {
      throw usage_error("--tasks: " + why);
    }
  }

  const double work_s = static_cast<double>(f.tasks) * f.task_us / 1e6;
  if (work_s > k_max_work_s) {
    throw usage_error("--tasks x --task-us: " + std::to_string(f.tasks) + " tasks of " +
                      format_ns(static_cast<std::int64_t>(f.task_us * 1e3)) + " are " +
                      std::to_string(static_cast<long long>(work_s)) +
                      " s of work; allowed up to 3600 s per run");
  }
  // Every repetition's records are kept until the median is known: bound what that holds.
  if (f.tasks * static_cast<std::size_t>(f.repeat) > k_max_task_runs) {
    throw usage_error("--tasks x --repeat: " + std::to_string(f.tasks) + " x " +
                      std::to_string(f.repeat) + " task runs; allowed up to " +
                      std::to_string(k_max_task_runs));
  }
  if (p.exec->plan.workers == worker_rule::one_per_task && f.tasks > k_max_threads_per_task) {
    throw usage_error("--tasks: executor '" + std::string(p.exec->name) +
                      "' starts one thread or process per task; allowed 1-" +
                      std::to_string(k_max_threads_per_task));
  }
  if (f.fail_task) {
    if (*f.fail_task >= f.tasks) {
      throw usage_error("--fail-task: " + std::to_string(*f.fail_task) +
                        " is not a task id; allowed 0-" + std::to_string(f.tasks - 1) +
                        " for --tasks " + std::to_string(f.tasks));
    }
    p.inject = parse_fault(f.fail_how).value();
  }
  if (f.cancel_after_ms && f.repeat > 1) {
    throw usage_error("--cancel-after-ms: cancels one run; allowed only with --repeat 1");
  }
  if (f.slow_callback_ms && !p.exec->lag_monitor) {
    throw usage_error("--slow-callback-ms: executor '" + std::string(p.exec->name) +
                      "' has no lag monitor; allowed with this lesson's executors that have one");
  }
  p.deps = parse_deps_shape(f.deps).value();
  if (p.deps != deps_shape::none && !p.exec->supports_deps) {
    throw usage_error("--deps: executor '" + std::string(p.exec->name) +
                      "' does not run dependent tasks (supported: " + k_deps_executors + ")");
  }
  const bool bounds_waits = p.exec->timeout_cancels_waits && p.spec.kind == workload::io;
  if (f.task_timeout_ms && !p.exec->can_enforce_timeout && !bounds_waits) {
    if (!p.exec->no_timeout_because.empty()) {
      throw usage_error(
          "--task-timeout-ms: executor '" + std::string(p.exec->name) +
          "' cannot stop a running task: " + std::string(p.exec->no_timeout_because) +
          (p.exec->timeout_cancels_waits ? " (with --workload io it bounds each request)" : ""));
    }
    throw usage_error("--task-timeout-ms: executor '" + std::string(p.exec->name) +
                      "' cannot stop a running task (a thread cannot be killed); processes can, "
                      "from lesson 02");
  }
  return p;
}

std::string_view to_string(placement x) {
  switch (x) {
    case placement::static_blocks:
      return "static blocks";
    case placement::round_robin:
      return "round robin";
    case placement::dynamic_queue:
      return "dynamic queue";
    case placement::longest_first:
      return "longest first";
    case placement::work_stealing:
      return "work stealing (round robin, owner oldest first, thieves newest)";
    case placement::spawner_lifo:
      return "one spawner, newest first; thieves oldest first";
    case placement::one_per_task:
      return "one worker per task";
  }
  return "?";
}

/// VmHWM from /proc/self/status (KiB), or getrusage's ru_maxrss where it cannot be read.
long peak_rss_kib() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  rusage self{};
  ::getrusage(RUSAGE_SELF, &self);
  return self.ru_maxrss;
}

nlohmann::ordered_json json_line(const lesson_info& lesson, const plan& p,
                                 std::span<const task> tasks, const calibration& machine,
                                 const prediction& pred, const checked_run* run) {
  const task_set_totals tot = totals(tasks);
  nlohmann::ordered_json j;
  j["lesson"] = lesson.number;
  j["executor"] = p.exec->name;
  j["tasks"] = tasks.size();
  j["workers"] = p.workers;
  j["workers_used"] = pred.config.workers;
  j["cores"] = machine.cores;
  j["workload"] = to_string(p.spec.kind);
  j["dist"] = to_string(p.spec.dist);
  j["task_us"] = p.spec.task_us;
  j["seed"] = p.spec.seed;
  j["deps"] = to_string(p.deps);
  if (pred.io_round_trip_ns > 0) j["io_round_trip_ns"] = pred.io_round_trip_ns;
  if (pred.io_service_cpu_ns > 0) j["io_service_cpu_ns"] = pred.io_service_cpu_ns;
  if (pred.io_round_trip_ns > 0) j["io_client_cpu_ns"] = pred.io_client_cpu_ns;
  j["sum_task_ns"] = tot.sum_ns;
  j["sum_cpu_ns"] = tot.sum_cpu_ns;
  j["max_task_ns"] = tot.max_ns;
  j["predicted_ns"] = pred.simulated.makespan_ns;
  j["predicted_low_ns"] = pred.low_ns;
  j["predicted_high_ns"] = pred.high_ns;
  j["lower_bound_ns"] = pred.lower_bound_ns;
  if (pred.graham_applies) {
    j["graham"] = {{"workers", pred.graham_workers},
                   {"lower_ns", pred.graham.lower_ns},
                   {"upper_ns", pred.graham.upper_ns}};
  } else {
    j["graham"] = nullptr;  // mixed work (no single P of identical workers), or a task graph
  }
  if (pred.brent_applies) {
    j["brent"] = {{"workers", pred.brent_workers},
                  {"work_ns", pred.work_ns},
                  {"span_ns", pred.span_ns},
                  {"lower_ns", pred.brent.lower_ns},
                  {"upper_ns", pred.brent.upper_ns}};
  } else {
    j["brent"] = nullptr;  // independent tasks
  }
  j["model"] = {{"policy", to_string(pred.config.policy)},
                {"waits", pred.config.waits == wait_mode::blocking ? "blocking" : "nonblocking"},
                {"workers", pred.config.workers},
                {"cores", pred.config.cores},
                {"worker_start_ns", pred.config.worker_start_ns},
                {"per_task_ns", pred.config.per_task_ns},
                {"time_slice_ns", pred.config.time_slice_ns},
                {"balance_delay_ns", pred.config.balance_delay_ns},
                {"handoff_delay_ns", pred.config.handoff_delay_ns},
                {"launcher_handoff_ns", pred.config.launcher_handoff_ns},
                {"run_end_ns", pred.config.run_end_ns},
                {"submit_ns", pred.config.submit_ns},
                {"wait_overshoot_ns", pred.config.wait_overshoot.overshoot_ns}};
  j["calibration"] = {{"ns_per_iteration", machine.ns_per_iteration},
                      {"ns_per_iteration_cv", machine.ns_per_iteration_cv},
                      {"sleep_overshoot_ns", machine.sleep_overshoot.overshoot_ns},
                      {"sleep_overshoot_at_ns", overshoot_curve::k_lengths_ns},
                      {"thread_start_ns", machine.thread_start_ns},
                      {"process_start_ns", machine.process_start_ns},
                      {"wakeup_ns", machine.wakeup_ns},
                      {"time_slice_ns", machine.time_slice_ns},
                      {"time_slice_long_ns", machine.time_slice_long_ns},
                      {"balance_delay_ns", machine.balance_delay_ns}};
  if (run == nullptr) {  // --predict: nothing measured
    for (const char* k : {"makespan_ns", "ratio", "verified", "completed", "cv", "task_stretch"}) {
      j[k] = nullptr;
    }
    j["verdict"] = "predicted";
    j["cause"] = "";
    j["failed"] = nlohmann::ordered_json::array();
    j["problems"] = nlohmann::ordered_json::array();
    j["makespans_ns"] = nlohmann::ordered_json::array();
    return j;
  }
  j["makespan_ns"] = run->makespan_ns;
  j["ratio"] = run->judged.ratio;
  j["tolerance"] = default_tolerance(p.spec.kind);
  j["verdict"] = run->run.stopped ? "not-judged" : run->judged.within ? "within" : "deviating";
  j["cause"] = run->judged.cause;
  j["verified"] = run->verified.ok;
  j["completed"] = run->verified.completed;
  j["stopped"] = run->run.stopped;
  j["cancelled"] = std::count_if(run->run.failed.begin(), run->run.failed.end(),
                                 [](const task_failure& f) { return f.cause == k_cancelled; });
  j["failed"] = nlohmann::ordered_json::array();
  for (const task_failure& f : run->run.failed) {
    j["failed"].push_back({{"id", f.id}, {"cause", f.cause}});
  }
  j["problems"] = run->verified.problems;
  j["repeats"] = run->makespans.size();
  j["makespans_ns"] = run->makespans;
  j["cv"] = run->cv;
  j["task_stretch"] = run->task_stretch;
  // This program's peak resident memory during the runs, in KiB (VmHWM, reset just before them;
  // the service and any worker processes are processes of their own and not counted).
  // scripts/connections takes its growth between task counts as the memory per connection.
  j["max_rss_kib"] = peak_rss_kib();
  return j;
}

/// "56/74/107 µs at 0.1/1/10 ms"
std::string overshoots(const overshoot_curve& o) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%.0f/%.0f/%.0f µs at 0.1/1/10 ms",
                static_cast<double>(o.overshoot_ns[0]) / 1e3,
                static_cast<double>(o.overshoot_ns[1]) / 1e3,
                static_cast<double>(o.overshoot_ns[2]) / 1e3);
  return buf;
}

std::string count(int n, const char* noun) {
  return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
}

void print_header(const lesson_info& lesson, const plan& p, std::span<const task> tasks,
                  const calibration& machine, const task_graph& graph) {
  const task_set_totals tot = totals(tasks);
  std::printf("lesson %s · %s · executor %s: %s\n", std::string(lesson.number).c_str(),
              std::string(lesson.title).c_str(), std::string(p.exec->name).c_str(),
              std::string(p.exec->summary).c_str());
  std::printf(
      "task set   %zu %s tasks, %s durations, mean %s, seed %llu: Σt_i = %s, max t_i = %s\n",
      tasks.size(), std::string(to_string(p.spec.kind)).c_str(),
      std::string(to_string(p.spec.dist)).c_str(),
      format_ns(static_cast<std::int64_t>(p.spec.task_us * 1e3)).c_str(),
      static_cast<unsigned long long>(p.spec.seed), format_ns(tot.sum_ns).c_str(),
      format_ns(tot.max_ns).c_str());
  if (p.deps != deps_shape::none) {
    std::printf("deps       %s: %zu edges, a task starts once its predecessors have ended\n",
                std::string(to_string(p.deps)).c_str(), graph.edges());
  }
  std::printf(
      "machine    %s · kernel %.3f ns/iteration (CV %.1f%%) · sleep overshoot %s · "
      "thread start %s · process start %s · wake-up %s · time slice %s · balance %s\n",
      count(machine.cores, "core").c_str(), machine.ns_per_iteration,
      machine.ns_per_iteration_cv * 100, overshoots(machine.sleep_overshoot).c_str(),
      format_ns(machine.thread_start_ns).c_str(), format_ns(machine.process_start_ns).c_str(),
      format_ns(machine.wakeup_ns).c_str(), format_ns(machine.time_slice_ns).c_str(),
      format_ns(machine.balance_delay_ns).c_str());
}

void print_service(const task_set_spec& spec, const std::optional<service_process>& started) {
  if (!spec.service) return;
  if (started) {
    std::printf("service    %s: io_service, pid %d, started for this run (stopped at its end)\n",
                to_string(*spec.service).c_str(), static_cast<int>(started->pid()));
  } else {
    std::printf("service    %s (--service: already running)\n", to_string(*spec.service).c_str());
  }
}

void print_model(const prediction& pred, std::span<const task> tasks, const calibration& machine) {
  const sim_config& c = pred.config;
  if (c.workers == 1) {
    std::printf("model      one worker, tasks in order, on %s", count(c.cores, "core").c_str());
  } else {
    std::printf("model      %s, %s waits, %s on %s", std::string(to_string(c.policy)).c_str(),
                c.waits == wait_mode::blocking ? "blocking" : "non-blocking",
                count(c.workers, "worker").c_str(), count(c.cores, "core").c_str());
  }
  if (c.deps != nullptr) std::printf(", each task released when its predecessors end");
  if (c.worker_start_ns > 0) {
    std::printf(", %s per worker start", format_ns(c.worker_start_ns).c_str());
  }
  if (c.per_task_ns > 0) {
    std::printf(", %s overhead per task", format_ns(c.per_task_ns).c_str());
  }
  if (c.launcher_handoff_ns > 0) {
    std::printf(", %s of the launcher's time per hand-off",
                format_ns(c.launcher_handoff_ns).c_str());
  }
  if (c.handoff_delay_ns > 0) {
    std::printf(", %s of wake-ups per hand-off", format_ns(c.handoff_delay_ns).c_str());
  }
  if (c.submit_ns > 0) {
    std::printf(", %s of the caller's time per task submitted", format_ns(c.submit_ns).c_str());
  }
  if (c.run_end_ns > 0) {
    std::printf(", %s to end the run", format_ns(c.run_end_ns).c_str());
  }
  if (c.time_slice_ns > 0 && c.workers > c.cores) {
    std::printf(", %s time slices", format_ns(c.time_slice_ns).c_str());
  }
  const task_set_totals tot = totals(tasks);
  if (tot.sum_cpu_ns < tot.sum_ns) {
    std::int64_t over = 0;
    std::size_t waits = 0;
    for (const task& t : tasks) {
      over += c.wait_overshoot.at(t.wait_ns);
      waits += t.wait_ns > 0 ? 1 : 0;
    }
    if (pred.io_round_trip_ns > 0) {
      std::printf(
          ", +%s per request past its wait (probed; %s with no wait)",
          format_ns(over / static_cast<std::int64_t>(std::max<std::size_t>(1, waits))).c_str(),
          format_ns(pred.io_round_trip_ns).c_str());
      std::printf(", of it %s the client's CPU", format_ns(pred.io_client_cpu_ns).c_str());
      if (pred.io_service_cpu_ns > 0) {
        std::printf(", the service's CPU %s per request, queued",
                    format_ns(pred.io_service_cpu_ns).c_str());
      }
    } else {
      std::printf(c.waits == wait_mode::nonblocking ? ", +%s timer lateness per wait (probed)"
                                                    : ", +%s overshoot per wait",
                  format_ns(over / static_cast<std::int64_t>(waits)).c_str());
    }
  }
  std::printf("\n");
  if (pred.brent_applies) {
    std::printf(
        "bounds     Brent on P = %d: max(W/P, S) = %s ≤ T ≤ W/P + S = %s, W = %s = %s, span S "
        "(longest path of t_i) = %s · serial Σt_i = %s\n",
        pred.brent_workers, format_ns(pred.brent.lower_ns).c_str(),
        format_ns(pred.brent.upper_ns).c_str(), c.waits == wait_mode::blocking ? "Σt_i" : "Σc_i",
        format_ns(pred.work_ns).c_str(), format_ns(pred.span_ns).c_str(),
        format_ns(pred.serial_ns).c_str());
  } else if (pred.graham_applies) {
    std::printf(
        "bounds     Graham on P = %d: %s ≤ T ≤ %s for a greedy schedule · serial Σt_i = %s\n",
        pred.graham_workers, format_ns(pred.graham.lower_ns).c_str(),
        format_ns(pred.graham.upper_ns).c_str(), format_ns(pred.serial_ns).c_str());
  } else if (c.waits == wait_mode::nonblocking) {
    std::printf(
        "bounds     waits overlap: T ≥ max(Σc/min(P,cores), max t) = %s · serial Σt_i = %s\n",
        format_ns(pred.lower_bound_ns).c_str(), format_ns(pred.serial_ns).c_str());
  } else {
    std::printf("bounds     T ≥ max(Σc/min(P,cores), Σt/P, max t) = %s · serial Σt_i = %s\n",
                format_ns(pred.lower_bound_ns).c_str(), format_ns(pred.serial_ns).c_str());
  }
  // The range gets a line where it is 1 % wide or more.
  if (static_cast<double>(pred.high_ns) > 1.01 * static_cast<double>(pred.low_ns)) {
    std::string handoffs;
    if (pred.near_handoff_ns > 0) {
      handoffs = "; hand-offs of " +
                 format_ns(pred.config.per_task_ns + pred.config.launcher_handoff_ns) + ", or " +
                 format_ns(pred.near_handoff_ns) + " with the launcher on its worker's core";
    }
    std::printf(
        "range      %s–%s over the scheduler's choices (a time slice of none up to %s; "
        "one queue for all cores, or a queue per core balanced after %s%s)\n",
        format_ns(pred.low_ns).c_str(), format_ns(pred.high_ns).c_str(),
        format_ns(machine.time_slice_long_ns).c_str(), format_ns(machine.balance_delay_ns).c_str(),
        handoffs.c_str());
  }
}

void print_run(const plan& p, std::span<const task> tasks, const prediction& pred,
               const checked_run& run, bool show_gantt) {
  const verdict& v = run.judged;
  char tol[32];
  std::snprintf(tol, sizeof tol, "±%.0f%%", default_tolerance(p.spec.kind) * 100);
  char ratio_buf[32];
  std::snprintf(ratio_buf, sizeof ratio_buf, "%-7.3f", v.ratio);
  const std::string ratio = std::isfinite(v.ratio) ? ratio_buf : "-      ";
  std::printf("\n           %-11s %-11s %-7s %s\n", "measured", "predicted", "ratio", "verdict");
  std::printf("makespan   %s %s %s %s\n", pad(format_ns(run.makespan_ns), 11).c_str(),
              pad(format_ns(pred.simulated.makespan_ns), 11).c_str(), ratio.c_str(),
              v.by_range        ? ("within " + std::string(tol) + " of the range").c_str()
              : v.within        ? ("within " + std::string(tol)).c_str()
              : run.run.stopped ? v.cause.c_str()
                                : ("deviating: " + v.cause).c_str());
  if (run.makespans.size() > 1) {
    std::printf("repeats    %zu runs, median shown, CV %.1f%%\n", run.makespans.size(),
                run.cv * 100);
  }
  if (run.verified.ok) {
    std::printf("verified   yes: %zu of %zu tasks completed with serial's checksum",
                run.verified.completed, tasks.size());
    std::printf(run.verified.failed > 0 ? ", %zu failed (reported below)\n" : "\n",
                run.verified.failed);
  } else {
    std::printf("verified   NO\n");
    for (const std::string& problem : run.verified.problems) std::printf("  %s\n", problem.c_str());
  }
  std::size_t cancelled = 0;
  for (const task_failure& f : run.run.failed) {
    if (f.cause == k_cancelled) {
      ++cancelled;
    } else {
      std::printf("failed     task %u: %s\n", f.id, f.cause.c_str());
    }
  }
  if (cancelled > 0) {
    std::printf("cancelled  %zu tasks never started: the run was stopped\n", cancelled);
  }
  if (run.makespan_ns > 0 && pred.serial_ns > 0 && pred.config.workers > 1 && !run.run.stopped) {
    std::printf("speedup    %.2f× over the serial model Σt_i, with %s on %s\n",
                static_cast<double>(pred.serial_ns) / static_cast<double>(run.makespan_ns),
                count(pred.config.workers, "worker").c_str(),
                count(pred.config.cores, "core").c_str());
  }
  if (show_gantt) {
    const std::int64_t span = std::max(run.makespan_ns, pred.simulated.makespan_ns);
    std::printf("\nmeasured timeline (0 to %s; '.' waiting, id digit computing):\n%s",
                format_ns(span).c_str(),
                gantt(tasks, run.run.records, span, pred.config.workers).c_str());
    std::printf("model timeline:\n%s",
                gantt(tasks, pred.simulated.timeline, span, pred.config.workers).c_str());
  }
}

/// Everything after the flags are checked: calibrate, generate, predict, run, print.
int run_lesson(const lesson_info& lesson, const std::string& program, const flags& f,
               const plan& p) {
  const calibration machine = calibrate();
  // The io workload's far end: the one given, or a child started for this run, stopped and
  // reaped when the run ends (the destructor), fails or is interrupted (the child's
  // PR_SET_PDEATHSIG).
  std::optional<service_process> service;
  task_set_spec spec = p.spec;
  if (spec.kind == workload::io) {
    if (p.service) {
      spec.service = p.service;
    } else {
      service.emplace(find_io_service());
      spec.service = resolve_endpoint(service->host(), service->port());
    }
  }
  std::vector<task> tasks = make_task_set(spec, machine.ns_per_iteration);
  if (f.fail_task) tasks[*f.fail_task].inject = p.inject;
  const task_graph graph = make_task_graph(p.deps, tasks.size(), p.spec.seed);
  const task_graph* deps = p.deps != deps_shape::none ? &graph : nullptr;
  const prediction pred = predict(*p.exec, tasks, p.workers, machine, deps);

  if (f.predict) {
    if (f.json) {
      std::cout << json_line(lesson, p, tasks, machine, pred, nullptr).dump() << '\n';
    } else {
      print_header(lesson, p, tasks, machine, graph);
      print_service(spec, service);
      print_model(pred, tasks, machine);
      std::printf("\nprediction %s   (run without --predict to measure it)\n",
                  format_ns(pred.simulated.makespan_ns).c_str());
    }
    return 0;
  }
  if (p.inject == fault::hang && !f.task_timeout_ms) {
    std::fprintf(stderr,
                 "%s: note: task %zu will hang forever and executor '%s' cannot stop it; "
                 "press Ctrl-C to end the run\n",
                 program.c_str(), *f.fail_task, std::string(p.exec->name).c_str());
  }
  if (!f.json) {
    print_header(lesson, p, tasks, machine, graph);
    print_service(spec, service);
    print_model(pred, tasks, machine);
    std::fflush(stdout);  // a fault that kills the process should not swallow the header
  }

  check_options opts;
  opts.workers = p.workers;
  opts.repeats = f.repeat;
  opts.tolerance = default_tolerance(p.spec.kind);
  if (f.task_timeout_ms) opts.task_timeout = std::chrono::milliseconds(*f.task_timeout_ms);
  opts.on_error = f.errors == "first" ? error_policy::stop_at_first : error_policy::collect_all;
  if (f.slow_callback_ms) opts.slow_callback = std::chrono::milliseconds(*f.slow_callback_ms);
  opts.deps = deps;
  const std::vector<std::uint64_t> reference = reference_checksums(tasks);
  std::stop_source cancel;
  opts.stop = cancel.get_token();
  std::optional<std::jthread> canceller;  // requests the stop after --cancel-after-ms, then ends
  if (f.cancel_after_ms) {
    canceller.emplace([&cancel, ms = *f.cancel_after_ms](std::stop_token done) {
      std::mutex m;
      std::condition_variable_any cv;
      std::unique_lock lock(m);
      if (!cv.wait_for(lock, done, std::chrono::milliseconds(ms), [] { return false; }) &&
          !done.stop_requested()) {
        cancel.request_stop();
      }
    });
  }
  // The peak resident memory is taken over the runs only: the calibration's and the probes'
  // peaks before them are forgotten (clear_refs 5 resets the high-water mark, Linux 4.0 on).
  if (std::ofstream clear("/proc/self/clear_refs"); clear) clear << "5\n";
  const checked_run run = run_and_check(*p.exec, tasks, pred, opts, reference);

  if (f.json) {
    std::cout << json_line(lesson, p, tasks, machine, pred, &run).dump() << '\n';
  } else {
    print_run(p, tasks, pred, run, f.gantt);
  }
  return run.verified.ok && run.run.failed.empty() ? 0 : 1;
}

}  // namespace

int lesson_main(const lesson_info& lesson, int argc, char** argv) {
  const std::string program = "lesson " + std::string(lesson.number);
  CLI::App app{program + " · " + std::string(lesson.title) +
                   ": runs a task set on one executor, predicts its makespan from the model, "
                   "measures it, verifies every checksum against serial's and judges the ratio.",
               "lesson_" + std::string(lesson.number)};
  flags f;
  app.add_option("--tasks", f.tasks, "N: number of tasks")
      ->check(CLI::Range(std::size_t{1}, k_max_tasks))
      ->capture_default_str();
  app.add_option("--workers", f.workers,
                 "P: workers (threads); default: the cores this process may use")
      ->check(CLI::Range(1, k_max_workers));
  app.add_option("--workload", f.workload,
                 "what a task does: cpu (compute), wait (sleep), mixed (half each: wait, then "
                 "compute), io (one HTTP request to a loopback service that answers after the "
                 "wait)")
      ->check(CLI::IsMember({"cpu", "wait", "io", "mixed"}))
      ->capture_default_str();
  app.add_option("--task-us", f.task_us, "T: mean task duration in microseconds")
      ->check(CLI::Range(0.0, k_max_task_us))
      ->capture_default_str();
  app.add_option("--dist", f.dist,
                 "durations: fixed, uniform on [0, 2T], exp (mean T), bimodal (1 in 10 is 10x "
                 "longer, sum N*T)")
      ->check(CLI::IsMember({"fixed", "uniform", "exp", "bimodal"}))
      ->capture_default_str();
  app.add_option("--seed", f.seed,
                 "S: seed of the task set (durations, kernel inputs), 0 to 2^64-1")
      ->capture_default_str();
  {  // every lesson takes --executor, so one caller can drive them all alike
    std::vector<std::string> names;
    for (const executor* e : lesson.executors) names.emplace_back(e->name);
    app.add_option("--executor", f.executor,
                   "NAME: which executor (see --list); default: " + names.front())
        ->check(CLI::IsMember(names));
  }
  app.add_flag("--list", f.list, "list this lesson's executors and exit");
  app.add_flag("--predict", f.predict, "print the model's prediction and exit without running");
  app.add_flag("--json", f.json, "print one JSON object on one line instead of the table");
  app.add_flag("--gantt", f.gantt, "draw the measured and the modelled timelines");
  app.add_option("--repeat", f.repeat, "R: run R times, judge the median, report the spread")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  auto* fail_task = app.add_option("--fail-task", f.fail_task, "K: inject a fault into task K")
                        ->check(CLI::Range(std::size_t{0}, k_max_tasks - 1));
  app.add_option(
         "--fail-how", f.fail_how,
         "the fault: throw (an exception), abort, segv (a real invalid store), hang (forever)")
      ->check(CLI::IsMember({"throw", "abort", "segv", "hang"}))
      ->needs(fail_task)
      ->capture_default_str();
  app.add_option("--cancel-after-ms", f.cancel_after_ms,
                 "M: cancel the run after M ms: running tasks finish, the rest never start")
      ->check(CLI::Range(0, 3'600'000));
  app.add_option("--errors", f.errors,
                 "after a task fails: all (run every other task, report each outcome) or first "
                 "(start no task after the first failure)")
      ->check(CLI::IsMember({"all", "first"}))
      ->capture_default_str();
  app.add_option("--deps", f.deps,
                 "dependencies: none, chain (i after i-1), tree (i after (i-1)/2), dag (seeded "
                 "random, 1-3 of the 8 tasks before); a task starts once its predecessors have "
                 "ended (serial, coroutines, coro-priority)")
      ->check(CLI::IsMember({"none", "chain", "tree", "dag"}))
      ->capture_default_str();
  app.add_option("--service", f.service,
                 "HOST:PORT: with --workload io, send the requests to this io_service (one "
                 "already running) instead of starting one for the run");
  app.add_option("--task-timeout-ms", f.task_timeout_ms,
                 "M: stop a task after M ms, where the executor can")
      ->check(CLI::Range(1, 3'600'000));
  if (lesson.slow_callback_flag) {
    app.add_option("--slow-callback-ms", f.slow_callback_ms,
                   "M: report every callback that runs longer than M ms, and name one that is "
                   "still running past it while it runs (the loop's lag monitor)")
        ->check(CLI::Range(1, 3'600'000));
  }
  app.footer(std::string(lesson.more_help) +
             "Exit status: 0 every task completed and verified; 1 a task failed or a checksum "
             "differed; 2 bad input.");

  plan p;
  try {
    app.parse(argc, argv);
    if (f.list) {
      int width = 10;  // the names in one column, however long the longest
      for (const executor* e : lesson.executors) {
        width = std::max(width, static_cast<int>(e->name.size()));
      }
      for (const executor* e : lesson.executors) {
        std::printf("%-*s %s\n", width, std::string(e->name).c_str(),
                    std::string(e->summary).c_str());
      }
      return 0;
    }
    p = check(f, lesson);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::string what = e.what();
    std::replace(what.begin(), what.end(), '\n', ' ');
    std::fprintf(stderr, "%s: %s (see --help)\n", program.c_str(), what.c_str());
    return 2;
  } catch (const usage_error& e) {
    std::fprintf(stderr, "%s: %s\n", program.c_str(), e.what());
    return 2;
  }

  try {
    return run_lesson(lesson, program, f, p);
  } catch (const std::exception& e) {  // the machine refused: a thread, memory, a clock
    std::fprintf(stderr, "%s: the run failed: %s\n", program.c_str(), e.what());
    return 1;
  }
}

}  // namespace clab
