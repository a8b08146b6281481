// Lesson 07's event: a one-shot flag that any number of coroutines co_await. A coroutine that
// awaits it before set() parks (its frame and one node of the waiter list, inside that frame);
// set() makes every waiter ready through its scheduler, in the order they began to wait. Look for:
// no lock and no heap: the waiter list is intrusive, and everything runs on the loop's thread.
#pragma once

#include <coroutine>
#include <stdexcept>

#include "lessons/07_coroutines/scheduler.hpp"

namespace clab::coro {

/// A one-shot event. Usage (a task that may start only after another has ended):
///   event done;
///   task<void> first() { ...; done.set(); }
///   task<void> second() { co_await done; ... }  // straight on if done is set already
/// set() queues each waiter at the back of its own scheduler's ready queue (the running unit's,
/// taken when it began to wait): waiters resume after set()'s caller next suspends, never inside
/// set(). Loop thread only; awaiting outside a coroutine run by a coro_scheduler throws
/// std::logic_error. The event must outlive its waiters; a waiter's frame destroyed while it
/// waits leaves the list.
class event {
 public:
  class [[nodiscard]] awaiter {
   public:
    explicit awaiter(event& e) noexcept : ev_(&e) {}
    awaiter(const awaiter&) = delete;
    awaiter& operator=(const awaiter&) = delete;
    ~awaiter() {
      if (linked_) ev_->unlink(this);
    }
    [[nodiscard]] bool await_ready() const noexcept { return ev_->set_; }
    void await_suspend(std::coroutine_handle<> h) {
      if (detail::t_ctx == nullptr) {
        throw std::logic_error("event: awaited outside a coroutine run by a coro_scheduler");
      }
      h_ = h;
      ctx_ = detail::t_ctx;
      ev_->link(this);
    }
    void await_resume() const noexcept {}

   private:
    friend class event;
    event* ev_;
    std::coroutine_handle<> h_;
    detail::coro_ctx* ctx_ = nullptr;  // the unit that waits: its scheduler and its key
    awaiter* prev_ = nullptr;
    awaiter* next_ = nullptr;
    bool linked_ = false;
  };

  event() = default;
  event(const event&) = delete;  // waiters point at it
  event& operator=(const event&) = delete;
  ~event() {
    while (head_ != nullptr) unlink(head_);  // no waiter may dangle into a destroyed event
  }

  /// Sets the event and makes every waiter ready. Idempotent. May throw std::bad_alloc (a ready
  /// queue growing); the waiters not yet queued then stay on the list.
  void set() {
    set_ = true;
    while (head_ != nullptr) {
      awaiter* w = head_;
      w->ctx_->sched()->make_ready(w->h_, w->ctx_);
      unlink(w);
    }
  }
  [[nodiscard]] bool is_set() const noexcept { return set_; }
  awaiter operator co_await() noexcept { return awaiter(*this); }

 private:
  void link(awaiter* w) noexcept {
    w->prev_ = tail_;
    w->next_ = nullptr;
    (tail_ != nullptr ? tail_->next_ : head_) = w;
    tail_ = w;
    w->linked_ = true;
  }
  void unlink(awaiter* w) noexcept {
    (w->prev_ != nullptr ? w->prev_->next_ : head_) = w->next_;
    (w->next_ != nullptr ? w->next_->prev_ : tail_) = w->prev_;
    w->prev_ = w->next_ = nullptr;
    w->linked_ = false;
  }

  awaiter* head_ = nullptr;
  awaiter* tail_ = nullptr;
  bool set_ = false;
};

}  // namespace clab::coro
