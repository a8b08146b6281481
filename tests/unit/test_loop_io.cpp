// Lesson 05's non-blocking executors on the io workload: each task's wait is one request to the
// loopback service (an io_service child), its socket watched by the loop (our epoll, Asio's
// reactor, libuv's uv_poll_t). Verified against serial's checksums; 200 requests overlapped on
// one thread; the service killed mid-run (the requests in flight fail with one line, the run
// returns); a task timeout against a listener that never replies; a stop closing requests in
// flight. Every test leaves no descriptor and no child behind, and checks it.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "lessons/05_event_loop/executors.hpp"
#include "support/io_runs.hpp"
#include "support/subprocess.hpp"
#include "support/task_sets.hpp"
#include "workloads/io_exchange.hpp"
#include "workloads/run.hpp"
#include "workloads/service_process.hpp"
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

/// The four executors of lesson 05 whose waits watch the socket.
std::vector<const executor*> socket_executors() {
  return {&loop_executor(), &loops_executor(), &asio_loop_executor(), &libuv_executor()};
}

/// What opens descriptors once per process and keeps them: the calibration, and libuv's first
/// loop (a pipe for its signal handling). Done before a test counts its descriptors.
void open_once_per_process() {
  const auto ts = testing::tasks_of(1, workload::wait, distribution::fixed, 10, 1);
  (void)measure(libuv_executor(), ts, {});
}

}  // namespace

TEST_CASE("lesson 05 io: each socket executor completes 40 requests with serial's checksums",
          "[05][io]") {
  open_once_per_process();
  const int fds_before = open_fd_count();
  {
    service_process svc(k_service);
    const auto ts = io_tasks(40, 2000, resolve_endpoint(svc.host(), svc.port()));
    const auto ref = reference_checksums(ts);
    for (const executor* e : socket_executors()) {
      CAPTURE(e->name);
      CHECK(e->supports_io);
      CHECK(e->timeout_cancels_waits);
      CHECK(runs_io(*e));
      const run_result r = measure(*e, ts, {.workers = 2});
      const verification v = verify(ts, r, ref);
      INFO((v.problems.empty() ? std::string() : v.problems.front()));
      CHECK(v.ok);
      CHECK(v.completed == ts.size());
    }
  }
  CHECK(open_fd_count() == fds_before);
  CHECK(no_child_left());
}

TEST_CASE("lesson 05 io: one loop overlaps 200 requests of 20 ms in far less than their sum",
          "[05][io]") {
  service_process svc(k_service);
  const auto ts = io_tasks(200, 20'000, resolve_endpoint(svc.host(), svc.port()));
  const auto ref = reference_checksums(ts);
  const run_result r = measure(loop_executor(), ts, {});
  CHECK(verify(ts, r, ref).ok);
  // Σ = 4 s of waiting on one thread. Overlapped, the run takes about one wait plus the
  // connections' cost (some tens of ms); a tenth of Σ leaves a wide margin on a loaded VM.
  const double sum_ns = 200.0 * 20e6;
  CHECK(static_cast<double>(r.makespan_ns) < sum_ns / 10);
}

TEST_CASE("lesson 05 io: the service killed mid-run fails the requests in flight, the run returns",
          "[05][io]") {
  open_once_per_process();
  const int fds_before = open_fd_count();
  for (const executor* e : socket_executors()) {
    CAPTURE(e->name);
    service_process svc(k_service);
    // 20 requests of 5 s: all in flight when the service is killed 200 ms in.
    const auto ts = io_tasks(20, 5'000'000, resolve_endpoint(svc.host(), svc.port()));
    std::jthread killer([&svc] {
      std::this_thread::sleep_for(milliseconds(200));
      (void)svc.stop(milliseconds(0));
    });
    const auto t0 = std::chrono::steady_clock::now();
    const run_result r = measure(*e, ts, {});
    const auto took = std::chrono::steady_clock::now() - t0;
    killer.join();
    CHECK(r.records.empty());
    REQUIRE(r.failed.size() == ts.size());
    for (const task_failure& f : r.failed) {
      CAPTURE(f.cause);
      const bool named = f.cause.find("connection reset") != std::string::npos ||
                         f.cause.find("service stopped") != std::string::npos ||
                         f.cause.find("cannot connect") != std::string::npos;
      CHECK(named);
      CHECK(f.cause.find('\n') == std::string::npos);
    }
    CHECK(took < std::chrono::seconds(4));  // did not wait out the 5 s replies
    CHECK(no_child_left());
  }
  CHECK(open_fd_count() == fds_before);
}

TEST_CASE("lesson 05 io: a task timeout closes a request that has no reply", "[05][io]") {
  open_once_per_process();
  const int fds_before = open_fd_count();
  {
    silent_listener hung;
    const auto ts = io_tasks(8, 2000, resolve_endpoint("127.0.0.1", hung.port()));
    for (const executor* e : socket_executors()) {
      CAPTURE(e->name);
      const run_result r = measure(*e, ts, {.task_timeout = milliseconds(100)});
      CHECK(r.records.empty());
      REQUIRE(r.failed.size() == ts.size());
      for (const task_failure& f : r.failed) {
        CHECK(f.cause == io_timeout_cause(f.id, milliseconds(100)));
      }
    }
  }
  CHECK(open_fd_count() == fds_before);
}

TEST_CASE("lesson 05 io: a task timeout longer than the reply changes nothing", "[05][io]") {
  service_process svc(k_service);
  const auto ts = io_tasks(20, 2000, resolve_endpoint(svc.host(), svc.port()));
  const auto ref = reference_checksums(ts);
  for (const executor* e : socket_executors()) {
    CAPTURE(e->name);
    const run_result r = measure(*e, ts, {.task_timeout = std::chrono::seconds(20)});
    CHECK(verify(ts, r, ref).ok);
    CHECK(r.failed.empty());
  }
}

TEST_CASE("lesson 05 io: a stop closes the requests in flight, the run does not wait for them",
          "[05][io]") {
  open_once_per_process();
  const int fds_before = open_fd_count();
  {
    service_process svc(k_service);
    const auto ts = io_tasks(20, 5'000'000, resolve_endpoint(svc.host(), svc.port()));
    for (const executor* e : socket_executors()) {
      CAPTURE(e->name);
      std::stop_source stop;
      std::jthread canceller([&stop] {
        std::this_thread::sleep_for(milliseconds(200));
        stop.request_stop();
      });
      const auto t0 = std::chrono::steady_clock::now();
      const run_result r = measure(*e, ts, {.stop = stop.get_token()});
      const auto took = std::chrono::steady_clock::now() - t0;
      canceller.join();
      CHECK(r.records.empty());
      REQUIRE(r.failed.size() == ts.size());
      for (const task_failure& f : r.failed) CHECK(f.cause == k_cancelled);
      CHECK(took < std::chrono::seconds(4));
    }
  }
  CHECK(open_fd_count() == fds_before);
  CHECK(no_child_left());
}

TEST_CASE("lesson 05 io: a failed request stops the run at the first error", "[05][io]") {
  // Nothing listens on the port of a service that was started and stopped: every connect is
  // refused. Under stop_at_first the first refusal stops the run; every task is reported once.
  io_endpoint gone{};
  {
    service_process svc(k_service);
    gone = resolve_endpoint(svc.host(), svc.port());
  }
  const auto ts = io_tasks(10, 2000, gone);
  for (const executor* e : socket_executors()) {
    CAPTURE(e->name);
    const run_result r = measure(*e, ts, {.on_error = error_policy::stop_at_first});
    CHECK(r.records.empty());
    REQUIRE(r.failed.size() == ts.size());
    int refused = 0;
    for (const task_failure& f : r.failed) {
      refused += f.cause.find("cannot connect") != std::string::npos ? 1 : 0;
    }
    CHECK(refused >= 1);
  }
}
