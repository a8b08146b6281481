#include "lessons/registry.hpp"

#include <algorithm>
#include <array>

#include "lessons/00_serial/serial.hpp"
#include "lessons/01_threads/threads.hpp"
#include "lessons/03_thread_pool/thread_pool.hpp"

namespace clab {

std::span<const executor* const> all_executors() {
  static const std::array<const executor*, 8> all{
      &serial_executor(),         &thread_per_task_executor(),
      &static_threads_executor(), &naive_pool_executor(),
      &stealing_pool_executor(),  &priority_pool_executor(),
      &asio_pool_executor(),      &tbb_executor()};
  return all;
}

const executor* find_executor(std::string_view name) {
  const auto all = all_executors();
  const auto it =
      std::find_if(all.begin(), all.end(), [&](const executor* e) { return e->name == name; });
  return it == all.end() ? nullptr : *it;
}

}  // namespace clab
