// Lesson 07: stackless C++20 coroutines. Two executors on our own task<T> and coro_scheduler,
// suspended on lesson 05's loop: ready coroutines in FIFO order, and longest CPU part first.
#pragma once

#include "workloads/run.hpp"

namespace clab {

[[nodiscard]] const executor& coroutines_executor();     ///< "coroutines": every task a coroutine
[[nodiscard]] const executor& coro_priority_executor();  ///< "coro-priority": longest CPU first

}  // namespace clab
