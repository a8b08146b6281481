// Child processes for tasks: pipes, fork and posix_spawn, reaping, and the event loop of the
// parent (child_set). Every system call that a signal can interrupt is retried after EINTR, every
// child is waited for, and every descriptor is closed on every path.
#include "workloads/process_io.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "workloads/execute.hpp"

extern char** environ;

namespace clab {
namespace {

template <typename T>
std::span<const std::byte> bytes_of(const T& x) {
  return std::as_bytes(std::span<const T, 1>(&x, 1));
}
template <typename T>
std::span<std::byte> bytes_of(T& x) {
  return std::as_writable_bytes(std::span<T, 1>(&x, 1));
}

struct pipe_ends {
  int read = -1;
  int write = -1;
};

pipe_ends make_pipe() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
  return {fds[0], fds[1]};
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);  // not retried after EINTR: on Linux the descriptor is gone anyway
  fd = -1;
}

int wait_for(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return 0;  // ECHILD: someone else reaped it (SIGCHLD set to SIG_IGN)
  }
  return status;
}

// The self-pipe of catch_termination(): the handler writes one byte, child_set polls the read end.
int g_termination_pipe[2] = {-1, -1};
volatile sig_atomic_t g_termination_signal = 0;

extern "C" void on_termination(int sig) {
  const int saved = errno;
  g_termination_signal = sig;
  const char byte = 1;
  [[maybe_unused]] const ssize_t ignored = ::write(g_termination_pipe[1], &byte, 1);
  errno = saved;
}

/// write_all() with SIGPIPE blocked for this thread: a worker that died since its last report must
/// not take the parent with it. A SIGPIPE raised meanwhile is taken off the pending set.
bool write_without_sigpipe(int fd, std::span<const std::byte> bytes) {
  sigset_t pipe_only;
  sigset_t old;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
  const bool ok = write_all(fd, bytes);
  if (!ok && errno == EPIPE && sigismember(&old, SIGPIPE) == 0) {
    const timespec zero{};
    while (sigtimedwait(&pipe_only, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return ok;
}

}  // namespace

task_report run_to_report(const task& t, run_clock::time_point origin, int worker) {
  task_report r;
  r.record.id = t.id;
  r.record.worker = worker;
  try {
    r.record = run_blocking(t, origin, worker);
    r.completed = 1;
  } catch (...) {
    const std::string cause = describe_current_exception();
    const std::size_t n = std::min(cause.size(), r.cause.size() - 1);
    std::memcpy(r.cause.data(), cause.data(), n);
    r.cause[n] = '\0';
  }
  return r;
}

std::int64_t to_ns(run_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

run_clock::time_point from_ns(std::int64_t ns) {
  return run_clock::time_point(
      std::chrono::duration_cast<run_clock::duration>(std::chrono::nanoseconds(ns)));
}

bool write_all(int fd, std::span<const std::byte> bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    bytes = bytes.subspan(static_cast<std::size_t>(n));
  }
  return true;
}

std::size_t read_all(int fd, std::span<std::byte> bytes) {
  std::size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + got, bytes.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  return got;
}

std::string describe_wait_status(int status) {
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* abbrev = sigabbrev_np(sig);
    return abbrev != nullptr ? "killed by SIG" + std::string(abbrev)
                             : "killed by signal " + std::to_string(sig);
  }
  if (WIFEXITED(status)) {
    return "exited with status " + std::to_string(WEXITSTATUS(status)) + " before it answered";
  }
  return "ended with wait status " + std::to_string(status);
}

void prepare_forked_child(pid_t parent, std::span<const int> keep) {
  // Every signal back to its default action, as exec would do: a crash must kill the child
  // (the parent reads the signal from waitpid), not run a handler copied from the parent (a test
  // framework's, say, which would report a failure from inside the child).
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, nullptr);  // EINVAL for libc's own
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  // The death signal comes when the thread that forked us ends: our launcher waits for every
  // child before it returns, so that thread outlives us.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(1);  // the parent died before prctl took effect
  rlimit core{};
  if (getrlimit(RLIMIT_CORE, &core) == 0) {
    core.rlim_cur = 0;
    setrlimit(RLIMIT_CORE, &core);
  }
  // Close everything from 3 up except `keep`, in the gaps between the kept descriptors.
  int kept[2] = {-1, -1};
  std::size_t nk = 0;
  for (int fd : keep) {
    if (fd >= 3 && nk < 2) kept[nk++] = fd;
  }
  if (nk == 2 && kept[0] > kept[1]) std::swap(kept[0], kept[1]);
  unsigned from = 3;
  for (std::size_t i = 0; i < nk; ++i) {
    const auto fd = static_cast<unsigned>(kept[i]);
    if (fd > from) close_range(from, fd - 1, 0);
    from = fd + 1;
  }
  close_range(from, ~0U, 0);
}

child_process fork_child(child_body body, void* context, bool with_task_pipe) {
  pipe_ends reports = make_pipe();
  pipe_ends tasks;
  if (with_task_pipe) {
    try {
      tasks = make_pipe();
    } catch (...) {
      close_fd(reports.read);
      close_fd(reports.write);
      throw;
    }
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    const int error = errno;
    for (int* fd : {&reports.read, &reports.write, &tasks.read, &tasks.write}) close_fd(*fd);
    throw std::system_error(error, std::generic_category(), "fork");
  }
  if (pid == 0) {  // the child: async-signal-safe calls until body() runs the task
    const int keep[2] = {tasks.read, reports.write};
    prepare_forked_child(parent, keep);
    body(tasks.read, reports.write, context);
    _exit(0);  // not exit(): no atexit handlers or static destructors of the parent's copy
  }
  close_fd(reports.write);
  close_fd(tasks.read);
  return {.pid = pid, .to_child = tasks.write, .from_child = reports.read};
}

child_process spawn_child(const std::string& program) {
  pipe_ends tasks = make_pipe();
  pipe_ends reports;
  try {
    reports = make_pipe();
  } catch (...) {
    close_fd(tasks.read);
    close_fd(tasks.write);
    throw;
  }
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_adddup2(&files, tasks.read, 0);
  posix_spawn_file_actions_adddup2(&files, reports.write, 1);
  posix_spawn_file_actions_addclosefrom_np(&files, 3);  // ours are O_CLOEXEC; anyone else's too
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t defaults;
  sigemptyset(&defaults);
  for (int sig : {SIGINT, SIGTERM, SIGPIPE}) sigaddset(&defaults, sig);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  std::string arg0 = program;
  char* argv[] = {arg0.data(), nullptr};
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, program.c_str(), &files, &attr, argv, environ);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&files);
  close_fd(tasks.read);
  close_fd(reports.write);
  if (rc != 0) {
    close_fd(tasks.write);
    close_fd(reports.read);
    throw std::system_error(rc, std::generic_category(), "posix_spawn " + program);
  }
  return {.pid = pid, .to_child = tasks.write, .from_child = reports.read};
}

int close_and_reap(child_process& c) {
  close_fd(c.to_child);
  close_fd(c.from_child);
  const int status = c.pid > 0 ? wait_for(c.pid) : 0;
  c.pid = -1;
  return status;
}

int kill_and_reap(child_process& c) {
  if (c.pid > 0) ::kill(c.pid, SIGKILL);
  return close_and_reap(c);
}

// ---- child_set ----

void child_set::attach(std::size_t k, child_process c) {
  slot& s = slots_.at(k);
  if (s.child.pid > 0) throw std::logic_error("child_set::attach: slot is taken");
  s = slot{.child = c};
  ++live_;
}

void child_set::running(std::size_t k, std::uint32_t id,
                        std::optional<std::chrono::milliseconds> timeout) {
  slot& s = slots_.at(k);
  s.task = id;
  s.timeout = timeout.value_or(std::chrono::milliseconds(0));
  s.deadline = timeout ? run_clock::now() + *timeout : run_clock::time_point::max();
}

bool child_set::send(std::size_t k, const task_message& m,
                     std::optional<std::chrono::milliseconds> timeout) {
  running(k, m.work.id, timeout);
  return write_without_sigpipe(slots_.at(k).child.to_child, bytes_of(m));
}

void child_set::end(std::size_t k, int status, event::kind what) {
  slot& s = slots_[k];
  event e;
  e.what = what;
  e.slot = k;
  e.task = s.task;
  if (s.task) {
    e.cause = what == event::kind::timed_out
                  ? "timeout after " + std::to_string(s.timeout.count()) + " ms"
                  : describe_wait_status(status);
  }
  s = slot{};
  --live_;
  ready_.push_back(std::move(e));
}

void child_set::read_from(std::size_t k) {
  slot& s = slots_[k];
  event e;
  if (read_all(s.child.from_child, bytes_of(e.report)) == sizeof e.report) {
    e.what = event::kind::report;
    e.slot = k;
    e.task = s.task;
    s.task.reset();
    s.deadline = run_clock::time_point::max();
    ready_.push_back(std::move(e));
    return;
  }
  // End of file: every copy of the write end is closed, so the child has exited or died.
  const int status = close_and_reap(s.child);
  end(k, status, event::kind::ended);
}

void child_set::poll_once(std::optional<run_clock::time_point> until) {
  std::vector<pollfd> fds;
  std::vector<std::size_t> slot_of;
  fds.reserve(live_ + 1);
  run_clock::time_point wake = until.value_or(run_clock::time_point::max());
  for (std::size_t k = 0; k < slots_.size(); ++k) {
    if (slots_[k].child.pid <= 0) continue;
    fds.push_back({slots_[k].child.from_child, POLLIN, 0});
    slot_of.push_back(k);
    wake = std::min(wake, slots_[k].deadline);
  }
  const int termination = g_termination_pipe[0];
  if (termination >= 0) fds.push_back({termination, POLLIN, 0});
  // A signal caught before this set existed (its byte already drained by another set, or still
  // in the pipe) is reported too, without blocking.
  const bool signal_pending = g_termination_signal != 0 && !interrupt_reported_;
  if (signal_pending) wake = run_clock::now();

  timespec ts{};
  const timespec* timeout = nullptr;
  if (wake != run_clock::time_point::max()) {
    const auto left = std::max(run_clock::duration::zero(), wake - run_clock::now());
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
    ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
    timeout = &ts;
  }
  if (ppoll(fds.data(), fds.size(), timeout, nullptr) < 0 && errno != EINTR) {
    throw std::system_error(errno, std::generic_category(), "ppoll");
  }
  for (std::size_t i = 0; i < slot_of.size(); ++i) {
    if (fds[i].revents != 0) read_from(slot_of[i]);  // a report first, even at the deadline
  }
  const auto now = run_clock::now();
  for (std::size_t k = 0; k < slots_.size(); ++k) {
    slot& s = slots_[k];
    if (s.child.pid > 0 && s.task && s.deadline <= now) {
      const int status = kill_and_reap(s.child);
      end(k, status, event::kind::timed_out);
    }
  }
  if (termination >= 0 && fds.back().revents != 0) {
    // Drain the self-pipe: it is level-triggered, and a byte left in it would wake every later
    // poll at once (a busy loop of `interrupted` events).
    char drain[64];
    while (::read(termination, drain, sizeof drain) > 0) {
    }
  }
  if (g_termination_signal != 0 && !interrupt_reported_) {
    interrupt_reported_ = true;
    event e;
    e.what = event::kind::interrupted;
    ready_.push_back(std::move(e));
  }
}

bool child_set::outstanding() const {
  return !ready_.empty() || std::any_of(slots_.begin(), slots_.end(),
                                        [](const slot& s) { return s.task.has_value(); });
}

child_set::event child_set::next() {
  while (ready_.empty()) {
    if (live_ == 0 && (g_termination_pipe[0] < 0 || interrupt_reported_)) {
      throw std::logic_error("child_set::next: no child to wait for");
    }
    poll_once(std::nullopt);
  }
  event e = std::move(ready_.front());
  ready_.pop_front();
  return e;
}

std::optional<child_set::event> child_set::next_within(std::chrono::nanoseconds wait) {
  const auto until = run_clock::now() + wait;
  while (ready_.empty()) {
    poll_once(until);
    if (ready_.empty() && run_clock::now() >= until) return std::nullopt;
  }
  event e = std::move(ready_.front());
  ready_.pop_front();
  return e;
}

void child_set::shut_down() {
  for (slot& s : slots_) {
    if (s.child.pid <= 0) continue;
    if (s.task) ::kill(s.child.pid, SIGKILL);
    close_fd(s.child.to_child);  // end of file: an idle worker returns from read() and exits
  }
  for (slot& s : slots_) {
    if (s.child.pid > 0) {
      close_and_reap(s.child);
      s = slot{};
    }
  }
  live_ = 0;
}

std::vector<std::uint32_t> child_set::kill_all() {
  std::vector<std::uint32_t> running_tasks;
  for (slot& s : slots_) {
    if (s.child.pid > 0) ::kill(s.child.pid, SIGKILL);  // all at once, then reap each
  }
  for (slot& s : slots_) {
    if (s.child.pid <= 0) continue;
    if (s.task) running_tasks.push_back(*s.task);
    close_and_reap(s.child);
    s = slot{};
  }
  live_ = 0;
  return running_tasks;
}

// ---- outcomes ----

outcomes::outcomes(std::size_t n, const run_options& options)
    : slots_(n, options), on_error_(options.on_error) {}

bool outcomes::stopping() const {
  return slots_.stopping() || first_error_ || interrupted_ || termination_signal() != 0;
}

void outcomes::fail(std::uint32_t id, std::string cause) {
  slots_.fail(id, std::move(cause));
  if (on_error_ == error_policy::stop_at_first) first_error_ = true;
}

void outcomes::cancel(std::uint32_t id) { slots_.fail(id, std::string(k_cancelled)); }

void outcomes::handle(const child_set::event& e, child_set& children) {
  using kind = child_set::event::kind;
  switch (e.what) {
    case kind::report: {
      const task_report& r = e.report;
      if (r.completed != 0) {
        slots_.complete(r.record);
      } else {
        fail(r.record.id, std::string(r.cause.data()));
      }
      break;
    }
    case kind::ended:
    case kind::timed_out:
      if (e.task) fail(*e.task, e.cause);
      break;
    case kind::interrupted:
      interrupted_ = true;
      for (std::uint32_t id : children.kill_all()) fail(id, interrupted_cause());
      break;
  }
}

// ---- termination signals ----

void catch_termination() {
  if (g_termination_pipe[0] >= 0) return;
  if (pipe2(g_termination_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
    throw std::system_error(errno, std::generic_category(), "pipe2");
  }
  struct sigaction sa {};
  sa.sa_handler = on_termination;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;  // no SA_RESTART: a blocked ppoll() returns at once
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &ignore, nullptr);
  // SIGCHLD ignored (inherited through exec from a careless launcher) makes the kernel reap our
  // children itself: waitpid() would fail with ECHILD and every crash read as "exited with 0".
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigaction(SIGCHLD, &dfl, nullptr);
}

int termination_signal() { return g_termination_signal; }

std::string interrupted_cause() {
  const char* abbrev = sigabbrev_np(termination_signal());
  return "interrupted by SIG" + std::string(abbrev != nullptr ? abbrev : "?") +
         ": its process was killed";
}

void ensure_descriptors(std::size_t needed) {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  const rlim_t want = static_cast<rlim_t>(needed) + 256;
  if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < want) {
    lim.rlim_cur = lim.rlim_max == RLIM_INFINITY ? want : std::min(want, lim.rlim_max);
    setrlimit(RLIMIT_NOFILE, &lim);
  }
}

}  // namespace clab
