// A minimal blocking HTTP/1.1 client for lesson 08's service: one connection per request, plain
// POSIX sockets, every call bounded by a deadline. It is the blocking baseline (a thread per
// request waits in recv) and the tests' probe; the asynchronous executors have their own.
//
// Look for: http_get_task (the request a task makes, the body it returns), and http_get (status
// and body for any target, for the tests of 400s and 404s).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace clab {

struct http_reply {
  int status = 0;
  std::string body;
};

/// A connected TCP socket to host:port (IPv4 dotted or a name), SOCK_CLOEXEC, with send and
/// receive timeouts of `timeout`. Throws std::runtime_error (one line) when it cannot connect.
[[nodiscard]] int connect_tcp(const std::string& host, std::uint16_t port,
                              std::chrono::milliseconds timeout = std::chrono::seconds(30));

/// GET `target` with Connection: close; the reply's status and body. Throws std::runtime_error on
/// a socket error, a timeout, or a reply that is not HTTP.
[[nodiscard]] http_reply http_get(const std::string& host, std::uint16_t port,
                                  const std::string& target,
                                  std::chrono::milliseconds timeout = std::chrono::seconds(30));

/// GET /task?id=..&wait_us=..&seed=..; the body (io_body(seed) from a correct service). Throws
/// std::runtime_error on anything but 200, with the status and the service's one-line reason.
/// The timeout is the wait plus 30 s.
[[nodiscard]] std::string http_get_task(const std::string& host, std::uint16_t port,
                                        std::uint64_t id, std::uint64_t wait_us,
                                        std::uint64_t seed);

}  // namespace clab
