// Lesson 06 — stackful fibers. The program behind `scripts/lesson 6`: the shared lesson CLI around
// our fiber scheduler's two executors (--executor fibers, the default; fibers-mn) and Boost.Fiber
// measured on the same task sets; --slow-callback-ms names a fiber that keeps its loop from
// turning (lesson 05's lag monitor).
#include "lessons/06_fibers/executors.hpp"
#include "lessons/common/lesson_cli.hpp"

int main(int argc, char** argv) {
  const clab::executor* executors[] = {&clab::fibers_executor(), &clab::fibers_mn_executor(),
                                       &clab::boost_fiber_executor()};
  return clab::lesson_main(
      {.number = "06", .title = "fibers", .executors = executors, .slow_callback_flag = true}, argc,
      argv);
}
