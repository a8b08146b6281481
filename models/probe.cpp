#include "models/probe.hpp"

#include <sched.h>
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "workloads/calibration.hpp"
#include "workloads/stats.hpp"
#include "workloads/task.hpp"

namespace clab {
namespace {

// What the probe runs: n tasks of `cpu` each (none for empty tasks).
struct probe_tasks {
  std::int64_t cpu_ns = 0;
  std::uint64_t cpu_iterations = 0;
  std::int64_t wait_ns = 0;
};

std::vector<task> make_tasks(std::size_t n, probe_tasks cpu) {
  std::vector<task> tasks(n);
  for (std::size_t i = 0; i < n; ++i) {
    tasks[i].id = static_cast<std::uint32_t>(i);
    tasks[i].seed = i + 1;
    tasks[i].cpu_ns = cpu.cpu_ns;
    tasks[i].cpu_iterations = cpu.cpu_iterations;
    tasks[i].wait_ns = cpu.wait_ns;
  }
  return tasks;
}

struct timed {
  std::int64_t wall_ns = 0;
  std::int64_t cpu_ns = 0;  // CPU time of the calling thread: the launcher's side of the run
  // CPU time of every other thread of this process and of the child processes it reaped: the
  // workers' side of the run
  std::int64_t worker_cpu_ns = 0;
  std::int64_t tail_ns = 0;  // from the end of the last task to the executor's return
};

std::int64_t cpu_clock_ns(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::int64_t process_cpu_ns() { return cpu_clock_ns(CLOCK_PROCESS_CPUTIME_ID); }
std::int64_t thread_cpu_ns() { return cpu_clock_ns(CLOCK_THREAD_CPUTIME_ID); }

/// User and system time of the child processes this process has reaped (the executor reaps every
/// child before it returns).
std::int64_t children_cpu_ns() {
  rusage ru{};
  getrusage(RUSAGE_CHILDREN, &ru);
  const auto ns = [](const timeval& tv) {
    return static_cast<std::int64_t>(tv.tv_sec) * 1'000'000'000 +
           static_cast<std::int64_t>(tv.tv_usec) * 1000;
  };
  return ns(ru.ru_utime) + ns(ru.ru_stime);
}

timed run_probe(const executor& exec, std::size_t n, int workers, probe_tasks cpu = {}) {
  const std::vector<task> tasks = make_tasks(n, cpu);
  run_options options;
  options.workers = workers;
  const std::int64_t cpu0 = process_cpu_ns();
  const std::int64_t mine0 = thread_cpu_ns();
  const std::int64_t children0 = children_cpu_ns();
  const run_result r = measure(exec, tasks, options);
  const std::int64_t mine = thread_cpu_ns() - mine0;
  const std::int64_t others = process_cpu_ns() - cpu0 - mine + (children_cpu_ns() - children0);
  if (r.records.size() != n) {
    throw std::runtime_error("probe: executor '" + std::string(exec.name) + "' completed " +
                             std::to_string(r.records.size()) + " of " + std::to_string(n) +
                             " probe tasks");
  }
  std::int64_t last_end = 0;
  for (const task_record& rec : r.records) last_end = std::max(last_end, rec.end_ns);
  return {r.makespan_ns, mine, others, std::max<std::int64_t>(0, r.makespan_ns - last_end)};
}

// With CPU in the tasks, their nominal CPU time is taken out of the wall time and the workers' CPU
// time: what the executor's goings-on around a task add to the task itself (an interrupt on the
// worker's core, a cache emptied by the wake-up) counts as its cost, as it does in the run.
probe_result measure_per_task(const executor& exec, int workers, probe_tasks cpu = {}) {
  // Empty tasks: 2 ms is plenty. Tasks with CPU in them: long enough that most of the run has
  // settled into its rhythm of sleeps and wake-ups, which on the development VM changed after the
  // first 5 ms or so (10 µs tasks cost 1 µs each in runs of 5 ms, 4 µs in runs of 10 ms or more:
  // the idle cores' polling adapts).
  const std::int64_t k_enough_ns = cpu.cpu_ns > 0 ? 16'000'000 : 2'000'000;
  constexpr std::size_t k_max_tasks = 1U << 16U;
  std::size_t k = 32;
  (void)run_probe(exec, k, workers, cpu);  // warm-up: first-touch pages, lazy initialisation
  while (2 * k < k_max_tasks && run_probe(exec, 2 * k, workers, cpu).wall_ns < k_enough_ns) k *= 4;
  std::vector<std::int64_t> wall;
  std::vector<std::int64_t> caller_cpu;
  std::vector<std::int64_t> worker_cpu;
  const auto kk = static_cast<std::int64_t>(k);
  for (int rep = 0; rep < 5; ++rep) {
    const timed once = run_probe(exec, k, workers, cpu);
    const timed twice = run_probe(exec, 2 * k, workers, cpu);
    const std::int64_t busy = cpu.cpu_ns * kk;  // the tasks' nominal CPU: see above
    wall.push_back(std::max<std::int64_t>(0, (twice.wall_ns - once.wall_ns - busy) / kk));
    caller_cpu.push_back(std::max<std::int64_t>(0, (twice.cpu_ns - once.cpu_ns) / kk));
    worker_cpu.push_back(
        std::max<std::int64_t>(0, (twice.worker_cpu_ns - once.worker_cpu_ns - busy) / kk));
  }
  return {median(std::move(wall)), median(std::move(caller_cpu)), median(std::move(worker_cpu))};
}

// Keeps the calling thread on the first of this process's CPUs while it lives, then lets it use
// all of them again; does nothing where the thread cannot be pinned.
class on_first_cpu {
 public:
  on_first_cpu() : cpus_(process_cpu_sets()) {
    pinned_ = cpus_ && sched_setaffinity(0, sizeof(cpus_->first), &cpus_->first) == 0;
  }
  ~on_first_cpu() {
    if (pinned_) (void)sched_setaffinity(0, sizeof(cpus_->all), &cpus_->all);
  }
  on_first_cpu(const on_first_cpu&) = delete;
  on_first_cpu& operator=(const on_first_cpu&) = delete;

 private:
  std::optional<cpu_sets> cpus_;
  bool pinned_ = false;
};

std::mutex probe_mutex;
constexpr std::int64_t k_one_core_key = -1;  // probed_costs: the probe kept on one CPU
// Keyed by executor, task length (or k_one_core_key) and whether the tasks wait.
std::map<std::tuple<std::string, std::int64_t, bool>, probe_result> probed_costs;  // probe_mutex
std::map<std::tuple<std::string, int, std::size_t>, std::int64_t> probed_ends;     // probe_mutex
std::map<std::string, overshoot_curve> probed_overshoots;                          // probe_mutex

}  // namespace

void forget_probes() {
  const std::lock_guard lock(probe_mutex);
  probed_costs.clear();
  probed_ends.clear();
  probed_overshoots.clear();
}

probe_result probe_executor(const executor& exec, std::int64_t task_cpu_ns, double ns_per_iteration,
                            bool parked) {
  if (task_cpu_ns < 0 || (task_cpu_ns > 0 && !(ns_per_iteration > 0))) {
    throw std::invalid_argument("probe_executor: task_cpu_ns >= 0, and a kernel speed with it");
  }
  const std::lock_guard lock(probe_mutex);
  const auto key = std::make_tuple(std::string(exec.name), task_cpu_ns, parked);
  const auto it = probed_costs.find(key);
  if (it != probed_costs.end()) return it->second;
  probe_tasks cpu;
  if (parked) cpu.wait_ns = 1;
  if (task_cpu_ns > 0) {
    cpu.cpu_ns = task_cpu_ns;
    cpu.cpu_iterations = std::max<std::uint64_t>(
        1, static_cast<std::uint64_t>(
               std::llround(static_cast<double>(task_cpu_ns) / ns_per_iteration)));
  }
  const probe_result measured = measure_per_task(exec, 1, cpu);
  probed_costs.emplace(key, measured);
  return measured;
}

probe_result probe_executor_on_one_core(const executor& exec) {
  const std::lock_guard lock(probe_mutex);
  const auto key = std::make_tuple(std::string(exec.name), k_one_core_key, false);
  const auto it = probed_costs.find(key);
  if (it != probed_costs.end()) return it->second;
  const probe_result measured = [&] {
    const on_first_cpu pinned;  // the calling thread, and so every worker it forks or starts
    return measure_per_task(exec, 1);
  }();
  probed_costs.emplace(key, measured);
  return measured;
}

std::int64_t probe_per_task_ns(const executor& exec) { return probe_executor(exec).per_task_ns; }

std::int64_t probe_run_end_ns(const executor& exec, int workers, std::size_t n) {
  constexpr std::size_t k_most_tasks = 64;
  n = std::clamp<std::size_t>(n, 1, k_most_tasks);
  const std::lock_guard lock(probe_mutex);
  const auto key = std::make_tuple(std::string(exec.name), workers, n);
  const auto it = probed_ends.find(key);
  if (it != probed_ends.end()) return it->second;
  (void)run_probe(exec, n, workers);  // warm-up, as for the per-task probe
  std::vector<std::int64_t> tails;
  for (int rep = 0; rep < 5; ++rep) tails.push_back(run_probe(exec, n, workers).tail_ns);
  const std::int64_t measured = median(std::move(tails));
  probed_ends.emplace(key, measured);
  return measured;
}

overshoot_curve probe_wait_overshoot(const executor& exec) {
  const std::lock_guard lock(probe_mutex);
  const auto it = probed_overshoots.find(std::string(exec.name));
  if (it != probed_overshoots.end()) return it->second;
  constexpr std::size_t k_tasks = 8;
  overshoot_curve curve;
  for (std::size_t l = 0; l < overshoot_curve::k_lengths_ns.size(); ++l) {
    std::vector<task> tasks = make_tasks(k_tasks, {});
    for (task& t : tasks) t.wait_ns = overshoot_curve::k_lengths_ns[l];
    std::vector<std::int64_t> late;
    for (int rep = 0; rep < 3; ++rep) {
      const run_result r = measure(exec, tasks, {.workers = 1});
      if (r.records.size() != k_tasks) {
        throw std::runtime_error("probe: executor '" + std::string(exec.name) + "' completed " +
                                 std::to_string(r.records.size()) + " of " +
                                 std::to_string(k_tasks) + " waiting probe tasks");
      }
      for (const task_record& rec : r.records) {
        late.push_back(
            std::max<std::int64_t>(0, rec.end_ns - rec.start_ns - tasks[rec.id].wait_ns));
      }
    }
    curve.overshoot_ns[l] = median(std::move(late));
  }
  probed_overshoots.emplace(std::string(exec.name), curve);
  return curve;
}

}  // namespace clab
