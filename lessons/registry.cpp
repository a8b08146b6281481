#include "lessons/registry.hpp"

#include <algorithm>
#include <array>

#include "lessons/00_serial/serial.hpp"
#include "lessons/01_threads/threads.hpp"
#include "lessons/02_processes/processes.hpp"
#include "lessons/03_thread_pool/thread_pool.hpp"
#include "lessons/04_process_pool/process_pool.hpp"
#include "lessons/05_event_loop/executors.hpp"

namespace clab {

std::span<const executor* const> all_executors() {
  static const std::array<const executor*, 16> all{
      &serial_executor(),        &thread_per_task_executor(), &static_threads_executor(),
      &fork_per_task_executor(), &spawn_per_task_executor(),  &naive_pool_executor(),
      &stealing_pool_executor(), &priority_pool_executor(),   &asio_pool_executor(),
      &tbb_executor(),           &process_pool_executor(),    &loop_executor(),
      &blocking_executor(),      &loops_executor(),           &asio_loop_executor(),
      &libuv_executor()};
  return all;
}

const executor* find_executor(std::string_view name) {
  const auto all = all_executors();
  const auto it =
      std::find_if(all.begin(), all.end(), [&](const executor* e) { return e->name == name; });
  return it == all.end() ? nullptr : *it;
}

}  // namespace clab
