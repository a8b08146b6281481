// Per-unit costs of lesson 05's event loop beside Boost.Asio (io_context, one thread, concurrency
// hint 1) and libuv (uv_loop_t), each row as the counter ns_per_unit for the unit its name states:
//   loop_post_run/<lib>        one callback queued from the loop's thread while it is not running,
//                              then run() until idle: ours call_soon, Asio post, libuv
//                              uv_idle_start (libuv has no callback queue; an idle handle that
//                              stops itself is its cheapest "run this on the next iteration")
//   loop_post_chain/<lib>      one callback queued from inside a running callback (a chain of
//                              1000 per run(), so run()'s entry and exit are amortised away;
//                              libuv: an idle handle called once per loop iteration)
//   loop_timer_fire/<lib>      one timer armed with a zero delay, then run() until it fired
//   loop_timer_cancel/<lib>    one timer armed 1 s ahead plus one cancel, with 1024 armed: each
//                              iteration cancels the oldest and arms a new one (a request timeout
//                              cancelled when the reply comes). Asio's cost includes running the
//                              cancelled handler (operation_aborted), which is how Asio cancels
//   loop_post_wake/<lib>       one callback posted from another thread until it has run, posted
//                              again at once (a round trip: ours post, Asio post, uv_async_send)
//   loop_post_sleeping/<lib>   the same to a loop that has surely gone to sleep (50 µs after the
//                              last callback): post() to the callback's start, the wake-up's cost
//   loop_timers_1m/<lib>       1 000 000 concurrent timers, deadlines spread over 1 s (starting
//                              1.5 s ahead, after the slowest arming): the CPU per timer to arm
//                              and fire it (ns_per_unit, CLOCK_PROCESS_CPUTIME_ID; arm_ns the
//                              arming alone) and the peak resident memory per timer above the
//                              baseline (bytes_per_timer), each library in a fresh child process
//                              whose peak RSS is reset first (clear_refs 5)
//   loop_timer_overshoot/<delay µs>/<spin µs>  ours only: the median lateness of one timer of that
//                              delay (ns_per_unit; p99_ns beside it), the models' per-wait cost
// The two rows that cross threads report the median of per-iteration samples (mean_ns beside it):
// on this shared machine one preempted sample can last a whole time slice. Asio's io_context with
// posts only (no timer or socket yet) sleeps on a condition variable, not in epoll.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "lessons/05_event_loop/event_loop.hpp"

namespace {

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

double ns_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double, std::nano>(b - a).count();
}

/// For the rows that cross threads, where a preempted thread can stretch one sample by a time
/// slice (milliseconds on this shared machine): ns_per_unit is the median of the per-iteration
/// samples, mean_ns their mean beside it.
class latency_samples {
 public:
  explicit latency_samples(benchmark::State& state) : state_(state) { ns_.reserve(1 << 20); }
  latency_samples(const latency_samples&) = delete;
  latency_samples& operator=(const latency_samples&) = delete;
  ~latency_samples() {
    if (ns_.empty()) return;
    double sum = 0;
    for (const double v : ns_) sum += v;
    std::nth_element(ns_.begin(), ns_.begin() + static_cast<std::ptrdiff_t>(ns_.size() / 2),
                     ns_.end());
    state_.counters["ns_per_unit"] = ns_[ns_.size() / 2];
    state_.counters["mean_ns"] = sum / static_cast<double>(ns_.size());
  }
  void add(double ns) { ns_.push_back(ns); }

 private:
  benchmark::State& state_;
  std::vector<double> ns_;
};

void per_unit(benchmark::State& state, clock_type::time_point t0, double units_per_iteration) {
  state.counters["ns_per_unit"] = ns_between(t0, clock_type::now()) /
                                  (static_cast<double>(state.iterations()) * units_per_iteration);
}

// --- post one callback and run ---------------------------------------------------------------

void loop_post_run_ours(benchmark::State& state) {
  clab::event_loop loop;
  benchmark::IterationCount ran = 0;
  const auto t0 = clock_type::now();
  for (auto _ : state) {
    loop.call_soon([&ran] { ++ran; });
    loop.run();
  }
  per_unit(state, t0, 1);
  if (ran != state.iterations()) state.SkipWithError("a callback did not run");
}

void loop_post_run_asio(benchmark::State& state) {
  asio::io_context io(1);
  benchmark::IterationCount ran = 0;
  const auto t0 = clock_type::now();
  for (auto _ : state) {
    asio::post(io, [&ran] { ++ran; });
    io.run();
    io.restart();
  }
  per_unit(state, t0, 1);
  if (ran != state.iterations()) state.SkipWithError("a handler did not run");
}

void loop_post_run_libuv(benchmark::State& state) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  uv_idle_t idle;
  uv_idle_init(&loop, &idle);
  benchmark::IterationCount ran = 0;
  idle.data = &ran;
  const auto t0 = clock_type::now();
  for (auto _ : state) {
    uv_idle_start(&idle, [](uv_idle_t* h) {
      ++*static_cast<benchmark::IterationCount*>(h->data);
      uv_idle_stop(h);
    });
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  per_unit(state, t0, 1);
  uv_close(reinterpret_cast<uv_handle_t*>(&idle), nullptr);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  if (ran != state.iterations()) state.SkipWithError("an idle callback did not run");
}

// --- a chain of callbacks, each queued by the one before -------------------------------------

constexpr int k_chain = 1000;

void loop_post_chain_ours(benchmark::State& state) {
  struct chain {
    clab::event_loop loop;
    int left = 0;
    static void step(chain* c) {
      if (--c->left > 0) c->loop.call_soon([c] { step(c); });
    }
  } c;
  const auto t0 = clock_type::now();
  for (auto _ : state) {
    c.left = k_chain;
    c.loop.call_soon([p = &c] { chain::step(p); });
    c.loop.run();
  }
  per_unit(state, t0, k_chain);
}

void loop_post_chain_asio(benchmark::State& state) {
  struct chain {
    asio::io_context io{1};
    int left = 0;
    static void step(chain* c) {
      if (--c->left > 0) asio::post(c->io, [c] { step(c); });
    }
  } c;
  const auto t0 = clock_type::now();
  for (auto _ : state) {
    c.left = k_chain;
    asio::post(c.io, [p = &c] { chain::step(p); });
    c.io.run();
    c.io.restart();
  }
  per_unit(state, t0, k_chain);
}

void loop_post_chain_libuv(benchmark::State& state) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  uv_idle_t idle;
  uv_idle_init(&loop, &idle);
  int left = 0;
  idle.data = &left;
  const auto t0 = clock_type::now();
  for (auto _ : state) {
    left = k_chain;
    // An active idle handle is called once per loop iteration: libuv's "queue me again".
    uv_idle_start(&idle, [](uv_idle_t* h) {
      if (--*static_cast<int*>(h->data) == 0) uv_idle_stop(h);
    });
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  per_unit(state, t0, k_chain);
  uv_close(reinterpret_cast<uv_handle_t*>(&idle), nullptr);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
}

// --- arm one timer with no delay and run until it fires --------------------------------------

void loop_timer_fire_ours(benchmark::State& state) {
  clab::event_loop loop;
  benchmark::IterationCount fired = 0;
  const auto t0 = clock_type::now();
  for (auto _ : state) {
    loop.call_later(0ns, [&fired] { ++fired; });
    loop.run();
  }
  per_unit(state, t0, 1);
  if (fired != state.iterations()) state.SkipWithError("a timer did not fire");
}

void loop_timer_fire_asio(benchmark::State& state) {
  asio::io_context io(1);
  asio::steady_timer timer(io);
  benchmark::IterationCount fired = 0;
  const auto t0 = clock_type::now();
  for (auto _ : state) {
    timer.expires_after(0ns);
    timer.async_wait([&fired](const boost::system::error_code&) { ++fired; });
    io.run();
    io.restart();
  }
  per_unit(state, t0, 1);
  if (fired != state.iterations()) state.SkipWithError("a timer did not fire");
}

void loop_timer_fire_libuv(benchmark::State& state) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  uv_timer_t timer;
  uv_timer_init(&loop, &timer);
  benchmark::IterationCount fired = 0;
  timer.data = &fired;
  const auto t0 = clock_type::now();
  for (auto _ : state) {
    uv_timer_start(
        &timer, [](uv_timer_t* t) { ++*static_cast<benchmark::IterationCount*>(t->data); }, 0, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  per_unit(state, t0, 1);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer), nullptr);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  if (fired != state.iterations()) state.SkipWithError("a timer did not fire");
}

// --- arm one and cancel one, 1024 armed --------------------------------------------------------

constexpr std::size_t k_window = 1024;

void loop_timer_cancel_ours(benchmark::State& state) {
  clab::event_loop loop;
  std::vector<clab::timer_handle> armed(k_window);
  std::uint64_t fired = 0;
  for (auto& h : armed) h = loop.call_later(1s, [&fired] { ++fired; });
  std::size_t oldest = 0;
  const auto t0 = clock_type::now();
  for (auto _ : state) {
    loop.cancel(armed[oldest]);
    armed[oldest] = loop.call_later(1s, [&fired] { ++fired; });
    oldest = (oldest + 1) % k_window;
  }
  per_unit(state, t0, 1);
  for (const auto& h : armed) loop.cancel(h);
  loop.run();
  if (fired != 0 || loop.pending_timers() != 0) state.SkipWithError("a cancelled timer fired");
}

void loop_timer_cancel_asio(benchmark::State& state) {
  asio::io_context io(1);
  std::vector<asio::steady_timer> armed;
  armed.reserve(k_window);
  std::uint64_t fired = 0;
  std::uint64_t aborted = 0;
  const auto handler = [&fired, &aborted](const boost::system::error_code& ec) {
    ++(ec == asio::error::operation_aborted ? aborted : fired);
  };
  for (std::size_t i = 0; i < k_window; ++i) {
    armed.emplace_back(io, 1s);
    armed.back().async_wait(handler);
  }
  std::size_t oldest = 0;
  const auto t0 = clock_type::now();
  for (auto _ : state) {
    armed[oldest].cancel();
    armed[oldest].expires_after(1s);
    armed[oldest].async_wait(handler);
    if (++oldest == k_window) {
      oldest = 0;
      io.poll();  // runs the cancelled handlers: Asio's cancel completes them with an error
      io.restart();
    }
  }
  per_unit(state, t0, 1);
  for (auto& t : armed) t.cancel();
  io.run();
  if (fired != 0) state.SkipWithError("a cancelled timer fired");
}

void loop_timer_cancel_libuv(benchmark::State& state) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  std::vector<uv_timer_t> armed(k_window);
  std::uint64_t fired = 0;
  const auto cb = [](uv_timer_t* t) { ++*static_cast<std::uint64_t*>(t->data); };
  for (auto& t : armed) {
    uv_timer_init(&loop, &t);
    t.data = &fired;
    uv_timer_start(&t, cb, 1000, 0);
  }
  std::size_t oldest = 0;
  const auto t0 = clock_type::now();
  for (auto _ : state) {
    uv_timer_stop(&armed[oldest]);
    uv_timer_start(&armed[oldest], cb, 1000, 0);
    oldest = (oldest + 1) % k_window;
  }
  per_unit(state, t0, 1);
  for (auto& t : armed) uv_close(reinterpret_cast<uv_handle_t*>(&t), nullptr);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  if (fired != 0) state.SkipWithError("a cancelled timer fired");
}

// --- post from another thread until the callback has run --------------------------------------

void wait_until(const std::atomic<bool>& flag) {
  while (!flag.load(std::memory_order_acquire)) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  }
}

void loop_post_wake_ours(benchmark::State& state) {
  clab::event_loop loop;
  std::atomic<bool> done{false};
  clab::loop_hold hold = loop.hold();
  std::thread runner([&loop] { loop.run(); });
  {
    latency_samples samples(state);
    for (auto _ : state) {
      const auto t0 = clock_type::now();
      done.store(false, std::memory_order_relaxed);
      loop.post([&done] { done.store(true, std::memory_order_release); });
      wait_until(done);
      samples.add(ns_between(t0, clock_type::now()));
    }
  }
  hold.release();
  runner.join();
}

void loop_post_wake_asio(benchmark::State& state) {
  asio::io_context io(1);
  std::atomic<bool> done{false};
  auto guard = asio::make_work_guard(io);
  std::thread runner([&io] { io.run(); });
  {
    latency_samples samples(state);
    for (auto _ : state) {
      const auto t0 = clock_type::now();
      done.store(false, std::memory_order_relaxed);
      asio::post(io, [&done] { done.store(true, std::memory_order_release); });
      wait_until(done);
      samples.add(ns_between(t0, clock_type::now()));
    }
  }
  guard.reset();
  runner.join();
}

void loop_post_wake_libuv(benchmark::State& state) {
  struct shared {
    uv_loop_t loop;
    uv_async_t async;
    std::atomic<bool> done{false};
    std::atomic<bool> quit{false};
  } s;
  uv_loop_init(&s.loop);
  s.async.data = &s;
  uv_async_init(&s.loop, &s.async, [](uv_async_t* a) {
    auto* sh = static_cast<shared*>(a->data);
    if (sh->quit.load(std::memory_order_acquire)) {
      uv_close(reinterpret_cast<uv_handle_t*>(a), nullptr);
      return;
    }
    sh->done.store(true, std::memory_order_release);
  });
  std::thread runner([&s] { uv_run(&s.loop, UV_RUN_DEFAULT); });
  {
    latency_samples samples(state);
    for (auto _ : state) {
      const auto t0 = clock_type::now();
      s.done.store(false, std::memory_order_relaxed);
      uv_async_send(&s.async);
      wait_until(s.done);
      samples.add(ns_between(t0, clock_type::now()));
    }
  }
  s.quit.store(true, std::memory_order_release);
  uv_async_send(&s.async);
  runner.join();
  uv_loop_close(&s.loop);
}

// --- post from another thread to a loop that is surely asleep ---------------------------------

/// Spins for `d` (the loop thread has gone to sleep by the end of it), then posts with `post`
/// and waits until the callback has stamped `ran_ns`: returns the post-to-callback latency.
template <class Post>
void post_to_sleeper(benchmark::State& state, std::atomic<std::int64_t>& ran_ns, Post post) {
  latency_samples samples(state);
  for (auto _ : state) {
    const auto until = clock_type::now() + 50us;
    while (clock_type::now() < until) {
    }
    ran_ns.store(0, std::memory_order_relaxed);
    const auto t0 = clock_type::now();
    post();
    std::int64_t t1 = 0;
    while ((t1 = ran_ns.load(std::memory_order_acquire)) == 0) {
    }
    samples.add(static_cast<double>(t1 - t0.time_since_epoch().count()));
  }
}

void stamp(std::atomic<std::int64_t>& ran_ns) {
  ran_ns.store(clock_type::now().time_since_epoch().count(), std::memory_order_release);
}

void loop_post_sleeping_ours(benchmark::State& state) {
  clab::event_loop loop;
  std::atomic<std::int64_t> ran_ns{0};
  clab::loop_hold hold = loop.hold();
  std::thread runner([&loop] { loop.run(); });
  post_to_sleeper(state, ran_ns, [&] { loop.post([&ran_ns] { stamp(ran_ns); }); });
  hold.release();
  runner.join();
}

void loop_post_sleeping_asio(benchmark::State& state) {
  asio::io_context io(1);
  std::atomic<std::int64_t> ran_ns{0};
  auto guard = asio::make_work_guard(io);
  std::thread runner([&io] { io.run(); });
  post_to_sleeper(state, ran_ns, [&] { asio::post(io, [&ran_ns] { stamp(ran_ns); }); });
  guard.reset();
  runner.join();
}

void loop_post_sleeping_libuv(benchmark::State& state) {
  struct shared {
    uv_loop_t loop;
    uv_async_t async;
    std::atomic<std::int64_t> ran_ns{0};
    std::atomic<bool> quit{false};
  } s;
  uv_loop_init(&s.loop);
  s.async.data = &s;
  uv_async_init(&s.loop, &s.async, [](uv_async_t* a) {
    auto* sh = static_cast<shared*>(a->data);
    if (sh->quit.load(std::memory_order_acquire)) {
      uv_close(reinterpret_cast<uv_handle_t*>(a), nullptr);
      return;
    }
    stamp(sh->ran_ns);
  });
  std::thread runner([&s] { uv_run(&s.loop, UV_RUN_DEFAULT); });
  post_to_sleeper(state, s.ran_ns, [&] { uv_async_send(&s.async); });
  s.quit.store(true, std::memory_order_release);
  uv_async_send(&s.async);
  runner.join();
  uv_loop_close(&s.loop);
}

// --- one million concurrent timers -------------------------------------------------------------

constexpr int k_million = 1'000'000;

/// Timer i's deadline offset: a permutation of 0..N-1 µs (7919 is prime to 10^6), so the timers
/// are armed in scattered deadline order, as independent tasks would arm them, without a table.
std::chrono::microseconds spread(int i) {
  return std::chrono::microseconds((static_cast<std::int64_t>(i) * 7919) % k_million);
}

std::int64_t process_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

/// The process's peak resident set, from /proc/self/status (VmHWM, kB), in bytes.
std::int64_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == "VmHWM:") {
      std::int64_t kb = 0;
      status >> kb;
      return kb * 1024;
    }
    status.ignore(4096, '\n');
  }
  return -1;
}

struct million_result {
  std::int64_t arm_cpu_ns = 0;
  std::int64_t total_cpu_ns = 0;
  std::int64_t peak_bytes = 0;  // above the baseline
  std::int64_t fired = 0;
  bool armed_in_time = false;  // arming ended before the first deadline
  bool ok = false;
};

/// The first deadline, after the arming: longer than the slowest library takes to arm a million
/// (about 1 s for Asio here), so that every loop has to wait through the whole second of
/// deadlines rather than find most of them already due.
constexpr auto k_lead = 1500ms;

/// Runs `body(result)` in a fresh child process: its peak RSS reset to its resident set just
/// before, its CPU clock read around it. A child per library keeps each one's freed memory (and
/// malloc's arenas) out of the next one's peak.
template <class F>
million_result in_child(F body) {
  int p[2];
  million_result r;
  if (pipe2(p, O_CLOEXEC) != 0) return r;
  const pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    million_result c;
    {
      std::ofstream clear("/proc/self/clear_refs");
      clear << "5";  // resets VmHWM to the current resident set (Linux 4.0+)
    }
    const std::int64_t base = peak_rss_bytes();
    const std::int64_t cpu0 = process_cpu_ns();
    body(c, cpu0);
    c.total_cpu_ns = process_cpu_ns() - cpu0;
    c.peak_bytes = peak_rss_bytes() - base;
    c.ok = base > 0;
    const ssize_t n = write(p[1], &c, sizeof c);
    _exit(n == sizeof c ? 0 : 1);
  }
  close(p[1]);
  if (pid > 0) {
    if (read(p[0], &r, sizeof r) != sizeof r) r.ok = false;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  close(p[0]);
  return r;
}

void report_million(benchmark::State& state, const million_result& r) {
  if (!r.ok || r.fired != k_million) {
    state.SkipWithError("the child did not fire every timer");
    return;
  }
  if (!r.armed_in_time) {
    state.SkipWithError("arming outlasted the lead time: most timers were due before run()");
    return;
  }
  state.counters["ns_per_unit"] = static_cast<double>(r.total_cpu_ns) / k_million;
  state.counters["arm_ns"] = static_cast<double>(r.arm_cpu_ns) / k_million;
  state.counters["bytes_per_timer"] = static_cast<double>(r.peak_bytes) / k_million;
}

void loop_timers_1m_ours(benchmark::State& state) {
  for (auto _ : state) {
    report_million(state, in_child([](million_result& r, std::int64_t cpu0) {
                     clab::event_loop loop;
                     std::int64_t fired = 0;
                     const auto start = clab::event_loop::clock::now() + k_lead;
                     for (int i = 0; i < k_million; ++i) {
                       loop.call_at(start + spread(i), [&fired] { ++fired; });
                     }
                     r.arm_cpu_ns = process_cpu_ns() - cpu0;
                     r.armed_in_time = clab::event_loop::clock::now() < start;
                     loop.run();
                     r.fired = fired;
                   }));
  }
}

void loop_timers_1m_asio(benchmark::State& state) {
  for (auto _ : state) {
    report_million(
        state, in_child([](million_result& r, std::int64_t cpu0) {
          asio::io_context io(1);
          std::int64_t fired = 0;
          std::vector<asio::steady_timer> timers;
          timers.reserve(k_million);
          const auto start = asio::steady_timer::clock_type::now() + k_lead;
          for (int i = 0; i < k_million; ++i) {
            timers.emplace_back(io, start + spread(i));
            timers.back().async_wait([&fired](const boost::system::error_code&) { ++fired; });
          }
          r.arm_cpu_ns = process_cpu_ns() - cpu0;
          r.armed_in_time = asio::steady_timer::clock_type::now() < start;
          io.run();
          r.fired = fired;
        }));
  }
}

void loop_timers_1m_libuv(benchmark::State& state) {
  for (auto _ : state) {
    report_million(
        state, in_child([](million_result& r, std::int64_t cpu0) {
          uv_loop_t loop;
          uv_loop_init(&loop);
          std::int64_t fired = 0;
          const auto start = clock_type::now() + k_lead;  // uv_now() stays put while arming
          // libuv's handles are the caller's memory: counted, as a user pays for them.
          auto* timers = static_cast<uv_timer_t*>(std::malloc(sizeof(uv_timer_t) * k_million));
          for (int i = 0; i < k_million; ++i) {
            uv_timer_init(&loop, &timers[i]);
            timers[i].data = &fired;
            // Milliseconds, relative to the loop's cached time: libuv's resolution.
            const auto ms =
                std::chrono::duration_cast<std::chrono::milliseconds>(k_lead + spread(i));
            uv_timer_start(
                &timers[i], [](uv_timer_t* t) { ++*static_cast<std::int64_t*>(t->data); },
                static_cast<std::uint64_t>(ms.count()), 0);
          }
          r.arm_cpu_ns = process_cpu_ns() - cpu0;
          r.armed_in_time = clock_type::now() < start;
          uv_run(&loop, UV_RUN_DEFAULT);
          r.fired = fired;
        }));
  }
}

// --- our loop's timer overshoot ----------------------------------------------------------------

void loop_timer_overshoot(benchmark::State& state) {
  const auto delay = std::chrono::microseconds(state.range(0));
  const auto spin = std::chrono::microseconds(state.range(1));
  clab::timer_overshoot o;
  for (auto _ : state) o = clab::measure_timer_overshoot(delay, 200, spin);
  state.counters["ns_per_unit"] = static_cast<double>(o.median.count());
  state.counters["p99_ns"] = static_cast<double>(o.p99.count());
}

}  // namespace

// Each row runs 0.1 s per repetition: millions of iterations of a nanosecond operation, and
// thousands of the cross-thread round trips, keep bench_units inside the bench budget.
BENCHMARK(loop_post_run_ours)->Name("loop_post_run/ours")->MinTime(0.1);
BENCHMARK(loop_post_run_asio)->Name("loop_post_run/asio")->MinTime(0.1);
BENCHMARK(loop_post_run_libuv)->Name("loop_post_run/libuv")->MinTime(0.1);
BENCHMARK(loop_post_chain_ours)->Name("loop_post_chain/ours")->MinTime(0.1);
BENCHMARK(loop_post_chain_asio)->Name("loop_post_chain/asio")->MinTime(0.1);
BENCHMARK(loop_post_chain_libuv)->Name("loop_post_chain/libuv")->MinTime(0.1);
BENCHMARK(loop_timer_fire_ours)->Name("loop_timer_fire/ours")->MinTime(0.1);
BENCHMARK(loop_timer_fire_asio)->Name("loop_timer_fire/asio")->MinTime(0.1);
BENCHMARK(loop_timer_fire_libuv)->Name("loop_timer_fire/libuv")->MinTime(0.1);
BENCHMARK(loop_timer_cancel_ours)->Name("loop_timer_cancel/ours")->MinTime(0.1);
BENCHMARK(loop_timer_cancel_asio)->Name("loop_timer_cancel/asio")->MinTime(0.1);
BENCHMARK(loop_timer_cancel_libuv)->Name("loop_timer_cancel/libuv")->MinTime(0.1);
BENCHMARK(loop_post_wake_ours)->Name("loop_post_wake/ours")->MinTime(0.1)->UseRealTime();
BENCHMARK(loop_post_wake_asio)->Name("loop_post_wake/asio")->MinTime(0.1)->UseRealTime();
BENCHMARK(loop_post_wake_libuv)->Name("loop_post_wake/libuv")->MinTime(0.1)->UseRealTime();
BENCHMARK(loop_post_sleeping_ours)->Name("loop_post_sleeping/ours")->MinTime(0.1)->UseRealTime();
BENCHMARK(loop_post_sleeping_asio)->Name("loop_post_sleeping/asio")->MinTime(0.1)->UseRealTime();
BENCHMARK(loop_post_sleeping_libuv)->Name("loop_post_sleeping/libuv")->MinTime(0.1)->UseRealTime();
BENCHMARK(loop_timer_overshoot)
    ->Name("loop_timer_overshoot")
    ->Args({100, 0})
    ->Args({1000, 0})
    ->Args({1000, 50})
    ->Iterations(1)
    ->UseRealTime();

namespace clab_units {

// One child each, about 2.5 s of wall time (1.5 s lead, then 1 s of deadlines); the CPU is the
// measurement. Registered from main() because the repetitions follow --quick (bench_units' budget).
void register_loop_timers_1m(int repetitions) {
  const std::pair<const char*, void (*)(benchmark::State&)> rows[] = {
      {"loop_timers_1m/ours", loop_timers_1m_ours},
      {"loop_timers_1m/asio", loop_timers_1m_asio},
      {"loop_timers_1m/libuv", loop_timers_1m_libuv}};
  for (const auto& [name, fn] : rows) {
    benchmark::RegisterBenchmark(name, fn)->Iterations(1)->Repetitions(repetitions)->UseRealTime();
  }
}

}  // namespace clab_units
