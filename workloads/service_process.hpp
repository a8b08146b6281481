// Lesson 08's service as a child process: a lesson program or the sweep that needs the loopback
// HTTP service starts its own io_service, learns the port from a pipe, and stops and reaps it
// when it is done — on a normal exit, on an exception (the destructor) and, because the child
// is told to die with its parent, even when the parent is killed. (The kernel ties that to the
// thread that started the child: make a service_process on a thread that outlives it, such as
// main's, not on a pool worker that may exit first.)
//
// Look for: service_process (start: fork, exec, read "PORT\n" with a deadline; stop: SIGTERM, a
// grace period, SIGKILL, waitpid), and parse_service_address (what `--service HOST:PORT` accepts:
// a service already running, which nobody starts or stops for you).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace clab {

/// Where an HTTP service listens.
struct service_address {
  std::string host;
  std::uint16_t port = 0;
};

/// "HOST:PORT" (a dotted IPv4 address or a name, a port 1..65535) → the address, or a one-line
/// reason it is refused.
[[nodiscard]] std::variant<service_address, std::string> parse_service_address(
    std::string_view text);

/// How a child ended, from waitpid.
struct child_exit {
  bool exited = false;  ///< it called exit (then `code`), else a signal killed it (then `signal`)
  int code = -1;
  int signal = 0;
};

/// The io_service program: $CLAB_IO_SERVICE if set, else `io_service` next to this program, else
/// in ../lessons from it (where the build puts it, for the benchmarks and tests). Throws
/// std::runtime_error naming the places looked at when none is an executable file.
[[nodiscard]] std::string find_io_service();

/// A running io_service child, stopped and reaped by the destructor (or by stop()).
class service_process {
 public:
  /// Starts `program` (an io_service) with `--port-fd N` and `extra_args`, and waits at most
  /// `startup_timeout` for its port. Throws std::runtime_error (one line: the program, and what
  /// went wrong: it could not be run, it exited, it said nothing in time) — with no child left.
  explicit service_process(std::string program = find_io_service(),
                           std::vector<std::string> extra_args = {},
                           std::chrono::milliseconds startup_timeout = std::chrono::seconds(20));
  ~service_process();
  service_process(const service_process&) = delete;
  service_process& operator=(const service_process&) = delete;

  [[nodiscard]] const std::string& host() const { return address_.host; }
  [[nodiscard]] std::uint16_t port() const { return address_.port; }
  [[nodiscard]] const service_address& address() const { return address_; }
  [[nodiscard]] pid_t pid() const { return pid_; }

  /// SIGTERM, up to `grace` for it to exit, then SIGKILL; reaps it and says how it ended. Calling
  /// it again returns the same answer.
  child_exit stop(std::chrono::milliseconds grace = std::chrono::seconds(5));

 private:
  std::string program_;
  service_address address_;
  pid_t pid_ = -1;
  std::optional<child_exit> ended_;
};

}  // namespace clab
