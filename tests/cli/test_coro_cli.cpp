// Lesson 07 as a program: faults on coroutines (a throw fails its task only; one that computes
// without suspending is named by the lag monitor, while it hangs too), --task-timeout-ms refused
// with the coroutines' reason, cancellation and --errors first waking every sleeping coroutine at
// once, the io workload (every executor verified; a timeout accepted there, and --deps), and the
// list of executors. Every child is reaped and no descriptor is left open.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <csignal>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "support/lesson_run.hpp"
#include "support/subprocess.hpp"

using clab::test::json_of;
using clab::test::lines;
using clab::test::process_result;

namespace {

process_result lesson(std::vector<std::string> args,
                      double timeout_s = clab::test::k_lesson_timeout_s,
                      const clab::test::process_watch& watch = {}) {
  return clab::test::run_lesson(LESSON_07, std::move(args), timeout_s, watch);
}

constexpr const char* k_executors[] = {"coroutines", "coro-priority"};  // with the lag monitor
// Every executor of the lesson: our two on one thread, ours on P threads, and Asio's reference.
constexpr const char* k_all[] = {"coroutines", "coro-priority", "coroutines-mn", "asio-coro"};
constexpr const char* k_cancelled = "cancelled before it started";

}  // namespace

TEST_CASE("the list names the four executors, in one column", "[cli][07]") {
  const process_result r = lesson({"--list"});
  CHECK(r.exit_code == 0);
  CHECK(lines(r.out) == 4);
  for (const char* name : {"coroutines ", "coro-priority ", "coroutines-mn ", "asio-coro "})
    CHECK_THAT(r.out, Catch::Contains(name));
}

TEST_CASE("asio-coro, Asio's awaitables on one thread, verifies a mixed task set", "[cli][07]") {
  const process_result r = lesson({"--executor", "asio-coro", "--tasks", "20", "--workload",
                                   "mixed", "--task-us", "2000", "--json"});
  CHECK(r.exit_code == 0);
  const auto j = json_of(r);
  CHECK(j["verified"] == true);
  CHECK(j["completed"] == 20);
  CHECK(j["workers_used"] == 1);
}

TEST_CASE("coroutines-mn verifies a mixed task set on the two threads asked for", "[cli][07]") {
  const process_result r = lesson({"--executor", "coroutines-mn", "--workers", "2", "--tasks", "20",
                                   "--workload", "mixed", "--task-us", "2000", "--json"});
  CHECK(r.exit_code == 0);
  const auto j = json_of(r);
  CHECK(j["verified"] == true);
  CHECK(j["completed"] == 20);
  CHECK(j["workers_used"] == 2);
}

TEST_CASE("a throw fails its task only, on every coroutine executor", "[cli][07]") {
  for (const char* executor : k_all) {
    CAPTURE(executor);
    const process_result r = lesson({"--executor", executor, "--tasks", "8", "--workload", "mixed",
                                     "--task-us", "2000", "--fail-task", "3", "--json"});
    CHECK(r.exit_code == 1);
    const auto j = json_of(r);
    CHECK(j["verified"] == true);
    CHECK(j["completed"] == 7);
    REQUIRE(j["failed"].size() == 1);
    CHECK(j["failed"][0]["id"] == 3);
    CHECK(j["failed"][0]["cause"] != k_cancelled);
  }
}

TEST_CASE("the io workload: every coroutine executor awaits its requests' sockets and verifies",
          "[cli][07][io]") {
  for (const char* executor : k_all) {
    CAPTURE(executor);
    // The lesson starts a service for the run and stops it (no child left: run_lesson checks).
    const process_result r = lesson({"--executor", executor, "--workers", "2", "--tasks", "40",
                                     "--workload", "io", "--task-us", "2000", "--json"});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    const auto j = json_of(r);
    CHECK(j["verified"] == true);
    CHECK(j["completed"] == 40);
  }
}

TEST_CASE("the io workload with --task-timeout-ms is accepted (it bounds each request), and --deps",
          "[cli][07][io]") {
  for (const char* executor : {"coroutines", "coroutines-mn"}) {
    CAPTURE(executor);
    const process_result r = lesson({"--executor", executor, "--tasks", "20", "--workload", "io",
                                     "--task-us", "2000", "--task-timeout-ms", "5000", "--json"});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(json_of(r)["verified"] == true);
  }
  // A DAG of requests: each task awaits its predecessors, then its own socket.
  const process_result r = lesson({"--executor", "coroutines", "--deps", "dag", "--tasks", "30",
                                   "--workload", "io", "--task-us", "2000", "--json"});
  INFO(r.err);
  CHECK(r.exit_code == 0);
  const auto j = json_of(r);
  CHECK(j["verified"] == true);
  CHECK(j["completed"] == 30);
}

TEST_CASE("a task timeout is refused: a coroutine cannot be interrupted while it computes",
          "[cli][07]") {
  for (const char* executor : k_all) {
    CAPTURE(executor);
    const process_result r = lesson({"--executor", executor, "--task-timeout-ms", "100"});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("--task-timeout-ms") &&
                          Catch::Contains("cannot be interrupted while it computes"));
    CHECK(lines(r.err) == 1);
  }
}

TEST_CASE("cancelling after 100 ms wakes every coroutine asleep in a 2 s wait at once",
          "[cli][07][cancel]") {
  for (const char* executor : k_all) {
    CAPTURE(executor);
    // coroutines-mn on two threads: the stop reaches the sleepers of both loops.
    const process_result r =
        lesson({"--executor", executor, "--workers", "2", "--tasks", "100", "--workload", "wait",
                "--task-us", "2000000", "--cancel-after-ms", "100", "--json"});
    CHECK(r.exit_code == 1);
    const auto j = json_of(r);
    CHECK(j["verified"] == true);
    CHECK(j["completed"] == 0);
    REQUIRE(j["failed"].size() == 100);
    for (const auto& f : j["failed"]) CHECK(f["cause"] == k_cancelled);
    // Nobody sat out their wait: the run ends near the cancel, far inside one 2 s wait (100 ms of
    // it is the cancel's own delay; the rest is generous room for a loaded or sanitized machine).
    CHECK(j["makespan_ns"].get<double>() < 0.5 * 2e9);
  }
}

TEST_CASE(
    "stop at the first error: a failing task wakes the coroutines asleep in long waits at once",
    "[cli][07][first error]") {
  // The task set: 20 waits, bimodal (1 in 10 is 10x longer: about 53 ms and 526 ms). Which tasks
  // are long comes from a run cancelled between the two lengths: exactly the long ones fail.
  const std::vector<std::string> set = {"--tasks", "20",      "--workload", "wait",
                                        "--dist",  "bimodal", "--task-us",  "100000"};
  std::vector<std::string> args = set;
  args.insert(args.end(), {"--cancel-after-ms", "250", "--json"});
  const auto probe = json_of(lesson(args));
  std::set<int> longs;
  for (const auto& f : probe["failed"]) longs.insert(f["id"].get<int>());
  REQUIRE(!longs.empty());
  REQUIRE(longs.size() < 20);
  int short_one = 0;
  while (longs.count(short_one) != 0) ++short_one;

  for (const char* executor : k_all) {
    CAPTURE(executor);
    args = set;
    args.insert(args.end(), {"--executor", executor, "--workers", "2", "--errors", "first",
                             "--fail-task", std::to_string(short_one), "--json"});
    const process_result r = lesson(args);
    CHECK(r.exit_code == 1);
    const auto j = json_of(r);
    CHECK(j["verified"] == true);
    CHECK(j["stopped"] == true);
    CHECK(j["completed"].get<int>() + j["failed"].size() == 20);
    std::set<int> cancelled;
    int own = 0;
    for (const auto& f : j["failed"]) {
      if (f["cause"] == k_cancelled) {
        cancelled.insert(f["id"].get<int>());
      } else {
        CHECK(f["id"] == short_one);  // the only failure of its own
        ++own;
      }
    }
    CHECK(own == 1);
    for (const int id : longs) CHECK(cancelled.count(id) == 1);
    // The long sleepers were woken, not waited for: the run ends far inside one long wait.
    CHECK(j["makespan_ns"].get<double>() < 0.5 * j["max_task_ns"].get<double>());
  }
}

TEST_CASE("the lag monitor names a coroutine that computes 30 ms without suspending",
          "[cli][07][fault]") {
  for (const char* executor : k_executors) {
    CAPTURE(executor);
    const process_result r = lesson({"--executor", executor, "--tasks", "3", "--workload", "cpu",
                                     "--task-us", "30000", "--slow-callback-ms", "10", "--json"});
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.err, Catch::Contains("slow callback: task 0's coroutine ran"));
    CHECK_THAT(r.err, Catch::Contains("slow callback: task 2's coroutine ran"));
    CHECK_THAT(r.err, Catch::Contains("without suspending on thread 0"));
    CHECK(json_of(r)["verified"] == true);
  }
}

TEST_CASE(
    "a coroutine that never suspends stalls its thread: the lag monitor names it while it "
    "hangs",
    "[cli][07][fault]") {
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
  CHECK_THAT(r.err, Catch::Contains("thread 0 is stalled: task 2's coroutine has run"));
  CHECK_THAT(r.err, Catch::Contains("without suspending"));
}
