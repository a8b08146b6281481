// Lesson 06 as a program: faults on fibers (a throw fails its task only; a fiber that computes
// without parking holds its thread, and the lag monitor names it while it hangs), --task-timeout-ms
// refused with the fibers' reason (accepted with --workload io), cancellation, the io workload on
// every executor, and the list of executors. Every child is reaped and no descriptor is left open.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
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
  return clab::test::run_lesson(LESSON_06, std::move(args), timeout_s, watch);
}

}  // namespace

TEST_CASE("a fiber that never parks stalls its thread: the lag monitor names it while it hangs",
          "[cli][06][fault]") {
  bool killed = false;
  const process_result r =
      lesson({"--tasks", "8", "--workload", "wait", "--task-us", "2000", "--json", "--fail-task",
              "2", "--fail-how", "hang", "--slow-callback-ms", "50"},
             clab::test::k_lesson_timeout_s, [&](pid_t pid, const process_result& so_far) {
               if (killed || so_far.err.find("is stalled") == std::string::npos) return;
               kill(pid, SIGKILL);  // seen while it hangs: the watchdog spoke first
               killed = true;
             });
  CHECK(killed);
  CHECK(r.signal == SIGKILL);
  CHECK_THAT(r.err, Catch::Contains("thread 0 is stalled: task 2's fiber has run"));
  CHECK_THAT(r.err, Catch::Contains("without parking"));
}

TEST_CASE("a throw fails its task only, on every fiber executor", "[cli][06]") {
  for (const char* executor : {"fibers", "fibers-mn", "boost-fiber"}) {
    CAPTURE(executor);
    // Boost.Fiber's switches are in Debian's compiled library, which tells no sanitizer about
    // them: under ASan its throw reads as a stack-buffer-overflow (see lessons/registry.cpp).
    if (CLAB_SANITIZED && std::string(executor) == "boost-fiber") continue;
    const process_result r =
        lesson({"--executor", executor, "--workers", "2", "--tasks", "8", "--workload", "mixed",
                "--task-us", "2000", "--fail-task", "3", "--json"});
    CHECK(r.exit_code == 1);
    const auto j = json_of(r);
    CHECK(j["verified"] == true);
    CHECK(j["completed"] == 7);
    REQUIRE(j["failed"].size() == 1);
    CHECK(j["failed"][0]["id"] == 3);
  }
}

TEST_CASE("a task timeout is refused: a fiber cannot be interrupted while it computes",
          "[cli][06]") {
  for (const char* executor : {"fibers", "fibers-mn", "boost-fiber"}) {
    CAPTURE(executor);
    const process_result r = lesson({"--executor", executor, "--task-timeout-ms", "100"});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("--task-timeout-ms") &&
                          Catch::Contains("cannot be interrupted while it computes"));
    CHECK(lines(r.err) == 1);
  }
  const process_result r = lesson({"--executor", "boost-fiber", "--slow-callback-ms", "10"});
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Catch::Contains("--slow-callback-ms") && Catch::Contains("boost-fiber"));
}

TEST_CASE(
    "cancelling after M ms: the tasks not yet past their wait are cancelled, verified, exit 1",
    "[cli][06]") {
  for (const char* executor : {"fibers", "fibers-mn", "boost-fiber"}) {
    CAPTURE(executor);
    if (CLAB_SANITIZED && std::string(executor) == "boost-fiber") continue;  // as above
    // 16 waits spread on [0, 400 ms], cancelled at 100 ms: the early ones complete, the rest not.
    const process_result r =
        lesson({"--executor", executor, "--workers", "2", "--tasks", "16", "--workload", "wait",
                "--task-us", "200000", "--dist", "uniform", "--cancel-after-ms", "100", "--json"});
    CHECK(r.exit_code == 1);
    const auto j = json_of(r);
    CHECK(j["verified"] == true);
    CHECK(j["completed"].get<int>() + j["failed"].size() == 16);
    CHECK(j["failed"].size() > 0);
    for (const auto& f : j["failed"]) CHECK(f["cause"] == "cancelled before it started");
  }
}

TEST_CASE("the io workload on every fiber executor: requests parked on their sockets, verified",
          "[cli][06][io]") {
  for (const char* executor : {"fibers", "fibers-mn", "boost-fiber"}) {
    CAPTURE(executor);
    if (CLAB_SANITIZED && std::string(executor) == "boost-fiber") continue;  // as above
    // The lesson starts its own service child for the run, and reaps it (run_lesson checks).
    const process_result r = lesson({"--executor", executor, "--workers", "2", "--tasks", "40",
                                     "--workload", "io", "--task-us", "2000", "--json"});
    CHECK(r.exit_code == 0);
    const auto j = json_of(r);
    CHECK(j["verified"] == true);
    CHECK(j["completed"] == 40);
    CHECK(j["failed"].empty());
    // With io, --task-timeout-ms bounds each request instead of being refused.
    const process_result t = lesson({"--executor", executor, "--tasks", "4", "--workload", "io",
                                     "--task-us", "1000", "--task-timeout-ms", "5000", "--json"});
    CHECK(t.exit_code == 0);
    CHECK(json_of(t)["completed"] == 4);
  }
}

TEST_CASE("the list names the three executors, in one column", "[cli][06]") {
  const process_result r = lesson({"--list"});
  CHECK(r.exit_code == 0);
  CHECK(lines(r.out) == 3);
  for (const char* name : {"fibers ", "fibers-mn ", "boost-fiber "}) {
    CHECK_THAT(r.out, Catch::Contains(name));
  }
  CHECK(r.out.find("reference:") == r.out.find("boost-fiber") + 12);  // the summaries line up
}
