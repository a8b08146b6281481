// Lesson 08: the executors whose io tasks co_await the socket (asio-io on one thread, asio-io-mt
// on P), against a loopback service this test starts: verified io and mixed runs, 200 requests
// overlapping, the service killed mid-run (each request in flight fails with one line), a
// listener that never replies cut off by --task-timeout-ms, a stop cancelling requests in flight;
// and lesson_08 as a program: --demo files, --list, bad flags. No test leaves a child, a
// descriptor or a temporary file behind, and none asserts an absolute time.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "lessons/08_async_io/executors.hpp"
#include "support/io_runs.hpp"
#include "support/lesson_run.hpp"
#include "support/sanitized.hpp"
#include "support/subprocess.hpp"
#include "support/task_sets.hpp"
#include "workloads/io_exchange.hpp"
#include "workloads/service_process.hpp"
#include "workloads/verify.hpp"

using namespace clab;
using clab::test::open_fd_count;
using clab::test::process_result;
using std::chrono::milliseconds;
using testing::endpoint_of;
using testing::io_tasks;
using testing::no_child_left;
using testing::silent_listener;

namespace {

const executor* const k_executors[] = {&asio_io_executor(), &asio_io_mt_executor()};

process_result lesson(std::vector<std::string> args) {
  return clab::test::run_lesson(LESSON_08, std::move(args));
}

}  // namespace

TEST_CASE("asio-io and asio-io-mt verify an io run of 40 requests of 2 ms", "[io][08]") {
  const int fds = open_fd_count();
  {
    service_process svc(IO_SERVICE);
    const auto ts = io_tasks(40, 2000, endpoint_of(svc));
    const auto ref = reference_checksums(ts);
    for (const executor* e : k_executors) {
      CAPTURE(e->name);
      CHECK(e->supports_io);
      CHECK(e->timeout_cancels_waits);
      const run_result r = measure(*e, ts, {.workers = 2});
      const verification v = verify(ts, r, ref);
      INFO((v.problems.empty() ? std::string() : v.problems.front()));
      INFO((r.failed.empty() ? std::string() : r.failed.front().cause));
      CHECK(v.ok);
      CHECK(v.completed == 40);
      CHECK(r.workers_used == workers_used(e->plan, 2, ts.size()));
    }
  }
  CHECK(open_fd_count() == fds);
  CHECK(no_child_left());
}

TEST_CASE("asio-io and asio-io-mt verify a mixed set: timer waits and CPU parts", "[io][08]") {
  const auto ts = testing::tasks_of(30, workload::mixed, distribution::uniform, 2000, 3);
  const auto ref = reference_checksums(ts);
  for (const executor* e : k_executors) {
    CAPTURE(e->name);
    const run_result r = measure(*e, ts, {.workers = 2});
    const verification v = verify(ts, r, ref);
    INFO((v.problems.empty() ? std::string() : v.problems.front()));
    CHECK(v.ok);
    CHECK(v.completed == 30);
  }
}

TEST_CASE("asio-io overlaps 200 requests of 20 ms on one thread", "[io][08]") {
  const int fds = open_fd_count();
  {
    service_process svc(IO_SERVICE);
    const auto ts = io_tasks(200, 20'000, endpoint_of(svc));
    const auto ref = reference_checksums(ts);
    const run_result r = measure(asio_io_executor(), ts, {});
    CHECK(verify(ts, r, ref).ok);
    std::int64_t sum = 0;
    for (const task& t : ts) sum += t.wait_ns;
    // Serially 4 s of waiting; overlapped, about one wait plus 200 round trips. A tenth of the
    // sum leaves room for a loaded machine or a sanitizer.
    CHECK(static_cast<double>(r.makespan_ns) < 0.1 * static_cast<double>(sum));
    CHECK(r.workers_used == 1);
  }
  CHECK(open_fd_count() == fds);
}

TEST_CASE("the service killed mid-run fails each request in flight with one line", "[io][08]") {
  const int fds = open_fd_count();
  for (const executor* e : k_executors) {
    CAPTURE(e->name);
    service_process svc(IO_SERVICE);
    const auto ts = io_tasks(12, 2'000'000, endpoint_of(svc));  // 2 s each: all in flight
    std::jthread killer([&svc] {
      std::this_thread::sleep_for(milliseconds(300));
      ::kill(svc.pid(), SIGKILL);
    });
    const run_result r = measure(*e, ts, {.workers = 2});
    killer.join();
    const child_exit how = svc.stop();
    CHECK_FALSE(how.exited);
    CHECK(r.records.empty());
    REQUIRE(r.failed.size() == ts.size());
    for (const task_failure& f : r.failed) {
      CAPTURE(f.cause);
      CHECK(f.cause.find('\n') == std::string::npos);
      CHECK_THAT(f.cause, Catch::StartsWith("exception: task " + std::to_string(f.id) + ": "));
      CHECK((f.cause.find("service stopped") != std::string::npos ||
             f.cause.find("connection reset by the service") != std::string::npos));
    }
    // Well before the 2 s waits would have ended: nobody waited for them.
    CHECK(r.makespan_ns < 1'500'000'000);
  }
  CHECK(no_child_left());
  CHECK(open_fd_count() == fds);
}

TEST_CASE("a service that never replies: --task-timeout-ms fails each request", "[io][08]") {
  const int fds = open_fd_count();
  {
    const silent_listener silent;
    std::vector<task> ts(4);
    for (std::uint32_t i = 0; i < ts.size(); ++i) {
      ts[i].id = i;
      ts[i].wait_ns = 10'000'000;
      ts[i].seed = i + 1;
      ts[i].io = silent.endpoint();
    }
    for (const executor* e : k_executors) {
      CAPTURE(e->name);
      const run_result r = measure(*e, ts, {.workers = 2, .task_timeout = milliseconds(200)});
      CHECK(r.records.empty());
      REQUIRE(r.failed.size() == ts.size());
      for (const task_failure& f : r.failed)
        CHECK(f.cause == io_timeout_cause(f.id, milliseconds(200)));
    }
  }
  CHECK(open_fd_count() == fds);
}

TEST_CASE("a refused connection fails its task with the cannot-connect line", "[io][08]") {
  io_endpoint closed{};
  {
    const silent_listener gone;  // a port that was just free: nothing listens there once closed
    closed = gone.endpoint();
  }
  std::vector<task> ts(2);
  for (std::uint32_t i = 0; i < ts.size(); ++i) {
    ts[i].id = i;
    ts[i].io = closed;
  }
  for (const executor* e : k_executors) {
    CAPTURE(e->name);
    const run_result r = measure(*e, ts, {.workers = 2});
    REQUIRE(r.failed.size() == 2);
    for (const task_failure& f : r.failed) {
      CHECK_THAT(f.cause, Catch::Contains("cannot connect to the service at " + to_string(closed)));
    }
  }
}

TEST_CASE("a stop cancels every request in flight at once", "[io][08]") {
  service_process svc(IO_SERVICE);
  const auto ts = io_tasks(20, 2'000'000, endpoint_of(svc));
  for (const executor* e : k_executors) {
    CAPTURE(e->name);
    std::stop_source stop;
    std::jthread canceller([&stop] {
      std::this_thread::sleep_for(milliseconds(200));
      stop.request_stop();
    });
    const run_result r = measure(*e, ts, {.workers = 2, .stop = stop.get_token()});
    canceller.join();
    CHECK(r.records.empty());
    REQUIRE(r.failed.size() == ts.size());
    for (const task_failure& f : r.failed) CHECK(f.cause == k_cancelled);
    CHECK(r.makespan_ns < 1'500'000'000);  // the 2 s requests were not waited for
  }
}

TEST_CASE("lesson_08 --demo files: EPERM from epoll, three reads verified, nothing left",
          "[io][08]") {
  // A folder of our own as $TMPDIR (the child inherits it), to see that the demo empties it.
  std::string dir = (std::filesystem::temp_directory_path() / "clab-test-XXXXXX").string();
  REQUIRE(::mkdtemp(dir.data()) != nullptr);
  const char* old = std::getenv("TMPDIR");
  const std::string saved = old != nullptr ? old : "";
  ::setenv("TMPDIR", dir.c_str(), 1);
  const process_result r = lesson({"--demo", "files"});
  if (old != nullptr) {
    ::setenv("TMPDIR", saved.c_str(), 1);
  } else {
    ::unsetenv("TMPDIR");
  }
  CHECK(std::filesystem::is_empty(dir));
  std::filesystem::remove_all(dir);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("epoll_ctl(EPOLL_CTL_ADD) on a regular file: -1, errno EPERM"));
  const auto count = [&](const std::string& word) {
    int n = 0;
    for (std::size_t at = r.out.find(word); at != std::string::npos; at = r.out.find(word, at + 1))
      ++n;
    return n;
  };
  CHECK(count("MISMATCH") == 0);
  // blocking read() and the pool always; io_uring verified, or the reason it did not run.
  CHECK(count(" verified") + count("not run: io_uring_queue_init") + count("not built: liburing") ==
        3);
  CHECK(count(" verified") >= 2);
}

TEST_CASE("lesson_08: --list names both executors, bad flags exit 2", "[io][08]") {
  const process_result list = lesson({"--list"});
  CHECK(list.exit_code == 0);
  CHECK_THAT(list.out, Catch::Contains("asio-io ") && Catch::Contains("asio-io-mt "));
  for (const std::vector<std::string>& bad : {std::vector<std::string>{"--demo"},
                                              {"--demo", "sockets"},
                                              {"--tasks", "-1"},
                                              {"--executor", "nope"},
                                              {"--no-such-flag"}}) {
    CAPTURE(bad);
    const process_result r = lesson(bad);
    CHECK(r.exit_code == 2);
    CHECK(clab::test::lines(r.err) == 1);
  }
}

TEST_CASE("lesson_08 runs an io workload with its own service, timeout accepted", "[io][08]") {
  const process_result r =
      lesson({"--executor", "asio-io-mt", "--workers", "2", "--workload", "io", "--tasks", "20",
              "--task-us", "2000", "--task-timeout-ms", "5000", "--json"});
  CHECK(r.exit_code == 0);
  const auto j = clab::test::json_of(r);
  CHECK(j["verified"] == true);
  CHECK(j["completed"] == 20);
}
