// Boost.Fiber's work_stealing scheduler can be set up only once per process (see the comment at the
// top of boost_fiber.cpp for what breaks and the evidence). run_in_child() gives each set of
// work_stealing threads a process of its own: a fork, whose copy of Boost.Fiber's static state is
// still untouched, so long as the parent itself never constructs a work_stealing scheduler. Used by
// the boost-fiber executor and by the skynet rows of bench_units. Look for: the child reports
// through a pipe in fixed-size messages, and a stop in the parent reaches it through a second one.
#pragma once

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <stdexcept>
#include <stop_token>
#include <type_traits>
#include <utility>

namespace clab {

/// The child's end of run_in_child(): send() writes one message to the parent; stop_fd() turns
/// readable (one byte) once the parent's stop token is requested, or at EOF if the parent is gone.
template <class Message>
class child_channel {
 public:
  child_channel(int out_fd, int stop_fd) : out_(out_fd), stop_(stop_fd) {}

  /// One whole message; a write of at most PIPE_BUF bytes is atomic, so threads may share it.
  void send(const Message& m) const {
    const char* p = reinterpret_cast<const char*>(&m);
    std::size_t left = sizeof m;
    while (left > 0) {
      const ssize_t n = ::write(out_, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) _exit(4);  // the parent is gone: nobody to report to
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  }
  [[nodiscard]] int stop_fd() const { return stop_; }

 private:
  int out_;
  int stop_;
};

/// How the child ended: its exit status, or the signal that killed it (0 if none).
struct child_end {
  int exit_status = -1;
  int signal = 0;
};

/// Forks; the child runs body(child_channel<Message>&) and _exit(0)s (no atexit handlers, no stdio
/// flush: those belong to the parent). The parent passes each message to on_message(const
/// Message&) as it arrives, until the child closes its end, then reaps it. A request on `stop`
/// writes one byte to the child's stop pipe. Throws std::runtime_error if pipe() or fork() fails.
template <class Message, class Body, class OnMessage>
child_end run_in_child(Body&& body, OnMessage&& on_message, const std::stop_token& stop = {}) {
  static_assert(std::is_trivially_copyable_v<Message>, "messages are copied as bytes");
  int up[2];    // child → parent: messages
  int down[2];  // parent → child: the stop byte
  if (::pipe2(up, O_CLOEXEC) != 0) throw std::runtime_error("run_in_child: pipe2 failed");
  if (::pipe2(down, O_CLOEXEC) != 0) {
    ::close(up[0]);
    ::close(up[1]);
    throw std::runtime_error("run_in_child: pipe2 failed");
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    for (const int fd : {up[0], up[1], down[0], down[1]}) ::close(fd);
    throw std::runtime_error("run_in_child: fork failed");
  }
  if (pid == 0) {
    ::close(up[0]);
    ::close(down[1]);
    try {
      child_channel<Message> channel(up[1], down[0]);
      std::forward<Body>(body)(channel);
    } catch (...) {
      _exit(3);
    }
    _exit(0);
  }
  ::close(up[1]);
  child_end end;
  {
    // The parent keeps the read end of `down` open until the callback is gone, so the stop byte
    // can never meet a closed pipe (which would raise SIGPIPE here).
    const std::stop_callback on_stop(stop, [fd = down[1]] {
      const char byte = 1;
      while (::write(fd, &byte, 1) < 0 && errno == EINTR) {
      }
    });
    Message m;
    std::size_t have = 0;
    for (;;) {
      const ssize_t n = ::read(up[0], reinterpret_cast<char*>(&m) + have, sizeof m - have);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;  // EOF: the child has finished (or died)
      have += static_cast<std::size_t>(n);
      if (have == sizeof m) {
        on_message(std::as_const(m));
        have = 0;
      }
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status)) end.exit_status = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) end.signal = WTERMSIG(status);
  }
  for (const int fd : {up[0], down[0], down[1]}) ::close(fd);
  return end;
}

}  // namespace clab
