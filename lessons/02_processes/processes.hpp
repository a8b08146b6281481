// Lesson 02: processes. A child process per task, started two ways: fork() (a copy of the parent)
// and posix_spawn() of a small helper program (a fresh program: what exec adds). Each child runs
// one task and sends its record back through a pipe; the parent reaps every child.
#pragma once

#include <span>
#include <string>

#include "workloads/run.hpp"

namespace clab {

/// One fork()ed child per task, all started in turn by the calling thread; --workers does not
/// apply. A crash kills only that child; --task-timeout-ms kills a child that runs too long.
[[nodiscard]] run_result run_fork_per_task(std::span<const task> tasks, const run_options& options);

/// One posix_spawn()ed task_child_program() per task, the task sent through its stdin.
[[nodiscard]] run_result run_spawn_per_task(std::span<const task> tasks,
                                            const run_options& options);

[[nodiscard]] const executor& fork_per_task_executor();   ///< name "fork"
[[nodiscard]] const executor& spawn_per_task_executor();  ///< name "spawn"

/// The helper program the spawn executor runs: $CLAB_TASK_CHILD if set, else the one built with
/// this library (lesson_02_task_child, beside the lesson programs).
[[nodiscard]] std::string task_child_program();

/// `lesson 2 --demo shared-memory`: threads share their memory, processes share only what they
/// map as shared. Prints what each side reads; returns the exit status.
int shared_memory_demo();

}  // namespace clab
