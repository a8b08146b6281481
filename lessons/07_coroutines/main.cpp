// Lesson 07 — stackless coroutines. The program behind `scripts/lesson 7`: the shared lesson CLI
// around our coroutine scheduler's executors (--executor coroutines, the default; coro-priority,
// ready coroutines longest CPU part first; coroutines-mn, P threads with a scheduler each) and the
// reference row asio-coro (Boost.Asio's awaitables); --slow-callback-ms names a coroutine that
// keeps its loop from turning (lesson 05's lag monitor; coroutines and coro-priority).
#include "lessons/07_coroutines/executors.hpp"
#include "lessons/common/lesson_cli.hpp"

int main(int argc, char** argv) {
  const clab::executor* executors[] = {
      &clab::coroutines_executor(), &clab::coro_priority_executor(),
      &clab::coroutines_mn_executor(), &clab::asio_coro_executor()};
  return clab::lesson_main(
      {.number = "07", .title = "coroutines", .executors = executors, .slow_callback_flag = true},
      argc, argv);
}
