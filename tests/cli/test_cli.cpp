// The lesson CLI contract (DESIGN.md §3), tested on the real programs as child processes: bad input
// exits 2 with one line naming the flag; --json carries every field; faults exit 1 (or kill the
// process, for threads); scripts/lesson passes the status through. Every child is reaped.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "support/lesson_run.hpp"
#include "support/subprocess.hpp"

using clab::test::json_of;
using clab::test::lines;
using clab::test::open_fd_count;
using clab::test::process_result;
using clab::test::run_process;

namespace {

process_result lesson(const char* path, std::vector<std::string> args, double timeout_s = 60) {
  return clab::test::run_lesson(path, std::move(args), timeout_s);
}

const std::vector<std::string> k_fast = {"--tasks", "6", "--workload", "wait", "--task-us", "200"};

std::vector<std::string> fast(std::vector<std::string> more) {
  std::vector<std::string> a = k_fast;
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

}  // namespace

TEST_CASE("bad input exits 2 with one line naming the flag and the allowed range",
          "[cli][00][01]") {
  struct bad_case {
    std::vector<std::string> args;
    std::vector<std::string> mentions;
  };
  const std::vector<bad_case> cases = {
      {{"--tasks", "0"}, {"--tasks", "1", "1000000"}},
      {{"--tasks", "-3"}, {"--tasks"}},
      {{"--tasks", "2000000"}, {"--tasks", "1000000"}},
      {{"--tasks", "many"}, {"--tasks"}},
      {{"--workers", "0"}, {"--workers", "1024"}},
      {{"--workers", "5000"}, {"--workers", "1024"}},
      {{"--workload", "gpu"}, {"--workload", "cpu"}},
      {{"--service", "127.0.0.1:80"}, {"--service", "--workload io"}},
      {{"--workload", "io", "--service", "127.0.0.1"}, {"--service", "HOST:PORT"}},
      {{"--workload", "io", "--service", "127.0.0.1:0"}, {"--service", "1"}},
      {{"--workload", "io", "--service", "127.0.0.1:70000"}, {"--service", "65535"}},
      {{"--workload", "io", "--service", "no-such-host.invalid:80"}, {"--service", "resolve"}},
      {{"--dist", "normal"}, {"--dist", "bimodal"}},
      {{"--task-us", "-1"}, {"--task-us"}},
      {{"--task-us", "1e9"}, {"--task-us"}},
      {{"--repeat", "0"}, {"--repeat", "100"}},
      {{"--seed", "-1"}, {"--seed", "18446744073709551615"}},
      {{"--seed", "18446744073709551616"}, {"--seed"}},
      {{"--seed", "7x"}, {"--seed"}},
      {{"--task-us", "nan"}, {"--task-us"}},
      {{"--tasks", "1000000", "--repeat", "20", "--task-us", "0"},
       {"--tasks x --repeat", "10000000"}},
      {{"--executor", "no-such"}, {"--executor"}},
      {{"--errors", "some"}, {"--errors", "first"}},
      {{"--cancel-after-ms", "5", "--repeat", "2"}, {"--cancel-after-ms", "--repeat 1"}},
      {{"--cancel-after-ms", "-1"}, {"--cancel-after-ms"}},
      {{"--tasks", "16", "--fail-task", "16"}, {"--fail-task", "0-15"}},
      {{"--fail-task", "1", "--fail-how", "explode"}, {"--fail-how", "hang"}},
      {{"--fail-how", "abort"}, {"--fail-how", "--fail-task"}},
      {{"--task-timeout-ms", "100"}, {"--task-timeout-ms", "cannot"}},
      {{"--task-timeout-ms", "0"}, {"--task-timeout-ms"}},
      {{"--tasks", "1000000", "--task-us", "10000000"}, {"--tasks x --task-us", "3600 s"}},
      {{"--no-such-flag"}, {"--no-such-flag"}},
  };
  for (const char* program : {LESSON_00, LESSON_01}) {
    for (const bad_case& c : cases) {
      CAPTURE(program, c.args);
      const process_result r = lesson(program, c.args);
      CHECK(r.exit_code == 2);
      CHECK(r.out.empty());
      CHECK(lines(r.err) == 1);
      for (const std::string& m : c.mentions) CHECK_THAT(r.err, Catch::Contains(m));
    }
  }
  SECTION("lesson 01's executor names and its per-task thread cap") {
    process_result r = lesson(LESSON_01, {"--executor", "pool"});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("--executor") && Catch::Contains("per-task"));
    r = lesson(LESSON_01, {"--tasks", "5000", "--executor", "per-task"});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("--tasks") && Catch::Contains("1-4096"));
    CHECK(lesson(LESSON_01,
                 {"--tasks", "5000", "--executor", "static", "--task-us", "0", "--workload", "cpu"})
              .exit_code == 0);
  }
}

TEST_CASE("the json output is one line with every field of the contract", "[cli][00][01]") {
  for (const char* program : {LESSON_00, LESSON_01}) {
    CAPTURE(program);
    const process_result r =
        lesson(program, fast({"--workers", "3", "--dist", "exp", "--seed", "9", "--json"}));
    REQUIRE(r.exit_code == 0);
    REQUIRE(lines(r.out) == 1);
    const auto j = nlohmann::json::parse(r.out);
    for (const char* key :
         {"executor", "tasks", "workers", "workload", "dist", "seed", "sum_task_ns", "max_task_ns",
          "makespan_ns", "predicted_ns", "ratio", "verdict", "verified", "completed", "failed",
          "cause", "calibration", "graham", "model"}) {
      CHECK(j.contains(key));
    }
    CHECK(j["tasks"] == 6);
    CHECK(j["workers"] == 3);
    CHECK(j["workload"] == "wait");
    CHECK(j["dist"] == "exp");
    CHECK(j["seed"] == 9);
    CHECK(j["verified"] == true);
    CHECK(j["completed"] == 6);
    CHECK(j["failed"].empty());
    CHECK(j["makespan_ns"].get<std::int64_t>() >= j["max_task_ns"].get<std::int64_t>());
    CHECK(j["sum_task_ns"].get<std::int64_t>() >= j["max_task_ns"].get<std::int64_t>());
    CHECK(j["ratio"].get<double>() > 0);
    CHECK((j["verdict"] == "within" || j["verdict"] == "deviating"));
  }
}

TEST_CASE("predict mode prints the prediction and runs nothing", "[cli][01]") {
  // 64 waits of 10 s each would take over ten minutes serially; --predict must return at once.
  const process_result r = lesson(LESSON_01,
                                  {"--tasks", "64", "--workload", "wait", "--task-us", "10000000",
                                   "--executor", "static", "--workers", "4", "--predict", "--json"},
                                  30);
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["makespan_ns"].is_null());
  CHECK(j["verdict"] == "predicted");
  CHECK(j["predicted_ns"].get<double>() == Approx(16 * 10e9).epsilon(0.01));  // ⌈64/4⌉ · 10 s
  const process_result human = lesson(LESSON_00, fast({"--predict"}));
  CHECK(human.exit_code == 0);
  CHECK_THAT(human.out, Catch::Contains("prediction"));
}

TEST_CASE("list, help and the human table", "[cli][00][01]") {
  process_result r = lesson(LESSON_01, {"--list"});
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("per-task") && Catch::Contains("static"));
  r = lesson(LESSON_01, {"--help"});
  CHECK(r.exit_code == 0);
  for (const char* flag :
       {"--tasks", "--workers", "--workload", "--task-us", "--dist", "--seed", "--executor",
        "--predict", "--json", "--fail-task", "--fail-how", "--task-timeout-ms"}) {
    CHECK_THAT(r.out, Catch::Contains(flag));
  }
  r = lesson(LESSON_00, fast({"--gantt"}));
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("makespan") && Catch::Contains("verified   yes") &&
                        Catch::Contains("model timeline"));
}

TEST_CASE("a thrown fault exits 1 and reports the task, the others complete",
          "[cli][fault][00][01]") {
  for (const char* program : {LESSON_00, LESSON_01}) {
    const process_result r = lesson(program, fast({"--fail-task", "3", "--json"}));
    CHECK(r.exit_code == 1);
    const auto j = nlohmann::json::parse(r.out);
    CHECK(j["verified"] == true);
    CHECK(j["completed"] == 5);
    REQUIRE(j["failed"].size() == 1);
    CHECK(j["failed"][0]["id"] == 3);
    CHECK_THAT(j["failed"][0]["cause"].get<std::string>(), Catch::StartsWith("exception"));
  }
}

TEST_CASE("abort or segfault in one thread kills the whole process", "[cli][fault][01]") {
  // Threads share one address space: there is nothing to isolate a crash in. Lesson 02 differs.
  // (A sanitizer build catches the signal itself, reports it and exits with an error instead.)
  auto killed_by = [](const process_result& r, int sig,
                      std::initializer_list<const char*> reports) {
    if (r.signal == sig) return true;
    if (!CLAB_SANITIZED || r.exit_code <= 0) return false;
    return std::any_of(reports.begin(), reports.end(),
                       [&](const char* w) { return r.err.find(w) != std::string::npos; });
  };
  process_result r = lesson(LESSON_01, fast({"--fail-task", "2", "--fail-how", "abort"}));
  CHECK(killed_by(r, SIGABRT, {"ABRT"}));
  CHECK_THAT(r.out, Catch::Contains("lesson 01"));  // the header was flushed before the crash
  r = lesson(LESSON_01, fast({"--fail-task", "2", "--fail-how", "segv", "--executor", "static"}));
  CHECK(killed_by(r, SIGSEGV, {"SEGV", "store to null pointer"}));  // UBSan stops it first
}

TEST_CASE("a hung task hangs a thread executor: it cannot be stopped", "[cli][fault][01]") {
  // The note comes once the program has calibrated and predicted (seconds, on a loaded machine
  // under a sanitizer); two tasks of 100 µs would then be done within milliseconds. Still running
  // 1.5 s after the note, it hangs: the test kills it (and run_process reaps it).
  std::optional<std::chrono::steady_clock::time_point> noted;
  bool killed = false;
  const process_result r =
      run_process({LESSON_01, "--tasks", "2", "--workload", "wait", "--task-us", "100",
                   "--fail-task", "0", "--fail-how", "hang"},
                  120.0, [&](pid_t pid, const process_result& so_far) {
                    if (killed || so_far.err.find("cannot stop it") == std::string::npos) return;
                    if (!noted) noted = std::chrono::steady_clock::now();
                    if (std::chrono::steady_clock::now() - *noted < std::chrono::milliseconds(1500))
                      return;
                    kill(pid, SIGKILL);
                    killed = true;
                  });
  CHECK_FALSE(r.timed_out);
  CHECK(killed);
  CHECK(r.signal == SIGKILL);  // it had not ended by itself
}

TEST_CASE("scripts/lesson passes the program's exit status through", "[cli][scripts]") {
  const std::string script = std::string(SOURCE_DIR) + "/scripts/lesson";
  process_result r =
      run_process({script, "1", "--tasks", "4", "--workload", "wait", "--task-us", "100"}, 300);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("lesson 01"));
  r = run_process({script, "0", "--tasks", "0"}, 300);
  CHECK(r.exit_code == 2);
  r = run_process(
      {script, "1", "--tasks", "4", "--workload", "wait", "--task-us", "100", "--fail-task", "1"},
      300);
  CHECK(r.exit_code == 1);
  r = run_process({script, "9"}, 60);  // the last lesson: the one built last
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Catch::Contains("not built yet"));
}

TEST_CASE("cancel and stop at the first error through the CLI: reported, verified, exit 1",
          "[cli][cancel][03]") {
  process_result r = lesson(LESSON_03, {"--workers", "2", "--workload", "wait", "--tasks", "40",
                                        "--task-us", "2000", "--cancel-after-ms", "10", "--json"});
  CHECK(r.exit_code == 1);
  auto j = nlohmann::json::parse(r.out);
  CHECK(j["verified"] == true);
  CHECK(j["stopped"] == true);
  CHECK(j["verdict"] == "not-judged");
  CHECK(j["cancelled"].get<int>() >= 20);
  CHECK(j["completed"].get<int>() + j["cancelled"].get<int>() == 40);
  r = lesson(LESSON_03,
             {"--executor", "naive", "--workers", "2", "--workload", "wait", "--tasks", "12",
              "--task-us", "2000", "--fail-task", "2", "--errors", "first", "--json"});
  CHECK(r.exit_code == 1);
  j = nlohmann::json::parse(r.out);
  CHECK(j["verified"] == true);
  CHECK(j["cancelled"].get<int>() >= 1);
  CHECK(j["failed"].size() == j["cancelled"].get<std::size_t>() + 1);  // task 2 and the cancelled
}
