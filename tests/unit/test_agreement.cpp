// Model agreement on wait tasks, which a noisy 2-core machine cannot disturb much: a sleeping
// thread needs no core. Ratios of measured to predicted, medians of repetitions, honest tolerances;
// no absolute time is asserted.
#include <catch2/catch.hpp>

#include "lessons/00_serial/serial.hpp"
#include "lessons/01_threads/threads.hpp"
#include "lessons/05_event_loop/executors.hpp"
#include "models/bounds.hpp"
#include "models/check.hpp"

using namespace clab;

namespace {

checked_run check_waits(const executor& e, std::size_t n, double us, int workers, distribution d,
                        std::int64_t* sum_ns = nullptr) {
  const calibration m = calibrate();
  const auto ts =
      make_task_set({.tasks = n, .kind = workload::wait, .dist = d, .task_us = us, .seed = 3},
                    m.ns_per_iteration);
  if (sum_ns != nullptr) *sum_ns = totals(ts).sum_ns;
  const prediction p = predict(e, ts, workers, m);
  return run_and_check(e, ts, p, {.workers = workers, .repeats = 3, .tolerance = 0.05},
                       reference_checksums(ts));
}

}  // namespace

TEST_CASE("16 waits of 20 ms on 4 threads take ⌈16/4⌉ · 20 ms", "[agreement][01]") {
  const checked_run r = check_waits(static_threads_executor(), 16, 20'000, 4, distribution::fixed);
  REQUIRE(r.verified.ok);
  // The closed form and the simulation agree up to the modelled overheads (thread start,
  // overshoot).
  const double closed_form = static_cast<double>(equal_tasks_makespan(16, 4, 20'000'000));
  CHECK(static_cast<double>(r.makespan_ns) / closed_form == Approx(1.0).epsilon(0.10));
  // Physics: each thread sleeps 4 × 20 ms in a row, so no run can be shorter than that.
  CHECK(static_cast<double>(r.makespan_ns) >= closed_form);
  // The model adds measured overheads (thread start, sleep overshoot), themselves estimates: within
  // 5 % either way, as for every wait workload. The median of three keeps a busy neighbour out.
  CHECK(r.judged.ratio == Approx(1.0).margin(0.05));
}

TEST_CASE("serial waits add up: T = Σ t_i", "[agreement][00]") {
  const checked_run r = check_waits(serial_executor(), 8, 5'000, 1, distribution::exp);
  REQUIRE(r.verified.ok);
  CHECK(r.judged.ratio == Approx(1.0).margin(0.05));
}

TEST_CASE("a thread per task overlaps every wait: T ≈ max t_i, not Σ t_i", "[agreement][01]") {
  const checked_run r = check_waits(thread_per_task_executor(), 32, 20'000, 1, distribution::fixed);
  REQUIRE(r.verified.ok);
  CHECK(r.makespan_ns >= 20'000'000);  // physics: the longest wait
  // All 32 overlap: Σ t_i is 640 ms. (Not "< 30 ms": with four builds beside it on two cores,
  // 32 threads once took 30.8 ms to start, wake and record.)
  CHECK(r.makespan_ns < 640'000'000 / 10);
  // 32 threads wake within microseconds of each other and each must get a core to record its end
  // and exit. With another process holding one of the two cores, this was measured at up to 1.19
  // times the model (which prices thread starts calibrated on a quiet core); quiet, within 1.03.
  CHECK(r.judged.ratio == Approx(1.0).margin(0.25));
}

TEST_CASE("static partition skew: two long waits in one block exceed Graham's greedy bound",
          "[agreement][01]") {
  // 20 waits of 1 ms, the first two 10 ms. On 4 threads the first block holds both long ones:
  // 10 + 10 + 3 × 1 = 23 ms, while any greedy schedule finishes within Σt/P + (1 − 1/P)·max t = 17
  // ms.
  std::vector<task> ts(20);
  for (std::uint32_t i = 0; i < ts.size(); ++i)
    ts[i] = {.id = i, .wait_ns = i < 2 ? 10'000'000 : 1'000'000};
  const calibration m = calibrate();
  const prediction p = predict(static_threads_executor(), ts, 4, m);
  CHECK(p.graham.upper_ns == 17'000'000);
  CHECK(p.simulated.makespan_ns > p.graham.upper_ns);
  const checked_run r =
      run_and_check(static_threads_executor(), ts, p,
                    {.workers = 4, .repeats = 3, .tolerance = 0.05}, reference_checksums(ts));
  REQUIRE(r.verified.ok);
  CHECK(r.judged.ratio == Approx(1.0).margin(0.05));
  CHECK(r.makespan_ns > p.graham.upper_ns);
}

TEST_CASE("one loop overlaps 1000 waits of 10 ms: T ≈ max t_i plus the loop's costs, not Σ t_i",
          "[agreement][05]") {
  std::int64_t sum_ns = 0;
  const checked_run r = check_waits(loop_executor(), 1000, 10'000, 1, distribution::fixed, &sum_ns);
  REQUIRE(r.verified.ok);
  const auto sum = static_cast<double>(sum_ns);
  CHECK(r.makespan_ns >= 10'000'000);                     // physics: the longest wait
  CHECK(static_cast<double>(r.makespan_ns) < sum / 100);  // one thread, yet far from Σ t_i
  // The model adds the loop's probed cost per task and its probed timer lateness. ±10 %, not the
  // verdict's ±5 %: the cost per task (0.3-1 µs, a thousand of them in a 10.5 ms run) is probed a
  // moment before the run, and on this shared machine a neighbour's load during the probe once
  // put the prediction 0.6 ms high (ratio 0.94).
  CHECK(r.judged.ratio == Approx(1.0).margin(0.10));
}

TEST_CASE("a callback that sleeps through its wait stalls the loop: blocking takes Σ t_i",
          "[agreement][05]") {
  std::int64_t sum_ns = 0;
  const checked_run r = check_waits(blocking_executor(), 8, 5'000, 1, distribution::exp, &sum_ns);
  REQUIRE(r.verified.ok);
  CHECK(r.makespan_ns >= sum_ns);  // physics: one sleep after another
  CHECK(r.judged.ratio == Approx(1.0).margin(0.05));
}
