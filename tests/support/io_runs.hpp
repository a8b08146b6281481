// Io runs for the executor tests (lesson 06 on): io tasks asking a service child started by the
// test, a listener that takes requests and never answers (the timeout tests), and the checks every
// executor that supports_io must pass: verified against serial, waits overlapped, a service killed
// mid-run, a request timeout, a stop closing parked requests. Header-only and using Catch2's
// macros: include it after <catch2/catch.hpp>. Every socket and child is closed or reaped, and
// each check counts the descriptors.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "support/sanitized.hpp"
#include "support/subprocess.hpp"
#include "support/task_sets.hpp"
#include "workloads/io_exchange.hpp"
#include "workloads/run.hpp"
#include "workloads/service_process.hpp"
#include "workloads/verify.hpp"

namespace clab::testing {

/// The endpoint of a service child.
inline io_endpoint endpoint_of(const service_process& svc) {
  return resolve_endpoint(svc.host(), svc.port());
}

/// n io tasks of `us` µs each (their wait is one request to `service`), from `seed`.
inline std::vector<task> io_tasks(std::size_t n, double us, const io_endpoint& service,
                                  std::uint64_t seed = 11) {
  return make_task_set({.tasks = n,
                        .kind = workload::io,
                        .dist = distribution::fixed,
                        .task_us = us,
                        .seed = seed,
                        .service = service},
                       machine().ns_per_iteration);
}

/// A listener on 127.0.0.1:0 that never accepts: the kernel completes each connection into the
/// backlog and takes the request into its buffer, and no reply ever comes.
class silent_listener {
 public:
  silent_listener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), len) != 0 ||
        ::listen(fd_, 256) != 0 || ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      if (fd_ >= 0) ::close(fd_);
      throw std::runtime_error("silent_listener: cannot listen on 127.0.0.1:0");
    }
    port_ = ntohs(a.sin_port);
  }
  ~silent_listener() { ::close(fd_); }
  silent_listener(const silent_listener&) = delete;
  silent_listener& operator=(const silent_listener&) = delete;

  [[nodiscard]] io_endpoint endpoint() const { return {INADDR_LOOPBACK, port_}; }
  [[nodiscard]] std::uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

/// True if this process has no child left, zombie or running.
inline bool no_child_left() {
  int status = 0;
  return ::waitpid(-1, &status, WNOHANG) == -1 && errno == ECHILD;
}

/// 40 io tasks of 2 ms on `e` with P workers: every one completes with serial's checksum.
inline void check_io_run_verified(const executor& e, int p, const std::string& service) {
  const int fds = clab::test::open_fd_count();
  {
    service_process svc(service);
    const auto ts = io_tasks(40, 2000, endpoint_of(svc));
    const run_result r = measure(e, ts, {.workers = p});
    const verification v = verify(ts, r, reference_checksums(ts));
    INFO((v.problems.empty() ? std::string() : v.problems.front()));
    CHECK(v.ok);
    CHECK(v.completed == ts.size());
    CHECK(r.failed.empty());
  }
  CHECK(clab::test::open_fd_count() == fds);
  CHECK(no_child_left());
}

/// 200 io waits of 20 ms overlap: the makespan is far below their sum (4 s). What each request
/// costs the thread besides its wait (connect, send, receive, close: ~0.1-0.3 ms on two loaded
/// cores, ten times that under TSan, with the service sanitized too) is measured in the same test
/// on the same 200 requests with no wait, and taken off: the waits themselves then add a small
/// fraction of their sum (serial would add all of it). Returns makespan / sum, for the log.
inline double check_io_waits_overlap(const executor& e, int p, const std::string& service) {
  service_process svc(service);
  const auto bare = io_tasks(200, 0, endpoint_of(svc));
  const auto ts = io_tasks(200, 20'000, endpoint_of(svc));
  const run_result r0 = measure(e, bare, {.workers = p});
  const run_result r = measure(e, ts, {.workers = p});
  CHECK(verify(bare, r0, reference_checksums(bare)).ok);
  CHECK(verify(ts, r, reference_checksums(ts)).ok);
  const double sum = 200 * 20e6;
  const double waits_added = static_cast<double>(r.makespan_ns - r0.makespan_ns) / sum;
  CAPTURE(r0.makespan_ns, r.makespan_ns);
  CHECK(waits_added < 0.25);
  if (!k_sanitized) CHECK(static_cast<double>(r.makespan_ns) / sum < 0.25);
  return static_cast<double>(r.makespan_ns) / sum;
}

/// The service killed (SIGKILL) while every request is parked: each in-flight task fails with a
/// one-line cause naming the service, the run returns, and no child is left.
inline void check_service_killed_mid_run(const executor& e, int p, const std::string& service) {
  const int fds = clab::test::open_fd_count();
  {
    service_process svc(service);
    const auto ts = io_tasks(16, 5'000'000, endpoint_of(svc));  // 5 s waits: none can end first
    std::jthread killer([&svc] {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      ::kill(svc.pid(), SIGKILL);
    });
    const run_result r = measure(e, ts, {.workers = p});
    killer.join();
    // (verify() would call these failures problems: no fault was injected.) Each task once:
    CHECK(r.records.empty());
    REQUIRE(r.failed.size() == ts.size());
    std::vector<int> seen(ts.size(), 0);
    for (const task_failure& f : r.failed) ++seen.at(f.id);
    CHECK(std::count(seen.begin(), seen.end(), 1) == static_cast<long>(ts.size()));
    for (const task_failure& f : r.failed) {
      CAPTURE(f.cause);
      CHECK_THAT(f.cause, Catch::StartsWith("exception: task " + std::to_string(f.id) + ": ") &&
                              Catch::Contains("service"));
      CHECK(f.cause.find('\n') == std::string::npos);
    }
    CHECK_FALSE(svc.stop().exited);  // reaped here: the signal, not an exit
  }
  CHECK(clab::test::open_fd_count() == fds);
  CHECK(no_child_left());
}

/// A listener that never replies and --task-timeout-ms 150: every request is given up at the
/// timeout, in io_timeout_cause's words.
inline void check_request_timeout(const executor& e, int p) {
  REQUIRE(e.timeout_cancels_waits);
  const int fds = clab::test::open_fd_count();
  {
    silent_listener silent;
    const auto ts = io_tasks(8, 1000, silent.endpoint());  // a 1 ms wait, never answered
    const auto limit = std::chrono::milliseconds(150);
    const run_result r = measure(e, ts, {.workers = p, .task_timeout = limit});
    CHECK(r.records.empty());
    REQUIRE(r.failed.size() == ts.size());
    for (const task_failure& f : r.failed) CHECK(f.cause == io_timeout_cause(f.id, limit));
  }
  CHECK(clab::test::open_fd_count() == fds);
  CHECK(no_child_left());
}

/// A stop 100 ms into a run of 10 s requests wakes every parked request: each task is cancelled,
/// its socket closed, and the run returns long before any wait could end.
inline void check_stop_closes_parked_requests(const executor& e, int p,
                                              const std::string& service) {
  const int fds = clab::test::open_fd_count();
  {
    service_process svc(service);
    const auto ts = io_tasks(16, 10'000'000, endpoint_of(svc));
    std::stop_source stop;
    std::jthread canceller([&stop] {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      stop.request_stop();
    });
    const run_result r = measure(e, ts, {.workers = p, .stop = stop.get_token()});
    CHECK(r.records.empty());
    REQUIRE(r.failed.size() == ts.size());
    for (const task_failure& f : r.failed) CHECK(f.cause == k_cancelled);
    CHECK(r.makespan_ns < 5'000'000'000);  // half of one wait: the stop, not the service, ended it
  }
  CHECK(clab::test::open_fd_count() == fds);
  CHECK(no_child_left());
}

}  // namespace clab::testing
