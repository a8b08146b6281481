// Tasks in child processes, shared by lessons 02 (a process per task) and 04 (a process pool): a
// task travels to a child as a fixed-size message and its outcome comes back as a fixed-size
// report, each written with one write() of at most PIPE_BUF bytes, which a pipe delivers whole.
// Look for: a child that dies sends nothing; the parent sees end of file on the child's pipe and
// learns the cause from waitpid(), so no task is lost and none is reported twice.
#pragma once

#include <sys/types.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <vector>

#include "workloads/execute.hpp"
#include "workloads/run.hpp"
#include "workloads/task.hpp"

namespace clab {

/// Parent to child: one task, the run's time zero (steady_clock is CLOCK_MONOTONIC, one clock for
/// the whole machine, so a child stamps its record against the parent's origin), the worker
/// number to record, and the parent's pid (a child whose parent is already gone exits).
struct task_message {
  task work;
  std::int64_t origin_ns = 0;  ///< origin.time_since_epoch() in ns
  std::int32_t worker = 0;
  std::int32_t parent = 0;
};

/// Child to parent: the task's record, or why it failed while its process survived (a thrown
/// exception). Plain bytes, no pointers, so it means the same on both sides of the pipe.
struct task_report {
  task_record record;  ///< id always set; the rest only when completed
  std::uint8_t completed = 0;
  std::array<char, 199> cause{};  ///< NUL-terminated, when not completed
};
static_assert(sizeof(task_report) <= 512 && sizeof(task_message) <= 512,
              "one message must fit one atomic pipe write (PIPE_BUF is at least 512)");

/// Runs `t` in the calling process as run_blocking() does and returns its report; a thrown fault
/// becomes a report with its cause. abort, segv and hang do what they do: the process dies or
/// never answers, and the parent finds out.
[[nodiscard]] task_report run_to_report(const task& t, run_clock::time_point origin, int worker);

[[nodiscard]] std::int64_t to_ns(run_clock::time_point t);
[[nodiscard]] run_clock::time_point from_ns(std::int64_t ns);

/// write() all of `bytes`, retrying after EINTR. False on any other error (EPIPE: the reader is
/// gone; the caller must not be killed by SIGPIPE for it, see child_set::send()).
bool write_all(int fd, std::span<const std::byte> bytes);
/// read() exactly bytes.size() bytes, retrying after EINTR. Returns the count read: less than
/// asked only at end of file (0: the writer closed its end before sending anything) or on error.
std::size_t read_all(int fd, std::span<std::byte> bytes);

/// "killed by SIGSEGV", "exited with status 3", from a waitpid() status.
[[nodiscard]] std::string describe_wait_status(int status);

/// What a freshly forked child does first, with async-signal-safe calls only (another thread of
/// the parent may have held a lock at the moment of the fork, and the child's copy of that lock is
/// never released): every signal back to its default action and none blocked, die with the
/// parent (PR_SET_PDEATHSIG; exits if the parent is already gone), no core file for an injected
/// crash, and every descriptor closed except 0, 1, 2 and `keep`: a copy of a sibling's pipe end
/// would keep that pipe open after the sibling or the parent closes it.
void prepare_forked_child(pid_t parent, std::span<const int> keep);

/// A child process and the parent's ends of its two pipes (-1 where there is none).
struct child_process {
  pid_t pid = -1;
  int to_child = -1;    ///< the parent writes task messages here
  int from_child = -1;  ///< the parent reads task reports here; end of file: the child is gone
};

/// Forks a child that runs body(in, out, context), `in` reading the task pipe (-1 without one)
/// and `out` writing the report pipe, then _exit(0)s. The pipes are O_CLOEXEC; the parent's copies
/// of the child's ends are closed before this returns. Throws std::system_error if the kernel
/// refuses (no descriptor, no process).
using child_body = void (*)(int in, int out, void* context);
[[nodiscard]] child_process fork_child(child_body body, void* context, bool with_task_pipe);

/// posix_spawn()s `program` with the task pipe as its stdin and the report pipe as its stdout;
/// nothing else crosses the exec but the environment. Throws std::system_error on failure.
[[nodiscard]] child_process spawn_child(const std::string& program);

/// Closes the parent's ends and waits for the child to end; returns its waitpid() status.
int close_and_reap(child_process& c);
/// SIGKILL, then close_and_reap().
int kill_and_reap(child_process& c);

/// The parent's view of child processes that each run at most one task at a time and answer
/// with task reports; slot k holds at most one child. next() waits for whatever happens first: a
/// report, a child's end (reaped; if it was running a task, how it died), a task past its
/// deadline (its child killed and reaped), or SIGINT/SIGTERM (see catch_termination()).
/// Destroying the set kills and reaps every child still in it: no child outlives the run.
class child_set {
 public:
  explicit child_set(std::size_t slots) : slots_(slots) {}
  child_set(const child_set&) = delete;
  child_set& operator=(const child_set&) = delete;
  ~child_set() { kill_all(); }

  /// Puts child c into slot k, which must be empty.
  void attach(std::size_t k, child_process c);
  /// Notes that slot k's child now runs task `id`; it is killed if it has not answered `timeout`
  /// after now.
  void running(std::size_t k, std::uint32_t id, std::optional<std::chrono::milliseconds> timeout);
  /// Sends a task message to slot k's child, then running(). False if the child is gone; its end
  /// comes through next() as usual (with this task), so the caller need not handle it here.
  bool send(std::size_t k, const task_message& m, std::optional<std::chrono::milliseconds> timeout);

  [[nodiscard]] bool has_child(std::size_t k) const { return slots_[k].child.pid > 0; }
  [[nodiscard]] bool busy(std::size_t k) const { return slots_[k].task.has_value(); }
  [[nodiscard]] std::size_t children() const { return live_; }
  /// True while a child runs a task or an event waits to be returned by next(): a task's outcome
  /// is still to come.
  [[nodiscard]] bool outstanding() const;
  /// True while a child is alive or an event waits: there is still something to reap or report.
  [[nodiscard]] bool active() const { return live_ > 0 || !ready_.empty(); }

  struct event {
    enum class kind : std::uint8_t {
      report,       ///< the slot's child answered: `report`; the child lives on
      ended,        ///< the slot's child ended and was reaped; if it was running a task, `task`
                    ///< is set and `cause` says how it died ("killed by SIGSEGV")
      timed_out,    ///< the slot's task ran past its deadline: its child was killed and reaped;
                    ///< `task`, and `cause` = "timeout after M ms"
      interrupted,  ///< SIGINT or SIGTERM arrived: the caller should kill_all() and stop
    };
    kind what = kind::report;
    std::size_t slot = 0;
    task_report report;
    std::optional<std::uint32_t> task;
    std::string cause;
  };
  /// Blocks until the next event. Call while children() > 0, or to learn of a signal.
  [[nodiscard]] event next();
  /// Like next(), but gives up after `wait` (zero: only look at what has already happened).
  [[nodiscard]] std::optional<event> next_within(std::chrono::nanoseconds wait);

  /// The clean end: closes every task pipe (end of file tells an idle worker to exit), then waits
  /// for each child. Children that are still running a task are killed first.
  void shut_down();
  /// Kills and reaps every child; returns the tasks they were running.
  std::vector<std::uint32_t> kill_all();

 private:
  struct slot {
    child_process child;
    std::optional<std::uint32_t> task;
    run_clock::time_point deadline = run_clock::time_point::max();
    std::chrono::milliseconds timeout{0};
  };
  void poll_once(std::optional<run_clock::time_point> until);
  void read_from(std::size_t k);
  void end(std::size_t k, int status, event::kind what);

  std::vector<slot> slots_;
  std::size_t live_ = 0;
  std::deque<event> ready_;          // events found by the last poll and not yet returned
  bool interrupt_reported_ = false;  // `interrupted` is returned once per set, not once per poll
};

/// Gathers a process executor's outcomes: one record or one failure per task, honouring the run's
/// cancellation and error policy (as result_slots does for threads).
class outcomes {
 public:
  outcomes(std::size_t n, const run_options& options);
  /// True once no more tasks may start: cancelled, a first error under stop_at_first, or a
  /// termination signal (caught during this run or before it).
  [[nodiscard]] bool stopping() const;
  /// Records what the event says: a record, a failure with its cause, or, for `interrupted`,
  /// every running task killed and failed with interrupted_cause().
  void handle(const child_set::event& e, child_set& children);
  /// Task id never started: reported as cancelled.
  void cancel(std::uint32_t id);
  void fail(std::uint32_t id, std::string cause);
  [[nodiscard]] run_result collect(int workers_used) && {
    return std::move(slots_).collect(workers_used);
  }

 private:
  result_slots slots_;  // the records and failures, as the thread executors keep them
  error_policy on_error_;
  bool first_error_ = false;
  bool interrupted_ = false;
};

/// Installs handlers for SIGINT and SIGTERM that note the signal and wake every child_set (a
/// self-pipe: the handler only write()s one byte), ignores SIGPIPE and gives SIGCHLD its default
/// action (so that waitpid() sees every child). The first signal is caught; a second ends the
/// program at once (SA_RESETHAND). Process-wide: for the lesson programs, not tests or benchmarks.
void catch_termination();
/// The signal caught by catch_termination()'s handler, or 0.
[[nodiscard]] int termination_signal();
/// The cause reported for a task whose process was killed because the run was interrupted.
[[nodiscard]] std::string interrupted_cause();

/// Raises the soft limit on open descriptors towards the hard one if `needed` more may be open at
/// once (a process per task holds a pipe per running child). No-op where it already suffices.
void ensure_descriptors(std::size_t needed);

}  // namespace clab
