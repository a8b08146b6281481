#include "models/check.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "models/probe.hpp"
#include "workloads/io_exchange.hpp"

namespace clab {

prediction predict(const executor& exec, std::span<const task> tasks, int workers,
                   const calibration& machine, const task_graph* deps) {
  prediction p;
  const bool probed = is_probed(exec.plan.worker_start) || is_probed(exec.plan.per_task);
  // A caller that sleeps on each result in turn is woken by every result that comes later than
  // its way back to sleep (two wake-ups' latency, say), at a cost to the task's worker and to the
  // caller that empty tasks never show. Where results come that far apart, that executor is probed
  // on tasks of the run's mean length, up to 100 µs, where the cost has stopped growing. Closer
  // results find the caller awake or just asleep, in a rhythm of their own (on the development
  // machine 1 µs tasks cost 0.6 to 1.7 µs each, by N, and 10 µs tasks on two workers less than
  // on one), so they keep the empty probe and the verdict shows the difference.
  std::int64_t probe_task_ns = 0;
  if (exec.plan.caller_waits_each && !tasks.empty()) {
    constexpr std::int64_t k_longest_probe_task_ns = 100'000;
    const std::int64_t mean = totals(tasks).sum_ns / static_cast<std::int64_t>(tasks.size());
    const std::int64_t apart = mean / std::max(1, std::min(workers, machine.cores));
    if (apart > 2 * machine.wakeup_ns) probe_task_ns = std::min(k_longest_probe_task_ns, mean);
  }
  const bool parked =
      exec.plan.probe_parked &&
      std::any_of(tasks.begin(), tasks.end(), [](const task& t) { return t.wait_ns > 0; });
  const probe_result probe =
      probed ? probe_executor(exec, probe_task_ns, machine.ns_per_iteration, parked)
             : probe_result{};
  p.config = configure(exec.plan, workers, tasks.size(), machine, probe.per_task_ns,
                       probe.caller_cpu_ns, probe.worker_cpu_ns);
  // An event loop's timers are its own, not a blocking sleep: their lateness is probed on it.
  const auto io = std::find_if(tasks.begin(), tasks.end(), [](const task& t) { return t.is_io(); });
  if (exec.plan.probe_wait_overshoot && io == tasks.end()) {
    p.config.wait_overshoot = probe_wait_overshoot(exec);
  }
  // An io task's wait is a request: the service holds the reply for the wait, and the request
  // takes a round trip around it (connect, send, the service's timer, the reply), probed from
  // this thread on the run's own service. It replaces the timer's lateness for every executor.
  if (io != tasks.end()) {
    const io_costs costs = probe_io_costs(io->io);
    p.config.wait_overshoot = costs.extra;
    p.config.io_zero_wait_ns = p.io_round_trip_ns = costs.zero_wait_ns;
    // Concurrent requests queue at the service for its CPU (one request at a time per service
    // thread): a single-threaded service answers N requests arriving at once no sooner than
    // N × its CPU per request.
    p.config.io_service_cpu_ns = p.io_service_cpu_ns = costs.service_cpu_ns;
    p.config.io_service_threads = std::max(1, costs.service_threads);
    // The client's own share of each round trip is CPU on its worker, not wait: on a loop that
    // runs every request, N requests cost N times it in a row.
    p.config.io_client_cpu_ns = p.io_client_cpu_ns = costs.client_cpu_ns;
  }
  // What the executor does after its last task (joins, reaps) is measured on the executor too. On
  // the development machine: 60–100 µs to join 2–16 threads, 0.3–0.6 ms to close and reap 2–8
  // pool processes, more the more memory this process held when it forked them.
  if (!tasks.empty()) p.config.run_end_ns = probe_run_end_ns(exec, workers, tasks.size());
  // A task injected to throw does its wait and then throws where its CPU part would begin: it
  // computes nothing, and the model knows that before the run. (abort, segv and hang end or stall
  // the run, so no makespan is predicted for them beyond what is printed.)
  p.config.deps = deps;
  std::vector<task> as_run(tasks.begin(), tasks.end());
  for (task& t : as_run) {
    if (t.inject == fault::throw_exception) t.cpu_ns = 0;
  }
  // With a graph, every task below a thrown one fails at once, its predecessor having failed: it
  // neither waits nor computes (ids are a topological order, so one pass finds them all).
  if (deps != nullptr) {
    std::vector<std::uint8_t> doomed(as_run.size(), 0);
    for (std::size_t i = 0; i < as_run.size(); ++i) {
      doomed[i] = as_run[i].inject == fault::throw_exception ? 1 : 0;
      for (const std::uint32_t pred : deps->preds(i)) {
        if (doomed[pred] != 0 && doomed[i] == 0) {
          doomed[i] = 1;
          as_run[i].cpu_ns = 0;
          as_run[i].wait_ns = 0;
        }
      }
    }
  }
  p.simulated = simulate(as_run, p.config);
  p.low_ns = p.high_ns = p.simulated.makespan_ns;
  const auto take_config = [&](const sim_config& other) {
    const std::int64_t t = simulate(as_run, other).makespan_ns;
    p.low_ns = std::min(p.low_ns, t);
    p.high_ns = std::max(p.high_ns, t);
  };
  // A launcher that hands out every task through pipes pays for each hand-off more or less by
  // where the scheduler has put it: sharing a core with the worker it serves, a write wakes the
  // reader on the same core; across cores, it wakes an idle one (development VM, 1 µs tasks on two
  // workers: 8 µs a task with everything on one core, 19–25 µs spread out, and runs land in
  // either). The probe, unpinned, lands in either too, so the range takes both.
  if (exec.plan.launcher_dispatches && probed && machine.cores > 1) {
    const probe_result near = probe_executor_on_one_core(exec);
    p.near_handoff_ns = near.per_task_ns;
    sim_config other = configure(exec.plan, workers, tasks.size(), machine, near.per_task_ns,
                                 near.caller_cpu_ns, near.worker_cpu_ns);
    other.run_end_ns = p.config.run_end_ns;
    other.deps = deps;
    take_config(other);
  }
  if (p.config.time_slice_ns > 0) {
    const std::int64_t s = p.config.time_slice_ns;
    const auto take = [&](std::int64_t slice, std::int64_t balance_delay,
                          bool ties_alternate = true) {
      sim_config other = p.config;
      other.time_slice_ns = slice;
      other.balance_delay_ns = balance_delay;
      other.ties_alternate = ties_alternate;
      take_config(other);
    };
    for (const std::int64_t slice : {std::int64_t{0}, s / 4, s / 2, machine.time_slice_long_ns}) {
      take(slice, 0);
    }
    // Linux's own placement: a queue per core, balanced only after the measured delay. With more
    // workers than cores, always. With no more, only where the workers compute from the moment
    // they start (static blocks; a process pool's first task comes with its fork): two can start
    // on one core, the second made while the launcher still ran on the other, and share it until
    // the balance (development machine, 16 tasks of 5 ms on two workers: static threads read
    // 1.03–1.20 in five lesson runs, prefork 1.10–1.13 in five quick sweeps, its first two tasks
    // at half speed for about 10 ms). A pool's threads first wait for the caller's tasks, and a
    // thread that wakes goes to an idle core.
    const bool compute_from_start =
        exec.plan.launcher_dispatches || exec.plan.policy == placement::static_blocks;
    // Where a new worker finds two cores equally busy, Linux puts it on either, so the placements
    // are simulated both ways: every other one on the launcher's core, and none (four static
    // threads on two cores: two by two, or three on one core, which read 1.15–1.21 in six of
    // eight sweeps).
    if (machine.balance_delay_ns > 0 && (p.config.workers > machine.cores || compute_from_start)) {
      for (const bool alternate : {true, false}) {
        take(s, machine.balance_delay_ns, alternate);
        if (machine.time_slice_long_ns > 0)
          take(machine.time_slice_long_ns, machine.balance_delay_ns, alternate);
      }
    }
  }
  const task_set_totals tot = totals(as_run);
  const bool computes = tot.sum_cpu_ns > 0;
  const bool waits = tot.sum_cpu_ns < tot.sum_ns;
  // A non-blocking worker is no machine of Graham's at all where tasks wait: it overlaps them.
  p.graham_applies = !(computes && waits) && !(waits && exec.plan.waits == wait_mode::nonblocking);
  p.graham_workers =
      computes ? effective_parallelism(p.config.workers, machine.cores) : p.config.workers;
  p.graham = graham_bounds(as_run, p.graham_workers);
  // Σt/P bounds blocking executors only: a non-blocking worker overlaps any number of waits.
  p.lower_bound_ns =
      exec.plan.waits == wait_mode::blocking
          ? makespan_lower_bound(as_run, p.config.workers, machine.cores)
          : std::max(tot.sum_cpu_ns / effective_parallelism(p.config.workers, machine.cores),
                     tot.max_ns);
  p.serial_ns = serial_makespan(tasks);
  if (deps != nullptr) {
    // Graham's bounds are for independent tasks; a graph has Brent's (models/README.md).
    const bool nonblocking = exec.plan.waits == wait_mode::nonblocking;
    p.graham_applies = false;
    p.brent_applies = true;
    p.work_ns = nonblocking ? tot.sum_cpu_ns : tot.sum_ns;
    p.brent_workers =
        nonblocking ? effective_parallelism(p.config.workers, machine.cores) : p.config.workers;
    p.span_ns = span_ns(as_run, *deps);
    p.brent = brent_bounds(p.work_ns, p.span_ns, p.brent_workers);
    p.lower_bound_ns = std::max(p.lower_bound_ns, p.span_ns);
  }
  return p;
}

checked_run run_and_check(const executor& exec, std::span<const task> tasks,
                          const prediction& predicted, const check_options& options,
                          std::span<const std::uint64_t> reference) {
  checked_run out;
  std::vector<run_result> runs;
  out.verified.ok = true;
  for (int r = 0; r < std::max(1, options.repeats); ++r) {
    run_options ro;
    ro.workers = options.workers;
    ro.task_timeout = options.task_timeout;
    ro.stop = options.stop;
    ro.on_error = options.on_error;
    ro.slow_callback = options.slow_callback;
    ro.deps = options.deps;
    run_result result = measure(exec, tasks, ro);
    verification v = verify(tasks, result, reference, options.deps);
    if (!v.ok || r == 0) out.verified = std::move(v);  // keep the first failure, if any
    out.makespans.push_back(result.makespan_ns);
    runs.push_back(std::move(result));
    if (!out.verified.ok) break;  // a failed verification is an error, not a data point
  }
  out.makespan_ns = median(out.makespans);
  out.cv = coefficient_of_variation(out.makespans);
  const auto at = std::find(out.makespans.begin(), out.makespans.end(), out.makespan_ns);
  out.run = std::move(runs[static_cast<std::size_t>(at - out.makespans.begin())]);

  double measured = 0;
  double modelled = 0;
  for (const task_record& r : out.run.records) {
    const task_record& s = predicted.simulated.timeline.at(r.id);
    measured += static_cast<double>(r.end_ns - r.start_ns);
    modelled += static_cast<double>(s.end_ns - s.start_ns);
  }
  out.task_stretch = modelled > 0 ? measured / modelled : 1.0;

  verdict_input in;
  in.measured_ns = out.makespan_ns;
  in.predicted_ns = predicted.simulated.makespan_ns;
  in.predicted_low_ns = predicted.low_ns;
  in.predicted_high_ns = predicted.high_ns;
  in.work_ns = totals(tasks).sum_ns;
  in.tolerance = options.tolerance;
  in.cv = out.cv;
  in.task_stretch = out.task_stretch;
  in.cpu_work = totals(tasks).sum_cpu_ns > 0;
  in.runnable_threads = predicted.config.workers;
  in.cores = predicted.config.cores;
  out.judged = judge(in);
  if (out.run.stopped) {  // the prediction assumed every task runs; these did not
    out.judged.within = false;
    out.judged.cause = "not judged: the run was stopped (cancelled, or at its first error)";
  }
  return out;
}

}  // namespace clab
