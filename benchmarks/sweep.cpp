// The sweep: every registered executor × workload × distribution × P (and a task-size series),
// each repetition one verified run, timed by the run's own makespan (manual time). Counters carry
// the parameters and the prediction made before any run, so the report can judge every point.
// Look for: a run that fails verification stops the benchmark with an error, never a data point.
//
//   bench_sweep [--quick] [--timeline-out=FILE] [Google Benchmark flags...]
#include <benchmark/benchmark.h>
#include <regex.h>
#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "lessons/registry.hpp"
#include "models/check.hpp"
#include "workloads/calibration.hpp"
#include "workloads/io_exchange.hpp"
#include "workloads/service_process.hpp"
#include "workloads/verify.hpp"

namespace clab {
namespace {

struct point {
  std::string family;  // scaling | granularity
  const executor* exec = nullptr;
  task_set_spec spec;
  int workers = 1;
};

struct prepared {
  point pt;
  int repetitions = 3;
  std::vector<task> tasks;
  std::vector<std::uint64_t> reference;
  prediction predicted;
};

/// P values: 1, 2, 4, … up to max(4, 2 × cores), plus the core count itself.
std::vector<int> worker_counts(int cores) {
  std::vector<int> ps;
  const int top = std::max(4, 2 * cores);
  for (int p = 1; p <= top; p *= 2) ps.push_back(p);
  if (std::find(ps.begin(), ps.end(), cores) == ps.end()) ps.push_back(cores);
  std::sort(ps.begin(), ps.end());
  return ps;
}

std::vector<point> plan_sweep(bool quick, int cores) {
  std::vector<point> pts;
  const std::vector<int> ps = worker_counts(cores);
  const std::size_t n = 4 * static_cast<std::size_t>(ps.back());  // every P gets several tasks
  // Tasks of 5 ms: long beside a thread start (~30 µs) and a scheduler time slice (~3 ms), so the
  // scaling points measure the executors, not the noise; the granularity series covers small tasks.
  const double task_us = 5000;
  // The quick run draws the plots (which show the fixed distribution) and leaves the uneven
  // distributions, where the schedules differ, to the full run: its time is then set by the
  // number of executors, about 5 s each on 2 cores, not by the number of distributions too.
  std::vector<distribution> dists{distribution::fixed};
  if (!quick)
    dists = {distribution::fixed, distribution::uniform, distribution::exp, distribution::bimodal};
  for (const executor* e : all_executors()) {
    // Executors whose worker count does not follow P are measured once, not once per P.
    const bool follows_p = e->plan.workers == worker_rule::requested;
    // A library's row is there to be compared with ours on the plots, which draw the fixed
    // distribution; the full run adds bimodal for it, where schedules differ most, not all four.
    const std::vector<distribution> own =
        !e->reference || quick
            ? dists
            : std::vector<distribution>{distribution::fixed, distribution::bimodal};
    for (workload w : {workload::cpu, workload::wait, workload::mixed}) {
      for (distribution d : own) {
        for (int p : follows_p ? ps : std::vector<int>{1}) {
          pts.push_back(
              {"scaling", e, {.tasks = n, .kind = w, .dist = d, .task_us = task_us, .seed = 1}, p});
        }
      }
    }
    // io: each task's wait is one request to lesson 08's service (started by main for these
    // points), answered after the task's time. The fixed distribution only, in both runs: the
    // uneven ones are the wait workload's points again with a round trip added, and every
    // executor that runs io has a row (the process executors' children make the requests too).
    // Requests of 20 ms, not 5: N requests at once on one loop end within a millisecond of each
    // other, give or take a wake-up of the service's or the client's thread (0.5-1 ms here),
    // which at 5 ms was a tenth of the makespan of every non-blocking executor.
    // The quick run sends half as many (two rounds at the largest P), to keep its two minutes.
    const double io_task_us = 20'000;
    const std::size_t io_tasks = quick ? n / 2 : n;
    if (runs_io(*e)) {
      for (int p : follows_p ? ps : std::vector<int>{1}) {
        pts.push_back({"scaling",
                       e,
                       {.tasks = io_tasks,
                        .kind = workload::io,
                        .dist = distribution::fixed,
                        .task_us = io_task_us,
                        .seed = 1},
                       p});
      }
    }
    // Granularity: where each executor's overhead starts to eat the work.
    // (The quick run takes three sizes a decade or two apart: enough to draw where the curve
    // bends, at a third of the full run's points, whose spacing is half a decade.)
    const std::vector<double> sizes = quick
                                          ? std::vector<double>{1, 30, 1000}
                                          : std::vector<double>{1, 3, 10, 30, 100, 300, 1000, 3000};
    for (double us : sizes) {
      // Enough tasks that the run lasts well past a thread start and a timer tick (about 10 ms
      // of work per core), at least 64; at most 16384 through a pool. Where every task starts its
      // own thread, at most 256 (1024 in the full run); its own process (2-8 ms each here), 64
      // (128): past a few dozen starts the per-task cost is measured and the rest is waiting.
      const bool one_each = e->plan.workers == worker_rule::one_per_task;
      const bool process_each = one_each && e->plan.worker_start != unit_cost::thread_start;
      const double most = process_each ? (quick ? 64.0 : 128.0)
                          : one_each   ? (quick ? 256.0 : 1024.0)
                                       : 16384.0;
      const auto n_tasks =
          static_cast<std::size_t>(std::clamp(std::ceil(10'000.0 * cores / us), 64.0, most));
      pts.push_back({"granularity",
                     e,
                     {.tasks = n_tasks,
                      .kind = workload::cpu,
                      .dist = distribution::fixed,
                      .task_us = us,
                      .seed = 1},
                     cores});
    }
  }
  return pts;
}

/// Repetitions of one point: the most (7) where its predicted runs fit the budget (2.5 s), never
/// fewer than 3, so that a median and a spread exist; a quick run takes 3 of every point. The
/// budget is what keeps the full sweep's time set by design: the slow points (a process per task,
/// 16384 tasks through a pipe) get three runs, the fast ones every repetition. (9 and 3 s took
/// the full make bench to 10 min 39 s once the io points came in.)
int repetitions_for(double predicted_s, bool quick) {
  constexpr int k_least = 3;
  constexpr int k_most = 7;
  constexpr double k_budget_s = 2.5;
  if (quick) return k_least;
  int reps = k_most;
  while (reps > k_least && reps * predicted_s > k_budget_s) --reps;
  return reps;
}

std::string name_of(const point& pt) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s/%s/%s/%s/n:%zu/p:%d/us:%g", pt.family.c_str(),
                std::string(pt.exec->name).c_str(), std::string(to_string(pt.spec.kind)).c_str(),
                std::string(to_string(pt.spec.dist)).c_str(), pt.spec.tasks, pt.workers,
                pt.spec.task_us);
  return buf;
}

/// Progress on stderr: which point, how far, and the time left, estimated from the predictions.
/// At the end it says where the wall time went: the sweep's budget is designed from that list.
class progress {
 public:
  progress(double total_predicted_s, std::size_t points)
      : total_s_(total_predicted_s), points_(points), start_(std::chrono::steady_clock::now()) {}
  void begin(const std::string& name, double predicted_s) {
    const auto now = std::chrono::steady_clock::now();
    if (!names_.empty()) walls_.push_back(std::chrono::duration<double>(now - last_).count());
    names_.push_back(name);
    last_ = now;
    ++done_points_;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double frac = total_s_ > 0 ? done_s_ / total_s_ : 0;
    const double left = frac > 0.05 ? elapsed / frac - elapsed : total_s_ - done_s_;
    std::fprintf(stderr, "\r[%3zu/%zu] %3.0f%%  %5.0f s left  %-60s", done_points_, points_,
                 frac * 100, left, name.c_str());
    std::fflush(stderr);
    done_s_ += predicted_s;
  }
  ~progress() {
    if (names_.empty()) return;
    const auto now = std::chrono::steady_clock::now();
    walls_.push_back(std::chrono::duration<double>(now - last_).count());
    std::fprintf(stderr, "\n");
    // Wall time per executor (its points' runs, repetitions, probes and calibration together).
    std::map<std::string, double> by_exec;
    for (std::size_t i = 0; i < names_.size(); ++i) {
      const std::string& n = names_[i];
      const auto a = n.find('/') + 1;
      by_exec[n.substr(a, n.find('/', a) - a)] += walls_[i];
    }
    std::vector<std::pair<double, std::string>> order;
    for (const auto& [e, s] : by_exec) order.emplace_back(s, e);
    std::sort(order.rbegin(), order.rend());
    std::string line;
    for (const auto& [s, e] : order) line += " " + e + " " + std::to_string(std::lround(s)) + " s,";
    if (!line.empty()) line.pop_back();
    std::fprintf(stderr, "sweep: %zu points in %.0f s; by executor:%s\n", names_.size(),
                 std::chrono::duration<double>(now - start_).count(), line.c_str());
    std::vector<std::size_t> slow(names_.size());
    for (std::size_t i = 0; i < slow.size(); ++i) slow[i] = i;
    std::sort(slow.begin(), slow.end(), [this](auto a, auto b) { return walls_[a] > walls_[b]; });
    slow.resize(std::min<std::size_t>(slow.size(), 5));
    std::fprintf(stderr, "sweep: the slowest points:");
    for (std::size_t i : slow) std::fprintf(stderr, " %s %.1f s;", names_[i].c_str(), walls_[i]);
    std::fprintf(stderr, "\n");
  }

 private:
  double total_s_;
  double done_s_ = 0;
  std::size_t points_;
  std::size_t done_points_ = 0;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_;
  std::vector<std::string> names_;
  std::vector<double> walls_;
};

void run_point(benchmark::State& state, prepared& p, progress& bar, const calibration& machine) {
  const int repetitions = p.repetitions;
  static std::map<const prepared*, int> calls;  // Google Benchmark calls once per repetition
  if (calls[&p]++ == 0) {
    bar.begin(name_of(p.pt),
              static_cast<double>(p.predicted.simulated.makespan_ns) * repetitions / 1e9);
    // Predict again now with the kernel's speed measured again: on a shared host it drifts
    // during a sweep of a minute or more (another guest on the same physical core), and a task's
    // CPU part is its iteration count at the speed of the moment. The iterations, and so the
    // checksums, stay. The executors' probes were taken once, before the first point, with every
    // task set already built (a fork costs more the more memory its parent holds): taking them
    // again at every point cost a third of a second a point, a third of the quick sweep.
    const schedule& plan = p.pt.exec->plan;
    calibration now = machine;
    now.ns_per_iteration = calibrate_kernel(nullptr, 15);
    for (task& t : p.tasks) {
      t.cpu_ns = std::llround(static_cast<double>(t.cpu_iterations) * now.ns_per_iteration);
    }
    if (plan.worker_start == unit_cost::process_start) {
      now.process_start_ns = measure_process_start();
    }
    p.predicted = predict(*p.pt.exec, p.tasks, p.pt.workers, now);  // the probes are cached
  }
  double stretch = 1.0;
  for (auto _ : state) {
    const run_result r = measure(*p.pt.exec, p.tasks, {.workers = p.pt.workers});
    state.SetIterationTime(static_cast<double>(r.makespan_ns) / 1e9);
    const verification v = verify(p.tasks, r, p.reference);
    if (!v.ok || !r.failed.empty()) {
      const std::string why = v.ok ? "task " + std::to_string(r.failed.front().id) +
                                         " failed: " + r.failed.front().cause
                                   : v.problems.front();
      state.SkipWithError(("unverified run: " + why).c_str());
      break;
    }
    double measured = 0;
    double modelled = 0;
    for (const task_record& rec : r.records) {
      const task_record& s = p.predicted.simulated.timeline.at(rec.id);
      measured += static_cast<double>(rec.end_ns - rec.start_ns);
      modelled += static_cast<double>(s.end_ns - s.start_ns);
    }
    stretch = modelled > 0 ? measured / modelled : 1.0;
  }
  const task_set_totals tot = totals(p.tasks);
  auto& c = state.counters;
  c["lesson"] = std::stod(std::string(p.pt.exec->lesson));  // the report groups by family
  c["tasks"] = static_cast<double>(p.tasks.size());
  c["workers"] = p.pt.workers;
  c["workers_used"] = p.predicted.config.workers;
  c["cores"] = p.predicted.config.cores;
  c["task_us"] = p.pt.spec.task_us;
  c["sum_ns"] = static_cast<double>(tot.sum_ns);
  c["sum_cpu_ns"] = static_cast<double>(tot.sum_cpu_ns);
  c["max_ns"] = static_cast<double>(tot.max_ns);
  c["predicted_ns"] = static_cast<double>(p.predicted.simulated.makespan_ns);
  c["predicted_low_ns"] = static_cast<double>(p.predicted.low_ns);
  c["predicted_high_ns"] = static_cast<double>(p.predicted.high_ns);
  c["lower_bound_ns"] = static_cast<double>(p.predicted.lower_bound_ns);
  c["graham_upper_ns"] =
      p.predicted.graham_applies ? static_cast<double>(p.predicted.graham.upper_ns) : 0;
  c["task_stretch"] = stretch;
}

/// A small bimodal CPU run per executor, measured and modelled, for the Gantt plot.
void write_timeline(const std::string& path, const calibration& machine) {
  std::ofstream out(path);
  out << "source,executor,id,worker,start_ns,end_ns,wait_ns\n";
  const auto tasks = make_task_set({.tasks = 12,
                                    .kind = workload::mixed,
                                    .dist = distribution::bimodal,
                                    .task_us = 2000,
                                    .seed = 5},
                                   machine.ns_per_iteration);
  const auto ref = reference_checksums(tasks);
  for (const executor* e : all_executors()) {
    const prediction pred = predict(*e, tasks, machine.cores, machine);
    const run_result r = measure(*e, tasks, {.workers = machine.cores});
    if (!verify(tasks, r, ref).ok)
      throw std::runtime_error("timeline run of " + std::string(e->name) + " failed verification");
    for (const task_record& rec : r.records) {
      out << "measured," << e->name << ',' << rec.id << ',' << rec.worker << ',' << rec.start_ns
          << ',' << rec.end_ns << ',' << tasks[rec.id].wait_ns << '\n';
    }
    for (const task_record& rec : pred.simulated.timeline) {
      out << "model," << e->name << ',' << rec.id << ',' << rec.worker << ',' << rec.start_ns << ','
          << rec.end_ns << ',' << tasks[rec.id].wait_ns << '\n';
    }
  }
}

std::string first_line_of(const char* path, const char* key) {
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key, 0) == 0) {
      const auto colon = line.find(':');
      return colon == std::string::npos ? line
                                        : line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  }
  return "unknown";
}

void describe_machine(const calibration& m) {
  utsname u{};
  uname(&u);
  benchmark::AddCustomContext("cores", std::to_string(m.cores));
  benchmark::AddCustomContext("cpu_model", first_line_of("/proc/cpuinfo", "model name"));
  benchmark::AddCustomContext("kernel", std::string(u.sysname) + " " + u.release + " " + u.machine);
  benchmark::AddCustomContext("compiler", std::string(
#if defined(__clang__)
                                              "clang "
#else
                                              "g++ "
#endif
                                              __VERSION__));
  benchmark::AddCustomContext("build_type", CLAB_BUILD_TYPE);
  benchmark::AddCustomContext("ns_per_iteration", std::to_string(m.ns_per_iteration));
  benchmark::AddCustomContext("thread_start_ns", std::to_string(m.thread_start_ns));
  benchmark::AddCustomContext("sleep_overshoot_1ms_ns",
                              std::to_string(m.sleep_overshoot.overshoot_ns[1]));
  benchmark::AddCustomContext("time_slice_ns", std::to_string(m.time_slice_ns));
  benchmark::AddCustomContext("time_slice_long_ns", std::to_string(m.time_slice_long_ns));
  benchmark::AddCustomContext("balance_delay_ns", std::to_string(m.balance_delay_ns));
}

}  // namespace
}  // namespace clab

int main(int argc, char** argv) {
  using namespace clab;
  bool quick = false;
  std::string timeline;
  std::vector<char*> rest{argv[0]};
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--quick") {
      quick = true;
    } else if (a.rfind("--timeline-out=", 0) == 0) {
      timeline = std::string(a.substr(15));
    } else {
      rest.push_back(argv[i]);
    }
  }
  // Google Benchmark applies --benchmark_filter only when it runs, but every point is predicted
  // (and its executor probed) before that: points the filter leaves out are dropped here first,
  // so a filtered sweep costs only its own points. A leading '-' excludes, as in Google Benchmark.
  std::string filter;
  for (const char* a : rest) {
    const std::string_view s = a;
    if (s.rfind("--benchmark_filter=", 0) == 0) filter = std::string(s.substr(19));
  }
  const bool exclude = !filter.empty() && filter.front() == '-';
  // POSIX extended regular expressions, the dialect of Google Benchmark's own filter.
  regex_t selected;
  if (regcomp(&selected,
              filter.empty() ? "."
              : exclude      ? filter.c_str() + 1
                             : filter.c_str(),
              REG_EXTENDED | REG_NOSUB) != 0) {
    std::fprintf(stderr, "bench_sweep: --benchmark_filter: '%s' is not a regular expression\n",
                 filter.c_str());
    return 2;
  }
  const auto wanted = [&selected, exclude](const std::string& name) {
    return (regexec(&selected, name.c_str(), 0, nullptr, 0) == 0) != exclude;
  };
  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  if (benchmark::ReportUnrecognizedArguments(rest_argc, rest.data())) return 2;

  const auto setup_start = std::chrono::steady_clock::now();
  const calibration machine = calibrate();
  describe_machine(machine);
  std::vector<std::unique_ptr<prepared>> points;
  double total_s = 0;
  // Points that differ only in executor or P share a task set, so each set and its reference
  // checksums (the serial computation of every task: seconds in all) are made once.
  std::map<std::tuple<std::size_t, workload, distribution, double, std::uint64_t>, const prepared*>
      made;
  std::vector<point> planned;
  for (const point& pt : plan_sweep(quick, machine.cores)) {
    if (wanted(name_of(pt))) planned.push_back(pt);
  }
  // The io points' far end: one io_service child for the whole sweep, started only when an io
  // point is wanted and stopped (and reaped) when main returns or the process dies.
  std::optional<service_process> service;
  std::size_t most_io_tasks = 0;
  for (const point& pt : planned) {
    if (pt.spec.kind == workload::io) most_io_tasks = std::max(most_io_tasks, pt.spec.tasks);
  }
  if (most_io_tasks > 0) {
    // Every request of a point may be open at once (one connection each), in this process and
    // in the service, which inherits the limit: raised before the service starts.
    if (const std::string why = ensure_descriptors(most_io_tasks); !why.empty()) {
      std::fprintf(stderr, "bench_sweep: the io points: %s\n", why.c_str());
      return 2;
    }
    try {
      service.emplace(find_io_service());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_sweep: the io points need lesson 08's service: %s\n", e.what());
      return 1;
    }
    const io_endpoint at = resolve_endpoint(service->host(), service->port());
    for (point& pt : planned) {
      if (pt.spec.kind == workload::io) pt.spec.service = at;
    }
  }
  for (const point& pt : planned) {
    auto p = std::make_unique<prepared>();
    p->pt = pt;
    const auto key =
        std::make_tuple(pt.spec.tasks, pt.spec.kind, pt.spec.dist, pt.spec.task_us, pt.spec.seed);
    if (const auto it = made.find(key); it != made.end()) {
      p->tasks = it->second->tasks;
      p->reference = it->second->reference;
    } else {
      p->tasks = make_task_set(pt.spec, machine.ns_per_iteration);
      p->reference = reference_checksums(p->tasks);
      made.emplace(key, p.get());
    }
    points.push_back(std::move(p));
  }
  std::map<std::string_view, double> probe_s;  // prediction time per executor: its probes
  for (const auto& p : points) {  // the probes run with every task set in memory (see run_point)
    const auto t0 = std::chrono::steady_clock::now();
    p->predicted = predict(*p->pt.exec, p->tasks, p->pt.workers, machine);
    probe_s[p->pt.exec->name] +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double predicted_s = static_cast<double>(p->predicted.simulated.makespan_ns) / 1e9;
    p->repetitions = repetitions_for(predicted_s, quick);
    total_s += predicted_s * p->repetitions;
  }
  std::fprintf(
      stderr,
      "sweep: calibration and %zu predictions took %.0f s; the runs are predicted to take %.0f s\n",
      points.size(),
      std::chrono::duration<double>(std::chrono::steady_clock::now() - setup_start).count(),
      total_s);
  std::fprintf(stderr, "sweep: predictions (the probes) by executor:");
  for (const auto& [e, secs] : probe_s) {
    std::fprintf(stderr, " %.*s %.1f s", static_cast<int>(e.size()), e.data(), secs);
  }
  std::fprintf(stderr, "\n");
  progress bar(total_s, points.size());
  for (const auto& p : points) {
    prepared* raw = p.get();
    benchmark::RegisterBenchmark(
        name_of(p->pt).c_str(),
        [raw, &bar, &machine](benchmark::State& s) { run_point(s, *raw, bar, machine); })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond)
        ->Iterations(1)
        ->Repetitions(p->repetitions)
        ->DisplayAggregatesOnly(true);
  }
  regfree(&selected);
  if (!timeline.empty()) write_timeline(timeline, machine);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
