// Lesson 07's task: a stackless C++20 coroutine of our own. A suspended task keeps only its frame
// (its locals, its promise, where to go on), allocated by us from a per-thread pool of size
// classes. Look for: lazy start (initial_suspend), symmetric transfer in both directions (awaiter
// into awaitee, final_suspend back into the awaiter), and transfer_to(): the trampoline that keeps
// a million synchronous completions off the stack where g++ 12 makes no tail call.
#pragma once

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>

// THE TRAP. Symmetric transfer (await_suspend returning the next coroutine's handle) is meant to
// be a jump: the compiler calls next.resume() as a tail call, so a chain of a million coroutines
// that complete without suspending runs in constant stack. g++ 12 emits that tail call only when
// it optimises sibling calls (-O2 and up), and not under ASan or TSan. At -O0, -O1 or with a
// sanitizer each transfer is a nested call instead, and a million of them overflow an 8 MiB stack
// (checked on this machine: all four crash without the fix, -O2 alone survives).
// The fix, a trampoline: there, transfer_to(next) only records `next` in a thread-local slot and
// suspends to whoever called resume(); that caller is always a small driver loop
// (resume_from_outside) that resumes the recorded coroutine next. The stack never grows past one
// coroutine; the cost is a thread-local store and load and a return to the loop per transfer
// (within the noise of skynet here). So every resumption of our coroutines goes through
// resume_from_outside(), never a bare h.resume(). Where the compiler does make the tail call
// (optimised, unsanitised builds) transfer_to() is the plain symmetric transfer. Define
// CLAB_CORO_TRAMPOLINE=1 to force the trampoline: an -O1 build without a sanitizer needs it (the
// predefined macros cannot tell -O1 from -O2), and =0 shows the trap.
#if !defined(CLAB_CORO_TRAMPOLINE)
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || !defined(__OPTIMIZE__)
#define CLAB_CORO_TRAMPOLINE 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define CLAB_CORO_TRAMPOLINE 1
#endif
#endif
#endif
#if !defined(CLAB_CORO_TRAMPOLINE)
#define CLAB_CORO_TRAMPOLINE 0
#endif

// Lessons 07 on live in clab::coro: clab::task is the workload's task (workloads/task.hpp), and an
// executor's source sees both.
namespace clab::coro {

template <class T = void>
class task;

/// What this thread's frame allocator has seen (counters since the thread started, or since
/// reset_frame_stats()). A frame freed on another thread than the one that allocated it counts as
/// a deallocation there, so under M:N only the sum over threads of `live()` is meaningful.
struct frame_stats {
  std::uint64_t allocations = 0;    ///< frames allocated on this thread
  std::uint64_t deallocations = 0;  ///< frames freed on this thread
  std::uint64_t from_cache = 0;     ///< allocations served from this thread's free lists
  std::uint64_t large = 0;          ///< allocations above the size-class cap (::operator new)
  std::size_t last_bytes = 0;       ///< the size the compiler asked for in the latest allocation
  std::size_t max_bytes = 0;        ///< the largest such size
  std::int64_t peak_live = 0;       ///< the most frames alive at once (by this thread's counts)
  [[nodiscard]] std::int64_t live() const noexcept {
    return static_cast<std::int64_t>(allocations) - static_cast<std::int64_t>(deallocations);
  }
};

/// This thread's frame allocator counters.
[[nodiscard]] frame_stats this_thread_frame_stats() noexcept;
/// Zeroes this thread's counters (last/max sizes included); the free lists are kept.
void reset_frame_stats() noexcept;

namespace detail {

/// A frame of `bytes` from this thread's free list of its size class (8-byte classes up to
/// 1 KiB; 16-aligned where the size is a multiple of 16), else from the shared depot or a new chunk
/// (larger: ::operator new); counted in frame_stats. Throws std::bad_alloc.
void* allocate_frame(std::size_t bytes);
/// Returns a frame to the free list of the calling thread (any thread: any thread may keep any
/// block, so it may end up cached on another thread than it was allocated on).
void deallocate_frame(void* p, std::size_t bytes) noexcept;
/// The same lists for the scheduler's small blocks (join states): not counted as frames.
void* allocate_block(std::size_t bytes);
void deallocate_block(void* p, std::size_t bytes) noexcept;

#if CLAB_CORO_TRAMPOLINE
/// The coroutine the driver loop resumes next (trampoline builds only).
inline thread_local std::coroutine_handle<> t_next_resume{};
#endif

/// What an await_suspend returns to hand control to `next`: `next` itself (symmetric transfer, a
/// tail call) or, in trampoline builds, a no-op after noting `next` for the driver loop.
[[nodiscard]] inline std::coroutine_handle<> transfer_to(std::coroutine_handle<> next) noexcept {
#if CLAB_CORO_TRAMPOLINE
  t_next_resume = next;
  return std::noop_coroutine();
#else
  return next;
#endif
}

/// Resumes `h` from plain code (a loop callback, a test) and every coroutine it transfers to, until
/// the chain suspends for real or ends. Every resumption of one of our coroutines goes through
/// here.
inline void resume_from_outside(std::coroutine_handle<> h) {
#if CLAB_CORO_TRAMPOLINE
  // Saved for a driver entered from inside a coroutine (a nested run_sync): restore the outer slot.
  const std::coroutine_handle<> outer = std::exchange(t_next_resume, nullptr);
  while (h) {
    h.resume();
    h = std::exchange(t_next_resume, nullptr);
  }
  t_next_resume = outer;
#else
  h.resume();
#endif
}

/// The part of every task's promise that does not depend on T: one word.
struct promise_base {
  /// Who is told of this task's end, in one word (a task has at most one): the coroutine awaiting
  /// it, or (bit 0 set) the final hook of the scheduler that started it, or nobody (0). A task that
  /// ends with an exception boxes it on the heap with that word (bit 1 set): an exception_ptr in
  /// every frame would be 8 bytes more for every task that never throws (a million sleepers:
  /// 8 MB, and their frame from 56 to 64 bytes).
  void set_continuation(std::coroutine_handle<> awaiting) noexcept {
    word() = reinterpret_cast<std::uintptr_t>(awaiting.address());
  }
  void set_hook(struct final_hook* hook) noexcept {
    word() = reinterpret_cast<std::uintptr_t>(hook) | k_hook_bit;
  }
  [[nodiscard]] std::coroutine_handle<> continuation() const noexcept {
    const std::uintptr_t w = word();
    return (w & k_hook_bit) != 0
               ? std::coroutine_handle<>()
               : std::coroutine_handle<>::from_address(reinterpret_cast<void*>(w));
  }
  [[nodiscard]] struct final_hook* hook() const noexcept {
    const std::uintptr_t w = word();
    return (w & k_hook_bit) != 0 ? reinterpret_cast<struct final_hook*>(w & ~k_hook_bit) : nullptr;
  }
  /// The exception the task ended with, or a null one.
  [[nodiscard]] std::exception_ptr error() const noexcept {
    return boxed() ? box()->error : std::exception_ptr();
  }

  promise_base() = default;
  promise_base(const promise_base&) = delete;
  promise_base& operator=(const promise_base&) = delete;
  ~promise_base() {
    if (boxed()) delete box();
  }

  /// Frames come from our allocator; the sized delete tells it the size class without a header.
  static void* operator new(std::size_t bytes) { return allocate_frame(bytes); }
  static void operator delete(void* p, std::size_t bytes) noexcept { deallocate_frame(p, bytes); }

  /// Lazy: a task does nothing until awaited or started by a scheduler.
  std::suspend_always initial_suspend() noexcept { return {}; }

  struct final_awaiter {
    [[nodiscard]] bool await_ready() const noexcept { return false; }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> self) noexcept;
    void await_resume() const noexcept {}
  };
  /// At the end: straight into the awaiter (symmetric transfer), or into the hook's choice.
  final_awaiter final_suspend() noexcept { return {}; }
  /// The rare path allocates the box; a std::bad_alloc there ends the process (noexcept:
  /// std::terminate).
  void unhandled_exception() noexcept {
    auto* b = new error_box{std::current_exception(), next_};
    next_ = reinterpret_cast<std::uintptr_t>(b) | k_boxed_bit;
  }

 private:
  struct error_box {
    std::exception_ptr error;
    std::uintptr_t next;  // the word, as it was before the box
  };
  // Both bits are free in any of the pointers: frames, hooks and boxes are 8-aligned at least.
  static constexpr std::uintptr_t k_hook_bit = 1;
  static constexpr std::uintptr_t k_boxed_bit = 2;
  [[nodiscard]] bool boxed() const noexcept { return (next_ & k_boxed_bit) != 0; }
  [[nodiscard]] error_box* box() const noexcept {
    return reinterpret_cast<error_box*>(next_ & ~k_boxed_bit);
  }
  [[nodiscard]] std::uintptr_t& word() noexcept { return boxed() ? box()->next : next_; }
  [[nodiscard]] std::uintptr_t word() const noexcept { return boxed() ? box()->next : next_; }

  std::uintptr_t next_ = 0;
};

/// Called at a task's final suspend when it has a hook and no awaiter (a task the scheduler
/// started: spawned, or a when_all child): returns the coroutine to transfer to (or
/// std::noop_coroutine()). It may destroy `self`'s frame.
struct final_hook {
  std::coroutine_handle<> (*on_final)(final_hook* hook, std::coroutine_handle<> self,
                                      promise_base& promise) noexcept = nullptr;
};

template <class P>
std::coroutine_handle<> promise_base::final_awaiter::await_suspend(
    std::coroutine_handle<P> self) noexcept {
  promise_base& p = self.promise();
  if (const std::coroutine_handle<> c = p.continuation()) return transfer_to(c);
  if (final_hook* hook = p.hook()) return hook->on_final(hook, self, p);
  return std::noop_coroutine();
}

template <class T>
struct task_promise final : promise_base {
  std::optional<T> value;

  task<T> get_return_object() noexcept;
  template <class U = T>
  requires std::is_convertible_v<U&&, T>
  void return_value(U&& v) noexcept(std::is_nothrow_constructible_v<T, U&&>) {
    value.emplace(std::forward<U>(v));
  }
  /// The result, moved out; rethrows the task's exception.
  T take() {
    if (error()) std::rethrow_exception(error());
    return std::move(*value);
  }
};

template <>
struct task_promise<void> final : promise_base {
  task<void> get_return_object() noexcept;
  void return_void() noexcept {}
  void take() const {
    if (error()) std::rethrow_exception(error());
  }
};

}  // namespace detail

/// A lazily started coroutine returning T (void or an object type). Move-only; owns its frame.
/// Usage:
///   task<int> leaf(int i) { co_return i; }
///   task<int> sum() { int s = 0; for (int i = 0; i < 3; ++i) s += co_await leaf(i); co_return s; }
/// `co_await t` starts t (symmetric transfer into it) and resumes the awaiter when t ends, with its
/// result or its exception rethrown. Destroying a task that has not finished (never started, or
/// suspended) destroys its frame and everything in it: locals, awaited child tasks, sleeps (whose
/// loop timers are cancelled). A task is awaited at most once.
template <class T>
class [[nodiscard]] task {
  static_assert(
      std::is_void_v<T> || std::is_object_v<T>,
      "task<T>: T is void or an object type (wrap a reference in std::reference_wrapper)");

 public:
  using promise_type = detail::task_promise<T>;
  using handle_type = std::coroutine_handle<promise_type>;
  using value_type = T;

  task() noexcept = default;
  task(task&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  task& operator=(task&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  task(const task&) = delete;
  task& operator=(const task&) = delete;
  ~task() { reset(); }

  /// True unless default-constructed or moved from.
  [[nodiscard]] bool valid() const noexcept { return static_cast<bool>(h_); }
  /// True once the task has run to its end (returned or thrown).
  [[nodiscard]] bool done() const noexcept { return h_ && h_.done(); }

  struct awaiter {
    handle_type h;
    /// A finished task delivers at once; an empty one throws in await_resume.
    [[nodiscard]] bool await_ready() const noexcept { return !h || h.done(); }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiting) noexcept {
      h.promise().set_continuation(awaiting);
      return detail::transfer_to(h);  // into the child: it starts (or resumes) now
    }
    T await_resume() {
      if (!h) throw std::logic_error("co_await on an empty task");
      return h.promise().take();
    }
  };
  awaiter operator co_await() & noexcept { return awaiter{h_}; }
  awaiter operator co_await() && noexcept { return awaiter{h_}; }

  /// The frame's handle, for the scheduler (the task keeps owning it).
  [[nodiscard]] handle_type handle() const noexcept { return h_; }
  /// Gives up ownership of the frame (the caller destroys it).
  [[nodiscard]] handle_type release() noexcept { return std::exchange(h_, nullptr); }

 private:
  friend promise_type;
  explicit task(handle_type h) noexcept : h_(h) {}
  void reset() noexcept {
    if (h_) std::exchange(h_, nullptr).destroy();
  }
  handle_type h_ = nullptr;
};

template <class T>
task<T> detail::task_promise<T>::get_return_object() noexcept {
  return task<T>(task<T>::handle_type::from_promise(*this));
}
inline task<void> detail::task_promise<void>::get_return_object() noexcept {
  return task<void>(task<void>::handle_type::from_promise(*this));
}

/// Runs `t` to its end on this thread, outside any scheduler, and returns its result (or rethrows
/// its exception). For tasks that never suspend for real: one that parks (a sleep needs a
/// scheduler, so it throws there) leaves this with std::logic_error and is destroyed.
template <class T>
T run_sync(task<T> t) {
  if (!t.valid()) throw std::logic_error("run_sync: empty task");
  detail::resume_from_outside(t.handle());
  if (!t.done()) throw std::logic_error("run_sync: the task suspended; run it on a coro_scheduler");
  return t.handle().promise().take();
}

}  // namespace clab::coro
