// Dependencies between tasks (--deps): the graph generators (shapes, seeded, topological), work and
// span of small graphs, Brent's bounds and the simulator's release times on hand-computed cases,
// verification of the order from the records (a violated edge fails), lesson 07's event, and the
// coroutine executors and serial running chains, trees and DAGs with failures and stops. No test
// asserts an absolute time; every wait is finite.
#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "lessons/00_serial/serial.hpp"
#include "lessons/05_event_loop/event_loop.hpp"
#include "lessons/07_coroutines/event.hpp"
#include "lessons/07_coroutines/executors.hpp"
#include "lessons/07_coroutines/scheduler.hpp"
#include "models/bounds.hpp"
#include "models/simulate.hpp"
#include "workloads/deps.hpp"
#include "workloads/run.hpp"
#include "workloads/verify.hpp"

using namespace clab;
using namespace std::chrono_literals;

namespace {

std::vector<task> cpu_tasks(std::initializer_list<std::int64_t> ns) {
  std::vector<task> ts;
  for (std::int64_t c : ns)
    ts.push_back({.id = static_cast<std::uint32_t>(ts.size()), .cpu_ns = c});
  return ts;
}

std::vector<task> wait_tasks(std::initializer_list<std::int64_t> ns) {
  std::vector<task> ts;
  for (std::int64_t w : ns)
    ts.push_back({.id = static_cast<std::uint32_t>(ts.size()), .wait_ns = w});
  return ts;
}

/// n tasks that really run: a short wait (a loop timer for the coroutines) and a little CPU.
std::vector<task> real_tasks(std::size_t n, std::int64_t wait_ns = 200'000) {
  std::vector<task> ts(n);
  for (std::size_t i = 0; i < n; ++i) {
    ts[i] = {.id = static_cast<std::uint32_t>(i),
             .cpu_ns = 20'000,
             .cpu_iterations = 2'000,
             .wait_ns = wait_ns,
             .seed = splitmix64(i)};
  }
  return ts;
}

sim_config cfg(placement p, int workers, int cores, wait_mode w, const task_graph* g) {
  return {.policy = p, .waits = w, .workers = workers, .cores = cores, .deps = g};
}

/// Every edge p→i holds in `records` (indexed by id): i starts at or after p's end.
bool edges_hold(const task_graph& g, const std::vector<task_record>& by_id) {
  for (std::size_t i = 0; i < g.size(); ++i) {
    for (const std::uint32_t p : g.preds(i)) {
      if (by_id[i].start_ns < by_id[p].end_ns) return false;
    }
  }
  return true;
}

// The diamond 0 → {1, 2} → 3.
const task_graph& diamond() {
  static const task_graph g = graph_from_preds({{}, {0}, {0}, {1, 2}});
  return g;
}

const executor* const k_graph_executors[] = {&serial_executor(), &coroutines_executor(),
                                             &coro_priority_executor()};

run_result run_graph(const executor& e, std::span<const task> ts, const task_graph& g,
                     std::stop_token stop = {}, error_policy on_error = error_policy::collect_all) {
  run_options o;
  o.deps = &g;
  o.stop = std::move(stop);
  o.on_error = on_error;
  return measure(e, ts, o);
}

std::string cause_of(const run_result& r, std::uint32_t id) {
  for (const task_failure& f : r.failed) {
    if (f.id == id) return f.cause;
  }
  return "";
}

}  // namespace

TEST_CASE("the shapes: chain, binary out-tree, none", "[deps][graph]") {
  const task_graph chain = make_task_graph(deps_shape::chain, 5, 1);
  REQUIRE(chain.size() == 5);
  CHECK(chain.edges() == 4);
  CHECK(chain.preds(0).empty());
  for (std::uint32_t i = 1; i < 5; ++i) CHECK(chain.preds(i)[0] == i - 1);
  const task_graph tree = make_task_graph(deps_shape::tree, 7, 1);
  CHECK(tree.edges() == 6);
  for (std::uint32_t i = 1; i < 7; ++i) {
    REQUIRE(tree.preds(i).size() == 1);
    CHECK(tree.preds(i)[0] == (i - 1) / 2);
  }
  CHECK(make_task_graph(deps_shape::none, 9, 1).edges() == 0);
  CHECK(make_task_graph(deps_shape::dag, 0, 1).size() == 0);
  for (const deps_shape s :
       {deps_shape::none, deps_shape::chain, deps_shape::tree, deps_shape::dag}) {
    CHECK(parse_deps_shape(to_string(s)) == s);
  }
  CHECK_FALSE(parse_deps_shape("bogus").has_value());
}

TEST_CASE("the seeded DAG: 1 to 3 distinct earlier predecessors in the window, reproducible",
          "[deps][graph]") {
  const task_graph g = make_task_graph(deps_shape::dag, 500, 42);
  REQUIRE(g.size() == 500);
  CHECK(g.preds(0).empty());
  std::size_t sizes[4] = {};
  for (std::uint32_t i = 1; i < 500; ++i) {
    const auto ps = g.preds(i);
    REQUIRE(ps.size() >= 1);
    REQUIRE(ps.size() <= 3);
    ++sizes[ps.size()];
    for (std::size_t k = 0; k < ps.size(); ++k) {
      CHECK(ps[k] < i);                     // topological: ids are an order
      CHECK(i - ps[k] <= k_dag_window);     // within the window
      if (k > 0) CHECK(ps[k - 1] < ps[k]);  // sorted, distinct
    }
  }
  CHECK(sizes[1] > 0);
  CHECK(sizes[2] > 0);
  CHECK(sizes[3] > 0);
  const task_graph again = make_task_graph(deps_shape::dag, 500, 42);
  CHECK(again.pred == g.pred);
  CHECK(again.first == g.first);
  CHECK(make_task_graph(deps_shape::dag, 500, 43).pred != g.pred);
}

TEST_CASE("explicit graphs must be topological", "[deps][graph]") {
  CHECK_THROWS_AS(graph_from_preds({{}, {1}}), std::invalid_argument);     // a self-loop
  CHECK_THROWS_AS(graph_from_preds({{1}, {}}), std::invalid_argument);     // a later id
  CHECK_THROWS_AS(graph_from_preds({{}, {0, 0}}), std::invalid_argument);  // twice
  CHECK(graph_from_preds({{}, {0}, {1, 0}}).preds(2)[0] == 0);             // sorted
}

TEST_CASE("work and span of small graphs, by hand", "[deps][graph][bounds]") {
  const auto ts = cpu_tasks({10, 20, 30, 40});
  CHECK(span_ns(ts, diamond()) == 10 + 30 + 40);
  CHECK(span_ns(ts, diamond(), 1) == 83);
  CHECK(span_ns(ts, make_task_graph(deps_shape::chain, 4, 1)) == 100);
  CHECK(span_ns(ts, make_task_graph(deps_shape::none, 4, 1)) == 40);  // max t_i
  // tree on 4: 0 → {1, 2}, 1 → 3: the path 0, 1, 3.
  CHECK(span_ns(ts, make_task_graph(deps_shape::tree, 4, 1)) == 10 + 20 + 40);
  CHECK_THROWS_AS(span_ns(ts, make_task_graph(deps_shape::chain, 3, 1)), std::invalid_argument);
}

TEST_CASE("Brent's bounds, by hand", "[deps][bounds]") {
  const makespan_bounds b = brent_bounds(100, 80, 2);  // the diamond's W and S on two
  CHECK(b.lower_ns == 80);
  CHECK(b.upper_ns == 130);
  const makespan_bounds wide = brent_bounds(100, 10, 4);
  CHECK(wide.lower_ns == 25);
  CHECK(wide.upper_ns == 35);
  CHECK(brent_bounds(60, 60, 1).lower_ns == 60);  // a chain on one: exactly Σ
  CHECK_THROWS_AS(brent_bounds(1, 1, 0), std::invalid_argument);
}

TEST_CASE("the simulation releases a task when its predecessors end", "[deps][simulate]") {
  const task_graph chain = make_task_graph(deps_shape::chain, 3, 1);
  // Serial: ids are a topological order, so nothing changes: T = Σ t_i exactly.
  CHECK(simulate(cpu_tasks({10, 20, 30}),
                 cfg(placement::static_blocks, 1, 1, wait_mode::blocking, &chain))
            .makespan_ns == 60);
  // One non-blocking worker: waits overlap without a graph, not along a chain.
  const auto waits = wait_tasks({10, 20, 30});
  CHECK(simulate(waits, cfg(placement::static_blocks, 1, 1, wait_mode::nonblocking, nullptr))
            .makespan_ns == 30);
  const sim_result along =
      simulate(waits, cfg(placement::static_blocks, 1, 1, wait_mode::nonblocking, &chain));
  CHECK(along.makespan_ns == 60);
  CHECK(along.timeline[2].start_ns == 30);  // released when task 1 ends
  // The diamond on waits: its span, 10 + 30 + 40.
  CHECK(simulate(wait_tasks({10, 20, 30, 40}),
                 cfg(placement::static_blocks, 1, 1, wait_mode::nonblocking, &diamond()))
            .makespan_ns == 80);
  // A tree of 7 waits of 10: three levels.
  const task_graph tree = make_task_graph(deps_shape::tree, 7, 1);
  CHECK(simulate(wait_tasks({10, 10, 10, 10, 10, 10, 10}),
                 cfg(placement::longest_first, 1, 1, wait_mode::nonblocking, &tree))
            .makespan_ns == 30);
  // The diamond of mixed tasks on one core: waits overlap, CPU parts queue.
  std::vector<task> mixed = cpu_tasks({10, 10, 10, 10});
  for (task& t : mixed) t.wait_ns = 5;
  // 0: wait 0-5, cpu 5-15; 1 and 2 wait 15-20, cpu 20-30 and 30-40; 3 waits 40-45, cpu 45-55.
  CHECK(simulate(mixed, cfg(placement::static_blocks, 1, 1, wait_mode::nonblocking, &diamond()))
            .makespan_ns == 55);
  // Two blocking workers: the one whose next task is not released waits for it.
  const sim_result two =
      simulate(cpu_tasks({10, 20, 30, 40}),
               cfg(placement::dynamic_queue, 2, 2, wait_mode::blocking, &diamond()));
  CHECK(two.makespan_ns == 80);  // 0; then 1 ∥ 2; then 3 after 2 (10 + 30 + 40)
}

TEST_CASE("simulated DAGs keep every edge and lie within Brent's bounds", "[deps][simulate]") {
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    CAPTURE(seed);
    std::vector<task> ts(60);
    std::uint64_t x = seed;
    for (std::uint32_t i = 0; i < ts.size(); ++i) {
      x = splitmix64(x);
      ts[i] = {.id = i,
               .cpu_ns = static_cast<std::int64_t>(x % 1000),
               .wait_ns = static_cast<std::int64_t>((x >> 20U) % 3000)};
    }
    const task_graph g = make_task_graph(deps_shape::dag, ts.size(), seed);
    const std::int64_t s = span_ns(ts, g);
    std::int64_t sum_c = 0, sum_t = 0;
    for (const task& t : ts) {
      sum_c += t.cpu_ns;
      sum_t += t.duration_ns();
    }
    for (const placement p : {placement::static_blocks, placement::longest_first}) {
      const sim_result r = simulate(ts, cfg(p, 1, 1, wait_mode::nonblocking, &g));
      CHECK(edges_hold(g, r.timeline));
      const makespan_bounds b = brent_bounds(sum_c, s, 1);
      CHECK(r.makespan_ns >= b.lower_ns);
      CHECK(r.makespan_ns <= b.upper_ns);
    }
    const sim_result serial =
        simulate(ts, cfg(placement::static_blocks, 1, 1, wait_mode::blocking, &g));
    CHECK(serial.makespan_ns == sum_t);
    CHECK(edges_hold(g, serial.timeline));
    CHECK(edges_hold(
        g, simulate(ts, cfg(placement::dynamic_queue, 3, 2, wait_mode::blocking, &g)).timeline));
  }
}

TEST_CASE("verification checks the order from the records", "[deps][verify]") {
  const auto ts = cpu_tasks({0, 0, 0});
  const std::vector<std::uint64_t> ref = reference_checksums(ts);
  const task_graph chain = make_task_graph(deps_shape::chain, 3, 1);
  run_result r;
  r.workers_used = 1;
  r.makespan_ns = 100;
  for (std::uint32_t i = 0; i < 3; ++i) {
    r.records.push_back({.id = i, .checksum = ref[i], .start_ns = 10 * i, .end_ns = 10 * i + 10});
  }
  CHECK(verify(ts, r, ref, &chain).ok);
  r.records[2].start_ns = 15;  // task 2 starts before task 1 ends at 20
  const verification broken = verify(ts, r, ref, &chain);
  CHECK_FALSE(broken.ok);
  REQUIRE(broken.problems.size() == 1);
  CHECK_THAT(broken.problems[0], Catch::StartsWith("edge 1→2"));
  CHECK(verify(ts, r, ref).ok);  // without the graph, no order to keep

  // A failure may name its failed predecessor, and nothing else.
  auto faulty = ts;
  faulty[0].inject = fault::throw_exception;
  run_result f;
  f.workers_used = 1;
  f.failed = {{0, "exception: boom"}, {1, predecessor_failed(0)}, {2, predecessor_failed(1)}};
  CHECK(verify(faulty, f, ref, &chain).ok);
  f.failed[2].cause = predecessor_failed(0);  // 0 is not 2's predecessor
  CHECK_FALSE(verify(faulty, f, ref, &chain).ok);
  // A task that ran although its predecessor failed.
  run_result ran;
  ran.workers_used = 1;
  ran.makespan_ns = 100;
  ran.failed = {{0, "exception: boom"}};
  ran.records = {{.id = 1, .checksum = ref[1], .start_ns = 0, .end_ns = 1},
                 {.id = 2, .checksum = ref[2], .start_ns = 1, .end_ns = 2}};
  const verification v = verify(faulty, ran, ref, &chain);
  CHECK_FALSE(v.ok);
  CHECK_THAT(v.problems[0], Catch::Contains("edge 0→1") && Catch::Contains("did not complete"));
}

TEST_CASE("an event: many waiters, set before and after they await", "[deps][07][event]") {
  event_loop loop;
  coro::event ev;
  std::vector<int> order;
  int late = 0;
  {
    coro::coro_scheduler sched(loop);
    auto waiter = [&](int k) -> coro::task<void> {
      co_await ev;
      order.push_back(k);
    };
    auto setter = [&]() -> coro::task<void> {
      co_await coro::sleep_for(1ms);
      CHECK(order.empty());
      ev.set();
      CHECK(order.empty());  // waiters resume later, from the ready queue, not inside set()
      ev.set();              // idempotent
    };
    auto after = [&]() -> coro::task<void> {
      co_await coro::sleep_for(5ms);
      const std::uint64_t before = coro::coro_scheduler::current()->resumes();
      co_await ev;  // already set: straight on, no suspension
      CHECK(coro::coro_scheduler::current()->resumes() == before);
      ++late;
    };
    for (int k = 0; k < 100; ++k) sched.spawn(waiter(k)).detach();
    sched.spawn(setter()).detach();
    sched.spawn(after()).detach();
    sched.run();
  }
  CHECK(ev.is_set());
  REQUIRE(order.size() == 100);
  CHECK(std::is_sorted(order.begin(), order.end()));  // in the order they began to wait
  CHECK(late == 1);
}

TEST_CASE("an event outlives a waiter whose frame is destroyed unfinished", "[deps][07][event]") {
  event_loop loop;
  coro::event ev;
  bool resumed = false;
  {
    coro::coro_scheduler sched(loop);
    auto waiter = [&]() -> coro::task<void> {
      co_await ev;
      resumed = true;
    };
    sched.spawn(waiter()).detach();
    sched.run();  // idle: the waiter is parked on an event nobody sets
  }               // its frame is destroyed here and leaves the event's list
  ev.set();
  CHECK_FALSE(resumed);
  CHECK_THROWS_AS(
      [&] {
        coro::event fresh;
        auto b = fresh.operator co_await();
        b.await_suspend(std::noop_coroutine());  // no coroutine of a scheduler runs here
      }(),
      std::logic_error);
}

TEST_CASE("serial and lesson 07's executors keep every edge of chains, trees and DAGs",
          "[deps][07][executors]") {
  const std::vector<task> ts = real_tasks(40);
  const std::vector<std::uint64_t> ref = reference_checksums(ts);
  for (const executor* e : k_graph_executors) {
    for (const deps_shape s : {deps_shape::chain, deps_shape::tree, deps_shape::dag}) {
      CAPTURE(e->name, to_string(s));
      const task_graph g = make_task_graph(s, ts.size(), 7);
      const run_result r = run_graph(*e, ts, g);
      const verification v = verify(ts, r, ref, &g);
      INFO((v.problems.empty() ? std::string() : v.problems[0]));
      CHECK(v.ok);
      CHECK(v.completed == ts.size());
      std::vector<task_record> by_id(ts.size());
      for (const task_record& rec : r.records) by_id[rec.id] = rec;
      CHECK(edges_hold(g, by_id));
    }
  }
}

TEST_CASE("a coroutine chain of waits cannot overlap, a tree of them does",
          "[deps][07][executors]") {
  // Ratios only: a chain of 20 waits of 2 ms takes at least 40 ms, a tree of them (5 levels) far
  // less; without a graph all 20 overlap.
  const std::vector<task> ts = real_tasks(20, 2'000'000);
  const task_graph chain = make_task_graph(deps_shape::chain, ts.size(), 1);
  const task_graph tree = make_task_graph(deps_shape::tree, ts.size(), 1);
  const std::int64_t along = run_graph(coroutines_executor(), ts, chain).makespan_ns;
  const std::int64_t branched = run_graph(coroutines_executor(), ts, tree).makespan_ns;
  CHECK(along >= 40'000'000);
  CHECK(branched * 2 < along);
}

TEST_CASE("a failure propagates down the graph, the rest runs", "[deps][07][executors]") {
  std::vector<task> ts = real_tasks(15, 100'000);
  ts[1].inject = fault::throw_exception;
  const std::vector<std::uint64_t> ref = reference_checksums(ts);
  const task_graph tree = make_task_graph(deps_shape::tree, ts.size(), 1);
  for (const executor* e : k_graph_executors) {
    CAPTURE(e->name);
    const run_result r = run_graph(*e, ts, tree);
    const verification v = verify(ts, r, ref, &tree);
    INFO((v.problems.empty() ? std::string() : v.problems[0]));
    CHECK(v.ok);
    // 1's subtree: 3, 4, then 7-10; the other half (0, 2, 5, 6, 11-14) completes.
    CHECK(r.failed.size() == 7);
    CHECK(v.completed == 8);
    CHECK(cause_of(r, 3) == predecessor_failed(1));
    CHECK(cause_of(r, 8) == predecessor_failed(3));
    CHECK(cause_of(r, 10) == predecessor_failed(4));
  }
}

TEST_CASE("a stop releases every task waiting on a predecessor", "[deps][07][executors][cancel]") {
  // A chain of 2 s waits: the stop wakes the sleeping head, and every task parked behind it ends
  // cancelled in turn; the run does not wait out a single wait.
  const std::vector<task> ts = real_tasks(50, 2'000'000'000);
  const std::vector<std::uint64_t> ref = reference_checksums(ts);
  const task_graph chain = make_task_graph(deps_shape::chain, ts.size(), 1);
  for (const executor* e : {&coroutines_executor(), &coro_priority_executor()}) {
    CAPTURE(e->name);
    std::stop_source cancel;
    std::jthread canceller([&cancel] {
      std::this_thread::sleep_for(50ms);
      cancel.request_stop();
    });
    const run_result r = run_graph(*e, ts, chain, cancel.get_token());
    CHECK(r.makespan_ns < ts[0].wait_ns);
    CHECK(r.stopped);
    CHECK(r.failed.size() == ts.size());
    CHECK(verify(ts, r, ref, &chain).ok);
  }
  // --errors first on a DAG: the first failure stops the run; everything is reported.
  std::vector<task> faulty = real_tasks(30, 100'000);
  faulty[4].inject = fault::throw_exception;
  const std::vector<std::uint64_t> ref2 = reference_checksums(faulty);
  const task_graph dag = make_task_graph(deps_shape::dag, faulty.size(), 3);
  for (const executor* e : k_graph_executors) {
    CAPTURE(e->name);
    const run_result r = run_graph(*e, faulty, dag, {}, error_policy::stop_at_first);
    CHECK(r.stopped);
    CHECK(verify(faulty, r, ref2, &dag).ok);
    CHECK(r.records.size() + r.failed.size() == faulty.size());
  }
}

TEST_CASE("measure() refuses a graph on an executor that does not support one", "[deps]") {
  const executor plain{.name = "plain", .run = [](std::span<const task>, const run_options&) {
                         return run_result{};
                       }};
  const task_graph g = make_task_graph(deps_shape::chain, 2, 1);
  const std::vector<task> ts = cpu_tasks({0, 0});
  run_options o;
  o.deps = &g;
  CHECK_THROWS_AS(measure(plain, ts, o), std::invalid_argument);
  CHECK(serial_executor().supports_deps);
  CHECK(coroutines_executor().supports_deps);
  CHECK(coro_priority_executor().supports_deps);
}
