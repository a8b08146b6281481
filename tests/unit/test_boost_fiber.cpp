// Lesson 06's reference row, boost-fiber: Boost.Fiber's work_stealing cannot be set up twice in one
// process (see lessons/06_fibers/boost_fiber.cpp), so the row runs P > 1 in a child process per
// run. These tests run it verified many times in a row with P changing, as a sweep does, check
// that a stop cancels the tasks still waiting, and run io tasks, whose requests park on a reactor
// thread. Boost.Fiber's context switches are in Debian's compiled library, which tells no
// sanitizer about them: under ASan or TSan these tests are
// compiled out (k_sanitized), as false reports there would say nothing about this code.
#include <catch2/catch.hpp>
#include <chrono>
#include <stop_token>
#include <string>
#include <thread>

#include "lessons/06_fibers/executors.hpp"
#include "support/io_runs.hpp"
#include "support/sanitized.hpp"
#include "support/task_sets.hpp"
#include "workloads/verify.hpp"

using namespace clab;

namespace {
[[maybe_unused]] const std::string k_service = IO_SERVICE;
}  // namespace

#if !(defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__))

TEST_CASE("boost-fiber runs verified 20 times in a row, P alternating 1, 2, 4, 3",
          "[06][boost-fiber]") {
  static_assert(!testing::k_sanitized);
  const executor& e = boost_fiber_executor();
  // Small waits and CPU parts: 40 tasks of about 200 µs, half of each a wait.
  const auto ts = testing::tasks_of(40, workload::mixed, distribution::uniform, 200, 7);
  const auto ref = reference_checksums(ts);
  const int ps[] = {1, 2, 4, 3};
  for (int round = 0; round < 20; ++round) {
    const int p = ps[round % 4];
    CAPTURE(round, p);
    const run_result r = measure(e, ts, {.workers = p});
    const verification v = verify(ts, r, ref);
    INFO((v.problems.empty() ? std::string() : v.problems.front()));
    REQUIRE(v.ok);
    CHECK(v.completed == ts.size());
    CHECK(r.failed.empty());
    CHECK(r.workers_used == p);
    for (const task_record& rec : r.records) {
      CHECK(rec.worker >= 0);
      CHECK(rec.worker < p);
    }
  }
}

TEST_CASE("boost-fiber: a thrown fault fails its task only, at P = 1 and P = 3",
          "[06][boost-fiber][fault]") {
  for (int p : {1, 3}) {
    CAPTURE(p);
    auto ts = testing::tasks_of(12, workload::mixed, distribution::uniform, 50, 5);
    ts[5].inject = fault::throw_exception;
    const run_result r = measure(boost_fiber_executor(), ts, {.workers = p});
    CHECK(verify(ts, r, reference_checksums(ts)).ok);
    REQUIRE(r.failed.size() == 1);
    CHECK(r.failed[0].id == 5);
    CHECK_THAT(r.failed[0].cause, Catch::Contains("task 5"));
  }
}

TEST_CASE("boost-fiber: a stop cancels the waits not yet over, at P = 1 and P = 2",
          "[06][boost-fiber][cancel]") {
  for (int p : {1, 2}) {
    CAPTURE(p);
    // Each task waits 10 s: no wait can be over when the stop comes 50 ms in, so every task must
    // end cancelled, and the run must end long before 10 s (not asserted as a time: it would hang
    // the test into its timeout instead).
    auto ts = testing::tasks_of(8, workload::wait, distribution::fixed, 10'000'000, 3);
    std::stop_source stop;
    std::jthread canceller([&stop] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      stop.request_stop();
    });
    const run_result r =
        measure(boost_fiber_executor(), ts, {.workers = p, .stop = stop.get_token()});
    CHECK(r.records.empty());
    CHECK(r.failed.size() == ts.size());
    CHECK(r.stopped);
    for (const task_failure& f : r.failed) CHECK(f.cause == k_cancelled);
  }
}

#endif

// ---- io tasks: each request parked on the reactor thread (boost_fiber.cpp's io_reactor) ----

#if !(defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__))

TEST_CASE("boost-fiber runs io tasks verified against serial's checksums, at P = 1, 2, 3",
          "[06][boost-fiber][io]") {
  CHECK(runs_io(boost_fiber_executor()));
  for (int p : {1, 2, 3}) {
    CAPTURE(p);
    testing::check_io_run_verified(boost_fiber_executor(), p, k_service);
  }
}

TEST_CASE("boost-fiber overlaps 200 io waits of 20 ms", "[06][boost-fiber][io]") {
  const double one = testing::check_io_waits_overlap(boost_fiber_executor(), 1, k_service);
  const double two = testing::check_io_waits_overlap(boost_fiber_executor(), 2, k_service);
  WARN("makespan / sum of waits: boost-fiber P = 1 " << one << ", P = 2 " << two);
}

TEST_CASE("boost-fiber: killing the service mid-run fails the requests in flight, one line each",
          "[06][boost-fiber][io][fault]") {
  testing::check_service_killed_mid_run(boost_fiber_executor(), 1, k_service);
  testing::check_service_killed_mid_run(boost_fiber_executor(), 2, k_service);
}

TEST_CASE("boost-fiber: a request unanswered at --task-timeout-ms is given up, a stop closes all",
          "[06][boost-fiber][io][timeout][stop]") {
  testing::check_request_timeout(boost_fiber_executor(), 1);
  testing::check_request_timeout(boost_fiber_executor(), 2);
  testing::check_stop_closes_parked_requests(boost_fiber_executor(), 1, k_service);
  testing::check_stop_closes_parked_requests(boost_fiber_executor(), 2, k_service);
}

#endif
