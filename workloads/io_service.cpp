// Lesson 08's loopback service on Boost.Asio and Boost.Beast: one io_context, a few acceptors on
// one port, and one C++20 coroutine per connection. Each connection is its own coroutine, so a slow
// client trickling its request in, or one waiting out a long timer, holds only its own frame: the
// others are read, timed and answered meanwhile. That is the model lesson 08 teaches, used here as
// the far end of its sockets.
//
// Look for: session (read a request, wait, answer, again while the client keeps the connection
// alive), wait_or_hang_up (a timer raced against the client closing its end), and the accept loop
// (a descriptor shortage pauses accepting instead of ending the server).
#include "workloads/io_service.hpp"

#include <pthread.h>
#include <sys/signalfd.h>
#include <sys/socket.h>

#include <array>
#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstdio>
#include <memory>
#include <system_error>
#include <thread>
#include <vector>

#include "workloads/io_body.hpp"

namespace clab {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;

constexpr auto as_result = asio::as_tuple(asio::use_awaitable);

bool parse_u64(std::string_view text, std::uint64_t& out) {
  if (text.empty()) return false;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc{} && end == text.data() + text.size();
}

http::response<http::string_body> make_response(http::status status, unsigned version,
                                                std::string body, bool keep_alive) {
  http::response<http::string_body> res{status, version};
  res.set(http::field::server, "clab-io");
  res.set(http::field::content_type, "text/plain");
  res.keep_alive(keep_alive);
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

/// Waits `wait` on a timer unless the client hangs up first. Returns false when it did: the
/// timer is then cancelled (the `||` cancels the loser) and the session ends without answering.
/// A client that sends its next request early (pipelining) makes the socket readable too; then
/// the bytes are left for the next read and only the timer is awaited. (A client that only
/// half-closes, shutting its sending side after the request, reads the same as one that left: TCP
/// cannot tell them apart without writing. HTTP clients do not half-close; `nc -N` does.)
asio::awaitable<bool> wait_or_hang_up(tcp::socket& socket, std::chrono::microseconds wait) {
  asio::steady_timer timer(socket.get_executor());
  timer.expires_after(wait);
  const auto first = co_await (timer.async_wait(as_result) ||
                               socket.async_wait(tcp::socket::wait_read, as_result));
  if (first.index() == 0) co_return true;  // the timer fired first
  char byte = 0;
  const ssize_t got = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) co_return false;
  // Readable with data (a pipelined request), or a spurious wake-up: wait out the rest.
  const auto [ec] = co_await timer.async_wait(as_result);
  co_return !ec;
}

/// One connection: requests answered in order while the client asks for keep-alive.
asio::awaitable<void> session(tcp::socket socket, const io_service_options& options) {
  const std::chrono::milliseconds idle = options.idle_timeout;
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(8 * 1024);
    parser.body_limit(4 * 1024);
    stream.expires_after(idle);  // a dead or stalled client is closed, not kept forever
    const auto [read_ec, read_n] = co_await http::async_read(stream, buffer, parser, as_result);
    (void)read_n;
    if (read_ec) {
      // The client left (end_of_stream, partial_message, a reset) or went silent (timeout): end
      // quietly. Anything else is a malformed request: 400, then close, since after a bad message
      // the stream has no reliable next request boundary.
      const bool malformed =
          read_ec.category() == http::make_error_code(http::error::bad_target).category() &&
          read_ec != http::error::end_of_stream && read_ec != http::error::partial_message;
      if (!malformed) co_return;
      auto res = make_response(http::status::bad_request, 11,
                               "bad request: " + read_ec.message() + "\n", false);
      stream.expires_after(idle);
      co_await http::async_write(stream, res, as_result);
      // Half-close, then drain what the client still sends for a moment: closing a socket with
      // unread bytes sends a reset, which can destroy the 400 before the client has read it.
      beast::error_code ignored;
      stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
      stream.expires_after(std::chrono::seconds(1));
      std::array<char, 4096> discard{};
      for (int i = 0; i < 16; ++i) {
        const auto [drain_ec, n] =
            co_await stream.async_read_some(asio::buffer(discard), as_result);
        if (drain_ec || n == 0) break;
      }
      co_return;
    }
    const http::request<http::string_body>& req = parser.get();
    const bool keep_alive = req.keep_alive();
    http::response<http::string_body> res;
    if (req.method() != http::verb::get) {
      res = make_response(http::status::method_not_allowed, req.version(),
                          "method not allowed: only GET\n", keep_alive);
      res.set(http::field::allow, "GET");
    } else {
      auto parsed = parse_task_target(std::string_view(req.target().data(), req.target().size()));
      if (auto* err = std::get_if<target_error>(&parsed)) {
        res = make_response(static_cast<http::status>(err->status), req.version(),
                            err->reason + "\n", keep_alive);
      } else {
        const task_query q = std::get<task_query>(parsed);
        stream.expires_never();  // the wait is the request's; the idle clock restarts after it
        const bool still_there = co_await wait_or_hang_up(
            stream.socket(), std::chrono::microseconds(static_cast<std::int64_t>(q.wait_us)));
        if (!still_there) co_return;
        std::string body = io_body(q.seed);
        // The tests' fault: one task's body arrives with one byte changed, so verification, not
        // the transport, must be what notices (the reply is still a well-formed 200).
        if (options.corrupt_task_id && *options.corrupt_task_id == q.id) body[0] ^= 1;
        res = make_response(http::status::ok, req.version(), std::move(body), keep_alive);
      }
    }
    stream.expires_after(idle);
    const auto [write_ec, write_n] = co_await http::async_write(stream, res, as_result);
    (void)write_n;
    if (write_ec || !keep_alive) {
      beast::error_code ignored;
      stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
      co_return;
    }
  }
}

/// Accepts until the acceptor is closed. Each connection gets a strand, so with --threads N its
/// coroutine never runs on two threads at once.
asio::awaitable<void> accept_loop(asio::io_context& io, tcp::acceptor& acceptor,
                                  const io_service_options& options) {
  bool warned = false;
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(asio::make_strand(io), as_result);
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) {
      // Out of descriptors (ulimit -n) or memory: say so once, pause, and accept again once the
      // open connections have had a moment to finish. The server does not stop.
      if (!warned) {
        std::fprintf(stderr, "io_service: accept failed (%s); pausing, still serving\n",
                     ec.message().c_str());
        warned = true;
      }
      asio::steady_timer pause(acceptor.get_executor(), std::chrono::milliseconds(10));
      co_await pause.async_wait(as_result);
      continue;
    }
    const auto executor = socket.get_executor();
    asio::co_spawn(executor, session(std::move(socket), options), asio::detached);
  }
}

}  // namespace

std::variant<task_query, target_error> parse_task_target(std::string_view target) {
  const std::size_t question = target.find('?');
  const std::string_view path = target.substr(0, question);
  if (path != "/task") return target_error{404, "not found: " + std::string(path) + " (try /task)"};
  if (question == std::string_view::npos) {
    return target_error{400, "bad request: /task needs ?id=I&wait_us=W&seed=S"};
  }
  std::string_view query = target.substr(question + 1);
  task_query q;
  bool have_id = false, have_wait = false, have_seed = false;
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    const std::size_t eq = pair.find('=');
    const std::string_view key = pair.substr(0, eq);
    const std::string_view value =
        eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    std::uint64_t* slot = nullptr;
    bool* seen = nullptr;
    if (key == "id") {
      slot = &q.id, seen = &have_id;
    } else if (key == "wait_us") {
      slot = &q.wait_us, seen = &have_wait;
    } else if (key == "seed") {
      slot = &q.seed, seen = &have_seed;
    } else {
      return target_error{400, "bad request: unknown parameter '" + std::string(key) + "'"};
    }
    if (*seen) return target_error{400, "bad request: '" + std::string(key) + "' given twice"};
    if (!parse_u64(value, *slot)) {
      return target_error{400, "bad request: '" + std::string(key) +
                                   "' must be a non-negative integer, not '" + std::string(value) +
                                   "'"};
    }
    *seen = true;
  }
  if (!have_id || !have_wait || !have_seed) {
    const char* missing = !have_id ? "id" : !have_wait ? "wait_us" : "seed";
    return target_error{400, std::string("bad request: missing '") + missing + "'"};
  }
  if (q.wait_us > k_io_max_wait_us) {
    return target_error{400, "bad request: wait_us " + std::to_string(q.wait_us) + " is over " +
                                 std::to_string(k_io_max_wait_us) + " (10 s)"};
  }
  return q;
}

void run_io_service(const io_service_options& options,
                    const std::function<void(std::uint16_t port)>& on_listening) {
  // SIGINT and SIGTERM are blocked here, before any thread exists (the io threads inherit the
  // mask), and read from a signalfd on the io_context: the signal stays pending in the kernel
  // until the loop reads it, so one sent at any moment, even the instant the port is reported, is
  // never lost. (An asynchronous handler writing to a self-pipe works too, but ThreadSanitizer
  // defers such handlers and could lose one sent just as the thread entered epoll_wait.)
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  if (const int err = ::pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr); err != 0) {
    throw std::system_error(err, std::generic_category(), "pthread_sigmask");
  }
  const int sfd = ::signalfd(-1, &stop_signals, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) throw std::system_error(errno, std::generic_category(), "signalfd");

  asio::io_context io(options.threads);
  asio::posix::stream_descriptor signals(io, sfd);  // owns sfd from here on
  // The acceptors share a strand of their own: with --threads N the signal handler's close must
  // not run on one thread while an accept loop touches its acceptor on another.
  const auto acceptor_strand = asio::make_strand(io);
  // Several listening sockets on one port (SO_REUSEPORT, set before bind): the kernel spreads
  // new connections over them by a hash of the client's address and port, and each has its own
  // accept queue, as long as net.core.somaxconn allows (4096 on Debian 12). Ten thousand
  // connect()s at once overflowed one queue here: the kernel dropped the handshakes it had no
  // room for and each client retried a second later (TcpExt ListenOverflows counts them).
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors;
  std::uint16_t port = options.port;  // 0 for the first: the kernel picks; the others take it
  for (int i = 0; i < options.listeners; ++i) {
    auto acceptor = std::make_unique<tcp::acceptor>(acceptor_strand);
    const tcp::endpoint endpoint(asio::ip::make_address(options.host), port);
    acceptor->open(endpoint.protocol());
    acceptor->set_option(tcp::acceptor::reuse_address(true));
    if (options.listeners > 1) {
      const int on = 1;
      if (::setsockopt(acceptor->native_handle(), SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0) {
        throw std::system_error(errno, std::generic_category(), "setsockopt SO_REUSEPORT");
      }
    }
    acceptor->bind(endpoint);
    acceptor->listen(asio::socket_base::max_listen_connections);
    port = acceptor->local_endpoint().port();
    acceptors.push_back(std::move(acceptor));
  }

  signalfd_siginfo info{};
  signals.async_read_some(asio::buffer(&info, sizeof info),
                          [&](const boost::system::error_code& ec, std::size_t) {
                            if (ec) return;
                            asio::post(acceptor_strand, [&] {
                              boost::system::error_code ignored;
                              for (auto& a : acceptors) a->close(ignored);  // no new connection
                              io.stop();  // and the open ones are dropped: the parent asked us
                            });
                          });
  for (auto& a : acceptors) {
    asio::co_spawn(acceptor_strand, accept_loop(io, *a, options), asio::detached);
  }
  on_listening(port);

  // The signal wait and the accept loop are outstanding work, so run() returns only on stop().
  std::vector<std::jthread> extra;
  for (int i = 1; i < options.threads; ++i) extra.emplace_back([&io] { io.run(); });
  io.run();
  for (std::jthread& t : extra) t.join();
}

}  // namespace clab
