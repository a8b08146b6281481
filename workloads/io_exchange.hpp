// One io task's request to lesson 08's service, as a small state machine that every executor
// drives its own way: connect, send "GET /task?...", receive the reply, check it. The machine does
// the socket calls; the executor decides how to wait between them. A blocking executor gives it a
// blocking socket and the calls simply block; an event loop gives it a non-blocking one and
// watches the descriptor for the readiness that step() asks for (a fiber parks on it, a coroutine
// co_awaits it). So every executor sends the same bytes and checks the same reply, and only the
// waiting differs: which is what the lessons compare.
//
// Look for: step() (what the socket allows now, and what to wait for next), the memory per
// request (one object with its buffers inline: no allocation after construction), and
// io_checksum() (how the reply's body joins the task's checksum).
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "workloads/calibration.hpp"
#include "workloads/task.hpp"

namespace clab {

/// A request that failed: the service refused the connection, reset it, closed it before the
/// reply was whole, answered with something other than 200, or (blocking sockets) did not answer
/// in time. what() is one line that names the task and the cause ("connection reset", "service
/// stopped", "timeout").
class io_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The task's checksum: the kernel's, folded with the checksum of the reply's body for an io task
/// (the kernel's alone for any other). Verification folds the body the service should have sent.
[[nodiscard]] std::uint64_t io_checksum(const task& t, std::uint64_t kernel,
                                        std::uint64_t body_checksum);

/// The request of one io task. Usage on a non-blocking socket:
///   io_exchange ex(t);
///   for (auto w = ex.start(); w != io_exchange::want::done; w = ex.step()) wait_for(ex.fd(), w);
///   use(ex.body_checksum());
/// With blocking=true, start() does the whole exchange (each call blocks, bounded by a socket
/// timeout of the wait plus k_blocking_slack) and returns done. Not copyable or movable: an event
/// loop's callback may hold its address. Throws io_error from start() and step().
class io_exchange {
 public:
  /// What the machine needs before its next step(): the socket writable (connecting, sending),
  /// readable (the reply), or nothing more.
  enum class want : std::uint8_t { write, read, done };

  /// A blocking request waits at most the task's wait plus this for each socket call.
  static constexpr std::chrono::seconds k_blocking_slack{30};

  explicit io_exchange(const task& t, bool blocking = false);
  ~io_exchange();
  io_exchange(const io_exchange&) = delete;
  io_exchange& operator=(const io_exchange&) = delete;

  /// Opens the socket and starts connecting (then sends, as far as the socket takes it).
  [[nodiscard]] want start();
  /// Goes on after the socket became ready for what the last call asked (or after any event:
  /// a step too early just asks again).
  [[nodiscard]] want step();

  /// The socket: -1 before start() and after close(). It stays open after done, so that an event
  /// loop can unwatch it first and then call close().
  [[nodiscard]] int fd() const noexcept { return fd_; }
  /// The checksum of the reply's body (io_body_checksum), once done.
  [[nodiscard]] std::uint64_t body_checksum() const noexcept { return body_checksum_; }
  /// Closes the socket now (a cancelled or timed-out request); the destructor does it too.
  void close() noexcept;

 private:
  [[nodiscard]] want advance();
  [[nodiscard]] bool finish_connect();
  [[nodiscard]] bool send_some();
  [[nodiscard]] bool receive_some();
  [[noreturn]] void fail(const std::string& cause) const;

  enum class phase : std::uint8_t { idle, connecting, sending, receiving, finished };

  task t_;
  int fd_ = -1;
  bool blocking_ = false;
  phase phase_ = phase::idle;
  std::uint16_t request_size_ = 0;
  std::uint16_t sent_ = 0;
  std::uint16_t received_ = 0;
  std::uint64_t body_checksum_ = 0;
  std::array<char, 160> request_{};
  std::array<char, 512> reply_{};  // the whole reply: ~130 B of head and a 64 B body
};

/// The failure cause of an io task whose request was still unanswered after --task-timeout-ms
/// (every executor that can cancel a wait reports it in these words).
[[nodiscard]] std::string io_timeout_cause(std::uint32_t id, std::chrono::milliseconds limit);

/// A whole request on a blocking socket (what blocking executors do for an io task's wait);
/// returns the body's checksum. Throws io_error.
[[nodiscard]] std::uint64_t blocking_request(const task& t);

/// Probed by the model: how much longer than its wait a request takes (connect, send, the
/// service's timer lateness, the reply, close), measured from this thread with a blocking socket
/// at the overshoot curve's three lengths (medians of 5) and with no wait (9).
struct io_costs {
  overshoot_curve extra;          ///< the request's time past its wait, by the wait's length
  std::int64_t zero_wait_ns = 0;  ///< a request with wait_us=0: the bare round trip
  /// The service's own CPU time per request, when requests queue at it (bursts of 32 in flight
  /// at once, the service's CPU read from /proc); 0 where that cannot be read (a service this
  /// process did not start: see note_local_service()).
  std::int64_t service_cpu_ns = 0;
  int service_threads = 0;  ///< its threads, each serving one request at a time; 0: unknown
  /// The client's own CPU per request with no wait (this thread's CPU time over the zero-wait
  /// requests: the socket calls and the kernel's work done for them): the part of zero_wait_ns
  /// that a worker computes rather than waits.
  std::int64_t client_cpu_ns = 0;
};
[[nodiscard]] io_costs probe_io_costs(const io_endpoint& service);

/// Descriptors kept free beside an io run's sockets (the service's pipe, the loop's epoll,
/// stdio, a pool's pipes...).
inline constexpr std::size_t k_fd_reserve = 256;

/// Makes room for `connections` sockets open at once plus k_fd_reserve: raises this process's
/// soft RLIMIT_NOFILE towards the hard limit as far as needed (a child started afterwards, such as
/// the service, inherits it). Returns "" when there is room, else one line naming the number
/// needed and the hard limit.
[[nodiscard]] std::string ensure_descriptors(std::size_t connections);

/// Tells the probe that the service on 127.0.0.1:port is this process's child `pid`, whose CPU
/// time it may read (service_process does it while the child runs); pid 0 forgets the port.
void note_local_service(std::uint16_t port, int pid);

/// host (dotted IPv4 or a name) and port as an endpoint; throws std::runtime_error (one line)
/// for a name that does not resolve to an IPv4 address.
[[nodiscard]] io_endpoint resolve_endpoint(const std::string& host, std::uint16_t port);

/// "127.0.0.1:PORT".
[[nodiscard]] std::string to_string(const io_endpoint& e);

}  // namespace clab
