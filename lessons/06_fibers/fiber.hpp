// Lesson 06's engine: stackful fibers over boost::context::fiber, scheduled by us and parked on
// lesson 05's loop. A fiber is a stack and a saved register set; parking one is "remember who
// wakes it, then jump to someone else", resuming one is a push onto a ready deque.
// Look for: every switch is one jump in switch_to() (fiber.cpp), and a parked fiber becomes
// visible to others only after the jump away from it has finished (the after-switch step).
#pragma once

#include <atomic>
#include <boost/context/fiber.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "lessons/05_event_loop/event_loop.hpp"
#include "lessons/06_fibers/stacks.hpp"

namespace clab {

/// Which stacks a scheduler's fibers run on (see stacks.hpp): `slab` carves them from a few large
/// mappings and checks a canary at every switch (no mapping limit: 100 000 fibers are fine);
/// `guarded` gives each its own mapping and guard page (an overflow faults at once; about 32 000
/// stacks at most under the default vm.max_map_count).
enum class stack_kind { slab, guarded };

class fiber_scheduler;
class fiber_pool;

/// What ended a park on a descriptor (this_fiber::wait_readable, wait_writable): the descriptor
/// became ready (or reported an error or a hangup, which the next read or write will name), the
/// stop was requested, or the deadline passed first.
enum class fd_wait : std::uint8_t { ready, stopped, timed_out };
template <class R>
class fiber_handle;

namespace detail {

struct join_state_base;

/// Where a failure nobody joined goes: run() of the scheduler or pool rethrows the first one.
class failure_sink {
 public:
  /// Any thread. Keeps the first failure (and counts the rest).
  void orphan(std::exception_ptr error) noexcept;
  /// Rethrows the first kept failure, if any, and forgets it.
  void rethrow_orphan();
  /// Writes a line to stderr about a failure still kept (for a destructor).
  void report_leftover(const char* owner) noexcept;

 private:
  std::mutex mutex_;
  std::exception_ptr first_;  // guarded by mutex_
  std::size_t count_ = 0;     // guarded by mutex_
};

/// The per-fiber control block, ~120 bytes, placed at the top of the fiber's own stack (so a
/// spawn allocates nothing but the stack and the small join state). Intrusive links: a fiber is in
/// at most one ready deque at a time, and only while it is ready.
struct fiber_ctl {
  boost::context::fiber cont;  // the saved context while the fiber is not running
  fiber_ctl* next = nullptr;   // ready-deque links
  fiber_ctl* prev = nullptr;
  std::uint64_t label = 0;                      // names the fiber (lag monitor, overflow report)
  void (*body)(fiber_ctl*) noexcept = nullptr;  // runs the typed body; stores result or error
  join_state_base* state = nullptr;             // shared with the handle
  boost::context::stack_context stack;          // the whole stack, this block included
  void* tsan_fiber = nullptr;                   // ThreadSanitizer's fiber (tsan preset only)
  // The word a switch away from this fiber checks: a slab stack's top canary word, or (guarded
  // stacks, the loop's own context) a word that always holds the canary: one check, no branch.
  const std::uint64_t* canary = &slab_stacks::k_canary[slab_stacks::k_checked_word];
};

/// What a fiber and its handle share: the result, the exception, and who waits for it. Two owners
/// (the fiber and the handle); the last to let go frees it and reports an untaken exception.
struct join_state_base {
  // 0: running and nobody waits; k_finished: finished; otherwise the fiber_ctl* parked in join().
  static constexpr std::uintptr_t k_finished = 1;
  std::atomic<std::uintptr_t> waiter{0};
  std::atomic<int> owners{2};
  std::exception_ptr error;
  bool taken = false;  // join() took the result or the exception (handle side only)
  std::uint64_t label = 0;
  failure_sink* sink = nullptr;
  void (*destroy)(join_state_base*) noexcept = nullptr;

  /// Drops one owner; the last frees the state, first handing an untaken error to the sink.
  void release() noexcept;
  /// Marks the state finished and returns the fiber parked in join(), if any (fiber side).
  fiber_ctl* finish() noexcept;
  [[nodiscard]] bool finished() const noexcept {
    return waiter.load(std::memory_order_acquire) == k_finished;
  }
};

template <class R>
struct join_state final : join_state_base {
  std::optional<R> value;
};
template <>
struct join_state<void> final : join_state_base {};

/// Parks the calling fiber until `s` is finished (returns at once if it is). Outside a fiber it
/// throws std::logic_error unless `s` is finished already.
void wait_for(join_state_base& s);

/// A fiber's frame at the top of its stack: the control block, then the body, destroyed inside
/// the fiber as soon as it returns (so its destructors run on the fiber, not in a later switch).
template <class Fn, class R>
struct fiber_frame final : fiber_ctl {
  union {
    Fn fn;
  };
  template <class A>
  explicit fiber_frame(A&& a) : fn(std::forward<A>(a)) {
    body = &run_body;
  }
  ~fiber_frame() {}  // fn is destroyed by run_body
  fiber_frame(const fiber_frame&) = delete;
  fiber_frame& operator=(const fiber_frame&) = delete;

  static void run_body(fiber_ctl* c) noexcept {
    auto* self = static_cast<fiber_frame*>(c);
    auto* st = static_cast<join_state<R>*>(c->state);
    try {
      if constexpr (std::is_void_v<R>) {
        self->fn();
      } else {
        st->value.emplace(self->fn());
      }
    } catch (...) {
      st->error = std::current_exception();
    }
    std::destroy_at(&self->fn);
  }
};

}  // namespace detail

/// The result of a spawned fiber. Move-only. join() waits for it; dropping the handle detaches the
/// fiber (it runs on; an exception it throws goes to run()). A handle must not outlive the
/// scheduler or pool that made it.
template <class R>
class [[nodiscard]] fiber_handle {
 public:
  fiber_handle() = default;
  fiber_handle(fiber_handle&& o) noexcept : state_(std::exchange(o.state_, nullptr)) {}
  fiber_handle& operator=(fiber_handle&& o) noexcept {
    if (this != &o) {
      reset();
      state_ = std::exchange(o.state_, nullptr);
    }
    return *this;
  }
  fiber_handle(const fiber_handle&) = delete;
  fiber_handle& operator=(const fiber_handle&) = delete;
  ~fiber_handle() { reset(); }

  /// From a fiber of the same scheduler or pool: parks until the fiber has finished, then returns
  /// its result or rethrows its exception. From outside any fiber (after run() returned): the same
  /// if it has finished, std::logic_error if not. Once only: a second join() throws logic_error.
  R join() {
    if (state_ == nullptr || state_->taken) throw std::logic_error("fiber_handle: nothing to join");
    detail::wait_for(*state_);
    state_->taken = true;
    if (state_->error) std::rethrow_exception(state_->error);
    if constexpr (!std::is_void_v<R>) {
      return std::move(*static_cast<detail::join_state<R>*>(state_)->value);
    }
  }

  /// True once the fiber has finished (returned or thrown).
  [[nodiscard]] bool done() const noexcept { return state_ != nullptr && state_->finished(); }
  /// The label the fiber was spawned with.
  [[nodiscard]] std::uint64_t label() const noexcept { return state_ ? state_->label : 0; }
  /// True unless default-constructed, moved from or detached.
  [[nodiscard]] bool valid() const noexcept { return state_ != nullptr; }
  /// Lets go of the fiber: it runs on, and an exception it throws is rethrown by run().
  void detach() noexcept { reset(); }

 private:
  friend class fiber_scheduler;
  friend class fiber_pool;
  explicit fiber_handle(detail::join_state_base* s) : state_(s) {}
  void reset() noexcept {
    if (state_ != nullptr) std::exchange(state_, nullptr)->release();
  }
  detail::join_state_base* state_ = nullptr;
};

/// One thread's fiber scheduler, running on that thread's event_loop. Usage:
///   event_loop loop;
///   fiber_scheduler fibers(loop);
///   auto h = fibers.spawn([] { this_fiber::sleep_for(5ms); return 42; }, /*label=*/1);
///   fibers.run();            // turns the loop until every fiber has finished
///   int v = h.join();        // 42
/// Order rules (the tests check them):
///  - spawn() from outside a fiber appends the new fiber to the BACK of the ready deque: fibers
///    spawned before run() start in spawn order.
///  - spawn() from inside a fiber is work-first, as in Cilk: the child runs at once and the parent
///    waits at the FRONT of the ready deque, so it continues as soon as the child parks or
///    finishes. (Go does the opposite: the parent runs on and the child waits in a "runnext" slot,
///    first in line.) A tree of spawns then runs depth-first and holds about depth × fan-out
///    stacks, not one per node (skynet's 1 111 111 fibers on one thread).
///  - this_fiber::yield() moves the fiber to the BACK; the front fiber runs next.
///  - A fiber woken by a timer (sleep_for), by its descriptor (wait_readable) or by a finished
///    fiber it joined goes to the BACK.
///    Timers wake in deadline order (the loop's rule), so sleepers wake in deadline order.
///  - Ready fibers run from loop callbacks, in batches: one loop callback resumes up to
///    max(ready fibers when it began, 64) of them, each switching straight to the next (one jump
///    per switch); then the loop turns, so timers and descriptors are never starved.
/// Exceptions: a fiber's exception is caught at its top and rethrown by join(). One nobody joins
/// (the handle was dropped, or destroyed unjoined) is rethrown by run() once the loop is done; the
/// other fibers finish first either way. Thread rules: everything on the loop's thread.
class fiber_scheduler : public detail::failure_sink {
 public:
  explicit fiber_scheduler(event_loop& loop, stack_kind stacks = stack_kind::slab);
  /// Every fiber must have finished: destroying a scheduler with parked fibers writes one line to
  /// stderr and calls std::terminate (like destroying a joinable std::thread).
  ~fiber_scheduler();
  fiber_scheduler(const fiber_scheduler&) = delete;
  fiber_scheduler& operator=(const fiber_scheduler&) = delete;

  /// Starts `body()` as a fiber (see the order rules above); R is its result type (void or an
  /// object type). Allocates one stack (pooled) and one small join state.
  template <class F>
  auto spawn(F&& body, std::uint64_t label = 0)
      -> fiber_handle<std::invoke_result_t<std::decay_t<F>&>> {
    using R = std::invoke_result_t<std::decay_t<F>&>;
    return fiber_handle<R>(spawn_frame<std::decay_t<F>, R>(std::forward<F>(body), label, this));
  }

  /// Turns the loop until it is idle: every fiber has finished (or loop.stop() was called). Then
  /// rethrows the first exception no join() took. Throws std::logic_error from inside a fiber.
  void run();

  /// Lag monitor: turns lesson 05's monitor on for this loop (set_slow_callback) and resumes each
  /// fiber from its own loop callback labelled with the fiber's label, so a fiber that never parks
  /// is named by its label. Costs a loop turn and a second jump per switch while on; a threshold
  /// of 0 turns both off (back to batches).
  void set_slow_fiber(std::chrono::nanoseconds threshold, slow_callback_reporter reporter);

  /// Fibers spawned and not finished.
  [[nodiscard]] std::size_t live() const noexcept { return live_; }
  /// Jumps into fibers so far (a switch from one fiber straight to the next counts one).
  [[nodiscard]] std::uint64_t switches() const noexcept { return switches_; }
  /// Mappings the stacks use (see stacks.hpp): a few for slab stacks, 2 per stack for guarded.
  [[nodiscard]] std::size_t stack_mappings() const noexcept;
  [[nodiscard]] event_loop& loop() noexcept { return loop_; }

  /// The scheduler of the fiber or batch running on this thread, or nullptr.
  [[nodiscard]] static fiber_scheduler* current() noexcept;

 private:
  friend class fiber_pool;
  friend void detail::wait_for(detail::join_state_base&);
  friend struct stack_release;
  friend struct this_fiber_access;

  // What the context that receives control does for the one that left (see arrived()).
  struct after_switch {
    enum kind : std::uint8_t { none, push_front, push_back, wait_join } what = none;
    detail::fiber_ctl* who = nullptr;
    detail::fiber_ctl* then_front = nullptr;  // push_front: pushed to the front after `who`
    detail::join_state_base* join = nullptr;
  };

  // The ready deque: intrusive, doubly linked. N:1 it takes no lock; in a pool, thieves take from
  // the back, so each operation takes the deque's mutex (see fiber_pool).
  struct ready_deque {
    detail::fiber_ctl* head = nullptr;
    detail::fiber_ctl* tail = nullptr;
    std::size_t size = 0;
    void push_front(detail::fiber_ctl* f) noexcept;
    void push_back(detail::fiber_ctl* f) noexcept;
    detail::fiber_ctl* pop_front() noexcept;
    detail::fiber_ctl* pop_back() noexcept;
  };

  fiber_scheduler(event_loop& loop, stack_kind stacks, fiber_pool* pool, int worker);

  template <class Fn, class R, class A>
  detail::join_state_base* spawn_frame(A&& fn, std::uint64_t label, detail::failure_sink* sink);
  boost::context::stack_context allocate_stack();
  void deallocate_stack(boost::context::stack_context& s) noexcept;
  detail::join_state_base* launch(detail::fiber_ctl* f, detail::join_state_base* st,
                                  std::size_t frame_bytes) noexcept;
  static void* place_frame(boost::context::stack_context s, std::size_t bytes, std::size_t align);

  // The engine (fiber.cpp).
  void switch_to(detail::fiber_ctl* from, detail::fiber_ctl* to) noexcept;
  void arrived(void* fake_stack, boost::context::fiber&& back) noexcept;
  void arrived_from_dead(boost::context::fiber&& back) noexcept;
  void do_after() noexcept;
  void leave_for(void** fake_stack, detail::fiber_ctl* to) noexcept;
  void park(after_switch a) noexcept;
  void yield() noexcept;
  void yield_slow() noexcept;
  void sleep_until(event_loop::clock::time_point deadline) noexcept;
  bool sleep_until(event_loop::clock::time_point deadline, const std::stop_token& stop);
  struct fd_wake;  // one fiber parked on a descriptor (fiber.cpp)
  fd_wait wait_fd(int fd, std::uint32_t events, const std::stop_token& stop,
                  event_loop::clock::time_point deadline);
  [[noreturn]] void finish_fiber(detail::fiber_ctl* f) noexcept;
  [[noreturn]] static void fiber_main(detail::fiber_ctl* f, boost::context::fiber&& back);
  detail::fiber_ctl* pick_next() noexcept;
  void make_ready_back(detail::fiber_ctl* f) noexcept;
  void push_ready(detail::fiber_ctl* f, bool front) noexcept;
  detail::fiber_ctl* pop_ready() noexcept;
  void queue_batch() noexcept;
  void run_batch() noexcept;
  [[noreturn]] static void overflowed(const detail::fiber_ctl* f) noexcept;
  [[nodiscard]] std::size_t ready_size() noexcept;

  event_loop& loop_;
  fiber_pool* pool_ = nullptr;  // non-null: one worker of a pool
  int worker_ = 0;
  stack_kind kind_;
  std::unique_ptr<slab_stacks> slab_;
  std::unique_ptr<guarded_stacks> guarded_;

  detail::fiber_ctl main_;  // the loop's own context (no stack of ours): where batches start
  detail::fiber_ctl* running_ = &main_;
  detail::fiber_ctl* previous_ = nullptr;  // who jumped to the running context (null: it died)
  after_switch after_;
  void* dead_tsan_ = nullptr;  // a finished fiber's TSan fiber, destroyed by the next context
  boost::context::stack_context dying_stack_;  // a finished fiber's stack, freed by the next one
  alignas(boost::context::fiber) unsigned char forgotten_[sizeof(boost::context::fiber)];
  const void* main_stack_bottom_ = nullptr;  // ASan: the loop thread's stack, learned on the way
  std::size_t main_stack_size_ = 0;

  ready_deque ready_;
  std::mutex ready_mutex_;  // guards ready_ in a pool only
  std::size_t budget_ = 0;  // resumes left in this batch
  bool in_batch_ = false;
  bool batch_queued_ = false;
  bool exact_labels_ = false;  // one loop callback per resume (the lag monitor is on)
  std::size_t live_ = 0;
  std::uint64_t switches_ = 0;

  // Pool workers only (see fiber_pool). started_ and finished_ count the fibers this worker
  // launched and finished; each is written by this worker's thread only (by the caller's before
  // run()), so counting costs no shared write: a pool-wide counter, written by every thread at
  // every spawn and finish, made skynet on two threads slower than on one.
  std::atomic<std::uint64_t> started_{0};
  std::atomic<std::uint64_t> finished_{0};
  std::atomic<bool> idle_{false};
  std::atomic<bool> wake_posted_{false};
  std::uint32_t steal_seed_ = 1;
};

/// M:N: P threads, each with its own event_loop and fiber_scheduler, balancing ready fibers by
/// work stealing. Usage:
///   fiber_pool pool(4);
///   pool.spawn([&] { for (int i = 0; i < 1000; ++i) pool.spawn(work, i).detach(); });
///   pool.run();   // returns once every fiber spawned has finished
/// Each worker pushes and pops at the front of its own deque (work-first, as on one thread); an
/// idle worker steals the oldest fiber from the back of another's. The deques take a mutex each:
/// stealing needs the owner and the thieves to agree, a short lock on this path only (N:1 takes
/// none), and a lock-free Chase-Lev deque is the known next step. An idle worker sleeps in its
/// loop (waiting for its timers) and is woken with event_loop::post when work appears elsewhere.
/// A fiber woken by a timer goes to the deque of the thread whose loop fired it, and may be stolen
/// from there: fibers migrate. So across a park (sleep_for, yield, join) never hold a std::mutex
/// (unlocking on another thread is undefined) nor keep a thread_local's address or value: the
/// thread may have changed. The engine itself re-reads the current scheduler after every switch.
class fiber_pool : public detail::failure_sink {
 public:
  explicit fiber_pool(int threads, stack_kind stacks = stack_kind::slab);
  ~fiber_pool();  ///< every fiber must have finished (as ~fiber_scheduler)
  fiber_pool(const fiber_pool&) = delete;
  fiber_pool& operator=(const fiber_pool&) = delete;

  /// From a fiber of this pool: work-first on that fiber's thread. From outside, and only while
  /// run() is not active: dealt round robin to the threads' deques, back, in spawn order.
  template <class F>
  auto spawn(F&& body, std::uint64_t label = 0)
      -> fiber_handle<std::invoke_result_t<std::decay_t<F>&>> {
    fiber_scheduler* s = fiber_scheduler::current();
    if (s == nullptr || s->pool_ != this) s = next_outside();
    using R = std::invoke_result_t<std::decay_t<F>&>;
    auto* st = s->template spawn_frame<std::decay_t<F>, R>(std::forward<F>(body), label, this);
    return fiber_handle<R>(st);
  }

  /// Runs the calling thread as worker 0 and threads - 1 more, until every fiber has finished;
  /// then rethrows the first exception no join() took. May be called again after more spawns.
  void run();

  [[nodiscard]] int threads() const noexcept { return static_cast<int>(workers_.size()); }
  /// Fibers resumed by each worker's thread (steals show as resumes on the thief), last run().
  [[nodiscard]] std::vector<std::uint64_t> switches_per_thread() const;

 private:
  friend class fiber_scheduler;
  struct worker;
  fiber_scheduler* next_outside();
  /// Fibers started and not finished, from the workers' counters (see end_if_done()).
  [[nodiscard]] std::uint64_t live() const noexcept;
  /// From a worker about to sleep with nothing to run: if no fiber is left anywhere, lets every
  /// worker's loop return (once per run()).
  void end_if_done() noexcept;
  void wake_idle(fiber_scheduler* self) noexcept;
  detail::fiber_ctl* steal(fiber_scheduler* thief) noexcept;

  std::vector<std::unique_ptr<worker>> workers_;
  std::size_t next_ = 0;  // round robin of outside spawns
  std::atomic<bool> ended_{false};
  alignas(64) std::atomic<int> idle_count_{0};  // read at every push: a line of its own
  bool running_ = false;
};

namespace this_fiber {
/// Lets the other ready fibers run: moves this fiber to the back of the ready deque.
void yield();
/// Parks this fiber on a loop timer until `deadline`; the loop runs the others meanwhile.
void sleep_until(event_loop::clock::time_point deadline);
/// sleep_until(now + d); a d of zero or less still parks until the loop's next turn.
void sleep_for(std::chrono::nanoseconds d);
/// As sleep_until(deadline), but a stop requested on `stop` (from any thread) wakes the fiber at
/// once. Returns true if it slept until the deadline, false if the stop came first (or had come
/// before the call: then it does not park at all). Costs one small allocation per call when `stop`
/// can be stopped.
[[nodiscard]] bool sleep_until(event_loop::clock::time_point deadline, std::stop_token stop);
/// sleep_until(now + d, stop).
[[nodiscard]] bool sleep_for(std::chrono::nanoseconds d, std::stop_token stop);
/// Parks this fiber until `fd` (a non-blocking socket, a pipe, an eventfd: whatever epoll takes) is
/// readable, a stop is requested on `stop` (from any thread), or `deadline` passes; the loop runs
/// the others meanwhile. The park of a blocking read, without the blocked thread. Returns what
/// came first; a stop requested before the call returns `stopped` without parking. An error or a
/// hangup on `fd` counts as ready: the read that follows reports it. On return the loop no longer
/// watches `fd` (close it whenever you like), and a second wait watches it afresh. One fiber per
/// descriptor at a time. Throws std::system_error if epoll refuses `fd` (a regular file: EPERM).
/// Costs two epoll_ctl calls (watch, unwatch), and one small allocation when `stop` can be stopped.
[[nodiscard]] fd_wait wait_readable(
    int fd, std::stop_token stop = {},
    event_loop::clock::time_point deadline = event_loop::clock::time_point::max());
/// As wait_readable(), until `fd` is writable (a connect has finished, a full send buffer drained).
[[nodiscard]] fd_wait wait_writable(
    int fd, std::stop_token stop = {},
    event_loop::clock::time_point deadline = event_loop::clock::time_point::max());
/// The running fiber's label (0 outside a fiber).
[[nodiscard]] std::uint64_t label() noexcept;
/// True while a fiber runs on this thread.
[[nodiscard]] bool in_fiber() noexcept;
/// The pool thread running this fiber (0 on a lone scheduler); may change after any park.
[[nodiscard]] int worker() noexcept;
}  // namespace this_fiber

// ---- templates ----

template <class Fn, class R, class A>
detail::join_state_base* fiber_scheduler::spawn_frame(A&& fn, std::uint64_t label,
                                                      detail::failure_sink* sink) {
  static_assert(std::is_void_v<R> || std::is_object_v<R>,
                "spawn: return void or an object (wrap a reference in std::reference_wrapper)");
  auto st = std::make_unique<detail::join_state<R>>();
  st->label = label;
  st->sink = sink;
  st->destroy = [](detail::join_state_base* s) noexcept {
    delete static_cast<detail::join_state<R>*>(s);
  };
  using frame = detail::fiber_frame<Fn, R>;
  boost::context::stack_context stack = allocate_stack();
  detail::fiber_ctl* f = nullptr;
  try {
    void* where = place_frame(stack, sizeof(frame), alignof(frame));
    f = ::new (where) frame(std::forward<A>(fn));
  } catch (...) {
    deallocate_stack(stack);
    throw;
  }
  f->label = label;
  f->stack = stack;
  return launch(f, st.release(), sizeof(frame));
}

}  // namespace clab
