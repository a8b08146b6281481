// Lesson 05's engine: one thread turns a loop of ready callbacks, timers and descriptor readiness,
// on Linux primitives (epoll, an eventfd, a futex) and a 4-ary min-heap of deadlines. Every wait
// is a timer, so a million waiting tasks cost a million 56-byte timers, not a million threads.
// Look for: run() blocks in one place only, the wait at the end of a turn, and only when idle.
#pragma once

#include <sys/epoll.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

namespace clab {

template <class Signature>
class inline_function;

namespace detail {
/// F can be stored in Self (an inline_function returning R from Args...), and is not Self itself.
template <class F, class Self, class R, class... Args>
concept callable_as = !std::is_same_v<std::remove_cvref_t<F>, Self> &&
                      std::is_invocable_r_v<R, std::decay_t<F>&, Args...>;
}  // namespace detail

/// A move-only callable with 16 bytes of inline storage that never allocates: a lambda capturing
/// up to two pointers (say `this` and a task index) fits; a larger capture is refused at compile
/// time (capture a pointer to your state instead). Calling an empty one is undefined.
template <class R, class... Args>
class inline_function<R(Args...)> {
 public:
  static constexpr std::size_t k_capacity = 16;

  inline_function() noexcept = default;

  /// Stores `f`, which must fit in k_capacity bytes, align to at most 8 and move without throwing.
  template <detail::callable_as<inline_function, R, Args...> F>
  inline_function(F&& f)  // NOLINT(bugprone-forwarding-reference-overload): not for inline_function
      noexcept(std::is_nothrow_constructible_v<std::decay_t<F>, F&&>) {
    using T = std::decay_t<F>;
    static_assert(sizeof(T) <= k_capacity,
                  "inline_function: the capture is over 16 bytes; capture a pointer to it instead");
    static_assert(alignof(T) <= alignof(std::uint64_t), "inline_function: over-aligned capture");
    static_assert(std::is_nothrow_move_constructible_v<T>, "inline_function: move may throw");
    ::new (static_cast<void*>(storage_)) T(std::forward<F>(f));
    ops_ = &k_ops<T>;
  }

  inline_function(inline_function&& other) noexcept : ops_(other.ops_) {
    if (ops_ != nullptr) relocate_from(other);
  }
  inline_function& operator=(inline_function&& other) noexcept {
    if (this != &other) {
      reset();
      ops_ = other.ops_;
      if (ops_ != nullptr) relocate_from(other);
    }
    return *this;
  }
  inline_function(const inline_function&) = delete;
  inline_function& operator=(const inline_function&) = delete;
  ~inline_function() { reset(); }

  /// Calls the stored callable.
  R operator()(Args... args) { return ops_->invoke(storage_, std::forward<Args>(args)...); }

  /// True if a callable is stored.
  explicit operator bool() const noexcept { return ops_ != nullptr; }

  /// Destroys the stored callable, if any; afterwards *this is empty.
  void reset() noexcept {
    if (ops_ != nullptr && ops_->destroy != nullptr) ops_->destroy(storage_);
    ops_ = nullptr;
  }

 private:
  // One static table per stored type. A trivially copyable capture (pointers, indices: the usual
  // case) has no relocate or destroy: moving it is a 16-byte copy and destroying it is nothing.
  struct ops_table {
    R (*invoke)(void*, Args&&...);
    void (*relocate)(void* to, void* from) noexcept;
    void (*destroy)(void*) noexcept;
  };
  template <class T>
  static constexpr ops_table k_ops{
      [](void* p, Args&&... args) -> R {
        return std::invoke(*static_cast<T*>(p), std::forward<Args>(args)...);
      },
      std::is_trivially_copyable_v<T> ? nullptr
                                      : +[](void* to, void* from) noexcept {
                                          ::new (to) T(std::move(*static_cast<T*>(from)));
                                          static_cast<T*>(from)->~T();
                                        },
      std::is_trivially_destructible_v<T> ? nullptr
                                          : +[](void* p) noexcept { static_cast<T*>(p)->~T(); }};

  void relocate_from(inline_function& other) noexcept {
    if (ops_->relocate == nullptr) {
      std::memcpy(storage_, other.storage_, k_capacity);
    } else {
      ops_->relocate(storage_, other.storage_);
    }
    other.ops_ = nullptr;
  }

  alignas(std::uint64_t) unsigned char storage_[k_capacity];
  const ops_table* ops_ = nullptr;
};

/// What the loop runs: a callback of no arguments, and a descriptor's callback, which receives the
/// ready events (a mask of event_loop::readable, writable, error, hangup).
using loop_callback = inline_function<void()>;
using fd_callback = inline_function<void(std::uint32_t events)>;
static_assert(sizeof(loop_callback) == 24 && sizeof(fd_callback) == 24);

/// Names one arming of a timer, for cancel(). A default-constructed handle names none.
struct timer_handle {
  std::uint64_t seq = 0;   ///< the arming's sequence number, unique per loop (0: none)
  std::uint32_t slot = 0;  ///< where the timer's callback is stored
};

/// What the lag monitor reports: the label the callback was queued with and how long it has run.
/// still_running is true for the watchdog's report of a callback that has not returned yet (once
/// per stall), false for the report made after a slow callback returned.
struct slow_callback_report {
  std::uint64_t label = 0;
  std::chrono::nanoseconds elapsed{0};
  bool still_running = false;
};
using slow_callback_reporter = std::function<void(const slow_callback_report&)>;

/// How late a loop's timers fire: the callback's start minus the deadline, over `samples` timers.
struct timer_overshoot {
  std::chrono::nanoseconds median{0};
  std::chrono::nanoseconds p90{0};
  std::chrono::nanoseconds p99{0};
  std::chrono::nanoseconds max{0};
  double mean_ns = 0;
  int samples = 0;
};

class event_loop;

/// Keeps run() from returning for being idle while it lives (Asio's executor_work_guard): hold one
/// while another thread may still post(). Movable; its destructor may run on any thread.
class loop_hold {
 public:
  loop_hold() = default;
  loop_hold(loop_hold&& other) noexcept : loop_(std::exchange(other.loop_, nullptr)) {}
  loop_hold& operator=(loop_hold&& other) noexcept;
  loop_hold(const loop_hold&) = delete;
  loop_hold& operator=(const loop_hold&) = delete;
  ~loop_hold() { release(); }
  /// Lets go early; afterwards the hold is empty. Wakes the loop if this was its last hold.
  void release();

 private:
  friend class event_loop;
  explicit loop_hold(event_loop* loop) : loop_(loop) {}
  event_loop* loop_ = nullptr;
};

/// A single-threaded event loop. Usage:
///   event_loop loop;
///   loop.call_later(2ms, [this, i] { finish(i); }, /*label=*/i);   // captures: 16 bytes at most
///   loop.watch(fd, event_loop::readable, [conn](std::uint32_t ev) { conn->on_ready(ev); });
///   loop.run();   // returns once no callback, timer, descriptor or hold is left
/// Thread rules: post(), stop(), hold() and a loop_hold's release are safe from any thread.
/// Everything else belongs to the loop thread: the thread inside run(), or, while no run() is
/// active, the one thread setting the loop up. Every callback runs on the loop thread.
/// Exceptions: a callback's exception propagates out of run(). That callback is consumed (a
/// descriptor stays watched), everything else stays queued, and run() may be called again.
class event_loop {
 public:
  using clock = std::chrono::steady_clock;

  /// Event bits for watch() and for an fd_callback's argument (epoll's values).
  static constexpr std::uint32_t readable = EPOLLIN;
  static constexpr std::uint32_t writable = EPOLLOUT;
  static constexpr std::uint32_t error = EPOLLERR;          ///< reported whether asked for or not
  static constexpr std::uint32_t hangup = EPOLLHUP;         ///< reported whether asked for or not
  static constexpr std::uint32_t edge_triggered = EPOLLET;  ///< watch() flag; the default is level

  /// Creates the epoll and eventfd descriptors; throws std::system_error if the kernel refuses.
  event_loop();
  /// Closes the descriptors and destroys every callback still queued without running it. No
  /// run() may be active and no other thread may still post(), stop() or hold a loop_hold.
  ~event_loop();
  event_loop(const event_loop&) = delete;
  event_loop& operator=(const event_loop&) = delete;

  /// Runs callbacks until nothing is left to run (no ready callback, pending timer, watched
  /// descriptor, unreceived post or hold) or stop() is called; returns at once if there was never
  /// anything. Each turn: due timers fire (earliest deadline first), then the callbacks that were
  /// ready when the turn began run (FIFO; those they queue run next turn), then the loop waits for
  /// descriptors, posts or the next deadline. Throws std::logic_error if called from a callback.
  void run();

  /// Queues `cb` to run on a later turn of this loop (loop thread only; no lock, no allocation
  /// beyond the queue's amortised growth).
  void call_soon(loop_callback cb, std::uint64_t label = 0);

  /// Arms a timer: `cb` runs once the clock reaches `deadline`. Timers fire in deadline order;
  /// equal deadlines fire in the order they were armed. Returns the handle for cancel().
  timer_handle call_at(clock::time_point deadline, loop_callback cb, std::uint64_t label = 0);

  /// call_at(now + delay); a delay of zero or less fires on the next turn.
  timer_handle call_later(clock::duration delay, loop_callback cb, std::uint64_t label = 0);

  /// Cancels the timer `h` names: its callback is destroyed without running. Returns true if the
  /// timer was still pending; false if it already fired (or is firing now), was cancelled, or `h`
  /// names none. O(1): the heap entry is skipped when it surfaces (see the .cpp).
  bool cancel(timer_handle h);

  /// Calls `cb(events)` on the loop thread each time `fd` is ready for `events` (readable and/or
  /// writable; error and hangup are always reported). Level-triggered: while the descriptor stays
  /// ready, cb runs again every turn; add edge_triggered for once per change (drain it yourself).
  /// Watching an fd already watched replaces its events and callback. The descriptor keeps run()
  /// alive until unwatch(). Throws std::system_error if epoll refuses it (a regular file: EPERM).
  void watch(int fd, std::uint32_t events, fd_callback cb, std::uint64_t label = 0);

  /// Stops watching `fd` and destroys its callback (safe from inside that callback). Call before
  /// closing the descriptor. Returns true if it was watched.
  bool unwatch(int fd);

  /// Queues `cb` from any thread; the loop runs it on its thread, in post order, on its next turn.
  /// Takes one short lock, and a system call only if the loop sleeps: a futex wake, or an eventfd
  /// write while descriptors are watched (the loop then sleeps in epoll).
  void post(loop_callback cb, std::uint64_t label = 0);

  /// Makes the active run() return after the callback running now, from any thread; what is still
  /// queued stays queued for the next run(). Called while no run() is active, it makes the next
  /// run() return at once.
  void stop();

  /// Keeps run() alive until the returned hold is destroyed or released (any thread).
  [[nodiscard]] loop_hold hold();

  /// Turns the lag monitor on (threshold > 0) or off (threshold <= 0 or no reporter). On: every
  /// callback that ran longer than `threshold` is reported after it returns, on the loop thread;
  /// and a watchdog thread, which lives while the monitor is on, reports a callback still running
  /// past `threshold` while it runs, once per stall (within about 1.5 thresholds). So `reporter`
  /// is called from two threads and must be thread-safe (and must return: turning the monitor off
  /// joins the watchdog). Costs two clock reads per callback while on. Loop thread only; safe
  /// from inside a callback.
  void set_slow_callback(std::chrono::nanoseconds threshold, slow_callback_reporter reporter);

  /// Precision: the loop sleeps until `spin` before a timer's deadline and spins (turning, polling
  /// descriptors without blocking) for the rest, trading CPU for lateness: the kernel's wake-up
  /// latency is then paid before the deadline. Default 0: always sleep to the deadline.
  void set_timer_spin(std::chrono::nanoseconds spin) { spin_ns_ = spin.count(); }

  /// After a turn that received posts, the loop spins up to `spin` (default 2 µs) for the next post
  /// before it sleeps: a thread that posts again at once then costs no wake-up (several µs on a
  /// virtual machine). 0 turns it off; a loop no other thread posts to never spins.
  void set_post_spin(std::chrono::nanoseconds spin) { post_spin_ns_ = spin.count(); }

  /// Sizes the timer storage for `n` concurrent timers at once, so no growth happens while they
  /// are armed. Optional: growth never copies the heap (it is remapped), only adds slot chunks.
  void reserve_timers(std::size_t n);

  /// Timers armed and neither fired nor cancelled.
  [[nodiscard]] std::size_t pending_timers() const { return live_timers_; }

  /// True while run() is active (loop thread).
  [[nodiscard]] bool running() const { return running_; }

 private:
  friend class loop_hold;
  struct monitor;

  // The ready queue: a ring of {callback, label}, power-of-two capacity, grown by doubling.
  struct ready_entry {
    loop_callback cb;
    std::uint64_t label = 0;
  };
  class ready_ring {
   public:
    ready_ring() = default;
    ready_ring(const ready_ring&) = delete;
    ready_ring& operator=(const ready_ring&) = delete;
    ~ready_ring();
    [[nodiscard]] bool empty() const { return head_ == tail_; }
    [[nodiscard]] std::size_t size() const { return tail_ - head_; }
    void push(loop_callback&& cb, std::uint64_t label) {
      if (tail_ - head_ == capacity_) grow();
      ::new (static_cast<void*>(&items_[tail_++ & (capacity_ - 1)]))
          ready_entry{std::move(cb), label};
    }
    /// Moves the oldest entry into `out`; the ring must not be empty.
    void pop(ready_entry& out) {
      ready_entry& e = items_[head_++ & (capacity_ - 1)];
      out.cb = std::move(e.cb);
      out.label = e.label;
      e.~ready_entry();
    }

   private:
    void grow();
    ready_entry* items_ = nullptr;
    std::size_t capacity_ = 0;
    std::size_t head_ = 0;  // monotonically increasing; index = head_ & (capacity_ - 1)
    std::size_t tail_ = 0;
  };

  // Timers. A slot holds the callback; the heap orders 16-byte {deadline, slot} entries.
  // A slot is referenced by at most one heap entry and is freed only when that entry leaves the
  // heap, so an entry never meets a reused slot, and a slot's seq is stable while it is in the
  // heap (it breaks deadline ties: FIFO by arming order).
  struct timer_slot {
    loop_callback cb;         // empty once cancelled (or fired, or free)
    std::uint64_t label = 0;  // while free: the next free slot's index
    std::uint64_t seq = 0;    // the arming's number, matched against a timer_handle
  };
  struct timer_entry {
    std::int64_t deadline_ns;
    std::uint32_t slot;
    std::uint32_t unused;
  };
  static_assert(sizeof(timer_slot) == 40 && sizeof(timer_entry) == 16);
  static constexpr std::size_t k_chunk_bits = 12;  // 4096 slots (160 KiB) per chunk
  static constexpr std::uint32_t k_no_slot = 0xffffffffU;
  static constexpr std::int64_t k_default_post_spin_ns = 2'000;

  [[nodiscard]] timer_slot& slot_at(std::uint32_t i) {
    return slots_[i >> k_chunk_bits][i & ((1U << k_chunk_bits) - 1)];
  }
  [[nodiscard]] bool earlier(const timer_entry& a, const timer_entry& b) {
    return a.deadline_ns < b.deadline_ns ||
           (a.deadline_ns == b.deadline_ns && slot_at(a.slot).seq < slot_at(b.slot).seq);
  }
  timer_handle arm(std::int64_t deadline_ns, loop_callback&& cb, std::uint64_t label);
  std::uint32_t allocate_slot();
  void free_slot(std::uint32_t s);
  void heap_reserve(std::size_t entries);
  void heap_push(timer_entry e);
  void heap_pop();
  void sift_down(std::size_t i, timer_entry e);
  void drop_stale_top();
  void compact_heap();
  bool fire_due_timers();  // false if stopped

  // Descriptors: indexed by fd. gen tells an event from before an unwatch/watch of the same fd.
  struct watcher {
    fd_callback cb;
    std::uint64_t label = 0;
    std::uint32_t gen = 0;
    bool active = false;
  };
  // One wait: sleeps (block) until wake_at_ns (absolute; < 0: none), or polls descriptors.
  void wait_for_events(bool block, std::int64_t wake_at_ns);
  bool dispatch_events();  // false if stopped
  void dispatch(const epoll_event& ev);

  void take_posts();
  // How the loop sleeps, for a waker: not (awake), on futex_word_ (nothing watched: cheaper to
  // wake), or in epoll_pwait2 (woken through the eventfd).
  static constexpr std::uint8_t k_awake = 0;
  static constexpr std::uint8_t k_sleeps_on_futex = 1;
  static constexpr std::uint8_t k_sleeps_in_epoll = 2;
  // With inbox_mutex_ held: marks a wake pending and returns how to wake the loop, which the
  // caller does with signal_wake() after unlocking (k_awake: nothing to do).
  std::uint8_t claim_wake();
  void signal_wake(std::uint8_t how);
  [[nodiscard]] bool idle() const;
  template <class F>
  void invoke(std::uint64_t label, F& call);
  void invoke_monitored(std::uint64_t label, void (*call)(void*), void* context);
  void publish_running(std::uint64_t label, std::int64_t since_ns);

  // Loop-thread state.
  ready_ring ready_;
  std::vector<std::unique_ptr<timer_slot[]>> slots_;
  std::uint32_t slot_count_ = 0;  // slots ever handed out
  std::uint32_t free_head_ = k_no_slot;
  timer_entry* heap_ = nullptr;  // logical index 0 is 3 entries into the mapping (see the .cpp)
  std::size_t heap_size_ = 0;
  std::size_t heap_capacity_ = 0;  // entries the mapping holds, including the 3 pad entries
  std::size_t live_timers_ = 0;
  std::size_t stale_entries_ = 0;  // heap entries of cancelled timers
  std::uint64_t next_seq_ = 1;
  std::int64_t now_ns_ = 0;  // the last clock reading: a deadline at or before it is due
  std::int64_t spin_ns_ = 0;
  std::int64_t post_spin_ns_ = k_default_post_spin_ns;
  bool posts_seen_ = false;         // a take_posts() since the last wait received some
  std::uint32_t spin_backoff_ = 0;  // post spins to skip after the next miss (0: none missed)
  std::uint32_t spin_skips_left_ = 0;
  std::vector<watcher> watchers_;
  std::size_t watched_ = 0;
  bool running_ = false;
  bool has_pwait2_ = true;
  bool slack_lowered_ = false;  // this run() set the thread's timer slack to 1 ns
  long saved_slack_ = 0;
  std::unique_ptr<monitor> monitor_;
  std::vector<ready_entry> inbox_spare_;  // the inbox's other buffer, swapped in take_posts()
  epoll_event events_[64];
  std::uint32_t event_next_ = 0;  // events_[event_next_, event_count_) not dispatched yet
  std::uint32_t event_count_ = 0;

  // Shared with other threads.
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::mutex inbox_mutex_;
  std::vector<ready_entry> inbox_;         // guarded by inbox_mutex_
  std::atomic<bool> wake_pending_{false};  // a post, stop or release waits for the loop to look
  std::atomic<std::uint8_t> sleeping_{k_awake};  // set under inbox_mutex_: how the loop sleeps
  std::atomic<std::uint32_t> futex_word_{0};     // the futex the loop sleeps on; 1: woken
  std::atomic<bool> stop_requested_{false};
  std::atomic<int> holds_{0};
  std::atomic<int> wakers_in_flight_{0};  // threads between claim_wake() and the eventfd write
  // What the loop thread is running, for the watchdog: a sequence lock, odd while being written.
  std::atomic<std::uint64_t> running_seq_{0};
  std::atomic<std::uint64_t> running_label_{0};
  std::atomic<std::int64_t> running_since_ns_{0};  // 0: no callback running
};

/// Arms `samples` timers of `delay` one after another on a fresh loop (each from the previous
/// one's callback, so the loop sleeps before each) and measures how late each fired. `spin` is
/// passed to set_timer_spin(). The loop's timer overshoot, for the models' per-wait cost.
[[nodiscard]] timer_overshoot measure_timer_overshoot(
    std::chrono::nanoseconds delay, int samples,
    std::chrono::nanoseconds spin = std::chrono::nanoseconds(0));

}  // namespace clab
