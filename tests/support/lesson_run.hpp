// What every CLI test does around a lesson program: run it with a deadline, check that it left no
// descriptor and no child behind, and read its --json line. Header-only: it uses Catch2's macros,
// so each CLI test file includes it after <catch2/catch.hpp>.
#pragma once

#include <sys/wait.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "support/subprocess.hpp"

namespace clab::test {

/// A lesson calibrates the machine and probes its executor before it runs: on a loaded machine
/// under a sanitizer that alone once took most of a minute.
inline constexpr double k_lesson_timeout_s = CLAB_SANITIZED ? 180 : 60;

/// True if this process has no child left, zombie or running (the default check after a run).
inline bool no_child_waiting() {
  int status = 0;
  return waitpid(-1, &status, WNOHANG) == -1;
}

/// Runs `program` with `args`; checks that no descriptor leaked and `no_child_left()` holds, and
/// requires that the run ended before its deadline.
inline process_result run_lesson(const std::string& program, std::vector<std::string> args,
                                 double timeout_s = k_lesson_timeout_s,
                                 const process_watch& watch = {},
                                 bool (*no_child_left)() = no_child_waiting) {
  args.insert(args.begin(), program);
  const int fds_before = open_fd_count();
  process_result r = run_process(args, timeout_s, watch);
  CHECK(open_fd_count() == fds_before);  // no descriptor leaked by running the child
  CHECK(no_child_left());                // the lesson reaped all of its children before it exited
  REQUIRE_FALSE(r.timed_out);
  return r;
}

/// The run's --json line, parsed (its stderr is shown if there is none).
inline nlohmann::json json_of(const process_result& r) {
  INFO(r.err);
  REQUIRE_FALSE(r.out.empty());
  return nlohmann::json::parse(r.out);
}

/// Lines in `s`.
inline int lines(const std::string& s) {
  return static_cast<int>(std::count(s.begin(), s.end(), '\n'));
}

}  // namespace clab::test
