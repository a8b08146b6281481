// Lesson 08 — the io task set on Boost.Asio and Boost.Beast, the request itself co_awaited.
// `asio-io`: one io_context on one thread; every task an asio::awaitable started with co_spawn,
// whose wait is an HTTP request: co_await async_connect, http::async_write of the same
// `GET /task?id=..&wait_us=..&seed=..` that io_exchange sends, http::async_read of the reply
// (a plain wait, in a mixed set, is a steady_timer's). `asio-io-mt`: the same coroutines on one
// io_context run by P threads, each task's handlers on a strand of its own.
//
// Look for: request() reads like a blocking client, one line per step, but each co_await hands
// the thread back to the io_context, which watches every socket at once (epoll underneath: Asio
// turns "readable" into "your read completed"); `request || timer` (a timeout races the request
// and the loser is cancelled); one cancellation_signal per task, emitted on the task's own
// executor, which is how a stop reaches a request in flight; and why the P-thread version needs a
// strand per connection while the one-thread version needs none.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_static_buffer.hpp>
#include <boost/beast/http.hpp>
#include <exception>
#include <memory>
#include <mutex>
#include <stop_token>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "lessons/08_async_io/executors.hpp"
#include "workloads/execute.hpp"
#include "workloads/io_body.hpp"
#include "workloads/io_exchange.hpp"

namespace clab {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using asio::experimental::awaitable_operators::operator||;

/// Which of the run's threads is running this handler (asio-io-mt: 0..P-1; asio-io: 0).
thread_local int t_worker = 0;

/// How one request ended. Not an exception: `request || timer` waits for the first branch that
/// *succeeds*, so a request that threw would wait for its timer before its failure was seen.
struct io_reply {
  std::uint64_t body = 0;  ///< io_body_checksum of the reply's body, when error is empty
  std::string error;       ///< io_exchange's wording of what went wrong (without "task N: ")
  bool aborted = false;    ///< cancelled: by the run's stop, or by the timer that won the race
};

/// What every awaitable of one run shares.
struct asio_io_run {
  asio_io_run(std::span<const task> t, const run_options& o, int threads)
      : tasks(t),
        options(o),
        slots(t.size(), o),
        stop(o.stop, slots),
        io(threads),
        signals(t.size()) {
    executors.reserve(t.size());
  }
  std::span<const task> tasks;
  const run_options& options;
  result_slots slots;  // complete() writes only slot i, fail() takes a lock: safe on P threads
  run_stop stop;
  asio::io_context io;  // declared before what refers to it, so it is destroyed after them
  /// Task i's executor: the io_context's own (one thread), or a strand of it (P threads).
  std::vector<asio::any_io_executor> executors;
  /// Task i's cancellation: its slot is bound to the co_spawn of task i, so an emit cancels the
  /// operation the task is suspended in (a connect, a write, a read, a timer), however deep.
  /// A signal and its slot are not thread-safe: emit only on executors[i].
  std::vector<asio::cancellation_signal> signals;
  std::mutex escaped_mutex;
  std::exception_ptr escaped;  // an exception out of an awaitable (the bodies catch their own)

  /// Any thread: each task's signal is emitted on that task's executor (terminal: the operation
  /// is abandoned, the socket left unusable; it is closed when its coroutine unwinds).
  void cancel_all() {
    for (std::size_t i = 0; i < signals.size(); ++i) {
      asio::post(executors[i], [this, i] { signals[i].emit(asio::cancellation_type::terminal); });
    }
  }
};

/// The request's target: the same bytes io_exchange's constructor formats.
std::string target_of(const task& t) {
  return "/task?id=" + std::to_string(t.id) +
         "&wait_us=" + std::to_string(std::max<std::int64_t>(0, t.wait_ns) / 1000) +
         "&seed=" + std::to_string(t.seed);
}

bool is_reset(const boost::system::error_code& ec) {
  return ec == asio::error::connection_reset || ec == asio::error::broken_pipe;
}

// [snippet:asio-io-request]
/// One io task's wait: the request of io_exchange, written as a blocking client would write it,
/// but every step is a co_await that lets the io_context run the other tasks meanwhile. Failures
/// come back in io_exchange's words; a cancellation comes back as `aborted`.
asio::awaitable<io_reply> request(const task& t) {
  io_reply out;
  const std::string service = to_string(t.io);
  try {
    tcp::socket socket(co_await asio::this_coro::executor);
    const tcp::endpoint to(asio::ip::address_v4(t.io.ipv4), t.io.port);
    // as_tuple: an error comes back as a value (a refused connection is a result, not a throw).
    const auto [connected] = co_await socket.async_connect(to, asio::as_tuple(asio::use_awaitable));
    if (connected) {
      out.aborted = connected == asio::error::operation_aborted;
      out.error =
          "cannot connect to the service at " + service + ": " + connected.message() +
          (connected == asio::error::connection_refused ? " (service stopped or not running)" : "");
      co_return out;
    }
    http::request<http::empty_body> get{http::verb::get, target_of(t), 11};
    get.set(http::field::host, service);
    get.set(http::field::connection, "close");
    const auto [sent, n_sent] =
        co_await http::async_write(socket, get, asio::as_tuple(asio::use_awaitable));
    if (sent) {
      out.aborted = sent == asio::error::operation_aborted;
      out.error = is_reset(sent)
                      ? "connection reset by the service at " + service + " (service stopped?)"
                      : "sending to the service: " + sent.message();
      co_return out;
    }
    beast::flat_static_buffer<512> buffer;  // the whole reply fits, as in io_exchange
    http::response<http::string_body> reply;
    const auto [got, n_got] =
        co_await http::async_read(socket, buffer, reply, asio::as_tuple(asio::use_awaitable));
    if (got) {
      out.aborted = got == asio::error::operation_aborted;
      if (is_reset(got)) {
        out.error = "connection reset by the service at " + service + " (service stopped?)";
      } else if (got == http::error::end_of_stream || got == http::error::partial_message ||
                 got == asio::error::eof) {
        out.error = "service stopped: the connection closed after " + std::to_string(n_got) +
                    " bytes of the reply";
      } else {
        out.error = "reading from the service: " + got.message();
      }
      co_return out;
    }
    if (reply.result_int() != 200) {
      const std::string& body = reply.body();
      out.error = "the service answered " + std::to_string(reply.result_int()) + ": " +
                  body.substr(0, body.find('\n'));
      co_return out;
    }
    out.body = io_body_checksum(reply.body());
  } catch (const boost::system::system_error& e) {
    // A co_await after the task was cancelled throws (the awaitable's throw_if_cancelled).
    out.aborted = e.code() == asio::error::operation_aborted;
    out.error = e.code().message();
  }
  co_return out;
}
// [end-snippet]

// [snippet:asio-io-task]
/// Task i: its wait (the request, raced against --task-timeout-ms; or a timer), then its CPU part.
asio::awaitable<void> io_task(asio_io_run& run, std::uint32_t i) {
  const task& t = run.tasks[i];
  const auto cancelled = [&] { run.slots.fail(i, std::string(k_cancelled)); };
  if (run.slots.stopping()) co_return cancelled();
  task_record r{.id = i, .start_ns = ns_since(run.options.origin)};
  std::uint64_t body = 0;
  if (t.is_io()) {
    io_reply reply;
    if (const auto limit = run.options.task_timeout) {
      asio::steady_timer timer(co_await asio::this_coro::executor, *limit);
      // The first to succeed wins and the other is cancelled; both have ended when this resumes.
      auto first = co_await (request(t) || timer.async_wait(asio::use_awaitable));
      if (first.index() == 1) co_return run.slots.fail_error(i, io_timeout_cause(i, *limit));
      reply = std::get<0>(std::move(first));
    } else {
      reply = co_await request(t);
    }
    if (reply.aborted || run.slots.stopping()) co_return cancelled();
    if (!reply.error.empty()) {  // this task fails, with the words of a blocking executor's
      co_return run.slots.fail_error(i,
                                     "exception: task " + std::to_string(i) + ": " + reply.error);
    }
    body = reply.body;
  } else if (t.wait_ns > 0) {
    asio::steady_timer timer(co_await asio::this_coro::executor,
                             run.options.origin + std::chrono::nanoseconds(r.start_ns + t.wait_ns));
    const auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    if (ec) co_return cancelled();  // operation_aborted: the stop's signal
  }
  if (run.slots.stopping()) co_return cancelled();
  try {
    r.checksum = io_checksum(t, compute(t), body);
    r.end_ns = ns_since(run.options.origin);
    r.worker = t_worker;
    run.slots.complete(r);
  } catch (...) {  // a throw fails this task only, unless the run stops at the first error
    run.slots.fail_error(i, describe_current_exception());
  }
}
// [end-snippet]

run_result run_asio_io(std::span<const task> tasks, const run_options& options, int threads) {
  asio_io_run run(tasks, options, threads);
  if (tasks.empty()) return std::move(run.slots).collect(0);
  for (std::uint32_t i = 0; i < tasks.size(); ++i) {
    // One thread: the io_context's executor; every handler runs on that thread, one at a time.
    // P threads: a strand per task. A strand guarantees that the handlers posted through it run
    // one at a time, in order, on whichever thread is free: never two at once. A coroutine that
    // awaits one operation at a time needs none (each of its handlers starts the next, so they
    // cannot overlap: an "implicit strand"). Ours can have two pending: in `request || timer` the
    // read and the timer may complete together on two threads and both touch the race's shared
    // state and the loser's cancellation slot, and the stop's emit would race the operation that
    // installs its handler in that slot. On the task's strand all of those take turns.
    run.executors.push_back(threads == 1 ? asio::any_io_executor(run.io.get_executor())
                                         : asio::any_io_executor(asio::make_strand(run.io)));
  }
  for (std::uint32_t i = 0; i < tasks.size(); ++i) {
    asio::co_spawn(
        run.executors[i], io_task(run, i),
        asio::bind_cancellation_slot(run.signals[i].slot(), [&run](const std::exception_ptr& e) {
          if (!e) return;
          const std::lock_guard lock(run.escaped_mutex);
          if (!run.escaped) run.escaped = e;
        }));
  }
  {
    // Either stop (--cancel-after-ms from another thread, or a first error on a loop thread)
    // cancels every task's pending operation through its signal, on the task's own executor.
    const std::stop_callback on_stop(run.stop.token(), [&run] { run.cancel_all(); });
    const auto run_loop = [&run](int worker) {
      t_worker = worker;
      try {
        run.io.run();
      } catch (...) {
        const std::lock_guard lock(run.escaped_mutex);
        if (!run.escaped) run.escaped = std::current_exception();
        run.io.stop();
      }
    };
    std::vector<std::jthread> pool;  // joined before on_stop is unregistered
    pool.reserve(static_cast<std::size_t>(threads - 1));
    for (int k = 1; k < threads; ++k) pool.emplace_back(run_loop, k);
    run_loop(0);
  }
  if (run.escaped) std::rethrow_exception(run.escaped);
  return std::move(run.slots).collect(threads);
}

// asio-coro's plan (lesson 07): one worker, tasks in order, non-blocking waits, costs probed, the
// per-task cost probed on tasks that wait. An io task's request adds the probed round trip
// (the model's, as for every executor).
constexpr schedule k_one_thread_plan{.policy = placement::static_blocks,
                                     .waits = wait_mode::nonblocking,
                                     .workers = worker_rule::one,
                                     .per_task = unit_cost::probed,
                                     .probe_wait_overshoot = true,
                                     .probe_parked = true};

// One io_context's handler queue shared by P threads: a free thread takes the next ready
// handler, which the simulator's dynamic queue models (as it does coroutines-mn's).
constexpr schedule k_p_threads_plan{.policy = placement::dynamic_queue,
                                    .waits = wait_mode::nonblocking,
                                    .workers = worker_rule::requested,
                                    .worker_start = unit_cost::thread_start,
                                    .per_task = unit_cost::probed,
                                    .probe_wait_overshoot = true,
                                    .probe_parked = true};

run_result run_one_thread(std::span<const task> tasks, const run_options& options) {
  return run_asio_io(tasks, options, 1);
}

run_result run_p_threads(std::span<const task> tasks, const run_options& options) {
  return run_asio_io(tasks, options,
                     std::max(1, workers_used(k_p_threads_plan, options.workers, tasks.size())));
}

constexpr std::string_view k_no_timeout =
    "a coroutine cannot be interrupted while it computes (it gives up its thread only at a "
    "co_await); with --workload io the timeout bounds each request";

}  // namespace

const executor& asio_io_executor() {
  static const executor e{
      .name = "asio-io",
      .lesson = "08",
      .summary = "Boost.Asio + Beast: co_spawn per task, the HTTP request co_awaited, one thread",
      .plan = k_one_thread_plan,
      .no_timeout_because = k_no_timeout,
      .supports_io = true,
      .timeout_cancels_waits = true,
      .run = run_one_thread,
  };
  return e;
}

const executor& asio_io_mt_executor() {
  static const executor e{
      .name = "asio-io-mt",
      .lesson = "08",
      .summary = "the same on one io_context run by P threads, each task on its own strand",
      .plan = k_p_threads_plan,
      .no_timeout_because = k_no_timeout,
      .supports_io = true,
      .timeout_cancels_waits = true,
      .run = run_p_threads,
  };
  return e;
}

}  // namespace clab
