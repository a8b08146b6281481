// The model check and report on synthetic Google Benchmark output: non-finite values are read,
// a good point passes, a known deviation is flagged with its cause, an unverified run is an error,
// and the files the plots read are written. No timing is involved.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "benchmarks/report.hpp"

using namespace clab;

namespace {

/// A Google Benchmark aggregate entry as bench_sweep writes it.
nlohmann::json entry(const std::string& run, const std::string& agg, double real_ms,
                     double predicted_ns, double workers, double stretch = 1.0) {
  return {{"name", run + "_" + agg},
          {"run_name", run},
          {"run_type", "aggregate"},
          {"aggregate_name", agg},
          {"real_time", real_ms},
          {"time_unit", "ms"},
          {"tasks", 16},
          {"workers", workers},
          {"workers_used", workers},
          {"cores", 2},
          {"task_us", 5000},
          {"sum_ns", 80e6},
          {"sum_cpu_ns", 80e6},
          {"max_ns", 5e6},
          {"predicted_ns", predicted_ns},
          {"lower_bound_ns", 40e6},
          {"graham_upper_ns", 42.5e6},
          {"task_stretch", stretch}};
}

nlohmann::json sweep_json() {
  const std::string good =
      "scaling/static/cpu/fixed/n:16/p:2/us:5000/iterations:1/repeats:5/manual_time";
  const std::string over =
      "scaling/static/cpu/fixed/n:16/p:4/us:5000/iterations:1/repeats:5/manual_time";
  const std::string one =
      "scaling/static/cpu/fixed/n:16/p:1/us:5000/iterations:1/repeats:5/manual_time";
  nlohmann::json j;
  j["context"] = {{"host_name", "test"}, {"cores", "2"}};
  j["benchmarks"] = nlohmann::json::array();
  for (int i = 0; i < 5; ++i) {
    j["benchmarks"].push_back({{"run_name", good}, {"run_type", "iteration"}, {"real_time", 41.0}});
  }
  j["benchmarks"].push_back(entry(one, "median", 80.5, 80e6, 1));
  j["benchmarks"].push_back(entry(one, "cv", 0.01, 0, 1));
  j["benchmarks"].push_back(entry(good, "median", 41.0, 40e6, 2));
  j["benchmarks"].push_back(entry(good, "cv", 0.01, 0, 2));
  j["benchmarks"].push_back(entry(over, "median", 52.0, 40e6, 4));
  j["benchmarks"].push_back(entry(over, "cv", 0.01, 0, 4));
  return j;
}

/// A fresh folder under the system's temporary directory, removed with everything in it.
struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() / ("clab-report-test-" + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~temp_dir() { std::filesystem::remove_all(path); }
};

}  // namespace

TEST_CASE("Google Benchmark's NaN and inf are read as null", "[bench][report]") {
  const auto j =
      parse_gbench_json(R"({"a": NaN, "b": -nan, "c": inf, "d": "NaN stays text", "e": 1.5})");
  CHECK(j["a"].is_null());
  CHECK(j["b"].is_null());
  CHECK(j["c"].is_null());
  CHECK(j["d"] == "NaN stays text");
  CHECK(j["e"] == 1.5);
  CHECK_THROWS(parse_gbench_json("{\"a\": }"));
  // An escaped backslash ends a string like any other: what follows is a value again.
  const auto k = parse_gbench_json(R"({"path": "C:\\", "x": nan, "s": "inf in text"})");
  CHECK(k["path"] == "C:\\");
  CHECK(k["x"].is_null());
  CHECK(k["s"] == "inf in text");
}

TEST_CASE("the model check passes a good point and flags a known deviation", "[bench][report]") {
  const sweep_report r = read_sweep(sweep_json());
  REQUIRE(r.points.size() == 3);
  CHECK(r.errors.empty());
  const sweep_point& good = r.points[1];
  CHECK(good.executor == "static");
  CHECK(good.workload == "cpu");
  CHECK(good.workers == 2);
  CHECK(good.makespan_ns == Approx(41e6));
  CHECK(good.repetitions == 5);
  CHECK(good.judged.within);
  CHECK(good.judged.ratio == Approx(1.025));
  const sweep_point& over = r.points[2];
  CHECK_FALSE(over.judged.within);
  CHECK(over.judged.ratio == Approx(1.3));
  CHECK_THAT(over.judged.cause, Catch::StartsWith("oversubscription: 4 workers on 2 cores"));
  CHECK(r.within() == 2);
  // By kind: the two runs with P <= cores pass, the one with more workers than cores does not.
  const std::vector<verdict_group> g = group_verdicts(r);
  REQUIRE(g.size() == 2);
  CHECK((g[0].family == "scaling" && g[0].workload == "cpu" && !g[0].oversubscribed));
  CHECK((g[0].points == 2 && g[0].within == 2));
  CHECK((g[1].oversubscribed && g[1].points == 1 && g[1].within == 0));
  CHECK(workers_label(g[1]) == "P > cores");
}

TEST_CASE("a point within its prediction's range over the scheduler's choices is within",
          "[bench][report]") {
  nlohmann::json j = sweep_json();
  for (auto& b : j["benchmarks"]) {
    if (b.value("aggregate_name", std::string()) == "median" && b["workers"] == 4) {
      b["predicted_low_ns"] = 39e6;
      b["predicted_high_ns"] = 48e6;  // 52 ms ≤ 48 · 1.1
    }
  }
  const sweep_report r = read_sweep(j);
  REQUIRE(r.points.size() == 3);
  const sweep_point& over = r.points[2];
  CHECK(over.predicted_high_ns == Approx(48e6));
  CHECK(over.judged.within);
  CHECK(over.judged.by_range);
  CHECK(over.judged.ratio == Approx(1.3));
  CHECK(r.points[1].predicted_low_ns == r.points[1].predicted_ns);  // none recorded: no range
  std::ostringstream csv;
  write_csv(r, csv);
  CHECK_THAT(csv.str(), Catch::Contains("predicted_ns,predicted_low_ns,predicted_high_ns,ratio") &&
                            Catch::Contains(",40000000,39000000,48000000,1.3000,"));
  std::ostringstream md;
  write_verdicts(r, fit_scaling(r), md);
  CHECK_THAT(md.str(), Catch::Contains("| 52.000 | 40.000 (39.000–48.000) | 1.300 |") &&
                           Catch::Contains("within the range"));
}

TEST_CASE("an unverified run is an error, never a point", "[bench][report]") {
  nlohmann::json j = sweep_json();
  j["benchmarks"].push_back({{"run_name", "scaling/static/wait/fixed/n:16/p:2/us:5000"},
                             {"run_type", "iteration"},
                             {"error_occurred", true},
                             {"error_message", "unverified run: task 3 never ran"}});
  const sweep_report r = read_sweep(j);
  REQUIRE(r.errors.size() == 1);
  CHECK_THAT(r.errors[0], Catch::Contains("task 3 never ran"));
  CHECK_THROWS(read_sweep(nlohmann::json::object()));
}

TEST_CASE("the report writes the CSV, the verdicts, the plot data and the page",
          "[bench][report]") {
  const sweep_report r = read_sweep(sweep_json());
  const auto fits = fit_scaling(r);
  REQUIRE(fits.size() == 1);  // static, cpu: the only P series with a P = 1 point
  CHECK(fits[0].points.size() == 3);
  std::ostringstream csv;
  write_csv(r, csv);
  const std::string c = csv.str();
  CHECK(std::count(c.begin(), c.end(), '\n') == 4);  // header and three points
  CHECK_THAT(c, Catch::StartsWith("family,executor,workload,dist,tasks,workers"));
  CHECK_THAT(c, Catch::Contains("deviating") && Catch::Contains("within"));
  std::ostringstream md;
  write_verdicts(r, fits, md);
  CHECK_THAT(md.str(), Catch::Contains("2 of 3 points within tolerance (66.7%)"));
  CHECK_THAT(md.str(), Catch::Contains("| scaling | cpu | P > cores | 0 | 1 |"));
  temp_dir dir;
  write_plot_data(r, fits, nullptr, dir.path);
  for (const char* f :
       {"makespan_cpu.dat", "makespan_cpu_model.dat", "speedup_cpu.dat", "speedup_cpu_fit.dat",
        "efficiency.dat", "predicted_vs_measured.dat", "plotvars.gp"}) {
    CHECK(std::filesystem::exists(dir.path / f));
  }
  std::ifstream model(dir.path / "makespan_cpu_model.dat");
  std::string header, p1;
  std::getline(model, header);
  std::getline(model, p1);
  CHECK(p1 == "1 80.000 80.000");  // ⌈16/1⌉ · 5 ms, and Σt / min(1, 2)
  std::ostringstream html;
  write_index(r, fits, {"makespan_cpu.png"}, html);
  CHECK_THAT(html.str(),
             Catch::Contains("<img src=\"makespan_cpu.png\"") && Catch::Contains("2 of 3 points"));
}

TEST_CASE("the io series draws its closed forms and its title from its own task size",
          "[bench][report]") {
  nlohmann::json j = sweep_json();  // cpu: 16 tasks of 5 ms
  const std::string io =
      "scaling/loop/io/fixed/n:8/p:1/us:20000/iterations:1/repeats:3/manual_time";
  nlohmann::json median = entry(io, "median", 21.5, 21e6, 1);
  median["tasks"] = 8;
  median["task_us"] = 20000;
  median["lesson"] = 5;
  j["benchmarks"].push_back(median);
  const sweep_report r = read_sweep(j);
  REQUIRE(r.points.size() == 4);
  CHECK(r.points[3].workload == "io");
  CHECK(r.points[3].tolerance == Approx(0.10));
  temp_dir dir;
  write_plot_data(r, fit_scaling(r), nullptr, dir.path);
  const auto line_of = [&](const char* file, const char* prefix) {
    std::ifstream in(dir.path / file);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind(prefix, 0) == 0) return line;
    }
    return std::string("(none)");
  };
  // ⌈8/1⌉ · 20 ms, every part of it a wait: Σt / P as well.
  CHECK(line_of("makespan_io_model.dat", "1 ") == "1 160.000 160.000");
  CHECK(line_of("makespan_cpu_model.dat", "1 ") == "1 80.000 80.000");  // cpu keeps its own
  CHECK(line_of("plotvars.gp", "task_us_io") == "task_us_io = 20000");
  CHECK(line_of("plotvars.gp", "tasks_cpu") == "tasks_cpu = 16");
  CHECK_THAT(line_of("makespan_io.dat", "1 "), Catch::StartsWith("1 21.500 21.000"));
}

TEST_CASE("a script's markdown section becomes a heading, paragraphs and a table", "[report]") {
  const std::string html = markdown_to_html(
      "# Many connections\nLine one\nline two, `code` & <b>\n\n| a | b |\n|---|---|\n| 1 | `x` "
      "|\n");
  CHECK(html ==
        "<h2>Many connections</h2>\n<p>Line one line two, <code>code</code> &amp; "
        "&lt;b&gt;</p>\n<table>\n<tr><th class=l>a</th><th class=l>b</th></tr>\n"
        "<tr><td class=l>1</td><td class=l><code>x</code></td></tr>\n</table>\n");
  CHECK(markdown_to_html("").empty());
}
