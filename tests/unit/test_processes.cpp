// Lessons 02 and 04, the process executors: verified results for every workload and distribution,
// a crash of each kind confined to its task, a hang killed at its timeout, a dead pool worker
// replaced, dynamic dispatch; and after every test, no child process, zombie or open descriptor
// left behind, which each test checks itself.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <string>
#include <vector>

#include "lessons/02_processes/processes.hpp"
#include "lessons/04_process_pool/process_pool.hpp"
#include "support/sanitized.hpp"
#include "support/task_sets.hpp"
#include "workloads/calibration.hpp"
#include "workloads/process_io.hpp"
#include "workloads/verify.hpp"

using namespace clab;

namespace {

using testing::machine;

std::vector<task> tasks_of(std::size_t n, workload w, distribution d, double us) {
  return testing::tasks_of(n, w, d, us, 5);
}

int open_fds() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

/// Notes the open descriptors when a test starts; when it ends, checks that their number is the
/// same and that this process has no child at all, running or zombie (waitpid says ECHILD).
class leaves_nothing_behind {
 public:
  leaves_nothing_behind() : fds_(open_fds()) {}
  leaves_nothing_behind(const leaves_nothing_behind&) = delete;
  leaves_nothing_behind& operator=(const leaves_nothing_behind&) = delete;
  ~leaves_nothing_behind() {
    CHECK(open_fds() == fds_);
    int status = 0;
    const pid_t child = waitpid(-1, &status, WNOHANG);
    const int error = errno;
    CHECK(child == -1);
    CHECK(error == ECHILD);
  }

 private:
  int fds_;
};

const std::vector<const executor*>& process_executors() {
  static const std::vector<const executor*> all = {
      &fork_per_task_executor(), &spawn_per_task_executor(), &process_pool_executor()};
  return all;
}

/// The cause a crash by `sig` is reported with. Under a sanitizer the child's own handler catches
/// a segfault first, prints its report and exits with an error status instead.
bool crash_cause_matches(const std::string& cause, const char* sig) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  if (cause.starts_with("exited with status")) return true;
#endif
  return cause == std::string("killed by ") + sig;
}

}  // namespace

TEST_CASE("process executors verify every workload and distribution, and leave nothing behind",
          "[02][04][processes]") {
  for (const executor* e : process_executors()) {
    for (workload w : {workload::cpu, workload::wait, workload::mixed}) {
      for (distribution d :
           {distribution::fixed, distribution::uniform, distribution::exp, distribution::bimodal}) {
        for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{6}}) {
          for (int p : {1, 3}) {
            CAPTURE(e->name, to_string(w), to_string(d), n, p);
            const leaves_nothing_behind check;
            const auto ts = tasks_of(n, w, d, 100);
            const run_result r = measure(*e, ts, {.workers = p});
            const verification v = verify(ts, r, reference_checksums(ts));
            INFO((v.problems.empty() ? std::string() : v.problems.front()));
            REQUIRE(v.ok);
            CHECK(v.completed == n);
            CHECK(r.workers_used == workers_used(e->plan, p, n));
          }
        }
      }
    }
  }
}

TEST_CASE("a crash of each kind fails only its own task, every other task completes",
          "[02][04][processes][fault]") {
  struct kind {
    fault how;
    const char* cause;  // what the report says (a signal), or how it starts (an exception)
  };
  const kind kinds[] = {{fault::throw_exception, "exception: injected exception in task 4"},
                        {fault::abort, "SIGABRT"},
                        {fault::segv, "SIGSEGV"}};
  for (const executor* e : process_executors()) {
    for (const kind& k : kinds) {
      CAPTURE(e->name, to_string(k.how));
      const leaves_nothing_behind check;
      auto ts = tasks_of(10, workload::mixed, distribution::uniform, 400);
      ts[4].inject = k.how;
      const run_result r = measure(*e, ts, {.workers = 3});
      const verification v = verify(ts, r, reference_checksums(ts));
      CHECK(v.ok);
      CHECK(v.completed == 9);
      REQUIRE(r.failed.size() == 1);
      CHECK(r.failed[0].id == 4);
      if (k.how == fault::throw_exception) {
        CHECK(r.failed[0].cause == k.cause);
      } else {
        CHECK(crash_cause_matches(r.failed[0].cause, k.cause));
      }
    }
  }
}

TEST_CASE("a hung task is killed at its timeout and reported, the others complete",
          "[02][04][processes][timeout]") {
  for (const executor* e : process_executors()) {
    CAPTURE(e->name);
    REQUIRE(e->can_enforce_timeout);
    const leaves_nothing_behind check;
    auto ts = tasks_of(8, workload::wait, distribution::fixed, 2000);
    ts[2].inject = fault::hang;
    ts[5].inject = fault::hang;
    // A task's timeout runs from its child's start. A sanitized child needs tens of ms to start
    // (its runtime maps its shadow first), and a loaded machine stretches that past 150 ms: there
    // every one of spawn's eight tasks once timed out. 1 s leaves the margin; the check is the
    // same.
    const int timeout_ms = testing::k_sanitized ? 1000 : 150;
    const std::string cause = "timeout after " + std::to_string(timeout_ms) + " ms";
    const run_result r =
        measure(*e, ts, {.workers = 2, .task_timeout = std::chrono::milliseconds(timeout_ms)});
    const verification v = verify(ts, r, reference_checksums(ts));
    CHECK(v.ok);
    CHECK(v.completed == 6);
    REQUIRE(r.failed.size() == 2);
    for (const task_failure& f : r.failed) {
      CHECK((f.id == 2 || f.id == 5));
      CHECK(f.cause == cause);
    }
    // physics: nothing kills a task before its deadline
    CHECK(r.makespan_ns >= std::int64_t{timeout_ms} * 1'000'000);
    CHECK(r.makespan_ns < 5'000'000'000 + std::int64_t{timeout_ms} * 2'000'000);
  }
}

TEST_CASE("a pool worker that dies is replaced and the run goes on", "[04][processes][respawn]") {
  const leaves_nothing_behind check;
  auto ts = tasks_of(16, workload::wait, distribution::fixed, 1000);
  for (std::uint32_t bad : {0U, 1U, 7U, 15U}) ts[bad].inject = fault::segv;
  ts[9].inject = fault::abort;
  const run_result r = measure(process_pool_executor(), ts, {.workers = 2});
  const verification v = verify(ts, r, reference_checksums(ts));
  INFO((v.problems.empty() ? std::string() : v.problems.front()));
  CHECK(v.ok);
  CHECK(v.completed == 11);
  CHECK(r.failed.size() == 5);
  CHECK(r.workers_used == 2);
  // Both first tasks killed their workers; the replacements ran everything after them.
  std::vector<int> per_worker(2, 0);
  for (const task_record& rec : r.records) ++per_worker.at(static_cast<std::size_t>(rec.worker));
  CHECK(per_worker[0] > 0);
  CHECK(per_worker[1] > 0);
}

TEST_CASE("the pool dispatches dynamically: an idle worker takes the next task",
          "[04][processes]") {
  const leaves_nothing_behind check;
  // One long wait first, then short ones: the worker holding the long task takes nothing else.
  // Long enough that the other worker's start and its 8 short tasks fit beside it (under TSan on
  // a loaded machine a sanitized worker's start once took most of 120 ms).
  const std::int64_t long_ns = testing::k_sanitized ? 400'000'000 : 120'000'000;
  std::vector<task> ts(9);
  for (std::uint32_t i = 0; i < ts.size(); ++i) {
    ts[i] = {.id = i, .wait_ns = i == 0 ? long_ns : 3'000'000, .seed = i + 1};
  }
  const run_result r = measure(process_pool_executor(), ts, {.workers = 2});
  REQUIRE(verify(ts, r, reference_checksums(ts)).ok);
  const auto long_one = std::find_if(r.records.begin(), r.records.end(),
                                     [](const task_record& rec) { return rec.id == 0; });
  REQUIRE(long_one != r.records.end());
  for (const task_record& rec : r.records) {
    if (rec.id != 0) CHECK(rec.worker != long_one->worker);
  }
  // The short tasks all ran beside the long one, none after it: the run ends with the long task.
  for (const task_record& rec : r.records) {
    if (rec.id != 0) CHECK(rec.end_ns < long_one->end_ns);
  }
}

TEST_CASE("records carry the parent's clock: a child's times lie within the run",
          "[02][04][processes]") {
  for (const executor* e : process_executors()) {
    CAPTURE(e->name);
    const leaves_nothing_behind check;
    const auto ts = tasks_of(6, workload::wait, distribution::fixed, 3000);
    const run_result r = measure(*e, ts, {.workers = 3});
    REQUIRE(r.records.size() == ts.size());
    for (const task_record& rec : r.records) {
      CHECK(rec.start_ns > 0);
      CHECK(rec.end_ns - rec.start_ns >= 3'000'000);
      CHECK(rec.end_ns <= r.makespan_ns);
    }
  }
}

TEST_CASE("child_set reports how a child ended when it sent nothing", "[02][processes]") {
  const leaves_nothing_behind check;
  child_set children(3);
  children.attach(0, fork_child([](int, int, void*) { _exit(3); }, nullptr, false));
  children.running(0, 10, std::nullopt);
  children.attach(1, fork_child([](int, int, void*) { std::raise(SIGKILL); }, nullptr, false));
  children.running(1, 11, std::nullopt);
  children.attach(2, fork_child([](int, int, void*) {}, nullptr, false));  // idle, exits cleanly
  std::vector<std::string> causes(3);
  int ended = 0;
  while (children.active()) {
    const child_set::event e = children.next();
    REQUIRE(e.what == child_set::event::kind::ended);
    ++ended;
    if (e.task) causes.at(*e.task - 10) = e.cause;
  }
  CHECK(ended == 3);
  CHECK(causes[0] == "exited with status 3 before it answered");
  CHECK(causes[1] == "killed by SIGKILL");
  CHECK(causes[2].empty());
}

TEST_CASE("a process pool round trip: a report per task, in the parent's clock",
          "[04][processes]") {
  const leaves_nothing_behind check;
  process_pool pool(1);
  pool.start(0);
  const auto origin = run_clock::now();
  for (std::uint32_t i = 0; i < 50; ++i) {
    const task t{.id = i, .seed = i + 1};
    REQUIRE(pool.send(0, t, origin, std::nullopt));
    const child_set::event e = pool.next();
    REQUIRE(e.what == child_set::event::kind::report);
    CHECK(e.report.completed == 1);
    CHECK(e.report.record.id == i);
    CHECK(e.report.record.worker == 0);
  }
}
