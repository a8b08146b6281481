// Lesson 08's loopback HTTP/1.1 service: `GET /task?id=I&wait_us=W&seed=S` is answered after W
// microseconds with io_body(S). The wait is the server's (a timer), so a client's task waits on a
// real socket for a real reply: the `io` workload's "wait" is time spent in the network stack.
//
// Look for: run_io_service (one io_context, an acceptor, a coroutine per connection), and
// parse_task_target (the one route: what is a 400, what is a 404). Asio and Beast stay in the .cpp,
// so this header costs its includers nothing.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace clab {

/// A wait longer than this is refused with 400: a typo in a sweep must not park a connection for
/// an hour.
inline constexpr std::uint64_t k_io_max_wait_us = 10'000'000;

struct io_service_options {
  std::string host = "127.0.0.1";  ///< loopback only: this machine allows no other traffic
  std::uint16_t port = 0;          ///< 0: an ephemeral port, reported once listening
  int threads = 1;                 ///< threads running the one io_context
  /// Listening sockets on the one port (SO_REUSEPORT), each with its own accept queue: four hold
  /// 16 384 connections not yet accepted where somaxconn is 4096, so that a burst of 10 000
  /// connects is queued, not dropped.
  int listeners = 4;
  std::chrono::milliseconds idle_timeout{30'000};  ///< a connection silent this long is closed
  /// A fault for the tests (--corrupt-task ID): the body for this task id is sent with its first
  /// byte changed, so a client's run must fail verification.
  std::optional<std::uint64_t> corrupt_task_id;
};

/// One request's parameters, from its target.
struct task_query {
  std::uint64_t id = 0;
  std::uint64_t wait_us = 0;
  std::uint64_t seed = 0;
};

/// A refused target: the HTTP status (400 or 404) and a one-line reason.
struct target_error {
  int status = 400;
  std::string reason;
};

/// Parses "/task?id=I&wait_us=W&seed=S" (the three in any order, each once, decimal).
[[nodiscard]] std::variant<task_query, target_error> parse_task_target(std::string_view target);

/// Listens on options.host:options.port, calls `on_listening(port)` once the acceptor listens, and
/// serves until SIGTERM or SIGINT; then closes the acceptor, drops the open connections and
/// returns. Throws std::system_error if it cannot bind or listen. It blocks SIGINT and SIGTERM in
/// the calling thread and reads them from a signalfd, so call it from a program's main thread
/// before any other thread starts (io_service_main.cpp does): a thread that does not block them
/// would take the signal's default action instead.
void run_io_service(const io_service_options& options,
                    const std::function<void(std::uint16_t port)>& on_listening);

}  // namespace clab
