// Every executor of every lesson, in lesson order: the tests and the benchmarks iterate this list,
// so a new lesson's executor is tested, measured and plotted once it is added here.
#pragma once

#include <span>
#include <string_view>

#include "workloads/run.hpp"

namespace clab {

[[nodiscard]] std::span<const executor* const> all_executors();

/// The executor called `name`, or nullptr.
[[nodiscard]] const executor* find_executor(std::string_view name);

}  // namespace clab
