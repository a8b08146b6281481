// Lesson 06: stackful fibers. Two executors on our own scheduler (fiber.hpp) over
// boost::context::fiber, parked on lesson 05's loop, and Boost.Fiber as the reference row.
#pragma once

#include "workloads/run.hpp"

namespace clab {

[[nodiscard]] const executor& fibers_executor();       ///< "fibers": every task a fiber, one thread
[[nodiscard]] const executor& fibers_mn_executor();    ///< "fibers-mn": P threads, fibers balanced
[[nodiscard]] const executor& boost_fiber_executor();  ///< "boost-fiber": Boost.Fiber's schedulers

}  // namespace clab
