// Runs a program as a child process for the CLI tests: captures stdout and stderr, enforces a
// deadline (the child is killed and the test fails rather than hangs), and always reaps the child.
#pragma once

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

/// Runs argv[0] with argv (no shell), waits at most `timeout_s` seconds.
[[nodiscard]] process_result run_process(const std::vector<std::string>& argv,
                                         double timeout_s = 60);

/// Open file descriptors of this process (from /proc/self/fd), for leak checks.
[[nodiscard]] int open_fd_count();

}  // namespace clab::test
