// Models: closed forms checked by hand, the simulator on hand-computed schedules, properties over
// random task sets (Graham's bounds hold, equal tasks give ⌈N/P⌉·t), the verdict and the check.
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "models/bounds.hpp"
#include "models/check.hpp"
#include "models/fit.hpp"
#include "models/simulate.hpp"
#include "models/verdict.hpp"
#include "workloads/execute.hpp"

using namespace clab;

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

/// The CPU parts of one task set with the waits of another, task by task.
std::vector<task> mixed_of(std::vector<task> cpu, const std::vector<task>& waits) {
  for (std::size_t i = 0; i < cpu.size() && i < waits.size(); ++i)
    cpu[i].wait_ns = waits[i].wait_ns;
  return cpu;
}

sim_config cfg(placement p, int workers, int cores, wait_mode w = wait_mode::blocking) {
  return {.policy = p, .waits = w, .workers = workers, .cores = cores};
}

std::vector<task> random_tasks(std::uint64_t seed, std::size_t n, bool cpu) {
  std::vector<task> ts(n);
  for (std::size_t i = 0; i < n; ++i) {
    seed = splitmix64(seed);
    const auto d = static_cast<std::int64_t>(1 + seed % 1'000'000);
    ts[i].id = static_cast<std::uint32_t>(i);
    (cpu ? ts[i].cpu_ns : ts[i].wait_ns) = d;
  }
  return ts;
}

}  // namespace

TEST_CASE("closed forms, by hand", "[models][bounds]") {
  const auto ts = cpu_tasks({10, 20, 30, 40});
  CHECK(serial_makespan(ts) == 100);
  CHECK(serial_makespan(ts, 5) == 120);
  CHECK(equal_tasks_makespan(16, 4, 20) == 80);
  CHECK(equal_tasks_makespan(17, 4, 20) == 100);  // ⌈17/4⌉ = 5 rounds
  CHECK(equal_tasks_makespan(3, 8, 20) == 20);
  CHECK(equal_tasks_makespan(0, 8, 20) == 0);
  const makespan_bounds g = graham_bounds(ts, 2);
  CHECK(g.lower_ns == 50);  // max(100/2, 40)
  CHECK(g.upper_ns == 70);  // 100/2 + (1 − 1/2)·40
  CHECK(graham_bounds(ts, 1).lower_ns == 100);
  CHECK(graham_bounds(ts, 1).upper_ns == 100);
  CHECK(graham_bounds(ts, 8).lower_ns == 40);  // the longest task
  CHECK(effective_parallelism(8, 2) == 2);
  CHECK(effective_parallelism(1, 2) == 1);
  CHECK(makespan_lower_bound(ts, 8, 2) == 50);  // Σc / min(P, C)
  std::vector<task> mixed = {{.id = 0, .cpu_ns = 5, .wait_ns = 100},
                             {.id = 1, .cpu_ns = 5, .wait_ns = 1}};
  CHECK(overlap_lower_bound(mixed) == 105);  // max(Σc = 10, max t = 105)
  CHECK_THROWS_AS(equal_tasks_makespan(4, 0, 1), std::invalid_argument);
}

TEST_CASE("simulator: hand-computed schedules", "[models][simulate]") {
  SECTION("equal CPU tasks on as many cores as workers: ⌈N/P⌉·t") {
    for (placement p :
         {placement::static_blocks, placement::round_robin, placement::dynamic_queue}) {
      CHECK(simulate(cpu_tasks({10, 10, 10, 10}), cfg(p, 2, 2)).makespan_ns == 20);
    }
  }
  SECTION("more runnable CPU phases than cores share them: 3 × 10 on 2 cores end together at 15") {
    const sim_result r = simulate(cpu_tasks({10, 10, 10}), cfg(placement::static_blocks, 3, 2));
    CHECK(r.makespan_ns == 15);
    for (const task_record& t : r.timeline) CHECK(t.end_ns == 15);
  }
  SECTION("processor sharing: 10 and 30 on one core, the short one ends at 20") {
    const sim_result r = simulate(cpu_tasks({10, 30}), cfg(placement::static_blocks, 2, 1));
    CHECK(r.timeline[0].end_ns == 20);
    CHECK(r.makespan_ns == 40);
  }
  SECTION("blocking waits need no core: 4 waits of 10 on 4 workers and 1 core take 10") {
    CHECK(simulate(wait_tasks({10, 10, 10, 10}), cfg(placement::static_blocks, 4, 1)).makespan_ns ==
          10);
  }
  SECTION("static partition skew against a dynamic queue") {
    const auto ts = cpu_tasks({40, 10, 10, 10});
    CHECK(simulate(ts, cfg(placement::static_blocks, 2, 2)).makespan_ns ==
          50);                                                                 // {40,10} | {10,10}
    CHECK(simulate(ts, cfg(placement::round_robin, 2, 2)).makespan_ns == 50);  // {40,10} | {10,10}
    const sim_result d = simulate(ts, cfg(placement::dynamic_queue, 2, 2));
    CHECK(d.makespan_ns == 40);  // the other worker takes the three short ones
    CHECK(d.timeline[3].worker == 1);
    CHECK(d.timeline[3].start_ns == 20);
  }
  SECTION("an unhindered launcher starts worker k at (k + 1) · start cost") {
    sim_config c = cfg(placement::one_per_task, 2, 2);
    c.worker_start_ns = 5;
    const sim_result r = simulate(wait_tasks({10, 10}), c);
    CHECK(r.timeline[0].start_ns == 5);
    CHECK(r.timeline[1].start_ns == 10);
    CHECK(r.makespan_ns == 20);
  }
  SECTION("per-task overhead and wait overshoot add up serially") {
    sim_config c = cfg(placement::static_blocks, 1, 1);
    c.per_task_ns = 2;
    CHECK(simulate(cpu_tasks({10, 10, 10}), c).makespan_ns == 36);
    c.per_task_ns = 0;
    c.wait_overshoot = overshoot_curve::flat(1);
    CHECK(simulate(wait_tasks({10, 0, 10}), c).makespan_ns ==
          22);  // a zero wait does not overshoot
  }
  SECTION("mixed tasks, serial: Σ (w + c)") {
    std::vector<task> ts(4, task{.cpu_ns = 2, .wait_ns = 10});
    for (std::uint32_t i = 0; i < 4; ++i) ts[i].id = i;
    CHECK(simulate(ts, cfg(placement::static_blocks, 1, 1)).makespan_ns == 48);
    SECTION("non-blocking on one worker: all waits overlap, then the CPU parts queue") {
      const sim_result r =
          simulate(ts, cfg(placement::static_blocks, 1, 1, wait_mode::nonblocking));
      CHECK(r.makespan_ns == 18);  // 10 of waiting, then 4 × 2 of computing
      CHECK(r.makespan_ns >= overlap_lower_bound(ts));
    }
  }
  SECTION("no tasks take no time, and start no worker") {
    CHECK(simulate({}, cfg(placement::dynamic_queue, 4, 2)).makespan_ns == 0);
    sim_config c = cfg(placement::one_per_task, 1, 2);
    c.worker_start_ns = 1000;
    CHECK(simulate({}, c).makespan_ns == 0);
  }
  SECTION("bad configurations are rejected") {
    CHECK_THROWS_AS(simulate(cpu_tasks({1}), cfg(placement::static_blocks, 0, 1)),
                    std::invalid_argument);
  }
}

TEST_CASE("simulator properties over random task sets", "[models][simulate][property]") {
  for (std::uint64_t seed = 1; seed <= 200; ++seed) {
    const std::size_t n = 1 + seed % 40;
    const int p = 1 + static_cast<int>(seed % 7);
    CAPTURE(seed, n, p);
    // A dynamic queue is a greedy list schedule: Graham's bounds hold when every worker has a core
    // (CPU tasks with P ≤ C) or when the tasks only wait (waits need no core at all).
    const auto cpu = random_tasks(seed, n, true);
    const makespan_bounds g = graham_bounds(cpu, p);
    const std::int64_t dyn = simulate(cpu, cfg(placement::dynamic_queue, p, p)).makespan_ns;
    CHECK(dyn >= g.lower_ns);
    CHECK(dyn <= g.upper_ns + 1);
    const auto waits = random_tasks(seed * 31, n, false);
    const makespan_bounds gw = graham_bounds(waits, p);
    const std::int64_t dw = simulate(waits, cfg(placement::dynamic_queue, p, 1)).makespan_ns;
    CHECK(dw >= gw.lower_ns);
    CHECK(dw <= gw.upper_ns + 1);
    // Every policy, on any number of cores, respects the lower bound.
    for (placement pl :
         {placement::static_blocks, placement::round_robin, placement::dynamic_queue}) {
      const int cores = 1 + static_cast<int>(seed % 3);
      CHECK(simulate(cpu, cfg(pl, p, cores)).makespan_ns >=
            makespan_lower_bound(cpu, p, cores) - 1);
      // So do queues per core, where an idle core waits before it takes a waiting phase: no
      // faster than one queue for all, and, with every task recorded, no slower than all the
      // work on one core plus one delay per task moved.
      sim_config per_core = cfg(pl, p, cores);
      // slices of 50 µs to 1.25 ms and delays of 1 ns to 1.5 ms, against tasks of up to 1 ms
      per_core.time_slice_ns = 50'000 + static_cast<std::int64_t>(seed % 5) * 300'000;
      per_core.balance_delay_ns = 1 + static_cast<std::int64_t>(seed % 4) * 500'000;
      for (const auto& ts : {cpu, mixed_of(cpu, waits)}) {
        const sim_result r = simulate(ts, per_core);
        CHECK(r.makespan_ns >= makespan_lower_bound(ts, p, cores) - 1);
        std::int64_t all = 0;
        for (const task& t : ts) all += t.duration_ns();
        CHECK(r.makespan_ns <= all + static_cast<std::int64_t>(n) * per_core.balance_delay_ns + 1);
        for (std::size_t i = 0; i < n; ++i) CHECK(r.timeline[i].end_ns >= r.timeline[i].start_ns);
      }
    }
    // Equal tasks: ⌈N/P⌉·t exactly, whatever the policy.
    std::vector<task> equal(n, task{.cpu_ns = 1000});
    for (std::size_t i = 0; i < n; ++i) equal[i].id = static_cast<std::uint32_t>(i);
    for (placement pl :
         {placement::static_blocks, placement::round_robin, placement::dynamic_queue}) {
      CHECK(simulate(equal, cfg(pl, p, p)).makespan_ns == equal_tasks_makespan(n, p, 1000));
    }
    // One worker, non-blocking: waits overlap, so T ≥ max(Σc, max t).
    std::vector<task> mixed = random_tasks(seed * 7, n, true);
    for (std::size_t i = 0; i < n; ++i) mixed[i].wait_ns = waits[i].wait_ns;
    CHECK(
        simulate(mixed, cfg(placement::static_blocks, 1, 1, wait_mode::nonblocking)).makespan_ns >=
        overlap_lower_bound(mixed) - 1);
  }
}

TEST_CASE("simulator: long runs finish (times of 1e10 to 1e12 ns)", "[models][simulate]") {
  // Regression: an absolute epsilon once left a sliver of CPU work unfinishable past ~17 s.
  for (std::int64_t scale : {10'000'000'000LL, 1'000'000'000'000LL}) {
    std::vector<task> ts;
    for (std::uint32_t i = 0; i < 50; ++i) {
      ts.push_back({.id = i, .cpu_ns = scale / 7 + i * 13, .wait_ns = (i % 3) * scale / 11});
    }
    for (wait_mode w : {wait_mode::blocking, wait_mode::nonblocking}) {
      for (int p : {1, 3, 4}) {
        const sim_result r = simulate(ts, cfg(placement::static_blocks, p, 2, w));
        CHECK(r.makespan_ns >= makespan_lower_bound(ts, 1, 1) / 2 / p);
        CHECK(simulate(ts, cfg(placement::dynamic_queue, p, 2, w)).makespan_ns > 0);
      }
    }
  }
}

TEST_CASE("simulator: non-blocking waits on several workers, with per-task overhead",
          "[models][simulate]") {
  // Two workers, one core, four tasks of wait 10 then CPU 2, and 1 of overhead before each task.
  std::vector<task> ts(4, task{.cpu_ns = 2, .wait_ns = 10});
  for (std::uint32_t i = 0; i < 4; ++i) ts[i].id = i;
  sim_config c = cfg(placement::dynamic_queue, 2, 1, wait_mode::nonblocking);
  c.per_task_ns = 1;
  // The overheads run one at a time on the one core (0-1, 1-2, 2-3, 3-4 with sharing: all four
  // starts finish by 4), the waits end by 14, then four CPU parts of 2 on one core: 8 more.
  const sim_result r = simulate(ts, c);
  CHECK(r.makespan_ns >= 18);
  CHECK(r.makespan_ns <= 22);
  CHECK(r.makespan_ns >= overlap_lower_bound(ts));
}

TEST_CASE("simulator: time slices and a launcher that needs a core", "[models][simulate]") {
  SECTION("two CPU phases on one core take turns; the first finishes a slice earlier") {
    sim_config c = cfg(placement::static_blocks, 2, 1);
    c.time_slice_ns = 1;
    const sim_result r = simulate(cpu_tasks({3, 3}), c);
    // 0-1 A, 1-2 B, 2-3 A, 3-4 B, 4-5 A (done), 5-6 B (done)
    CHECK(r.timeline[0].end_ns == 5);
    CHECK(r.timeline[1].end_ns == 6);
    c.time_slice_ns = 0;  // processor sharing: both crawl at half speed and finish together
    const sim_result shared = simulate(cpu_tasks({3, 3}), c);
    CHECK(shared.timeline[0].end_ns == 6);
    CHECK(shared.timeline[1].end_ns == 6);
  }
  SECTION("a phase shorter than its slice runs to its end: bursts between waits interleave") {
    // Two workers on one core, each task a wait of 4 then 4 of CPU, two tasks each. Sliced
    // (slice 10): A computes 4-8 while B queues, B 8-12 while A waits 8-12, A 12-16, B 16-20.
    // Shared: both compute 4-12 at half speed, wait 12-16, compute 16-24.
    std::vector<task> ts(4, task{.cpu_ns = 4, .wait_ns = 4});
    for (std::uint32_t i = 0; i < 4; ++i) ts[i].id = i;
    sim_config c = cfg(placement::round_robin, 2, 1);
    c.time_slice_ns = 10;
    CHECK(simulate(ts, c).makespan_ns == 20);
    c.time_slice_ns = 0;
    CHECK(simulate(ts, c).makespan_ns == 24);
  }
  SECTION("nobody waiting: a spent slice is renewed, and fewer phases than cores never queue") {
    sim_config c = cfg(placement::static_blocks, 2, 2);
    c.time_slice_ns = 1;
    CHECK(simulate(cpu_tasks({7, 5}), c).makespan_ns == 7);
  }
  SECTION("on one core the launcher's starts and the work add up, sliced or shared") {
    for (const std::int64_t slice : {0, 1, 3}) {
      sim_config c = cfg(placement::one_per_task, 3, 1);
      c.worker_start_ns = 2;
      c.time_slice_ns = slice;
      CAPTURE(slice);
      CHECK(simulate(cpu_tasks({5, 5, 5}), c).makespan_ns == 3 * 2 + 15);
    }
  }
  SECTION("a launcher that hands out every task serves nobody while it still starts workers") {
    sim_config c = cfg(placement::dynamic_queue, 2, 2);
    c.worker_start_ns = 5;
    // w0 starts at 5 and runs task 0 until 6, then tasks 1 and 2 by 8; the run ends when the
    // launcher has started w1, at 10.
    const sim_result free = simulate(wait_tasks({1, 1, 1}), c);
    CHECK(free.timeline[2].end_ns == 8);
    CHECK(free.makespan_ns == 10);
    // A pool's parent forks w1 until 10 and only then serves w0 again: tasks 1 and 2 at 10.
    c.launcher_dispatches = true;
    const sim_result r = simulate(wait_tasks({1, 1, 1}), c);
    CHECK(r.makespan_ns == 11);
    CHECK(r.timeline[1].start_ns == 10);
    // Its hand-offs cost it CPU, one at a time, and the worker waits for two wake-ups on top.
    c.launcher_handoff_ns = 2;
    c.handoff_delay_ns = 3;
    const sim_result h = simulate(wait_tasks({1, 1, 1}), c);
    // At 10, w1 starts with task 1 (its first task comes with its start) and the launcher serves
    // w0: its hand-off takes 10 to 12, then 3 of wake-ups and task 2's wait of 1.
    CHECK(h.timeline[1].end_ns == 11);
    CHECK(h.timeline[2].end_ns == 12 + 3 + 1);
    CHECK(h.makespan_ns == 16);
  }
  SECTION("a worker that goes straight on to its next task keeps its place in the run queue") {
    // Two workers on one core, slice 10; each task costs 1 of per-task CPU, then a wait of 4,
    // then 4 of CPU. A: 0-1 overhead, 1-5 wait, 5-9 CPU, then at once task 2's overhead 9-10
    // (its place and the rest of its slice kept), wait 10-14. B: 1-2 overhead, 2-6 wait, queued
    // behind A until 10, CPU 10-14, overhead 14-15, wait 15-19. A computes 15-19, B 19-23.
    std::vector<task> ts(4, task{.cpu_ns = 4, .wait_ns = 4});
    for (std::uint32_t i = 0; i < 4; ++i) ts[i].id = i;
    sim_config c = cfg(placement::round_robin, 2, 1);
    c.time_slice_ns = 10;
    c.per_task_ns = 1;
    const sim_result r = simulate(ts, c);
    CHECK(r.timeline[2].start_ns == 9);
    CHECK(r.timeline[2].end_ns == 19);
    CHECK(r.makespan_ns == 23);
  }
  SECTION("a worker just started takes the launcher's core; the launcher goes next in line") {
    // One core, slice 10, starts of 2: each new worker runs its 10 of CPU at once, and the
    // launcher starts the next one only when that worker's slice ends.
    sim_config c = cfg(placement::one_per_task, 3, 1);
    c.worker_start_ns = 2;
    c.time_slice_ns = 10;
    const sim_result r = simulate(cpu_tasks({10, 10, 10}), c);
    CHECK(r.timeline[0].start_ns == 2);
    CHECK(r.timeline[0].end_ns == 12);
    CHECK(r.timeline[1].start_ns == 14);
    CHECK(r.timeline[1].end_ns == 24);
    CHECK(r.timeline[2].start_ns == 26);
    CHECK(r.makespan_ns == 36);
    // With a core to spare, nobody is pushed aside: the starts follow one another every 2.
    c.cores = 2;
    const sim_result two = simulate(cpu_tasks({10, 10, 10}), c);
    CHECK(two.timeline[1].start_ns == 4);
  }
  SECTION("the launcher slows down once the workers it started compete for its core") {
    sim_config c = cfg(placement::one_per_task, 2, 1);
    c.worker_start_ns = 2;
    // w0 starts at 2; the launcher then shares the core with w0 and needs 4 more to start w1.
    const sim_result r = simulate(cpu_tasks({10, 1}), c);
    CHECK(r.timeline[0].start_ns == 2);
    CHECK(r.timeline[1].start_ns == 6);
  }
}

TEST_CASE("configure maps a schedule and a calibration onto the simulator", "[models][simulate]") {
  const calibration m{.cores = 2,
                      .ns_per_iteration = 1,
                      .sleep_overshoot = overshoot_curve::flat(50),
                      .thread_start_ns = 20};
  const sim_config c = configure({.policy = placement::one_per_task,
                                  .workers = worker_rule::one_per_task,
                                  .worker_start = unit_cost::thread_start},
                                 4, 10, m);
  CHECK(c.workers == 10);
  CHECK(c.cores == 2);
  CHECK(c.worker_start_ns == 20);
  CHECK(c.per_task_ns == 0);
  CHECK(c.wait_overshoot.at(1'000'000) == 50);
  CHECK(configure({.workers = worker_rule::requested}, 4, 0, m).workers ==
        1);  // N = 0 still simulates
  SECTION(
      "a probed cost: the launcher pays it before each start, a pool's worker before each task") {
    const schedule per_process{.policy = placement::one_per_task,
                               .workers = worker_rule::one_per_task,
                               .worker_start = unit_cost::probed};
    CHECK(configure(per_process, 4, 10, m, 700).worker_start_ns == 700);
    const schedule pool{.policy = placement::dynamic_queue,
                        .workers = worker_rule::requested,
                        .per_task = unit_cost::probed};
    CHECK(configure(pool, 1, 10, m, 300).per_task_ns == 300);
    CHECK(configure(pool, 8, 10, m, 300).per_task_ns == 300);
    CHECK(configure(pool, 8, 10, m, 300).worker_start_ns == 0);
  }
  SECTION("a worker's own CPU, less the part the launcher's probed time already waits through") {
    const schedule spawned{.policy = placement::one_per_task,
                           .workers = worker_rule::one_per_task,
                           .worker_start = unit_cost::probed,
                           .per_task = unit_cost::probed_worker_cpu};
    // 800 per start, of which the launcher computes 100 and waits 700 for the child; the child
    // computes 1200 in all, so 500 of it is left to run beside the launcher.
    const sim_config s = configure(spawned, 4, 10, m, 800, 100, 1200);
    CHECK(s.worker_start_ns == 800);
    CHECK(s.per_task_ns == 500);
    CHECK(configure(spawned, 4, 10, m, 800, 100, 600).per_task_ns == 0);  // all inside the wait
    const schedule thread_each{.policy = placement::one_per_task,
                               .workers = worker_rule::one_per_task,
                               .worker_start = unit_cost::thread_start,
                               .per_task = unit_cost::probed_worker_cpu};
    CHECK(configure(thread_each, 4, 10, m, 800, 100, 30).per_task_ns == 30);  // no wait to subtract
  }
  SECTION("a pool whose caller submits each task: the caller's probed CPU per task") {
    const schedule pool{.policy = placement::dynamic_queue,
                        .workers = worker_rule::requested,
                        .per_task = unit_cost::probed,
                        .caller_submits = true};
    CHECK(configure(pool, 2, 10, m, 300, 120).submit_ns == 120);
    CHECK(configure({.per_task = unit_cost::probed}, 2, 10, m, 300, 120).submit_ns == 0);
  }
}

TEST_CASE("simulator: a caller submitting tasks takes its share of the cores",
          "[models][simulate]") {
  // 4 tasks of 1000 ns on 2 workers and 2 cores: 2000 ns alone. Submitting costs the caller
  // 500 ns per task, 2000 in all, beside the workers: three threads share two cores until the
  // caller is done at 3000, and so are the workers, on processor sharing.
  const std::vector<task> ts = cpu_tasks({1000, 1000, 1000, 1000});
  sim_config c = cfg(placement::dynamic_queue, 2, 2);
  CHECK(simulate(ts, c).makespan_ns == 2000);
  c.submit_ns = 500;
  CHECK(simulate(ts, c).makespan_ns == 3000);
  c.cores = 4;  // a core to spare: the caller slows nobody
  CHECK(simulate(ts, c).makespan_ns == 2000);
}

TEST_CASE("simulator: a queue per core balanced after a delay", "[models][simulate]") {
  // Three 10 ms CPU workers on two cores, 1 ms slices, no start cost. Each new worker goes to the
  // core with the fewest phases: w0 to core 1, w1 to core 0, w2 to core 1 (a tie goes away from
  // the launcher's core 0). w1 has core 0 to itself and ends at 10 ms; w0 and w2 share core 1 and
  // have done 5 ms each by then. Core 0 takes the waiting one after the delay.
  const std::vector<task> ts = cpu_tasks({10'000'000, 10'000'000, 10'000'000});
  sim_config c = cfg(placement::static_blocks, 3, 2);
  c.time_slice_ns = 1'000'000;
  CHECK(simulate(ts, c).makespan_ns == 15'000'000);  // one queue: the cores share perfectly
  c.balance_delay_ns = 2'000'000;
  sim_result r = simulate(ts, c);
  // at 12 ms each has 4 ms left, one on each core
  CHECK(r.makespan_ns == 16'000'000);
  CHECK(r.timeline[1].end_ns == 10'000'000);
  c.balance_delay_ns = 20'000'000;  // longer than the rest of the run: nothing moves
  CHECK(simulate(ts, c).makespan_ns == 20'000'000);

  // Four workers that wait 2 ms and then compute 2 ms. All start waiting, so all start on core 1;
  // when they wake, one finds core 0 empty and goes there, the other three stay (a thread goes
  // back to its core unless that core is busy and another is empty). Core 1 computes 6 ms.
  std::vector<task> mixed;
  for (std::uint32_t i = 0; i < 4; ++i) {
    mixed.push_back({.id = i, .cpu_ns = 2'000'000, .wait_ns = 2'000'000});
  }
  sim_config m = cfg(placement::static_blocks, 4, 2);
  m.time_slice_ns = 1'000'000;
  CHECK(simulate(mixed, m).makespan_ns == 6'000'000);
  m.balance_delay_ns = 5'000'000;  // core 0 is idle from 4 ms; the pull would come at 9 ms
  CHECK(simulate(mixed, m).makespan_ns == 8'000'000);
  m.balance_delay_ns = 1'000'000;  // at 5 ms core 0 takes one of the two still waiting on core 1
  const std::int64_t quick = simulate(mixed, m).makespan_ns;
  CHECK(quick > 6'000'000);
  CHECK(quick < 8'000'000);
}

TEST_CASE("simulator: a new worker between two busy cores goes to its launcher's every other time",
          "[models][simulate]") {
  // A thread per task: the launcher, on core 0, spends 1000 ns on each start; each task computes
  // 1500. w0 (at 1000) finds core 1 empty. w1 (at 2000) finds one phase on each core: the first
  // such tie goes away from the launcher, behind w0. w2 (at 3000) finds one on each again: this
  // time it takes the launcher's core and runs first, so the launcher starts w3 only at 5500.
  const std::vector<task> ts = cpu_tasks({1500, 1500, 1500, 1500});
  sim_config c = cfg(placement::one_per_task, 4, 2);
  c.worker_start_ns = 1000;
  c.time_slice_ns = 4000;
  c.balance_delay_ns = 100'000;  // a queue per core, never balanced in this run
  const sim_result r = simulate(ts, c);
  CHECK(r.timeline[1].end_ns == 4000);    // behind w0 on core 1
  CHECK(r.timeline[2].start_ns == 3000);  // ahead of the launcher on core 0
  CHECK(r.timeline[2].end_ns == 4500);
  CHECK(r.timeline[3].start_ns == 5500);
  CHECK(r.makespan_ns == 7000);
  // Never to the launcher's core: w2 queues behind w1 on core 1 (4000 to 5500). The launcher,
  // never held up, starts w3 at 4000; its core counts as busy with that start, w2's as busy too,
  // so w3 goes away again, behind w2 (5500 to 7000), while core 0 idles.
  c.ties_alternate = false;
  const sim_result away = simulate(ts, c);
  CHECK(away.timeline[2].end_ns == 5500);
  CHECK(away.timeline[3].start_ns == 4000);
  CHECK(away.timeline[3].end_ns == 7000);
}

TEST_CASE("simulator: a worker started beside a busy core stays there until the balance",
          "[models][simulate]") {
  // Two workers of 10000 ns on two cores; starting each costs the launcher (on core 0) 1000.
  // w0 (at 1000) finds core 1 empty. w1 (at 2000) finds w0 on core 1 and the launcher, whose
  // start just made it, on core 0: a tie, the first goes away from the launcher, so w1 queues
  // behind w0 although core 0 is now idle (the launcher is done). At 5000, after the balance
  // delay, core 0 takes the one waiting: w0, whose slice has just ended (4000 of its work done).
  const std::vector<task> ts = cpu_tasks({10'000, 10'000});
  sim_config c = cfg(placement::static_blocks, 2, 2);
  c.worker_start_ns = 1000;
  c.time_slice_ns = 4000;
  CHECK(simulate(ts, c).makespan_ns == 12'000);  // one queue: each has a core from its start
  c.balance_delay_ns = 3000;
  const sim_result r = simulate(ts, c);
  CHECK(r.timeline[0].end_ns == 11'000);
  CHECK(r.timeline[1].end_ns == 15'000);
  CHECK(r.makespan_ns == 15'000);
}

TEST_CASE("simulator: the run ends run_end_ns after its last task", "[models][simulate]") {
  const std::vector<task> ts = cpu_tasks({100, 200, 300});
  sim_config c = cfg(placement::dynamic_queue, 2, 2);
  const sim_result before = simulate(ts, c);
  c.run_end_ns = 1000;
  const sim_result after = simulate(ts, c);
  CHECK(after.makespan_ns == before.makespan_ns + 1000);
  for (std::size_t i = 0; i < ts.size(); ++i) {  // no task moves
    CHECK(after.timeline[i].end_ns == before.timeline[i].end_ns);
  }
}

TEST_CASE("verdict: within tolerance, or deviating with the likely cause", "[models][verdict]") {
  verdict_input in{.measured_ns = 104, .predicted_ns = 100, .tolerance = 0.05};
  verdict v = judge(in);
  CHECK(v.within);
  CHECK(v.ratio == Approx(1.04));
  CHECK(v.cause.empty());

  in.measured_ns = 94;
  CHECK_THAT(judge(in).cause, Catch::StartsWith("faster than predicted"));

  in.measured_ns = 120;
  in.cv = 0.2;
  CHECK_THAT(judge(in).cause, Catch::StartsWith("noise"));
  in.cv = 0;
  in.task_stretch = 1.15;
  CHECK_THAT(judge(in).cause, Catch::Contains("15% longer"));
  in.task_stretch = 1.0;
  in.cpu_work = true;
  in.runnable_threads = 8;
  in.cores = 2;
  CHECK_THAT(judge(in).cause, Catch::StartsWith("oversubscription: 8 workers on 2 cores"));
  in.runnable_threads = 2;
  CHECK_THAT(judge(in).cause, Catch::StartsWith("overhead"));
  // Spread-out runs explain a deviation up to twice their CV, not more: 4 threads on 2 cores
  // 30 % over the model with a CV of 6 % is oversubscription, 10 % over is noise.
  in.runnable_threads = 4;
  in.cv = 0.06;
  in.measured_ns = 130;
  CHECK_THAT(judge(in).cause, Catch::StartsWith("oversubscription: 4 workers"));
  in.measured_ns = 110;
  in.tolerance = 0.05;
  CHECK_THAT(judge(in).cause, Catch::StartsWith("noise: repeated runs spread by CV 6%"));
  CHECK(default_tolerance(workload::wait) == 0.05);
  CHECK(default_tolerance(workload::cpu) == 0.10);
}

TEST_CASE("verdict: a prediction's range over the scheduler's choices widens what is within",
          "[models][verdict]") {
  verdict_input in{.measured_ns = 128,
                   .predicted_ns = 100,
                   .predicted_low_ns = 95,
                   .predicted_high_ns = 120,
                   .tolerance = 0.10};
  verdict v = judge(in);
  CHECK(v.within);  // 128 ≤ 120 · 1.1
  CHECK(v.by_range);
  CHECK(v.ratio == Approx(1.28));  // the ratio stays measured / predicted
  CHECK_THAT(v.cause, Catch::Contains("range"));
  in.measured_ns = 133;  // past 132 = 120 · 1.1
  v = judge(in);
  CHECK_FALSE(v.within);
  CHECK_FALSE(v.by_range);
  in.measured_ns = 86;  // 95 · 0.9 = 85.5
  CHECK(judge(in).by_range);
  in.measured_ns = 85;
  CHECK_THAT(judge(in).cause, Catch::StartsWith("faster than predicted"));
  in.measured_ns = 105;  // within the point's own tolerance: not by the range
  v = judge(in);
  CHECK(v.within);
  CHECK_FALSE(v.by_range);
  CHECK(v.cause.empty());
  // A range that leaves out the point prediction is widened to hold it; none is no range at all.
  in = {.measured_ns = 125,
        .predicted_ns = 100,
        .predicted_low_ns = 150,
        .predicted_high_ns = 160,
        .tolerance = 0.10};
  CHECK(judge(in).by_range);  // the range is 100–160
  in = {.measured_ns = 125, .predicted_ns = 100, .tolerance = 0.10};
  CHECK_FALSE(judge(in).within);
  // Empty tasks are not judged, whatever the range.
  in = {.measured_ns = 5, .predicted_ns = 4, .predicted_high_ns = 10, .work_ns = 0};
  CHECK_FALSE(judge(in).within);
  CHECK_FALSE(judge(in).by_range);
}

namespace {

// An executor that computes every checksum but the last one wrong: verification must catch it.
run_result run_wrong_checksum(std::span<const task> tasks, const run_options& o) {
  result_slots slots(tasks.size());
  for (const task& t : tasks) slots.run_into(t, o.origin, 0);
  run_result r = std::move(slots).collect(1);
  if (!r.records.empty()) r.records.back().checksum += 1;
  return r;
}

run_result run_correct(std::span<const task> tasks, const run_options& o) {
  result_slots slots(tasks.size());
  for (const task& t : tasks) slots.run_into(t, o.origin, 0);
  return std::move(slots).collect(1);
}

}  // namespace

TEST_CASE("predict: the range over the scheduler's choices where they decide", "[models][check]") {
  calibration m;
  m.cores = 2;
  m.time_slice_ns = 4'000'000;
  m.time_slice_long_ns = 4'000'000;
  const executor e{
      .name = "in-order", .plan = {.policy = placement::static_blocks}, .run = run_correct};
  // Four workers, each with four tasks of a 2.5 ms wait and then 2.5 ms of CPU, on two cores. With
  // long slices a worker's CPU phase runs to its end while another waits, so the phases interleave
  // (about 22.5 ms); with processor sharing all four crawl at half speed together, in lockstep
  // (four rounds of 2.5 + 5 ms, 30 ms).
  std::vector<task> mixed;
  for (std::uint32_t i = 0; i < 16; ++i) {
    mixed.push_back({.id = i, .cpu_ns = 2'500'000, .wait_ns = 2'500'000, .seed = i + 1U});
  }
  const prediction p = predict(e, mixed, 4, m);
  CHECK(p.low_ns <= p.simulated.makespan_ns);
  CHECK(p.high_ns >= p.simulated.makespan_ns);
  CHECK(p.low_ns == Approx(22'500'000).epsilon(0.02));
  CHECK(p.high_ns == Approx(30'000'000).epsilon(0.02));
  // Equal CPU tasks, two per worker: every slice gives 40 ms, and so does the range.
  std::vector<task> equal;
  for (std::uint32_t i = 0; i < 16; ++i) equal.push_back({.id = i, .cpu_ns = 5'000'000});
  const prediction cpu = predict(e, equal, 4, m);
  CHECK(cpu.low_ns == cpu.high_ns);
  // A queue per core, with more workers than cores: three 10 ms workers, two of them queued on one
  // core for the whole run when the balance delay is longer than the run (20 ms, not 15).
  m.balance_delay_ns = 100'000'000;
  const std::vector<task> three = cpu_tasks({10'000'000, 10'000'000, 10'000'000});
  const prediction uneven = predict(e, three, 3, m);
  CHECK(uneven.low_ns < 15'500'000);
  CHECK(uneven.high_ns >= 20'000'000);
  // With no more workers than cores each has a core of its own: no queue per core is simulated.
  const prediction own = predict(e, three, 2, m);
  CHECK(own.high_ns < 20'500'000);
  CHECK(own.high_ns == own.low_ns);
  // Without a measured slice there is nothing to range over.
  m.time_slice_ns = 0;
  const prediction shared = predict(e, mixed, 4, m);
  CHECK(shared.low_ns == shared.simulated.makespan_ns);
  CHECK(shared.high_ns == shared.simulated.makespan_ns);
}

TEST_CASE("run_and_check verifies every repetition and judges the median", "[models][check]") {
  const calibration m = calibrate();
  // Waits of 2 ms: a sleep's overshoot (tens of µs, and on a loaded machine more or less than the
  // calibration saw) stays a small part of each one. With 0.2 ms waits the ratio once read 0.84.
  std::vector<task> ts = wait_tasks({2'000'000, 2'000'000, 2'000'000});
  const auto ref = reference_checksums(ts);
  const executor good{.name = "good", .plan = {.workers = worker_rule::one}, .run = run_correct};
  const executor bad{
      .name = "bad", .plan = {.workers = worker_rule::one}, .run = run_wrong_checksum};
  const check_options o{.workers = 1, .repeats = 3, .tolerance = 0.5};

  const checked_run ok = run_and_check(good, ts, predict(good, ts, 1, m), o, ref);
  CHECK(ok.verified.ok);
  CHECK(ok.makespans.size() == 3);
  CHECK(ok.makespan_ns >= 6'000'000);  // three waits in a row cannot take less
  CHECK(ok.judged.ratio > 0.9);

  const checked_run wrong = run_and_check(bad, ts, predict(bad, ts, 1, m), o, ref);
  CHECK_FALSE(wrong.verified.ok);
  CHECK(wrong.makespans.size() == 1);  // a failed verification stops the repetitions
  CHECK_THAT(wrong.verified.problems.at(0), Catch::Contains("task 2"));
}

TEST_CASE("median and coefficient of variation", "[models][check]") {
  CHECK(median(std::vector<std::int64_t>{5, 1, 3}) == 3);
  CHECK(median(std::vector<std::int64_t>{}) == 0);
  CHECK(median(std::vector<double>{2.5, 0.5, 1.5, 9.0}) == 2.5);  // the upper middle
  const std::vector<std::int64_t> same{7, 7, 7};
  CHECK(coefficient_of_variation(same) == 0);
  const std::vector<std::int64_t> spread{90, 100, 110};
  CHECK(coefficient_of_variation(spread) == Approx(0.1));
}

TEST_CASE("Amdahl and USL fits recover the parameters of synthetic curves", "[models][fit]") {
  std::vector<speedup_point> amdahl;
  std::vector<speedup_point> usl;
  for (double p : {1.0, 2.0, 4.0, 8.0, 16.0, 32.0}) {
    amdahl.push_back({p, amdahl_speedup(0.1, p)});
    usl.push_back({p, usl_speedup(0.05, 0.002, p)});
  }
  const amdahl_fit a = fit_amdahl(amdahl);
  CHECK(a.serial_fraction == Approx(0.1).margin(1e-4));
  CHECK(a.rms_error < 1e-3);
  const usl_fit u = fit_usl(usl);
  CHECK(u.sigma == Approx(0.05).margin(1e-6));
  CHECK(u.kappa == Approx(0.002).margin(1e-8));
  CHECK(u.peak_workers == Approx(std::sqrt(0.95 / 0.002)).epsilon(1e-6));
  // Perfect scaling: no serial fraction, no contention, no peak.
  std::vector<speedup_point> linear;
  for (double p : {1.0, 2.0, 4.0}) linear.push_back({p, p});
  CHECK(fit_amdahl(linear).serial_fraction < 1e-3);
  CHECK(fit_usl(linear).sigma == Approx(0).margin(1e-9));
  CHECK(fit_usl(linear).peak_workers == 0);
  // A plateau at 2 (two cores) reads as a large serial fraction: the fits do not know the cores.
  std::vector<speedup_point> plateau{{1, 1}, {2, 2}, {4, 2}, {8, 2}};
  CHECK(fit_amdahl(plateau).serial_fraction > 0.2);
  CHECK(gustafson_speedup(0.1, 10) == Approx(9.1));
}

TEST_CASE("simulator: io requests queue at the service for its CPU, one per service thread",
          "[models][simulate]") {
  // Ten requests of wait 100 issued at once by one non-blocking worker; the service spends 10 on
  // each. One service thread: the k-th request waits 10·k behind the others, so the last reply
  // comes at 90 + 100. Two threads halve the queue; no probed CPU, no queue.
  std::vector<task> ts(10, task{.wait_ns = 100, .io = io_endpoint{.port = 1}});
  for (std::uint32_t i = 0; i < ts.size(); ++i) ts[i].id = i;
  REQUIRE(ts[0].is_io());
  sim_config c = cfg(placement::static_blocks, 1, 1, wait_mode::nonblocking);
  CHECK(simulate(ts, c).makespan_ns == 100);
  c.io_service_cpu_ns = 10;
  c.io_service_threads = 1;
  const sim_result one = simulate(ts, c);
  CHECK(one.makespan_ns == 190);
  for (std::size_t i = 0; i < ts.size(); ++i) {
    CHECK(one.timeline[i].end_ns == 100 + 10 * static_cast<std::int64_t>(i));
  }
  c.io_service_threads = 2;
  CHECK(simulate(ts, c).makespan_ns == 140);
  // Blocking workers, one request each at a time: two workers send two at once, the second of
  // each pair waits 10, and each worker's next request finds the service free again.
  sim_config b = cfg(placement::static_blocks, 2, 2);
  b.io_service_cpu_ns = 10;
  CHECK(simulate(ts, b).makespan_ns == 5 * 100 + 10);
  // A timer task (not io) never queues.
  std::vector<task> timers(10, task{.wait_ns = 100});
  for (std::uint32_t i = 0; i < timers.size(); ++i) timers[i].id = i;
  CHECK(simulate(timers, c).makespan_ns == 100);
}
