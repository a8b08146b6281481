// Lesson 07's scheduler: the ready queue, its batches on the loop, and the sleeps. A wake-up is a
// push onto the ready queue; the batch callback resumes what is ready through the trampoline
// (task.hpp), one coroutine after another, so a transfer between coroutines never nests.
// Look for: stoppable_sleep::stop_requested(), which may run on any thread, and why it trusts the
// sleeper's memory only once the loop has agreed that the timer was still pending.
#include "lessons/07_coroutines/scheduler.hpp"

#include <algorithm>
#include <cstdio>

namespace clab::coro {

namespace {
// A batch resumes at least this many coroutines before the loop turns: enough to amortise a turn,
// few enough that a timer is late by at most 64 slices of coroutine code.
constexpr std::size_t k_batch_min = 64;

bool heap_less(const auto& a, const auto& b) noexcept {  // std::push_heap's "a below b"
  return a.key < b.key || (a.key == b.key && a.seq > b.seq);
}
}  // namespace

void detail::join_base::release() noexcept {
  if (--owners != 0) return;
  // Last owner out: an exception that join() never took must not vanish.
  if (error && !taken && sched != nullptr) sched->orphan(error);
  destroy(this);
}

coro_scheduler::coro_scheduler(event_loop& loop, ready_order order) : loop_(loop), order_(order) {}

coro_scheduler::~coro_scheduler() {
  if (batch_armed_) loop_.cancel(batch_timer_);
  // Each unfinished unit: its frame first (the sleeps inside use the unit and cancel their loop
  // timers), then the scheduler's share of its state. The ready queue only names frames.
  while (units_ != nullptr) {
    detail::join_base* u = units_;
    units_ = u->next;
    std::exchange(u->frame, nullptr).destroy();
    --live_;
    u->release();
  }
  if (first_orphan_) {
    const char* what = "an exception not derived from std::exception";
    try {
      std::rethrow_exception(first_orphan_);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    std::fprintf(stderr, "coro_scheduler: %zu task failure(s) nobody took, the first: %s\n",
                 orphans_, what);
  }
}

void coro_scheduler::run() {
  if (detail::t_ctx != nullptr) throw std::logic_error("coro_scheduler::run: inside a coroutine");
  loop_.run();
  if (first_orphan_) {
    orphans_ = 0;
    std::rethrow_exception(std::exchange(first_orphan_, nullptr));
  }
}

void coro_scheduler::orphan(std::exception_ptr error) noexcept {
  if (!first_orphan_) first_orphan_ = std::move(error);
  ++orphans_;
}

void coro_scheduler::unit_finished(detail::join_base* st) noexcept {
  if (st->prev != nullptr) st->prev->next = st->next;
  if (st->next != nullptr) st->next->prev = st->prev;
  if (units_ == st) units_ = st->next;
  st->frame = nullptr;
  st->finished = true;
  --live_;
  st->release();
}

// [snippet:coro-ready]
void coro_scheduler::make_ready(std::coroutine_handle<> h, detail::coro_ctx* ctx, bool front) {
  if (order_ == ready_order::fifo) {
    if (tail_ - head_ == ring_.size()) {  // full: double, unwrapping the ring into the new one
      std::vector<entry> bigger(std::max<std::size_t>(64, ring_.size() * 2));
      for (std::size_t i = head_; i != tail_; ++i) {
        bigger[i - head_] = ring_[i & (ring_.size() - 1)];
      }
      tail_ -= head_;
      head_ = 0;
      ring_.swap(bigger);
    }
    const std::size_t mask = ring_.size() - 1;
    if (front) {
      ring_[--head_ & mask] = {h, ctx};  // head_ may wrap below zero: unsigned, masked
    } else {
      ring_[tail_++ & mask] = {h, ctx};
    }
  } else {
    heap_.push_back({ctx->priority, front ? --front_seq_ : ++back_seq_, {h, ctx}});
    std::push_heap(heap_.begin(), heap_.end(),
                   [](const auto& a, const auto& b) { return heap_less(a, b); });
  }
  if (!batch_armed_ && !in_batch_) {
    arm_batch();
  } else if (exact_labels_ && batch_armed_ && next_ready().ctx->label != armed_label_) {
    // The next coroutine changed (a front push, a higher key): its callback must carry its label.
    loop_.cancel(batch_timer_);
    arm_batch();
  }
}
// [end-snippet]

std::size_t coro_scheduler::ready_size() const noexcept {
  return order_ == ready_order::fifo ? tail_ - head_ : heap_.size();
}

const coro_scheduler::entry& coro_scheduler::next_ready() const noexcept {
  return order_ == ready_order::fifo ? ring_[head_ & (ring_.size() - 1)] : heap_.front().e;
}

coro_scheduler::entry coro_scheduler::pop_ready() noexcept {
  if (order_ == ready_order::fifo) return ring_[head_++ & (ring_.size() - 1)];
  std::pop_heap(heap_.begin(), heap_.end(),
                [](const auto& a, const auto& b) { return heap_less(a, b); });
  const entry e = heap_.back().e;
  heap_.pop_back();
  return e;
}

void coro_scheduler::arm_batch() {
  // A zero-delay timer rather than call_soon: the destructor can cancel it. Labelled with the next
  // coroutine's label while the lag monitor is on (then a batch is that one resumption).
  armed_label_ = exact_labels_ && ready_size() > 0 ? next_ready().ctx->label : 0;
  batch_timer_ = loop_.call_later(
      std::chrono::nanoseconds(0), [this] { run_batch(); }, armed_label_);
  batch_armed_ = true;
}

void coro_scheduler::set_slow_coroutine(std::chrono::nanoseconds threshold,
                                        slow_callback_reporter reporter) {
  exact_labels_ = threshold.count() > 0 && reporter;
  loop_.set_slow_callback(threshold, std::move(reporter));
  if (batch_armed_) {  // re-label (or un-label) the callback already armed
    loop_.cancel(batch_timer_);
    arm_batch();
  }
}

void coro_scheduler::run_batch() noexcept {
  batch_armed_ = false;
  in_batch_ = true;
  std::size_t budget = exact_labels_ ? 1 : std::max(ready_size(), k_batch_min);
  while (budget-- > 0 && ready_size() > 0) {
    const entry e = pop_ready();
    detail::t_ctx = e.ctx;
    ++resumes_;
    detail::resume_from_outside(e.h);
  }
  detail::t_ctx = nullptr;
  in_batch_ = false;
  if (ready_size() > 0) arm_batch();
}

// ---- awaiters ----

namespace {
detail::coro_ctx& running_unit(const char* what) {
  if (detail::t_ctx == nullptr) {
    throw std::logic_error(std::string(what) + ": not in a coroutine run by a coro_scheduler");
  }
  return *detail::t_ctx;
}
}  // namespace

void yield_awaiter::await_suspend(std::coroutine_handle<> h) {
  detail::coro_ctx& unit = running_unit("yield");
  unit.sched->make_ready(h, &unit);
}

sleep_awaiter::~sleep_awaiter() {
  // Destroyed while asleep (its frame destroyed unfinished): the timer must not fire into it.
  if (ctx_ != nullptr) ctx_->sched->loop().cancel(timer_);
}

void sleep_awaiter::await_suspend(std::coroutine_handle<> h) {
  detail::coro_ctx& unit = running_unit("sleep_for");
  h_ = h;
  timer_ = unit.sched->loop().call_at(
      deadline_, [this] { ctx_->sched->make_ready(h_, ctx_); }, unit.label);
  ctx_ = &unit;
}

// A stop request from another thread: the loop thread cancels the timer, and only if that
// succeeds (the timer was still pending, so the sleeper is still asleep in this very sleep: a
// timer's sequence number is never reused) does it touch the sleeper.
struct stoppable_sleep::remote_cancel {
  event_loop* loop;
  timer_handle timer;
  stoppable_sleep* sleeper;
};

stoppable_sleep::~stoppable_sleep() {
  // The callback first: its destructor waits for a stop callback running on another thread.
  callback_.reset();
  if (ctx_ != nullptr) ctx_->sched->loop().cancel(timer_);
}

void stoppable_sleep::await_suspend(std::coroutine_handle<> h) {
  detail::coro_ctx& unit = running_unit("sleep_for");
  h_ = h;
  timer_ = unit.sched->loop().call_at(
      deadline_, [this] { wake(false); }, unit.label);
  ctx_ = &unit;
  // Registered after the timer is armed: a stop already requested runs on_stop right here.
  callback_.emplace(token_, on_stop{this});
}

void stoppable_sleep::await_resume() {
  callback_.reset();
  ctx_ = nullptr;
  if (cancelled_) throw task_cancelled();
}

void stoppable_sleep::wake(bool cancelled) noexcept {
  cancelled_ = cancelled;
  ctx_->sched->make_ready(h_, ctx_);
}

// [snippet:coro-cancel]
void stoppable_sleep::stop_requested() noexcept {
  coro_scheduler* sched = ctx_->sched;
  if (coro_scheduler::current() == sched) {
    // On the loop thread, inside a coroutine (when_all's first error): wake it now.
    if (sched->loop().cancel(timer_)) wake(true);
    return;
  }
  // Any other thread (or the loop thread outside a coroutine): the loop does it, on its thread.
  auto req = std::make_unique<remote_cancel>(remote_cancel{&sched->loop(), timer_, this});
  sched->loop().post([r = std::move(req)] {
    if (r->loop->cancel(r->timer)) r->sleeper->wake(true);
  });
}
// [end-snippet]

}  // namespace clab::coro
