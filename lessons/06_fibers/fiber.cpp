// Lesson 06's engine: our fiber scheduler. A park saves nothing itself: the jump in switch_to()
// saves the registers on the leaving stack, and the context that arrives stores the leaving
// fiber's continuation and only then makes it visible (arrived()): a fiber can never be resumed,
// by this thread or a thief, while its stack is still in use.
// Look for: [snippet:fiber-park], [snippet:fiber-switch], and the sanitizer calls around the jump.
#include "lessons/06_fibers/fiber.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>

#if defined(__SANITIZE_ADDRESS__)
#define CLAB_ASAN 1
#elif defined(__SANITIZE_THREAD__)
#define CLAB_TSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CLAB_ASAN 1
#elif __has_feature(thread_sanitizer)
#define CLAB_TSAN 1
#endif
#endif
#ifdef CLAB_ASAN
#include <sanitizer/asan_interface.h>
#endif
#ifdef CLAB_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace clab {

using detail::fiber_ctl;
using detail::join_state_base;

namespace {

// A batch resumes at least this many fibers before the loop turns (timers, descriptors, posts):
// enough to amortise a turn over many one-jump switches, few enough that a timer is late by at most
// 64 fiber slices.
constexpr std::size_t k_batch_min = 64;

thread_local fiber_scheduler* t_current = nullptr;

// The hot path is inlined into the caller of the switch: every call level between a fiber's code
// and the jump is a return the CPU mispredicts after the jump (its return-address stack holds the
// other fiber's calls), and those returns, not the jump, dominate a switch.
#define CLAB_HOT [[gnu::always_inline]] inline

}  // namespace

// Not inlined and not pure (the empty asm clobbers memory): the compiler may not reuse a value
// read before a switch, when the fiber may have moved to another thread.
[[gnu::noinline]] fiber_scheduler* fiber_scheduler::current() noexcept {
  asm volatile("" ::: "memory");
  return t_current;
}

/// Boost.Context's stack allocator for our fibers: the stack is preallocated (the control block
/// sits at its top) and our fibers never leave through Boost's exit path (see finish_fiber()), so
/// Boost never calls this; a finished fiber's stack goes back to the pool of the thread where it
/// finished, from arrived().
struct stack_release {
  void deallocate(boost::context::stack_context& s) noexcept {
    fiber_scheduler::current()->deallocate_stack(s);
  }
};
static_assert(std::is_trivially_destructible_v<stack_release>);

/// The this_fiber functions, with access to the scheduler's insides.
struct this_fiber_access {
  static fiber_scheduler& running(const char* what) {
    fiber_scheduler* s = fiber_scheduler::current();
    if (s == nullptr || s->running_ == &s->main_) {
      throw std::logic_error(std::string(what) + ": not called from a fiber");
    }
    return *s;
  }
  static bool in_fiber() noexcept {
    fiber_scheduler* s = fiber_scheduler::current();
    return s != nullptr && s->running_ != &s->main_;
  }
  static std::uint64_t label() noexcept {
    return in_fiber() ? fiber_scheduler::current()->running_->label : 0;
  }
  static void yield() { running("this_fiber::yield").yield(); }
  static void sleep_until(event_loop::clock::time_point deadline) {
    running("this_fiber::sleep_until").sleep_until(deadline);
  }
  static bool sleep_until(event_loop::clock::time_point deadline, const std::stop_token& stop) {
    return running("this_fiber::sleep_until").sleep_until(deadline, stop);
  }
  static fd_wait wait_fd(const char* what, int fd, std::uint32_t events,
                         const std::stop_token& stop, event_loop::clock::time_point deadline) {
    return running(what).wait_fd(fd, events, stop, deadline);
  }
  static int worker() noexcept {
    fiber_scheduler* s = fiber_scheduler::current();
    return s != nullptr ? s->worker_ : 0;
  }
};

// ---- failure_sink and join_state ----

void detail::failure_sink::orphan(std::exception_ptr error) noexcept {
  std::lock_guard lock(mutex_);
  if (!first_) first_ = std::move(error);
  ++count_;
}

void detail::failure_sink::rethrow_orphan() {
  std::exception_ptr e;
  {
    std::lock_guard lock(mutex_);
    e = std::exchange(first_, nullptr);
    count_ = 0;
  }
  if (e) std::rethrow_exception(e);
}

void detail::failure_sink::report_leftover(const char* owner) noexcept {
  std::lock_guard lock(mutex_);
  if (!first_) return;
  const char* what = "an exception not derived from std::exception";
  try {
    std::rethrow_exception(first_);
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
  }
  std::fprintf(stderr, "%s: %zu fiber failure(s) nobody joined, the first: %s\n", owner, count_,
               what);
}

void join_state_base::release() noexcept {
  if (owners.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  // Last owner out: an exception that join() never took must not vanish.
  if (error && !taken && sink != nullptr) sink->orphan(error);
  destroy(this);
}

fiber_ctl* join_state_base::finish() noexcept {
  const std::uintptr_t w = waiter.exchange(k_finished, std::memory_order_acq_rel);
  return w > k_finished ? reinterpret_cast<fiber_ctl*>(w) : nullptr;
}

void detail::wait_for(join_state_base& s) {
  if (s.finished()) return;
  fiber_scheduler* sched = fiber_scheduler::current();
  if (sched == nullptr || sched->running_ == &sched->main_) {
    throw std::logic_error(
        "fiber_handle::join: the fiber has not finished and the caller is not a fiber (join from "
        "a fiber, or after run() returned)");
  }
  // Registering as the waiter happens after the switch (see arrived()): the finishing fiber may
  // run on another thread and must not find us while we are still on our stack.
  sched->park({fiber_scheduler::after_switch::wait_join, sched->running_, nullptr, &s});
}

// ---- the ready deque ----

CLAB_HOT void fiber_scheduler::ready_deque::push_front(fiber_ctl* f) noexcept {
  f->prev = nullptr;
  f->next = head;
  if (head != nullptr)
    head->prev = f;
  else
    tail = f;
  head = f;
  ++size;
}

CLAB_HOT void fiber_scheduler::ready_deque::push_back(fiber_ctl* f) noexcept {
  f->next = nullptr;
  f->prev = tail;
  if (tail != nullptr)
    tail->next = f;
  else
    head = f;
  tail = f;
  ++size;
}

CLAB_HOT fiber_ctl* fiber_scheduler::ready_deque::pop_front() noexcept {
  fiber_ctl* f = head;
  if (f == nullptr) return nullptr;
  head = f->next;
  if (head != nullptr)
    head->prev = nullptr;
  else
    tail = nullptr;
  --size;
  return f;
}

fiber_ctl* fiber_scheduler::ready_deque::pop_back() noexcept {
  fiber_ctl* f = tail;
  if (f == nullptr) return nullptr;
  tail = f->prev;
  if (tail != nullptr)
    tail->next = nullptr;
  else
    head = nullptr;
  --size;
  return f;
}

CLAB_HOT void fiber_scheduler::push_ready(fiber_ctl* f, bool front) noexcept {
  if (pool_ == nullptr) {
    front ? ready_.push_front(f) : ready_.push_back(f);
    return;
  }
  {
    std::lock_guard lock(ready_mutex_);
    front ? ready_.push_front(f) : ready_.push_back(f);
  }
  // A sleeping worker could steal it: wake one (seq_cst pairs with the idler's announcement).
  if (pool_->idle_count_.load(std::memory_order_seq_cst) > 0) pool_->wake_idle(this);
}

CLAB_HOT fiber_ctl* fiber_scheduler::pop_ready() noexcept {
  if (pool_ == nullptr) return ready_.pop_front();
  std::lock_guard lock(ready_mutex_);
  return ready_.pop_front();
}

std::size_t fiber_scheduler::ready_size() noexcept {
  if (pool_ == nullptr) return ready_.size;
  std::lock_guard lock(ready_mutex_);
  return ready_.size;
}

// ---- construction ----

fiber_scheduler::fiber_scheduler(event_loop& loop, stack_kind stacks)
    : fiber_scheduler(loop, stacks, nullptr, 0) {}

fiber_scheduler::fiber_scheduler(event_loop& loop, stack_kind stacks, fiber_pool* pool, int worker)
    : loop_(loop), pool_(pool), worker_(worker), kind_(stacks) {
  if (kind_ == stack_kind::slab) {
    slab_ = std::make_unique<slab_stacks>();
  } else {
    guarded_ = std::make_unique<guarded_stacks>();
  }
}

fiber_scheduler::~fiber_scheduler() {
  if (live_ != 0) {
    std::fprintf(stderr, "fiber_scheduler: destroyed while %zu fibers have not finished\n", live_);
    std::terminate();
  }
  report_leftover("fiber_scheduler");
}

std::size_t fiber_scheduler::stack_mappings() const noexcept {
  return slab_ ? slab_->mappings() : guarded_->mappings();
}

boost::context::stack_context fiber_scheduler::allocate_stack() {
  return slab_ ? slab_->allocate() : guarded_->allocate();
}

void fiber_scheduler::deallocate_stack(boost::context::stack_context& s) noexcept {
  slab_ ? slab_->deallocate(s) : guarded_->deallocate(s);
}

void* fiber_scheduler::place_frame(boost::context::stack_context s, std::size_t bytes,
                                   std::size_t align) {
  // The frame and Boost's record must leave most of the stack to the fiber.
  if (bytes > s.size / 8) {
    throw std::length_error("fiber_scheduler::spawn: the body's captures are over 1/8 of a stack");
  }
  const std::uintptr_t top = reinterpret_cast<std::uintptr_t>(s.sp);
  return reinterpret_cast<void*>((top - bytes) &
                                 ~(std::uintptr_t{std::max<std::size_t>(align, 64)} - 1));
}

join_state_base* fiber_scheduler::launch(fiber_ctl* f, join_state_base* st,
                                         std::size_t /*frame_bytes*/) noexcept {
  f->state = st;
  if (kind_ == stack_kind::slab) f->canary = slab_stacks::checked_word(f->stack);
  // Boost puts its own record right below our frame and the stack below that.
  char* frame = reinterpret_cast<char*>(f);
  char* bottom = static_cast<char*>(f->stack.sp) - f->stack.size;
  const boost::context::preallocated where(frame, static_cast<std::size_t>(frame - bottom),
                                           f->stack);
#ifdef CLAB_TSAN
  // Boost's constructor jumps onto the new stack and straight back: let TSan see that jump as
  // the new fiber's, so its shadow call stack stays balanced.
  f->tsan_fiber = __tsan_create_fiber(0);
  void* me = __tsan_get_current_fiber();
  __tsan_switch_to_fiber(f->tsan_fiber, 0);
#endif
  auto entry = [f](boost::context::fiber&& back) -> boost::context::fiber {
    fiber_main(f, std::move(back));
  };
  // Boost's record (this lambda and stack_release) stays on the stack when the fiber dies and is
  // never destroyed: it must not need to be.
  static_assert(std::is_trivially_destructible_v<decltype(entry)>);
  f->cont = boost::context::fiber(std::allocator_arg, where, stack_release{}, std::move(entry));
#ifdef CLAB_TSAN
  __tsan_switch_to_fiber(me, 0);
#endif
  if (pool_ != nullptr) {
    started_.store(started_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  } else {
    ++live_;
  }
  // Work-first: spawned from one of our fibers, the child runs now and the parent waits at the
  // front. Otherwise the child queues at the back.
  if (current() == this && running_ != &main_) {
    fiber_ctl* parent = running_;
    if (budget_ > 0) {
      --budget_;
      after_ = {after_switch::push_front, parent, nullptr, nullptr};
      switch_to(parent, f);
    } else {  // batch spent: both wait at the front, the child first
      after_ = {after_switch::push_front, parent, f, nullptr};
      switch_to(parent, &main_);
    }
  } else {
    make_ready_back(f);
  }
  return st;
}

// ---- the engine ----

// [snippet:fiber-park]
/// The running fiber stops here: it picks who runs next, says what the next context must do with
/// it (`a`: push it somewhere, register it as a waiter, or nothing for a timer that holds it), and
/// jumps. It returns from switch_to() when someone resumes it, maybe on another thread.
CLAB_HOT void fiber_scheduler::park(after_switch a) noexcept {
  fiber_ctl* self = running_;
  fiber_ctl* next = pick_next();
  after_ = a;
  switch_to(self, next);
}

/// Resuming is only this: a ready fiber goes to the back of the deque; a batch will jump to it.
void fiber_scheduler::make_ready_back(fiber_ctl* f) noexcept {
  push_ready(f, /*front=*/false);
  if (!in_batch_) queue_batch();  // from a timer or a loop callback: start a batch
}
// [end-snippet]

/// The next ready fiber while the batch has budget, else the loop's context (end of batch).
CLAB_HOT fiber_ctl* fiber_scheduler::pick_next() noexcept {
  if (budget_ == 0) return &main_;
  fiber_ctl* f = pop_ready();
  if (f == nullptr) return &main_;
  --budget_;
  return f;
}

// [snippet:fiber-switch]
/// The one switch: from the running context to `to`. The jump saves our registers on our stack
/// and returns, much later, the continuation of whoever jumped back to us.
CLAB_HOT void fiber_scheduler::switch_to(fiber_ctl* from, fiber_ctl* to) noexcept {
  // Last chance to see an overflow of `from`'s stack (guarded stacks: a word that always holds).
  if (*from->canary != slab_stacks::k_canary[slab_stacks::k_checked_word]) overflowed(from);
  previous_ = from;  // the arriving side stores our continuation there
  running_ = to;
  ++switches_;
  void* fake_stack = nullptr;
  leave_for(&fake_stack, to);  // sanitizer bookkeeping (nothing in release builds)
  boost::context::fiber back = std::move(to->cont).resume();
  // We are `from` again. In a pool maybe on another thread: re-read the scheduler there. A lone
  // scheduler's fibers never leave it, so `this` is still right (and saves the lookup).
  (pool_ != nullptr ? current() : this)->arrived(fake_stack, std::move(back));
}
// [end-snippet]

/// Tells the sanitizers we are about to leave the running stack for `to`'s.
CLAB_HOT void fiber_scheduler::leave_for([[maybe_unused]] void** fake_stack,
                                         [[maybe_unused]] fiber_ctl* to) noexcept {
#ifdef CLAB_ASAN
  if (to == &main_) {
    __sanitizer_start_switch_fiber(fake_stack, main_stack_bottom_, main_stack_size_);
  } else {
    __sanitizer_start_switch_fiber(fake_stack, static_cast<char*>(to->stack.sp) - to->stack.size,
                                   to->stack.size);
  }
#endif
#ifdef CLAB_TSAN
  __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
}

/// Runs first on the context that has just been jumped to: stores the continuation of the one that
/// left (unless it died), then does what it asked for. Only now may anyone resume it.
CLAB_HOT void fiber_scheduler::arrived([[maybe_unused]] void* fake_stack,
                                       boost::context::fiber&& back) noexcept {
#ifdef CLAB_ASAN
  const void* from_bottom = nullptr;
  std::size_t from_size = 0;
  __sanitizer_finish_switch_fiber(fake_stack, &from_bottom, &from_size);
  if (previous_ == &main_) {  // how we learn the loop thread's stack, for jumps back to it
    main_stack_bottom_ = from_bottom;
    main_stack_size_ = from_size;
  }
#endif
#ifdef CLAB_TSAN
  if (dead_tsan_ != nullptr) __tsan_destroy_fiber(std::exchange(dead_tsan_, nullptr));
#endif
  if (previous_ != nullptr) [[likely]] {
    previous_->cont = std::move(back);
  } else {
    arrived_from_dead(std::move(back));
  }
  // A yield on one thread queues itself before it jumps and asks for nothing: two loads here.
  if (after_.what != after_switch::none) do_after();
}

/// The fiber that jumped here has finished. `back` is its last context, never to be resumed:
/// forget it without destroying it (destroying a live boost::context::fiber would unwind it), and
/// its stack goes back to this thread's pool.
[[gnu::noinline]] void fiber_scheduler::arrived_from_dead(boost::context::fiber&& back) noexcept {
  ::new (static_cast<void*>(forgotten_)) boost::context::fiber(std::move(back));
  deallocate_stack(dying_stack_);
}

/// What the fiber that left asked of us: be pushed to the ready deque, or wait for a join.
[[gnu::noinline]] void fiber_scheduler::do_after() noexcept {
  const after_switch a = std::exchange(after_, after_switch{});
  switch (a.what) {
    case after_switch::none:
      break;
    case after_switch::push_front:
      push_ready(a.who, true);
      if (a.then_front != nullptr) push_ready(a.then_front, true);
      break;
    case after_switch::push_back:
      push_ready(a.who, false);
      break;
    case after_switch::wait_join: {
      std::uintptr_t expected = 0;
      if (!a.join->waiter.compare_exchange_strong(expected, reinterpret_cast<std::uintptr_t>(a.who),
                                                  std::memory_order_acq_rel)) {
        push_ready(a.who, false);  // it finished meanwhile: ready at once
      }
      break;
    }
  }
}

/// A new fiber starts here, on its own stack, and never returns: its last act is a switch.
void fiber_scheduler::fiber_main(fiber_ctl* f, boost::context::fiber&& back) {
  current()->arrived(nullptr, std::move(back));
  f->body(f);  // runs the body, stores its result or exception; never throws
  current()->finish_fiber(f);
}

/// The fiber's last moments: deliver the result, wake the joiner, and switch away for good. The
/// context we switch to frees our stack (see arrived()): we never return into Boost's exit path,
/// so the sanitizers see an ordinary switch, and Boost's record on our stack (trivial) simply goes
/// with the stack.
void fiber_scheduler::finish_fiber(fiber_ctl* f) noexcept {
  join_state_base* st = f->state;
  if (fiber_ctl* waiter = st->finish(); waiter != nullptr) make_ready_back(waiter);
  st->release();
  if (kind_ == stack_kind::slab && !slab_stacks::canary_intact(f->stack)) overflowed(f);
  if (pool_ == nullptr) --live_;
  fiber_ctl* next = pick_next();
  previous_ = nullptr;  // we die: the next context frees our stack instead of keeping us
  dying_stack_ = f->stack;
  running_ = next;
  ++switches_;
#ifdef CLAB_ASAN
  // nullptr: this stack is finished, ASan may drop its fake frames.
  if (next == &main_) {
    __sanitizer_start_switch_fiber(nullptr, main_stack_bottom_, main_stack_size_);
  } else {
    __sanitizer_start_switch_fiber(nullptr, static_cast<char*>(next->stack.sp) - next->stack.size,
                                   next->stack.size);
  }
#endif
#ifdef CLAB_TSAN
  dead_tsan_ = f->tsan_fiber;  // destroyed by the next context: not the fiber we run on
  __tsan_switch_to_fiber(next->tsan_fiber, 0);
#endif
  if (pool_ != nullptr) {  // the pool ends, if this was the last fiber, once this thread idles
    finished_.store(finished_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  }
  std::move(next->cont).resume();
  std::abort();  // unreachable: nobody resumes a finished fiber
}

CLAB_HOT void fiber_scheduler::yield() noexcept {
  if (pool_ != nullptr || budget_ == 0) [[unlikely]] {
    yield_slow();
    return;
  }
  // One thread, batch not spent: the front fiber runs next and we join the back. Nobody can pick
  // us before our jump is done, so we queue ourselves now (cheaper than asking the next context
  // to), and the deque's size does not change.
  fiber_ctl* self = running_;
  fiber_ctl* next = ready_.head;
  --budget_;
  if (next == nullptr) return;  // nobody else is ready: go on (the loop still turns in time)
  ready_.head = next->next;
  if (ready_.head != nullptr) {
    ready_.head->prev = nullptr;
  } else {
    ready_.tail = nullptr;
  }
  self->next = nullptr;
  self->prev = ready_.tail;
  if (ready_.tail != nullptr) {
    ready_.tail->next = self;
  } else {
    ready_.head = self;
  }
  ready_.tail = self;
  switch_to(self, next);
}

/// yield() in a pool (the deques take locks, and a thief may take us once we are queued), or
/// with the batch spent (back to the loop).
[[gnu::noinline]] void fiber_scheduler::yield_slow() noexcept {
  fiber_ctl* self = running_;
  fiber_ctl* next = budget_ > 0 ? pop_ready() : &main_;
  if (next == nullptr) {  // nobody else is ready: go on, but let the loop turn now and then
    --budget_;
    return;
  }
  if (next != &main_) --budget_;
  if (pool_ == nullptr) {
    ready_.push_back(self);
  } else {
    after_ = {after_switch::push_back, self, nullptr, nullptr};
  }
  switch_to(self, next);
}

void fiber_scheduler::sleep_until(event_loop::clock::time_point deadline) noexcept {
  fiber_ctl* self = running_;
  loop_.call_at(
      deadline, [this, self] { make_ready_back(self); }, self->label);
  park({});  // the timer holds us; nothing to do after the switch
}

namespace {

/// What a cancellable sleep shares with the wake-up its stop sends to the sleeper's loop: two
/// owners (the sleeping fiber, and the post once sent), so a post that arrives after the timer has
/// fired (and the fiber has moved on) still finds it.
struct stop_wake {
  fiber_scheduler* sched;
  fiber_ctl* fiber;
  timer_handle timer;
  std::atomic<int> owners{1};
  bool stopped = false;  // written on the loop's thread, before it makes the fiber ready
  void release() noexcept {
    if (owners.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }
};

}  // namespace

bool fiber_scheduler::sleep_until(event_loop::clock::time_point deadline,
                                  const std::stop_token& stop) {
  if (!stop.stop_possible()) {
    sleep_until(deadline);
    return true;
  }
  if (stop.stop_requested()) return false;
  fiber_ctl* self = running_;
  auto* w = new stop_wake{this, self, {}};
  w->timer = loop_.call_at(
      deadline, [this, self] { make_ready_back(self); }, self->label);
  {
    // The stop may come from any thread: it asks this loop (post() is safe from anywhere) to
    // cancel the timer and wake us. If the timer has fired meanwhile, cancel() says so and the post
    // does nothing. The callback's destructor waits for a callback running now on another thread.
    const auto wake = [w] {
      w->owners.fetch_add(1, std::memory_order_relaxed);
      w->sched->loop_.post([w] {
        if (w->sched->loop_.cancel(w->timer)) {
          w->stopped = true;
          w->sched->make_ready_back(w->fiber);
        }
        w->release();
      });
    };
    const std::stop_callback on_stop(stop, wake);
    park({});  // the timer, or the stop's post, holds us
  }
  const bool slept = !w->stopped;
  w->release();
  return slept;
}

// [snippet:fiber-wait-fd]
/// One fiber parked on a descriptor. Three things may wake it, each a callback on the loop it
/// parked on: the descriptor's readiness, the deadline's timer, a stop's post. The first to run
/// undoes the other two (unwatches the descriptor, cancels the timer; a later post finds `woken`)
/// and makes the fiber ready. So when the fiber runs again, maybe on another thread of a pool, no
/// trace of its wait is left in that loop, whose state only that loop's thread may touch.
struct fiber_scheduler::fd_wake {
  fiber_scheduler* sched;  // whose loop watches the descriptor
  fiber_ctl* fiber;
  int fd;
  timer_handle timer;          // the deadline's (none: no deadline)
  std::atomic<int> owners{1};  // the fiber, and a stop's post once sent (heap-allocated then)
  fd_wait why = fd_wait::ready;
  bool woken = false;  // loop thread only

  void wake(fd_wait reason) noexcept {
    if (woken) return;  // a stop's post that came after the descriptor or the timer
    woken = true;
    why = reason;
    sched->loop_.unwatch(fd);
    sched->loop_.cancel(timer);  // does nothing if this is the timer firing, or there is none
    sched->make_ready_back(fiber);
  }
  void release() noexcept {
    if (owners.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }
};

/// The park behind this_fiber::wait_readable/wait_writable: as sleep_until(deadline, stop), with
/// the descriptor as a third waker. The loop that runs this fiber's timers watches the socket in
/// the same epoll set, so a thousand parked requests cost the thread nothing while they wait.
fd_wait fiber_scheduler::wait_fd(int fd, std::uint32_t events, const std::stop_token& stop,
                                 event_loop::clock::time_point deadline) {
  if (stop.stop_requested()) return fd_wait::stopped;
  fiber_ctl* self = running_;
  // Only a stop's post can outlive the park (it may arrive after another waker won), so the
  // record lives on this fiber's stack unless a stop is possible.
  fd_wake local{this, self, fd, {}};
  fd_wake* w = stop.stop_possible() ? new fd_wake{this, self, fd, {}} : &local;
  bool watched = false;
  try {
    loop_.watch(
        fd, events, [w](std::uint32_t /*events*/) { w->wake(fd_wait::ready); }, self->label);
    watched = true;
    if (deadline != event_loop::clock::time_point::max()) {
      w->timer = loop_.call_at(
          deadline, [w] { w->wake(fd_wait::timed_out); }, self->label);
    }
  } catch (...) {  // epoll refused the descriptor (or no room for the timer): nothing parked
    if (watched) loop_.unwatch(fd);
    if (w != &local) w->release();
    throw;
  }
  {
    // Any thread: ask the parking loop to wake us (see sleep_until(deadline, stop)).
    const auto on_stop_requested = [w] {
      w->owners.fetch_add(1, std::memory_order_relaxed);
      w->sched->loop_.post([w] {
        w->wake(fd_wait::stopped);
        w->release();
      });
    };
    std::optional<std::stop_callback<decltype(on_stop_requested)>> on_stop;
    if (w != &local) on_stop.emplace(stop, on_stop_requested);
    park({});  // the descriptor, the timer or the stop's post holds us
  }
  const fd_wait why = w->why;
  if (w != &local) w->release();
  return why;
}
// [end-snippet]

void fiber_scheduler::overflowed(const fiber_ctl* f) noexcept {
  std::fprintf(stderr,
               "fiber %llu: stack overflow: the canary at the bottom of its %zu KiB stack was "
               "overwritten (slab stacks have no guard page)\n",
               static_cast<unsigned long long>(f->label), f->stack.size / 1024);
  std::abort();
}

// ---- batches: how the loop runs fibers ----

void fiber_scheduler::queue_batch() noexcept {
  if (batch_queued_) return;
  std::uint64_t label = 0;
  if (pool_ == nullptr) {
    if (ready_.head == nullptr) return;
    label = ready_.head->label;
  } else {
    std::lock_guard lock(ready_mutex_);
    if (ready_.head == nullptr) return;
    label = ready_.head->label;
  }
  batch_queued_ = true;
  // The batch is labelled with the fiber it will start with; with exact labels that is the only
  // fiber it runs, so the lag monitor names the fiber that does not park.
  loop_.call_soon([this] { run_batch(); }, label);
}

/// One loop callback: jumps into the first ready fiber; fibers then switch straight from one to
/// the next until the budget is spent or nobody is ready, and the last one jumps back here.
void fiber_scheduler::run_batch() noexcept {
  batch_queued_ = false;
  if (pool_ != nullptr) {
    wake_posted_.store(false, std::memory_order_relaxed);
    if (idle_.exchange(false)) pool_->idle_count_.fetch_sub(1, std::memory_order_seq_cst);
  }
  fiber_scheduler* outer = std::exchange(t_current, this);
  in_batch_ = true;
#ifdef CLAB_TSAN
  main_.tsan_fiber = __tsan_get_current_fiber();
#endif
  budget_ = exact_labels_ ? 1 : std::max(ready_size(), k_batch_min);
  while (budget_ > 0) {
    fiber_ctl* f = pop_ready();
    if (f == nullptr && pool_ != nullptr) f = pool_->steal(this);
    if (f == nullptr && pool_ != nullptr) {
      // Announce that we sleep, then look once more: a push that did not see the announcement
      // is seen by this second look (the deque's mutex orders the two).
      idle_.store(true);
      pool_->idle_count_.fetch_add(1, std::memory_order_seq_cst);
      f = pool_->steal(this);
      if (f != nullptr && idle_.exchange(false)) {
        pool_->idle_count_.fetch_sub(1, std::memory_order_seq_cst);
      }
    }
    if (f == nullptr) break;  // sleep in the loop until a timer fires or a post arrives
    --budget_;
    switch_to(&main_, f);
  }
  in_batch_ = false;
  t_current = outer;
  if (ready_size() > 0) {
    queue_batch();
  } else if (pool_ != nullptr) {
    pool_->end_if_done();  // about to sleep: was that the pool's last fiber?
  }
}

void fiber_scheduler::run() {
  if (this_fiber::in_fiber()) throw std::logic_error("fiber_scheduler::run: called from a fiber");
  loop_.run();
  rethrow_orphan();
}

void fiber_scheduler::set_slow_fiber(std::chrono::nanoseconds threshold,
                                     slow_callback_reporter reporter) {
  exact_labels_ = threshold.count() > 0 && reporter;
  loop_.set_slow_callback(threshold, std::move(reporter));
}

// ---- fiber_pool ----

struct fiber_pool::worker {
  worker(fiber_pool* pool, int index, stack_kind stacks) : sched(loop, stacks, pool, index) {}
  event_loop loop;
  fiber_scheduler sched;
  loop_hold hold;  // keeps the loop turning while the pool has fibers anywhere
};

fiber_pool::fiber_pool(int threads, stack_kind stacks) {
  if (threads < 1) throw std::invalid_argument("fiber_pool: threads must be at least 1");
  workers_.reserve(static_cast<std::size_t>(threads));
  for (int i = 0; i < threads; ++i) workers_.push_back(std::make_unique<worker>(this, i, stacks));
}

fiber_pool::~fiber_pool() {
  if (const std::uint64_t n = live(); n != 0) {
    std::fprintf(stderr, "fiber_pool: destroyed while %llu fibers have not finished\n",
                 static_cast<unsigned long long>(n));
    std::terminate();
  }
  report_leftover("fiber_pool");
}

fiber_scheduler* fiber_pool::next_outside() {
  if (running_) {
    throw std::logic_error(
        "fiber_pool::spawn: from outside the pool only while run() is not active");
  }
  return &workers_[next_++ % workers_.size()]->sched;
}

std::uint64_t fiber_pool::live() const noexcept {
  // Every finish counted here happened after its fiber's start was counted (the start's store
  // happens before whatever let another thread run the fiber), so reading every finished_ first
  // and every started_ after can only overcount the live fibers: zero means none is left, and
  // none can appear, since only fibers spawn while the pool runs.
  std::uint64_t finished = 0;
  for (const auto& w : workers_) finished += w->sched.finished_.load(std::memory_order_acquire);
  std::uint64_t started = 0;
  for (const auto& w : workers_) started += w->sched.started_.load(std::memory_order_acquire);
  return started - finished;
}

void fiber_pool::end_if_done() noexcept {
  if (live() != 0 || ended_.exchange(true)) return;
  for (auto& w : workers_) w->hold.release();  // every loop may now return once idle
}

void fiber_pool::wake_idle(fiber_scheduler* self) noexcept {
  for (auto& w : workers_) {
    fiber_scheduler& s = w->sched;
    if (&s == self || !s.idle_.load()) continue;
    if (s.wake_posted_.exchange(true)) continue;  // already woken, not yet running
    w->loop.post([ps = &s] { ps->run_batch(); });
    return;
  }
}

fiber_ctl* fiber_pool::steal(fiber_scheduler* thief) noexcept {
  const std::size_t n = workers_.size();
  thief->steal_seed_ = thief->steal_seed_ * 1103515245U + 12345U;  // start at a random victim
  const std::size_t start = (thief->steal_seed_ >> 16) % n;
  for (std::size_t i = 0; i < n; ++i) {
    fiber_scheduler& victim = workers_[(start + i) % n]->sched;
    if (&victim == thief) continue;
    std::lock_guard lock(victim.ready_mutex_);
    if (fiber_ctl* f = victim.ready_.pop_back(); f != nullptr) return f;  // the oldest
  }
  return nullptr;
}

void fiber_pool::run() {
  if (this_fiber::in_fiber()) throw std::logic_error("fiber_pool::run: called from a fiber");
  if (live() == 0) {
    rethrow_orphan();
    return;
  }
  ended_.store(false);
  for (auto& w : workers_) {
    w->sched.switches_ = 0;
    w->hold = w->loop.hold();
    // A first batch on every worker: it runs what was dealt to it, or steals, or says it is idle
    // (so that a push elsewhere wakes it).
    w->loop.call_soon([s = &w->sched] { s->run_batch(); });
  }
  running_ = true;
  std::vector<std::thread> threads;
  threads.reserve(workers_.size() - 1);
  for (std::size_t i = 1; i < workers_.size(); ++i) {
    threads.emplace_back([w = workers_[i].get()] { w->loop.run(); });
  }
  workers_[0]->loop.run();
  for (auto& t : threads) t.join();
  running_ = false;
  rethrow_orphan();
}

std::vector<std::uint64_t> fiber_pool::switches_per_thread() const {
  std::vector<std::uint64_t> out;
  for (const auto& w : workers_) out.push_back(w->sched.switches_);
  return out;
}

// ---- this_fiber ----

void this_fiber::yield() { this_fiber_access::yield(); }

void this_fiber::sleep_until(event_loop::clock::time_point deadline) {
  this_fiber_access::sleep_until(deadline);
}

bool this_fiber::sleep_until(event_loop::clock::time_point deadline, std::stop_token stop) {
  return this_fiber_access::sleep_until(deadline, stop);
}

bool this_fiber::sleep_for(std::chrono::nanoseconds d, std::stop_token stop) {
  return this_fiber_access::sleep_until(
      event_loop::clock::now() + std::chrono::duration_cast<event_loop::clock::duration>(d), stop);
}

void this_fiber::sleep_for(std::chrono::nanoseconds d) {
  this_fiber_access::sleep_until(event_loop::clock::now() +
                                 std::chrono::duration_cast<event_loop::clock::duration>(d));
}

fd_wait this_fiber::wait_readable(int fd, std::stop_token stop,
                                  event_loop::clock::time_point deadline) {
  return this_fiber_access::wait_fd("this_fiber::wait_readable", fd, event_loop::readable, stop,
                                    deadline);
}

fd_wait this_fiber::wait_writable(int fd, std::stop_token stop,
                                  event_loop::clock::time_point deadline) {
  return this_fiber_access::wait_fd("this_fiber::wait_writable", fd, event_loop::writable, stop,
                                    deadline);
}

std::uint64_t this_fiber::label() noexcept { return this_fiber_access::label(); }
bool this_fiber::in_fiber() noexcept { return this_fiber_access::in_fiber(); }
int this_fiber::worker() noexcept { return this_fiber_access::worker(); }

}  // namespace clab
