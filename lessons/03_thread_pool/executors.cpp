// Lesson 03 — the task set through each pool. Every executor creates its pool inside the run (so
// the makespan includes starting P threads, as for lesson 01's static threads) and gathers all
// results before returning.
#include <tbb/global_control.h>
#include <tbb/task_arena.h>
#include <tbb/task_group.h>

#include <atomic>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <future>
#include <latch>
#include <vector>

#include "lessons/03_thread_pool/naive_pool.hpp"
#include "lessons/03_thread_pool/priority_pool.hpp"
#include "lessons/03_thread_pool/stealing_pool.hpp"
#include "lessons/03_thread_pool/thread_pool.hpp"
#include "workloads/execute.hpp"

namespace clab {
namespace {

/// Numbers the threads of one run 0, 1, 2, … in the order they first ask (pools do not say which
/// of their threads runs a task; the records and the Gantt plot need it). Each run has its own
/// generation number, so a thread that served an earlier run is numbered afresh.
class worker_numbers {
 public:
  int this_thread() {
    thread_local std::uint64_t seen = 0;
    thread_local int number = 0;
    if (seen != generation_) {
      seen = generation_;
      number = next_.fetch_add(1, std::memory_order_relaxed);
    }
    return number;
  }

 private:
  static inline std::atomic<std::uint64_t> generations_{0};
  const std::uint64_t generation_ = generations_.fetch_add(1) + 1;
  std::atomic<int> next_{0};
};

constexpr schedule k_dynamic{.policy = placement::dynamic_queue,
                             .workers = worker_rule::requested,
                             .worker_start = unit_cost::thread_start,
                             .per_task = unit_cost::probed,
                             .caller_submits = true};
/// The naive pool's caller sleeps on each task's future in turn, and each task that ends while it
/// sleeps wakes it.
constexpr schedule k_futures = [] {
  schedule s = k_dynamic;
  s.caller_waits_each = true;
  return s;
}();

/// Thrown by a job that a stop kept from starting; the gather below reports it as cancelled.
struct task_cancelled {};

// [snippet:naive-run]
run_result run_naive_pool(std::span<const task> tasks, const run_options& options) {
  const int p = workers_used(k_dynamic, options.workers, tasks.size());
  worker_numbers numbers;
  std::stop_source first_error;  // requested by the first failure under stop_at_first
  run_result out;
  out.workers_used = p;
  if (p == 0) return out;
  naive_pool pool(p);
  std::vector<std::future<task_record>> results;
  results.reserve(tasks.size());
  for (const task& t : tasks) {
    results.push_back(pool.submit([&t, &numbers, &options, &first_error]() -> task_record {
      if (options.stop.stop_requested() || first_error.stop_requested()) throw task_cancelled{};
      try {
        return run_blocking(t, options.origin, numbers.this_thread());
      } catch (...) {
        if (options.on_error == error_policy::stop_at_first) first_error.request_stop();
        throw;  // into the future, and from there to the caller
      }
    }));
  }
  for (std::size_t i = 0; i < results.size(); ++i) {  // gather: wait for each in turn
    try {
      out.records.push_back(results[i].get());
    } catch (const task_cancelled&) {
      out.failed.push_back({tasks[i].id, std::string(k_cancelled)});
    } catch (...) {  // the task's exception, carried by its future to the caller
      out.failed.push_back({tasks[i].id, describe_current_exception()});
    }
  }
  out.stopped = std::any_of(out.failed.begin(), out.failed.end(),
                            [](const task_failure& f) { return f.cause == k_cancelled; });
  return out;
}
// [end-snippet]

/// What the allocation-free pools need to run task i: one context shared by every job.
struct batch {
  std::span<const task> tasks;
  run_clock::time_point origin;
  result_slots* slots;
  std::latch* done;
  worker_numbers* numbers;
};

void run_one(void* context, std::size_t i) {
  batch& b = *static_cast<batch*>(context);
  b.slots->run_into(b.tasks[i], b.origin, b.numbers->this_thread());
  b.done->count_down();  // the latch's count_down happens-before wait() returns: slots are safe
}

// [snippet:stealing-run]
run_result run_stealing_pool(std::span<const task> tasks, const run_options& options) {
  const int p = workers_used(k_dynamic, options.workers, tasks.size());
  result_slots slots(tasks.size(), options);
  std::latch done(static_cast<std::ptrdiff_t>(tasks.size()));
  worker_numbers numbers;
  if (p > 0) {
    stealing_pool pool(p);
    batch b{tasks, options.origin, &slots, &done, &numbers};
    for (std::size_t i = 0; i < tasks.size(); ++i) pool.submit({run_one, &b, i});
    done.wait();  // gather
  }
  return std::move(slots).collect(p);
}
// [end-snippet]

run_result run_priority_pool(std::span<const task> tasks, const run_options& options) {
  const int p = workers_used(k_dynamic, options.workers, tasks.size());
  result_slots slots(tasks.size(), options);
  std::latch done(static_cast<std::ptrdiff_t>(tasks.size()));
  worker_numbers numbers;
  if (p > 0) {
    priority_pool pool(p);
    batch b{tasks, options.origin, &slots, &done, &numbers};
    for (std::size_t i = 0; i < tasks.size(); ++i) {
      pool.submit({run_one, &b, i}, static_cast<double>(tasks[i].duration_ns()));  // longest first
    }
    done.wait();
  }
  return std::move(slots).collect(p);
}

run_result run_asio_pool(std::span<const task> tasks, const run_options& options) {
  const int p = workers_used(k_dynamic, options.workers, tasks.size());
  result_slots slots(tasks.size(), options);
  worker_numbers numbers;
  if (p > 0) {
    boost::asio::thread_pool pool(static_cast<std::size_t>(p));
    for (const task& t : tasks) {
      boost::asio::post(pool, [&slots, &t, &numbers, origin = options.origin] {
        slots.run_into(t, origin, numbers.this_thread());
      });
    }
    pool.join();
  }
  return std::move(slots).collect(p);
}

run_result run_tbb(std::span<const task> tasks, const run_options& options) {
  const int p = workers_used(k_dynamic, options.workers, tasks.size());
  result_slots slots(tasks.size(), options);
  if (p > 0) {
    // P may exceed the cores here, as for every other executor: lift oneTBB's default cap.
    tbb::global_control limit(tbb::global_control::max_allowed_parallelism,
                              static_cast<std::size_t>(p));
    tbb::task_arena arena(p);  // the calling thread joins the arena as one of its P threads
    arena.execute([&] {
      tbb::task_group group;
      for (const task& t : tasks) {
        group.run([&slots, &t, origin = options.origin] {
          slots.run_into(t, origin, tbb::this_task_arena::current_thread_index());
        });
      }
      group.wait();
    });
  }
  return std::move(slots).collect(p);
}

}  // namespace

const executor& naive_pool_executor() {
  static const executor e{
      .name = "naive",
      .lesson = "03",
      .summary = "P threads, one shared queue under one mutex, a future per task",
      .plan = k_futures,
      .run = run_naive_pool};
  return e;
}

const executor& stealing_pool_executor() {
  static const executor e{
      .name = "stealing",
      .lesson = "03",
      .summary = "P threads, a queue each, idle threads steal; no allocation per task",
      .plan = {.policy = placement::work_stealing,
               .workers = worker_rule::requested,
               .worker_start = unit_cost::thread_start,
               .per_task = unit_cost::probed,
               .caller_submits = true},
      .run = run_stealing_pool};
  return e;
}

const executor& priority_pool_executor() {
  static const executor e{
      .name = "priority",
      .lesson = "03",
      .summary = "P threads, one queue ordered longest task first (Graham's LPT)",
      .plan = {.policy = placement::longest_first,
               .workers = worker_rule::requested,
               .worker_start = unit_cost::thread_start,
               .per_task = unit_cost::probed,
               .caller_submits = true},
      .run = run_priority_pool};
  return e;
}

const executor& asio_pool_executor() {
  static const executor e{.name = "asio",
                          .lesson = "03",
                          .summary = "reference: boost::asio::thread_pool with post()",
                          .plan = k_dynamic,
                          .reference = true,
                          .run = run_asio_pool};
  return e;
}

const executor& tbb_executor() {
  static const executor e{.name = "tbb",
                          .lesson = "03",
                          .summary = "reference: oneTBB task_group in a task_arena of P threads",
                          // The calling thread spawns every task into its own deque and then runs
                          // the newest first; the arena's other threads steal the oldest.
                          .plan = {.policy = placement::spawner_lifo,
                                   .workers = worker_rule::requested,
                                   .worker_start = unit_cost::thread_start,
                                   .per_task = unit_cost::probed},
                          .reference = true,
                          .run = run_tbb};
  return e;
}

}  // namespace clab
