// What this machine costs, measured once per process: kernel speed, timer overshoot, thread start.
// The models' overhead terms come from here, so a prediction uses this machine's numbers.
#pragma once

#include <sched.h>

#include <array>
#include <cstdint>
#include <optional>

namespace clab {

/// How late a blocking sleep wakes up, as a function of its length: the median overshoot measured
/// at 100 µs, 1 ms and 10 ms, interpolated linearly in log(length) between them and held flat past
/// the ends. (On the development VM: about 56, 74 and 107 µs; at 100 ms about 130 µs.)
struct overshoot_curve {
  static constexpr std::array<std::int64_t, 3> k_lengths_ns{100'000, 1'000'000, 10'000'000};
  std::array<std::int64_t, 3> overshoot_ns{};

  /// The modelled overshoot of one sleep of `wait_ns` (0 for no sleep).
  [[nodiscard]] std::int64_t at(std::int64_t wait_ns) const;
  /// A curve with the same overshoot at every length (for tests and hand-made models).
  [[nodiscard]] static overshoot_curve flat(std::int64_t ns) { return {{ns, ns, ns}}; }
};

struct calibration {
  int cores = 1;                     ///< CPUs this process may run on (its affinity mask)
  double ns_per_iteration = 1.0;     ///< kernel speed: lower quartile of timed samples
  double ns_per_iteration_cv = 0;    ///< spread of those samples (stddev / mean)
  overshoot_curve sleep_overshoot;   ///< how late a blocking sleep wakes, by its length
  std::int64_t thread_start_ns = 0;  ///< median time the launcher spends in one thread start
  /// Median time from fork() in the parent to the child's first byte read back from a pipe: what
  /// a process pool pays to start one worker.
  std::int64_t process_start_ns = 0;
  /// Median time from a write() into a pipe to the moment the thread blocked in read() on it runs
  /// again, the cores idle before: one wake-up, as a process pool pays twice per hand-off.
  std::int64_t wakeup_ns = 0;
  /// How long the scheduler lets a CPU-bound thread run before it switches to another runnable
  /// one on the same core: the median uninterrupted stretch of two threads pinned to one CPU.
  /// 0 where it could not be measured (the models then share the cores fairly instead).
  std::int64_t time_slice_ns = 0;
  /// The longest turns of the same measurement (its 90th percentile): a turn ends at the first
  /// timer tick after the scheduler's slice is used up, or at once when a thread wakes with a
  /// better claim, so turns spread from nearly nothing up to about a tick (development machine,
  /// HZ=250: 0.1 to 4.0 ms, median 2–4 ms from one measurement to the next). 0 where unmeasured.
  std::int64_t time_slice_long_ns = 0;
  /// How long an idle core leaves two CPU-bound threads queued on another core before it takes one
  /// of them: two spinning threads are pinned to one CPU, then allowed on all of this process's
  /// CPUs, and this is the median time until one of them is seen elsewhere. Linux keeps runnable
  /// threads in a queue per core and moves one only now and then, never one that ran in the last
  /// 0.5 ms (development machine: 11–21 ms, about five 4 ms ticks). 0 on one core or unmeasured.
  std::int64_t balance_delay_ns = 0;
};

/// See calibration::balance_delay_ns: the median of five tries, each capped at 200 ms; 0 where
/// this process may use only one CPU or the threads could not be pinned.
[[nodiscard]] std::int64_t measure_balance_delay();

/// CPUs this process may use: the size of its affinity mask (so `taskset -c 0` counts as 1).
[[nodiscard]] int available_cores();

/// The CPUs this process may use (its affinity mask) and a set of only the first of them, to pin
/// a thread to one CPU and later let it go again; empty where the mask cannot be read.
struct cpu_sets {
  cpu_set_t all;
  cpu_set_t first;
};
[[nodiscard]] std::optional<cpu_sets> process_cpu_sets();

/// Measures ns per kernel iteration: `samples` samples of about 0.7 ms, their lower quartile.
[[nodiscard]] double calibrate_kernel(double* cv = nullptr, int samples = 41);

/// Measures the scheduler's time slice: two threads pinned to one of this process's CPUs spin,
/// each noting every stretch it ran without a gap, until they have taken 24 turns between them
/// (about 25 ms at 1 ms slices, 100 ms at 4 ms; at most 400 ms). Returns the median stretch and
/// the 90th percentile, or zeros if the threads could not be pinned or switched too seldom to tell.
struct time_slice {
  std::int64_t median_ns = 0;
  std::int64_t long_ns = 0;
};
[[nodiscard]] time_slice measure_time_slice();

/// Measures the process start: the median of 9 forks, each timed from fork() in the parent to the
/// child's first byte read back from a pipe. It grows with this process's resident memory.
[[nodiscard]] std::int64_t measure_process_start();

/// Measures the wake-up through a pipe (see calibration::wakeup_ns): 15 samples, 0.3 ms apart.
[[nodiscard]] std::int64_t measure_wakeup();

/// Measures everything above; takes about 0.25 s.
[[nodiscard]] calibration calibrate();

}  // namespace clab
