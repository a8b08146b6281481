// Starting a pool's threads, shared by every pool of this lesson. Look for the failure path: if
// thread k cannot start (too many threads, no memory for a stack), the k already running are
// waiting for work that will never come; they must be told to stop before they are joined, or the
// join never returns.
#pragma once

#include <cstddef>
#include <thread>
#include <vector>

namespace clab {

/// Starts n threads running body(k) for k = 0 … n − 1. If one cannot start, calls stop() (which
/// must make every running body return), joins the threads that did start, and rethrows.
template <typename Body, typename Stop>
[[nodiscard]] std::vector<std::jthread> start_workers(std::size_t n, Body body, Stop stop) {
  std::vector<std::jthread> threads;
  threads.reserve(n);
  try {
    for (std::size_t k = 0; k < n; ++k) threads.emplace_back([body, k] { body(k); });
  } catch (...) {
    stop();
    threads.clear();  // joins
    throw;
  }
  return threads;
}

}  // namespace clab
