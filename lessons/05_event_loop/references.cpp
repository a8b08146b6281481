// Lesson 05 — the reference rows: the same task sets on two established event loops, one thread
// each. `asio-loop`: boost::asio::io_context with a steady_timer per task. `libuv`: a uv_loop_t
// with a uv_timer_t per task. Look for: libuv counts time in whole milliseconds, so a wait must be
// rounded up to a millisecond and one more before it is sure to have passed. An io task's
// request (workload io) is the same io_exchange as on our loop, its socket watched by each
// library's own reactor: an Asio stream_descriptor's async_wait, a libuv uv_poll_t.
#include <uv.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <vector>

#include "lessons/05_event_loop/executors.hpp"
#include "workloads/execute.hpp"
#include "workloads/io_exchange.hpp"

namespace clab {
namespace {

/// What both references share: computing a task whose wait is over, and the stop.
struct reference_run {
  reference_run(std::span<const task> t, const run_options& o)
      : tasks(t), options(o), slots(t.size(), o), start_ns(t.size(), 0) {}
  std::span<const task> tasks;
  const run_options& options;
  result_slots slots;
  std::vector<std::int64_t> start_ns;
  std::atomic<bool> stopping{false};

  /// `body`: the checksum of an io task's reply (0 for any other task).
  void finish(std::size_t i, std::uint64_t body = 0) {
    if (stopping.load(std::memory_order_relaxed)) {
      slots.fail(tasks[i].id, std::string(k_cancelled));
      return;
    }
    task_record r{.id = tasks[i].id, .start_ns = start_ns[i], .worker = 0};
    try {
      r.checksum = io_checksum(tasks[i], compute(tasks[i]), body);
      r.end_ns = ns_since(options.origin);
      slots.complete(r);
    } catch (...) {
      slots.fail(tasks[i].id, describe_current_exception());
      if (options.on_error == error_policy::stop_at_first) stopping.store(true);
    }
  }

  /// An io task's request failed, timed out or was cut by a stop: the task fails with `cause`;
  /// its own failure (not a stop's) stops the run under stop_at_first.
  void fail_request(std::size_t i, std::string cause, bool own_failure) {
    slots.fail(tasks[i].id, std::move(cause));
    if (own_failure && options.on_error == error_policy::stop_at_first) stopping.store(true);
  }
};

// ---------------------------------------------------------------------------------------------
// Asio. The request is our io_exchange over a descriptor that Asio watches (a
// posix::stream_descriptor's async_wait), not Asio's own tcp::socket with async_connect and
// async_read: the reference row then sends the same bytes and checks the same reply as every
// other executor, and measures Asio's reactor and handler dispatch, not a second HTTP client.
// The descriptor is release()d before ex.close(): Asio deregisters it without closing it, so
// the socket is closed once, by its owner.

/// One io task's request on the io_context. Lives in a vector for the run: a pending handler
/// refers to it by index, and the descriptor and timer must not move while they wait.
struct asio_request {
  std::unique_ptr<io_exchange> ex;
  std::optional<boost::asio::posix::stream_descriptor> socket;
  std::optional<boost::asio::steady_timer> timeout;
  bool open = false;  // in flight: neither finished, failed, timed out nor cancelled
};

struct asio_run {
  reference_run& run;
  boost::asio::io_context& io;
  std::vector<std::optional<boost::asio::steady_timer>>& timers;
  std::vector<asio_request> requests;

  /// Cancels every timer (its handler reports the task) and closes every request in flight.
  void cancel_all() {
    run.stopping.store(true);
    for (auto& t : timers) {
      if (t) t->cancel();  // its handler runs with operation_aborted and reports the task
    }
    for (std::size_t i = 0; i < requests.size(); ++i) {
      if (requests[i].open) {
        close(i);
        run.fail_request(i, std::string(k_cancelled), false);
      }
    }
  }

  /// Whichever comes first, the reply or the timeout, closes the request and cancels the other.
  void close(std::size_t i) {
    asio_request& r = requests[i];
    r.open = false;
    if (r.timeout) r.timeout->cancel();
    if (r.socket) {
      r.socket->cancel();   // a pending async_wait completes with operation_aborted
      r.socket->release();  // Asio lets go of the descriptor without closing it
    }
    r.ex->close();
  }

  void start(std::size_t i) {
    if (run.stopping.load()) {  // a first error while the run was starting: do not ask
      run.slots.fail(run.tasks[i].id, std::string(k_cancelled));
      return;
    }
    asio_request& r = requests[i];
    r.ex = std::make_unique<io_exchange>(run.tasks[i], /*blocking=*/false);
    r.open = true;
    try {
      const io_exchange::want w = r.ex->start();
      if (w == io_exchange::want::done) {
        done(i);
        return;
      }
      r.socket.emplace(io, r.ex->fd());
      wait(i, w);
    } catch (...) {
      failed(i, describe_current_exception());
      return;
    }
    if (run.options.task_timeout) {
      r.timeout.emplace(io, *run.options.task_timeout);
      r.timeout->async_wait([this, i](const boost::system::error_code& ec) {
        if (ec || !requests[i].open) return;  // cancelled: the request ended first
        failed(i, io_timeout_cause(run.tasks[i].id, *run.options.task_timeout));
      });
    }
  }

  void wait(std::size_t i, io_exchange::want w) {
    using boost::asio::posix::descriptor_base;
    requests[i].socket->async_wait(
        w == io_exchange::want::write ? descriptor_base::wait_write : descriptor_base::wait_read,
        [this, i](const boost::system::error_code& ec) {
          if (ec || !requests[i].open) return;  // aborted: closed by a timeout or a stop
          try {
            const io_exchange::want next = requests[i].ex->step();
            if (next == io_exchange::want::done) {
              done(i);
            } else {
              wait(i, next);  // Asio's waits are one-shot: armed again for each step
            }
          } catch (...) {
            failed(i, describe_current_exception());
          }
        });
  }

  void done(std::size_t i) {
    const std::uint64_t body = requests[i].ex->body_checksum();
    close(i);
    const bool was_stopping = run.stopping.load();
    run.finish(i, body);
    if (!was_stopping && run.stopping.load()) cancel_all();  // a first error
  }

  void failed(std::size_t i, std::string cause) {
    close(i);
    const bool was_stopping = run.stopping.load();
    run.fail_request(i, std::move(cause), true);
    if (!was_stopping && run.stopping.load()) cancel_all();
  }
};

run_result run_asio_loop(std::span<const task> tasks, const run_options& options) {
  reference_run run(tasks, options);
  if (tasks.empty()) return std::move(run.slots).collect(0);
  if (options.stop.stop_requested()) {
    for (const task& t : tasks) run.slots.fail(t.id, std::string(k_cancelled));
    return std::move(run.slots).collect(1);
  }
  boost::asio::io_context io(1);  // one thread runs it
  // One timer per task, constructed in place: a timer with a pending wait must not move.
  std::vector<std::optional<boost::asio::steady_timer>> timers(tasks.size());
  asio_run state{.run = run, .io = io, .timers = timers, .requests = {}};
  state.requests.resize(tasks.size());
  const auto cancel_all = [&state] { state.cancel_all(); };
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    run.start_ns[i] = ns_since(options.origin);
    if (tasks[i].is_io()) {
      state.start(i);
    } else if (tasks[i].wait_ns > 0) {
      timers[i].emplace(
          io, options.origin + std::chrono::nanoseconds(run.start_ns[i] + tasks[i].wait_ns));
      timers[i]->async_wait([&run, &cancel_all, i](const boost::system::error_code& ec) {
        const bool was_stopping = run.stopping.load();
        if (ec) {
          run.slots.fail(run.tasks[i].id, std::string(k_cancelled));
          return;
        }
        run.finish(i);
        if (!was_stopping && run.stopping.load()) cancel_all();  // a first error
      });
    } else {
      boost::asio::post(io, [&run, &cancel_all, i] {
        const bool was_stopping = run.stopping.load();
        run.finish(i);
        if (!was_stopping && run.stopping.load()) cancel_all();
      });
    }
  }
  const std::stop_callback on_stop(options.stop, [&] {
    run.stopping.store(true);
    boost::asio::post(io, cancel_all);  // timers belong to the loop's thread
  });
  io.run();
  return std::move(run.slots).collect(1);
}

/// libuv opens a process-wide pipe with its first loop (uv_loop_init: the lock of its signal
/// handling) and keeps it until the process exits. Opened here, at program start, so that a libuv
/// run leaves the process's descriptors as it found them (what every test checks after a run).
const bool k_libuv_pipe_opened = [] {
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) return false;
  uv_loop_close(&loop);
  return true;
}();

/// libuv's loop time is in whole milliseconds, truncated, and cached at the start of each turn:
/// a timer of T ms armed at loop time L fires once the (truncated) time reaches L + T, which can
/// be as little as T − 1 ms after it was armed. So a wait of w ms is armed as ⌈w⌉ + 1 ms, never
/// sooner than w. The loop mostly sleeps the whole timeout from the arming, so the wait ends about
/// ⌈w⌉ + 1.1 ms after it began (measured on the development VM at 0.1, 1 and 10 ms).
std::uint64_t libuv_timeout_ms(std::int64_t wait_ns) {
  if (wait_ns <= 0) return 0;
  return static_cast<std::uint64_t>((wait_ns + 999'999) / 1'000'000) + 1;
}

void on_libuv_poll(uv_poll_t* poll, int status, int events);
void on_libuv_timeout(uv_timer_t* timer);

struct libuv_run {
  reference_run& run;
  std::vector<uv_timer_t>& timers;  // an io task's is its --task-timeout-ms timer
  std::vector<uv_poll_t> polls;     // an io task's socket, watched (index: the task's)
  std::vector<std::unique_ptr<io_exchange>> requests;  // in flight: non-null
  uv_async_t stop_signal{};
  std::mutex stop_mutex;      // guards stop_open against the canceller's uv_async_send
  bool stop_open = true;      // stop_signal not yet closed
  std::size_t remaining = 0;  // tasks neither finished nor cancelled (loop thread)

  void settle_one() {
    if (--remaining > 0) return;
    const std::lock_guard lock(stop_mutex);  // the last task: the loop may end
    stop_open = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&stop_signal), nullptr);
  }
  void start_request(std::size_t i);
  void close_request(std::size_t i);
  void request_done(std::size_t i);
  void request_failed(std::size_t i, std::string cause);
  /// Requests first: closing one closes its timeout timer too, which the timer pass then skips.
  void cancel_pending() {
    run.stopping.store(true);
    for (std::size_t i = 0; i < requests.size(); ++i) {
      if (!requests[i]) continue;
      close_request(i);
      run.fail_request(i, std::string(k_cancelled), false);
      settle_one();
    }
    for (uv_timer_t& t : timers) {
      auto* h = reinterpret_cast<uv_handle_t*>(&t);
      if (!uv_is_active(h) || uv_is_closing(h)) continue;
      uv_timer_stop(&t);
      uv_close(h, nullptr);
      run.slots.fail(run.tasks[static_cast<std::size_t>(&t - timers.data())].id,
                     std::string(k_cancelled));
      settle_one();
    }
  }
};

// libuv's io: a uv_poll_t on the request's descriptor (libuv's epoll), re-started with the
// events each step wants; uv_poll_stop (which takes the descriptor out of the epoll) and uv_close
// come before ex.close(). The task's uv_timer_t is its timeout, raced with the request.

int libuv_events(io_exchange::want w) {
  return w == io_exchange::want::write ? UV_WRITABLE : UV_READABLE;
}

void libuv_run::start_request(std::size_t i) {
  if (run.stopping.load()) {  // a first error while the run was starting: do not ask
    run.fail_request(i, std::string(k_cancelled), false);
    uv_close(reinterpret_cast<uv_handle_t*>(&timers[i]), nullptr);
    settle_one();
    return;
  }
  requests[i] = std::make_unique<io_exchange>(run.tasks[i], /*blocking=*/false);
  try {
    const io_exchange::want w = requests[i]->start();
    if (w == io_exchange::want::done) {
      request_done(i);
      return;
    }
    if (const int rc = uv_poll_init_socket(timers[i].loop, &polls[i], requests[i]->fd()); rc != 0) {
      throw std::runtime_error(std::string("libuv: uv_poll_init_socket: ") + uv_strerror(rc));
    }
    polls[i].data = this;
    uv_poll_start(&polls[i], libuv_events(w), on_libuv_poll);
  } catch (...) {
    request_failed(i, describe_current_exception());
    return;
  }
  if (run.options.task_timeout) {  // ⌈limit⌉ + 1 ms, as a wait: libuv's timer must not be early
    const std::int64_t limit_ns = std::chrono::nanoseconds(*run.options.task_timeout).count();
    uv_timer_start(&timers[i], on_libuv_timeout, libuv_timeout_ms(limit_ns), 0);
  }
}

void libuv_run::close_request(std::size_t i) {
  auto* timer = reinterpret_cast<uv_handle_t*>(&timers[i]);
  if (!uv_is_closing(timer)) {
    uv_timer_stop(&timers[i]);
    uv_close(timer, nullptr);
  }
  auto* poll = reinterpret_cast<uv_handle_t*>(&polls[i]);
  if (poll->loop != nullptr && !uv_is_closing(poll)) {  // initialised: the socket was opened
    uv_poll_stop(&polls[i]);
    uv_close(poll, nullptr);
  }
  requests[i]->close();
  requests[i].reset();
}

void libuv_run::request_done(std::size_t i) {
  const std::uint64_t body = requests[i]->body_checksum();
  close_request(i);
  const bool was_stopping = run.stopping.load();
  run.finish(i, body);
  settle_one();
  if (!was_stopping && run.stopping.load() && remaining > 0) cancel_pending();
}

void libuv_run::request_failed(std::size_t i, std::string cause) {
  close_request(i);
  const bool was_stopping = run.stopping.load();
  run.fail_request(i, std::move(cause), true);
  settle_one();
  if (!was_stopping && run.stopping.load() && remaining > 0) cancel_pending();
}

void on_libuv_poll(uv_poll_t* poll, int /*status*/, int /*events*/) {
  // An error status (the socket in error) is step()'s to find out and name.
  auto& state = *static_cast<libuv_run*>(poll->data);
  const auto i = static_cast<std::size_t>(poll - state.polls.data());
  if (!state.requests[i]) return;
  try {
    const io_exchange::want w = state.requests[i]->step();
    if (w == io_exchange::want::done) {
      state.request_done(i);
    } else {
      uv_poll_start(poll, libuv_events(w), on_libuv_poll);  // the events this step wants
    }
  } catch (...) {
    state.request_failed(i, describe_current_exception());
  }
}

void on_libuv_timeout(uv_timer_t* timer) {
  auto& state = *static_cast<libuv_run*>(timer->data);
  const auto i = static_cast<std::size_t>(timer - state.timers.data());
  if (!state.requests[i]) return;
  state.request_failed(i, io_timeout_cause(state.run.tasks[i].id, *state.run.options.task_timeout));
}

void on_libuv_timer(uv_timer_t* timer) {
  auto& state = *static_cast<libuv_run*>(timer->data);
  const bool was_stopping = state.run.stopping.load();
  state.run.finish(static_cast<std::size_t>(timer - state.timers.data()));
  uv_close(reinterpret_cast<uv_handle_t*>(timer), nullptr);
  state.settle_one();
  if (!was_stopping && state.run.stopping.load() && state.remaining > 0) state.cancel_pending();
}

run_result run_libuv(std::span<const task> tasks, const run_options& options) {
  reference_run run(tasks, options);
  if (tasks.empty()) return std::move(run.slots).collect(0);
  if (options.stop.stop_requested()) {
    for (const task& t : tasks) run.slots.fail(t.id, std::string(k_cancelled));
    return std::move(run.slots).collect(1);
  }
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) throw std::runtime_error("libuv: uv_loop_init failed");
  std::vector<uv_timer_t> timers(tasks.size());
  libuv_run state{.run = run, .timers = timers, .remaining = tasks.size()};
  state.polls.resize(tasks.size());  // zeroed: loop == nullptr marks a poll never initialised
  state.requests.resize(tasks.size());
  uv_async_init(&loop, &state.stop_signal,
                [](uv_async_t* a) { static_cast<libuv_run*>(a->data)->cancel_pending(); });
  state.stop_signal.data = &state;
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    uv_timer_init(&loop, &timers[i]);
    timers[i].data = &state;
    uv_update_time(&loop);  // the cached loop time would make the first waits short
    run.start_ns[i] = ns_since(options.origin);
    if (tasks[i].is_io()) {
      state.start_request(i);
    } else {
      uv_timer_start(&timers[i], on_libuv_timer, libuv_timeout_ms(tasks[i].wait_ns), 0);
    }
  }
  {
    // Only uv_async_send is safe from another thread; the mutex keeps it off a closed handle.
    const std::stop_callback on_stop(options.stop, [&state] {
      const std::lock_guard lock(state.stop_mutex);
      if (state.stop_open) uv_async_send(&state.stop_signal);
    });
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_loop_close(&loop);
  return std::move(run.slots).collect(1);
}

/// Both references: one thread, non-blocking waits on the library's own timers.
constexpr schedule k_one_loop{.policy = placement::static_blocks,
                              .waits = wait_mode::nonblocking,
                              .workers = worker_rule::one,
                              .per_task = unit_cost::probed,
                              .probe_wait_overshoot = true};

}  // namespace

const executor& asio_loop_executor() {
  static const executor e{
      .name = "asio-loop",
      .lesson = "05",
      .summary = "reference: boost::asio::io_context, a steady_timer per task, one thread",
      .plan = k_one_loop,
      .no_timeout_because = "a loop cannot interrupt a running callback",
      .reference = true,
      .supports_io = true,
      .timeout_cancels_waits = true,
      .run = run_asio_loop,
  };
  return e;
}

const executor& libuv_executor() {
  static const executor e{
      .name = "libuv",
      .lesson = "05",
      .summary = "reference: libuv, a uv_timer_t per task (millisecond timers), one thread",
      .plan = k_one_loop,
      .no_timeout_because = "a loop cannot interrupt a running callback",
      .reference = true,
      .supports_io = true,
      .timeout_cancels_waits = true,
      .run = run_libuv,
  };
  return e;
}

}  // namespace clab
