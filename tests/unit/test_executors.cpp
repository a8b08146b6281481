// Every executor of every lesson (lessons/registry): verified results for every workload and
// distribution, P = 1 … 2 × cores, N = 0, 1, N < P and N > P; a thrown fault is reported while
// every other task completes.
#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <set>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>

#include "lessons/registry.hpp"
#include "models/check.hpp"
#include "models/probe.hpp"
#include "support/sanitized.hpp"
#include "support/task_sets.hpp"
#include "workloads/calibration.hpp"
#include "workloads/verify.hpp"

using namespace clab;

namespace {

using testing::machine;

std::vector<task> tasks_of(std::size_t n, workload w, distribution d, double us) {
  return testing::tasks_of(n, w, d, us, 11);
}

/// The P values a verification test runs an executor at: 1 to 2 × cores. An executor that starts
/// a worker per task ignores P, so it gets the two ends only (one worker, and more than cores and
/// tasks); under a sanitizer every executor gets those two ends, half the grid or less.
std::vector<int> worker_counts_for(const executor& e) {
  const int max_p = 2 * machine().cores;
  if (testing::k_sanitized || e.plan.workers == worker_rule::one_per_task) return {1, max_p};
  std::vector<int> all;
  for (int p = 1; p <= max_p; ++p) all.push_back(p);
  return all;
}

}  // namespace

TEST_CASE("every executor produces verified results", "[executors][00][01]") {
  // Under a sanitizer two distributions, the even one and the most uneven: the others take the
  // same code paths with other lengths, and the release stage runs all four (this test was a
  // fifth of the sanitizer stages' time).
  const std::vector<distribution> dists =
      testing::k_sanitized ? std::vector{distribution::fixed, distribution::bimodal}
                           : std::vector{distribution::fixed, distribution::uniform,
                                         distribution::exp, distribution::bimodal};
  for (const executor* e : all_executors()) {
    for (workload w : {workload::cpu, workload::wait, workload::mixed}) {
      for (distribution d : dists) {
        for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{3}, std::size_t{37}}) {
          const auto ts = tasks_of(n, w, d, 30);
          const auto ref = reference_checksums(ts);
          for (int p : worker_counts_for(*e)) {
            CAPTURE(e->name, to_string(w), to_string(d), n, p);
            const run_result r = measure(*e, ts, {.workers = p});
            const verification v = verify(ts, r, ref);
            INFO((v.problems.empty() ? std::string() : v.problems.front()));
            REQUIRE(v.ok);
            CHECK(v.completed == n);
            CHECK(r.failed.empty());
            CHECK(r.workers_used == workers_used(e->plan, p, n));
            std::set<std::int32_t> workers;
            for (const task_record& rec : r.records) {
              CHECK(rec.start_ns >= 0);
              CHECK(rec.end_ns >= rec.start_ns);
              CHECK(rec.end_ns <= r.makespan_ns);
              workers.insert(rec.worker);
            }
            if (n > 0) {
              CHECK(*workers.begin() >= 0);
              CHECK(*workers.rbegin() < r.workers_used);
            }
          }
        }
      }
    }
  }
}

TEST_CASE("a thrown fault fails its task only, the others complete", "[executors][00][01][fault]") {
  for (const executor* e : all_executors()) {
    for (std::uint32_t bad : {0U, 5U, 11U}) {
      CAPTURE(e->name, bad);
      auto ts = tasks_of(12, workload::mixed, distribution::uniform, 50);
      ts[bad].inject = fault::throw_exception;
      const auto ref = reference_checksums(ts);
      const run_result r = measure(*e, ts, {.workers = 3});
      const verification v = verify(ts, r, ref);
      CHECK(v.ok);
      CHECK(v.completed == 11);
      REQUIRE(r.failed.size() == 1);
      CHECK(r.failed[0].id == bad);
      CHECK_THAT(r.failed[0].cause, Catch::Contains("task " + std::to_string(bad)));
    }
  }
}

TEST_CASE("thousands of tiny tasks", "[executors][00][01]") {
  for (const executor* e : all_executors()) {
    CAPTURE(e->name);
    // Under a sanitizer every hand-off is instrumented and a thread or process per task costs a
    // sanitized start each (a fork of an ASan process copies its shadow's page tables): 500 tasks
    // there (250 for one worker per task), 2000 in the release stage.
    const bool one_each = e->plan.workers == worker_rule::one_per_task;
    const std::size_t n = !testing::k_sanitized ? 2000 : one_each ? 250 : 500;
    const auto ts = tasks_of(n, workload::cpu, distribution::exp, 1);
    const auto ref = reference_checksums(ts);
    const run_result r = measure(*e, ts, {.workers = 2 * machine().cores});
    CHECK(verify(ts, r, ref).ok);
  }
}

TEST_CASE("lesson 07's ready queue: coroutines start in task order, coro-priority longest first",
          "[executors][07][priority]") {
  // All CPU, one thread: every coroutine is spawned (ready) before the first runs, so the order
  // of the start times is the ready queue's order: task order (FIFO), or the CPU part's length,
  // longest first, equal lengths in task order.
  const auto ts = tasks_of(40, workload::cpu, distribution::uniform, 20);
  const auto ref = reference_checksums(ts);
  auto start_order = [&](const char* name) {
    const executor* e = find_executor(name);
    REQUIRE(e != nullptr);
    const run_result r = measure(*e, ts, {.workers = 1});
    REQUIRE(verify(ts, r, ref).ok);
    std::vector<task_record> recs = r.records;
    std::stable_sort(recs.begin(), recs.end(), [](const task_record& a, const task_record& b) {
      return a.start_ns < b.start_ns;
    });
    std::vector<std::uint32_t> ids;
    for (const task_record& rec : recs) ids.push_back(rec.id);
    return ids;
  };
  const auto fifo = start_order("coroutines");
  for (std::uint32_t k = 0; k < fifo.size(); ++k) CHECK(fifo[k] == k);
  const auto keyed = start_order("coro-priority");
  REQUIRE(keyed.size() == ts.size());
  for (std::size_t k = 1; k < keyed.size(); ++k) {
    const task& before = ts[keyed[k - 1]];
    const task& after = ts[keyed[k]];
    CAPTURE(k, before.id, before.cpu_ns, after.id, after.cpu_ns);
    CHECK(
        (before.cpu_ns > after.cpu_ns || (before.cpu_ns == after.cpu_ns && before.id < after.id)));
  }
}

TEST_CASE("the registry names each executor once, under its lesson", "[executors]") {
  std::set<std::string_view> names;
  for (const executor* e : all_executors()) {
    CHECK(names.insert(e->name).second);
    CHECK(find_executor(e->name) == e);
    CHECK(e->lesson.size() == 2);
    CHECK(e->run != nullptr);
    CHECK_FALSE(e->summary.empty());
  }
  CHECK(find_executor("no-such-executor") == nullptr);
}

TEST_CASE("the executors that run dependent tasks are serial and lesson 07's",
          "[executors][deps]") {
  // The lesson CLI names these in its one-line refusal of --deps (lesson_cli.cpp,
  // k_deps_executors): a new one must be added there too.
  std::string names;
  for (const executor* e : all_executors()) {
    if (e->supports_deps) names += (names.empty() ? "" : ", ") + std::string(e->name);
  }
  CHECK(names == "serial, coroutines, coro-priority");
}

namespace {

std::size_t count_cancelled(const run_result& r) {
  return static_cast<std::size_t>(
      std::count_if(r.failed.begin(), r.failed.end(),
                    [](const task_failure& f) { return f.cause == k_cancelled; }));
}

}  // namespace

TEST_CASE("a stop requested before the run starts no task, and each is reported cancelled",
          "[executors][cancel]") {
  for (const executor* e : all_executors()) {
    CAPTURE(e->name);
    const auto ts = tasks_of(9, workload::wait, distribution::fixed, 1000);
    std::stop_source stop;
    stop.request_stop();
    const run_result r = measure(*e, ts, {.workers = 2, .stop = stop.get_token()});
    CHECK(r.records.empty());
    CHECK(count_cancelled(r) == ts.size());
    CHECK(r.stopped);
    CHECK(verify(ts, r, reference_checksums(ts)).ok);
  }
}

TEST_CASE("cancelling mid-run: started tasks finish, the rest are cancelled, none is lost",
          "[executors][cancel]") {
  for (const executor* e : all_executors()) {
    CAPTURE(e->name);
    // 40 waits of 5 ms on 2 workers, stopped at 25 ms (100 ms under a sanitizer, where asio's
    // threads once had not started by 10 ms). How many tasks can have started is bounded by when
    // the stop really came, measured, not by when it was asked for: a loaded machine may wake the
    // canceller late, and the bound moves with it.
    // An event loop overlaps every wait, so for it the waits are spread instead (0, 5, 10, …
    // 195 ms): by the stop only the tasks whose wait had ended can have completed.
    const bool overlaps = e->plan.waits == wait_mode::nonblocking;
    auto ts = tasks_of(40, workload::wait, distribution::fixed, 5000);
    // Under TSan each of our fibers costs milliseconds to create (TSan's own fiber state): there
    // the waits are spread 10 ms apart and the stop comes at 250 ms, past the 40 creations.
    const bool slow_start = overlaps && testing::k_sanitized;
    const std::int64_t spacing_ns = slow_start ? 10'000'000 : 5'000'000;
    if (overlaps) {
      for (task& t : ts) t.wait_ns = std::int64_t{t.id} * spacing_ns;
    }
    const auto stop_after = std::chrono::milliseconds(slow_start             ? 250
                                                      : testing::k_sanitized ? 100
                                                                             : 25);
    // A machine loaded enough can keep every worker from starting a task by the stop; then the
    // run is tried again (at most three times) rather than the check weakened.
    for (int attempt = 1; attempt <= 3; ++attempt) {
      CAPTURE(attempt);
      std::stop_source stop;
      const auto origin = run_clock::now();  // at or before the run's own origin
      std::int64_t stopped_at_ns = 0;
      std::jthread canceller([&] {
        std::this_thread::sleep_for(stop_after);
        stopped_at_ns = ns_since(origin);
        stop.request_stop();
      });
      const run_result r = measure(*e, ts, {.workers = 2, .stop = stop.get_token()});
      canceller.join();
      const verification v = verify(ts, r, reference_checksums(ts));
      INFO((v.problems.empty() ? std::string() : v.problems.front()));
      CHECK(v.ok);
      CHECK(r.records.size() + count_cancelled(r) == ts.size());
      if (e->plan.workers != worker_rule::requested && e->plan.workers != worker_rule::one) break;
      // Each blocking worker runs its tasks one after another, each at least 5 ms: by the stop it
      // can have started at most stopped_at / 5 ms + 1 of them. A loop can have completed only
      // those whose wait had ended (one more: the stop is requested just after it is timed).
      const auto most = overlaps ? static_cast<std::size_t>(stopped_at_ns / spacing_ns + 2)
                                 : static_cast<std::size_t>(r.workers_used) *
                                       static_cast<std::size_t>(stopped_at_ns / 5'000'000 + 1);
      CAPTURE(stopped_at_ns, most);
      CHECK(r.records.size() <= most);
      CHECK(count_cancelled(r) >= ts.size() - std::min(ts.size(), most));
      if (r.records.empty() && attempt < 3) continue;  // nothing had started: try again
      CHECK(r.records.size() >= 1);                    // a task running when the stop came finished
      break;
    }
  }
}

TEST_CASE("stop at the first error: the failing task is reported, later ones are cancelled",
          "[executors][errors]") {
  for (const executor* e : all_executors()) {
    CAPTURE(e->name);
    // 5 ms waits: the stop must reach the workers before they finish the next task. With 1 ms
    // tasks under TSan on a loaded machine oneTBB had once started all but three.
    auto ts = tasks_of(12, workload::wait, distribution::fixed, 5000);
    // Executors that overlap waits start all twelve at once: spread, task i waits i + 1 times
    // 10 ms (20 ms under a sanitizer), so task 2 fails well before any later task's wait ends
    // (10 ms was once too little for `loops` under ASan at -O1, and 5 ms for coroutines-mn and
    // boost-fiber in a release run beside a build: task 3 completed).
    const bool overlaps = e->plan.waits == wait_mode::nonblocking;
    if (overlaps) {
      const std::int64_t spacing_ns = testing::k_sanitized ? 20'000'000 : 10'000'000;
      for (task& t : ts) t.wait_ns = std::int64_t{t.id + 1} * spacing_ns;
    }
    ts[2].inject = fault::throw_exception;
    const auto ref = reference_checksums(ts);
    const run_result first =
        measure(*e, ts, {.workers = 2, .on_error = error_policy::stop_at_first});
    CHECK(verify(ts, first, ref).ok);
    CHECK(first.stopped ==
          (count_cancelled(first) > 0));  // a thread per task starts them all at once
    const auto real = std::count_if(first.failed.begin(), first.failed.end(),
                                    [](const task_failure& f) { return f.cause != k_cancelled; });
    CHECK(real == 1);  // task 2 itself, with its exception
    // One worker: tasks 3 to 11 are cancelled, exactly. Waits that overlap on several threads:
    // those too, and task 0 or 1 may be as well, when its thread started late enough under load
    // (a loop arms its timers when its thread starts) that task 2 failed first.
    if (e->plan.workers == worker_rule::one) CHECK(count_cancelled(first) == 9);
    if (overlaps && e->plan.workers != worker_rule::one) {
      CHECK(count_cancelled(first) >= 9);
      for (const task_failure& f : first.failed) {
        if (f.cause == k_cancelled) continue;
        CHECK(f.id == 2);
      }
      for (const task_record& rec : first.records) CHECK(rec.id < 2);
    }
    // Two blocking workers reach task 2 after about one task each: most of the twelve never start.
    if (e->plan.workers == worker_rule::requested && !overlaps) CHECK(count_cancelled(first) >= 4);
    // The default, collect_all: every other task still runs, like return_exceptions=True.
    const run_result all = measure(*e, ts, {.workers = 2});
    CHECK(verify(ts, all, ref).ok);
    CHECK_FALSE(all.stopped);
    CHECK(all.records.size() == 11);
    CHECK(count_cancelled(all) == 0);
  }
}

TEST_CASE("probe: a pool's hand-off cost is measured once and feeds its prediction",
          "[executors][probe]") {
  const executor* pool = find_executor("stealing");
  REQUIRE(pool != nullptr);
  REQUIRE(pool->plan.per_task == unit_cost::probed);
  const std::int64_t once = probe_per_task_ns(*pool);
  // A hand-off is never free (a queue operation at least), but the probe is a difference of two
  // timed runs, clamped at 0: under TSan on a loaded machine it once read 0.
  if (testing::k_sanitized) {
    CHECK(once >= 0);
  } else {
    CHECK(once > 0);
  }
  CHECK(probe_per_task_ns(*pool) == once);  // remembered, not measured again
  const calibration& m = machine();
  const std::vector<task> ts = tasks_of(8, workload::cpu, distribution::fixed, 100);
  const prediction p = predict(*pool, ts, 2, m);
  CHECK(p.config.per_task_ns == once);
  CHECK(p.config.run_end_ns == probe_run_end_ns(*pool, 2, ts.size()));  // remembered too
}

TEST_CASE("probe: a caller that sleeps on each future is probed on tasks as long as the run's",
          "[executors][probe]") {
  const executor* naive = find_executor("naive");
  REQUIRE(naive != nullptr);
  REQUIRE(naive->plan.caller_waits_each);
  // The rule compares the task spacing with the machine's wake-up latency. A loaded machine under
  // TSan once measured a wake-up of over 50 µs, so that 100 µs tasks fell below the line: the rule
  // is tested on a calibration whose wake-up is set, 5 µs (this VM's order when quiet).
  calibration m = machine();
  m.wakeup_ns = 5'000;
  CHECK_THROWS_AS(probe_executor(*naive, -1), std::invalid_argument);
  CHECK_THROWS_AS(probe_executor(*naive, 1000, 0.0), std::invalid_argument);  // no kernel speed
  // 100 µs tasks on one worker come far further apart than a wake-up: the probe runs such tasks.
  const std::vector<task> ts = tasks_of(8, workload::cpu, distribution::fixed, 100);
  const probe_result paced = probe_executor(*naive, 100'000, m.ns_per_iteration);
  CHECK(probe_executor(*naive, 100'000, m.ns_per_iteration).per_task_ns == paced.per_task_ns);
  CHECK(predict(*naive, ts, 1, m).config.per_task_ns == paced.per_task_ns);
  // 1 µs tasks come closer together than that: the empty probe stands.
  const std::vector<task> small = tasks_of(8, workload::cpu, distribution::fixed, 1);
  CHECK(predict(*naive, small, 1, m).config.per_task_ns == probe_per_task_ns(*naive));
  forget_probes();
}

TEST_CASE("probe: a dispatching launcher's hand-off on one core widens the range",
          "[executors][probe]") {
  const executor* pool = find_executor("prefork");
  REQUIRE(pool != nullptr);
  REQUIRE(pool->plan.launcher_dispatches);
  const int cores = available_cores();
  const probe_result near = probe_executor_on_one_core(*pool);
  CHECK(near.per_task_ns > 0);        // two pipe writes and two reads at least
  CHECK(available_cores() == cores);  // the calling thread may use all its CPUs again
  const calibration& m = machine();
  const std::vector<task> ts = tasks_of(64, workload::cpu, distribution::fixed, 10);
  const prediction p = predict(*pool, ts, 2, m);
  if (cores > 1) {
    CHECK(p.near_handoff_ns == near.per_task_ns);  // remembered, not measured again
    // the run as it would go with those hand-offs lies within the range
    sim_config alt = configure(pool->plan, 2, ts.size(), m, near.per_task_ns, near.caller_cpu_ns,
                               near.worker_cpu_ns);
    alt.run_end_ns = p.config.run_end_ns;
    const std::int64_t t = simulate(ts, alt).makespan_ns;
    CHECK(p.low_ns <= t);
    CHECK(t <= p.high_ns);
  } else {
    CHECK(p.near_handoff_ns == 0);  // one core: there is no other placement
  }
  forget_probes();
}

TEST_CASE("probe: workers' own CPU and the end of a run, measured on the executor",
          "[executors][probe]") {
  const executor* forked = find_executor("fork");
  const executor* threads = find_executor("per-task");
  const executor* pool = find_executor("prefork");
  REQUIRE((forked != nullptr && threads != nullptr && pool != nullptr));
  REQUIRE(forked->plan.per_task == unit_cost::probed_worker_cpu);
  // A forked child always costs CPU of its own (at least its exit); so does a new thread. Both
  // are reaped or joined before the executor returns, so the probe sees them.
  CHECK(probe_executor(*forked).worker_cpu_ns > 0);
  CHECK(probe_executor(*threads).worker_cpu_ns > 0);
  // The launcher's share is its own thread's CPU, which cannot exceed the wall time it took
  // (half again as much allowed: both are medians of differences between noisy runs).
  const probe_result f = probe_executor(*forked);
  CHECK(f.caller_cpu_ns <= f.per_task_ns + f.per_task_ns / 2);
  // Closing a pool's pipes and reaping its processes takes time after the last task ends.
  CHECK(probe_run_end_ns(*pool, 2, 8) > 0);
  forget_probes();
}
