// Lesson 07's scheduler: the ready queue, its batches on the loop, and the sleep heap. A wake-up is
// a push onto the ready queue; the batch callback resumes what is ready through the trampoline
// (task.hpp), one coroutine after another, so a transfer between coroutines never nests.
// Look for: stoppable_sleep::stop_requested(), which may run on any thread, and why it trusts the
// sleeper's memory only once the loop thread has found its number still registered; and a socket
// wait (fd_awaiter), whose first wake-up (the descriptor, its deadline or a stop) takes the others
// away before the coroutine resumes.
#include "lessons/07_coroutines/scheduler.hpp"

#include <algorithm>
#include <cstdio>
#include <string>

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
  if (error && !taken && own.sched != nullptr) own.sched->orphan(error);
  destroy(this);
}

coro_scheduler::coro_scheduler(event_loop& loop, ready_order order)
    : loop_(loop), order_(order), stoppables_(std::make_shared<detail::stoppable_registry>()) {}

coro_scheduler::~coro_scheduler() {
  if (batch_armed_) loop_.cancel(batch_timer_);
  if (sleep_armed_) loop_.cancel(sleep_timer_);
  sleep_armed_ = false;
  // Every sleeper out of the heap at once (a sleep asks whether the entry at its position is still
  // its own: none is now), so destroying a million frames costs no heap repairs.
  sleep_size_ = 0;
  // Each unfinished unit: its frame first (the sleeps inside use the unit), then the scheduler's
  // share of its state. The ready queue only names units: it is dropped untouched.
  while (units_ != nullptr) {
    detail::join_base* u = units_;
    units_ = u->next;
    std::exchange(u->frame, nullptr).destroy();
    --live_;
    u->release();
  }
  for (auto& chunk : unit_chunks_) {
    for (std::size_t i = 0; i < k_unit_chunk; ++i) {
      if (chunk[i].frame) {
        chunk[i].frame.destroy();  // its sleeps use the unit: freed after
        free_unit(&chunk[i]);
        --live_;
      }
    }
  }
  ready_head_ = ready_tail_ = nullptr;
  ready_count_ = 0;
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

detail::detached_unit* coro_scheduler::new_unit(const spawn_options& options) {
  const detail::unit_info* info = &plain_info_;
  if (options.priority != 0 || options.label != 0) {
    info = ::new (detail::allocate_block(sizeof(detail::unit_info)))
        detail::unit_info{this, options.priority, options.label};
  }
  if (free_units_ == nullptr) {
    try {
      unit_chunks_.push_back(std::make_unique<detail::detached_unit[]>(k_unit_chunk));
    } catch (...) {
      if (info != &plain_info_)
        detail::deallocate_block(const_cast<detail::unit_info*>(info), sizeof(detail::unit_info));
      throw;
    }
    detail::detached_unit* chunk = unit_chunks_.back().get();
    for (std::size_t i = k_unit_chunk; i-- > 0;) free_unit(&chunk[i]);
  }
  detail::detached_unit* u = free_units_;
  free_units_ = static_cast<detail::detached_unit*>(u->ready_next);
  u->ready_next = nullptr;
  u->info = info;
  return u;
}

void coro_scheduler::free_unit(detail::detached_unit* u) noexcept {
  if (u->info != nullptr && u->info != &plain_info_) {
    detail::deallocate_block(const_cast<detail::unit_info*>(u->info), sizeof(detail::unit_info));
  }
  u->info = nullptr;
  u->frame = nullptr;
  u->ready_next = free_units_;
  free_units_ = u;
}

void coro_scheduler::unit_finished(detail::detached_unit* u) noexcept {
  free_unit(u);
  --live_;
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
  detail::coro_ctx* const old_tail = ready_tail_;  // to undo a link if arming throws (below)
  if (order_ == ready_order::fifo) {
    // No allocation: the unit's context is the queue's link (a unit is ready at most once).
    if (front) {
      ctx->ready_next = ready_head_;
      ready_head_ = ctx;
      if (ready_tail_ == nullptr) ready_tail_ = ctx;
    } else {
      ctx->ready_next = nullptr;
      (ready_tail_ != nullptr ? ready_tail_->ready_next : ready_head_) = ctx;
      ready_tail_ = ctx;
    }
  } else {
    heap_.push_back({ctx->priority(), front ? --front_seq_ : ++back_seq_, ctx});  // may throw
    std::push_heap(heap_.begin(), heap_.end(),
                   [](const auto& a, const auto& b) { return heap_less(a, b); });
  }
  ctx->resume = h;
  ++ready_count_;
  try {
    if (!batch_armed_ && !in_batch_) {
      arm_batch();
    } else if (exact_labels_ && batch_armed_ && next_ready()->label() != armed_label_) {
      // The next coroutine changed (a front push, a higher key): its callback must carry its label.
      loop_.cancel(batch_timer_);
      batch_armed_ = false;
      arm_batch();
    }
  } catch (...) {
    // No loop timer (out of memory): the unit is not queued after all, and the caller sees why.
    unlink_ready(ctx, front, old_tail);
    throw;
  }
}
// [end-snippet]

void coro_scheduler::unlink_ready(detail::coro_ctx* ctx, bool front,
                                  detail::coro_ctx* old_tail) noexcept {
  --ready_count_;
  if (order_ == ready_order::fifo) {
    if (front) {
      ready_head_ = ctx->ready_next;
      if (ready_head_ == nullptr) ready_tail_ = nullptr;
    } else {
      ready_tail_ = old_tail;
      (old_tail != nullptr ? old_tail->ready_next : ready_head_) = nullptr;
    }
    ctx->ready_next = nullptr;
    return;
  }
  const auto it = std::find_if(heap_.begin(), heap_.end(),
                               [ctx](const keyed_entry& e) { return e.ctx == ctx; });
  heap_.erase(it);
  std::make_heap(heap_.begin(), heap_.end(),
                 [](const auto& a, const auto& b) { return heap_less(a, b); });
}

void coro_scheduler::reserve_ready(std::size_t more) {
  if (order_ == ready_order::priority) heap_.reserve(heap_.size() + more);
}

detail::coro_ctx* coro_scheduler::next_ready() const noexcept {
  return order_ == ready_order::fifo ? ready_head_ : heap_.front().ctx;
}

detail::coro_ctx* coro_scheduler::pop_ready() noexcept {
  --ready_count_;
  if (order_ == ready_order::fifo) {
    detail::coro_ctx* c = ready_head_;
    ready_head_ = c->ready_next;
    if (ready_head_ == nullptr) ready_tail_ = nullptr;
    return c;
  }
  std::pop_heap(heap_.begin(), heap_.end(),
                [](const auto& a, const auto& b) { return heap_less(a, b); });
  detail::coro_ctx* c = heap_.back().ctx;
  heap_.pop_back();
  return c;
}

void coro_scheduler::arm_batch() {
  // A zero-delay timer rather than call_soon: the destructor can cancel it. Labelled with the next
  // coroutine's label while the lag monitor is on (then a batch is that one resumption).
  armed_label_ = exact_labels_ && ready_size() > 0 ? next_ready()->label() : 0;
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
    detail::coro_ctx* c = pop_ready();
    detail::t_ctx = c;
    ++resumes_;
    detail::resume_from_outside(c->resume);
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
  unit.sched()->make_ready(h, &unit);
}

// ---- the sleep heap ----

bool coro_scheduler::sleep_before(const sleep_entry& a, const sleep_entry& b) const noexcept {
  if (a.deadline_ns != b.deadline_ns) return a.deadline_ns < b.deadline_ns;
  // Equal deadlines (rare: only then is a sleeper's memory read): the earlier arrival first. The
  // numbers wrap; the difference is right while fewer than 2^31 sleeps separate the two.
  return static_cast<std::int32_t>(slot_of(a.ref).seq - slot_of(b.ref).seq) < 0;
}

void coro_scheduler::sleep_place(std::size_t i, sleep_entry e) noexcept {
  slot_of(e.ref).pos = static_cast<std::uint32_t>(i);
  sleep_at(i) = e;
}

void coro_scheduler::sleep_sift_up(std::size_t i) noexcept {
  const sleep_entry e = sleep_at(i);
  while (i > 0) {
    const std::size_t parent = (i - 1) / 2;
    if (!sleep_before(e, sleep_at(parent))) break;
    sleep_place(i, sleep_at(parent));
    i = parent;
  }
  sleep_place(i, e);
}

void coro_scheduler::sleep_sift_down(std::size_t i) noexcept {
  const sleep_entry e = sleep_at(i);
  for (;;) {
    std::size_t child = 2 * i + 1;
    if (child >= sleep_size_) break;
    if (child + 1 < sleep_size_ && sleep_before(sleep_at(child + 1), sleep_at(child))) ++child;
    if (!sleep_before(sleep_at(child), e)) break;
    sleep_place(i, sleep_at(child));
    i = child;
  }
  sleep_place(i, e);
}

// [snippet:coro-sleep]
void coro_scheduler::sleep_push(detail::coro_ctx* unit, event_loop::clock::time_point deadline) {
  sleep_push_ref(reinterpret_cast<std::uintptr_t>(unit), deadline);
}
void coro_scheduler::sleep_push(detail::sleep_node* node, event_loop::clock::time_point deadline) {
  sleep_push_ref(reinterpret_cast<std::uintptr_t>(node) + 1, deadline);
}
bool coro_scheduler::sleep_remove(detail::coro_ctx* unit) noexcept {
  return sleep_remove_ref(reinterpret_cast<std::uintptr_t>(unit));
}
bool coro_scheduler::sleep_remove(detail::sleep_node* node) noexcept {
  return sleep_remove_ref(reinterpret_cast<std::uintptr_t>(node) + 1);
}

void coro_scheduler::sleep_push_ref(std::uintptr_t ref, event_loop::clock::time_point deadline) {
  if (sleep_size_ >= std::size_t{0xFFFF'FFFFU}) throw std::length_error("sleep heap: too many");
  if (sleep_size_ == sleep_chunks_.size() * k_sleep_chunk) {
    sleep_chunks_.push_back(std::make_unique_for_overwrite<sleep_entry[]>(k_sleep_chunk));
  }
  slot_of(ref).seq = sleep_seq_++;
  const std::size_t i = sleep_size_++;
  sleep_at(i) = {deadline.time_since_epoch().count(), ref};
  sleep_sift_up(i);
  if (slot_of(ref).pos == 0) {  // the earliest deadline changed
    try {
      sleep_rearm();
    } catch (...) {  // no loop timer (out of memory): this sleep does not begin, and says why
      sleep_remove_ref(ref);
      throw;
    }
  }
}

bool coro_scheduler::sleep_remove_ref(std::uintptr_t ref) noexcept {
  // Still asleep here? Its slot names a position whose entry must be its own. Once it has left the
  // heap the slot is stale (and a plain sleep's word holds a ready link), but then no entry is its.
  const std::size_t i = slot_of(ref).pos;
  if (i >= sleep_size_ || sleep_at(i).ref != ref) return false;
  const std::size_t last = --sleep_size_;
  if (i != last) {
    sleep_place(i, sleep_at(last));
    if (i > 0 && sleep_before(sleep_at(i), sleep_at((i - 1) / 2))) {
      sleep_sift_up(i);
    } else {
      sleep_sift_down(i);
    }
  }
  // A chunk two past the end goes back (one spare stays, so a push and a pop at a chunk's edge do
  // not allocate each time).
  if (sleep_chunks_.size() * k_sleep_chunk >= sleep_size_ + 2 * k_sleep_chunk) {
    sleep_chunks_.pop_back();
  }
  if (i == 0 && !sleep_firing_) {
    try {
      sleep_rearm();
    } catch (...) {  // a loop timer could not be armed: the old, earlier one stays (harmless)
    }
  }
  return true;
}

// ONE loop timer, for the earliest deadline: re-armed when that changes, cancelled when nobody
// sleeps (an idle loop then returns from run()).
void coro_scheduler::sleep_rearm() {
  if (sleep_size_ == 0) {
    if (sleep_armed_) loop_.cancel(sleep_timer_);
    sleep_armed_ = false;
    return;
  }
  const std::int64_t first = sleep_at(0).deadline_ns;
  if (sleep_armed_ && sleep_armed_ns_ == first) return;
  // The new timer first: if arming it throws, the old one (for a later deadline) stays armed.
  const timer_handle next = loop_.call_at(
      event_loop::clock::time_point(event_loop::clock::duration(first)), [this] { sleep_fire(); });
  if (sleep_armed_) loop_.cancel(sleep_timer_);
  sleep_timer_ = next;
  sleep_armed_ = true;
  sleep_armed_ns_ = first;
}

// The timer fired: every sleeper whose deadline has come, in deadline order (ties FIFO), joins the
// ready queue; then the timer is armed for the next one.
void coro_scheduler::sleep_fire() noexcept {
  sleep_armed_ = false;
  sleep_firing_ = true;  // no re-arm per sleeper: once, at the end
  const std::int64_t now = event_loop::clock::now().time_since_epoch().count();
  while (sleep_size_ > 0 && sleep_at(0).deadline_ns <= now) {
    const std::uintptr_t ref = sleep_at(0).ref;
    detail::coro_ctx* unit = unit_of(ref);
    sleep_remove_ref(ref);  // before make_ready: a plain sleep's slot is the ready link's word
    make_ready(unit->resume, unit);
  }
  sleep_firing_ = false;
  try {
    sleep_rearm();
  } catch (...) {  // no timer: the next sleep or stop re-arms; nothing is lost but promptness
  }
}
// [end-snippet]

namespace {
constexpr std::int64_t k_word_limit = std::int64_t{1} << 61;  // ±73 years: beyond, clamped
}  // namespace

sleep_awaiter::sleep_awaiter(event_loop::clock::time_point deadline) noexcept {
  const std::int64_t ns =
      std::clamp<std::int64_t>(deadline.time_since_epoch().count(), -k_word_limit, k_word_limit);
  word_ = (static_cast<std::uintptr_t>(ns) << 1U) | 1U;
}

sleep_awaiter::~sleep_awaiter() {
  // Destroyed while asleep (its frame destroyed unfinished): out of the heap, nothing wakes into
  // it.
  if (word_ != 0 && (word_ & 1U) == 0) {
    auto* unit = reinterpret_cast<detail::coro_ctx*>(word_);
    unit->sched()->sleep_remove(unit);
  }
}

void sleep_awaiter::await_suspend(std::coroutine_handle<> h) {
  detail::coro_ctx& unit = running_unit("sleep_for");
  const auto ns = static_cast<std::int64_t>(word_) >> 1;  // arithmetic: the sign comes back
  unit.resume = h;
  unit.sched()->sleep_push(&unit, event_loop::clock::time_point(event_loop::clock::duration(ns)));
  word_ = reinterpret_cast<std::uintptr_t>(&unit);  // after: a throw above leaves it unparked
}

namespace {
// A stop request from another thread: the loop thread looks the waiter up by its number, and only
// if it is still registered (the wait has not ended: numbers are never reused) touches it.
struct remote_stop {
  std::shared_ptr<detail::stoppable_registry> registry;
  std::uint64_t id;
};
void post_stop(coro_scheduler& sched, std::uint64_t id) noexcept {
  auto req = std::make_unique<remote_stop>(remote_stop{sched.stoppables(), id});
  sched.loop().post([r = std::move(req)] { r->registry->stop(r->id); });
}
}  // namespace

stoppable_sleep::~stoppable_sleep() {
  // The callback first: its destructor waits for a stop callback running on another thread.
  callback_.reset();
  if (node_.ctx != nullptr) {
    node_.ctx->sched()->sleep_remove(&node_);
    if (id_ != 0) node_.ctx->sched()->stoppables()->erase(id_);
  }
}

void stoppable_sleep::await_suspend(std::coroutine_handle<> h) {
  detail::coro_ctx& unit = running_unit("sleep_for");
  coro_scheduler& sched = *unit.sched();
  unit.resume = h;
  id_ = sched.stoppables()->add(
      {this, [](void* self) noexcept { static_cast<stoppable_sleep*>(self)->wake_cancelled(); }});
  node_.ctx = &unit;
  try {
    sched.sleep_push(&node_, deadline_);
  } catch (...) {
    node_.ctx = nullptr;
    sched.stoppables()->erase(std::exchange(id_, 0));
    throw;
  }
  // Registered once parked: a stop already requested runs on_stop right here.
  callback_.emplace(token_, on_stop{this});
}

void stoppable_sleep::await_resume() {
  callback_.reset();
  if (node_.ctx != nullptr && id_ != 0)
    node_.ctx->sched()->stoppables()->erase(std::exchange(id_, 0));
  node_.ctx = nullptr;
  if (cancelled_) throw task_cancelled();
}

// On the loop thread: out of the heap if still in it, then ready, cancelled.
void stoppable_sleep::wake_cancelled() noexcept {
  detail::coro_ctx* unit = node_.ctx;
  if (!unit->sched()->sleep_remove(&node_)) return;  // woken already: the deadline came first
  cancelled_ = true;
  unit->sched()->make_ready(unit->resume, unit);
}

// [snippet:coro-cancel]
void stoppable_sleep::stop_requested() noexcept {
  coro_scheduler* sched = node_.ctx->sched();
  if (coro_scheduler::current() == sched) {
    // On the loop thread, inside a coroutine (when_all's first error): wake it now.
    wake_cancelled();
    return;
  }
  // Any other thread (or the loop thread outside a coroutine): the loop does it, on its thread.
  post_stop(*sched, id_);
}
// [end-snippet]

// ---- socket waits ----

fd_awaiter::~fd_awaiter() {
  callback_.reset();  // first: its destructor waits for a stop callback running on another thread
  if (unit_ != nullptr) {  // destroyed parked (or woken, not yet resumed): nothing may wake into it
    leave_loop();
    if (id_ != 0) unit_->sched()->stoppables()->erase(id_);
  }
}

bool fd_awaiter::await_ready() noexcept {
  if (token_.stop_requested()) {
    cancelled_ = true;
    return true;
  }
  if (deadline_ != event_loop::clock::time_point::max() && event_loop::clock::now() >= deadline_) {
    how_ = fd_wake::timed_out;
    return true;
  }
  return false;
}

// [snippet:coro-fd-wait]
void fd_awaiter::await_suspend(std::coroutine_handle<> h) {
  detail::coro_ctx& unit = running_unit("readable/writable");
  coro_scheduler& sched = *unit.sched();
  event_loop& loop = sched.loop();
  unit.resume = h;
  // The loop calls back when the socket is ready (epoll, level-triggered), or when the deadline
  // comes; whichever is first takes the other away (leave_loop) and queues the coroutine.
  loop.watch(fd_, events_, [this](std::uint32_t) { wake(fd_wake::ready); });
  try {
    if (deadline_ != event_loop::clock::time_point::max()) {
      timer_ = loop.call_at(deadline_, [this] {
        armed_ = false;  // firing: nothing to cancel
        wake(fd_wake::timed_out);
      });
      armed_ = true;
    }
    id_ = sched.stoppables()->add(
        {this, [](void* self) noexcept { static_cast<fd_awaiter*>(self)->wake_cancelled(); }});
  } catch (...) {  // no timer or no registry entry (out of memory): not parked, and says why
    if (armed_) loop.cancel(timer_);
    armed_ = false;
    loop.unwatch(fd_);
    throw;
  }
  unit_ = &unit;
  parked_ = true;
  // Registered once parked: a stop already requested runs on_stop right here.
  callback_.emplace(token_, on_stop{this});
}
// [end-snippet]

fd_wake fd_awaiter::await_resume() {
  callback_.reset();
  if (unit_ != nullptr && id_ != 0) unit_->sched()->stoppables()->erase(std::exchange(id_, 0));
  unit_ = nullptr;
  if (cancelled_) throw task_cancelled();
  return how_;
}

// Out of the loop: the descriptor unwatched (before anyone closes it), the deadline's timer gone.
void fd_awaiter::leave_loop() noexcept {
  if (!parked_) return;
  parked_ = false;
  event_loop& loop = unit_->sched()->loop();
  loop.unwatch(fd_);
  if (armed_) loop.cancel(timer_);
  armed_ = false;
}

// On the loop thread, from the descriptor's callback, the timer's or a stop: the first one wins.
void fd_awaiter::wake(fd_wake how) noexcept {
  if (!parked_) return;
  leave_loop();
  how_ = how;
  unit_->sched()->make_ready(unit_->resume, unit_);
}

void fd_awaiter::wake_cancelled() noexcept {
  if (!parked_) return;  // woken already: the socket or the deadline came first
  cancelled_ = true;
  wake(fd_wake::ready);
}

void fd_awaiter::stop_requested() noexcept {
  coro_scheduler& sched = *unit_->sched();
  if (coro_scheduler::current() == &sched) {
    wake_cancelled();  // on the loop thread, inside a coroutine (a first error): now
    return;
  }
  post_stop(sched, id_);
}

}  // namespace clab::coro
