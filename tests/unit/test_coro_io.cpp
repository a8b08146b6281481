// Lesson 07's io tasks: every coroutine executor waits on its request's socket (co_await on the
// socket's readiness, or Asio's async_wait), so its run verifies against serial's checksums; one
// thread overlaps 200 requests; a service killed mid-run fails the requests in flight with one
// line; a listener that never replies makes --task-timeout-ms fail each task with
// io_timeout_cause's words; a stop wakes and closes every request in flight. Every test leaves no
// descriptor and no child behind, and checks it. No test asserts an absolute time: ratios only.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <future>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "lessons/00_serial/serial.hpp"
#include "lessons/07_coroutines/executors.hpp"
#include "support/io_runs.hpp"
#include "support/subprocess.hpp"
#include "workloads/io_exchange.hpp"
#include "workloads/run.hpp"
#include "workloads/service_process.hpp"
#include "workloads/task.hpp"
#include "workloads/verify.hpp"

using namespace clab;
using clab::test::open_fd_count;
using std::chrono::milliseconds;
using testing::endpoint_of;
using testing::io_tasks;
using testing::no_child_left;
using testing::silent_listener;

namespace {

const std::string k_service = IO_SERVICE;

/// Every executor of the lesson, each with the workers it is given here (coroutines-mn on two
/// threads, so that the requests are watched by two loops).
struct case_of {
  const executor* exec;
  int workers;
};
std::vector<case_of> all_executors() {
  return {{&coroutines_executor(), 1},
          {&coro_priority_executor(), 1},
          {&coroutines_mn_executor(), 2},
          {&asio_coro_executor(), 1}};
}

/// measure() on a thread of its own, waited for at most `limit`: a run that does not return is
/// stopped (options.stop) and the test fails, instead of hanging.
run_result measure_bounded(const executor& exec, const std::vector<task>& tasks,
                           run_options options, milliseconds limit = milliseconds(60'000)) {
  std::stop_source deadline_stop;
  options.stop = deadline_stop.get_token();
  auto done = std::async(std::launch::async, [&] { return measure(exec, tasks, options); });
  const bool in_time = done.wait_for(limit) == std::future_status::ready;
  if (!in_time) deadline_stop.request_stop();
  run_result r = done.get();
  REQUIRE(in_time);
  return r;
}

}  // namespace

TEST_CASE("every coroutine executor runs io tasks, verified against serial's checksums",
          "[07][io]") {
  service_process svc(k_service);
  const auto tasks = io_tasks(40, 2000, endpoint_of(svc));
  const auto reference = reference_checksums(tasks);
  for (const case_of c : all_executors()) {
    CAPTURE(c.exec->name);
    CHECK(c.exec->supports_io);
    CHECK(c.exec->timeout_cancels_waits);
    const int fds = open_fd_count();
    const run_result r = measure_bounded(*c.exec, tasks, {.workers = c.workers});
    const verification v = verify(tasks, r, reference);
    INFO((v.problems.empty() ? std::string() : v.problems.front()));
    CHECK(v.ok);
    CHECK(v.completed == 40);
    CHECK(r.failed.empty());
    CHECK(open_fd_count() == fds);  // every socket closed, nothing left in a loop
  }
}

TEST_CASE("one thread overlaps 200 requests of 20 ms in far less than their sum", "[07][io]") {
  service_process svc(k_service);
  const auto tasks = io_tasks(200, 20'000, endpoint_of(svc));
  const double sum_ns = 200 * 20e6;
  for (const executor* e : {&coroutines_executor(), &asio_coro_executor()}) {
    CAPTURE(e->name);
    const run_result r = measure_bounded(*e, tasks, {.workers = 1});
    CHECK(verify(tasks, r, reference_checksums(tasks)).ok);
    CHECK(r.workers_used == 1);
    // Serial would take Σ = 4 s. Overlapped, the run is one wait plus 200 round trips' CPU (a few
    // hundred µs each on a loaded 2-core VM): a tenth of Σ is generous room.
    CHECK(static_cast<double>(r.makespan_ns) < 0.1 * sum_ns);
  }
}

TEST_CASE("a service killed mid-run fails the requests in flight with one line, the run returns",
          "[07][io]") {
  for (const error_policy policy : {error_policy::collect_all, error_policy::stop_at_first}) {
    for (const case_of c : all_executors()) {
      CAPTURE(c.exec->name, policy == error_policy::stop_at_first);
      const int fds = open_fd_count();
      {
        service_process svc(k_service);
        const auto tasks = io_tasks(20, 2'000'000, endpoint_of(svc));  // 2 s: in flight at the kill
        auto killer = std::async(std::launch::async, [&svc] {
          std::this_thread::sleep_for(milliseconds(200));
          ::kill(svc.pid(), SIGKILL);
        });
        const run_result r =
            measure_bounded(*c.exec, tasks, {.workers = c.workers, .on_error = policy});
        killer.get();
        (void)svc.stop();  // reaps it
        CHECK(r.records.empty());
        REQUIRE(r.failed.size() == 20);
        int io_failures = 0;
        for (const task_failure& f : r.failed) {
          CAPTURE(f.cause);
          CHECK(f.cause.find('\n') == std::string::npos);
          if (f.cause == k_cancelled) continue;  // --errors first: the first failure woke it
          ++io_failures;
          CHECK((f.cause.find("service stopped") != std::string::npos ||
                 f.cause.find("connection reset") != std::string::npos));
        }
        if (policy == error_policy::collect_all) {
          CHECK(io_failures == 20);
        } else {
          CHECK(io_failures >= 1);
        }
        // The kill is 200 ms in; nobody sat out a 2 s wait.
        CHECK(static_cast<double>(r.makespan_ns) < 0.5 * 2e9);
      }
      CHECK(no_child_left());
      CHECK(open_fd_count() == fds);
    }
  }
}

TEST_CASE(
    "a listener that never replies: --task-timeout-ms fails each task with the timeout's "
    "words",
    "[07][io][timeout]") {
  const silent_listener silent;
  const auto tasks = io_tasks(10, 50'000, resolve_endpoint("127.0.0.1", silent.port()));
  const milliseconds limit(150);
  for (const case_of c : all_executors()) {
    CAPTURE(c.exec->name);
    const int fds = open_fd_count();
    const run_result r =
        measure_bounded(*c.exec, tasks, {.workers = c.workers, .task_timeout = limit});
    CHECK(r.records.empty());
    REQUIRE(r.failed.size() == 10);
    for (const task_failure& f : r.failed) CHECK(f.cause == io_timeout_cause(f.id, limit));
    // Each request ended at its deadline, all together: far from 10 limits one after another.
    CHECK(static_cast<double>(r.makespan_ns) < 0.5 * 10 * 150e6);
    CHECK(open_fd_count() == fds);
  }
}

TEST_CASE("a stop wakes and closes every request in flight at once", "[07][io][cancel]") {
  service_process svc(k_service);
  const auto tasks = io_tasks(50, 2'000'000, endpoint_of(svc));
  for (const case_of c : all_executors()) {
    CAPTURE(c.exec->name);
    const int fds = open_fd_count();
    std::stop_source stop;
    std::stop_token token = stop.get_token();
    auto canceller = std::async(std::launch::async, [&stop] {
      std::this_thread::sleep_for(milliseconds(200));
      stop.request_stop();
    });
    // measure() itself here (the stop is the test's): a run that did not wake would hang until
    // ctest's timeout, which the bounded form cannot improve on.
    run_options o{.workers = c.workers};
    o.stop = token;
    const run_result r = measure(*c.exec, tasks, o);
    canceller.get();
    CHECK(r.records.empty());
    REQUIRE(r.failed.size() == 50);
    for (const task_failure& f : r.failed) CHECK(f.cause == std::string(k_cancelled));
    CHECK(static_cast<double>(r.makespan_ns) < 0.5 * 2e9);
    CHECK(open_fd_count() == fds);  // every socket closed: the service saw each client leave
  }
}

TEST_CASE("ns per request, coroutines against serial on one io task set (prints)",
          "[.][07][io][bench]") {
  // Hidden ([.]): run by hand for the lesson's README. Serial makes the requests one after
  // another on blocking sockets; `coroutines` starts them all and awaits each socket. Both on
  // the same tasks, alternating, three times each.
  service_process svc(k_service);
  for (const double wait_us : {0.0, 2000.0}) {
    const auto tasks = io_tasks(400, wait_us, endpoint_of(svc));
    for (int rep = 0; rep < 3; ++rep) {
      for (const executor* e : {&serial_executor(), &coroutines_executor()}) {
        const run_result r = measure_bounded(*e, tasks, {.workers = 1});
        CHECK(verify(tasks, r, reference_checksums(tasks)).ok);
        std::printf("wait %6.0f us  %-10s  %8.0f ns per request\n", wait_us,
                    std::string(e->name).c_str(),
                    static_cast<double>(r.makespan_ns) / static_cast<double>(tasks.size()));
      }
    }
  }
}
