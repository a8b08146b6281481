// Lesson 05's engine, the mechanics: the turn in run(), the timer heap, the one wait, and the lag
// monitor. Look for: how little a timer costs (a slot from a free list and a 16-byte heap entry),
// and how the loop decides it may sleep, and for how long.
#include "lessons/05_event_loop/event_loop.hpp"

#include <linux/futex.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <stdexcept>
#include <system_error>
#include <thread>

namespace clab {

// Per-timer memory, the arithmetic behind "1 000 000 timers in 64 MB": a timer_slot is 40 bytes
// (a 24-byte callback, an 8-byte label, an 8-byte sequence number) and a heap entry is 16 bytes
// (an 8-byte deadline, a 4-byte slot index, 4 spare), so 56 bytes per pending timer. Slots live in
// 160 KiB chunks that never move (no copy on growth, at most one chunk partly unused), and the
// heap in an anonymous mapping grown by mremap, which moves page-table entries instead of copying
// entries: neither ever holds an old and a new copy at once, so the peak is the live size.
// (A std::vector would, for a moment, hold both: 1.5 times the entries at the last doubling.)
// bench_units' loop_timers_1m measures the peak: 56 bytes per timer. What a burst of timers used
// is kept for reuse (free slots, the mapping) until the loop is destroyed.
//
// Cancellation is lazy: cancel() destroys the callback and leaves the heap entry, which is
// skipped and its slot freed when it reaches the top. When stale entries outnumber live timers
// the heap is compacted in O(n), so a cancel costs O(1) amortised and the heap stays at most
// twice the live count. A heap entry never outlives its slot's arming, so no generation is
// needed in the entry, and ties on the deadline are broken by the slot's sequence number.
//
// The heap is 4-ary: half the depth of a binary heap for a pop, and the four children of a node
// are one 64-byte cache line, because logical index 0 sits 3 entries into the page-aligned
// mapping (children of i are 4i+1..4i+4, at byte offset 64(i+1) from the mapping's start).

namespace {

constexpr std::size_t k_heap_pad = 3;
constexpr std::size_t k_page = 4096;
constexpr std::uint64_t k_wake_token = ~std::uint64_t{0};

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             event_loop::clock::now().time_since_epoch())
      .count();
}

std::int64_t saturating_add(std::int64_t a, std::int64_t b) {
  std::int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) return b > 0 ? INT64_MAX : INT64_MIN;
  return r;
}

[[noreturn]] void throw_errno(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

}  // namespace

static_assert(event_loop::readable == EPOLLIN && event_loop::writable == EPOLLOUT);

// ---------------------------------------------------------------------------------------------
// The lag monitor's watchdog: wakes every half threshold (within [100 µs, 100 ms]) and reads what
// the loop thread published about the callback it is running.

struct event_loop::monitor {
  monitor(event_loop& loop, std::int64_t threshold, slow_callback_reporter report)
      : threshold_ns(threshold), reporter(std::move(report)) {
    thread = std::thread([this, &loop] { watch(loop); });
  }
  monitor(const monitor&) = delete;
  monitor& operator=(const monitor&) = delete;
  ~monitor() {
    {
      std::lock_guard lock(mutex);
      quit = true;
    }
    cv.notify_all();
    thread.join();
  }

  void watch(const event_loop& loop) {
    const auto period =
        std::chrono::nanoseconds(std::clamp<std::int64_t>(threshold_ns / 2, 100'000, 100'000'000));
    std::uint64_t reported = 0;  // the sequence number of the last stall reported
    std::unique_lock lock(mutex);
    while (!cv.wait_for(lock, period, [this] { return quit; })) {
      // The reading side of the sequence lock: acquire loads keep the second read of the
      // sequence after the two fields, and an odd or changed sequence means a torn read.
      const std::uint64_t seq = loop.running_seq_.load(std::memory_order_acquire);
      const std::uint64_t label = loop.running_label_.load(std::memory_order_acquire);
      const std::int64_t since = loop.running_since_ns_.load(std::memory_order_acquire);
      if ((seq & 1U) != 0 || loop.running_seq_.load(std::memory_order_relaxed) != seq) continue;
      if (since == 0 || seq == reported) continue;
      const std::int64_t elapsed = now_ns() - since;
      if (elapsed <= threshold_ns) continue;
      reported = seq;  // once per stall: this callback is not reported again while it runs
      lock.unlock();
      reporter(
          {.label = label, .elapsed = std::chrono::nanoseconds(elapsed), .still_running = true});
      lock.lock();
    }
  }

  const std::int64_t threshold_ns;
  const slow_callback_reporter reporter;
  std::mutex mutex;
  std::condition_variable cv;
  bool quit = false;  // guarded by mutex
  std::thread thread;
};

// ---------------------------------------------------------------------------------------------

loop_hold& loop_hold::operator=(loop_hold&& other) noexcept {
  if (this != &other) {
    release();
    loop_ = std::exchange(other.loop_, nullptr);
  }
  return *this;
}

void loop_hold::release() {
  if (loop_ == nullptr) return;
  event_loop* loop = std::exchange(loop_, nullptr);
  std::uint8_t how = event_loop::k_awake;
  {
    std::lock_guard lock(loop->inbox_mutex_);
    if (loop->holds_.fetch_sub(1, std::memory_order_acq_rel) == 1) how = loop->claim_wake();
  }
  if (how != event_loop::k_awake) loop->signal_wake(how);
}

event_loop::ready_ring::~ready_ring() {
  while (head_ != tail_) items_[head_++ & (capacity_ - 1)].~ready_entry();
  ::operator delete (items_, std::align_val_t{alignof(ready_entry)});
}

void event_loop::ready_ring::grow() {
  const std::size_t capacity = capacity_ == 0 ? 64 : capacity_ * 2;
  auto* items = static_cast<ready_entry*>(
      ::operator new (capacity * sizeof(ready_entry), std::align_val_t{alignof(ready_entry)}));
  std::size_t n = 0;
  for (; head_ != tail_; ++head_, ++n) {
    ready_entry& e = items_[head_ & (capacity_ - 1)];
    ::new (static_cast<void*>(&items[n])) ready_entry{std::move(e.cb), e.label};
    e.~ready_entry();
  }
  ::operator delete (items_, std::align_val_t{alignof(ready_entry)});
  items_ = items;
  capacity_ = capacity;
  head_ = 0;
  tail_ = n;
}

event_loop::event_loop() {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) throw_errno("event_loop: epoll_create1");
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) {
    const int e = errno;
    close(epoll_fd_);
    errno = e;
    throw_errno("event_loop: eventfd");
  }
  // Edge-triggered: every write to an eventfd wakes its waiters, and with EPOLLET each wake-up
  // reports the descriptor once. The loop never reads the counter (it learns what to do from
  // wake_pending_), which saves a read() per wake-up; the counter would take 2^64 writes to fill.
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLET;
  ev.data.u64 = k_wake_token;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev) != 0) {
    const int e = errno;
    close(wake_fd_);
    close(epoll_fd_);
    errno = e;
    throw_errno("event_loop: epoll_ctl(eventfd)");
  }
}

event_loop::~event_loop() {
  monitor_.reset();  // join the watchdog before the state it reads goes
  if (heap_ != nullptr) munmap(heap_ - k_heap_pad, heap_capacity_ * sizeof(timer_entry));
  close(wake_fd_);
  close(epoll_fd_);
}

// ---------------------------------------------------------------------------------------------
// The turn.

void event_loop::run() {
  if (running_) throw std::logic_error("event_loop::run: already running (called from a callback)");
  running_ = true;
  // Whatever way run() leaves (idle, stopped, a callback's exception), the loop is left ready
  // for another run(): not running, no stop pending, the thread's timer slack as it was.
  struct run_guard {
    event_loop& loop;
    bool synchronized = false;
    explicit run_guard(event_loop& l) : loop(l) {}
    run_guard(const run_guard&) = delete;
    run_guard& operator=(const run_guard&) = delete;
    ~run_guard() {
      if (!synchronized) std::lock_guard lock(loop.inbox_mutex_);  // see claim_wake()
      while (loop.wakers_in_flight_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
      loop.stop_requested_.store(false, std::memory_order_relaxed);
      loop.running_ = false;
      if (loop.slack_lowered_) {
        prctl(PR_SET_TIMERSLACK, static_cast<unsigned long>(loop.saved_slack_), 0, 0, 0);
        loop.slack_lowered_ = false;
      }
    }
  } guard{*this};

  for (;;) {
    if (stop_requested_.load(std::memory_order_acquire)) return;
    if (wake_pending_.load(std::memory_order_acquire)) take_posts();
    if (event_next_ != event_count_ && !dispatch_events()) return;  // left by an exception
    if (heap_size_ != 0 && !fire_due_timers()) return;
    // The callbacks ready now; those they queue wait for the next turn, after timers and I/O.
    for (std::size_t n = ready_.size(); n != 0; --n) {
      ready_entry e;
      ready_.pop(e);
      invoke(e.label, e.cb);
      if (stop_requested_.load(std::memory_order_relaxed)) return;
    }
    if (idle()) {
      // Checked again under the mutex: a post() or release() that finished before this point is
      // seen, and one still inside its critical section is waited for.
      std::lock_guard lock(inbox_mutex_);
      if (!wake_pending_.load(std::memory_order_relaxed) &&
          holds_.load(std::memory_order_relaxed) == 0) {
        guard.synchronized = true;
        if (live_timers_ == 0) {  // only cancelled entries are left: drop them now
          for (std::size_t i = 0; i < heap_size_; ++i) free_slot(heap_[i].slot);
          heap_size_ = 0;
          stale_entries_ = 0;
        }
        return;
      }
    }

    // May the loop sleep, and until when? Not with work queued or a timer due (less the spin
    // margin); otherwise until the earliest live timer, or until a post, stop or descriptor.
    bool block = ready_.empty() && !wake_pending_.load(std::memory_order_relaxed);
    std::int64_t wake_at_ns = -1;  // absolute; -1: no deadline
    if (block && live_timers_ != 0) {
      drop_stale_top();
      wake_at_ns = heap_[0].deadline_ns - spin_ns_;
      now_ns_ = now_ns();
      block = wake_at_ns > now_ns_;
    }
    const bool posts_arriving = std::exchange(posts_seen_, false);
    if (block && posts_arriving && post_spin_ns_ > 0) {
      // Posts are arriving: wait a moment for the next one awake rather than pay for a sleep and
      // a wake-up (several µs on a virtual machine). Only after a turn that received posts, so a
      // loop no thread posts to never spins; never past the next timer; and adaptively: a spin
      // that caught nothing (the posting thread is slow, or preempted on a busy machine) skips
      // the next 1, 2, 4, ... 64 chances to spin, and one that catches a post resets that.
      if (spin_skips_left_ > 0) {
        --spin_skips_left_;
      } else {
        std::int64_t until = now_ns() + post_spin_ns_;
        if (wake_at_ns >= 0) until = std::min(until, wake_at_ns);
        while (!wake_pending_.load(std::memory_order_acquire) && now_ns() < until) {
#if defined(__x86_64__)
          __builtin_ia32_pause();
#endif
        }
        if (wake_pending_.load(std::memory_order_relaxed)) {
          spin_backoff_ = 0;
          continue;
        }
        if (until == wake_at_ns) continue;  // a timer is due: not a miss
        spin_backoff_ = std::min<std::uint32_t>(spin_backoff_ == 0 ? 1 : spin_backoff_ * 2, 64);
        spin_skips_left_ = spin_backoff_;
      }
    }
    if (block) {
      // About to sleep: from here on a post must wake the loop (see claim_wake()). Under the
      // mutex, so a post either came before (and is seen here) or sees sleeping_.
      std::lock_guard lock(inbox_mutex_);
      if (wake_pending_.load(std::memory_order_relaxed)) {
        block = false;
      } else {
        if (watched_ == 0) futex_word_.store(0, std::memory_order_relaxed);
        sleeping_.store(watched_ == 0 ? k_sleeps_on_futex : k_sleeps_in_epoll,
                        std::memory_order_relaxed);
      }
    }
    if (!block && watched_ == 0) continue;  // nothing to poll: no system call
    wait_for_events(block, wake_at_ns);
    sleeping_.store(k_awake, std::memory_order_relaxed);  // a poster seeing it late wakes once more
    if (!dispatch_events()) return;
  }
}

bool event_loop::idle() const {
  return ready_.empty() && live_timers_ == 0 && watched_ == 0 &&
         holds_.load(std::memory_order_acquire) == 0 &&
         !wake_pending_.load(std::memory_order_acquire) && event_next_ == event_count_;
}

template <class F>
void event_loop::invoke(std::uint64_t label, F& call) {
  if (monitor_ == nullptr) [[likely]] {
    call();
    return;
  }
  invoke_monitored(
      label, [](void* c) { (*static_cast<F*>(c))(); }, &call);
}

void event_loop::publish_running(std::uint64_t label, std::int64_t since_ns) {
  // The writing side of the sequence lock (this thread is the only writer): odd while writing;
  // the release stores keep the odd mark before the fields and the fields before the even mark.
  const std::uint64_t seq = running_seq_.load(std::memory_order_relaxed);
  running_seq_.store(seq + 1, std::memory_order_relaxed);
  running_label_.store(label, std::memory_order_release);
  running_since_ns_.store(since_ns, std::memory_order_release);
  running_seq_.store(seq + 2, std::memory_order_release);
}

void event_loop::invoke_monitored(std::uint64_t label, void (*call)(void*), void* context) {
  const std::int64_t start = now_ns();
  publish_running(label, start);
  struct unpublish {  // a throwing callback is no longer running either
    event_loop& loop;
    bool armed = true;
    explicit unpublish(event_loop& l) : loop(l) {}
    unpublish(const unpublish&) = delete;
    unpublish& operator=(const unpublish&) = delete;
    ~unpublish() {
      if (armed) loop.publish_running(0, 0);
    }
  } guard{*this};
  call(context);
  const std::int64_t elapsed = now_ns() - start;
  publish_running(0, 0);
  guard.armed = false;
  // Read monitor_ again: the callback may have turned the monitor off or changed it.
  if (monitor_ != nullptr && elapsed > monitor_->threshold_ns) {
    monitor_->reporter(
        {.label = label, .elapsed = std::chrono::nanoseconds(elapsed), .still_running = false});
  }
}

// ---------------------------------------------------------------------------------------------
// Waiting. epoll_wait takes milliseconds, too coarse for sub-millisecond waits, so the loop sleeps
// in epoll_pwait2 (a timespec; Linux 5.11, glibc 2.35), one system call per wait that also
// receives the descriptors and the eventfd; or, with no descriptor watched, on a futex with an
// absolute CLOCK_MONOTONIC deadline, which wakes about 0.4 µs sooner than an eventfd through epoll
// (2.3 against 2.7 µs, measured here). Either way the kernel lets a timed sleep run late by the
// thread's timer slack (50 µs by default, or 0.1 % of the timeout if more), so run() sets the
// slack to 1 ns before its first timed sleep and restores it when it returns. A timerfd would
// need no slack change, but costs a timerfd_settime per new earliest deadline and a read per
// expiry. What is left is the kernel's wake-up latency, which set_timer_spin() can buy back with
// CPU; measure_timer_overshoot() and bench_units' loop_timer_overshoot measure it.

void event_loop::wait_for_events(bool block, std::int64_t wake_at_ns) {
  event_next_ = 0;
  event_count_ = 0;
  if (block && wake_at_ns >= 0 && !slack_lowered_) {
    saved_slack_ = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
    if (saved_slack_ >= 0 && prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0) == 0) slack_lowered_ = true;
  }
  if (block && watched_ == 0) {
    // Nothing to watch: sleep on the futex until the absolute deadline (FUTEX_WAIT_BITSET takes
    // CLOCK_MONOTONIC, steady_clock's clock). If a post already set the word, it returns at once.
    timespec at{};
    at.tv_sec = static_cast<time_t>(wake_at_ns / 1'000'000'000);
    at.tv_nsec = static_cast<long>(wake_at_ns % 1'000'000'000);
    syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&futex_word_), FUTEX_WAIT_BITSET_PRIVATE,
            0U, wake_at_ns < 0 ? nullptr : &at, nullptr, FUTEX_BITSET_MATCH_ANY);
    return;  // woken, timed out or interrupted: the next turn looks at everything anyway
  }
  std::int64_t timeout_ns = 0;
  if (block) timeout_ns = wake_at_ns < 0 ? -1 : std::max<std::int64_t>(0, wake_at_ns - now_ns());
  int n = -1;
  if (has_pwait2_) {
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(timeout_ns / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(timeout_ns % 1'000'000'000);
    n = epoll_pwait2(epoll_fd_, events_, static_cast<int>(std::size(events_)),
                     timeout_ns < 0 ? nullptr : &ts, nullptr);
    if (n < 0 && (errno == ENOSYS || errno == EPERM)) has_pwait2_ = false;  // old kernel, seccomp
  }
  if (!has_pwait2_) {
    // Round up: a wait in whole milliseconds must not end before the deadline.
    const std::int64_t ms = timeout_ns < 0 ? -1 : (timeout_ns + 999'999) / 1'000'000;
    n = epoll_wait(epoll_fd_, events_, static_cast<int>(std::size(events_)),
                   static_cast<int>(std::min<std::int64_t>(ms, INT_MAX)));
  }
  if (n < 0) {
    if (errno == EINTR) return;
    throw_errno("event_loop::run: epoll_pwait2");
  }
  event_count_ = static_cast<std::uint32_t>(n);
}

bool event_loop::dispatch_events() {
  // The batch is kept in members so that a callback's exception (or a stop) leaves the rest of
  // it for the next turn: an edge-triggered watcher must not lose its edge.
  while (event_next_ != event_count_) {
    const epoll_event ev = events_[event_next_++];
    if (ev.data.u64 == k_wake_token) continue;  // the flags say what the wake-up was for
    dispatch(ev);
    if (stop_requested_.load(std::memory_order_relaxed)) return false;
  }
  return true;
}

void event_loop::dispatch(const epoll_event& ev) {
  const auto fd = static_cast<std::size_t>(ev.data.u64 & 0xffffffffU);
  const auto gen = static_cast<std::uint32_t>(ev.data.u64 >> 32U);
  if (fd >= watchers_.size()) return;
  watcher& w = watchers_[fd];
  if (!w.active || w.gen != gen || !w.cb) return;  // unwatched or re-watched since the wait
  // The callback runs moved out of its watcher: it may unwatch or re-watch its own descriptor,
  // or watch a higher one (which moves watchers_). It goes back unless that happened.
  struct put_back {
    event_loop& loop;
    std::size_t fd;
    std::uint32_t gen;
    fd_callback cb;
    put_back(event_loop& l, std::size_t f, std::uint32_t g, fd_callback&& c)
        : loop(l), fd(f), gen(g), cb(std::move(c)) {}
    put_back(const put_back&) = delete;
    put_back& operator=(const put_back&) = delete;
    ~put_back() {
      watcher& w = loop.watchers_[fd];
      if (w.active && w.gen == gen && !w.cb) w.cb = std::move(cb);
    }
  } keep{*this, fd, gen, std::move(w.cb)};
  const std::uint32_t events = ev.events;
  auto call = [&keep, events] { keep.cb(events); };
  invoke(w.label, call);
}

// ---------------------------------------------------------------------------------------------
// Callbacks, posts, stop.

void event_loop::call_soon(loop_callback cb, std::uint64_t label) {
  ready_.push(std::move(cb), label);
}

void event_loop::post(loop_callback cb, std::uint64_t label) {
  std::uint8_t how = k_awake;
  {
    std::lock_guard lock(inbox_mutex_);
    inbox_.push_back({std::move(cb), label});
    how = claim_wake();
  }
  if (how != k_awake) signal_wake(how);
}

void event_loop::stop() {
  std::uint8_t how = k_awake;
  {
    std::lock_guard lock(inbox_mutex_);
    stop_requested_.store(true, std::memory_order_release);
    how = claim_wake();
  }
  if (how != k_awake) signal_wake(how);
}

loop_hold event_loop::hold() {
  std::lock_guard lock(inbox_mutex_);  // ordered with release() and run()'s last check
  holds_.fetch_add(1, std::memory_order_relaxed);
  return loop_hold(this);
}

std::uint8_t event_loop::claim_wake() {
  // Called with inbox_mutex_ held. The loop looks at wake_pending_ every turn, so only a loop that
  // sleeps (or is about to) needs the eventfd, and only once per sleep: a post to a busy loop, or
  // the second of a burst, costs no system call. The write itself comes after the unlock
  // (signal_wake), or the woken loop would block on the mutex the writer still holds;
  // wakers_in_flight_ (raised here, under the lock) makes run() wait for that write before it
  // returns, so a loop that returned and was destroyed is never written to.
  wake_pending_.store(true, std::memory_order_release);
  const std::uint8_t how = sleeping_.load(std::memory_order_relaxed);
  if (how == k_awake) return k_awake;
  sleeping_.store(k_awake, std::memory_order_relaxed);
  wakers_in_flight_.fetch_add(1, std::memory_order_relaxed);
  return how;
}

void event_loop::signal_wake(std::uint8_t how) {
  if (how == k_sleeps_on_futex) {
    futex_word_.store(1, std::memory_order_release);
    syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&futex_word_), FUTEX_WAKE_PRIVATE, 1,
            nullptr, nullptr, 0);
  } else {
    const std::uint64_t one = 1;
    while (write(wake_fd_, &one, sizeof one) < 0 && errno == EINTR) {
    }
  }
  wakers_in_flight_.fetch_sub(1, std::memory_order_release);  // the last touch of the loop
}

void event_loop::take_posts() {
  {
    std::lock_guard lock(inbox_mutex_);
    wake_pending_.store(false, std::memory_order_relaxed);
    inbox_.swap(inbox_spare_);
  }
  // inbox_spare_ keeps its capacity between batches, so posting allocates only to grow.
  if (!inbox_spare_.empty()) posts_seen_ = true;
  for (ready_entry& e : inbox_spare_) ready_.push(std::move(e.cb), e.label);
  inbox_spare_.clear();
}

// ---------------------------------------------------------------------------------------------
// Descriptors.

void event_loop::watch(int fd, std::uint32_t events, fd_callback cb, std::uint64_t label) {
  if (fd < 0) throw std::invalid_argument("event_loop::watch: negative descriptor");
  const auto i = static_cast<std::size_t>(fd);
  if (i >= watchers_.size()) watchers_.resize(i + 1);
  watcher& w = watchers_[i];
  const std::uint32_t gen = w.gen + 1;
  epoll_event ev{};
  ev.events = events & (readable | writable | edge_triggered);
  ev.data.u64 = (std::uint64_t{gen} << 32U) | static_cast<std::uint32_t>(fd);
  if (epoll_ctl(epoll_fd_, w.active ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) != 0) {
    throw_errno("event_loop::watch: epoll_ctl");
  }
  w.gen = gen;
  w.cb = std::move(cb);
  w.label = label;
  if (!w.active) {
    w.active = true;
    ++watched_;
  }
}

bool event_loop::unwatch(int fd) {
  if (fd < 0 || static_cast<std::size_t>(fd) >= watchers_.size()) return false;
  watcher& w = watchers_[static_cast<std::size_t>(fd)];
  if (!w.active) return false;
  // EBADF or ENOENT here mean the descriptor was closed first, which removed it from epoll.
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  w.active = false;
  ++w.gen;  // an event for it still in this turn's batch is skipped
  w.cb.reset();
  --watched_;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Timers.

timer_handle event_loop::call_at(clock::time_point deadline, loop_callback cb,
                                 std::uint64_t label) {
  return arm(
      std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count(),
      std::move(cb), label);
}

timer_handle event_loop::call_later(clock::duration delay, loop_callback cb, std::uint64_t label) {
  now_ns_ = now_ns();
  return arm(
      saturating_add(now_ns_, std::chrono::duration_cast<std::chrono::nanoseconds>(delay).count()),
      std::move(cb), label);
}

timer_handle event_loop::arm(std::int64_t deadline_ns, loop_callback&& cb, std::uint64_t label) {
  if (heap_size_ + k_heap_pad >= heap_capacity_) heap_reserve(heap_size_ + 1);
  const std::uint32_t s = allocate_slot();  // after the heap: a throw leaves nothing half-armed
  timer_slot& slot = slot_at(s);
  slot.cb = std::move(cb);
  slot.label = label;
  slot.seq = next_seq_++;
  heap_push({.deadline_ns = deadline_ns, .slot = s, .unused = 0});
  ++live_timers_;
  return {.seq = slot.seq, .slot = s};
}

bool event_loop::cancel(timer_handle h) {
  if (h.seq == 0 || h.slot >= slot_count_) return false;
  timer_slot& slot = slot_at(h.slot);
  if (slot.seq != h.seq || !slot.cb) return false;  // fired, cancelled, or the slot was reused
  slot.cb.reset();
  --live_timers_;
  if (heap_[heap_size_ - 1].slot == h.slot) {
    // The entry is the heap's last (armed after every later one, it never rose): drop it now.
    --heap_size_;
    free_slot(h.slot);
    return true;
  }
  ++stale_entries_;
  if (stale_entries_ > 64 && stale_entries_ > live_timers_) compact_heap();
  return true;
}

void event_loop::reserve_timers(std::size_t n) {
  heap_reserve(n);
  const std::size_t chunk = std::size_t{1} << k_chunk_bits;
  while (slots_.size() * chunk < n) slots_.push_back(std::make_unique<timer_slot[]>(chunk));
}

std::uint32_t event_loop::allocate_slot() {
  if (free_head_ != k_no_slot) {
    const std::uint32_t s = free_head_;
    free_head_ = static_cast<std::uint32_t>(slot_at(s).label);
    return s;
  }
  if (slot_count_ == k_no_slot) throw std::length_error("event_loop: too many timers");
  if ((slot_count_ >> k_chunk_bits) == slots_.size()) {
    slots_.push_back(std::make_unique<timer_slot[]>(std::size_t{1} << k_chunk_bits));
  }
  return slot_count_++;
}

void event_loop::free_slot(std::uint32_t s) {
  timer_slot& slot = slot_at(s);
  slot.cb.reset();
  slot.label = free_head_;  // keeps seq: a handle to the old arming must not match a new one
  free_head_ = s;
}

void event_loop::heap_reserve(std::size_t entries) {
  const std::size_t need = entries + k_heap_pad + 1;
  if (need <= heap_capacity_) return;
  const std::size_t capacity = std::max({need, heap_capacity_ * 2, k_page / sizeof(timer_entry)});
  const std::size_t bytes = (capacity * sizeof(timer_entry) + k_page - 1) / k_page * k_page;
  void* p = nullptr;
  if (heap_ == nullptr) {
    p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  } else {
    p = mremap(heap_ - k_heap_pad, heap_capacity_ * sizeof(timer_entry), bytes, MREMAP_MAYMOVE);
  }
  if (p == MAP_FAILED) throw std::bad_alloc();
  heap_ = static_cast<timer_entry*>(p) + k_heap_pad;
  heap_capacity_ = bytes / sizeof(timer_entry);
}

void event_loop::heap_push(timer_entry e) {
  std::size_t i = heap_size_++;
  while (i != 0) {
    const std::size_t parent = (i - 1) / 4;
    if (!earlier(e, heap_[parent])) break;
    heap_[i] = heap_[parent];
    i = parent;
  }
  heap_[i] = e;
}

void event_loop::sift_down(std::size_t i, timer_entry e) {
  const std::size_t n = heap_size_;
  for (;;) {
    const std::size_t first = 4 * i + 1;
    if (first >= n) break;
    const std::size_t last = std::min(first + 4, n);
    std::size_t best = first;
    for (std::size_t c = first + 1; c < last; ++c) {
      if (earlier(heap_[c], heap_[best])) best = c;
    }
    if (!earlier(heap_[best], e)) break;
    heap_[i] = heap_[best];
    i = best;
  }
  heap_[i] = e;
}

void event_loop::heap_pop() {
  const timer_entry last = heap_[--heap_size_];
  if (heap_size_ != 0) sift_down(0, last);
}

void event_loop::drop_stale_top() {
  while (heap_size_ != 0 && !slot_at(heap_[0].slot).cb) {
    const std::uint32_t s = heap_[0].slot;
    heap_pop();
    free_slot(s);
    --stale_entries_;
  }
}

void event_loop::compact_heap() {
  std::size_t kept = 0;
  for (std::size_t i = 0; i < heap_size_; ++i) {
    if (slot_at(heap_[i].slot).cb) {
      heap_[kept++] = heap_[i];
    } else {
      free_slot(heap_[i].slot);
    }
  }
  heap_size_ = kept;
  stale_entries_ = 0;
  if (kept < 2) return;
  for (std::size_t i = (kept - 2) / 4 + 1; i-- != 0;) sift_down(i, heap_[i]);  // Floyd: O(n)
}

bool event_loop::fire_due_timers() {
  // A deadline at or before the last clock reading is due without a new one.
  if (heap_[0].deadline_ns > now_ns_) now_ns_ = now_ns();
  // Only timers armed before this pass: one that re-arms itself already due waits for the next
  // turn instead of starving the ready queue and the descriptors.
  const std::uint64_t armed_before = next_seq_;
  while (heap_size_ != 0 && heap_[0].deadline_ns <= now_ns_) {
    const std::uint32_t s = heap_[0].slot;
    timer_slot& slot = slot_at(s);
    if (slot.seq >= armed_before) break;
    heap_pop();
    if (!slot.cb) {
      free_slot(s);
      --stale_entries_;
      continue;
    }
    // Freed before the call: the callback may arm timers (reusing this slot), and cancel() on
    // its own handle now returns false, as for any timer that has fired.
    loop_callback cb = std::move(slot.cb);
    const std::uint64_t label = slot.label;
    free_slot(s);
    --live_timers_;
    invoke(label, cb);
    if (stop_requested_.load(std::memory_order_relaxed)) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------

void event_loop::set_slow_callback(std::chrono::nanoseconds threshold,
                                   slow_callback_reporter reporter) {
  monitor_.reset();  // joins the old watchdog
  if (threshold.count() <= 0 || !reporter) return;
  monitor_ = std::make_unique<monitor>(*this, threshold.count(), std::move(reporter));
}

timer_overshoot measure_timer_overshoot(std::chrono::nanoseconds delay, int samples,
                                        std::chrono::nanoseconds spin) {
  struct state {
    event_loop loop;
    std::vector<std::int64_t> late_ns;
    std::int64_t delay_ns = 0;
    std::int64_t deadline_ns = 0;
    int left = 0;
    static void arm(state* s) {
      s->deadline_ns = now_ns() + s->delay_ns;
      s->loop.call_at(event_loop::clock::time_point(std::chrono::nanoseconds(s->deadline_ns)), [s] {
        s->late_ns.push_back(now_ns() - s->deadline_ns);
        if (--s->left > 0) arm(s);
      });
    }
  };
  timer_overshoot out;
  if (samples <= 0) return out;
  state s;
  s.loop.set_timer_spin(spin);
  s.late_ns.reserve(static_cast<std::size_t>(samples));
  s.delay_ns = delay.count();
  s.left = samples;
  state::arm(&s);
  s.loop.run();
  std::sort(s.late_ns.begin(), s.late_ns.end());
  const auto at = [&](std::size_t percent) {  // the nearest rank
    return std::chrono::nanoseconds(s.late_ns[((s.late_ns.size() - 1) * percent + 50) / 100]);
  };
  out.samples = static_cast<int>(s.late_ns.size());
  out.median = at(50);
  out.p90 = at(90);
  out.p99 = at(99);
  out.max = std::chrono::nanoseconds(s.late_ns.back());
  double sum = 0;
  for (const std::int64_t v : s.late_ns) sum += static_cast<double>(v);
  out.mean_ns = sum / static_cast<double>(s.late_ns.size());
  return out;
}

}  // namespace clab
