// Lesson 07: stackless C++20 coroutines. Executors on our own task<T> and coro_scheduler,
// suspended on lesson 05's loop: ready coroutines in FIFO order, longest CPU part first, and P
// threads with a scheduler each; and the reference row on Boost.Asio's awaitables.
#pragma once

#include "workloads/run.hpp"

namespace clab {

[[nodiscard]] const executor& coroutines_executor();     ///< "coroutines": every task a coroutine
[[nodiscard]] const executor& coro_priority_executor();  ///< "coro-priority": longest CPU first
[[nodiscard]] const executor& coroutines_mn_executor();  ///< "coroutines-mn": P threads, M:N
[[nodiscard]] const executor& asio_coro_executor();      ///< "asio-coro": Boost.Asio awaitables

}  // namespace clab
