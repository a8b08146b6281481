// Lesson 05 — the event loop. The program behind `scripts/lesson 5`: the shared lesson CLI around
// our loop's three executors (--executor loop, the default; blocking; loops) and two reference
// loops (asio-loop, libuv) measured on the same task sets; --slow-callback-ms turns the lag
// monitor on.
#include "lessons/05_event_loop/executors.hpp"
#include "lessons/common/lesson_cli.hpp"

int main(int argc, char** argv) {
  const clab::executor* executors[] = {&clab::loop_executor(), &clab::blocking_executor(),
                                       &clab::loops_executor(), &clab::asio_loop_executor(),
                                       &clab::libuv_executor()};
  return clab::lesson_main(
      {.number = "05", .title = "event loop", .executors = executors, .slow_callback_flag = true},
      argc, argv);
}
