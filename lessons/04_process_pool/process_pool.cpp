// Lesson 04 — the process pool. Look for: the worker is a loop around lesson 02's child (read a
// task, run it, write the report), so a process is started P times per run instead of N times;
// and the parent always knows which task each worker holds, so a worker's death is pinned on
// exactly one task.
#include "lessons/04_process_pool/process_pool.hpp"

#include <unistd.h>

#include <span>

namespace clab {
namespace {

// [snippet:worker-loop]
/// A worker's whole life: take a task, run it, answer; end of file on the task pipe means the
/// pool is closing, and the worker returns (to _exit).
void worker_loop(int in, int out, void* /*context*/) {
  task_message m;
  while (read_all(in, std::as_writable_bytes(std::span(&m, 1))) == sizeof m) {
    const task_report report = run_to_report(m.work, from_ns(m.origin_ns), m.worker);
    if (!write_all(out, std::as_bytes(std::span(&report, 1)))) return;  // the parent is gone
  }
}
// [end-snippet]

}  // namespace

void process_pool::start(std::size_t k) {
  workers_.attach(k, fork_child(worker_loop, nullptr, /*with_task_pipe=*/true));
}

bool process_pool::send(std::size_t k, const task& t, run_clock::time_point origin,
                        std::optional<std::chrono::milliseconds> timeout) {
  const task_message m{
      .work = t, .origin_ns = to_ns(origin), .worker = static_cast<int>(k), .parent = getpid()};
  return workers_.send(k, m, timeout);
}

}  // namespace clab
