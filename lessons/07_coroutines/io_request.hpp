// Lesson 07 — an io task's wait as a coroutine: the request to the service (workloads/
// io_exchange.hpp) written straight through, each of its waits a co_await on the socket's
// readiness. Look for: the loop in io_request(), which is blocking_request()'s loop with poll()
// replaced by co_await, and what that buys: while this coroutine waits for the service, its thread
// runs the others, and a stop or a deadline can end the wait (a blocked thread could not).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <stop_token>

#include "lessons/07_coroutines/scheduler.hpp"
#include "lessons/07_coroutines/task.hpp"
#include "workloads/io_exchange.hpp"
#include "workloads/task.hpp"

namespace clab::coro {

// [snippet:coro-io-request]
/// Task t's request, on a non-blocking socket: returns the checksum of the reply's body, or nullopt
/// if `limit` (--task-timeout-ms) passed first, counted from the request's start. A stop on `stop`
/// ends it with task_cancelled; a failed request throws io_error. However it ends, the socket is
/// out of the loop (fd_awaiter unwatches it before this coroutine resumes) and then closed (ex's
/// destructor), so the service sees the client leave and cancels its timer.
inline task<std::optional<std::uint64_t>> io_request(
    const clab::task& t, std::stop_token stop, std::optional<std::chrono::milliseconds> limit) {
  const auto deadline =
      limit ? event_loop::clock::now() + *limit : event_loop::clock::time_point::max();
  io_exchange ex(t, /*blocking=*/false);
  for (auto w = ex.start(); w != io_exchange::want::done; w = ex.step()) {
    fd_wake got = fd_wake::ready;
    if (w == io_exchange::want::read) {
      got = co_await readable(ex.fd(), stop, deadline);
    } else {
      got = co_await writable(ex.fd(), stop, deadline);  // connecting, or the request not all sent
    }
    if (got == fd_wake::timed_out) co_return std::nullopt;
  }
  co_return ex.body_checksum();
}
// [end-snippet]

}  // namespace clab::coro
