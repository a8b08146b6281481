// Lesson 03 — thread pools. The program behind `scripts/lesson 3`: the shared lesson CLI around
// three pools of our own (--executor stealing, the default; naive; priority) and two reference
// pools (asio, tbb) measured on the same task sets.
#include "lessons/03_thread_pool/thread_pool.hpp"
#include "lessons/common/lesson_cli.hpp"

int main(int argc, char** argv) {
  const clab::executor* executors[] = {
      &clab::stealing_pool_executor(), &clab::naive_pool_executor(),
      &clab::priority_pool_executor(), &clab::asio_pool_executor(), &clab::tbb_executor()};
  return clab::lesson_main({.number = "03", .title = "thread pool", .executors = executors}, argc,
                           argv);
}
