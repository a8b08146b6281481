// A million stackless coroutines asleep at once: our task<T> engine (lessons/07_coroutines) and
// Boost.Asio's awaitable, each in a fresh process (fork, then exec of bench_units itself with
// --clab-sleepers-child, so that none of the benchmark's own pages count), each row one repetition:
//   coro_sleepers_rss/ours       1 000 000 of our coroutines spawned (spawn_detached) on one
//                                coro_scheduler, each `co_await sleep_for(d)` then one increment;
//                                d is as long again as spawning took, plus 0.3 s, so all are asleep
//                                together. Counters: peak_rss_mb (the child's whole-process peak,
//                                VmHWM, read after every one has woken and ended: baseline, frames,
//                                the scheduler's slab and sleep heap, and the wake-up itself),
//                                bytes_per_task (VmRSS with all asleep, above the child's
//                                baseline, per coroutine), frame_bytes (the size the compiler asked
//                                for, frame_stats().last_bytes), ns_per_unit (the child's CPU per
//                                coroutine to spawn it and run it up to its sleep). All 1M must
//                                end.
//   coro_sleepers_rss/asio-coro  the same with Boost.Asio: 1 000 000
//                                co_spawn(io, f(), detached) on one io_context, one thread, f an
//                                asio::awaitable<void> that makes a steady_timer for d and
//                                co_awaits its async_wait(use_awaitable), then one increment.
//                                frame_bytes: 0 (Asio allocates its frames through its own
//                                recycling allocator; not reported).
// Full run only (bench_units --quick leaves them out). A forked child alone would inherit the
// benchmark's resident pages (87 MiB after the rows before it in a full run), so the child execs
// a fresh bench_units, whose whole-process peak is the figure: its baseline_mb says how much of it
// a bare bench_units holds. MB means MiB here (2^20 bytes: VmHWM's kB are KiB).
// Look for: what a sleeping coroutine costs here in all, against its frame alone.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>
#include <string_view>

#include "lessons/05_event_loop/event_loop.hpp"
#include "lessons/06_fibers/boost_fiber_child.hpp"
#include "lessons/07_coroutines/scheduler.hpp"
#include "lessons/07_coroutines/task.hpp"

namespace {

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;

constexpr int k_sleepers = 1'000'000;

/// A field of /proc/self/status in bytes (VmRSS, VmHWM), or -1.
std::int64_t status_bytes(const char* field) {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == field) {
      std::int64_t kb = 0;
      status >> kb;
      return kb * 1024;
    }
    status.ignore(4096, '\n');
  }
  return -1;
}

std::int64_t process_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

struct sleepers_report {
  std::int64_t base = 0;         // VmRSS before the first spawn
  std::int64_t asleep = 0;       // VmRSS with all asleep
  std::int64_t peak = 0;         // VmHWM at the end
  std::int64_t cpu_ns = 0;       // spawning them and running each up to its sleep
  std::int64_t frame_bytes = 0;  // ours only
  int parked = 0;                // asleep at the reading (negative: some had woken already)
  int woken = 0;                 // ended, in all
};

// Plain globals, so the coroutine has no parameters: its frame is what a sleeper needs, nothing
// more.
int g_parked = 0;
int g_woken = 0;
std::chrono::nanoseconds g_wait{};

clab::coro::task<void> nap() {
  ++g_parked;
  co_await clab::coro::sleep_for(g_wait);
  ++g_woken;
}

void ours_in_child(const clab::child_channel<sleepers_report>& channel) {
  clab::event_loop loop;
  clab::coro::coro_scheduler sched(loop);
  sleepers_report r;
  r.base = status_bytes("VmRSS:");
  const std::int64_t cpu0 = process_cpu_ns();
  const auto t0 = clock_type::now();
  for (int i = 0; i < k_sleepers; ++i) sched.spawn_detached(nap());
  r.frame_bytes = static_cast<std::int64_t>(clab::coro::this_thread_frame_stats().last_bytes);
  // Spawned last: it runs once every sleeper has run up to its sleep (FIFO, one batch).
  auto reader = [](sleepers_report& out, std::int64_t cpu_start) -> clab::coro::task<void> {
    out.cpu_ns = process_cpu_ns() - cpu_start;
    out.asleep = status_bytes("VmRSS:");
    out.parked = g_woken == 0 ? g_parked : -g_woken;
    co_return;
  };
  sched.spawn_detached(reader(r, cpu0));
  g_wait = (clock_type::now() - t0) + std::chrono::milliseconds(300);
  sched.run();
  r.woken = g_woken;
  r.peak = status_bytes("VmHWM:");
  channel.send(r);
}

asio::awaitable<void> asio_nap() {
  ++g_parked;
  asio::steady_timer t(co_await asio::this_coro::executor, g_wait);
  co_await t.async_wait(asio::use_awaitable);
  ++g_woken;
}

void asio_in_child(const clab::child_channel<sleepers_report>& channel) {
  asio::io_context io(1);
  sleepers_report r;
  r.base = status_bytes("VmRSS:");
  const std::int64_t cpu0 = process_cpu_ns();
  const auto t0 = clock_type::now();
  for (int i = 0; i < k_sleepers; ++i) asio::co_spawn(io, asio_nap(), asio::detached);
  // Posted after every co_spawn's start: it runs once each has run up to its async_wait.
  asio::post(io, [&r, cpu0] {
    r.cpu_ns = process_cpu_ns() - cpu0;
    r.asleep = status_bytes("VmRSS:");
    r.parked = g_woken == 0 ? g_parked : -g_woken;
  });
  g_wait = (clock_type::now() - t0) + std::chrono::milliseconds(300);
  io.run();
  r.woken = g_woken;
  r.peak = status_bytes("VmHWM:");
  channel.send(r);
}

/// Runs `which` ("ours" or "asio-coro") in a fresh process: fork, then exec this very program with
/// --clab-sleepers-child=WHICH --clab-report-fd=N; the report comes back over a pipe. False (and
/// `got` untouched) if the child failed.
bool run_fresh(const char* which, sleepers_report& got) {
  int up[2];
  if (::pipe2(up, O_CLOEXEC) != 0) return false;
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(up[0]);
    ::close(up[1]);
    return false;
  }
  if (pid == 0) {
    const int fd = ::fcntl(up[1], F_DUPFD, 10);  // a copy without O_CLOEXEC: it survives the exec
    const std::string child = std::string("--clab-sleepers-child=") + which;
    const std::string report = "--clab-report-fd=" + std::to_string(fd);
    ::execl("/proc/self/exe", "bench_units", child.c_str(), report.c_str(),
            static_cast<char*>(nullptr));
    _exit(127);
  }
  ::close(up[1]);
  sleepers_report r;
  std::size_t have = 0;
  for (;;) {
    const ssize_t n = ::read(up[0], reinterpret_cast<char*>(&r) + have, sizeof r - have);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    have += static_cast<std::size_t>(n);
  }
  ::close(up[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (have != sizeof r || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return false;
  got = r;
  return true;
}

template <const char* Which>
void coro_sleepers_rss(benchmark::State& state) {
  for (auto _ : state) {
    sleepers_report got;
    if (!run_fresh(Which, got)) {
      state.SkipWithError("the child process failed (see its stderr)");
      return;
    }
    if (got.parked < 0) {
      state.SkipWithError("sleepers woke before the reading (the machine is slow): not measured");
      return;
    }
    if (got.parked != k_sleepers || got.woken != k_sleepers || got.asleep <= got.base) {
      state.SkipWithError("the child did not put every coroutine to sleep and wake it");
      return;
    }
    constexpr double mb = 1024.0 * 1024.0;
    state.counters["peak_rss_mb"] = static_cast<double>(got.peak) / mb;
    state.counters["baseline_mb"] = static_cast<double>(got.base) / mb;
    state.counters["bytes_per_task"] = static_cast<double>(got.asleep - got.base) / k_sleepers;
    state.counters["frame_bytes"] = static_cast<double>(got.frame_bytes);
    state.counters["ns_per_unit"] = static_cast<double>(got.cpu_ns) / k_sleepers;
  }
}

constexpr char k_ours[] = "ours";
constexpr char k_asio[] = "asio-coro";

}  // namespace

namespace clab_units {

// One child per row, once: a million first touches and a 0.3 s sleep (Asio's row takes several
// seconds): in the full run only (bench_units --quick leaves them out).
void register_coro_sleepers(bool quick) {
  if (quick) return;
  benchmark::RegisterBenchmark("coro_sleepers_rss/ours", coro_sleepers_rss<k_ours>)
      ->Iterations(1)
      ->Repetitions(1)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("coro_sleepers_rss/asio-coro", coro_sleepers_rss<k_asio>)
      ->Iterations(1)
      ->Repetitions(1)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

/// The fresh process's side (bench_units --clab-sleepers-child=WHICH --clab-report-fd=N, called
/// from main before anything else): runs the row's body, writes its report to fd N. Exit status 0,
/// or 2 for arguments it does not know.
int sleepers_child_main(int argc, char** argv) {
  std::string_view which;
  int fd = -1;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a.rfind("--clab-sleepers-child=", 0) == 0) which = a.substr(22);
    if (a.rfind("--clab-report-fd=", 0) == 0) fd = std::stoi(std::string(a.substr(17)));
  }
  if (fd < 0 || (which != k_ours && which != k_asio)) return 2;
  const clab::child_channel<sleepers_report> channel(fd, -1);
  if (which == k_ours) {
    ours_in_child(channel);
  } else {
    asio_in_child(channel);
  }
  return 0;
}

}  // namespace clab_units
