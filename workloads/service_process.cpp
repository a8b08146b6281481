// The io_service child: started with fork + exec (not posix_spawn, because the child must ask the
// kernel to kill it when its parent dies: PR_SET_PDEATHSIG, a prctl that only the child can make),
// its port read from a pipe with a deadline, stopped with SIGTERM, then SIGKILL, and reaped.
//
// Look for: what the child does between fork and exec (only async-signal-safe calls: the parent
// may have other threads, one of which could hold malloc's lock at the fork), and why every
// descriptor is O_CLOEXEC (a lesson's other children must not inherit the service's pipe).
#include "workloads/service_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <thread>

#include "workloads/io_exchange.hpp"

namespace clab {
namespace {

/// The descriptor the child finds its end of the port pipe on (passed as --port-fd).
constexpr int k_child_port_fd = 3;

bool parse_port(std::string_view text, std::uint16_t& port) {
  unsigned value = 0;
  if (text.empty()) return false;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || value == 0 || value > 65535) {
    return false;
  }
  port = static_cast<std::uint16_t>(value);
  return true;
}

child_exit exit_of(int status) {
  child_exit e;
  if (WIFEXITED(status)) {
    e.exited = true;
    e.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    e.signal = WTERMSIG(status);
  }
  return e;
}

std::string describe(const child_exit& e) {
  if (e.exited) return "exited with status " + std::to_string(e.code);
  return "was killed by signal " + std::to_string(e.signal) + " (" + strsignal(e.signal) + ")";
}

/// In the child, before exec: only async-signal-safe calls from here on.
[[noreturn]] void exec_child(int port_fd, pid_t parent, char* const* argv) {
  // Die with the parent, even one killed by SIGKILL (which runs no destructor). The check after
  // it closes the race with a parent that died before the prctl.
  if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || ::getppid() != parent) ::_exit(126);
  // A parent may block or ignore SIGTERM (a lesson's signal thread blocks it in every thread);
  // both survive exec, and the service's clean stop needs them delivered.
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::signal(SIGTERM, SIG_DFL);
  ::signal(SIGINT, SIG_DFL);
  if (port_fd == k_child_port_fd) {
    ::fcntl(port_fd, F_SETFD, 0);                     // already in place: just let it survive exec
  } else if (::dup2(port_fd, k_child_port_fd) < 0) {  // dup2's copy is not close-on-exec
    ::_exit(126);
  }
  const int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd >= 0) {
    ::dup2(null_fd, 0);
    ::dup2(null_fd, 1);  // the service prints nothing on stdout; stderr stays the parent's
  }
  ::execv(argv[0], argv);
  // Tell the parent why, on the pipe it is reading: "exec-error ERRNO\n".
  char line[32] = "exec-error ";
  std::size_t n = std::strlen(line);
  char digits[12];
  int d = 0;
  for (int e = errno; e > 0 && d < 11; e /= 10) digits[d++] = static_cast<char>('0' + e % 10);
  while (d > 0) line[n++] = digits[--d];
  line[n++] = '\n';
  [[maybe_unused]] const ssize_t w = ::write(k_child_port_fd, line, n);
  ::_exit(127);
}

}  // namespace

std::variant<service_address, std::string> parse_service_address(std::string_view text) {
  const std::string usage =
      "wants HOST:PORT (e.g. 127.0.0.1:8080), not '" + std::string(text) + "'";
  const std::size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return usage;
  service_address a;
  a.host = std::string(text.substr(0, colon));
  for (const char c : a.host) {
    if (c == ' ' || c == '\t' || c == '/' || c == ':') return usage;
  }
  if (!parse_port(text.substr(colon + 1), a.port)) {
    return "port must be 1..65535 in '" + std::string(text) + "'";
  }
  return a;
}

std::string find_io_service() {
  if (const char* env = std::getenv("CLAB_IO_SERVICE"); env != nullptr && *env != '\0') {
    return env;
  }
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) throw std::runtime_error("cannot find io_service: /proc/self/exe is unreadable");
  const std::filesystem::path candidates[] = {self.parent_path() / "io_service",
                                              self.parent_path() / ".." / "lessons" / "io_service"};
  for (const auto& c : candidates) {
    if (::access(c.c_str(), X_OK) == 0) return c.lexically_normal().string();
  }
  throw std::runtime_error("cannot find io_service (looked at " + candidates[0].string() + " and " +
                           candidates[1].lexically_normal().string() +
                           "; build it, or set CLAB_IO_SERVICE)");
}

service_process::service_process(std::string program, std::vector<std::string> extra_args,
                                 std::chrono::milliseconds startup_timeout)
    : program_(std::move(program)) {
  if (::access(program_.c_str(), X_OK) != 0) {
    throw std::runtime_error("cannot run the io service " + program_ + ": " + std::strerror(errno));
  }
  std::array<int, 2> pipe_fds{};
  if (::pipe2(pipe_fds.data(), O_CLOEXEC) != 0) {
    throw std::runtime_error(std::string("cannot start the io service: pipe2: ") +
                             std::strerror(errno));
  }
  // Everything the child needs is built before fork: it may not allocate after.
  std::vector<std::string> args{program_, "--port-fd", std::to_string(k_child_port_fd)};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ < 0) {
    const int err = errno;
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    throw std::runtime_error(std::string("cannot start the io service: fork: ") +
                             std::strerror(err));
  }
  if (pid_ == 0) exec_child(pipe_fds[1], parent, argv.data());
  ::close(pipe_fds[1]);  // ours closed, the pipe reads EOF once the child closes or exits

  // Read one line, "PORT\n", before the deadline.
  std::string line;
  bool timed_out = false;
  const auto deadline = std::chrono::steady_clock::now() + startup_timeout;
  while (line.find('\n') == std::string::npos && line.size() < 64) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{pipe_fds[0], POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) continue;  // the deadline is checked above
    char buf[64];
    const ssize_t n = ::read(pipe_fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the child closed its end without a line, or exited
    line.append(buf, static_cast<std::size_t>(n));
  }
  ::close(pipe_fds[0]);

  std::string failure;
  const std::size_t newline = line.find('\n');
  const std::string first = line.substr(0, newline);
  if (newline != std::string::npos && first.rfind("exec-error ", 0) == 0) {
    failure = "cannot run the io service " + program_ + ": " +
              std::strerror(std::atoi(first.c_str() + 11));
  } else if (timed_out) {
    failure = "the io service " + program_ + " did not report its port within " +
              std::to_string(startup_timeout.count()) + " ms";
  } else if (newline == std::string::npos || !parse_port(first, address_.port)) {
    // Give it a moment to finish exiting, so the message can say how it ended.
    const child_exit e = stop(std::chrono::milliseconds(500));
    failure = "the io service " + program_ + " " + describe(e) + " before reporting its port" +
              (newline == std::string::npos ? std::string() : " (it said '" + first + "')");
  }
  if (!failure.empty()) {
    stop(std::chrono::milliseconds(0));  // SIGKILL now if it still runs; reaped either way
    throw std::runtime_error(failure);
  }
  address_.host = "127.0.0.1";
  note_local_service(address_.port, pid_);  // the model may read its CPU time (probe_io_costs)
}

service_process::~service_process() { stop(); }

child_exit service_process::stop(std::chrono::milliseconds grace) {
  if (ended_) return *ended_;
  if (address_.port != 0) note_local_service(address_.port, 0);
  int status = 0;
  ::kill(pid_, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  for (;;) {
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) return *(ended_ = exit_of(status));
    if (r < 0 && errno != EINTR) {  // someone else reaped it (a waitpid(-1) elsewhere)
      return *(ended_ = child_exit{});
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ::kill(pid_, SIGKILL);
  while (::waitpid(pid_, &status, 0) < 0) {
    if (errno != EINTR) return *(ended_ = child_exit{});
  }
  return *(ended_ = exit_of(status));
}

}  // namespace clab
