#include "benchmarks/report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <ostream>
#include <set>
#include <sstream>
#include <stdexcept>

#include "models/bounds.hpp"
#include "workloads/task.hpp"

namespace clab {
namespace {

/// "scaling/static/cpu/fixed/n:16/p:4/us:2000/manual_time" → fields, and key:value pairs.
void parse_name(const std::string& name, sweep_point& p) {
  std::vector<std::string> parts;
  std::stringstream in(name);
  for (std::string part; std::getline(in, part, '/');) parts.push_back(part);
  if (parts.size() < 7) throw std::runtime_error("not a sweep benchmark name: " + name);
  p.family = parts[0];
  p.executor = parts[1];
  p.workload = parts[2];
  p.dist = parts[3];
}

double to_ns(double value, const std::string& unit) {
  if (unit == "ns") return value;
  if (unit == "us") return value * 1e3;
  if (unit == "ms") return value * 1e6;
  if (unit == "s") return value * 1e9;
  throw std::runtime_error("unknown time unit " + unit);
}

std::string fmt(double x, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, x);
  return buf;
}

std::string ms(double ns) { return fmt(ns / 1e6, 3); }

// The predicted makespan in ms, with the scheduler's range after it where it is 1 % wide or more.
std::string predicted_ms(const sweep_point& p) {
  const double low = std::min(p.predicted_low_ns, p.predicted_ns);
  const double high = std::max(p.predicted_high_ns, p.predicted_ns);
  if (high < 1.01 * low) return ms(p.predicted_ns);
  return ms(p.predicted_ns) + " (" + ms(low) + "–" + ms(high) + ")";
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<') {
      out += "&lt;";
    } else if (c == '>') {
      out += "&gt;";
    } else if (c == '&') {
      out += "&amp;";
    } else if (c == '"') {
      out += "&quot;";
    } else {
      out += c;
    }
  }
  return out;
}

bool follows_p(const sweep_report& r, const std::string& executor) {
  std::set<double> ps;
  for (const sweep_point& p : r.points) {
    if (p.executor == executor && p.family == "scaling") ps.insert(p.workers);
  }
  return ps.size() > 1;
}

/// Every executor of the sweep, lesson by lesson (within a lesson in the sweep's own order), so
/// that each family of the plots is one contiguous run of data blocks.
std::vector<std::string> executors_of(const sweep_report& r) {
  std::vector<std::pair<int, std::string>> found;
  for (const sweep_point& p : r.points) {
    if (std::none_of(found.begin(), found.end(),
                     [&](const auto& f) { return f.second == p.executor; }))
      found.emplace_back(p.lesson, p.executor);
  }
  std::stable_sort(found.begin(), found.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> names;
  for (auto& f : found) names.push_back(std::move(f.second));
  return names;
}

}  // namespace

nlohmann::json parse_gbench_json(const std::string& text) {
  std::string clean;
  clean.reserve(text.size());
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string && c == '\\' && i + 1 < text.size()) {  // an escape: copy it and what it escapes
      clean += c;
      clean += text[++i];
      continue;
    }
    if (c == '"') in_string = !in_string;
    if (!in_string) {
      // A bare literal where a value belongs: NaN, nan, -nan, inf, -inf, Infinity, -Infinity.
      bool replaced = false;
      for (const char* lit : {"-Infinity", "Infinity", "-nan", "-inf", "NaN", "nan", "inf"}) {
        const std::string_view l(lit);
        if (text.compare(i, l.size(), l) == 0) {
          clean += "null";
          i += l.size() - 1;
          replaced = true;
          break;
        }
      }
      if (replaced) continue;
    }
    clean += c;
  }
  return nlohmann::json::parse(clean);
}

std::size_t sweep_report::within() const {
  return static_cast<std::size_t>(std::count_if(
      points.begin(), points.end(), [](const sweep_point& p) { return p.judged.within; }));
}

std::vector<verdict_group> group_verdicts(const sweep_report& report) {
  std::vector<verdict_group> groups;
  for (const sweep_point& p : report.points) {
    const bool over = p.workers_used > p.cores;
    auto g = std::find_if(groups.begin(), groups.end(), [&](const verdict_group& x) {
      return x.family == p.family && x.workload == p.workload && x.oversubscribed == over;
    });
    if (g == groups.end()) {
      groups.push_back({.family = p.family, .workload = p.workload, .oversubscribed = over});
      g = std::prev(groups.end());
    }
    ++g->points;
    if (p.judged.within) ++g->within;
  }
  return groups;
}

std::string workers_label(const verdict_group& g) {
  return g.oversubscribed ? "P > cores" : "P ≤ cores";
}

sweep_report read_sweep(const nlohmann::json& gbench) {
  if (!gbench.contains("benchmarks") || !gbench.contains("context")) {
    throw std::runtime_error("not a Google Benchmark JSON file (no benchmarks or context)");
  }
  sweep_report r;
  for (const auto& [key, value] : gbench["context"].items()) {
    r.machine[key] = value.is_string() ? value.get<std::string>() : value.dump();
  }
  std::map<std::string, sweep_point> by_run;
  std::vector<std::string> order;  // the sweep's own order: registry order of executors
  std::map<std::string, double> cv_of;
  std::map<std::string, int> reps_of;
  for (const auto& b : gbench["benchmarks"]) {
    const std::string run = b.value("run_name", b.value("name", std::string()));
    if (b.value("error_occurred", false)) {
      r.errors.push_back(run + ": " + b.value("error_message", std::string("error")));
      continue;
    }
    if (b.value("run_type", std::string()) == "iteration") {
      ++reps_of[run];
      continue;
    }
    const std::string agg = b.value("aggregate_name", std::string());
    if (agg == "cv") cv_of[run] = b.at("real_time").get<double>();
    if (agg != "median") continue;
    sweep_point p;
    parse_name(run, p);
    p.makespan_ns = to_ns(b.at("real_time").get<double>(), b.value("time_unit", std::string("ns")));
    p.lesson = static_cast<int>(b.value("lesson", 0.0));
    p.tasks = b.at("tasks").get<double>();
    p.workers = b.at("workers").get<double>();
    p.workers_used = b.at("workers_used").get<double>();
    p.cores = b.at("cores").get<double>();
    p.task_us = b.at("task_us").get<double>();
    p.sum_ns = b.at("sum_ns").get<double>();
    p.sum_cpu_ns = b.at("sum_cpu_ns").get<double>();
    p.max_ns = b.at("max_ns").get<double>();
    p.predicted_ns = b.at("predicted_ns").get<double>();
    p.predicted_low_ns = b.value("predicted_low_ns", p.predicted_ns);
    p.predicted_high_ns = b.value("predicted_high_ns", p.predicted_ns);
    p.lower_bound_ns = b.at("lower_bound_ns").get<double>();
    p.graham_upper_ns = b.at("graham_upper_ns").get<double>();
    p.task_stretch = b.at("task_stretch").get<double>();
    by_run[run] = p;
    order.push_back(run);
  }
  for (const std::string& run : order) {
    sweep_point& p = by_run[run];
    p.cv = cv_of.count(run) != 0 ? cv_of[run] : 0;
    p.repetitions = reps_of[run];
    p.tolerance = default_tolerance(parse_workload(p.workload).value_or(workload::cpu));
    verdict_input in;
    in.measured_ns = static_cast<std::int64_t>(p.makespan_ns);
    in.predicted_ns = static_cast<std::int64_t>(p.predicted_ns);
    in.predicted_low_ns = static_cast<std::int64_t>(p.predicted_low_ns);
    in.predicted_high_ns = static_cast<std::int64_t>(p.predicted_high_ns);
    in.work_ns = static_cast<std::int64_t>(p.sum_ns);
    in.tolerance = p.tolerance;
    in.cv = p.cv;
    in.task_stretch = p.task_stretch;
    in.cpu_work = p.sum_cpu_ns > 0;
    in.runnable_threads = static_cast<int>(p.workers_used);
    in.cores = static_cast<int>(p.cores);
    p.judged = judge(in);
    r.points.push_back(p);
  }
  return r;
}

std::vector<scaling_fit> fit_scaling(const sweep_report& report) {
  std::vector<scaling_fit> fits;
  for (const std::string& e : executors_of(report)) {
    if (!follows_p(report, e)) continue;
    for (const char* w : {"cpu", "wait", "mixed", "io"}) {
      scaling_fit f{.executor = e, .workload = w};
      double t1 = 0;
      for (const sweep_point& p : report.points) {
        if (p.family == "scaling" && p.executor == e && p.workload == w && p.dist == "fixed" &&
            p.workers == 1) {
          t1 = p.makespan_ns;
        }
      }
      if (t1 <= 0) continue;
      for (const sweep_point& p : report.points) {
        if (p.family == "scaling" && p.executor == e && p.workload == w && p.dist == "fixed") {
          f.points.push_back({p.workers, t1 / p.makespan_ns});
        }
      }
      f.amdahl = fit_amdahl(f.points);
      f.usl = fit_usl(f.points);
      fits.push_back(f);
    }
  }
  return fits;
}

void write_csv(const sweep_report& report, std::ostream& out) {
  out << "family,executor,workload,dist,tasks,workers,workers_used,cores,task_us,makespan_ns,"
         "predicted_ns,predicted_low_ns,predicted_high_ns,ratio,tolerance,verdict,cv,repetitions,"
         "sum_task_ns,max_task_ns,lower_bound_"
         "ns,"
         "task_stretch,cause\n";
  for (const sweep_point& p : report.points) {
    out << p.family << ',' << p.executor << ',' << p.workload << ',' << p.dist << ',' << p.tasks
        << ',' << p.workers << ',' << p.workers_used << ',' << p.cores << ',' << p.task_us << ','
        << fmt(p.makespan_ns, 0) << ',' << fmt(p.predicted_ns, 0) << ','
        << fmt(p.predicted_low_ns, 0) << ',' << fmt(p.predicted_high_ns, 0) << ','
        << fmt(p.judged.ratio, 4) << ',' << p.tolerance << ','
        << (p.judged.within ? "within" : "deviating") << ',' << fmt(p.cv, 4) << ',' << p.repetitions
        << ',' << fmt(p.sum_ns, 0) << ',' << fmt(p.max_ns, 0) << ',' << fmt(p.lower_bound_ns, 0)
        << ',' << fmt(p.task_stretch, 4) << ",\"" << p.judged.cause << "\"\n";
  }
}

void write_verdicts(const sweep_report& report, const std::vector<scaling_fit>& fits,
                    std::ostream& out) {
  const std::size_t n = report.points.size();
  const std::size_t ok = report.within();
  out << "# Verdicts\n\n";
  out << "**" << ok << " of " << n << " points within tolerance ("
      << fmt(n > 0 ? 100.0 * static_cast<double>(ok) / static_cast<double>(n) : 0, 1)
      << "%).** Tolerance: 5 % for wait work, 10 % where tasks compute or ask the io service; each "
         "point is the median "
         "of "
         "its repetitions, judged against the prediction made before it ran. Where the "
         "scheduler's choices change the makespan (more CPU phases runnable than cores; workers "
         "that compute from their start, which may start side by side on one core; a process "
         "pool's parent on its worker's core or on another), the prediction is shown with its "
         "range over those choices (a time slice of none up to the longest turn measured; one "
         "queue for all cores, or a queue per core balanced after the measured delay; the "
         "hand-off probed on one core), and a point within tolerance of that range is within "
         "(\"within the range\").\n\n";
  out << "## Where the model holds\n\nThe points by kind. P is the workers a run started (a thread "
         "or process per task counts each one): with more workers than cores, the kernel's "
         "placement and time slicing decide, and the model gives a range.\n\n"
         "| family | workload | workers | within | points |\n| --- | --- | --- | --- | --- |\n";
  for (const verdict_group& g : group_verdicts(report)) {
    out << "| " << g.family << " | " << g.workload << " | " << workers_label(g) << " | " << g.within
        << " | " << g.points << " |\n";
  }
  out << "\n## Machine\n\n| | |\n| --- | --- |\n";
  for (const char* k :
       {"host_name", "cpu_model", "cores", "num_cpus", "kernel", "compiler", "build_type",
        "ns_per_iteration", "thread_start_ns", "sleep_overshoot_1ms_ns", "time_slice_ns",
        "time_slice_long_ns", "balance_delay_ns", "date"}) {
    if (report.machine.count(k) != 0) out << "| " << k << " | " << report.machine.at(k) << " |\n";
  }
  out << "\n## Scaling fits (dist fixed)\n\n"
         "Amdahl: S(P) = 1 / (s + (1 − s)/P). USL: S(P) = P / (1 + σ(P − 1) + κP(P − 1)). "
         "On CPU work the cores cap the speedup, and both laws read that cap as a serial fraction "
         "or "
         "contention: compare with the number of cores before blaming the executor.\n\n";
  out << "| executor | workload | points | Amdahl s | rms | USL σ | USL κ | peak P | rms |\n"
         "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
  for (const scaling_fit& f : fits) {
    out << "| " << f.executor << " | " << f.workload << " | " << f.points.size() << " | "
        << fmt(f.amdahl.serial_fraction, 3) << " | " << fmt(f.amdahl.rms_error, 3) << " | "
        << fmt(f.usl.sigma, 3) << " | " << fmt(f.usl.kappa, 4) << " | "
        << (f.usl.peak_workers > 0 ? fmt(f.usl.peak_workers, 1) : "none") << " | "
        << fmt(f.usl.rms_error, 3) << " |\n";
  }
  out << "\n## Deviating points\n\n";
  if (ok == n) out << "None.\n";
  for (const sweep_point& p : report.points) {
    if (!p.judged.within) {
      out << "- " << p.family << " " << p.executor << " " << p.workload << " " << p.dist
          << " N=" << p.tasks << " P=" << p.workers << " t=" << p.task_us << " µs: ratio "
          << fmt(p.judged.ratio, 3) << " — " << p.judged.cause << "\n";
    }
  }
  out << "\n## Every point\n\n| family | executor | workload | dist | N | P | task µs | measured "
         "ms | "
         "predicted ms (range) | ratio | CV | verdict |\n| --- | --- | --- | --- | --- | --- | --- "
         "| --- | "
         "--- | --- | --- | --- |\n";
  for (const sweep_point& p : report.points) {
    out << "| " << p.family << " | " << p.executor << " | " << p.workload << " | " << p.dist
        << " | " << p.tasks << " | " << p.workers << " | " << p.task_us << " | "
        << ms(p.makespan_ns) << " | " << predicted_ms(p) << " | " << fmt(p.judged.ratio, 3) << " | "
        << fmt(p.cv * 100, 1) << "% | "
        << (p.judged.by_range ? "within the range"
            : p.judged.within ? "within"
                              : "**deviating**")
        << " |\n";
  }
}

void write_plot_data(const sweep_report& report, const std::vector<scaling_fit>& fits,
                     const nlohmann::json* units, const std::filesystem::path& dir) {
  const std::vector<std::string> execs = executors_of(report);
  int cores = 1;
  double max_p = 1;
  // Each workload's scaling series has one N and one task size, its own (io's requests are
  // longer than the other workloads' tasks): the closed forms and the titles use that one.
  std::map<std::string, std::pair<double, double>> series;  // workload → (N, task µs)
  for (const sweep_point& p : report.points) {
    cores = static_cast<int>(p.cores);
    if (p.family == "scaling") {
      series[p.workload] = {p.tasks, p.task_us};
      max_p = std::max(max_p, p.workers);
    }
  }
  // Makespan against P, one block per executor (dist fixed), and the closed-form models. An io
  // task's time is its wait at the service, so its closed forms are the wait workload's.
  for (const char* w : {"cpu", "wait", "mixed", "io"}) {
    std::ofstream out(dir / ("makespan_" + std::string(w) + ".dat"));
    for (const std::string& e : execs) {
      out << "\"" << e << "\"\n";
      for (const sweep_point& p : report.points) {
        if (p.family == "scaling" && p.executor == e && p.workload == w && p.dist == "fixed") {
          const std::string row =
              ' ' + ms(p.makespan_ns) + ' ' + ms(p.predicted_ns) + ' ' + fmt(p.cv, 4) + '\n';
          if (follows_p(report, e)) {
            out << p.workers << row;
          } else {  // P does not apply (serial, a thread per task): a flat line across the plot
            out << 1 << row << max_p << row;
          }
        }
      }
      out << "\n\n";
    }
    std::ofstream model(dir / ("makespan_" + std::string(w) + "_model.dat"));
    model << "# P  ceil(N/P)*t_ms  sum_t_over_P_eff_ms\n";
    const auto [tasks, task_us] = series[w];
    const double t_ns = task_us * 1e3;
    for (double p = 1; p <= max_p; p += 1) {  // ⌈N/P⌉ is defined for whole workers only
      const int pi = static_cast<int>(p);
      const double cpu_share = std::string(w) == "wait" || std::string(w) == "io"
                                   ? 0.0
                                   : (std::string(w) == "mixed" ? 0.5 : 1.0);
      // Waits scale with P, CPU parts with min(P, cores): the course's T = Σt/P_eff.
      const double share = tasks * t_ns * (1 - cpu_share) / p +
                           tasks * t_ns * cpu_share / std::min(p, static_cast<double>(cores));
      model << p << ' '
            << ms(static_cast<double>(equal_tasks_makespan(static_cast<std::size_t>(tasks), pi,
                                                           static_cast<std::int64_t>(t_ns))))
            << ' ' << ms(share) << '\n';
    }
  }
  // Speedup with the USL fit.
  for (const char* w : {"cpu", "wait"}) {
    std::ofstream out(dir / ("speedup_" + std::string(w) + ".dat"));
    std::ofstream fit(dir / ("speedup_" + std::string(w) + "_fit.dat"));
    for (const scaling_fit& f : fits) {
      if (f.workload != w) continue;
      out << "\"" << f.executor << "\"\n";
      for (const speedup_point& s : f.points) out << s.workers << ' ' << fmt(s.speedup, 4) << '\n';
      out << "\n\n";
      fit << "\"" << f.executor << " USL σ=" << fmt(f.usl.sigma, 3) << " κ=" << fmt(f.usl.kappa, 4)
          << "\"\n";
      for (double p = 1; p <= max_p; p += max_p / 100)
        fit << p << ' ' << fmt(usl_speedup(f.usl.sigma, f.usl.kappa, p), 4) << '\n';
      fit << "\n\n";
    }
  }
  // Efficiency against task size: the lower bound over the measured makespan.
  {
    std::ofstream out(dir / "efficiency.dat");
    for (const std::string& e : execs) {
      out << "\"" << e << "\"\n";
      for (const sweep_point& p : report.points) {
        if (p.family == "granularity" && p.executor == e) {
          out << p.task_us << ' ' << fmt(p.lower_bound_ns / p.makespan_ns, 4) << ' '
              << fmt(p.lower_bound_ns / p.predicted_ns, 4) << '\n';
        }
      }
      out << "\n\n";
    }
  }
  // Measured against predicted, every point.
  {
    std::ofstream out(dir / "predicted_vs_measured.dat");
    out << "# predicted_ms measured_ms within low_ms high_ms\n";
    for (const sweep_point& p : report.points) {
      out << ms(p.predicted_ns) << ' ' << ms(p.makespan_ns) << ' ' << (p.judged.within ? 1 : 0)
          << ' ' << ms(std::min(p.predicted_low_ns, p.predicted_ns)) << ' '
          << ms(std::max(p.predicted_high_ns, p.predicted_ns)) << '\n';
    }
  }
  // Per-unit costs from bench_units (aggregate medians; a row measured once, as the million
  // timers are in a quick run, has no aggregate: its one repetition stands for itself).
  if (units != nullptr) {
    std::ofstream out(dir / "units.dat");
    out << "# ns_per_unit name\n";
    std::map<std::string, int> repetitions;
    for (const auto& b : (*units)["benchmarks"]) {
      if (b.value("run_type", std::string()) == "iteration") ++repetitions[b.value("run_name", "")];
    }
    for (const auto& b : (*units)["benchmarks"]) {
      const std::string name = b.value("run_name", std::string());
      const bool once = b.value("run_type", std::string()) == "iteration" && repetitions[name] == 1;
      if (!once && b.value("aggregate_name", std::string()) != "median") continue;
      if (!b.contains("ns_per_unit") || !b["ns_per_unit"].is_number()) continue;
      const double ns = b["ns_per_unit"].get<double>();
      // The row's own name: Google Benchmark's settings (min_time:, iterations:, repeats:,
      // real_time) are left out of the label.
      std::string label;
      for (std::size_t at = 0; at <= name.size();) {
        const std::size_t end = std::min(name.find('/', at), name.size());
        const std::string part = name.substr(at, end - at);
        if (part.find(':') == std::string::npos && part != "real_time") {
          label += (label.empty() ? "" : "/") + part;
        }
        at = end + 1;
      }
      std::replace(label.begin(), label.end(), '_', ' ');
      out << fmt(ns, 2) << " \"" << label << "\"\n";
    }
  }
  std::ofstream vars(dir / "plotvars.gp");
  vars << "# written by bench_report: what the plot scripts need to know about this run\n";
  vars << "cores = " << cores << "\nmax_p = " << max_p << "\n";
  for (const char* w : {"cpu", "wait", "mixed", "io"}) {  // read by value("tasks_".w) and such
    vars << "tasks_" << w << " = " << series[w].first << "\ntask_us_" << w << " = "
         << series[w].second << "\n";
  }
  vars << "executors = \"";
  for (std::size_t i = 0; i < execs.size(); ++i) vars << (i ? " " : "") << execs[i];
  vars << "\"\nn_executors = " << execs.size() << "\n";
  // The blocking family (lessons 00-04) comes first in registry order; the plots draw it and the
  // asynchronous family (05 on) in panels of their own.
  std::size_t blocking = 0;
  for (const std::string& e : execs) {
    const auto it = std::find_if(report.points.begin(), report.points.end(),
                                 [&](const sweep_point& p) { return p.executor == e; });
    if (it != report.points.end() && it->lesson < 5) ++blocking;
  }
  vars << "n_blocking = " << blocking << "\n";
  // Executors whose worker count follows P (the speedup plots), with the colour each has in every
  // other plot: its position in the registry, plus one.
  std::size_t scaling = 0;
  std::string colours;
  for (std::size_t i = 0; i < execs.size(); ++i) {
    if (!follows_p(report, execs[i])) continue;
    ++scaling;
    if (!colours.empty()) colours += ' ';
    colours += std::to_string(i + 1);
  }
  vars << "n_scaling = " << scaling << "\nscaling_colours = \"" << colours << "\"\n";
}

namespace {

/// One line of text: escaped, with `code` spans.
std::string inline_html(std::string_view text) {
  std::string out;
  bool in_code = false;
  for (const char c : text) {
    if (c == '`') {
      out += in_code ? "</code>" : "<code>";
      in_code = !in_code;
    } else {
      out += html_escape(std::string(1, c));
    }
  }
  if (in_code) out += "</code>";
  return out;
}

/// "| a | b |" → {"a", "b"}, each trimmed.
std::vector<std::string_view> table_cells(std::string_view line) {
  std::vector<std::string_view> cells;
  if (!line.empty() && line.front() == '|') line.remove_prefix(1);
  if (!line.empty() && line.back() == '|') line.remove_suffix(1);
  for (std::size_t at = 0; at <= line.size();) {
    std::size_t bar = line.find('|', at);
    if (bar == std::string_view::npos) bar = line.size();
    std::string_view cell = line.substr(at, bar - at);
    while (!cell.empty() && cell.front() == ' ') cell.remove_prefix(1);
    while (!cell.empty() && cell.back() == ' ') cell.remove_suffix(1);
    cells.push_back(cell);
    at = bar + 1;
  }
  return cells;
}

}  // namespace

std::string markdown_to_html(std::string_view markdown) {
  std::string out;
  std::string paragraph;
  int table_rows = 0;  // rows of the table being written; 0: none open
  const auto end_paragraph = [&] {
    if (!paragraph.empty()) out += "<p>" + paragraph + "</p>\n";
    paragraph.clear();
  };
  const auto end_table = [&] {
    if (table_rows > 0) out += "</table>\n";
    table_rows = 0;
  };
  for (std::size_t at = 0; at < markdown.size();) {
    std::size_t eol = markdown.find('\n', at);
    if (eol == std::string_view::npos) eol = markdown.size();
    const std::string_view line = markdown.substr(at, eol - at);
    at = eol + 1;
    if (!line.empty() && line.front() == '|') {
      end_paragraph();
      if (line.find_first_not_of("|-: ") == std::string_view::npos) continue;  // the head's rule
      const bool head = table_rows == 0;
      out += head ? "<table>\n<tr>" : "<tr>";
      for (const std::string_view cell : table_cells(line)) {
        out += head ? "<th class=l>" : "<td class=l>";
        out += inline_html(cell);
        out += head ? "</th>" : "</td>";
      }
      out += "</tr>\n";
      ++table_rows;
      continue;
    }
    end_table();
    if (line.empty()) {
      end_paragraph();
    } else if (line.rfind("# ", 0) == 0) {
      end_paragraph();
      out += "<h2>" + inline_html(line.substr(2)) + "</h2>\n";
    } else {
      if (!paragraph.empty()) paragraph += ' ';
      paragraph += inline_html(line);
    }
  }
  end_table();
  end_paragraph();
  return out;
}

void write_index(const sweep_report& report, const std::vector<scaling_fit>& fits,
                 const std::vector<std::string>& plots, std::ostream& out,
                 const std::vector<std::string>& sections) {
  const std::size_t n = report.points.size();
  out << "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>Concurrency "
         "Lab: bench "
         "report</title>\n<style>body{font-family:sans-serif;max-width:1100px;margin:2em "
         "auto;padding:0 1em;"
         "color:#222}table{border-collapse:collapse;font-size:13px}td,th{border:1px solid "
         "#ccc;padding:2px "
         "6px;text-align:right}th{background:#eee}td.l,th.l{text-align:left}tr.dev{background:#"
         "fde8e8}"
         "img{max-width:100%;border:1px solid #ddd;margin:.5em 0}</style></head><body>\n";
  out << "<h1>Concurrency Lab: bench report</h1>\n";
  out << "<p><b>" << report.within() << " of " << n
      << " points within tolerance</b> (5 % for wait work, 10 % "
         "where tasks compute or ask the io service). Every run was verified: each task exactly "
         "once, every checksum "
         "equal to "
         "serial's. Predictions were made before the runs, from each executor's declared schedule "
         "and this machine's calibration. In brackets after a prediction: its range over the "
         "scheduler's choices (time slice, a queue per core, where a process pool's parent "
         "runs), where they change the makespan; a point within tolerance of that range is "
         "within (\"within the range\").</p>\n";
  out << "<h2>Where the model holds</h2>\n<table>\n<tr><th class=l>family</th><th "
         "class=l>workload</th><th class=l>workers</th><th>within</th><th>points</th></tr>\n";
  for (const verdict_group& g : group_verdicts(report)) {
    out << "<tr><td class=l>" << html_escape(g.family) << "</td><td class=l>"
        << html_escape(g.workload) << "</td><td class=l>" << html_escape(workers_label(g))
        << "</td><td>" << g.within << "</td><td>" << g.points << "</td></tr>\n";
  }
  out << "</table>\n";
  out << "<h2>Machine</h2>\n<table>\n";
  for (const auto& [k, v] : report.machine) {
    if (k == "caches" || k == "library_build_type" || k == "executable") continue;
    out << "<tr><th class=l>" << html_escape(k) << "</th><td class=l>" << html_escape(v)
        << "</td></tr>\n";
  }
  out << "</table>\n<p>Google Benchmark's library_build_type says how Debian built the library, "
         "not how "
         "the measured code was built (build_type above).</p>\n<h2>Plots</h2>\n";
  for (const std::string& p : plots)
    out << "<p><img src=\"" << html_escape(p) << "\" alt=\"" << html_escape(p) << "\"></p>\n";
  for (const std::string& s : sections) out << s;
  out << "<h2>Scaling fits</h2>\n<table><tr><th class=l>executor</th><th "
         "class=l>workload</th><th>Amdahl s</th>"
         "<th>USL σ</th><th>USL κ</th></tr>\n";
  for (const scaling_fit& f : fits) {
    out << "<tr><td class=l>" << html_escape(f.executor) << "</td><td class=l>" << f.workload
        << "</td><td>" << fmt(f.amdahl.serial_fraction, 3) << "</td><td>" << fmt(f.usl.sigma, 3)
        << "</td><td>" << fmt(f.usl.kappa, 4) << "</td></tr>\n";
  }
  out << "</table>\n<h2>Verdicts</h2>\n<table><tr><th class=l>family</th><th class=l>executor</th>"
         "<th class=l>workload</th><th class=l>dist</th><th>N</th><th>P</th><th>task "
         "µs</th><th>measured ms</th>"
         "<th>predicted ms (range)</th><th>ratio</th><th>CV</th><th class=l>verdict</th></tr>\n";
  for (const sweep_point& p : report.points) {
    out << "<tr" << (p.judged.within ? "" : " class=dev") << "><td class=l>"
        << html_escape(p.family) << "</td><td class=l>" << html_escape(p.executor)
        << "</td><td class=l>" << html_escape(p.workload) << "</td><td class=l>"
        << html_escape(p.dist) << "</td><td>" << p.tasks << "</td><td>" << p.workers << "</td><td>"
        << p.task_us << "</td><td>" << ms(p.makespan_ns) << "</td><td>" << predicted_ms(p)
        << "</td><td>" << fmt(p.judged.ratio, 3) << "</td><td>" << fmt(p.cv * 100, 1)
        << "%</td><td class=l>"
        << (p.judged.by_range ? "within the range"
            : p.judged.within ? "within"
                              : "deviating: " + html_escape(p.judged.cause))
        << "</td></tr>\n";
  }
  out << "</table>\n</body></html>\n";
}

}  // namespace clab
