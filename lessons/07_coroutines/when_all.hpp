// Lesson 07's gather: when_all runs a vector of tasks concurrently on the scheduler and resumes the
// awaiter once the last has ended, with every outcome in order (asyncio.gather). Under
// error_policy::first the first error also stops a std::stop_source the children's sleeps listen
// to, and is rethrown once they have all ended (a TaskGroup).
// Look for: each child is its own unit with a final hook; the last one to end transfers straight
// into the awaiter, and nothing is destroyed before the awaiter has read the outcomes.
#pragma once

#include <cstddef>
#include <exception>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <type_traits>
#include <utility>
#include <vector>

#include "lessons/07_coroutines/scheduler.hpp"
#include "lessons/07_coroutines/task.hpp"

namespace clab::coro {

/// What a when_all does with its children's errors (the lesson CLI's --errors).
/// all: every outcome is reported (gather(..., return_exceptions=True)); when_all never throws.
/// first: the first error requests a stop on the stop_source given to when_all (children sleeping
/// on its token wake at once, cancelled); when all have ended, that first error is rethrown.
enum class error_policy { all, first };

/// One child's end: a value, or the exception it ended with.
template <class T>
class outcome {
 public:
  [[nodiscard]] bool has_value() const noexcept { return !error_; }
  [[nodiscard]] std::exception_ptr error() const noexcept { return error_; }
  /// The value; rethrows the child's exception if it had one.
  T& value() {
    if (error_) std::rethrow_exception(error_);
    return *value_;
  }
  void set_value(T&& v) { value_.emplace(std::move(v)); }
  void set_error(std::exception_ptr e) noexcept { error_ = std::move(e); }

 private:
  std::optional<T> value_;
  std::exception_ptr error_;
};

template <>
class outcome<void> {
 public:
  [[nodiscard]] bool has_value() const noexcept { return !error_; }
  [[nodiscard]] std::exception_ptr error() const noexcept { return error_; }
  void value() const {
    if (error_) std::rethrow_exception(error_);
  }
  void set_error(std::exception_ptr e) noexcept { error_ = std::move(e); }

 private:
  std::exception_ptr error_;
};

namespace detail {

/// The awaitable inside when_all: starts every child as a unit of the awaiter's scheduler and
/// suspends the awaiter until the last child has ended. Lives in when_all's frame.
template <class T>
class gather {
 public:
  gather(std::vector<task<T>> tasks, error_policy policy, std::stop_source stop)
      : ctxs_(tasks.size()),
        tasks_(std::move(tasks)),
        outcomes_(tasks_.size()),
        policy_(policy),
        stop_(std::move(stop)) {
    for (const auto& t : tasks_) {
      if (!t.valid()) throw std::invalid_argument("when_all: an empty task");
    }
  }
  gather(const gather&) = delete;
  gather& operator=(const gather&) = delete;

  [[nodiscard]] bool await_ready() const noexcept { return tasks_.empty(); }
  void await_suspend(std::coroutine_handle<> parent) {
    coro_ctx* unit = t_ctx;
    if (unit == nullptr) throw std::logic_error("when_all: not in a coroutine of a coro_scheduler");
    parent_ = parent;
    parent_ctx_ = unit;
    remaining_ = tasks_.size();
    // All or none: with room reserved, only the first make_ready can throw (arming the batch: the
    // later children carry the same label, so none re-arms), and then nothing is queued.
    unit->sched()->reserve_ready(tasks_.size());
    // Front of the ready queue, last child first, so they run in index order before older work.
    for (std::size_t i = tasks_.size(); i-- > 0;) {
      child_ctx& c = ctxs_[i];
      c.on_final = &child_final;
      c.info = unit->info;  // the parent's: it outlives its children's ends
      c.owner = this;
      c.index = i;
      tasks_[i].handle().promise().set_hook(&c);
      unit->sched()->make_ready(tasks_[i].handle(), &c, /*front=*/true);
    }
  }
  void await_resume() const noexcept {}

  /// The outcomes in the children's order; under policy first, the first error rethrown instead.
  std::vector<outcome<T>> results() {
    if (policy_ == error_policy::first && first_error_) std::rethrow_exception(first_error_);
    return std::move(outcomes_);
  }

 private:
  struct child_ctx : final_hook, coro_ctx {
    gather* owner = nullptr;
    std::size_t index = 0;
  };

  static std::coroutine_handle<> child_final(final_hook* hook, std::coroutine_handle<>,
                                             promise_base& p) noexcept {
    auto* c = static_cast<child_ctx*>(hook);
    gather& g = *c->owner;
    outcome<T>& o = g.outcomes_[c->index];
    if (p.error()) {
      o.set_error(p.error());
      if (g.policy_ == error_policy::first && !g.first_error_) {
        g.first_error_ = p.error();
        // Wakes the siblings sleeping on the token now (on this thread: no post, no wait).
        g.stop_.request_stop();
      }
    } else if constexpr (!std::is_void_v<T>) {
      o.set_value(std::move(*static_cast<task_promise<T>&>(p).value));
    }
    // The child's frame stays until the gather goes (it is suspended at its end: harmless).
    if (--g.remaining_ != 0) return std::noop_coroutine();
    t_ctx = g.parent_ctx_;  // the awaiter continues as its own unit
    return transfer_to(g.parent_);
  }

  // Declared before tasks_: destroyed after the children's frames, whose sleeps use their unit.
  std::vector<child_ctx> ctxs_;
  std::vector<task<T>> tasks_;
  std::vector<outcome<T>> outcomes_;
  error_policy policy_;
  std::stop_source stop_;
  std::exception_ptr first_error_;
  std::coroutine_handle<> parent_;
  coro_ctx* parent_ctx_ = nullptr;
  std::size_t remaining_ = 0;
};

}  // namespace detail

/// Runs `tasks` concurrently on the awaiting coroutine's scheduler (each started on the loop, at
/// the front of the ready queue) and returns their outcomes in the order given. `stop` should be
/// the source whose tokens the children's sleeps take: policy first requests a stop on it at the
/// first error. No child is abandoned: when_all returns (or throws) only after every child ended.
/// Usage:
///   std::stop_source stop;
///   std::vector<task<int>> kids;
///   for (int i = 0; i < 3; ++i) kids.push_back(fetch(i, stop.get_token()));
///   auto got = co_await when_all(std::move(kids), error_policy::first, stop);
///   int first = got[0].value();
template <class T>
task<std::vector<outcome<T>>> when_all(std::vector<task<T>> tasks,
                                       error_policy policy = error_policy::all,
                                       std::stop_source stop = std::stop_source(std::nostopstate)) {
  detail::gather<T> g(std::move(tasks), policy, std::move(stop));
  co_await g;
  co_return g.results();
}

}  // namespace clab::coro
