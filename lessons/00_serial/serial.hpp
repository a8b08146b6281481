// Lesson 00: the serial executor, the reference every other lesson is measured against.
#pragma once

#include <span>

#include "workloads/run.hpp"

namespace clab {

/// Runs every task on the calling thread, one after another. Model: T = Σ t_i.
[[nodiscard]] run_result run_serial(std::span<const task> tasks, const run_options& options);

/// The executor descriptor: name "serial", one worker, blocking waits.
[[nodiscard]] const executor& serial_executor();

}  // namespace clab
