#include "workloads/execute.hpp"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <thread>
#include <utility>

#include "workloads/io_exchange.hpp"
#include "workloads/kernel.hpp"

namespace clab {
namespace {

[[noreturn]] void hang_forever() {
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

[[noreturn]] void segfault() {
  // A real invalid store: the address comes through a volatile, so the compiler cannot see that it
  // is null and replace the store with a trap instruction (which would raise SIGILL instead).
  volatile std::uintptr_t address = 0;
  *reinterpret_cast<volatile int*>(address) = 1;  // NOLINT: the fault is the point
  std::abort();                                   // not reached
}

}  // namespace

std::uint64_t compute(const task& t) {
  switch (t.inject) {
    case fault::none:
      break;
    case fault::throw_exception:
      throw task_error(t.id, "injected exception in task " + std::to_string(t.id));
    case fault::abort:
      std::abort();
    case fault::segv:
      segfault();
    case fault::hang:
      hang_forever();
  }
  return spin(t.seed, t.cpu_iterations);
}

std::uint64_t blocking_wait(const task& t) {
  if (t.is_io()) return blocking_request(t);
  if (t.wait_ns > 0) std::this_thread::sleep_for(std::chrono::nanoseconds(t.wait_ns));
  return 0;
}

task_record run_blocking(const task& t, run_clock::time_point origin, int worker) {
  task_record r;
  r.id = t.id;
  r.worker = worker;
  r.start_ns = ns_since(origin);
  const std::uint64_t body = blocking_wait(t);
  r.checksum = io_checksum(t, compute(t), body);
  r.end_ns = ns_since(origin);
  return r;
}

std::string describe_current_exception() {
  try {
    throw;
  } catch (const std::exception& e) {
    return std::string("exception: ") + e.what();
  } catch (...) {
    return "exception: (not derived from std::exception)";
  }
}

void result_slots::run_into(const task& t, run_clock::time_point origin, int worker) {
  if (stopping()) {
    fail(t.id, std::string(k_cancelled));
    return;
  }
  try {
    complete(run_blocking(t, origin, worker));
  } catch (...) {
    fail_error(t.id, describe_current_exception());
  }
}

void result_slots::fail_error(std::uint32_t id, std::string cause) {
  fail(id, std::move(cause));
  if (on_error_ == error_policy::stop_at_first) first_error_.request_stop();
}

void result_slots::complete(const task_record& r) {
  records_.at(r.id) = r;
  done_[r.id] = 1;
}

void result_slots::fail(std::uint32_t id, std::string cause) {
  std::lock_guard lock(failed_mutex_);
  failed_.push_back({id, std::move(cause)});
}

run_result result_slots::collect(int workers_used) && {
  run_result r;
  r.workers_used = workers_used;
  r.records.reserve(records_.size());
  for (std::size_t i = 0; i < records_.size(); ++i) {
    if (done_[i] != 0) r.records.push_back(records_[i]);
  }
  r.failed = std::move(failed_);
  r.stopped = std::any_of(r.failed.begin(), r.failed.end(),
                          [](const task_failure& f) { return f.cause == k_cancelled; });
  return r;
}

}  // namespace clab
