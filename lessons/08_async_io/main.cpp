// Lesson 08 — async I/O. The program behind `scripts/lesson 8`: the shared lesson CLI around two
// executors whose io tasks co_await the socket itself, --executor asio-io (the default: Boost.Asio
// and Beast on one thread) and --executor asio-io-mt (one io_context, P threads, a strand per
// task); and `--demo files`, where readiness meets a regular file. Try --workload io: the run
// starts its own loopback service (or use --service HOST:PORT).
#include <cstdio>
#include <string_view>

#include "lessons/08_async_io/executors.hpp"
#include "lessons/common/lesson_cli.hpp"

int main(int argc, char** argv) {
  if (argc >= 2 && std::string_view(argv[1]) == "--demo") {
    if (argc == 3 && std::string_view(argv[2]) == "files") return clab::files_demo();
    std::fprintf(stderr, "lesson 08: --demo: allowed: files (alone)\n");
    return 2;
  }
  const clab::executor* executors[] = {&clab::asio_io_executor(), &clab::asio_io_mt_executor()};
  return clab::lesson_main({.number = "08",
                            .title = "async I/O",
                            .executors = executors,
                            .more_help = "Also: --demo files (alone) shows why epoll cannot wait "
                                         "for a file, and reads files by read(), a thread pool "
                                         "and io_uring.\n"},
                           argc, argv);
}
