// Lesson 05: the event loop. Three executors on our own loop (event_loop.hpp), named for what they
// do, and two established loops run on the same task sets as reference rows: Boost.Asio's
// io_context and libuv.
#pragma once

#include "workloads/run.hpp"

namespace clab {

[[nodiscard]] const executor& loop_executor();       ///< "loop": every wait a timer (default)
[[nodiscard]] const executor& blocking_executor();   ///< "blocking": the loop, a callback sleeps
[[nodiscard]] const executor& loops_executor();      ///< "loops": P loops on P threads
[[nodiscard]] const executor& asio_loop_executor();  ///< "asio-loop": io_context, steady_timer
[[nodiscard]] const executor& libuv_executor();      ///< "libuv": uv_loop_t, uv_timer_t

}  // namespace clab
