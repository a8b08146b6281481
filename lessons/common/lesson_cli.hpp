// The lesson program CLI shared by every lesson (DESIGN.md §3): parse and check the flags, build
// the task set, predict, run, verify, judge, and print a short table or one JSON line.
// Exit status: 0 every task completed and verified; 1 a task failed or verification failed;
// 2 bad input, with one line naming the flag and the allowed range.
#pragma once

#include <span>
#include <string_view>

#include "workloads/run.hpp"

namespace clab {

struct lesson_info {
  std::string_view number;                     ///< "01"
  std::string_view title;                      ///< "threads"
  std::span<const executor* const> executors;  ///< the first is the default --executor
  std::string_view more_help;  ///< a lesson's own modes, handled before lesson_main (for --help)
  bool slow_callback_flag = false;  ///< offer --slow-callback-ms (the event loops' lag monitor)
};

/// The whole lesson program; returns its exit status.
int lesson_main(const lesson_info& lesson, int argc, char** argv);

}  // namespace clab
