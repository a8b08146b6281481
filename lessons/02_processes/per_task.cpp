// Lesson 02 — a process per task. Look for: the launcher pays a fork (or a spawn) per task, like
// lesson 01's thread start but dearer; the child's crash reaches the parent only as a status from
// waitpid(), so every other task completes; and a child that runs too long can be killed.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <span>

#include "lessons/02_processes/processes.hpp"
#include "workloads/process_io.hpp"

namespace clab {
namespace {

/// What a forked child needs: it lives in the child's copy of the parent's memory.
struct fork_context {
  const task* work;
  run_clock::time_point origin;
  int worker;
};

// [snippet:fork-child]
/// The whole life of a forked child: run the one task, write its report, return (to _exit).
void run_forked(int /*no task pipe*/, int out, void* context) {
  const auto& c = *static_cast<const fork_context*>(context);
  const task_report report = run_to_report(*c.work, c.origin, c.worker);
  write_all(out, std::as_bytes(std::span(&report, 1)));
}

void launch_fork(child_set& children, std::size_t i, const task& t, const run_options& options) {
  fork_context context{&t, options.origin, static_cast<int>(i)};
  children.attach(i, fork_child(run_forked, &context, /*with_task_pipe=*/false));
  children.running(i, t.id, options.task_timeout);
}
// [end-snippet]

// [snippet:spawn-child]
/// A spawned child is a fresh program: it knows nothing of ours, so the task goes through a pipe.
void launch_spawn(child_set& children, std::size_t i, const task& t, const run_options& options) {
  children.attach(i, spawn_child(task_child_program()));
  const task_message message{.work = t,
                             .origin_ns = to_ns(options.origin),
                             .worker = static_cast<int>(i),
                             .parent = getpid()};
  children.send(i, message, options.task_timeout);
}
// [end-snippet]

using launcher = void (*)(child_set&, std::size_t, const task&, const run_options&);

// [snippet:per-task]
run_result run_per_task(std::span<const task> tasks, const run_options& options, launcher launch) {
  ensure_descriptors(2 * tasks.size());  // up to two pipe ends per running child (spawn)
  outcomes out(tasks.size(), options);
  child_set children(tasks.size());  // on any early exit, kills and reaps every child
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    if (out.stopping()) {
      out.cancel(tasks[i].id);
      continue;
    }
    launch(children, i, tasks[i], options);
    // Between launches, take in whatever has happened meanwhile: reports, deaths, deadlines.
    while (auto e = children.next_within(std::chrono::nanoseconds(0))) out.handle(*e, children);
  }
  while (children.active()) out.handle(children.next(), children);  // until every child is reaped
  return std::move(out).collect(static_cast<int>(tasks.size()));
}
// [end-snippet]

constexpr schedule k_process_per_task{.policy = placement::one_per_task,
                                      .workers = worker_rule::one_per_task,
                                      .worker_start = unit_cost::probed,
                                      .per_task = unit_cost::probed_worker_cpu};

}  // namespace

run_result run_fork_per_task(std::span<const task> tasks, const run_options& options) {
  return run_per_task(tasks, options, launch_fork);
}

run_result run_spawn_per_task(std::span<const task> tasks, const run_options& options) {
  return run_per_task(tasks, options, launch_spawn);
}

std::string task_child_program() {
  const char* from_env = std::getenv("CLAB_TASK_CHILD");
  return from_env != nullptr && *from_env != '\0' ? from_env : CLAB_TASK_CHILD;
}

const executor& fork_per_task_executor() {
  static const executor e{
      .name = "fork",
      .lesson = "02",
      .summary =
          "one fork()ed child process per task, started in turn; the record comes back through a "
          "pipe (--workers does not apply)",
      .plan = k_process_per_task,
      .can_enforce_timeout = true,
      .run = run_fork_per_task,
  };
  return e;
}

const executor& spawn_per_task_executor() {
  static const executor e{
      .name = "spawn",
      .lesson = "02",
      .summary =
          "one posix_spawn()ed helper program per task, the task sent through its stdin "
          "(--workers does not apply)",
      .plan = k_process_per_task,
      .can_enforce_timeout = true,
      .run = run_spawn_per_task,
  };
  return e;
}

}  // namespace clab
