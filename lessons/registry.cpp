#include "lessons/registry.hpp"

#include <algorithm>
#include <vector>

#include "lessons/00_serial/serial.hpp"
#include "lessons/01_threads/threads.hpp"
#include "lessons/02_processes/processes.hpp"
#include "lessons/03_thread_pool/thread_pool.hpp"
#include "lessons/04_process_pool/process_pool.hpp"
#include "lessons/05_event_loop/executors.hpp"
#include "lessons/06_fibers/executors.hpp"
#include "lessons/07_coroutines/executors.hpp"
#include "lessons/08_async_io/executors.hpp"

namespace clab {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
// Boost.Fiber switches stacks inside Debian's compiled library, which tells no sanitizer about a
// switch (ours annotates its own: lessons/06_fibers/fiber.cpp). Under ASan a throw on one of its
// fibers reads as a stack-buffer-overflow; under TSan the shadow stack is lost. So the sanitizer
// presets' tests and benchmarks leave its row out; the lesson program still offers it.
constexpr bool k_sanitizer_blind_rows_out = true;
#else
constexpr bool k_sanitizer_blind_rows_out = false;
#endif

std::span<const executor* const> all_executors() {
  static const std::vector<const executor*> all = [] {
    std::vector<const executor*> v{
        &serial_executor(),        &thread_per_task_executor(), &static_threads_executor(),
        &fork_per_task_executor(), &spawn_per_task_executor(),  &naive_pool_executor(),
        &stealing_pool_executor(), &priority_pool_executor(),   &asio_pool_executor(),
        &tbb_executor(),           &process_pool_executor(),    &loop_executor(),
        &blocking_executor(),      &loops_executor(),           &asio_loop_executor(),
        &libuv_executor(),         &fibers_executor(),          &fibers_mn_executor(),
        &coroutines_executor(),    &coro_priority_executor(),   &coroutines_mn_executor(),
        &asio_coro_executor(),     &asio_io_executor(),         &asio_io_mt_executor()};
    if (!k_sanitizer_blind_rows_out) v.push_back(&boost_fiber_executor());
    return v;
  }();
  return all;
}

const executor* find_executor(std::string_view name) {
  const auto all = all_executors();
  const auto it =
      std::find_if(all.begin(), all.end(), [&](const executor* e) { return e->name == name; });
  return it == all.end() ? nullptr : *it;
}

}  // namespace clab
