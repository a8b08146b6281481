// Lesson 02 — processes. The program behind `scripts/lesson 2`: the shared lesson CLI around two
// executors, --executor fork (the default) and --executor spawn, and `--demo shared-memory`.
// SIGINT or SIGTERM kills and reaps every child, reports the run, and exits 130 or 143.
#include <cstdio>
#include <cstring>
#include <string_view>

#include "lessons/02_processes/processes.hpp"
#include "lessons/common/lesson_cli.hpp"
#include "workloads/process_io.hpp"

int main(int argc, char** argv) {
  if (argc >= 2 && std::string_view(argv[1]) == "--demo") {
    if (argc >= 3 && std::string_view(argv[2]) == "shared-memory") {
      return clab::shared_memory_demo();
    }
    std::fprintf(stderr, "lesson 02: --demo: allowed: shared-memory\n");
    return 2;
  }
  clab::catch_termination();
  const clab::executor* executors[] = {&clab::fork_per_task_executor(),
                                       &clab::spawn_per_task_executor()};
  const int status =
      clab::lesson_main({.number = "02",
                         .title = "processes",
                         .executors = executors,
                         .more_help = "Also: --demo shared-memory (alone) shows what threads and "
                                      "processes share.\n"},
                        argc, argv);
  if (const int sig = clab::termination_signal(); sig != 0) {
    std::fprintf(stderr, "lesson 02: interrupted by SIG%s: every child was killed and reaped\n",
                 sigabbrev_np(sig));
    return 128 + sig;
  }
  return status;
}
