// The sweep: every registered executor × workload × distribution × P (and a task-size series),
// each repetition one verified run, timed by the run's own makespan (manual time). Counters carry
// the parameters and the prediction made before any run, so the report can judge every point.
// Look for: a run that fails verification stops the benchmark with an error, never a data point.
//
//   bench_sweep [--quick] [--timeline-out=FILE] [Google Benchmark flags...]
#include <benchmark/benchmark.h>
#include <regex.h>
#include <sys/utsname.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "lessons/registry.hpp"
#include "models/check.hpp"
#include "models/probe.hpp"
#include "workloads/calibration.hpp"
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
  std::vector<distribution> dists{distribution::fixed, distribution::bimodal};
  if (!quick)
    dists = {distribution::fixed, distribution::uniform, distribution::exp, distribution::bimodal};
  for (const executor* e : all_executors()) {
    // Executors whose worker count does not follow P are measured once, not once per P.
    const bool follows_p = e->plan.workers == worker_rule::requested;
    for (workload w : {workload::cpu, workload::wait, workload::mixed}) {
      for (distribution d : dists) {
        for (int p : follows_p ? ps : std::vector<int>{1}) {
          pts.push_back(
              {"scaling", e, {.tasks = n, .kind = w, .dist = d, .task_us = task_us, .seed = 1}, p});
        }
      }
    }
    // Granularity: where each executor's overhead starts to eat the work.
    const std::vector<double> sizes = quick
                                          ? std::vector<double>{1, 10, 100, 1000}
                                          : std::vector<double>{1, 3, 10, 30, 100, 300, 1000, 3000};
    for (double us : sizes) {
      // Enough tasks that the run lasts well past a thread start and a timer tick (about 10 ms
      // of work per core), at least 64; at most 16384 through a pool, and at most 256 (1024 in
      // the full run) where every task starts its own thread or process.
      const bool one_each = e->plan.workers == worker_rule::one_per_task;
      const double most = one_each ? (quick ? 256.0 : 1024.0) : 16384.0;
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

std::string name_of(const point& pt) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s/%s/%s/%s/n:%zu/p:%d/us:%g", pt.family.c_str(),
                std::string(pt.exec->name).c_str(), std::string(to_string(pt.spec.kind)).c_str(),
                std::string(to_string(pt.spec.dist)).c_str(), pt.spec.tasks, pt.workers,
                pt.spec.task_us);
  return buf;
}

/// Progress on stderr: which point, how far, and the time left, estimated from the predictions.
class progress {
 public:
  progress(double total_predicted_s, std::size_t points)
      : total_s_(total_predicted_s), points_(points), start_(std::chrono::steady_clock::now()) {}
  void begin(const std::string& name, double predicted_s) {
    ++done_points_;
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double frac = total_s_ > 0 ? done_s_ / total_s_ : 0;
    const double left = frac > 0.05 ? elapsed / frac - elapsed : total_s_ - done_s_;
    std::fprintf(stderr, "\r[%3zu/%zu] %3.0f%%  %5.0f s left  %-60s", done_points_, points_,
                 frac * 100, left, name.c_str());
    std::fflush(stderr);
    done_s_ += predicted_s;
  }
  ~progress() { std::fprintf(stderr, "\n"); }

 private:
  double total_s_;
  double done_s_ = 0;
  std::size_t points_;
  std::size_t done_points_ = 0;
  std::chrono::steady_clock::time_point start_;
};

void run_point(benchmark::State& state, prepared& p, progress& bar, int repetitions,
               const calibration& machine) {
  static std::map<const prepared*, int> calls;  // Google Benchmark calls once per repetition
  if (calls[&p]++ == 0) {
    bar.begin(name_of(p.pt),
              static_cast<double>(p.predicted.simulated.makespan_ns) * repetitions / 1e9);
    // Probe again now, in the process as it is when the point runs: by now this process holds
    // every point's task set, and a fork costs more the more memory its parent holds.
    // The kernel's speed is measured again too: on a shared host it drifts during a sweep of a
    // minute or more (another guest on the same physical core), and a task's CPU part is its
    // iteration count at the speed of the moment. The iterations, and so the checksums, stay.
    const schedule& plan = p.pt.exec->plan;
    calibration now = machine;
    now.ns_per_iteration = calibrate_kernel(nullptr, 15);
    for (task& t : p.tasks) {
      t.cpu_ns = std::llround(static_cast<double>(t.cpu_iterations) * now.ns_per_iteration);
    }
    if (plan.worker_start == unit_cost::process_start) {
      now.process_start_ns = measure_process_start();
    }
    forget_probes();  // the run-end probe applies to every executor
    p.predicted = predict(*p.pt.exec, p.tasks, p.pt.workers, now);
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

  const calibration machine = calibrate();
  describe_machine(machine);
  const int repetitions = quick ? 5 : 9;
  std::vector<std::unique_ptr<prepared>> points;
  double total_s = 0;
  for (const point& pt : plan_sweep(quick, machine.cores)) {
    if (!wanted(name_of(pt))) continue;
    auto p = std::make_unique<prepared>();
    p->pt = pt;
    p->tasks = make_task_set(pt.spec, machine.ns_per_iteration);
    p->reference = reference_checksums(p->tasks);
    p->predicted = predict(*pt.exec, p->tasks, pt.workers, machine);
    total_s += static_cast<double>(p->predicted.simulated.makespan_ns) * repetitions / 1e9;
    points.push_back(std::move(p));
  }
  progress bar(total_s, points.size());
  for (const auto& p : points) {
    prepared* raw = p.get();
    benchmark::RegisterBenchmark(name_of(p->pt).c_str(),
                                 [raw, &bar, repetitions, &machine](benchmark::State& s) {
                                   run_point(s, *raw, bar, repetitions, machine);
                                 })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond)
        ->Iterations(1)
        ->Repetitions(repetitions)
        ->DisplayAggregatesOnly(true);
  }
  regfree(&selected);
  if (!timeline.empty()) write_timeline(timeline, machine);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
