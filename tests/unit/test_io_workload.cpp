// The io workload through every executor of every lesson (lessons/registry): each executor that
// runs io (a blocking one, whose wait sits in blocking_wait(), or a non-blocking one that watches
// the socket) verifies an io run against serial's checksums, which fold in the body that came
// over the socket; an executor that cannot is refused by measure(), not run wrongly. A body
// changed in transit fails verification; a service killed mid-run fails the requests in flight
// with one line each, and the run still returns. Each test starts its own io_service child and
// reaps it; none leaves a descriptor behind.
#include <sys/resource.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "lessons/registry.hpp"
#include "support/io_runs.hpp"
#include "support/sanitized.hpp"
#include "support/subprocess.hpp"
#include "support/task_sets.hpp"
#include "workloads/io_exchange.hpp"
#include "workloads/service_process.hpp"
#include "workloads/verify.hpp"

using namespace clab;
using std::chrono::milliseconds;

namespace {

const std::string k_service = IO_SERVICE;

bool mentions_lost_service(const std::string& cause) {
  return cause.find("connection reset") != std::string::npos ||
         cause.find("service stopped") != std::string::npos ||
         cause.find("cannot connect") != std::string::npos;
}

}  // namespace

TEST_CASE("every executor that runs io verifies an io run, the others are refused",
          "[io][executors]") {
  const int fds_before = clab::test::open_fd_count();
  {
    service_process svc(k_service);
    const auto ts = testing::io_tasks(12, 2000, testing::endpoint_of(svc));
    const auto ref = reference_checksums(ts);
    int ran = 0;
    for (const executor* e : all_executors()) {
      CAPTURE(e->name);
      // Lessons 00–04 are the blocking half: each of them must run io.
      if (e->lesson < "05") CHECK(runs_io(*e));
      if (!runs_io(*e)) {
        CHECK_THROWS_AS(measure(*e, ts, {.workers = 2}), std::invalid_argument);
        continue;
      }
      const run_result r = measure(*e, ts, {.workers = 2});
      const verification v = verify(ts, r, ref);
      INFO((v.problems.empty() ? std::string() : v.problems.front()));
      CHECK(v.ok);
      CHECK(v.completed == ts.size());
      ++ran;
    }
    CHECK(ran >= 11);
  }
  CHECK(clab::test::open_fd_count() == fds_before);
}

TEST_CASE("a body changed in transit fails verification for that task only", "[io]") {
  service_process svc(k_service, {"--corrupt-task", "3"});
  const auto ts = testing::io_tasks(8, 1000, testing::endpoint_of(svc));
  const auto ref = reference_checksums(ts);
  for (const char* name : {"serial", "static", "fork"}) {
    CAPTURE(name);
    const executor* e = find_executor(name);
    REQUIRE(e != nullptr);
    const run_result r = measure(*e, ts, {.workers = 2});
    REQUIRE(r.records.size() == ts.size());  // the transport saw nothing wrong
    const verification v = verify(ts, r, ref);
    CHECK_FALSE(v.ok);
    REQUIRE(v.problems.size() == 1);
    CHECK(v.problems.front().find("task 3") != std::string::npos);
  }
}

TEST_CASE("the service killed mid-run: each request in flight fails with one line, the run returns",
          "[io]") {
  const int fds_before = clab::test::open_fd_count();
  {
    service_process svc(k_service);
    // Long waits, so every request is in flight when the service dies 300 ms in.
    const auto ts = testing::io_tasks(6, 3'000'000, testing::endpoint_of(svc));
    const executor* e = find_executor("per-task");
    REQUIRE(e != nullptr);
    std::jthread killer([&svc] {
      std::this_thread::sleep_for(milliseconds(300));
      (void)svc.stop(milliseconds(0));  // SIGTERM, then SIGKILL at once
    });
    const auto t0 = std::chrono::steady_clock::now();
    const run_result r = measure(*e, ts, {.workers = 2});
    const auto took = std::chrono::steady_clock::now() - t0;
    killer.join();
    CHECK(r.records.empty());
    REQUIRE(r.failed.size() == ts.size());
    for (const task_failure& f : r.failed) {
      CAPTURE(f.id, f.cause);
      CHECK(mentions_lost_service(f.cause));
      CHECK(f.cause.find('\n') == std::string::npos);
    }
    // Far sooner than the 3 s waits: the requests failed when the service went, not at a timeout.
    CHECK(took < std::chrono::milliseconds(2500));
  }
  CHECK(clab::test::open_fd_count() == fds_before);
}

TEST_CASE("room for the connections: the soft descriptor limit is raised, never past the hard one",
          "[io]") {
  rlimit before{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &before) == 0);
  // Within the soft limit already: nothing changes.
  if (before.rlim_cur != RLIM_INFINITY && before.rlim_cur > k_fd_reserve) {
    CHECK(ensure_descriptors(before.rlim_cur - k_fd_reserve).empty());
    rlimit same{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &same) == 0);
    CHECK(same.rlim_cur == before.rlim_cur);
  }
  if (before.rlim_max == RLIM_INFINITY) return;  // no hard limit to run into here
  // One past the hard limit: refused, with both numbers, and the limit is left alone.
  const std::size_t too_many = before.rlim_max - k_fd_reserve + 1;
  const std::string why = ensure_descriptors(too_many);
  CHECK(why.find(std::to_string(before.rlim_max + 1)) != std::string::npos);
  CHECK(why.find("hard limit is " + std::to_string(before.rlim_max)) != std::string::npos);
  rlimit after{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &after) == 0);
  CHECK(after.rlim_cur == before.rlim_cur);
  // Exactly the hard limit: allowed, raised to it (and put back for the other tests).
  CHECK(ensure_descriptors(too_many - 1).empty());
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &after) == 0);
  CHECK(after.rlim_cur == before.rlim_max);
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &before) == 0);
}

TEST_CASE("ten thousand requests at once from one loop: every one verified, the waits overlapped",
          "[io][10k]") {
  // 10 000 connections open together (2 000 under a sanitizer, whose every socket call is slow):
  // the descriptor limit is raised for them, here and in the service started after it.
  const std::size_t n = testing::k_sanitized ? 2000 : 10'000;
  REQUIRE(ensure_descriptors(n).empty());
  const executor* e = find_executor("loop");
  REQUIRE(e != nullptr);
  REQUIRE(runs_io(*e));
  service_process svc(k_service);
  const auto ts = testing::io_tasks(n, 100'000, testing::endpoint_of(svc));
  const run_result r = measure(*e, ts, {.workers = 1});
  const verification v = verify(ts, r, reference_checksums(ts));
  INFO((v.problems.empty() ? std::string() : v.problems.front()));
  INFO((r.failed.empty() ? std::string() : r.failed.front().cause));
  CHECK(v.ok);
  CHECK(v.completed == n);
  // Σ t_i is n × 100 ms (1000 s); one loop overlaps them, paying the CPU of each request.
  CHECK(r.makespan_ns < static_cast<std::int64_t>(n) * 100'000'000 / 50);
}
