// Lessons 02 and 04 as programs: each injected crash is reported in the JSON while every other task
// completes (where lesson 01 dies whole); a hang is stopped by --task-timeout-ms; SIGTERM or SIGINT
// to the parent kills and reaps every child and exits 143 or 130; the shared-memory demo. This
// test process is a child subreaper (PR_SET_CHILD_SUBREAPER), so any grandchild that a lesson
// program leaves behind would become our child: "no child of ours" then means "none left at all".
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "support/lesson_run.hpp"
#include "support/subprocess.hpp"

using clab::test::json_of;
using clab::test::lines;
using clab::test::open_fd_count;
using clab::test::process_result;
using clab::test::run_process;

namespace {

/// Every process whose parent is `pid`, from /proc (this kernel has no /proc/PID/task/*/children).
std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> found;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    const auto close = line.rfind(')');  // "pid (comm) state ppid ..."; comm may hold spaces
    if (close == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (std::sscanf(line.c_str() + close + 1, " %c %d", &state, &ppid) == 2 && ppid == pid) {
      found.push_back(static_cast<pid_t>(std::stoi(name)));
    }
  }
  return found;
}

/// True if this process has no child left, running or zombie. Any found are killed and reaped, so
/// that one failing test does not fail the next.
bool no_child_left() {
  int status = 0;
  const pid_t r = waitpid(-1, &status, WNOHANG);
  if (r == -1 && errno == ECHILD) return true;
  for (pid_t c : children_of(getpid())) kill(c, SIGKILL);
  while (waitpid(-1, &status, 0) > 0) {
  }
  return false;
}

struct subreaper {
  subreaper() { prctl(PR_SET_CHILD_SUBREAPER, 1); }
} const k_subreaper;

process_result lesson(const char* path, std::vector<std::string> args,
                      double timeout_s = clab::test::k_lesson_timeout_s) {
  return clab::test::run_lesson(path, std::move(args), timeout_s, {}, no_child_left);
}

const std::vector<std::string> k_fast = {"--tasks", "8",         "--workload", "wait",  "--task-us",
                                         "2000",    "--workers", "2",          "--json"};

std::vector<std::string> fast(std::vector<std::string> more) {
  std::vector<std::string> a = k_fast;
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

bool sanitized() { return CLAB_SANITIZED != 0; }

/// Starts `argv` (a run with a task that hangs), waits until it has said so on stderr (the run
/// has begun: the prediction and its probe are done) and has `children` children of its own,
/// sends `sig`, and collects its stdout and status; gives up (SIGKILL) after `timeout_s`.
process_result signal_after_start(const std::vector<std::string>& argv, std::size_t children,
                                  int sig, double timeout_s, bool* saw_children) {
  bool signalled = false;
  *saw_children = false;
  return run_process(argv, timeout_s, [&](pid_t pid, const process_result& so_far) {
    if (signalled || so_far.err.find("will hang forever") == std::string::npos) return;
    if (children_of(pid).size() < children) return;
    *saw_children = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    kill(pid, sig);
    signalled = true;
  });
}

}  // namespace

TEST_CASE("an injected crash is reported with its signal, every other task completes",
          "[cli][02][04][fault]") {
  for (const char* program : {LESSON_02, LESSON_04}) {
    for (const char* executor : {"fork", "spawn", "prefork"}) {
      const bool is_pool = std::string(program) == LESSON_04;
      if (is_pool != (std::string(executor) == "prefork")) continue;
      // Under a sanitizer one executor per program: spawn's child is a program of its own, but
      // its parent reads the end of a child as fork's does, and each run there costs seconds.
      if (sanitized() && std::string(executor) == "spawn") continue;
      for (const char* how : {"throw", "abort", "segv"}) {
        // Under a sanitizer abort and segv take the same path (the sanitizer's handler ends the
        // child): segv only there, the release stage runs both.
        if (sanitized() && std::string(how) == "abort") continue;
        CAPTURE(program, executor, how);
        const process_result r =
            lesson(program, fast({"--executor", executor, "--fail-task", "3", "--fail-how", how}));
        CHECK(r.exit_code == 1);
        const auto j = json_of(r);
        CHECK(j["verified"] == true);
        CHECK(j["completed"] == 7);
        REQUIRE(j["failed"].size() == 1);
        CHECK(j["failed"][0]["id"] == 3);
        const std::string cause = j["failed"][0]["cause"];
        if (std::string(how) == "throw") {
          CHECK_THAT(cause, Catch::StartsWith("exception"));
        } else if (!sanitized()) {
          CHECK(cause == (std::string(how) == "abort" ? "killed by SIGABRT" : "killed by SIGSEGV"));
        } else {
          CHECK((cause.starts_with("killed by SIG") || cause.starts_with("exited with status")));
        }
      }
    }
  }
}

TEST_CASE("the same segfault that lesson 02 reports takes lesson 01 down whole",
          "[cli][01][02][fault]") {
  const process_result threads =
      lesson(LESSON_01, fast({"--executor", "static", "--fail-task", "3", "--fail-how", "segv"}));
  CHECK(threads.out.empty());  // --json: the line never came, the process died first
  if (!sanitized()) CHECK(threads.signal == SIGSEGV);
  const process_result processes =
      lesson(LESSON_02, fast({"--fail-task", "3", "--fail-how", "segv"}));
  CHECK(processes.signal == 0);
  CHECK(processes.exit_code == 1);
  CHECK(json_of(processes)["completed"] == 7);
}

TEST_CASE("a hang is stopped by --task-timeout-ms and reported as a timeout",
          "[cli][02][04][timeout]") {
  for (const char* program : {LESSON_02, LESSON_04}) {
    CAPTURE(program);
    const process_result r = lesson(
        program, fast({"--fail-task", "5", "--fail-how", "hang", "--task-timeout-ms", "200"}));
    CHECK(r.exit_code == 1);
    const auto j = json_of(r);
    CHECK(j["verified"] == true);
    CHECK(j["completed"] == 7);
    REQUIRE(j["failed"].size() == 1);
    CHECK(j["failed"][0]["cause"] == "timeout after 200 ms");
  }
}

TEST_CASE("SIGTERM or SIGINT to the parent kills and reaps every child, exit 143 or 130",
          "[cli][02][04][signal]") {
  struct signal_case {
    const char* program;
    const char* executor;
    int sig;
    std::size_t children;
  };
  // Task 1 hangs, with no timeout: only the signal can end these runs. The other two wait 10 s,
  // so that 3 children mean all 3 tasks have started (with short tasks, the one child seen could
  // be task 0's, and a signal before task 1 started would report it cancelled, not interrupted).
  // Under a sanitizer two of the four (each program, each signal once): the same handler and
  // the same reaping, at seconds a run there.
  const std::vector<signal_case> cases =
      sanitized() ? std::vector<signal_case>{{LESSON_04, "prefork", SIGTERM, 3},
                                             {LESSON_02, "spawn", SIGINT, 3}}
                  : std::vector<signal_case>{{LESSON_04, "prefork", SIGTERM, 3},
                                             {LESSON_04, "prefork", SIGINT, 3},
                                             {LESSON_02, "fork", SIGTERM, 3},
                                             {LESSON_02, "spawn", SIGINT, 3}};
  for (const signal_case& c : cases) {
    CAPTURE(c.program, c.executor, c.sig);
    const int fds_before = open_fd_count();
    bool saw_children = false;
    const process_result r = signal_after_start(
        {c.program, "--executor", c.executor, "--tasks", "3", "--workers", "3", "--workload",
         "wait", "--task-us", "10000000", "--fail-task", "1", "--fail-how", "hang", "--json"},
        c.children, c.sig, sanitized() ? 120 : 30, &saw_children);
    CHECK(saw_children);
    REQUIRE_FALSE(r.timed_out);
    CHECK(r.exit_code == 128 + c.sig);
    CHECK(open_fd_count() == fds_before);
    CHECK(no_child_left());  // no worker was orphaned: as our subreaped child it would show here
    CHECK_THAT(r.err, Catch::Contains("interrupted by SIG") && Catch::Contains("reaped"));
    const auto j = json_of(r);
    bool reported = false;
    for (const auto& f : j["failed"]) {
      if (f["id"] == 1) reported = f["cause"].get<std::string>().starts_with("interrupted by SIG");
    }
    CHECK(reported);
  }
}

TEST_CASE("the shared-memory demo: threads share, a forked child copies, MAP_SHARED shares",
          "[cli][02][demo]") {
  const process_result r = lesson(LESSON_02, {"--demo", "shared-memory"});
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("threads     2 threads add to g_counter: main reads 200000"));
  CHECK_THAT(r.out,
             Catch::Contains("the child reads 300000, the parent still reads 200000  (not shared"));
  CHECK_THAT(r.out, Catch::Contains("before fork: the parent reads 200000"));
  CHECK_THAT(r.out, Catch::Contains("by name and add: the parent reads 200000"));
  CHECK_THAT(r.out, Catch::Contains("so: threads share everything"));
  const process_result bad = lesson(LESSON_02, {"--demo", "telepathy"});
  CHECK(bad.exit_code == 2);
  CHECK_THAT(bad.err, Catch::Contains("--demo") && Catch::Contains("shared-memory"));
}

TEST_CASE("process lessons: timeouts accepted, bad input exits 2, list and json", "[cli][02][04]") {
  process_result r = lesson(LESSON_02, {"--list"});
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("fork") && Catch::Contains("spawn"));
  r = lesson(LESSON_04, {"--list"});
  CHECK_THAT(r.out, Catch::Contains("prefork"));
  r = lesson(LESSON_02, {"--tasks", "5000"});
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Catch::Contains("--tasks") && Catch::Contains("1-4096"));
  r = lesson(LESSON_04, {"--task-timeout-ms", "0"});
  CHECK(r.exit_code == 2);
  for (const char* program : {LESSON_02, LESSON_04}) {
    r = lesson(program, fast({"--task-timeout-ms", "5000", "--dist", "exp"}));
    CHECK(r.exit_code == 0);
    const auto j = json_of(r);
    CHECK(j["verified"] == true);
    CHECK(j["completed"] == 8);
    CHECK(j["failed"].empty());
    CHECK(j["makespan_ns"].get<std::int64_t>() >= j["max_task_ns"].get<std::int64_t>());
  }
}
