// The io task's request as a state machine over one socket. Each phase makes the socket calls it
// can and says what it needs next; with a non-blocking socket "needs" means EINPROGRESS or EAGAIN,
// with a blocking one the calls wait themselves and EAGAIN means the socket timeout ran out.
#include "workloads/io_exchange.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string_view>
#include <tuple>
#include <vector>

#include "workloads/io_body.hpp"
#include "workloads/stats.hpp"

namespace clab {
namespace {

std::string_view lower_find_value(std::string_view head, std::string_view name) {
  // The header `name` (lowercase, with its colon) anywhere after the status line, any case.
  for (std::size_t at = head.find("\r\n"); at != std::string_view::npos;
       at = head.find("\r\n", at + 2)) {
    const std::string_view line = head.substr(at + 2, head.find("\r\n", at + 2) - (at + 2));
    if (line.size() < name.size()) continue;
    bool same = true;
    for (std::size_t i = 0; i < name.size() && same; ++i) {
      same = std::tolower(static_cast<unsigned char>(line[i])) == name[i];
    }
    if (!same) continue;
    std::string_view value = line.substr(name.size());
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    return value;
  }
  return {};
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

io_endpoint resolve_endpoint(const std::string& host, std::uint16_t port) {
  in_addr a{};
  if (::inet_pton(AF_INET, host.c_str(), &a) != 1) {
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (::getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0 || found == nullptr) {
      throw std::runtime_error("cannot resolve host '" + host + "' to an IPv4 address");
    }
    a = reinterpret_cast<sockaddr_in*>(found->ai_addr)->sin_addr;
    ::freeaddrinfo(found);
  }
  return {ntohl(a.s_addr), port};
}

std::string to_string(const io_endpoint& e) {
  const in_addr a{htonl(e.ipv4)};
  char text[INET_ADDRSTRLEN] = "?";
  ::inet_ntop(AF_INET, &a, text, sizeof text);
  return std::string(text) + ":" + std::to_string(e.port);
}

std::uint64_t io_checksum(const task& t, std::uint64_t kernel, std::uint64_t body_checksum) {
  return t.is_io() ? kernel ^ splitmix64(body_checksum) : kernel;
}

io_exchange::io_exchange(const task& t, bool blocking) : t_(t), blocking_(blocking) {
  const int n = std::snprintf(
      request_.data(), request_.size(),
      "GET /task?id=%u&wait_us=%llu&seed=%llu HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
      static_cast<unsigned>(t.id),
      static_cast<unsigned long long>(std::max<std::int64_t>(0, t.wait_ns) / 1000),
      static_cast<unsigned long long>(t.seed), to_string(t.io).c_str());
  if (n <= 0 || static_cast<std::size_t>(n) >= request_.size()) fail("request does not fit");
  request_size_ = static_cast<std::uint16_t>(n);
}

io_exchange::~io_exchange() { close(); }

void io_exchange::close() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void io_exchange::fail(const std::string& cause) const {
  throw io_error("task " + std::to_string(t_.id) + ": " + cause);
}

io_exchange::want io_exchange::start() {
  if (phase_ != phase::idle) fail("start() called twice");
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (blocking_ ? 0 : SOCK_NONBLOCK), 0);
  if (fd_ < 0) {
    const int err = errno;
    fail(std::string("cannot open a socket: ") + std::strerror(err) +
         (err == EMFILE || err == ENFILE ? " (raise the descriptor limit: ulimit -n)" : ""));
  }
  if (blocking_) {
    const auto limit =
        std::chrono::microseconds(std::max<std::int64_t>(0, t_.wait_ns) / 1000) + k_blocking_slack;
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(limit.count() / 1'000'000);
    tv.tv_usec = static_cast<suseconds_t>(limit.count() % 1'000'000);
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);  // bounds connect too, on Linux
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(t_.io.port);
  addr.sin_addr.s_addr = htonl(t_.io.ipv4);
  phase_ = phase::connecting;
  if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
    phase_ = phase::sending;
  } else if (errno != EINPROGRESS && errno != EINTR) {
    const int err = errno;
    fail("cannot connect to the service at " + to_string(t_.io) + ": " + std::strerror(err) +
         (err == ECONNREFUSED ? " (service stopped or not running)" : ""));
  } else if (blocking_) {
    // Interrupted: the connection goes on in the background; wait for it as a loop would.
    pollfd p{fd_, POLLOUT, 0};
    while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
  }
  return advance();
}

io_exchange::want io_exchange::step() {
  if (phase_ == phase::idle) fail("step() before start()");
  return advance();
}

io_exchange::want io_exchange::advance() {
  for (;;) {
    switch (phase_) {
      case phase::idle:
      case phase::connecting:
        if (!finish_connect()) return want::write;
        phase_ = phase::sending;
        break;
      case phase::sending:
        if (!send_some()) return want::write;
        phase_ = phase::receiving;
        break;
      case phase::receiving:
        if (!receive_some()) return want::read;
        phase_ = phase::finished;
        break;
      case phase::finished:
        return want::done;
    }
  }
}

bool io_exchange::finish_connect() {
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err == 0) {
    // Still in progress reads as no error too: a peer address tells the two apart.
    sockaddr_in peer{};
    socklen_t plen = sizeof peer;
    if (::getpeername(fd_, reinterpret_cast<sockaddr*>(&peer), &plen) == 0) return true;
    if (errno == ENOTCONN) return false;
    err = errno;
  }
  fail("cannot connect to the service at " + to_string(t_.io) + ": " + std::strerror(err) +
       (err == ECONNREFUSED ? " (service stopped or not running)" : ""));
}

bool io_exchange::send_some() {
  while (sent_ < request_size_) {
    const ssize_t n = ::send(fd_, request_.data() + sent_, request_size_ - sent_, MSG_NOSIGNAL);
    if (n > 0) {
      sent_ = static_cast<std::uint16_t>(sent_ + n);
      continue;
    }
    const int err = errno;
    if (n < 0 && err == EINTR) continue;
    if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK)) {
      if (blocking_) fail("timeout: the service at " + to_string(t_.io) + " took no request");
      return false;
    }
    fail(err == EPIPE || err == ECONNRESET
             ? "connection reset by the service at " + to_string(t_.io) + " (service stopped?)"
             : "sending to the service: " + std::string(std::strerror(err)));
  }
  return true;
}

bool io_exchange::receive_some() {
  for (;;) {
    if (received_ == reply_.size()) fail("the service's reply is over 512 bytes");
    const ssize_t n = ::recv(fd_, reply_.data() + received_, reply_.size() - received_, 0);
    if (n < 0) {
      const int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) {
        if (blocking_) {
          fail("timeout: no reply from the service at " + to_string(t_.io) + " within " +
               std::to_string((t_.wait_ns / 1'000'000'000) + k_blocking_slack.count()) + " s");
        }
        return false;
      }
      fail(err == ECONNRESET
               ? "connection reset by the service at " + to_string(t_.io) + " (service stopped?)"
               : "reading from the service: " + std::string(std::strerror(err)));
    }
    if (n == 0) {
      fail("service stopped: the connection closed after " + std::to_string(received_) +
           " bytes of the reply");
    }
    received_ = static_cast<std::uint16_t>(received_ + n);

    // Whole yet? "HTTP/1.1 200 OK\r\n" headers "\r\n\r\n" body of Content-Length bytes.
    const std::string_view got(reply_.data(), received_);
    const std::size_t head_end = got.find("\r\n\r\n");
    if (head_end == std::string_view::npos) continue;
    const std::string_view head = got.substr(0, head_end);
    int status = 0;
    if (head.size() < 12 || head.substr(0, 7) != "HTTP/1." ||
        std::from_chars(head.data() + 9, head.data() + 12, status).ptr != head.data() + 12) {
      fail("the service's reply is not HTTP");
    }
    const std::string_view length_text = lower_find_value(head, "content-length:");
    std::size_t length = 0;
    if (length_text.empty() ||
        std::from_chars(length_text.data(), length_text.data() + length_text.size(), length).ec !=
            std::errc{}) {
      fail("the service's reply has no Content-Length");
    }
    const std::size_t whole = head_end + 4 + length;
    if (whole > reply_.size()) fail("the service's reply is over 512 bytes");
    if (received_ < whole) continue;
    const std::string_view body = got.substr(head_end + 4, length);
    if (status != 200) {
      fail("the service answered " + std::to_string(status) + ": " +
           std::string(body.substr(0, body.find('\n'))));
    }
    body_checksum_ = io_body_checksum(body);
    return true;
  }
}

std::string io_timeout_cause(std::uint32_t id, std::chrono::milliseconds limit) {
  return "timeout: task " + std::to_string(id) + " had no reply from the service within " +
         std::to_string(limit.count()) + " ms (--task-timeout-ms)";
}

std::uint64_t blocking_request(const task& t) {
  io_exchange ex(t, /*blocking=*/true);
  for (auto w = ex.start(); w != io_exchange::want::done; w = ex.step()) {
    pollfd p{ex.fd(), static_cast<short>(w == io_exchange::want::read ? POLLIN : POLLOUT), 0};
    while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
  }
  return ex.body_checksum();
}

namespace {

/// This thread's CPU time (user and system), in ns.
std::int64_t thread_cpu_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

std::mutex local_services_mutex;
std::map<std::uint16_t, int> local_services;  // loopback port → our child's pid

/// The CPU time all threads of process `pid` have run, in ns (schedstat's first field, the
/// scheduler's own nanosecond account), and how many threads it has; {-1, 0} if unreadable.
std::pair<std::int64_t, int> process_cpu_ns(int pid) {
  std::int64_t sum = 0;
  int threads = 0;
  std::error_code ec;
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::ifstream in(it->path() / "schedstat");
    long long ns = 0;
    if (!(in >> ns)) return {-1, 0};
    sum += ns;
    ++threads;
  }
  if (ec || threads == 0) return {-1, 0};
  return {sum, threads};
}

/// `k` zero-wait requests in flight at once from this thread, driven by poll(): they queue at
/// the service as a run's concurrent requests do. Throws io_error on a failure or after 10 s.
void burst_of_requests(const task& proto, int k) {
  std::vector<std::unique_ptr<io_exchange>> ex;
  std::vector<io_exchange::want> need;
  for (int i = 0; i < k; ++i) {
    ex.push_back(std::make_unique<io_exchange>(proto, false));
    need.push_back(ex.back()->start());
  }
  const std::int64_t deadline = now_ns() + 10'000'000'000;
  std::vector<pollfd> fds;
  std::vector<std::size_t> which;
  for (;;) {
    fds.clear();
    which.clear();
    for (std::size_t i = 0; i < ex.size(); ++i) {
      if (need[i] == io_exchange::want::done) continue;
      const short events = need[i] == io_exchange::want::write ? POLLOUT : POLLIN;
      fds.push_back({ex[i]->fd(), events, 0});
      which.push_back(i);
    }
    if (fds.empty()) return;
    if (now_ns() > deadline) throw io_error("timeout: the service's probe burst took over 10 s");
    const int n = ::poll(fds.data(), fds.size(), 1000);
    if (n < 0 && errno != EINTR) throw io_error(std::string("poll: ") + std::strerror(errno));
    for (std::size_t f = 0; n > 0 && f < fds.size(); ++f) {
      if (fds[f].revents != 0) need[which[f]] = ex[which[f]]->step();
    }
  }
}

}  // namespace

std::string ensure_descriptors(std::size_t connections) {
  const std::size_t needed = connections + k_fd_reserve;
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0)
    return std::string("getrlimit: ") + std::strerror(errno);
  if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur >= needed) return "";
  if (lim.rlim_max != RLIM_INFINITY && lim.rlim_max < needed) {
    return std::to_string(connections) + " connections at once need " + std::to_string(needed) +
           " descriptors, and the hard limit is " + std::to_string(lim.rlim_max) +
           " (ulimit -Hn; raise it as root, or ask for fewer)";
  }
  lim.rlim_cur = needed;
  if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) {
    return "cannot raise the descriptor limit to " + std::to_string(needed) + ": " +
           std::strerror(errno);
  }
  return "";
}

void note_local_service(std::uint16_t port, int pid) {
  const std::lock_guard lock(local_services_mutex);
  if (pid > 0) {
    local_services[port] = pid;
  } else {
    local_services.erase(port);
  }
}

io_costs probe_io_costs(const io_endpoint& service) {
  static std::mutex mutex;
  static std::map<std::tuple<std::uint32_t, std::uint16_t, int>, io_costs> cache;
  const std::lock_guard lock(mutex);
  int pid = 0;
  if (service.ipv4 == 0x7F000001) {
    const std::lock_guard services(local_services_mutex);
    if (const auto it = local_services.find(service.port); it != local_services.end()) {
      pid = it->second;
    }
  }
  const auto key = std::make_tuple(service.ipv4, service.port, pid);
  if (const auto it = cache.find(key); it != cache.end()) return it->second;
  task t;
  t.io = service;
  t.seed = 1;
  // Back-to-back requests run warm (on the development VM about 115 µs each with no wait); after
  // an idle pause, as a wait is, the first ones take 2-3 times that (the cores had gone to sleep).
  // So the zero-wait point is taken after ten warm-ups and the others after one, each in the
  // rhythm that the tasks it models will have.
  std::vector<std::int64_t> client_cpu;
  const auto extra_at = [&](std::int64_t wait_ns) {
    t.wait_ns = wait_ns;
    std::vector<std::int64_t> extra;
    for (int warm = wait_ns == 0 ? 10 : 1; warm > 0; --warm) (void)blocking_request(t);
    for (int rep = 0; rep < (wait_ns == 0 ? 9 : 5); ++rep) {
      const std::int64_t begin = now_ns();
      const std::int64_t cpu_begin = thread_cpu_ns();
      (void)blocking_request(t);
      extra.push_back(std::max<std::int64_t>(0, now_ns() - begin - wait_ns));
      if (wait_ns == 0) client_cpu.push_back(thread_cpu_ns() - cpu_begin);
    }
    return median(std::move(extra));
  };
  io_costs c;
  c.zero_wait_ns = extra_at(0);
  c.client_cpu_ns = std::min(c.zero_wait_ns, median(std::move(client_cpu)));
  for (std::size_t l = 0; l < overshoot_curve::k_lengths_ns.size(); ++l) {
    c.extra.overshoot_ns[l] = extra_at(overshoot_curve::k_lengths_ns[l]);
  }
  // The service's CPU per request: what it ran during bursts of 32 requests, over 32 (median of
  // three). Concurrent requests queue behind it; one after another they do not.
  if (pid > 0) {
    constexpr int k_burst = 32;
    t.wait_ns = 0;
    std::vector<std::int64_t> per_request;
    int threads = 0;
    for (int rep = 0; rep < 3; ++rep) {
      const auto before = process_cpu_ns(pid);
      burst_of_requests(t, k_burst);
      const auto after = process_cpu_ns(pid);
      if (before.first < 0 || after.first < before.first) break;
      per_request.push_back((after.first - before.first) / k_burst);
      threads = after.second;
    }
    if (per_request.size() == 3) {
      c.service_cpu_ns = median(std::move(per_request));
      c.service_threads = threads;
    }
  }
  cache.emplace(key, c);
  return c;
}

}  // namespace clab
