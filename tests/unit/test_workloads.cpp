// Workloads: generators (distributions, determinism), the kernel, partitions and verification.
#include <algorithm>
#include <catch2/catch.hpp>
#include <numeric>
#include <set>

#include "lessons/common/print.hpp"
#include "workloads/calibration.hpp"
#include "workloads/execute.hpp"
#include "workloads/kernel.hpp"
#include "workloads/run.hpp"
#include "workloads/task.hpp"
#include "workloads/verify.hpp"

using namespace clab;

namespace {

task_set_spec spec_of(std::size_t n, workload w, distribution d, double us = 1000,
                      std::uint64_t seed = 7) {
  task_set_spec s;
  s.tasks = n;
  s.kind = w;
  s.dist = d;
  s.task_us = us;
  s.seed = seed;
  return s;
}

std::vector<std::int64_t> durations(const std::vector<task>& ts) {
  std::vector<std::int64_t> d;
  for (const task& t : ts) d.push_back(t.duration_ns());
  return d;
}

}  // namespace

TEST_CASE("fixed durations: every task lasts exactly the mean", "[workloads][task]") {
  const auto ts = make_task_set(spec_of(10, workload::cpu, distribution::fixed, 250), 2.0);
  REQUIRE(ts.size() == 10);
  for (std::size_t i = 0; i < ts.size(); ++i) {
    CHECK(ts[i].id == i);
    CHECK(ts[i].cpu_ns == 250'000);
    CHECK(ts[i].wait_ns == 0);
    CHECK(ts[i].cpu_iterations == 125'000);  // 250 µs at 2 ns per iteration
  }
}

TEST_CASE("workloads split time into wait and CPU", "[workloads][task]") {
  const auto wait = make_task_set(spec_of(5, workload::wait, distribution::fixed, 100), 1.0);
  for (const task& t : wait) {
    CHECK(t.wait_ns == 100'000);
    CHECK(t.cpu_ns == 0);
    CHECK(t.cpu_iterations == 0);
  }
  const auto mixed = make_task_set(spec_of(5, workload::mixed, distribution::exp, 100), 1.0);
  for (const task& t : mixed) {
    CHECK(t.wait_ns + t.cpu_ns == t.duration_ns());
    CHECK(std::abs(t.wait_ns - t.cpu_ns) <= 1);
  }
  // io: all wait, in whole microseconds (the service's unit), each task carrying the service.
  CHECK_THROWS_AS(make_task_set(spec_of(5, workload::io, distribution::fixed), 1.0),
                  std::invalid_argument);
  task_set_spec io = spec_of(50, workload::io, distribution::exp, 100);
  io.service = io_endpoint{0x7F000001, 4321};
  for (const task& t : make_task_set(io, 1.0)) {
    CHECK(t.is_io());
    CHECK(t.io == *io.service);
    CHECK(t.cpu_ns == 0);
    CHECK(t.wait_ns % 1000 == 0);
  }
  for (const task& t : wait) CHECK_FALSE(t.is_io());
}

TEST_CASE("the same seed gives the same task set, another seed another", "[workloads][task]") {
  for (distribution d : {distribution::uniform, distribution::exp, distribution::bimodal}) {
    const auto a = make_task_set(spec_of(64, workload::cpu, d, 1000, 42), 1.5);
    const auto b = make_task_set(spec_of(64, workload::cpu, d, 1000, 42), 1.5);
    const auto c = make_task_set(spec_of(64, workload::cpu, d, 1000, 43), 1.5);
    CHECK(durations(a) == durations(b));
    CHECK(durations(a) != durations(c));
    for (std::size_t i = 0; i < a.size(); ++i) CHECK(a[i].seed == b[i].seed);
  }
}

TEST_CASE("distributions have the documented shape", "[workloads][task]") {
  constexpr std::size_t n = 20'000;
  constexpr double mean_ns = 1'000'000;
  auto mean_of = [](const std::vector<task>& ts) {
    return static_cast<double>(totals(ts).sum_ns) / static_cast<double>(ts.size());
  };
  SECTION("uniform on [0, 2T]") {
    const auto ts = make_task_set(spec_of(n, workload::cpu, distribution::uniform), 1.0);
    for (const task& t : ts) REQUIRE((t.cpu_ns >= 0 && t.cpu_ns <= 2'000'000));
    CHECK(mean_of(ts) == Approx(mean_ns).epsilon(0.02));
  }
  SECTION("exponential with mean T: a long tail, about 37% above the mean") {
    const auto ts = make_task_set(spec_of(n, workload::cpu, distribution::exp), 1.0);
    CHECK(mean_of(ts) == Approx(mean_ns).epsilon(0.03));
    const auto above =
        std::count_if(ts.begin(), ts.end(), [](const task& t) { return t.cpu_ns > 1'000'000; });
    CHECK(static_cast<double>(above) / n == Approx(std::exp(-1.0)).epsilon(0.05));
    CHECK(totals(ts).max_ns > 5'000'000);
  }
  SECTION("bimodal: one in ten is ten times as long, and the sum is exactly N·T") {
    for (std::size_t tasks : {1U, 2U, 9U, 10U, 16U, 100U}) {
      const auto ts = make_task_set(spec_of(tasks, workload::cpu, distribution::bimodal), 1.0);
      const auto [lo, hi] = std::minmax_element(
          ts.begin(), ts.end(), [](const task& a, const task& b) { return a.cpu_ns < b.cpu_ns; });
      const auto n_long = std::count_if(ts.begin(), ts.end(),
                                        [&](const task& t) { return t.cpu_ns == hi->cpu_ns; });
      CHECK(n_long == static_cast<long>(std::max<std::size_t>(1, (tasks + 5) / 10)));
      if (tasks > 1) {
        CHECK(static_cast<double>(hi->cpu_ns) ==
              Approx(10.0 * static_cast<double>(lo->cpu_ns)).margin(10));
      }
      CHECK(static_cast<double>(totals(ts).sum_ns) ==
            Approx(static_cast<double>(tasks) * mean_ns).margin(static_cast<double>(tasks)));
    }
  }
}

TEST_CASE("names parse and print both ways", "[workloads][task]") {
  for (const char* n : {"cpu", "wait", "io", "mixed"})
    CHECK(to_string(parse_workload(n).value()) == n);
  for (const char* n : {"fixed", "uniform", "exp", "bimodal"}) {
    CHECK(to_string(parse_distribution(n).value()) == n);
  }
  for (const char* n : {"throw", "abort", "segv", "hang"})
    CHECK(to_string(parse_fault(n).value()) == n);
  CHECK_FALSE(parse_workload("gpu").has_value());
  CHECK_FALSE(parse_distribution("normal").has_value());
}

TEST_CASE("the kernel is deterministic and depends on seed and length", "[workloads][kernel]") {
  CHECK(spin(1, 1000) == spin(1, 1000));
  CHECK(spin(1, 1000) != spin(2, 1000));
  CHECK(spin(1, 1000) != spin(1, 1001));
  CHECK(spin(0, 10) == spin(1, 10));  // zero is bumped off xorshift's fixed point
  std::set<std::uint64_t> distinct;
  for (std::uint64_t s = 0; s < 100; ++s) distinct.insert(spin(splitmix64(s), 64));
  CHECK(distinct.size() == 100);
}

TEST_CASE("calibration measures positive, plausible costs", "[workloads][calibration]") {
  const calibration c = calibrate();
  CHECK(c.cores == available_cores());
  CHECK(c.cores >= 1);
  CHECK(c.ns_per_iteration > 0.05);  // no machine runs a dependent multiply chain faster
  CHECK(c.ns_per_iteration < 1000);
  for (std::int64_t o : c.sleep_overshoot.overshoot_ns) CHECK(o >= 0);
  CHECK(c.thread_start_ns > 0);
  // Two threads pinned to one CPU must take turns, every few ms at most on any Linux scheduler
  // (CFS or EEVDF); pinning is allowed inside our own affinity mask, so the slice is measured.
  // Above 1 µs: other load on the cores cuts the turns short (8 µs seen under TSan at load 15).
  CHECK(c.time_slice_ns > 1'000);
  CHECK(c.time_slice_ns < 100'000'000);
  CHECK(c.time_slice_long_ns >= c.time_slice_ns);  // the 90th percentile of the same turns
  CHECK(c.time_slice_long_ns < 100'000'000);
  // Two threads queued on one core, free to move: on two cores or more the load balancer moves
  // one within the 200 ms cap (development machine: 11-21 ms); on one core there is no delay.
  if (c.cores >= 2) CHECK(c.balance_delay_ns > 0);
  CHECK(c.balance_delay_ns <= 200'000'000);
  CHECK(c.process_start_ns > c.thread_start_ns / 10);  // a fork is no cheaper than a thread
  CHECK(c.process_start_ns < 1'000'000'000);
  CHECK(c.wakeup_ns > 0);  // a blocked thread never runs the instant its pipe is written
  CHECK(c.wakeup_ns < 100'000'000);
}

TEST_CASE("the overshoot curve interpolates in log(length) and holds flat past its ends",
          "[workloads][calibration]") {
  const overshoot_curve o{{50'000, 70'000, 110'000}};
  CHECK(o.at(0) == 0);
  CHECK(o.at(1'000) == 50'000);  // below 100 µs: the 100 µs value
  CHECK(o.at(100'000) == 50'000);
  CHECK(o.at(1'000'000) == 70'000);
  CHECK(o.at(10'000'000) == 110'000);
  CHECK(o.at(1'000'000'000) == 110'000);  // past 10 ms: the 10 ms value
  CHECK(o.at(316'228) == 60'000);         // half a decade above 100 µs: half way
  CHECK(o.at(3'162'278) == 90'000);
  CHECK(overshoot_curve::flat(7).at(5'000'000) == 7);
}

TEST_CASE("block_range partitions n tasks into P blocks differing by at most one",
          "[workloads][run]") {
  for (std::size_t n : {0U, 1U, 5U, 16U, 17U, 1000U}) {
    for (int p : {1, 2, 3, 4, 7, 64}) {
      std::size_t next = 0;
      std::size_t smallest = n;
      std::size_t largest = 0;
      for (int k = 0; k < p; ++k) {
        const auto [b, e] = block_range(n, p, k);
        REQUIRE(b == next);  // contiguous, in order, no gap, no overlap
        next = e;
        smallest = std::min(smallest, e - b);
        largest = std::max(largest, e - b);
      }
      CHECK(next == n);
      CHECK(largest - smallest <= 1);
    }
  }
}

TEST_CASE("workers_used follows the executor's rule", "[workloads][run]") {
  CHECK(workers_used({.workers = worker_rule::one}, 8, 5) == 1);
  CHECK(workers_used({.workers = worker_rule::one}, 8, 0) == 0);
  CHECK(workers_used({.workers = worker_rule::requested}, 8, 5) == 5);
  CHECK(workers_used({.workers = worker_rule::requested}, 4, 50) == 4);
  CHECK(workers_used({.workers = worker_rule::one_per_task}, 4, 50) == 50);
}

TEST_CASE("verification accepts a correct run and names every problem", "[workloads][verify]") {
  const auto ts = make_task_set(spec_of(4, workload::cpu, distribution::fixed, 5), 1.0);
  const auto ref = reference_checksums(ts);
  run_result good;
  good.workers_used = 1;
  for (const task& t : ts) good.records.push_back({.id = t.id, .checksum = ref[t.id]});
  const verification ok = verify(ts, good, ref);
  CHECK(ok.ok);
  CHECK(ok.completed == 4);
  CHECK(ok.problems.empty());

  SECTION("a wrong checksum") {
    run_result r = good;
    r.records[2].checksum ^= 1U;
    const verification v = verify(ts, r, ref);
    CHECK_FALSE(v.ok);
    REQUIRE(v.problems.size() == 1);
    CHECK_THAT(v.problems[0], Catch::Contains("task 2") && Catch::Contains("differs"));
  }
  SECTION("a task run twice") {
    run_result r = good;
    r.records.push_back(r.records[1]);
    const verification v = verify(ts, r, ref);
    CHECK_FALSE(v.ok);
    CHECK_THAT(v.problems.at(0), Catch::Contains("task 1 reported twice"));
  }
  SECTION("a task that never ran") {
    run_result r = good;
    r.records.pop_back();
    const verification v = verify(ts, r, ref);
    CHECK_FALSE(v.ok);
    CHECK_THAT(v.problems.at(0), Catch::Contains("task 3 never ran"));
  }
  SECTION("a record for a task that does not exist") {
    run_result r = good;
    r.records.push_back({.id = 99, .checksum = 0});
    CHECK_THAT(verify(ts, r, ref).problems.at(0), Catch::Contains("unknown task 99"));
  }
  SECTION("a failure reported for a task counts it once, reported and completed is twice") {
    auto faulty = ts;
    faulty[3].inject = fault::throw_exception;
    faulty[0].inject = fault::throw_exception;
    run_result r = good;
    r.records.pop_back();
    r.failed.push_back({.id = 3, .cause = "exception: x"});
    const verification v = verify(faulty, r, ref);
    CHECK(v.ok);
    CHECK(v.failed == 1);
    r.failed.push_back({.id = 0, .cause = "exception: y"});
    CHECK_FALSE(verify(faulty, r, ref).ok);
  }
  SECTION("an executor that drops a task and calls it failed is caught") {
    run_result r = good;
    r.records.pop_back();
    r.failed.push_back({.id = 3, .cause = "lost"});
    const verification v = verify(ts, r, ref);
    CHECK_FALSE(v.ok);
    CHECK_THAT(v.problems.at(0), Catch::Contains("task 3 failed without an injected fault"));
  }
  SECTION("a skipped wait, a time outside the run, and an unknown worker are caught") {
    auto waits = ts;
    waits[1].wait_ns = 1'000'000;
    run_result r = good;
    r.makespan_ns = 2'000'000;
    r.records[1].end_ns = 500;  // finished in 0.5 µs, though it should have waited 1 ms
    CHECK_THAT(verify(waits, r, ref).problems.at(0), Catch::Contains("the wait was skipped"));
    r = good;
    r.makespan_ns = 100;
    r.records[2].end_ns = 200;
    CHECK_THAT(verify(ts, r, ref).problems.at(0), Catch::Contains("outside the run"));
    r = good;
    r.records[0].worker = 1;
    CHECK_THAT(verify(ts, r, ref).problems.at(0), Catch::Contains("worker 1"));
  }
}

TEST_CASE("compute fires the injected fault, and throw names the task", "[workloads][execute]") {
  auto ts = make_task_set(spec_of(3, workload::cpu, distribution::fixed, 1), 1.0);
  ts[1].inject = fault::throw_exception;
  CHECK(compute(ts[0]) == spin(ts[0].seed, ts[0].cpu_iterations));
  try {
    (void)compute(ts[1]);
    FAIL("compute() should have thrown");
  } catch (const task_error& e) {
    CHECK(e.id() == 1);
    CHECK_THAT(e.what(), Catch::Contains("task 1"));
  }
  result_slots slots(ts.size());
  for (const task& t : ts) slots.run_into(t, run_clock::now(), 0);
  const run_result r = std::move(slots).collect(1);
  CHECK(r.records.size() == 2);
  REQUIRE(r.failed.size() == 1);
  CHECK(r.failed[0].id == 1);
  CHECK_THAT(r.failed[0].cause, Catch::StartsWith("exception: injected"));
}

TEST_CASE("durations print with three significant digits in the unit that fits",
          "[lessons][print]") {
  CHECK(format_ns(812) == "812 ns");
  CHECK(format_ns(57'300) == "57.3 µs");
  CHECK(format_ns(999'600) == "1.00 ms");  // rounds up into the next unit, not "1000 µs"
  CHECK(format_ns(81'400'000) == "81.4 ms");
  CHECK(format_ns(1'234'000'000) == "1.23 s");
  CHECK(format_ns(0) == "0 ns");
  CHECK(pad("µs", 4) == "µs  ");  // two columns, though "µ" is two bytes
  CHECK(pad("toolong", 3) == "toolong");
}
