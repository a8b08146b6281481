// --deps as a program: lesson 07 runs a seeded DAG, verifies its order from the records and judges
// the makespan against the simulation, with Brent's bounds beside it; lesson 00 runs a chain (id
// order is a topological order); lesson 05's executors refuse the flag with one line, and a bad
// value is refused with the allowed ones. Every child is reaped and no descriptor is left open.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/lesson_run.hpp"
#include "support/subprocess.hpp"

using clab::test::json_of;
using clab::test::lines;
using clab::test::process_result;
using clab::test::run_lesson;

TEST_CASE("lesson 07 runs a seeded DAG of waits in order, verified and judged", "[cli][07][deps]") {
  for (const char* executor : {"coroutines", "coro-priority"}) {
    CAPTURE(executor);
    const process_result r =
        run_lesson(LESSON_07, {"--executor", executor, "--deps", "dag", "--workload", "wait",
                               "--tasks", "60", "--task-us", "1000", "--json"});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    const auto j = json_of(r);
    CHECK(j["deps"] == "dag");
    CHECK(j["verified"] == true);
    CHECK(j["completed"] == 60);
    CHECK(j["problems"].empty());
    CHECK((j["verdict"] == "within" || j["verdict"] == "deviating"));
    REQUIRE(j["brent"].is_object());
    // The span of waits bounds the run from below; the simulation is no shorter than it either.
    CHECK(j["brent"]["span_ns"].get<long long>() <= j["predicted_ns"].get<long long>());
    CHECK(j["brent"]["lower_ns"].get<long long>() <= j["makespan_ns"].get<long long>());
    CHECK(j["graham"].is_null());
  }
}

TEST_CASE("lesson 07's table shows the graph and Brent's bounds", "[cli][07][deps]") {
  const process_result r = run_lesson(
      LESSON_07, {"--deps", "tree", "--workload", "mixed", "--tasks", "31", "--task-us", "500"});
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("deps       tree: 30 edges") &&
                        Catch::Contains("bounds     Brent on P = 1") &&
                        Catch::Contains("verified   yes: 31 of 31"));
}

TEST_CASE("a failure propagates down lesson 07's tree, and the model knows it", "[cli][07][deps]") {
  const process_result r =
      run_lesson(LESSON_07, {"--deps", "tree", "--workload", "mixed", "--tasks", "15", "--task-us",
                             "2000", "--fail-task", "1", "--json"});
  CHECK(r.exit_code == 1);
  const auto j = json_of(r);
  CHECK(j["verified"] == true);
  CHECK(j["completed"] == 8);  // task 1's subtree (1, 3, 4, 7-10) fails, the rest completes
  REQUIRE(j["failed"].size() == 7);
  for (const auto& f : j["failed"]) {
    if (f["id"] == 8) CHECK(f["cause"] == "predecessor 3 failed");
  }
  // Only the tasks that run are simulated, so the prediction is below Σ t_i of all 15.
  CHECK(j["predicted_ns"].get<long long>() < 15 * 2'000'000LL);
}

TEST_CASE("lesson 00 runs a chain: T = Σ t_i, every edge held", "[cli][00][deps]") {
  const process_result r =
      run_lesson(LESSON_00, {"--deps", "chain", "--tasks", "8", "--task-us", "1000", "--json"});
  INFO(r.err);
  CHECK(r.exit_code == 0);
  const auto j = json_of(r);
  CHECK(j["deps"] == "chain");
  CHECK(j["verified"] == true);
  CHECK(j["completed"] == 8);
  // Brent on one blocking worker, a chain: S = W = Σ t_i, so both bounds are that sum.
  CHECK(j["brent"]["span_ns"] == j["sum_task_ns"]);
  CHECK(j["brent"]["lower_ns"] == j["sum_task_ns"]);
}

TEST_CASE("an executor that does not run dependent tasks refuses the flag with one line",
          "[cli][05][deps]") {
  const process_result r = run_lesson(LESSON_05, {"--deps", "chain"});
  CHECK(r.exit_code == 2);
  CHECK(lines(r.err) == 1);
  CHECK_THAT(r.err, Catch::Contains("--deps") && Catch::Contains("does not run dependent tasks") &&
                        Catch::Contains("serial, coroutines, coro-priority"));
  CHECK(r.out.empty());
}

TEST_CASE("a bad --deps value is refused with the allowed ones", "[cli][07][deps]") {
  const process_result r = run_lesson(LESSON_07, {"--deps", "bogus"});
  CHECK(r.exit_code == 2);
  CHECK(lines(r.err) == 1);
  CHECK_THAT(r.err,
             Catch::Contains("--deps") && Catch::Contains("chain") && Catch::Contains("dag"));
}
