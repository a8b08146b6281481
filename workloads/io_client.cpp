// The blocking client: connect, send one GET with Connection: close, read until the server closes,
// split status line, headers and body. SO_RCVTIMEO bounds each recv and a deadline the whole
// reply, so a service that stops answering fails the call instead of hanging the caller.
#include "workloads/io_client.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <stdexcept>
#include <string_view>

namespace clab {
namespace {

std::string where(const std::string& host, std::uint16_t port) {
  return host + ":" + std::to_string(port);
}

struct fd_guard {
  int fd;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

int connect_tcp(const std::string& host, std::uint16_t port, std::chrono::milliseconds timeout) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (::getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0 || found == nullptr) {
      throw std::runtime_error("cannot resolve host '" + host + "'");
    }
    addr.sin_addr = reinterpret_cast<sockaddr_in*>(found->ai_addr)->sin_addr;
    ::freeaddrinfo(found);
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);  // bounds connect too, on Linux
  while (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno == EINTR) continue;
    const int err = errno;
    ::close(fd);
    throw std::runtime_error("cannot connect to " + where(host, port) + ": " + std::strerror(err));
  }
  return fd;
}

http_reply http_get(const std::string& host, std::uint16_t port, const std::string& target,
                    std::chrono::milliseconds timeout) {
  const fd_guard sock{connect_tcp(host, port, timeout)};
  const std::string request =
      "GET " + target + " HTTP/1.1\r\nHost: " + where(host, port) + "\r\nConnection: close\r\n\r\n";
  for (std::size_t sent = 0; sent < request.size();) {
    const ssize_t n = ::send(sock.fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      throw std::runtime_error("sending to " + where(host, port) + ": " + std::strerror(errno));
    }
    sent += static_cast<std::size_t>(n);
  }
  std::string raw;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (std::chrono::steady_clock::now() > deadline) {
      throw std::runtime_error("no complete reply from " + where(host, port) + " within " +
                               std::to_string(timeout.count()) + " ms");
    }
    char buf[4096];
    const ssize_t n = ::recv(sock.fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const bool slow = errno == EAGAIN || errno == EWOULDBLOCK;
      throw std::runtime_error("reading from " + where(host, port) + ": " +
                               (slow ? std::string("timed out") : std::strerror(errno)));
    }
    if (n == 0) break;
    raw.append(buf, static_cast<std::size_t>(n));
    if (raw.size() > (1U << 20)) {
      throw std::runtime_error("reply from " + where(host, port) + " is over 1 MiB");
    }
  }

  // "HTTP/1.1 200 OK\r\n" headers "\r\n\r\n" body
  const std::size_t head_end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.", 0) != 0 || raw.size() < 12 || head_end == std::string::npos) {
    throw std::runtime_error("not an HTTP reply from " + where(host, port) + " (" +
                             std::to_string(raw.size()) + " bytes)");
  }
  http_reply reply;
  const auto [p, ec] = std::from_chars(raw.data() + 9, raw.data() + 12, reply.status);
  if (ec != std::errc{} || p != raw.data() + 12) {
    throw std::runtime_error("bad status line from " + where(host, port));
  }
  std::string body = raw.substr(head_end + 4);
  // Content-Length, where given, is the body's size (the rest would be a protocol error).
  std::string head = raw.substr(0, head_end);
  std::transform(head.begin(), head.end(), head.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (const std::size_t cl = head.find("\r\ncontent-length:"); cl != std::string::npos) {
    std::size_t i = cl + 17;
    while (i < head.size() && head[i] == ' ') ++i;
    std::size_t length = 0;
    std::from_chars(head.data() + i, head.data() + head.size(), length);
    if (length > body.size()) {
      throw std::runtime_error("reply from " + where(host, port) +
                               " cut short: " + std::to_string(body.size()) + " of " +
                               std::to_string(length) + " body bytes");
    }
    body.resize(length);
  }
  reply.body = std::move(body);
  return reply;
}

std::string http_get_task(const std::string& host, std::uint16_t port, std::uint64_t id,
                          std::uint64_t wait_us, std::uint64_t seed) {
  const std::string target = "/task?id=" + std::to_string(id) +
                             "&wait_us=" + std::to_string(wait_us) +
                             "&seed=" + std::to_string(seed);
  const auto timeout =
      std::chrono::milliseconds(static_cast<std::int64_t>(wait_us / 1000) + 30'000);
  http_reply r = http_get(host, port, target, timeout);
  if (r.status != 200) {
    std::string reason = r.body.substr(0, r.body.find('\n'));
    throw std::runtime_error("task " + std::to_string(id) + ": " + where(host, port) +
                             " answered " + std::to_string(r.status) + ": " + reason);
  }
  return std::move(r.body);
}

}  // namespace clab
