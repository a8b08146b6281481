// Lesson 01 — threads. The program behind `scripts/lesson 1`: the shared lesson CLI around two
// executors, --executor per-task (the default) and --executor static.
#include "lessons/01_threads/threads.hpp"
#include "lessons/common/lesson_cli.hpp"

int main(int argc, char** argv) {
  const clab::executor* executors[] = {&clab::thread_per_task_executor(),
                                       &clab::static_threads_executor()};
  return clab::lesson_main({.number = "01", .title = "threads", .executors = executors}, argc,
                           argv);
}
