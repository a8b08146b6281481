// io_service — lesson 08's loopback HTTP/1.1 service as a program. A lesson program or the sweep
// starts it as a child (workloads/service_process.hpp) and learns its port from a pipe; a student
// can start one by hand and point `curl` or `--service 127.0.0.1:PORT` at it:
//
//   io_service --print-port            # prints the ephemeral port, serves until Ctrl-C
//   curl -s "http://127.0.0.1:PORT/task?id=1&wait_us=1000&seed=7"
//
// Look for: the startup protocol (--port-fd N: "PORT\n" written to descriptor N once listening,
// then N is closed, so the parent's read ends) and the exit statuses (0 after SIGTERM/SIGINT,
// 1 when it cannot listen, 2 for a bad flag). Nothing else is ever printed on stdout.
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <exception>
#include <string>

#include "workloads/io_service.hpp"

namespace {

/// Writes all of `text` to `fd`, retrying on EINTR and short writes.
bool write_all(int fd, const std::string& text) {
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  // A parent that died before reading the port must not kill us by SIGPIPE mid-write; and a
  // client that hung up is Asio's to report as an error, not a signal.
  std::signal(SIGPIPE, SIG_IGN);

  clab::io_service_options options;
  int port_fd = -1;
  bool print_port = false;
  int idle_timeout_s = 30;
  std::uint64_t corrupt_task = 0;
  CLI::App app{
      "Lesson 08's loopback HTTP/1.1 service: GET /task?id=I&wait_us=W&seed=S is "
      "answered after W microseconds (at most 10 s) with a 64-byte body computed from S.",
      "io_service"};
  app.add_option("--port", options.port, "TCP port on 127.0.0.1 (0: an ephemeral one)")
      ->check(CLI::Range(0, 65535));
  app.add_option("--threads", options.threads, "threads running the io_context")
      ->check(CLI::Range(1, 256));
  app.add_option("--listeners", options.listeners,
                 "listening sockets on the port (SO_REUSEPORT), each with its own accept queue")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--port-fd", port_fd,
                 "write \"PORT\\n\" to this inherited descriptor once listening, then close it")
      ->check(CLI::Range(0, 1 << 20));
  app.add_flag("--print-port", print_port, "print \"PORT\\n\" on stdout once listening");
  app.add_option("--idle-timeout-s", idle_timeout_s,
                 "close a connection that sends nothing for this long")
      ->check(CLI::Range(1, 3600));
  auto* corrupt = app.add_option("--corrupt-task", corrupt_task,
                                 "a fault for tests: send task ID's body with one byte changed");
  app.footer(
      "Stops on SIGTERM or SIGINT. Exit status: 0 stopped by a signal; 1 could not listen; 2 bad "
      "flags.");
  try {
    app.parse(argc, argv);
    if (port_fd >= 0 && ::fcntl(port_fd, F_GETFD) < 0) {
      throw CLI::ValidationError("--port-fd",
                                 std::to_string(port_fd) + " is not an open descriptor");
    }
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::string what = e.what();
    std::replace(what.begin(), what.end(), '\n', ' ');
    std::fprintf(stderr, "io_service: %s (see --help)\n", what.c_str());
    return 2;
  }
  options.idle_timeout = std::chrono::seconds(idle_timeout_s);
  if (corrupt->count() > 0) options.corrupt_task_id = corrupt_task;

  try {
    clab::run_io_service(options, [&](std::uint16_t port) {
      const std::string line = std::to_string(port) + "\n";
      if (print_port) {
        std::fputs(line.c_str(), stdout);
        std::fflush(stdout);
      }
      if (port_fd >= 0) {
        // If the parent is gone there is no one to serve: the write fails and so do we.
        if (!write_all(port_fd, line)) throw std::runtime_error("could not write the port");
        ::close(port_fd);
      }
    });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "io_service: cannot serve on %s:%u: %s\n", options.host.c_str(),
                 static_cast<unsigned>(options.port), e.what());
    return 1;
  }
  return 0;
}
