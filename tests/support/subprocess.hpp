// Runs a program as a child process for the CLI tests: captures stdout and stderr, enforces a
// deadline (the child is killed and the test fails rather than hangs), and always reaps the child.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

namespace clab::test {

struct process_result {
  int exit_code = -1;  ///< the exit status, or -1 when killed by a signal
  int signal = 0;      ///< the signal that killed it, or 0
  bool timed_out = false;
  std::string out;
  std::string err;
};

/// Called every few milliseconds while the child runs, with its pid and the output so far (for a
/// test that acts on the running child, e.g. signals it once it has said something).
using process_watch = std::function<void(pid_t, const process_result&)>;

/// Runs argv[0] with argv (no shell), waits at most `timeout_s` seconds.
[[nodiscard]] process_result run_process(const std::vector<std::string>& argv,
                                         double timeout_s = 60, const process_watch& watch = {});

/// Open file descriptors of this process (from /proc/self/fd), for leak checks.
[[nodiscard]] int open_fd_count();

}  // namespace clab::test
