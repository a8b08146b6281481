// Lesson 08: async I/O. The io task's wait is a real request on a socket, and the executors
// co_await the socket itself: Boost.Asio's io_context (epoll underneath: readiness, turned into
// completions by Asio) with Boost.Beast's HTTP client, on one thread or on P; and `--demo files`,
// where readiness says nothing (a regular file is always "ready") and only a thread pool or
// io_uring's completions keep a disk read from blocking the loop.
#pragma once

#include "workloads/run.hpp"

namespace clab {

[[nodiscard]] const executor& asio_io_executor();     ///< "asio-io": one thread, co_spawn per task
[[nodiscard]] const executor& asio_io_mt_executor();  ///< "asio-io-mt": P threads, a strand each

/// `lesson 8 --demo files`: epoll refuses a regular file; K files read by blocking read(), by a
/// thread pool and by io_uring, verified and timed. Returns the exit status (0 unless the files
/// cannot be written).
[[nodiscard]] int files_demo();

}  // namespace clab
