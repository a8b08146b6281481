// Lesson 05 as a program: faults on an event loop (a throw fails its task only; an abort takes the
// process down, as for threads; a hung callback stalls the whole loop, and the lag monitor names
// it while it hangs), --task-timeout-ms refused with the loop's reason, cancellation, and the
// slow-callback report. Every child is reaped and no descriptor is left open.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/lesson_run.hpp"
#include "support/subprocess.hpp"

using clab::test::json_of;
using clab::test::lines;
using clab::test::open_fd_count;
using clab::test::process_result;

namespace {

process_result lesson(std::vector<std::string> args,
                      double timeout_s = clab::test::k_lesson_timeout_s,
                      const clab::test::process_watch& watch = {}) {
  return clab::test::run_lesson(LESSON_05, std::move(args), timeout_s, watch);
}

std::vector<std::string> waits(std::vector<std::string> more) {
  std::vector<std::string> a = {"--tasks",   "8",    "--workload", "wait",
                                "--task-us", "2000", "--json"};
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

}  // namespace

TEST_CASE("a hung callback stalls the loop: the lag monitor names it while it hangs",
          "[cli][05][fault]") {
  bool killed = false;
  const process_result r = lesson(
      waits({"--fail-task", "2", "--fail-how", "hang", "--slow-callback-ms", "50"}),
      clab::test::k_lesson_timeout_s, [&](pid_t pid, const process_result& so_far) {
        if (killed || so_far.err.find("is stalled") == std::string::npos) return;
        kill(pid, SIGKILL);  // seen while it hangs: the watchdog spoke before anything returned
        killed = true;
      });
  CHECK(killed);
  CHECK(r.signal == SIGKILL);
  CHECK_THAT(r.err, Catch::Contains("loop 0 is stalled: task 2's callback has run"));
  CHECK_THAT(r.err, Catch::Contains("has not returned"));
}

TEST_CASE("a slow callback is reported with its task and duration after it returns", "[cli][05]") {
  const process_result r = lesson({"--tasks", "3", "--workload", "cpu", "--task-us", "30000",
                                   "--slow-callback-ms", "10", "--json"});
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.err, Catch::Contains("slow callback: task 0's callback ran"));
  CHECK_THAT(r.err, Catch::Contains("slow callback: task 2's callback ran"));
  CHECK(json_of(r)["verified"] == true);
}

TEST_CASE("a throw fails its task only, --errors first cancels the timers not yet fired",
          "[cli][05][fault]") {
  for (const char* executor : {"loop", "blocking", "loops", "asio-loop", "libuv"}) {
    CAPTURE(executor);
    process_result r = lesson(waits({"--executor", executor, "--fail-task", "3"}));
    CHECK(r.exit_code == 1);
    auto j = json_of(r);
    CHECK(j["verified"] == true);
    CHECK(j["completed"] == 7);
    REQUIRE(j["failed"].size() == 1);
    CHECK(j["failed"][0]["id"] == 3);
    // Equal waits armed in task order fire in that order: after task 3 throws, tasks 4 to 7 are
    // cancelled on one loop; on two (`loops`, tasks dealt round robin) at least 5 and 7 are.
    r = lesson(waits({"--executor", executor, "--fail-task", "3", "--errors", "first"}));
    CHECK(r.exit_code == 1);
    j = json_of(r);
    CHECK(j["verified"] == true);
    std::size_t cancelled = 0;
    for (const auto& f : j["failed"]) cancelled += f["cause"] == "cancelled before it started";
    CHECK(j["failed"].size() == cancelled + 1);
    if (std::string(executor) == "loops") {
      CHECK(cancelled >= 2);
    } else {
      CHECK(cancelled == 4);
    }
  }
}

TEST_CASE("abort in a callback takes the whole process down, as for threads", "[cli][05][fault]") {
  const process_result r = lesson(waits({"--fail-task", "2", "--fail-how", "abort"}));
  if (CLAB_SANITIZED) {
    CHECK((r.signal == SIGABRT || r.exit_code > 0));
  } else {
    CHECK(r.signal == SIGABRT);
  }
  CHECK(r.out.empty());  // --json: the line never came
}

TEST_CASE("a task timeout is refused: a loop cannot interrupt a running callback", "[cli][05]") {
  for (const char* executor : {"loop", "blocking", "loops", "asio-loop", "libuv"}) {
    CAPTURE(executor);
    const process_result r = lesson({"--executor", executor, "--task-timeout-ms", "100"});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("--task-timeout-ms") &&
                          Catch::Contains("a loop cannot interrupt a running callback"));
    CHECK(lines(r.err) == 1);
  }
  const process_result r = lesson({"--executor", "libuv", "--slow-callback-ms", "10"});
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Catch::Contains("--slow-callback-ms") && Catch::Contains("libuv"));
}

TEST_CASE("cancelling after M ms cancels every timer not yet fired: reported, verified, exit 1",
          "[cli][05]") {
  for (const char* executor : {"loop", "loops", "asio-loop", "libuv"}) {
    CAPTURE(executor);
    // 16 waits spread on [0, 400 ms], cancelled at 100 ms: the early ones complete, the rest not.
    const process_result r =
        lesson({"--executor", executor, "--tasks", "16", "--workload", "wait", "--task-us",
                "200000", "--dist", "uniform", "--cancel-after-ms", "100", "--json"});
    CHECK(r.exit_code == 1);
    const auto j = json_of(r);
    CHECK(j["verified"] == true);
    CHECK(j["completed"].get<int>() + j["failed"].size() == 16);
    CHECK(j["failed"].size() > 0);
    for (const auto& f : j["failed"]) CHECK(f["cause"] == "cancelled before it started");
  }
}

TEST_CASE(
    "the io workload on the loop: a service started for the run, every request verified, exit 0",
    "[cli][05][io]") {
  // The lesson starts an io_service child for the run and stops it before it exits (run_lesson
  // checks that no child and no descriptor is left). --task-timeout-ms is accepted here: with
  // --workload io it bounds each request, and 20 s never cuts a 2 ms one.
  for (const std::vector<std::string>& more :
       {std::vector<std::string>{}, std::vector<std::string>{"--task-timeout-ms", "20000"}}) {
    std::vector<std::string> args{"--executor", "loop",      "--workload", "io",    "--tasks",
                                  "40",         "--task-us", "2000",       "--json"};
    args.insert(args.end(), more.begin(), more.end());
    const process_result r = lesson(args);
    INFO(r.err);
    CHECK(r.exit_code == 0);
    const auto j = json_of(r);
    CHECK(j["verified"] == true);
    CHECK(j["completed"] == 40);
  }
}
