// Lesson 04 — process pool. The program behind `scripts/lesson 4`: the shared lesson CLI around
// the pre-forked pool. SIGINT or SIGTERM kills and reaps every worker, reports the run, and exits
// 130 or 143.
#include <cstdio>
#include <cstring>

#include "lessons/04_process_pool/process_pool.hpp"
#include "lessons/common/lesson_cli.hpp"
#include "workloads/process_io.hpp"

int main(int argc, char** argv) {
  clab::catch_termination();
  const clab::executor* executors[] = {&clab::process_pool_executor()};
  const int status = clab::lesson_main(
      {.number = "04", .title = "process pool", .executors = executors}, argc, argv);
  if (const int sig = clab::termination_signal(); sig != 0) {
    std::fprintf(stderr, "lesson 04: interrupted by SIG%s: every worker was killed and reaped\n",
                 sigabbrev_np(sig));
    return 128 + sig;
  }
  return status;
}
