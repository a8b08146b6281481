// Event loop of the simulator: find the earliest next event (a worker becoming available, a wait
// ending, a CPU phase finishing at its current share of the cores), advance every CPU phase to it,
// then let workers move on. Time is kept in double nanoseconds and rounded at the end.
#include "models/simulate.hpp"

#include <algorithm>
#include <cmath>
#include <deque>
#include <functional>
#include <limits>
#include <queue>
#include <stdexcept>

namespace clab {
namespace {

constexpr double k_inf = std::numeric_limits<double>::infinity();
// Two times closer than this are the same time, and CPU work smaller than it is done. Relative to
// the clock: a double holds ~16 digits, so past ~17 s of simulated time (2^34 ns) an absolute
// 1e-6 ns is below the spacing of doubles and a leftover sliver of work would never finish.
constexpr double k_abs_eps = 1e-6;   // ns
constexpr double k_rel_eps = 1e-12;  // of the current time

enum class state : std::uint8_t { not_started, idle, cpu, waiting, done };

struct worker_state {
  state s = state::not_started;
  double available_at = 0;
  std::deque<std::size_t> own;    // static placements: this worker's tasks, in order
  std::deque<std::size_t> ready;  // non-blocking: this worker's tasks whose wait has ended
  std::size_t current = 0;
  int phase = 0;         // 0 overhead, 1 wait, 2 cpu (blocking); 0 overhead, 2 cpu (non-blocking)
  double remaining = 0;  // CPU ns left in this phase
  double wake = 0;       // blocking wait ends
  bool queued = false;   // in the run queue (time slicing)
  bool on_core = false;  // among the first C of the run queue: computing now
  bool ran_one = false;  // has taken a task before
  bool asked = false;    // launcher_dispatches: waiting in line for the launcher's hand-off
  bool handed = false;   // launcher_dispatches: the hand-off is done, the next task may start
  double delay = 0;      // launcher_dispatches: wake-ups before the current task begins
  double slice = 0;      // ns left of the current time slice
  int home = -1;         // per-core queues: the core it last ran on; -1 before it starts
  bool ahead = false;    // per-core queues: just started on its launcher's core, runs first
  bool fresh = false;    // per-core queues: placed at its start and not yet queued there
  bool holding = false;  // deps, blocking: `current` is taken and waits for its predecessors
};

struct timer {
  double at;
  std::uint64_t seq;  // ties fire in the order the waits began
  std::size_t task;
  int worker;
  bool operator>(const timer& o) const { return at != o.at ? at > o.at : seq > o.seq; }
};

class simulator {
 public:
  simulator(std::span<const task> tasks, const sim_config& c) : tasks_(tasks), c_(c) {
    if (c.workers < 1 || c.cores < 1)
      throw std::invalid_argument("simulate: workers and cores >= 1");
    nw_ = static_cast<std::size_t>(c.workers);
    // The launcher is one more thread that computes: starting a worker costs it worker_start_ns
    // of CPU, on the same cores as the workers it has already started.
    w_.resize(nw_ + 1);
    if (c.worker_start_ns > 0) {
      w_[nw_].s = state::cpu;
      w_[nw_].remaining = static_cast<double>(c.worker_start_ns);
    } else {
      launched_ = nw_;
      w_[nw_].s = c.launcher_dispatches ? state::idle : state::done;
      submit_after_starts();
    }
    timeline_.resize(tasks.size());
    if (c.deps != nullptr) init_deps(*c.deps);
    if (per_core()) {
      cq_.resize(static_cast<std::size_t>(c.cores));
      pull_from_.assign(static_cast<std::size_t>(c.cores), k_inf);
      w_[nw_].home = 0;  // the launcher runs on the first core
    }
    const std::size_t n = tasks.size();
    for (int k = 0; k < c.workers; ++k) {
      worker_state& w = w_[static_cast<std::size_t>(k)];
      w.available_at = c.worker_start_ns > 0 ? k_inf : 0.0;
      if (c.policy == placement::static_blocks || c.policy == placement::one_per_task) {
        const auto [b, e] = block_range(n, c.workers, k);
        for (std::size_t i = b; i < e; ++i) w.own.push_back(i);
      } else if (c.policy == placement::round_robin || c.policy == placement::work_stealing) {
        for (std::size_t i = static_cast<std::size_t>(k); i < n; i += nw_) w.own.push_back(i);
      } else if (c.policy == placement::spawner_lifo && k == 0) {
        for (std::size_t i = 0; i < n; ++i) w.own.push_back(i);
      }
    }
    if (dynamic()) {
      for (std::size_t i = 0; i < n; ++i) shared_.push_back(i);
    }
    if (c.policy == placement::longest_first) {  // ties keep task order, as the pool's FIFO does
      std::stable_sort(shared_.begin(), shared_.end(), [&](std::size_t a, std::size_t b) {
        return tasks[a].duration_ns() > tasks[b].duration_ns();
      });
    }
  }

  sim_result run() {
    double makespan = 0;
    for (;;) {
      dispatch();
      schedule_cores();
      const double next = next_event();
      if (next == k_inf) break;
      advance_to(next);
      makespan = now_;
    }
    sim_result r;
    r.makespan_ns = static_cast<std::int64_t>(std::llround(makespan)) + c_.run_end_ns;
    r.timeline = std::move(timeline_);
    return r;
  }

 private:
  bool dynamic() const {
    return c_.policy == placement::dynamic_queue || c_.policy == placement::longest_first;
  }
  bool blocking() const { return c_.waits == wait_mode::blocking; }
  double eps() const { return std::max(k_abs_eps, now_ * k_rel_eps); }

  std::deque<std::size_t>& source(worker_state& w) { return dynamic() ? shared_ : w.own; }

  // The next task worker k starts, by the placement's rule; false when none is left for it.
  bool next_task(std::size_t k, std::size_t& out) {
    std::deque<std::size_t>& mine = source(w_[k]);
    const bool lifo_owner = c_.policy == placement::spawner_lifo;
    if (!mine.empty()) {
      out = lifo_owner ? mine.back() : mine.front();
      lifo_owner ? mine.pop_back() : mine.pop_front();
      return true;
    }
    if (c_.policy != placement::work_stealing && c_.policy != placement::spawner_lifo) return false;
    for (std::size_t i = 1; i < nw_; ++i) {  // steal, from the other end than the owner
      std::deque<std::size_t>& theirs = w_[(k + i) % nw_].own;
      if (theirs.empty()) continue;
      out = lifo_owner ? theirs.front() : theirs.back();
      lifo_owner ? theirs.pop_front() : theirs.pop_back();
      return true;
    }
    return false;
  }
  std::deque<std::size_t>& ready(worker_state& w) { return dynamic() ? shared_ready_ : w.ready; }

  double wait_of(std::size_t i) const {
    const auto w = static_cast<double>(tasks_[i].wait_ns);
    // An io task's request takes its round trip even with no wait asked of the service.
    if (tasks_[i].is_io()) {
      // The round trip past the wait, less the client's own CPU (a phase of its own on the worker).
      const double trip = static_cast<double>(
          tasks_[i].wait_ns > 0 ? c_.wait_overshoot.at(tasks_[i].wait_ns) : c_.io_zero_wait_ns);
      return std::max(0.0, std::max(0.0, w) + trip - static_cast<double>(c_.io_client_cpu_ns));
    }
    return w > 0 ? w + static_cast<double>(c_.wait_overshoot.at(tasks_[i].wait_ns)) : 0.0;
  }

  // An io request arriving now at the service: the time it queues there behind the requests
  // that came before it, each holding one service thread for io_service_cpu_ns (the probed
  // round trip already holds one request's own share).
  double service_queue_delay() {
    if (c_.io_service_cpu_ns <= 0) return 0;
    if (service_free_.empty()) service_free_.assign(std::max(1, c_.io_service_threads), 0.0);
    const auto first = std::min_element(service_free_.begin(), service_free_.end());
    const double begin = std::max(now_, *first);
    *first = begin + static_cast<double>(c_.io_service_cpu_ns);
    return begin - now_;
  }

  // Moves worker k into the next phase of its task with non-zero length, or finishes the task.
  void enter_phase(std::size_t k, int phase) {
    worker_state& w = w_[k];
    const std::size_t i = w.current;
    for (w.phase = phase; w.phase <= 2; ++w.phase) {
      const std::int64_t overhead =
          c_.per_task_ns + (tasks_[i].is_io() ? c_.io_client_cpu_ns : std::int64_t{0});
      if (w.phase == 0 && overhead > 0) {  // the executor's cost per task, an io request's CPU
        w.s = state::cpu;
        w.remaining = static_cast<double>(overhead);
        return;
      }
      const double wait =
          w.phase == 1 ? wait_of(i) + (tasks_[i].is_io() ? service_queue_delay() : 0.0) : 0.0;
      if (w.phase == 1 && blocking() && wait + w.delay > 0) {
        w.s = state::waiting;
        w.wake = now_ + wait + w.delay;
        w.delay = 0;
        return;
      }
      if (w.phase == 1 && wait > 0) {  // non-blocking: park the task on a timer, the worker is free
        timers_.push({now_ + wait, timer_seq_++, i, static_cast<int>(k)});
        w.s = state::idle;
        return;
      }
      if (w.phase == 2 && tasks_[i].cpu_ns > 0) {
        w.s = state::cpu;
        w.remaining = static_cast<double>(tasks_[i].cpu_ns);
        return;
      }
      if (w.phase == 1 && !blocking()) {  // zero wait: ready at once
        ready(w).push_back(i);
        w.s = state::idle;
        return;
      }
    }
    timeline_[i].end_ns = static_cast<std::int64_t>(std::llround(now_));
    w.s = state::idle;
    release_successors(i);
  }

  // --deps: counts of unfinished predecessors, and each task's successors (compressed rows).
  void init_deps(const task_graph& g) {
    if (g.size() != tasks_.size()) throw std::invalid_argument("simulate: graph and tasks differ");
    const std::size_t n = tasks_.size();
    left_.assign(n, 0);
    parked_on_.assign(n, k_none);
    started_.assign(n, 0);
    succ_first_.assign(n + 1, 0);
    for (std::size_t i = 0; i < n; ++i) {
      left_[i] = static_cast<std::uint32_t>(g.preds(i).size());
      for (const std::uint32_t p : g.preds(i)) ++succ_first_[p + 1];
    }
    for (std::size_t i = 0; i < n; ++i) succ_first_[i + 1] += succ_first_[i];
    succ_.resize(g.edges());
    std::vector<std::uint32_t> fill(succ_first_.begin(), succ_first_.end() - 1);
    for (std::size_t i = 0; i < n; ++i) {
      for (const std::uint32_t p : g.preds(i)) succ_[fill[p]++] = static_cast<std::uint32_t>(i);
    }
  }
  bool released(std::size_t i) const { return left_.empty() || left_[i] == 0; }
  // Task i has ended: a successor whose last predecessor it was is released; one parked on a
  // non-blocking worker goes to that worker's ready queue (an event's set() making it ready).
  void release_successors(std::size_t i) {
    if (left_.empty()) return;
    for (std::uint32_t k = succ_first_[i]; k < succ_first_[i + 1]; ++k) {
      const std::uint32_t s = succ_[k];
      if (--left_[s] == 0 && parked_on_[s] != k_none) ready(w_[parked_on_[s]]).push_back(s);
    }
  }

  // Worker k starts w.current: its record, then its first phase.
  void begin_task(std::size_t k) {
    worker_state& w = w_[k];
    w.delay = w.handed ? static_cast<double>(c_.handoff_delay_ns) : 0.0;
    w.ran_one = true;
    w.handed = false;
    if (!started_.empty()) started_[w.current] = 1;
    task_record& r = timeline_[w.current];
    r.id = tasks_[w.current].id;
    r.worker = static_cast<std::int32_t>(k);
    r.start_ns = static_cast<std::int64_t>(std::llround(now_));
    enter_phase(k, 0);
  }

  // Lets every idle worker pick up work at the current time, in worker order.
  void dispatch() {
    for (bool moved = true; moved;) {
      moved = false;
      for (std::size_t k = 0; k < nw_; ++k) {
        worker_state& w = w_[k];
        if (w.s == state::not_started && w.available_at <= now_ + eps()) {
          w.s = state::idle;
          if (per_core()) place_fresh(k);  // a new thread runs at once, if only to start waiting
        }
        if (w.s != state::idle) continue;
        // A launcher that hands out every task serves the idle workers one at a time, and only
        // once it has started all of them; a worker's first task comes with its start.
        const bool through_launcher = c_.launcher_dispatches && w.ran_one;
        if (through_launcher && !w.handed) {
          if (!w.asked && has_task(k)) {
            w.asked = true;
            handoffs_.push_back(k);
          } else if (!w.asked) {
            w.s = state::done;
          }
          continue;
        }
        if (w.holding) {  // deps, blocking: it waits for the task it holds
          if (!released(w.current)) continue;
          w.holding = false;
          begin_task(k);
          moved = true;
        } else if (next_task(k, w.current)) {  // a new task (non-blocking executors: this first)
          if (!released(w.current)) {          // deps: its predecessors have not all ended
            if (blocking()) {
              w.holding = true;
            } else {
              parked_on_[w.current] = k;  // started by release_successors()
            }
          } else {
            begin_task(k);
          }
          moved = true;
        } else if (!blocking() && !ready(w).empty()) {
          w.current = ready(w).front();
          ready(w).pop_front();
          if (!started_.empty() && started_[w.current] == 0) {  // released from its predecessors
            begin_task(k);
          } else {
            timeline_[w.current].worker = static_cast<std::int32_t>(k);
            enter_phase(k, 2);
          }
          moved = true;
        } else if (blocking()) {
          w.s = state::done;
        }
      }
      moved = serve_handoffs() || moved;
    }
  }

  // A task is left for worker k (launcher_dispatches uses only the shared queue or k's own).
  bool has_task(std::size_t k) { return !source(w_[k]).empty(); }

  // launcher_dispatches: once every worker is started, the launcher takes the waiting workers in
  // turn and spends per_task_ns of CPU on each one's hand-off. True if it handed one out at once.
  bool serve_handoffs() {
    worker_state& launcher = w_[nw_];
    if (!c_.launcher_dispatches || launcher.s != state::idle || handoffs_.empty()) return false;
    if (c_.launcher_handoff_ns > 0) {
      launcher.s = state::cpu;
      launcher.remaining = static_cast<double>(c_.launcher_handoff_ns);
      return false;
    }
    hand_over();
    return true;
  }

  void hand_over() {
    worker_state& w = w_[handoffs_.front()];
    handoffs_.pop_front();
    w.asked = false;
    w.handed = true;
  }

  bool sliced() const { return c_.time_slice_ns > 0; }

  // The share of a core each CPU phase gets: processor sharing gives every runnable phase
  // cores / runnable; time slicing gives the phases at the head of the run queue a whole core
  // each and the rest none until their turn.
  std::vector<double> rates() const {
    std::vector<double> r(w_.size(), 0.0);
    int running = 0;
    for (const worker_state& w : w_) running += w.s == state::cpu ? 1 : 0;
    const double shared = running > c_.cores ? static_cast<double>(c_.cores) / running : 1.0;
    for (std::size_t k = 0; k < w_.size(); ++k) {
      if (w_[k].s == state::cpu) r[k] = !sliced() ? shared : w_[k].on_core ? 1.0 : 0.0;
    }
    return r;
  }

  // Time slicing: phases that stopped computing leave the run queue, new ones join at its tail,
  // and a running phase whose slice is spent goes to the tail if another one is waiting.
  void schedule_cores() {
    if (!sliced()) return;
    if (per_core()) {
      schedule_per_core();
      return;
    }
    drop_stopped(runq_);
    for (std::size_t k = 0; k < w_.size(); ++k) {
      worker_state& w = w_[k];
      if (w.s != state::cpu || w.queued) continue;
      w.queued = true;
      w.slice = static_cast<double>(c_.time_slice_ns);
      runq_.push_back(k);
    }
    const std::size_t cores = static_cast<std::size_t>(c_.cores);
    preempt_launcher(cores);
    std::vector<std::size_t> expired;
    for (std::size_t i = 0; i < std::min(cores, runq_.size()); ++i) {
      if (w_[runq_[i]].slice <= eps()) expired.push_back(runq_[i]);
    }
    for (const std::size_t k : expired) {
      w_[k].slice = static_cast<double>(c_.time_slice_ns);
      if (runq_.size() <= cores) continue;  // nobody waits: it keeps its core
      runq_.erase(std::find(runq_.begin(), runq_.end(), k));
      runq_.push_back(k);
    }
    for (std::size_t i = 0; i < runq_.size(); ++i) w_[runq_[i]].on_core = i < cores;
  }

  // Takes the phases that no longer compute out of a run queue.
  void drop_stopped(std::deque<std::size_t>& q) {
    std::erase_if(q, [&](std::size_t k) {
      if (w_[k].s == state::cpu) return false;
      w_[k].queued = false;
      w_[k].on_core = false;
      return true;
    });
  }

  bool per_core() const { return sliced() && c_.balance_delay_ns > 0; }

  // Per-core queues: each core runs the phase at the head of its own queue. A phase that stops
  // computing leaves its queue; one that starts joins the queue of its core (place_fresh(),
  // place_woken()); a spent slice goes to the back of its own queue; balance() moves a phase
  // to an empty core after the delay.
  void schedule_per_core() {
    for (std::deque<std::size_t>& q : cq_) drop_stopped(q);
    for (std::size_t k = 0; k < w_.size(); ++k) {
      worker_state& w = w_[k];
      if (w.s != state::cpu) {  // it began with a wait: no longer new when it computes
        w.ahead = false;
        w.fresh = false;
      }
      if (w.s != state::cpu || w.queued) continue;
      w.queued = true;
      w.slice = static_cast<double>(c_.time_slice_ns);
      if (w.home < 0) {
        place_fresh(k);
      } else if (!w.ahead && !w.fresh) {
        place_woken(k);  // not a new worker: that one stays where it was started, even once the
                         // other core has gone idle (prefork's first two tasks, side by side at
                         // half speed for about 10 ms), until the balance moves it
      }
      w.fresh = false;
      std::deque<std::size_t>& q = cq_[static_cast<std::size_t>(w.home)];
      if (w.ahead && !q.empty() && q.front() == nw_) {
        q.insert(q.begin(), k);  // ahead of the launcher, which was computing at the head
      } else {
        q.push_back(k);
      }
      w.ahead = false;
    }
    for (std::deque<std::size_t>& q : cq_) {  // a spent slice goes to the back of its own queue
      if (q.size() > 1 && w_[q.front()].slice <= eps()) {
        w_[q.front()].slice = static_cast<double>(c_.time_slice_ns);
        q.push_back(q.front());
        q.pop_front();
      } else if (!q.empty() && w_[q.front()].slice <= eps()) {
        w_[q.front()].slice = static_cast<double>(c_.time_slice_ns);
      }
    }
    balance();
    for (const std::deque<std::size_t>& q : cq_) {
      for (std::size_t i = 0; i < q.size(); ++i) w_[q[i]].on_core = i == 0;
    }
  }

  // Per core, the phases computing there besides worker k: queued, or started and not yet queued.
  std::vector<std::size_t> loads_besides(std::size_t k) const {
    std::vector<std::size_t> load(cq_.size(), 0);
    for (std::size_t j = 0; j < w_.size(); ++j) {
      if (j != k && w_[j].home >= 0 && w_[j].s == state::cpu) {
        ++load[static_cast<std::size_t>(w_[j].home)];
      }
    }
    return load;
  }

  // A phase that begins computing (after a wait, or a worker's next task after a pause) goes back
  // to the core it last ran on, unless that core is busy and another has nothing to run.
  void place_woken(std::size_t k) {
    const std::vector<std::size_t> load = loads_besides(k);
    const auto home = static_cast<std::size_t>(w_[k].home);
    if (load[home] == 0) return;
    for (std::size_t c = 0; c < cq_.size(); ++c) {
      if (load[c] == 0) {
        w_[k].home = static_cast<int>(c);
        return;
      }
    }
  }

  // A worker's first core, chosen when it starts: the one with the fewest phases computing (Linux
  // places a new thread on the idlest core). On a tie between idle cores, a core other than its
  // launcher's; between busy ones, every other time its launcher's, or never (see
  // sim_config::ties_alternate). On its launcher's core it runs first (a new thread gets an
  // early deadline) and the launcher waits behind it.
  void place_fresh(std::size_t k) {
    std::vector<std::size_t> load = loads_besides(k);
    const auto mine = static_cast<std::size_t>(w_[nw_].home);
    // A start that costs the launcher time is its own work: it was computing when it made this
    // worker, even where it has just gone idle (a pool's parent, done forking) or waits from now.
    if (c_.worker_start_ns > 0 && w_[nw_].s != state::cpu) ++load[mine];
    std::size_t best = mine;
    bool tie = false;
    for (std::size_t c = 0; c < cq_.size(); ++c) {
      if (c == mine) continue;
      if (load[c] < load[best] || (best == mine && load[c] == load[best])) {
        tie = best == mine && load[c] == load[mine];
        best = c;
      }
    }
    if (tie && load[mine] > 0 && c_.ties_alternate && (busy_ties_++ % 2) == 1) best = mine;
    w_[k].home = static_cast<int>(best);
    w_[k].ahead = best == mine;
    w_[k].fresh = true;
  }

  // A core with nothing queued, while another core has a phase waiting, takes the one that has
  // waited longest once balance_delay_ns has passed since the imbalance began.
  void balance() {
    std::size_t busiest = 0;
    for (std::size_t c = 1; c < cq_.size(); ++c) {
      if (cq_[c].size() > cq_[busiest].size()) busiest = c;
    }
    const bool waiting = cq_[busiest].size() > 1;
    for (std::size_t c = 0; c < cq_.size(); ++c) {
      if (!cq_[c].empty() || !waiting) {
        pull_from_[c] = k_inf;
        continue;
      }
      if (pull_from_[c] == k_inf) pull_from_[c] = now_;
      if (now_ + eps() < pull_from_[c] + static_cast<double>(c_.balance_delay_ns)) continue;
      std::deque<std::size_t>& from = cq_[busiest];
      const std::size_t k = from[1];  // the head computes; the next has waited longest
      from.erase(from.begin() + 1);
      w_[k].home = static_cast<int>(c);
      w_[k].slice = static_cast<double>(c_.time_slice_ns);
      cq_[c].push_back(k);
      pull_from_[c] = k_inf;
      return;  // one move at a time; the next step looks again
    }
  }

  // A worker the launcher has just started takes the launcher's core if every core is taken: a
  // new thread or process is placed ahead of the one that made it (Linux's EEVDF gives a new task
  // half a slice's deadline). The launcher has run less than its share, so it is next in line and
  // runs again when the next slice on any core ends, which makes it start about one worker per
  // slice / cores while the cores are busy, not a burst of them in one slice.
  void preempt_launcher(std::size_t cores) {
    if (starter_ == k_none) return;
    worker_state& fresh = w_[starter_];
    if (fresh.s == state::not_started || fresh.s == state::idle) return;  // not yet running
    const std::size_t k = starter_;
    starter_ = k_none;
    if (fresh.s != state::cpu || runq_.size() <= cores) return;  // it waits, or a core is free
    const auto launcher = std::find(runq_.begin(), runq_.end(), nw_);
    const auto fresh_at = std::find(runq_.begin(), runq_.end(), k);
    if (launcher == runq_.end() || fresh_at == runq_.end()) return;
    const auto l = static_cast<std::size_t>(launcher - runq_.begin());
    const auto f = static_cast<std::size_t>(fresh_at - runq_.begin());
    if (l >= cores || f < cores) return;  // the launcher was not running, or the worker is
    runq_.erase(runq_.begin() + static_cast<std::ptrdiff_t>(f));
    runq_[l] = k;
    runq_.insert(runq_.begin() + static_cast<std::ptrdiff_t>(cores), nw_);
  }

  // A pool's caller submits its tasks one by one once the workers are started; that CPU time
  // competes with the workers for the cores. (The queue is modelled as full from the start: on
  // the development machine the workers never outran the caller.)
  void submit_after_starts() {
    worker_state& launcher = w_[nw_];
    if (c_.submit_ns <= 0 || c_.launcher_dispatches || submitting_) return;
    submitting_ = true;
    launcher.s = state::cpu;
    launcher.remaining = static_cast<double>(c_.submit_ns) * static_cast<double>(tasks_.size());
  }

  double next_event() const {
    double next = k_inf;
    const std::vector<double> r_of = rates();
    for (std::size_t k = 0; k < w_.size(); ++k) {
      const worker_state& w = w_[k];
      if (w.s == state::not_started) next = std::min(next, w.available_at);
      if (w.s == state::waiting) next = std::min(next, w.wake);
      const double r = r_of[k];
      if (r > 0) {
        next = std::min(next, now_ + w.remaining / r);
        if (per_core()) {
          if (cq_[static_cast<std::size_t>(w.home)].size() > 1)
            next = std::min(next, now_ + w.slice);
        } else if (sliced() && runq_.size() > static_cast<std::size_t>(c_.cores)) {
          next = std::min(next, now_ + w.slice);
        }
      }
    }
    if (!timers_.empty()) next = std::min(next, timers_.top().at);
    for (const double from : pull_from_) {
      if (from < k_inf) next = std::min(next, from + static_cast<double>(c_.balance_delay_ns));
    }
    return next;
  }

  void advance_to(double t) {
    const double dt = std::max(0.0, t - now_);
    const std::vector<double> r_of = rates();
    now_ = std::max(now_, t);
    for (std::size_t k = 0; k < w_.size(); ++k) {
      w_[k].remaining -= dt * r_of[k];
      if (r_of[k] > 0) w_[k].slice -= dt;
    }
    // Timers fire in time order; their CPU parts become ready.
    while (!timers_.empty() && timers_.top().at <= now_ + eps()) {
      const timer fired = timers_.top();
      timers_.pop();
      ready(w_[static_cast<std::size_t>(fired.worker)]).push_back(fired.task);
    }
    for (std::size_t k = 0; k < nw_; ++k) {
      worker_state& w = w_[k];
      if (w.s == state::waiting && w.wake <= now_ + eps()) enter_phase(k, 2);
      if (w.s == state::cpu && w.remaining <= eps()) enter_phase(k, w.phase + 1);
    }
    worker_state& launcher = w_[nw_];
    if (launcher.s == state::cpu && launcher.remaining <= eps()) {
      if (launched_ < nw_) {  // a start is done
        starter_ = launched_;
        w_[launched_++].available_at = now_;
        if (launched_ < nw_) {
          launcher.remaining = static_cast<double>(c_.worker_start_ns);
        } else {
          launcher.s = c_.launcher_dispatches ? state::idle : state::done;
          submit_after_starts();
        }
      } else if (submitting_) {  // every task is submitted
        submitting_ = false;
        launcher.s = state::done;
      } else {  // a hand-off is done
        hand_over();
        launcher.s = state::idle;
      }
    }
    // The run queue is brought up to date after dispatch(), not here: a worker that has finished
    // a task and goes straight on with the next keeps its place and the rest of its slice.
  }

  std::span<const task> tasks_;
  sim_config c_;
  std::vector<worker_state> w_;  // the workers, then the launcher
  std::size_t nw_ = 0;           // workers
  std::size_t launched_ = 0;     // workers the launcher has started
  bool submitting_ = false;      // the launcher submits the tasks (sim_config::submit_ns)
  static constexpr std::size_t k_none = static_cast<std::size_t>(-1);
  std::size_t starter_ = k_none;  // time slicing: the worker just started, until it runs
  std::size_t busy_ties_ = 0;     // per-core queues: new workers placed between equally busy cores
  std::deque<std::size_t> handoffs_;  // launcher_dispatches: workers waiting for their next task
  std::deque<std::size_t> shared_;
  std::deque<std::size_t> shared_ready_;
  std::deque<std::size_t> runq_;  // time slicing: CPU phases in turn order; the first C run
  std::vector<std::deque<std::size_t>> cq_;  // per-core queues: each core's phases, head runs
  std::vector<double> pull_from_;            // per core: since when it idles beside a waiting phase
  std::priority_queue<timer, std::vector<timer>, std::greater<>> timers_;
  std::uint64_t timer_seq_ = 0;
  std::vector<double> service_free_;  // per service thread: when it is next free (io requests)
  std::vector<task_record> timeline_;
  double now_ = 0;
  // --deps (empty without): unfinished predecessors per task, the worker a non-blocking task is
  // parked on (k_none if not parked), whether it has started, and the successors of each task.
  std::vector<std::uint32_t> left_;
  std::vector<std::size_t> parked_on_;
  std::vector<std::uint8_t> started_;
  std::vector<std::uint32_t> succ_first_;
  std::vector<std::uint32_t> succ_;
};

std::int64_t cost_of(unit_cost c, const calibration& m) {
  switch (c) {
    case unit_cost::none:
      return 0;
    case unit_cost::thread_start:
      return m.thread_start_ns;
    case unit_cost::process_start:
      return m.process_start_ns;
    case unit_cost::probed:
    case unit_cost::probed_worker_cpu:
      return -1;  // the caller's probe
  }
  return 0;
}

}  // namespace

sim_result simulate(std::span<const task> tasks, const sim_config& config) {
  if (tasks.empty()) return {};  // no task, no worker started: nothing to wait for
  return simulator(tasks, config).run();
}

sim_config configure(const schedule& plan, int requested_workers, std::size_t n,
                     const calibration& machine, std::int64_t probed_ns,
                     std::int64_t probed_caller_ns, std::int64_t probed_worker_cpu_ns) {
  sim_config c;
  c.policy = plan.policy;
  c.waits = plan.waits;
  c.workers = std::max(1, workers_used(plan, requested_workers, n));
  c.cores = machine.cores;
  // A probe measures the time per task with one worker: the launcher of a worker per task pays
  // it before each start, a pool's worker before each task.
  c.worker_start_ns =
      plan.worker_start == unit_cost::probed ? probed_ns : cost_of(plan.worker_start, machine);
  // A worker's own CPU per task, less what the launcher's probed time already holds: while
  // posix_spawn or a fork runs, the launcher waits for the child, whose CPU that wait is.
  const std::int64_t launcher_waits = plan.worker_start == unit_cost::probed
                                          ? std::max<std::int64_t>(0, probed_ns - probed_caller_ns)
                                          : 0;
  c.per_task_ns = plan.per_task == unit_cost::probed ? probed_ns
                  : plan.per_task == unit_cost::probed_worker_cpu
                      ? std::max<std::int64_t>(0, probed_worker_cpu_ns - launcher_waits)
                      : cost_of(plan.per_task, machine);
  c.wait_overshoot = machine.sleep_overshoot;
  c.time_slice_ns = machine.time_slice_ns;
  c.launcher_dispatches = plan.launcher_dispatches;
  // A pool's caller submits each task itself: its probed CPU per task, beside the workers.
  if (plan.caller_submits && plan.per_task == unit_cost::probed) c.submit_ns = probed_caller_ns;
  // Through pipes, a hand-off wakes the parent (the report) and then the worker (the next task).
  // The parent's part of the probed cost is its own CPU time, spent one hand-off at a time; the
  // rest is the worker's, spent side by side.
  if (plan.launcher_dispatches) {
    c.handoff_delay_ns = 2 * machine.wakeup_ns;
    if (plan.per_task == unit_cost::probed) {
      c.launcher_handoff_ns = std::min(probed_caller_ns, probed_ns);
      c.per_task_ns = probed_ns - c.launcher_handoff_ns;
    }
  }
  return c;
}

}  // namespace clab
