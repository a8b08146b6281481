// The task: a plain value that any executor can run, a child process included (no closure).
// A task first waits (wait_ns: a timer or an I/O read) and then computes (cpu_iterations of the
// kernel). Look for: the CPU work travels as an iteration count, so its checksum is the same in
// every process, whatever that process's own calibration says.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace clab {

/// Where an io task sends its request: lesson 08's service, as an IPv4 address and a port (both in
/// host byte order), plain values that travel with the task into a child process.
struct io_endpoint {
  std::uint32_t ipv4 = 0x7F000001;  ///< 127.0.0.1
  std::uint16_t port = 0;
  friend bool operator==(const io_endpoint&, const io_endpoint&) = default;
};

/// A fault to inject into one task, triggered when the task starts computing.
enum class fault : std::uint8_t { none, throw_exception, abort, segv, hang };

struct task {
  std::uint32_t id = 0;              ///< position in the task set, 0-based
  std::int64_t cpu_ns = 0;           ///< nominal CPU part, from the generator's calibration
  std::uint64_t cpu_iterations = 0;  ///< the CPU part as kernel iterations: what actually runs
  std::int64_t wait_ns = 0;          ///< the wait part: time spent not computing
  std::uint64_t seed = 0;            ///< the kernel's input, so every task's checksum differs
  fault inject = fault::none;
  /// An io task (port != 0) waits by asking the service at this endpoint for
  /// GET /task?id=..&wait_us=wait_ns/1000&seed=..: the service holds the reply for the wait, and
  /// the reply's body folds into the checksum (io_exchange.hpp). Port 0: the wait is a timer.
  io_endpoint io{0, 0};

  /// The task's nominal duration t_i = c_i + w_i.
  [[nodiscard]] std::int64_t duration_ns() const { return cpu_ns + wait_ns; }
  /// True if the wait is a request to the service.
  [[nodiscard]] bool is_io() const { return io.port != 0; }
};

/// What kind of time a task spends: all CPU, all wait, or half of each (wait first, then CPU).
/// `io` is all wait too, but the wait is one HTTP request to lesson 08's loopback service, which
/// answers after the wait (whole microseconds): the task waits on a socket, not on a timer.
enum class workload : std::uint8_t { cpu, wait, io, mixed };

/// How task durations spread around the mean --task-us:
///   fixed    every task lasts exactly the mean;
///   uniform  uniform on [0, 2·mean];
///   exp      exponential with that mean (a long tail);
///   bimodal  one task in ten is long (10× a short one), placed at seeded positions, scaled so
///            that the sum is exactly N·mean.
enum class distribution : std::uint8_t { fixed, uniform, exp, bimodal };

struct task_set_spec {
  std::size_t tasks = 16;
  workload kind = workload::cpu;
  distribution dist = distribution::fixed;
  double task_us = 10'000.0;  ///< mean task duration in microseconds
  std::uint64_t seed = 1;
  /// The service the io workload's tasks ask (required for workload::io, ignored otherwise).
  std::optional<io_endpoint> service;
};

/// Generates the task set: the same spec and seed give the same durations on every machine and
/// compiler (the generator uses its own random numbers, not <random>'s distributions).
/// `ns_per_iteration` converts CPU time into kernel iterations (see calibrate_kernel()).
/// Throws std::invalid_argument for a negative mean, or the io workload without a service.
[[nodiscard]] std::vector<task> make_task_set(const task_set_spec& spec, double ns_per_iteration);

[[nodiscard]] std::string_view to_string(workload w);
[[nodiscard]] std::string_view to_string(distribution d);
[[nodiscard]] std::string_view to_string(fault f);
[[nodiscard]] std::optional<workload> parse_workload(std::string_view name);
[[nodiscard]] std::optional<distribution> parse_distribution(std::string_view name);
[[nodiscard]] std::optional<fault> parse_fault(std::string_view name);

/// Σ t_i, Σ c_i and max t_i of a task set, in ns.
struct task_set_totals {
  std::int64_t sum_ns = 0;
  std::int64_t sum_cpu_ns = 0;
  std::int64_t max_ns = 0;
};
[[nodiscard]] task_set_totals totals(std::span<const task> tasks);

/// splitmix64: a tiny, high-quality mixer; the generator's only source of randomness.
[[nodiscard]] constexpr std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30U)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27U)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31U);
}

}  // namespace clab
