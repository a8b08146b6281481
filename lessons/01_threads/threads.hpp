// Lesson 01: threads. Two executors: a thread per task, and P threads over a static partition.
#pragma once

#include <span>

#include "workloads/run.hpp"

namespace clab {

/// One std::jthread per task, all started by the calling thread; --workers does not apply.
[[nodiscard]] run_result run_thread_per_task(std::span<const task> tasks,
                                             const run_options& options);

/// P std::jthreads; thread k runs the k-th contiguous block of the task list (block_range()).
[[nodiscard]] run_result run_static_threads(std::span<const task> tasks,
                                            const run_options& options);

[[nodiscard]] const executor& thread_per_task_executor();  ///< name "per-task"
[[nodiscard]] const executor& static_threads_executor();   ///< name "static"

}  // namespace clab
