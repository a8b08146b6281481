// The one executor interface: every concurrency model is an `executor` value, called the same way
// by the lesson programs, the tests and the benchmarks. An executor also declares its scheduling
// policy (`schedule`), which models/ simulates to predict its makespan. Look for: the executor
// states what it does in data, and the model predicts from that data, never from the measurement.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "workloads/task.hpp"

namespace clab {

struct task_graph;  // workloads/deps.hpp

using run_clock = std::chrono::steady_clock;

/// One completed task: what it computed, when (ns since the run's origin) and on which worker.
struct task_record {
  std::uint32_t id = 0;
  std::uint64_t checksum = 0;
  std::int64_t start_ns = 0;
  std::int64_t end_ns = 0;
  std::int32_t worker = 0;
};

/// One task that did not complete, and why ("exception: ...", "killed by SIGSEGV", "timeout").
struct task_failure {
  std::uint32_t id = 0;
  std::string cause;
};

/// What a run does after a task fails: go on with every other task and report each outcome (like
/// Python's gather(..., return_exceptions=True)), or stop starting new tasks after the first.
enum class error_policy : std::uint8_t { collect_all, stop_at_first };

struct run_options {
  int workers = 1;                 ///< P, as asked; see workers_used() for what an executor starts
  run_clock::time_point origin{};  ///< time zero of the run's records; measure() sets it
  /// Only where can_enforce_timeout, or for io tasks where timeout_cancels_waits.
  std::optional<std::chrono::milliseconds> task_timeout;
  /// Cancellation: once stop is requested, no task starts any more; each task not yet started is
  /// reported failed as cancelled. Tasks already running finish (a thread cannot be interrupted).
  std::stop_token stop;
  error_policy on_error = error_policy::collect_all;
  /// Event loops (lesson 05 on): report every callback that runs longer than this, on stderr, and
  /// name one that is still running past it (the loop's lag monitor). Others ignore it.
  std::optional<std::chrono::milliseconds> slow_callback;
  /// --deps: task i starts only after each of its predecessors has ended; a task whose predecessor
  /// failed does not run. Null: independent tasks. Only where executor::supports_deps (measure()
  /// refuses the others). Passed by pointer, not in `task`: tasks travel to child processes as
  /// plain values.
  const task_graph* deps = nullptr;
};

/// The cause reported for a task that did not run because predecessor `p` failed (--deps).
[[nodiscard]] std::string predecessor_failed(std::uint32_t p);

struct run_result {
  std::vector<task_record> records;  ///< one per completed task, in any order
  std::vector<task_failure> failed;  ///< one per failed task
  int workers_used = 0;              ///< threads (or processes) that ran tasks
  std::int64_t makespan_ns = 0;      ///< set by measure(): origin to the executor's return
  bool stopped = false;  ///< a stop (cancellation or a first error) kept some task from starting
};

/// The cause reported for a task that a stop kept from starting.
inline constexpr std::string_view k_cancelled = "cancelled before it started";

/// How tasks are placed on workers.
enum class placement : std::uint8_t {
  static_blocks,  ///< worker k runs one contiguous block of the task list (see block_range())
  round_robin,    ///< worker k runs tasks k, k+P, k+2P, ...
  dynamic_queue,  ///< one shared queue in task order; an idle worker takes the next task
  longest_first,  ///< one shared queue, longest task first (Graham's LPT rule)
  work_stealing,  ///< a deque per worker filled round robin: the owner takes its oldest task,
                  ///< an idle worker steals the newest of the next non-empty deque
  spawner_lifo,   ///< every task in worker 0's deque: worker 0 takes the newest, idle workers
                  ///< steal the oldest (one thread spawning into a work-stealing scheduler)
  one_per_task,   ///< a fresh worker for every task, all started by one launcher
};

/// What a worker does during a task's wait: sit in it (blocking), or park the task and run
/// another (non-blocking: fibers, coroutines, event loops).
enum class wait_mode : std::uint8_t { blocking, nonblocking };

/// Measured per-unit costs that an executor pays. thread_start and process_start (a fork until the
/// child is ready) come from the machine's calibration. The probed ones are measured on the
/// executor itself, on empty tasks with one worker (see schedule::caller_waits_each for the
/// exception), just before the prediction (see models/probe.hpp): `probed` is its wall time per
/// task, which as a worker_start is the launcher's time per start (a thread or process per task)
/// and as a per_task cost a worker's hand-off (a pool's queue, a pipe round trip);
/// `probed_worker_cpu` is the CPU a worker spends per task besides the task's own work (a new
/// thread's or process's own start and exit), which takes a core from the tasks when all are busy.
enum class unit_cost : std::uint8_t {
  none,
  thread_start,
  process_start,
  probed,
  probed_worker_cpu
};

/// True if `c` is measured on the executor (by a probe) rather than read from the calibration.
[[nodiscard]] constexpr bool is_probed(unit_cost c) {
  return c == unit_cost::probed || c == unit_cost::probed_worker_cpu;
}

/// How many workers an executor starts for a requested P and N tasks.
enum class worker_rule : std::uint8_t { one, requested, one_per_task };

/// An executor's scheduling policy, as data: models/ simulates exactly this.
struct schedule {
  placement policy = placement::static_blocks;
  wait_mode waits = wait_mode::blocking;
  worker_rule workers = worker_rule::requested;
  unit_cost worker_start = unit_cost::none;  ///< paid by the launcher, once per worker, in turn
  unit_cost per_task = unit_cost::none;      ///< paid by the worker before each task
  /// The launcher also hands out every task, and starts all its workers before it hands out any
  /// second task (a process pool's parent: while it forks, nobody serves the pipes).
  bool launcher_dispatches = false;
  /// The caller submits every task to the pool, one by one, once the workers are started: its CPU
  /// per task (probed) competes with the workers for the cores.
  bool caller_submits = false;
  /// The caller then waits for each task's result in turn (a future per task). A task that ends
  /// while the caller sleeps on it pays to wake the caller, so what a task costs grows with its
  /// length: empty tasks end before the caller looks, long ones after it has gone to sleep. The
  /// probe therefore runs tasks as long as the run's (up to 100 µs) rather than empty ones.
  bool caller_waits_each = false;
  /// The executor waits on timers of its own (an event loop's), not on a blocking sleep: how late
  /// they fire is probed on the executor (see probe_wait_overshoot()) instead of taken from the
  /// calibration's sleep_overshoot.
  bool probe_wait_overshoot = false;
  /// A wait costs the executor work of its own around the timer (a fiber parks and is resumed,
  /// two switches and a timer's arming), which empty tasks never show: where the run's tasks wait,
  /// the per-task cost is probed on tasks that wait (1 ns each) instead.
  bool probe_parked = false;
};

using run_function = run_result (*)(std::span<const task>, const run_options&);

struct executor {
  std::string_view name;     ///< the --executor value
  std::string_view lesson;   ///< "01"
  std::string_view summary;  ///< one line for --list
  schedule plan;
  bool can_enforce_timeout = false;  ///< true where a hung task can be stopped (processes)
  /// Why --task-timeout-ms is refused, where the lesson's general reason (a thread cannot be
  /// killed) is not the one that applies: "a loop cannot interrupt a running callback".
  std::string_view no_timeout_because;
  bool lag_monitor = false;  ///< honours run_options::slow_callback (our event loops)
  /// A library's row beside ours (Asio, oneTBB, libuv): the sweep gives it fewer points.
  bool reference = false;
  /// Honours run_options::deps: runs a task only after its predecessors (serial by its id order,
  /// lesson 07's coroutines by awaiting an event per predecessor).
  bool supports_deps = false;
  /// Waits on the socket of an io task (workload::io): every blocking executor does, by waiting
  /// in blocking_wait(); a non-blocking one only once its wait can watch a descriptor.
  bool supports_io = false;
  /// --task-timeout-ms bounds an io task's wait: a request still unanswered at the timeout is
  /// closed and the task fails with a cause that starts "timeout". (Its CPU part, once begun,
  /// still runs to its end: only a process can be killed mid-computation.) Where a wait can be
  /// cancelled: event loops, fibers, coroutines, Asio.
  bool timeout_cancels_waits = false;
  run_function run = nullptr;
};

/// True if `exec` can run io tasks: it waits in blocking_wait() (every blocking executor), or its
/// own waits watch the socket (supports_io).
[[nodiscard]] bool runs_io(const executor& exec);

/// Workers an executor with this schedule starts for P requested and n tasks: 1, min(P, n) or n.
[[nodiscard]] int workers_used(const schedule& plan, int requested, std::size_t n);

/// The static partition shared by executors and the simulator: n tasks in `parts` contiguous
/// blocks whose sizes differ by at most one (the first n % parts blocks are one longer).
/// Returns [begin, end) of block k.
[[nodiscard]] std::pair<std::size_t, std::size_t> block_range(std::size_t n, int parts, int k);

/// Runs `tasks` on `exec` with time zero taken just before the call; sets makespan_ns.
/// Throws std::invalid_argument for options.deps on an executor that does not support them.
[[nodiscard]] run_result measure(const executor& exec, std::span<const task> tasks,
                                 run_options options);

/// Nanoseconds from `origin` to now.
[[nodiscard]] inline std::int64_t ns_since(run_clock::time_point origin) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(run_clock::now() - origin).count();
}

}  // namespace clab
