// Each measurement repeats: on a shared machine one sample means little. Overshoot and thread start
// report the median; the kernel the lower quartile (see calibrate_kernel).
#include "workloads/calibration.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <thread>
#include <vector>

#include "workloads/kernel.hpp"
#include "workloads/run.hpp"
#include "workloads/stats.hpp"

namespace clab {
namespace {

using clock_type = run_clock;

std::int64_t measure_sleep_overshoot(std::int64_t asked_ns, int samples) {
  std::vector<std::int64_t> over;
  for (int i = 0; i < samples; ++i) {
    const auto t0 = clock_type::now();
    std::this_thread::sleep_for(std::chrono::nanoseconds(asked_ns));
    over.push_back(ns_since(t0) - asked_ns);
  }
  return median(std::move(over));
}

std::int64_t measure_thread_start() {
  constexpr int k_samples = 32;
  std::vector<std::int64_t> cost;
  std::vector<std::jthread> threads;
  threads.reserve(k_samples);
  for (int i = 0; i < k_samples; ++i) {
    const auto t0 = clock_type::now();
    threads.emplace_back([] {});
    cost.push_back(ns_since(t0));
  }
  threads.clear();  // joins
  return median(std::move(cost));
}

// The stretches two threads pinned to one CPU ran before the other took over: they spin until
// together they have taken k_turns turns (or k_cap_ns has passed), so a coarse scheduler tick
// (4 ms at HZ=250) gets as many turns as a fine one. Empty if the threads could not be pinned.
std::vector<std::int64_t> time_slice_stretches() {
  const std::optional<cpu_sets> cpus = process_cpu_sets();
  if (!cpus) return {};
  const cpu_set_t one = cpus->first;
  // A gap longer than this between two clock reads means the thread was switched out.
  constexpr std::int64_t k_gap_ns = 20'000;
  constexpr int k_turns = 24;
  constexpr std::int64_t k_cap_ns = 400'000'000;
  std::array<std::vector<std::int64_t>, 2> stretches;
  std::array<bool, 2> pinned{};
  std::atomic<int> ready{0};
  std::atomic<int> turns{0};
  auto spinner = [&](std::size_t me) {
    pinned[me] = pthread_setaffinity_np(pthread_self(), sizeof(one), &one) == 0;
    ready.fetch_add(1);
    while (ready.load() < 2) {
    }
    const auto t0 = clock_type::now();
    std::int64_t last = 0;
    std::int64_t begin = 0;
    while (last < k_cap_ns && turns.load(std::memory_order_relaxed) < k_turns) {
      const std::int64_t now = ns_since(t0);
      if (now - last > k_gap_ns) {
        if (begin > 0) {  // the first stretch is partial: it began before the clock did
          stretches[me].push_back(last - begin);
          turns.fetch_add(1, std::memory_order_relaxed);
        }
        begin = now;
      }
      last = now;
    }
  };
  {
    std::jthread a(spinner, 0);
    std::jthread b(spinner, 1);
  }
  if (!pinned[0] || !pinned[1]) return {};
  std::vector<std::int64_t> all = std::move(stretches[0]);
  all.insert(all.end(), stretches[1].begin(), stretches[1].end());
  return all;
}

std::int64_t process_start_samples() {
  constexpr int k_samples = 9;
  std::vector<std::int64_t> cost;
  for (int i = 0; i < k_samples; ++i) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return 0;
    const auto t0 = clock_type::now();
    const pid_t pid = fork();
    if (pid == 0) {  // the child: async-signal-safe calls only (the parent may have threads)
      const char ready = 1;
      const ssize_t ignored = write(fds[1], &ready, 1);
      (void)ignored;
      _exit(0);
    }
    close(fds[1]);
    char byte = 0;
    ssize_t got = -1;
    if (pid > 0) {
      do {
        got = read(fds[0], &byte, 1);
      } while (got < 0 && errno == EINTR);
    }
    const std::int64_t ns = ns_since(t0);
    close(fds[0]);
    if (pid < 0) return 0;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (got == 1) cost.push_back(ns);
  }
  return cost.empty() ? 0 : median(std::move(cost));
}

}  // namespace

std::int64_t measure_process_start() { return process_start_samples(); }

std::int64_t measure_balance_delay() {
  const std::optional<cpu_sets> cpus = process_cpu_sets();
  if (!cpus || CPU_COUNT(&cpus->all) < 2) return 0;
  const cpu_set_t all = cpus->all;
  const cpu_set_t one = cpus->first;
  constexpr std::int64_t k_cap_ns = 200'000'000;
  constexpr int k_tries = 5;
  std::vector<std::int64_t> delays;
  for (int t = 0; t < k_tries; ++t) {
    std::atomic<int> pinned{0};
    std::atomic<bool> go{false};
    std::atomic<bool> failed{false};
    std::atomic<std::int64_t> moved_ns{-1};
    clock_type::time_point t0{};
    auto spinner = [&] {
      if (pthread_setaffinity_np(pthread_self(), sizeof(one), &one) != 0) failed = true;
      pinned.fetch_add(1);
      while (!go.load()) {
      }
      // Free to run anywhere now, but queued on one CPU with the other spinner: the load
      // balancer decides when one of them moves.
      if (pthread_setaffinity_np(pthread_self(), sizeof(all), &all) != 0) failed = true;
      for (;;) {
        const std::int64_t now = ns_since(t0);
        if (moved_ns.load(std::memory_order_relaxed) >= 0 || now > k_cap_ns) break;
        if (const int cpu = sched_getcpu(); cpu >= 0 && !CPU_ISSET(cpu, &one)) {  // moved
          std::int64_t none = -1;
          moved_ns.compare_exchange_strong(none, now);
        }
      }
    };
    {
      std::jthread a(spinner);
      std::jthread b(spinner);
      while (pinned.load() < 2) std::this_thread::yield();
      t0 = clock_type::now();
      go = true;
    }
    if (failed) return 0;
    const std::int64_t d = moved_ns.load();
    delays.push_back(d >= 0 ? d : k_cap_ns);
  }
  return median(std::move(delays));
}

std::int64_t measure_wakeup() {
  constexpr int k_samples = 15;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return 0;
  std::vector<std::int64_t> latency(k_samples, 0);
  std::vector<std::int64_t> sent(k_samples, 0);
  const auto origin = clock_type::now();
  {
    std::jthread reader([&] {
      for (int i = 0; i < k_samples; ++i) {
        char byte = 0;
        ssize_t got = -1;
        do {
          got = read(fds[0], &byte, 1);
        } while (got < 0 && errno == EINTR);
        if (got != 1) return;
        latency[static_cast<std::size_t>(i)] = ns_since(origin);
      }
    });
    for (int i = 0; i < k_samples; ++i) {
      std::this_thread::sleep_for(std::chrono::microseconds(300));  // let the cores go idle
      sent[static_cast<std::size_t>(i)] = ns_since(origin);
      const char byte = 1;
      if (write(fds[1], &byte, 1) != 1) break;
    }
    close(fds[1]);  // a reader still waiting sees end of file
  }
  close(fds[0]);
  std::vector<std::int64_t> lat;
  for (int i = 0; i < k_samples; ++i) {
    const auto k = static_cast<std::size_t>(i);
    if (latency[k] > 0 && sent[k] > 0)
      lat.push_back(std::max<std::int64_t>(0, latency[k] - sent[k]));
  }
  return lat.empty() ? 0 : median(std::move(lat));
}

time_slice measure_time_slice() {
  // The slice is not one number: the scheduler checks at timer ticks, and a stretch lasts one to
  // a few ticks. The median stretch is the typical turn; the 90th percentile a long one.
  std::vector<std::int64_t> all = time_slice_stretches();
  if (all.size() < 8) return {};  // the threads hardly alternated: no slice to speak of
  std::sort(all.begin(), all.end());
  const std::int64_t longest = all[all.size() * 9 / 10];
  return {median(std::move(all)), longest};
}

std::int64_t overshoot_curve::at(std::int64_t wait_ns) const {
  if (wait_ns <= 0) return 0;
  const auto& x = k_lengths_ns;
  if (wait_ns <= x.front()) return overshoot_ns.front();
  if (wait_ns >= x.back()) return overshoot_ns.back();
  std::size_t i = 1;
  while (wait_ns > x[i]) ++i;
  const double f = std::log(static_cast<double>(wait_ns) / static_cast<double>(x[i - 1])) /
                   std::log(static_cast<double>(x[i]) / static_cast<double>(x[i - 1]));
  const auto lo = static_cast<double>(overshoot_ns[i - 1]);
  const auto hi = static_cast<double>(overshoot_ns[i]);
  return static_cast<std::int64_t>(std::llround(lo + f * (hi - lo)));
}

int available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return static_cast<int>(std::max(1U, std::thread::hardware_concurrency()));
}

std::optional<cpu_sets> process_cpu_sets() {
  cpu_sets out{};
  CPU_ZERO(&out.all);
  if (sched_getaffinity(0, sizeof(out.all), &out.all) != 0) return std::nullopt;
  int cpu = 0;
  while (cpu < CPU_SETSIZE && !CPU_ISSET(cpu, &out.all)) ++cpu;
  if (cpu == CPU_SETSIZE) return std::nullopt;
  CPU_ZERO(&out.first);
  CPU_SET(cpu, &out.first);
  return out;
}

double calibrate_kernel(double* cv, int samples) {
  constexpr std::uint64_t k_iterations = 1U << 18U;  // under a millisecond per sample
  const int k_samples = std::max(4, samples);
  volatile std::uint64_t sink = spin(1, k_iterations);  // warm-up: page in, clock up
  std::vector<double> per_iter;
  for (int i = 0; i < k_samples; ++i) {
    const auto t0 = clock_type::now();
    sink = sink + spin(static_cast<std::uint64_t>(i) + 2U, k_iterations);
    per_iter.push_back(static_cast<double>(ns_since(t0)) / static_cast<double>(k_iterations));
  }
  if (cv != nullptr) *cv = coefficient_of_variation(per_iter);
  // The lower quartile, not the median: another process can only slow a sample down, so the
  // fast samples are the kernel's own speed and the slow ones are the neighbours' doing.
  std::sort(per_iter.begin(), per_iter.end());
  return per_iter[per_iter.size() / 4];
}

calibration calibrate() {
  calibration c;
  c.cores = available_cores();
  c.ns_per_iteration = calibrate_kernel(&c.ns_per_iteration_cv);
  constexpr std::array<int, 3> k_samples{15, 9, 5};  // about 60 ms of sleeping in all
  for (std::size_t i = 0; i < k_samples.size(); ++i) {
    c.sleep_overshoot.overshoot_ns[i] =
        measure_sleep_overshoot(overshoot_curve::k_lengths_ns[i], k_samples[i]);
  }
  c.thread_start_ns = measure_thread_start();
  const time_slice slice = measure_time_slice();
  c.time_slice_ns = slice.median_ns;
  c.time_slice_long_ns = slice.long_ns;
  c.process_start_ns = measure_process_start();
  c.wakeup_ns = measure_wakeup();
  c.balance_delay_ns = measure_balance_delay();
  return c;
}

}  // namespace clab
