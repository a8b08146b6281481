// Lesson 08's loopback service (workloads/io_service, as the io_service program): started as a
// child by service_process, asked by our blocking client and by curl, overlapping 100 waits,
// surviving a malformed request, a client that hangs up mid-request or mid-wait and a slow client
// without stopping to serve the others, stopped by SIGTERM with status 0 and reaped. Every test
// leaves no descriptor and no child behind, and checks it.
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/subprocess.hpp"
#include "workloads/io_body.hpp"
#include "workloads/io_client.hpp"
#include "workloads/io_service.hpp"
#include "workloads/service_process.hpp"

using namespace clab;
using clab::test::open_fd_count;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

const std::string k_service = IO_SERVICE;

/// Descriptors the child `pid` holds open (its listening socket, epoll, one per connection...).
int child_fd_count(pid_t pid) {
  int n = 0;
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/proc/" + std::to_string(pid) + "/fd", ec), end;
       !ec && it != end; it.increment(ec)) {
    ++n;
  }
  return n;
}

/// Polls `done` every 5 ms for at most `limit`; true when it held in time.
template <class F>
bool eventually(F done, milliseconds limit = milliseconds(5000)) {
  const auto deadline = steady_clock::now() + limit;
  while (!done()) {
    if (steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return true;
}

void send_all(int fd, const std::string& bytes) {
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    REQUIRE(n > 0);
    sent += static_cast<std::size_t>(n);
  }
}

/// Everything the server sends until it closes (each recv bounded by connect_tcp's timeout).
std::string read_to_eof(int fd) {
  std::string got;
  for (int i = 0; i < 1000; ++i) {
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  return got;
}

std::string task_target(int id, int wait_us, int seed) {
  return "/task?id=" + std::to_string(id) + "&wait_us=" + std::to_string(wait_us) +
         "&seed=" + std::to_string(seed);
}

/// curl on $PATH, or "" when it is not installed.
std::string find_curl() {
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
  for (std::size_t start = 0; start <= dirs.size();) {
    const std::size_t colon = std::min(dirs.find(':', start), dirs.size());
    const std::string candidate = dirs.substr(start, colon - start) + "/curl";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = colon + 1;
  }
  return "";
}

}  // namespace

TEST_CASE("io body: a fixed size and a deterministic function of the seed") {
  CHECK(io_body(7).size() == k_io_body_size);
  CHECK(io_body(7) == io_body(7));
  CHECK(io_body(7) != io_body(8));
  CHECK(io_body_checksum(io_body(7)) == io_body_checksum(io_body(7)));
  CHECK(io_body_checksum(io_body(7)) != io_body_checksum(io_body(8)));
  CHECK(io_body_checksum("") == 0xcbf29ce484222325ULL);  // FNV-1a's offset basis
}

TEST_CASE("io service: the target parser refuses with 400 or 404") {
  const auto ok = parse_task_target("/task?seed=3&id=1&wait_us=20");
  REQUIRE(std::holds_alternative<task_query>(ok));
  CHECK(std::get<task_query>(ok).id == 1);
  CHECK(std::get<task_query>(ok).wait_us == 20);
  CHECK(std::get<task_query>(ok).seed == 3);
  const auto status = [](std::string_view t) {
    const auto r = parse_task_target(t);
    return std::holds_alternative<target_error>(r) ? std::get<target_error>(r).status : 200;
  };
  CHECK(status("/nope?id=1&wait_us=0&seed=1") == 404);
  CHECK(status("/task") == 400);
  CHECK(status("/task?id=1&wait_us=0") == 400);                // seed missing
  CHECK(status("/task?id=1&wait_us=0&seed=1&seed=2") == 400);  // twice
  CHECK(status("/task?id=1&wait_us=-5&seed=1") == 400);
  CHECK(status("/task?id=1&wait_us=10000001&seed=1") == 400);  // over the 10 s cap
  CHECK(status("/task?id=1&wait_us=0&seed=1&x=2") == 400);
  CHECK(status("/task?id=1&wait_us=10000000&seed=1") == 200);
}

TEST_CASE("io service: HOST:PORT is parsed or refused with one line") {
  const auto a = parse_service_address("127.0.0.1:8080");
  REQUIRE(std::holds_alternative<service_address>(a));
  CHECK(std::get<service_address>(a).host == "127.0.0.1");
  CHECK(std::get<service_address>(a).port == 8080);
  for (const char* bad : {"127.0.0.1", ":80", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
                          "127.0.0.1:80x", "a b:80"}) {
    const auto r = parse_service_address(bad);
    REQUIRE(std::holds_alternative<std::string>(r));
    CHECK(std::get<std::string>(r).find('\n') == std::string::npos);
  }
}

TEST_CASE("io service: a GET is answered with the seed's body and several on one connection") {
  const int fds = open_fd_count();
  {
    service_process svc(k_service);
    CHECK(svc.host() == "127.0.0.1");
    CHECK(svc.port() > 0);
    const std::string body = http_get_task(svc.host(), svc.port(), 1, 1000, 7);
    CHECK(body == io_body(7));
    CHECK(io_body_checksum(body) == io_body_checksum(io_body(7)));

    const http_reply missing = http_get(svc.host(), svc.port(), "/other");
    CHECK(missing.status == 404);
    const http_reply bad = http_get(svc.host(), svc.port(), "/task?id=1");
    CHECK(bad.status == 400);
    CHECK(bad.body.find('\n') == bad.body.size() - 1);  // one line
    CHECK_THROWS_WITH(http_get_task(svc.host(), svc.port(), 1, 20'000'000, 1),
                      Catch::Contains("400"));

    // Keep-alive: three requests on one connection, each answered in turn.
    const int fd = connect_tcp(svc.host(), svc.port(), milliseconds(10'000));
    std::string requests;
    for (int i = 0; i < 3; ++i) {
      requests += "GET " + task_target(i, 100, 10 + i) + " HTTP/1.1\r\nHost: x\r\n" +
                  (i == 2 ? "Connection: close\r\n" : "") + "\r\n";
    }
    send_all(fd, requests);
    const std::string replies = read_to_eof(fd);
    ::close(fd);
    for (int i = 0; i < 3; ++i) CHECK(replies.find(io_body(10 + i)) != std::string::npos);
  }
  CHECK(open_fd_count() == fds);
}

TEST_CASE("io service: curl gets exactly the body") {
  const std::string curl = find_curl();
  if (curl.empty()) {
    WARN("curl is not installed (scripts/bootstrap installs it): skipped");
    return;
  }
  const int fds = open_fd_count();
  {
    service_process svc(k_service);
    const std::string url =
        "http://127.0.0.1:" + std::to_string(svc.port()) + "/task?id=1&wait_us=1000&seed=7";
    const test::process_result r = test::run_process({curl, "-s", "--max-time", "30", url}, 60);
    REQUIRE_FALSE(r.timed_out);
    CHECK(r.exit_code == 0);
    CHECK(r.out == io_body(7));
  }
  CHECK(open_fd_count() == fds);
}

TEST_CASE("io service: 100 concurrent 50 ms requests overlap") {
  const int fds = open_fd_count();
  {
    service_process svc(k_service);
    constexpr int n = 100;
    constexpr int wait_us = 50'000;
    std::vector<std::string> bodies(n);
    std::vector<std::string> errors(n);
    const auto start = steady_clock::now();
    {
      std::vector<std::jthread> clients;
      for (int i = 0; i < n; ++i) {
        clients.emplace_back([&, i] {
          try {
            bodies[i] = http_get_task(svc.host(), svc.port(), static_cast<std::uint64_t>(i),
                                      wait_us, static_cast<std::uint64_t>(1000 + i));
          } catch (const std::exception& e) {
            errors[i] = e.what();
          }
        });
      }
    }
    const double elapsed = std::chrono::duration<double>(steady_clock::now() - start).count();
    for (int i = 0; i < n; ++i) {
      INFO("request " << i << ": " << errors[i]);
      CHECK(bodies[i] == io_body(static_cast<std::uint64_t>(1000 + i)));
    }
    const double serial = n * wait_us * 1e-6;
    WARN("100 x 50 ms requests in " << elapsed * 1e3 << " ms (one after another: " << serial * 1e3
                                    << " ms)");
    CHECK(elapsed / serial < 0.5);  // the waits overlapped (a generous bound: ideal is 0.01)
  }
  CHECK(open_fd_count() == fds);
}

namespace {

/// `n` requests at once, one thread each, seed i for the i-th: the bodies in order ("" for a
/// request that failed, which the caller's check then names).
std::vector<std::string> concurrent_bodies(const service_process& svc, int n,
                                           std::uint64_t wait_us) {
  std::vector<std::string> bodies(static_cast<std::size_t>(n));
  std::vector<std::jthread> clients;
  for (int i = 0; i < n; ++i) {
    clients.emplace_back([&, i] {
      try {
        bodies[i] = http_get_task(svc.host(), svc.port(), 1, wait_us, static_cast<unsigned>(i));
      } catch (const std::exception&) {
      }
    });
  }
  clients.clear();  // joins them all
  return bodies;
}

}  // namespace

TEST_CASE("io service: --threads 4 serves concurrent requests correctly") {
  const int fds = open_fd_count();
  {
    service_process svc(k_service, {"--threads", "4"});
    const std::vector<std::string> bodies = concurrent_bodies(svc, 32, 5'000);
    for (int i = 0; i < 32; ++i) CHECK(bodies[i] == io_body(static_cast<unsigned>(i)));
  }
  CHECK(open_fd_count() == fds);
}

namespace {

/// Sockets listening on 127.0.0.1:port, from /proc/net/tcp (state 0A is LISTEN).
int listening_sockets(std::uint16_t port) {
  std::ifstream in("/proc/net/tcp");
  char want[32];
  std::snprintf(want, sizeof want, "0100007F:%04X", static_cast<unsigned>(port));
  int n = 0;
  std::string line;
  std::getline(in, line);  // the header
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state;
    fields >> slot >> local >> remote >> state;
    if (local == want && state == "0A") ++n;
  }
  return n;
}

}  // namespace

TEST_CASE("io service: its listeners share one port and each has its own accept queue") {
  const int fds = open_fd_count();
  for (const int listeners : {1, 4}) {
    CAPTURE(listeners);
    service_process svc(k_service, {"--listeners", std::to_string(listeners)});
    CHECK(listening_sockets(svc.port()) == listeners);
    // Connections spread over the listeners by their source ports; every one is answered.
    const std::vector<std::string> bodies = concurrent_bodies(svc, 64, 2'000);
    for (int i = 0; i < 64; ++i) CHECK(bodies[i] == io_body(static_cast<unsigned>(i)));
  }
  CHECK(open_fd_count() == fds);
  const test::process_result bad = test::run_process({k_service, "--listeners", "0"}, 30);
  CHECK(bad.exit_code == 2);
  CHECK_THAT(bad.err, Catch::Contains("--listeners") && Catch::Contains("not in range 1 to 64"));
  CHECK(std::count(bad.err.begin(), bad.err.end(), '\n') == 1);
}

TEST_CASE("io service: a malformed request gets 400 and the service goes on") {
  const int fds = open_fd_count();
  {
    service_process svc(k_service);
    for (const char* garbage : {"NONSENSE\r\n\r\n", "GET /task HTTP/1.1\r\nno colon here\r\n\r\n",
                                "GET /task?id=1&wait_us=0&seed=1 HTTP/9.9\r\n\r\n"}) {
      INFO(garbage);
      const int fd = connect_tcp(svc.host(), svc.port(), milliseconds(10'000));
      send_all(fd, garbage);
      const std::string reply = read_to_eof(fd);  // the server closes after its 400
      ::close(fd);
      CHECK(reply.rfind("HTTP/1.1 400", 0) == 0);
      CHECK(http_get_task(svc.host(), svc.port(), 2, 0, 5) == io_body(5));
    }
    // A POST is well formed but refused (405), on a connection that stays usable.
    const int fd = connect_tcp(svc.host(), svc.port(), milliseconds(10'000));
    send_all(fd, "POST " + task_target(1, 0, 1) +
                     " HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" + "GET " +
                     task_target(2, 0, 3) + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    const std::string replies = read_to_eof(fd);
    ::close(fd);
    CHECK(replies.rfind("HTTP/1.1 405", 0) == 0);
    CHECK(replies.find(io_body(3)) != std::string::npos);
  }
  CHECK(open_fd_count() == fds);
}

TEST_CASE("io service: a client hanging up mid-request or mid-wait ends only its session") {
  const int fds = open_fd_count();
  {
    service_process svc(k_service);
    // Warm up (Asio opens its reactor's descriptors lazily), then count the server's.
    CHECK(http_get_task(svc.host(), svc.port(), 0, 0, 1) == io_body(1));
    // The warm-up's socket closes on the server just after our client has read its reply: wait
    // until the count holds still (five looks 20 ms apart) before taking it as the baseline.
    int baseline = child_fd_count(svc.pid());
    for (int same = 0, looks = 0; same < 5 && looks < 100; ++looks) {
      std::this_thread::sleep_for(milliseconds(20));
      const int now = child_fd_count(svc.pid());
      same = now == baseline ? same + 1 : 0;
      baseline = now;
    }
    REQUIRE(baseline > 0);

    SECTION("mid-wait") {
      const int fd = connect_tcp(svc.host(), svc.port());
      send_all(fd, "GET " + task_target(1, 5'000'000, 2) + " HTTP/1.1\r\nHost: x\r\n\r\n");
      REQUIRE(eventually([&] { return child_fd_count(svc.pid()) > baseline; }));
      std::this_thread::sleep_for(milliseconds(50));  // the server is in its 5 s wait now
      ::close(fd);
    }
    SECTION("mid-request") {
      const int fd = connect_tcp(svc.host(), svc.port());
      send_all(fd, "GET /task?id=1&wa");
      REQUIRE(eventually([&] { return child_fd_count(svc.pid()) > baseline; }));
      ::close(fd);
    }
    // The session noticed and closed its socket well before the 5 s wait would have ended.
    const auto hung_up = steady_clock::now();
    CHECK(eventually([&] { return child_fd_count(svc.pid()) == baseline; }, milliseconds(4000)));
    const double gone_ms =
        std::chrono::duration<double, std::milli>(steady_clock::now() - hung_up).count();
    WARN("session gone " << gone_ms << " ms after the client hung up");
    CHECK(http_get_task(svc.host(), svc.port(), 3, 1000, 4) == io_body(4));
  }
  CHECK(open_fd_count() == fds);
}

TEST_CASE("io service: an idle connection is closed after --idle-timeout-s") {
  const int fds = open_fd_count();
  {
    service_process svc(k_service, {"--idle-timeout-s", "1"});
    const int fd = connect_tcp(svc.host(), svc.port(), milliseconds(20'000));
    const auto start = steady_clock::now();
    char byte = 0;
    const ssize_t got = ::recv(fd, &byte, 1, 0);  // nothing sent: the server gives up on us
    const double waited = std::chrono::duration<double>(steady_clock::now() - start).count();
    ::close(fd);
    CHECK(got == 0);      // closed by the server (EOF), not our 20 s receive timeout
    CHECK(waited > 0.5);  // and not at once: after its idle timeout
    CHECK(http_get_task(svc.host(), svc.port(), 1, 0, 2) == io_body(2));
  }
  CHECK(open_fd_count() == fds);
}

TEST_CASE("io service: a slow client does not delay a fast one") {
  const int fds = open_fd_count();
  {
    service_process svc(k_service);
    const std::string request =
        "GET " + task_target(2, 0, 9) + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    std::atomic<std::size_t> bytes_sent{0};
    std::atomic<bool> fast_done{false};
    bool fast_done_before_slow_finished = false;
    std::string slow_reply;
    {
      std::jthread slow([&] {
        const int fd = connect_tcp(svc.host(), svc.port(), milliseconds(10'000));
        for (const char c : request) {  // one byte every 20 ms: about 1.5 s for the request
          if (::send(fd, &c, 1, MSG_NOSIGNAL) != 1) break;
          ++bytes_sent;
          std::this_thread::sleep_for(milliseconds(20));
        }
        fast_done_before_slow_finished = fast_done.load();
        slow_reply = read_to_eof(fd);
        ::close(fd);
      });
      REQUIRE(eventually([&] { return bytes_sent.load() >= 5; }));
      CHECK(http_get_task(svc.host(), svc.port(), 1, 0, 8) == io_body(8));
      fast_done = true;
    }
    CHECK(fast_done_before_slow_finished);
    CHECK(slow_reply.rfind("HTTP/1.1 200", 0) == 0);
    CHECK(slow_reply.find(io_body(9)) != std::string::npos);
  }
  CHECK(open_fd_count() == fds);
}

TEST_CASE("io service: SIGTERM stops it with status 0 and it is reaped") {
  const int fds = open_fd_count();
  service_process svc(k_service);
  CHECK(http_get_task(svc.host(), svc.port(), 1, 0, 1) == io_body(1));
  const pid_t pid = svc.pid();
  const child_exit e = svc.stop();
  CHECK(e.exited);
  CHECK(e.code == 0);
  CHECK(svc.stop().code == 0);  // asked again: the same answer, no second signal
  int status = 0;
  CHECK(::waitpid(pid, &status, WNOHANG) == -1);  // already reaped: no zombie
  CHECK(errno == ECHILD);
  CHECK_THROWS(http_get_task("127.0.0.1", svc.port(), 1, 0, 1));  // nobody listens
  CHECK(open_fd_count() == fds);
}

TEST_CASE("io service: a service that cannot start gives a clear error and leaves no child") {
  const int fds = open_fd_count();
  CHECK_THROWS_WITH(service_process("/nonexistent/io_service"),
                    Catch::Contains("/nonexistent/io_service") && Catch::Contains("No such file"));
  CHECK_THROWS_WITH(service_process("/bin/true"), Catch::Contains("exited with status 0") &&
                                                      Catch::Contains("before reporting its port"));
  CHECK_THROWS_WITH(service_process(k_service, {"--threads", "0"}),
                    Catch::Contains("exited with status 2"));
  // Executable but not a program: exec itself fails, and the child says why on the pipe.
  const std::string junk = "/tmp/clab_io_junk_" + std::to_string(::getpid());
  std::FILE* f = std::fopen(junk.c_str(), "w");
  REQUIRE(f != nullptr);
  std::fputs("\x7f not an executable\n", f);
  std::fclose(f);
  std::filesystem::permissions(junk, std::filesystem::perms::owner_all);
  CHECK_THROWS_WITH(service_process(junk),
                    Catch::Contains("cannot run") && Catch::Contains("Exec format error"));
  // A program that runs but never reports a port: refused at the deadline, killed and reaped.
  const std::string mute = junk + ".sh";
  f = std::fopen(mute.c_str(), "w");
  REQUIRE(f != nullptr);
  std::fputs("#!/bin/sh\nexec sleep 30\n", f);
  std::fclose(f);
  std::filesystem::permissions(mute, std::filesystem::perms::owner_all);
  CHECK_THROWS_WITH(service_process(mute, {}, milliseconds(300)),
                    Catch::Contains("did not report its port within 300 ms"));
  std::filesystem::remove(junk);
  std::filesystem::remove(mute);
  int status = 0;
  CHECK(::waitpid(-1, &status, WNOHANG) == -1);  // no child left, not even a zombie
  CHECK(open_fd_count() == fds);
}

TEST_CASE(
    "io service as a program: bad flags exit 2 with one line and --print-port prints only it") {
  const test::process_result bad = test::run_process({k_service, "--threads", "zero"}, 30);
  CHECK(bad.exit_code == 2);
  CHECK(bad.out.empty());
  CHECK(std::count(bad.err.begin(), bad.err.end(), '\n') == 1);
  const test::process_result fd = test::run_process({k_service, "--port-fd", "999"}, 30);
  CHECK(fd.exit_code == 2);

  bool signalled = false;
  const test::process_result run =
      test::run_process({k_service, "--print-port"}, 30, [&](pid_t pid, const auto& so_far) {
        if (!signalled && so_far.out.find('\n') != std::string::npos) {
          ::kill(pid, SIGINT);
          signalled = true;
        }
      });
  REQUIRE_FALSE(run.timed_out);
  CHECK(run.exit_code == 0);
  const auto parsed = parse_service_address("127.0.0.1:" + run.out.substr(0, run.out.find('\n')));
  CHECK(std::holds_alternative<service_address>(parsed));
  CHECK(run.out.find('\n') == run.out.size() - 1);  // nothing else on stdout
}
