// Printing for the lesson programs: durations in readable units and a text Gantt chart.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "workloads/run.hpp"
#include "workloads/task.hpp"

namespace clab {

/// "812 ns", "57.3 µs", "81.4 ms", "1.23 s": three significant digits.
[[nodiscard]] std::string format_ns(std::int64_t ns);

/// `s` followed by spaces up to `width` columns (counting UTF-8 code points, not bytes).
[[nodiscard]] std::string pad(const std::string& s, std::size_t width);

/// One row per worker, time across: each task drawn with its id's character (0-9, a-z, then
/// again), its first cell always the id, '.' while it waits, ' ' where the worker is idle.
/// `span_ns` is the width of the whole chart.
[[nodiscard]] std::string gantt(std::span<const task> tasks, std::span<const task_record> records,
                                std::int64_t span_ns, int workers, int width = 64);

}  // namespace clab
