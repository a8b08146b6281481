// Lesson 03: thread pools. Three pools of our own, named for what they do, and two established
// pools run on the same task sets as reference rows: Boost.Asio's thread_pool and oneTBB.
#pragma once

#include <span>

#include "workloads/run.hpp"

namespace clab {

[[nodiscard]] const executor& naive_pool_executor();  ///< "naive": one queue, futures
[[nodiscard]] const executor&
stealing_pool_executor();  ///< "stealing": per-worker queues (default)
[[nodiscard]] const executor& priority_pool_executor();  ///< "priority": longest task first
[[nodiscard]] const executor& asio_pool_executor();      ///< "asio": boost::asio::thread_pool
[[nodiscard]] const executor& tbb_executor();            ///< "tbb": oneTBB task_group in an arena

}  // namespace clab
