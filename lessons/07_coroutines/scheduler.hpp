// Lesson 07's scheduler: tasks (task.hpp) run on lesson 05's loop, one thread. A ready unit is
// linked into the ready queue through its own context (no queue entry is allocated); a sleeping one
// is its frame plus a 16-byte entry in the scheduler's sleep heap, which keeps ONE loop timer armed
// for the earliest deadline. Look for: the sleep heap (the position each sleeper keeps, so a
// destroyed or stopped sleep leaves it in O(log n)), the stop protocol that trusts a sleeper only
// once the loop thread has found it still registered, the detached units kept in a slab, and
// fd_awaiter: a socket wait is the same park, on the loop's epoll instead of the sleep heap.
#pragma once

#include <cassert>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "lessons/05_event_loop/event_loop.hpp"
#include "lessons/07_coroutines/task.hpp"

namespace clab::coro {

class coro_scheduler;
template <class T>
class coro_handle;

/// Thrown out of a stoppable sleep (sleep_for/sleep_until with a std::stop_token) whose token was
/// stopped before or during the sleep: the coroutine may catch it, or end with it ("cancelled").
class task_cancelled : public std::runtime_error {
 public:
  task_cancelled() : std::runtime_error("task cancelled") {}
};

/// How a coro_scheduler orders its ready coroutines: FIFO, or by priority (the larger key first;
/// equal keys FIFO), the key coming from spawn_options::priority.
enum class ready_order { fifo, priority };

/// What spawn() attaches to a task: a label naming it, and its key in a priority ready queue.
struct spawn_options {
  std::uint64_t label = 0;
  std::int64_t priority = 0;
};

namespace detail {

/// Where a sleep parked in the scheduler's sleep heap is: its index there, and its arrival number
/// (equal deadlines wake FIFO).
struct sleep_slot {
  std::uint32_t pos;
  std::uint32_t seq;
};

/// Whose a unit is and its keys: its scheduler, its key in a priority ready queue, its label.
/// Shared, not copied into each unit: every unit spawned without options points at its scheduler's
/// own {sched, 0, 0}, a when_all child at its parent's; only a detached unit spawned with a label
/// or a priority has one of its own (a 24-byte block, freed with the unit), and a join state holds
/// its own inline. A million plain sleepers: 16 bytes less each.
struct unit_info {
  coro_scheduler* sched = nullptr;
  std::int64_t priority = 0;
  std::uint64_t label = 0;
};

/// One unit the scheduler runs: a spawned task or a when_all child. Its info orders it in a
/// priority ready queue (what happens at its end is its top frame's final hook, kept apart: a
/// million detached units share one). It outlives the unit's frame, so an awaiter inside that frame
/// may use it until the frame is destroyed. A unit is in the ready queue at most once (it is
/// running, parked on one thing, or ready), so the queue links the contexts themselves: `resume` is
/// the coroutine to resume (the innermost suspended frame of the unit), `ready_next` the next ready
/// unit. 24 bytes.
struct coro_ctx {
  const unit_info* info = nullptr;  // never null once the unit is spawned
  std::coroutine_handle<> resume;   // set by make_ready (and by a sleep, when it parks)
  union {
    coro_ctx* ready_next = nullptr;  // FIFO link while ready; the slab's free list while unused
    sleep_slot sleep;  // while parked in a plain sleep (never ready then): the word is free
  };
  [[nodiscard]] coro_scheduler* sched() const noexcept { return info->sched; }
  [[nodiscard]] std::int64_t priority() const noexcept { return info->priority; }
  [[nodiscard]] std::uint64_t label() const noexcept { return info->label; }
};

/// A stoppable sleep's own place in the sleep heap (a plain sleep uses its unit's context instead):
/// the unit asleep (set while asleep, or woken and not yet resumed) and its slot.
struct sleep_node {
  coro_ctx* ctx = nullptr;
  sleep_slot sleep{0, 0};
};

/// A spawn_detached unit: its context and its frame (null once finished: the slot is free). Kept in
/// the scheduler's slab, 32 bytes: no join state, no list links (the destructor walks the slab), no
/// final hook of its own (detached_hook<T>, below, serves them all).
struct detached_unit final : coro_ctx {
  std::coroutine_handle<> frame;
};

class stoppable_registry;

/// The unit running on this thread (set by the scheduler around each resumption), or null.
inline thread_local coro_ctx* t_ctx = nullptr;

/// What a spawned task and its handle share. Two owners (the scheduler's unit and the handle);
/// the last to let go frees it, first handing an exception nobody took to the scheduler.
struct join_base : final_hook, coro_ctx {
  unit_info own;                  // what `info` points at
  std::coroutine_handle<> frame;  // the task's frame while it lives
  join_base* prev = nullptr;      // the scheduler's list of unfinished units
  join_base* next = nullptr;
  std::exception_ptr error;
  int owners = 2;
  bool finished = false;
  bool taken = false;  // join() took the result or the exception
  void (*destroy)(join_base*) noexcept = nullptr;
  void release() noexcept;
};
template <class T>
struct join_state final : join_base {
  std::optional<T> value;
};
template <>
struct join_state<void> final : join_base {};

template <class T>
std::coroutine_handle<> spawned_final(final_hook* hook, std::coroutine_handle<> self,
                                      promise_base& p) noexcept;
template <class T>
std::coroutine_handle<> detached_final(final_hook* hook, std::coroutine_handle<> self,
                                       promise_base& p) noexcept;
/// The one final hook of every detached task<T>: its unit is the one running (t_ctx) when its top
/// frame ends, so the hook needs no pointer to it.
template <class T>
inline final_hook detached_hook{&detached_final<T>};

}  // namespace detail

/// The result of a spawned task. Move-only; must not outlive its scheduler. Dropping it detaches
/// the task (it runs on; an exception it ends with is rethrown by run()).
template <class T>
class [[nodiscard]] coro_handle {
 public:
  coro_handle() = default;
  coro_handle(coro_handle&& o) noexcept : st_(std::exchange(o.st_, nullptr)) {}
  coro_handle& operator=(coro_handle&& o) noexcept {
    if (this != &o) {
      reset();
      st_ = std::exchange(o.st_, nullptr);
    }
    return *this;
  }
  coro_handle(const coro_handle&) = delete;
  coro_handle& operator=(const coro_handle&) = delete;
  ~coro_handle() { reset(); }

  /// After the task finished (run() returned): its result, or its exception rethrown. Once only;
  /// std::logic_error if it has not finished, or was joined already.
  T join() {
    if (st_ == nullptr || st_->taken) throw std::logic_error("coro_handle: nothing to join");
    if (!st_->finished) throw std::logic_error("coro_handle: the task has not finished (run())");
    st_->taken = true;
    if (st_->error) std::rethrow_exception(st_->error);
    if constexpr (!std::is_void_v<T>) {
      return std::move(*static_cast<detail::join_state<T>*>(st_)->value);
    }
  }
  /// True once the task has ended (returned or thrown).
  [[nodiscard]] bool done() const noexcept { return st_ != nullptr && st_->finished; }
  [[nodiscard]] bool valid() const noexcept { return st_ != nullptr; }
  [[nodiscard]] std::uint64_t label() const noexcept { return st_ ? st_->own.label : 0; }
  /// Lets go: the task runs on; an exception it ends with is rethrown by run().
  void detach() noexcept { reset(); }

 private:
  friend class coro_scheduler;
  explicit coro_handle(detail::join_base* st) noexcept : st_(st) {}
  void reset() noexcept {
    if (st_ != nullptr) std::exchange(st_, nullptr)->release();
  }
  detail::join_base* st_ = nullptr;
};

/// One thread's coroutine scheduler on that thread's event_loop. Usage:
///   event_loop loop;
///   coro_scheduler sched(loop);
///   auto h = sched.spawn(fetch(3));   // task<int> fetch(int) { co_await sleep_for(5ms); ... }
///   sched.run();                      // turns the loop until every spawned task has ended
///   int v = h.join();
/// Order rules: spawn() and a wake-up (a timer, a yield) append to the BACK of the ready queue;
/// when_all's children go to the FRONT (in index order), so a tree of when_alls runs depth-first
/// (skynet holds about depth × fan-out frames, not a million). In priority order the key decides
/// first (a when_all child inherits its parent's key). Ready coroutines run in batches from loop
/// callbacks: max(ready at the start, 64) of them, then the loop turns (timers are not starved).
/// Exceptions: rethrown by join(); one nobody took (the handle dropped) is rethrown by run() once
/// the loop is idle. Thread rules: everything on the loop's thread, except that a stop token of a
/// sleep may be stopped from any thread.
class coro_scheduler {
 public:
  explicit coro_scheduler(event_loop& loop, ready_order order = ready_order::fifo);
  /// Destroys the frame of every task not finished (their sleeps are out of the sleep heap first,
  /// so nothing wakes into a destroyed frame); writes a line to stderr about an exception nobody
  /// took. The loop must outlive the scheduler; no handle may outlive it.
  ~coro_scheduler();
  coro_scheduler(const coro_scheduler&) = delete;
  coro_scheduler& operator=(const coro_scheduler&) = delete;

  /// Starts `t` (queued at the back of the ready queue) and returns its handle. Allocates one small
  /// join state; the task's frame is already allocated. Throws std::invalid_argument if t is empty.
  template <class T>
  coro_handle<T> spawn(task<T> t, spawn_options options = {});
  /// spawn(t, options).detach() without the join state: the unit's context is a 32-byte slot of the
  /// scheduler's slab (plus a 24-byte block for its info if options are not all zero). The result
  /// is dropped; an exception the task ends with is rethrown by run().
  template <class T>
  void spawn_detached(task<T> t, spawn_options options = {});

  /// Turns the loop until it is idle: every task has ended (or is parked on something no timer or
  /// descriptor will wake), or loop.stop() was called. Then rethrows the first exception nobody
  /// took. std::logic_error from inside a coroutine or a loop callback.
  void run();

  /// Lag monitor: turns lesson 05's monitor on for this loop (set_slow_callback) and resumes each
  /// ready coroutine from its own loop callback labelled with its unit's label, so a coroutine
  /// that runs long without suspending is named by its label (spawn_options::label; a when_all
  /// child carries its parent's). Costs a loop turn per resumption while on; a threshold of 0
  /// turns both off (back to batches). Loop thread, outside a coroutine.
  void set_slow_coroutine(std::chrono::nanoseconds threshold, slow_callback_reporter reporter);

  /// Tasks spawned and not ended.
  [[nodiscard]] std::size_t live() const noexcept { return live_; }
  /// Sleeps parked in the sleep heap now (all of them share one loop timer).
  [[nodiscard]] std::size_t sleeping() const noexcept { return sleep_size_; }
  /// Resumptions from the ready queue so far (a transfer from one coroutine to another is not one).
  [[nodiscard]] std::uint64_t resumes() const noexcept { return resumes_; }
  [[nodiscard]] event_loop& loop() noexcept { return loop_; }
  [[nodiscard]] ready_order order() const noexcept { return order_; }
  /// The scheduler whose coroutine runs on this thread, or nullptr.
  [[nodiscard]] static coro_scheduler* current() noexcept {
    return detail::t_ctx != nullptr ? detail::t_ctx->sched() : nullptr;
  }

  /// The engine, for the awaiters (sleep, yield, when_all): queues `h` of unit `ctx` to run, at the
  /// back (or the front). Loop thread only.
  /// If it throws (std::bad_alloc: no room in the priority heap, or no loop timer for a batch),
  /// `h` is not queued.
  void make_ready(std::coroutine_handle<> h, detail::coro_ctx* ctx, bool front = false);
  /// The engine: room for `more` ready units without allocating (when_all queues its children
  /// together: none may fail after another was queued).
  void reserve_ready(std::size_t more);
  /// The engine: a unit's end (from its final hook).
  void unit_finished(detail::join_base* st) noexcept;
  void unit_finished(detail::detached_unit* u) noexcept;
  /// The engine: an exception nobody took; the first is kept for run().
  void orphan(std::exception_ptr error) noexcept;
  /// The engine, for the sleep awaiters: parks a unit (its resume point set) until `deadline`, in
  /// its context's slot (a plain sleep) or in a stoppable sleep's node (its ctx set); takes it out
  /// again (false if it was not asleep, or woke already). Loop thread only.
  void sleep_push(detail::coro_ctx* unit, event_loop::clock::time_point deadline);
  void sleep_push(detail::sleep_node* node, event_loop::clock::time_point deadline);
  bool sleep_remove(detail::coro_ctx* unit) noexcept;
  bool sleep_remove(detail::sleep_node* node) noexcept;
  /// The engine, for stoppable sleeps: the registry a stop from another thread goes through.
  [[nodiscard]] const std::shared_ptr<detail::stoppable_registry>& stoppables() const noexcept {
    return stoppables_;
  }

 private:
  struct keyed_entry {
    std::int64_t key;
    std::int64_t seq;
    detail::coro_ctx* ctx;
  };
  // The sleep heap: a binary min-heap by (deadline, arrival) in chunks of 4096 entries (64 KiB), so
  // growing never copies it (nor holds the old and the new array at once, as a vector's doubling
  // does: 24 MB for a million sleepers). Each sleeper knows its position.
  struct sleep_entry {
    std::int64_t deadline_ns;
    std::uintptr_t ref;  // a coro_ctx* (plain sleep) or a sleep_node* with the low bit set
  };
  static detail::sleep_slot& slot_of(std::uintptr_t ref) noexcept {
    return (ref & 1U) != 0 ? reinterpret_cast<detail::sleep_node*>(ref - 1)->sleep
                           : reinterpret_cast<detail::coro_ctx*>(ref)->sleep;
  }
  static detail::coro_ctx* unit_of(std::uintptr_t ref) noexcept {
    return (ref & 1U) != 0 ? reinterpret_cast<detail::sleep_node*>(ref - 1)->ctx
                           : reinterpret_cast<detail::coro_ctx*>(ref);
  }
  void sleep_push_ref(std::uintptr_t ref, event_loop::clock::time_point deadline);
  bool sleep_remove_ref(std::uintptr_t ref) noexcept;
  static constexpr std::size_t k_sleep_chunk = 4096;
  sleep_entry& sleep_at(std::size_t i) noexcept {
    return sleep_chunks_[i / k_sleep_chunk][i % k_sleep_chunk];
  }
  [[nodiscard]] bool sleep_before(const sleep_entry& a, const sleep_entry& b) const noexcept;
  void sleep_place(std::size_t i, sleep_entry e) noexcept;
  void sleep_sift_up(std::size_t i) noexcept;
  void sleep_sift_down(std::size_t i) noexcept;
  void sleep_rearm();
  void sleep_fire() noexcept;

  detail::detached_unit* new_unit(const spawn_options& options);
  void free_unit(detail::detached_unit* u) noexcept;
  [[nodiscard]] std::size_t ready_size() const noexcept { return ready_count_; }
  [[nodiscard]] detail::coro_ctx* next_ready() const noexcept;
  detail::coro_ctx* pop_ready() noexcept;
  void arm_batch();
  void unlink_ready(detail::coro_ctx* ctx, bool front, detail::coro_ctx* old_tail) noexcept;
  void run_batch() noexcept;

  event_loop& loop_;
  ready_order order_;
  // FIFO: an intrusive list through the units' contexts (front pushes at the head).
  detail::coro_ctx* ready_head_ = nullptr;
  detail::coro_ctx* ready_tail_ = nullptr;
  std::size_t ready_count_ = 0;
  // Priority: a binary heap (largest key, then smallest seq, on top). Front pushes take negative
  // seqs, counting down, so they run before equal keys pushed at the back, the latest first.
  std::vector<keyed_entry> heap_;
  std::int64_t back_seq_ = 0;
  std::int64_t front_seq_ = 0;

  std::vector<std::unique_ptr<sleep_entry[]>> sleep_chunks_;
  std::size_t sleep_size_ = 0;
  std::uint32_t sleep_seq_ = 0;
  timer_handle sleep_timer_;
  bool sleep_armed_ = false;
  bool sleep_firing_ = false;
  std::int64_t sleep_armed_ns_ = 0;  // the deadline the armed loop timer is for

  // spawn_detached's units: a slab of 1024-slot chunks and a free list through ready_next.
  static constexpr std::size_t k_unit_chunk = 1024;
  std::vector<std::unique_ptr<detail::detached_unit[]>> unit_chunks_;
  detail::detached_unit* free_units_ = nullptr;
  std::shared_ptr<detail::stoppable_registry> stoppables_;
  detail::unit_info plain_info_{this, 0, 0};  // the info of every detached unit without options

  timer_handle batch_timer_;
  bool batch_armed_ = false;
  bool in_batch_ = false;
  bool exact_labels_ = false;      // one loop callback per resumption, labelled (lag monitor on)
  std::uint64_t armed_label_ = 0;  // the label the armed batch callback carries
  detail::join_base* units_ = nullptr;  // unfinished spawned tasks (for the destructor)
  std::size_t live_ = 0;
  std::uint64_t resumes_ = 0;
  std::exception_ptr first_orphan_;
  std::size_t orphans_ = 0;
};

/// co_await sleep_until(tp): parks the coroutine in the scheduler's sleep heap until `deadline` (a
/// deadline already past still waits for the loop's next turn). Destroying the frame meanwhile
/// takes it out of the heap. 8 bytes of the frame (the heap's entry holds the deadline, the unit's
/// context the position). Only in a coroutine run by a coro_scheduler (std::logic_error
/// elsewhere).
class [[nodiscard]] sleep_awaiter {
 public:
  explicit sleep_awaiter(event_loop::clock::time_point deadline) noexcept;
  sleep_awaiter(const sleep_awaiter&) = delete;
  sleep_awaiter& operator=(const sleep_awaiter&) = delete;
  ~sleep_awaiter();
  [[nodiscard]] bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h);
  void await_resume() noexcept { word_ = 0; }

 private:
  // One word, three states: until parked, the deadline's nanoseconds shifted left with the low bit
  // set; while parked, its unit's coro_ctx* (aligned: low bit clear); once resumed, 0.
  std::uintptr_t word_;
};

/// co_await sleep_until(tp, token): as above, but a stop request on `token` (from any thread) wakes
/// the sleeper at once: it leaves the sleep heap and the await throws task_cancelled. A token
/// already stopped throws at once, without parking. Stopping never interrupts running code: a CPU
/// part already running finishes, and the next stoppable sleep throws.
class [[nodiscard]] stoppable_sleep {
 public:
  stoppable_sleep(event_loop::clock::time_point deadline, std::stop_token token) noexcept
      : deadline_(deadline), token_(std::move(token)) {}
  stoppable_sleep(const stoppable_sleep&) = delete;
  stoppable_sleep& operator=(const stoppable_sleep&) = delete;
  ~stoppable_sleep();
  [[nodiscard]] bool await_ready() noexcept {
    cancelled_ = token_.stop_requested();
    return cancelled_;
  }
  void await_suspend(std::coroutine_handle<> h);
  void await_resume();

 private:
  struct on_stop {
    stoppable_sleep* self;
    void operator()() const noexcept { self->stop_requested(); }
  };
  void stop_requested() noexcept;
  void wake_cancelled() noexcept;

  event_loop::clock::time_point deadline_;
  std::stop_token token_;
  detail::sleep_node node_;
  std::uint64_t id_ = 0;  // its number in the scheduler's registry (0: not registered)
  bool cancelled_ = false;
  std::optional<std::stop_callback<on_stop>> callback_;
};

/// How a socket wait (fd_awaiter) ended: the descriptor is ready (or reports an error or a hangup,
/// which the next read or write tells), or its deadline came first.
enum class fd_wake : std::uint8_t { ready, timed_out };

/// co_await readable(fd, token, deadline) (or writable): parks the coroutine until `fd` is ready,
/// with the descriptor watched on the scheduler's loop (its epoll) only while parked, so that the
/// coroutine may close it as soon as it resumes. The await returns fd_wake::timed_out if a loop
/// timer at `deadline` fires first (time_point::max(): none; a deadline already past returns at
/// once), and throws task_cancelled if `token` is stopped, from any thread, as a stoppable sleep
/// does. Destroying the frame meanwhile unwatches the descriptor and cancels the timer. Only in a
/// coroutine run by a coro_scheduler (std::logic_error elsewhere).
class [[nodiscard]] fd_awaiter {
 public:
  fd_awaiter(int fd, std::uint32_t events, std::stop_token token,
             event_loop::clock::time_point deadline) noexcept
      : fd_(fd), events_(events), deadline_(deadline), token_(std::move(token)) {}
  fd_awaiter(const fd_awaiter&) = delete;
  fd_awaiter& operator=(const fd_awaiter&) = delete;
  ~fd_awaiter();
  [[nodiscard]] bool await_ready() noexcept;
  void await_suspend(std::coroutine_handle<> h);
  fd_wake await_resume();

 private:
  struct on_stop {
    fd_awaiter* self;
    void operator()() const noexcept { self->stop_requested(); }
  };
  void stop_requested() noexcept;
  void wake_cancelled() noexcept;
  void wake(fd_wake how) noexcept;
  void leave_loop() noexcept;

  int fd_;
  std::uint32_t events_;
  event_loop::clock::time_point deadline_;
  std::stop_token token_;
  detail::coro_ctx* unit_ = nullptr;  // its unit, from await_suspend until await_resume
  timer_handle timer_;                // the deadline's loop timer, while armed_
  std::uint64_t id_ = 0;              // its number in the scheduler's registry (0: none)
  bool parked_ = false;               // watched and waiting: no wake-up has come yet
  bool armed_ = false;
  bool cancelled_ = false;
  fd_wake how_ = fd_wake::ready;
  std::optional<std::stop_callback<on_stop>> callback_;
};

namespace detail {
/// The stoppable waits now parked (sleeps and socket waits), by number: what a stop from another
/// thread looks its waiter up in, on the loop thread, instead of trusting a pointer that may name a
/// freed frame. Shared with the posted stop requests, so one that arrives after the scheduler's end
/// finds it empty. Loop thread only.
class stoppable_registry {
 public:
  /// A parked waiter and how to wake it cancelled.
  struct waiter {
    void* self;
    void (*wake_cancelled)(void* self) noexcept;
  };
  std::uint64_t add(waiter w) {
    live_.emplace(++last_id_, w);
    return last_id_;
  }
  void erase(std::uint64_t id) noexcept { live_.erase(id); }
  /// The waiter registered as `id`, still parked, is woken cancelled; anything else is ignored.
  void stop(std::uint64_t id) noexcept {
    const auto it = live_.find(id);
    if (it != live_.end()) it->second.wake_cancelled(it->second.self);
  }

 private:
  std::unordered_map<std::uint64_t, waiter> live_;
  std::uint64_t last_id_ = 0;
};
}  // namespace detail

/// co_await yield(): lets the other ready coroutines run (to the back of the ready queue).
struct [[nodiscard]] yield_awaiter {
  [[nodiscard]] bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h);
  void await_resume() const noexcept {}
};

inline sleep_awaiter sleep_until(event_loop::clock::time_point deadline) noexcept {
  return sleep_awaiter(deadline);
}
// By reference: an argument of class type passed by value is a temporary that lives to the end of
// the co_await's full expression, so in the frame (8 bytes). A nanoseconds variable costs nothing;
// `sleep_for(50ms)` still makes its converted temporary.
inline sleep_awaiter sleep_for(const std::chrono::nanoseconds& d) noexcept {
  return sleep_awaiter(event_loop::clock::now() + d);
}
inline stoppable_sleep sleep_until(event_loop::clock::time_point deadline,
                                   std::stop_token token) noexcept {
  return stoppable_sleep(deadline, std::move(token));
}
inline stoppable_sleep sleep_for(const std::chrono::nanoseconds& d,
                                 std::stop_token token) noexcept {
  return stoppable_sleep(event_loop::clock::now() + d, std::move(token));
}
inline yield_awaiter yield() noexcept { return {}; }
/// Waits until `fd` is readable (or writable): see fd_awaiter.
inline fd_awaiter readable(
    int fd, std::stop_token token,
    event_loop::clock::time_point deadline = event_loop::clock::time_point::max()) noexcept {
  return fd_awaiter(fd, event_loop::readable, std::move(token), deadline);
}
inline fd_awaiter writable(
    int fd, std::stop_token token,
    event_loop::clock::time_point deadline = event_loop::clock::time_point::max()) noexcept {
  return fd_awaiter(fd, event_loop::writable, std::move(token), deadline);
}

// ---- templates ----

template <class T>
std::coroutine_handle<> detail::spawned_final(final_hook* hook, std::coroutine_handle<> self,
                                              promise_base& p) noexcept {
  auto* st = static_cast<join_state<T>*>(hook);
  if (p.error()) {
    st->error = p.error();
  } else if constexpr (!std::is_void_v<T>) {
    st->value.emplace(std::move(*static_cast<task_promise<T>&>(p).value));
  }
  // The frame goes at once (a finished task holds nothing anyone needs): destroying it from its
  // own final suspend is allowed, and nothing touches it afterwards.
  self.destroy();
  st->own.sched->unit_finished(st);
  return std::noop_coroutine();
}

template <class T>
coro_handle<T> coro_scheduler::spawn(task<T> t, spawn_options options) {
  if (!t.valid()) throw std::invalid_argument("coro_scheduler::spawn: empty task");
  // The join state comes from the frame allocator's lists too (no malloc header per task).
  using state = detail::join_state<T>;
  std::unique_ptr<state, void (*)(state*)> st(::new (detail::allocate_block(sizeof(state))) state(),
                                              [](state* s) noexcept {
                                                s->~state();
                                                detail::deallocate_block(s, sizeof(state));
                                              });
  st->on_final = &detail::spawned_final<T>;
  st->own = {this, options.priority, options.label};
  st->info = &st->own;
  st->destroy = [](detail::join_base* s) noexcept {
    static_cast<state*>(s)->~state();
    detail::deallocate_block(s, sizeof(state));
  };
  make_ready(t.handle(), st.get());  // may throw (priority heap growth): t still owns the frame
  auto h = t.release();
  h.promise().set_hook(st.get());
  st->frame = h;
  st->next = units_;
  if (units_ != nullptr) units_->prev = st.get();
  units_ = st.get();
  ++live_;
  return coro_handle<T>(st.release());
}

template <class T>
std::coroutine_handle<> detail::detached_final(final_hook*, std::coroutine_handle<> self,
                                               promise_base& p) noexcept {
  // The unit whose top frame ends is the one running: the scheduler set t_ctx to it (and a
  // when_all's last child hands t_ctx back to its parent before transferring into it).
  auto* u = static_cast<detached_unit*>(t_ctx);
  assert(u != nullptr && u->frame == self);
  coro_scheduler* sched = u->sched();
  std::exception_ptr error = p.error();  // a copy: the box goes with the frame
  self.destroy();                        // as spawned_final: nothing touches the frame afterwards
  if (error) sched->orphan(std::move(error));
  sched->unit_finished(u);
  return std::noop_coroutine();
}

template <class T>
void coro_scheduler::spawn_detached(task<T> t, spawn_options options) {
  if (!t.valid()) throw std::invalid_argument("coro_scheduler::spawn_detached: empty task");
  detail::detached_unit* u = new_unit(options);  // may throw (a new chunk, an info block)
  try {
    make_ready(t.handle(), u);  // may throw (priority heap growth): t still owns the frame
  } catch (...) {
    free_unit(u);
    throw;
  }
  auto h = t.release();
  h.promise().set_hook(&detail::detached_hook<T>);
  u->frame = h;
  ++live_;
}

}  // namespace clab::coro
