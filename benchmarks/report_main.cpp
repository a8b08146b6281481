// bench_report: the model check, run before any plot. Reads the sweep (and the per-unit costs),
// judges every point, prints the summary line, and writes the report files. Exit 1 when any run
// was unverified: such a sweep is not plotted.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>

#include "benchmarks/report.hpp"

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

int main(int argc, char** argv) {
  std::string sweep_path;
  std::string units_path;
  std::string out_dir = ".";
  std::vector<std::string> plots;
  CLI::App app{"bench_report: judge the sweep against its predictions and write the report"};
  app.add_option("--sweep", sweep_path, "Google Benchmark JSON from bench_sweep")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--units", units_path, "Google Benchmark JSON from bench_units")
      ->check(CLI::ExistingFile);
  app.add_option("--out", out_dir, "folder for sweep.csv, verdicts.md, plot data, index.html")
      ->check(CLI::ExistingDirectory);
  app.add_option("--plots", plots, "image files, relative to --out, for index.html");
  std::vector<std::string> section_files;
  app.add_option("--sections", section_files,
                 "markdown files (scripts/connections, scripts/service_load) for index.html")
      ->check(CLI::ExistingFile);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "bench_report: %s\n", e.what());
    return 2;
  }
  try {
    const clab::sweep_report report =
        clab::read_sweep(clab::parse_gbench_json(read_file(sweep_path)));
    if (!report.errors.empty()) {
      for (const std::string& e : report.errors)
        std::fprintf(stderr, "bench_report: %s\n", e.c_str());
      std::fprintf(stderr, "bench_report: %zu runs failed verification; nothing is plotted\n",
                   report.errors.size());
      return 1;
    }
    if (report.points.empty()) {
      std::fprintf(stderr, "bench_report: the sweep holds no points\n");
      return 1;
    }
    nlohmann::json units;
    if (!units_path.empty()) {
      units = clab::parse_gbench_json(read_file(units_path));
    }
    const auto fits = clab::fit_scaling(report);
    const std::filesystem::path dir(out_dir);
    std::ofstream csv(dir / "sweep.csv");
    clab::write_csv(report, csv);
    std::ofstream md(dir / "verdicts.md");
    clab::write_verdicts(report, fits, md);
    clab::write_plot_data(report, fits, units_path.empty() ? nullptr : &units, dir);
    std::ofstream html(dir / "index.html");
    std::vector<std::string> sections;
    for (const std::string& f : section_files)
      sections.push_back(clab::markdown_to_html(read_file(f)));
    clab::write_index(report, fits, plots, html, sections);
    const std::size_t n = report.points.size();
    // One decimal: 174 of 194 is 89.7 %, not "90 %".
    std::printf("model check: %zu of %zu points within tolerance (%.1f%%)\n", report.within(), n,
                100.0 * static_cast<double>(report.within()) / static_cast<double>(n));
    for (const clab::verdict_group& g : clab::group_verdicts(report)) {
      std::printf("  %-11s %-5s %s: %zu of %zu\n", g.family.c_str(), g.workload.c_str(),
                  clab::workers_label(g).c_str(), g.within, g.points);
    }
    for (const clab::sweep_point& p : report.points) {
      if (!p.judged.within) {
        std::printf("  deviating: %s %s %s %s N=%g P=%g t=%g µs ratio %.3f: %s\n", p.family.c_str(),
                    p.executor.c_str(), p.workload.c_str(), p.dist.c_str(), p.tasks, p.workers,
                    p.task_us, p.judged.ratio, p.judged.cause.c_str());
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_report: %s\n", e.what());
    return 1;
  }
  return 0;
}
