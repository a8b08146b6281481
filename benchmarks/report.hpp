// The model check and the report: reads the sweep's Google Benchmark JSON, judges every point
// against its prediction (before anything is plotted), fits the scaling laws, and writes
// sweep.csv, verdicts.md, the plot data and index.html. A run with unverified results is an error.
#pragma once

#include <filesystem>
#include <iosfwd>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "models/fit.hpp"
#include "models/verdict.hpp"

namespace clab {

struct sweep_point {
  std::string family;    ///< scaling | granularity
  std::string executor;  ///< as registered
  int lesson = 0;        ///< the executor's lesson: 00-04 blocking, 05 on asynchronous
  std::string workload;  ///< cpu | wait | mixed
  std::string dist;      ///< fixed | uniform | exp | bimodal
  double tasks = 0, workers = 0, workers_used = 0, cores = 0, task_us = 0;
  double makespan_ns = 0;  ///< median over the repetitions
  double cv = 0;           ///< stddev / mean over the repetitions
  int repetitions = 0;
  double predicted_ns = 0;
  /// The prediction's range over the scheduler's choices (prediction::low_ns, high_ns);
  /// equal to predicted_ns where the slice changes nothing, or in a sweep that did not record it.
  double predicted_low_ns = 0, predicted_high_ns = 0;
  double sum_ns = 0, sum_cpu_ns = 0, max_ns = 0, lower_bound_ns = 0;
  double graham_upper_ns = 0, task_stretch = 1;
  double tolerance = 0;
  verdict judged;
};

struct sweep_report {
  std::vector<sweep_point> points;
  std::map<std::string, std::string> machine;  ///< from the benchmark context
  std::vector<std::string> errors;             ///< unverified or failed runs, one line each
  [[nodiscard]] std::size_t within() const;
};

/// Parses a Google Benchmark JSON file. Google Benchmark writes NaN and inf for undefined
/// statistics (the CV of a counter whose mean is 0), which JSON does not allow: they become null.
[[nodiscard]] nlohmann::json parse_gbench_json(const std::string& text);

/// Parses Google Benchmark JSON written by bench_sweep (aggregates: median and cv) and judges each
/// point. Throws std::runtime_error on JSON that is not a sweep.
[[nodiscard]] sweep_report read_sweep(const nlohmann::json& gbench);

/// The points of one kind: a family, a workload, and whether the run had more workers than cores.
struct verdict_group {
  std::string family;
  std::string workload;
  bool oversubscribed = false;  ///< more workers than cores (workers_used > cores)
  std::size_t points = 0;
  std::size_t within = 0;
};

/// The verdicts counted by kind, in the sweep's order of first appearance: where the model holds
/// and where it does not, at a glance.
[[nodiscard]] std::vector<verdict_group> group_verdicts(const sweep_report& report);
/// "P ≤ cores" or "P > cores".
[[nodiscard]] std::string workers_label(const verdict_group& g);

struct scaling_fit {
  std::string executor;
  std::string workload;
  std::vector<speedup_point> points;  ///< T(P=1) / T(P), dist fixed
  amdahl_fit amdahl;
  usl_fit usl;
};

/// Speedup fits for every executor whose worker count follows P, per workload (dist fixed).
[[nodiscard]] std::vector<scaling_fit> fit_scaling(const sweep_report& report);

void write_csv(const sweep_report& report, std::ostream& out);
void write_verdicts(const sweep_report& report, const std::vector<scaling_fit>& fits,
                    std::ostream& out);
/// gnuplot data files (*.dat) and plotvars.gp into `dir`; units may be null (no units plot).
void write_plot_data(const sweep_report& report, const std::vector<scaling_fit>& fits,
                     const nlohmann::json* units, const std::filesystem::path& dir);
/// The report's index.html; `sections` are HTML written after the plots (see markdown_to_html).
void write_index(const sweep_report& report, const std::vector<scaling_fit>& fits,
                 const std::vector<std::string>& plots, std::ostream& out,
                 const std::vector<std::string>& sections = {});

/// The little markdown that scripts/connections and scripts/service_load write, as HTML: "# T"
/// is a section heading (h2), lines starting with '|' a table (the first row its head, the
/// "|---|" row skipped), other lines paragraphs (a blank line ends one); `code` spans; everything
/// else escaped.
[[nodiscard]] std::string markdown_to_html(std::string_view markdown);

}  // namespace clab
