// Lesson 07 — the reference row: the same task set on Boost.Asio's C++20 coroutines, one thread.
// `asio-coro`: one boost::asio::io_context; every task a boost::asio::awaitable<void> started
// with co_spawn, whose wait is `co_await timer.async_wait(...)` on a steady_timer of its own, then
// its CPU part. Look for: the same straight-line task body as run_task in coro_executors.cpp, and
// what Asio needs from us that our scheduler does itself: a stop must find each sleeping task's
// timer, so the timers live in a registry (one per task, indexed by task) that the loop's thread
// cancels when the run stops. An io task's waits are `co_await socket.async_wait(...)` on its
// request's descriptor, which that registry holds too.
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <exception>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "lessons/07_coroutines/executors.hpp"
#include "workloads/execute.hpp"
#include "workloads/io_exchange.hpp"

namespace clab {
namespace {

namespace asio = boost::asio;

/// What every awaitable of one run shares: the tasks, the result slots, the stop (a cancellation
/// or a first error under --errors first) and the registry of timers it cancels.
struct asio_coro_run {
  asio_coro_run(std::span<const task> t, const run_options& o)
      : tasks(t),
        options(o),
        slots(t.size(), o),
        stop(o.stop, slots),
        timers(t.size()),
        sockets(t.size()),
        timed_out(t.size(), 0) {}
  std::span<const task> tasks;
  const run_options& options;
  result_slots slots;
  run_stop stop;
  asio::io_context io{1};  // one thread runs it; declared before the timers, it outlives them
  // One timer per task, constructed in place when its wait begins (a timer with a pending wait
  // must not move, so the vector never grows). Loop thread only. A timer holds on to the
  // io_context's timer service: it must be destroyed first.
  std::vector<std::optional<asio::steady_timer>> timers;
  // An io task's socket while its request is in flight: an Asio socket adopting the exchange's
  // descriptor, so that a wait on it is an awaitable (and the stop can cancel it). Loop thread.
  std::vector<std::optional<asio::ip::tcp::socket>> sockets;
  std::vector<std::uint8_t> timed_out;  // 1 once task i's deadline (--task-timeout-ms) fired
  std::exception_ptr escaped;  // an exception out of an awaitable (the body catches its own)

  /// Loop thread: every timer still armed and every socket's wait completes at once with
  /// operation_aborted, so its awaitable resumes and reports its task cancelled.
  void cancel_timers() {
    for (auto& t : timers) {
      if (t) t->cancel();
    }
    for (auto& s : sockets) {
      if (s) s->cancel();
    }
  }
};

/// The Asio socket of one request, for as long as the request is in flight: it adopts the
/// exchange's descriptor, and gives it back (out of Asio's epoll, not closed) before the exchange
/// closes it, however the request ends.
class adopted_socket {
 public:
  adopted_socket(std::optional<asio::ip::tcp::socket>& slot, asio::io_context& io, int fd)
      : slot_(slot) {
    slot_.emplace(io, asio::ip::tcp::v4(), fd);
  }
  adopted_socket(const adopted_socket&) = delete;
  adopted_socket& operator=(const adopted_socket&) = delete;
  ~adopted_socket() {
    boost::system::error_code ec;
    (void)slot_->release(ec);  // the descriptor is the exchange's to close
    slot_.reset();
  }
  asio::ip::tcp::socket& operator*() { return *slot_; }

 private:
  std::optional<asio::ip::tcp::socket>& slot_;
};

/// How an io task's request ended, when it did not end with the reply.
enum class request_end : std::uint8_t { reply, cancelled, timed_out };

// [snippet:asio-coro-request]
/// Task i's request as an awaitable: io_exchange's steps, each wait `co_await socket.async_wait`
/// for the readiness the step asks for. This stays at readiness level on purpose, as our own
/// coroutines do (lesson 08 lets Beast's client do the connect, the write and the read). The
/// deadline (--task-timeout-ms) is the task's own timer, whose handler cancels the socket's wait;
/// a stop cancels every socket (cancel_timers). Both are checked after every wait, since a wait
/// that completed just before its cancel resumes with no error.
asio::awaitable<request_end> asio_request(asio_coro_run& run, std::uint32_t i,
                                          std::uint64_t& body) {
  using asio::ip::tcp;
  const task& t = run.tasks[i];
  io_exchange ex(t, /*blocking=*/false);
  io_exchange::want w = ex.start();
  if (w == io_exchange::want::done) {
    body = ex.body_checksum();
    co_return request_end::reply;
  }
  adopted_socket sock(run.sockets[i], run.io, ex.fd());  // released before ex closes the fd
  if (run.options.task_timeout) {
    asio::steady_timer& timer =
        run.timers[i].emplace(co_await asio::this_coro::executor, *run.options.task_timeout);
    timer.async_wait([&run, i](const boost::system::error_code& ec) {
      if (ec || !run.sockets[i]) return;  // cancelled: the request ended first
      run.timed_out[i] = 1;
      run.sockets[i]->cancel();
    });
  }
  for (; w != io_exchange::want::done; w = ex.step()) {
    const auto [ec] = co_await (*sock).async_wait(
        w == io_exchange::want::read ? tcp::socket::wait_read : tcp::socket::wait_write,
        asio::as_tuple(asio::use_awaitable));
    if (run.timed_out[i] != 0) co_return request_end::timed_out;
    if (ec || run.slots.stopping()) co_return request_end::cancelled;
  }
  if (run.timers[i]) run.timers[i]->cancel();
  body = ex.body_checksum();
  co_return request_end::reply;
}
// [end-snippet]

// [snippet:asio-coro-task]
/// Task i as an Asio awaitable: the wait suspends it on its own steady_timer (the io_context runs
/// the other awaitables meanwhile), then the CPU part runs on the loop's thread.
asio::awaitable<void> asio_task(asio_coro_run& run, std::uint32_t i) {
  const task& t = run.tasks[i];
  if (run.slots.stopping()) {  // cancelled, or a first error under --errors first
    run.slots.fail(i, std::string(k_cancelled));
    co_return;
  }
  task_record r{.id = i, .start_ns = ns_since(run.options.origin), .worker = 0};
  std::uint64_t body = 0;
  if (t.is_io()) {
    request_end end = request_end::reply;
    try {
      end = co_await asio_request(run, i, body);
    } catch (...) {  // io_error (the request failed): this task only, unless --errors first
      if (run.timers[i]) run.timers[i]->cancel();
      run.slots.fail_error(i, describe_current_exception());
      co_return;
    }
    if (run.timers[i]) run.timers[i]->cancel();
    if (end == request_end::timed_out) {
      run.slots.fail_error(i, io_timeout_cause(i, *run.options.task_timeout));
      co_return;
    }
    if (end == request_end::cancelled) {
      run.slots.fail(i, std::string(k_cancelled));
      co_return;
    }
  } else if (t.wait_ns > 0) {
    asio::steady_timer& timer = run.timers[i].emplace(
        co_await asio::this_coro::executor,
        run.options.origin + std::chrono::nanoseconds(r.start_ns + t.wait_ns));
    // as_tuple: a cancelled wait comes back as an error code, not as a thrown system_error.
    const auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    if (ec) {  // operation_aborted: the stop cancelled this timer
      run.slots.fail(i, std::string(k_cancelled));
      co_return;
    }
  }
  if (run.slots.stopping()) {  // stopped after the timer fired, before this awaitable resumed
    run.slots.fail(i, std::string(k_cancelled));
    co_return;
  }
  try {
    r.checksum = io_checksum(t, compute(t), body);
    r.end_ns = ns_since(run.options.origin);
    run.slots.complete(r);
  } catch (...) {  // a throw fails this task only, unless the run stops at the first error
    run.slots.fail_error(i, describe_current_exception());
  }
}
// [end-snippet]

run_result run_asio_coro(std::span<const task> tasks, const run_options& options) {
  asio_coro_run run(tasks, options);
  if (tasks.empty()) return std::move(run.slots).collect(0);
  asio::io_context& io = run.io;
  for (std::uint32_t i = 0; i < tasks.size(); ++i) {
    asio::co_spawn(io, asio_task(run, i), [&run](const std::exception_ptr& e) {
      if (e && !run.escaped) run.escaped = e;
    });
  }
  {
    // Either stop (--cancel-after-ms from another thread, or a first error on the loop's own
    // thread) reaches the timers through post(): they belong to the loop's thread.
    const std::stop_callback on_stop(run.stop.token(),
                                     [&] { asio::post(io, [&run] { run.cancel_timers(); }); });
    io.run();
  }
  if (run.escaped) std::rethrow_exception(run.escaped);
  return std::move(run.slots).collect(1);
}

}  // namespace

// The plan is `coroutines`' (one worker, tasks in order, non-blocking waits, costs probed). The
// per-task cost is probed on tasks that wait (probe_parked), which the model agreed with better:
// on 1000 waits of 1 ms (2-core VM) it predicted 3.0-3.6 ms with it and 5.3 ms without, for a
// measured 2.1-2.6 ms. Both overstate: an empty co_spawn is dearer the first time its memory is
// touched (about 3.8 µs a task on a fresh heap, 0.35 µs once warm), which the probe pays.
const executor& asio_coro_executor() {
  static const executor e{
      .name = "asio-coro",
      .lesson = "07",
      .summary =
          "reference: Boost.Asio awaitables, co_spawn and a steady_timer per task, one "
          "thread",
      .plan = {.policy = placement::static_blocks,
               .waits = wait_mode::nonblocking,
               .workers = worker_rule::one,
               .per_task = unit_cost::probed,
               .probe_wait_overshoot = true,
               .probe_parked = true},
      .no_timeout_because =
          "a coroutine cannot be interrupted while it computes (it gives up its thread only at a "
          "co_await)",
      .reference = true,
      .supports_io = true,
      .timeout_cancels_waits = true,
      .run = run_asio_coro,
  };
  return e;
}

}  // namespace clab
