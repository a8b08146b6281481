// `lesson 2 --demo shared-memory`: who sees whose writes. Threads of one process share every
// byte of it; a forked child gets a copy (copy-on-write) and its writes stay in the copy; two
// processes share memory only where both map the same pages as shared (MAP_SHARED, shm_open).
// Look for: the same virtual address holding different values in the parent and the child.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>

#include "lessons/02_processes/processes.hpp"
#include "workloads/process_io.hpp"

namespace clab {
namespace {

constexpr long k_adds = 100'000;

// [snippet:shared-counter]
std::atomic<long> g_counter{0};  // an ordinary global: one per process

void add_many(std::atomic<long>& counter) {
  for (long i = 0; i < k_adds; ++i) counter.fetch_add(1, std::memory_order_relaxed);
}
// [end-snippet]

/// Forks a child that runs body() and exits; waits for it; true if it exited with status 0.
template <typename Body>
bool in_child(Body body) {
  // Whatever stdout still buffers would be copied into the child, and a child that flushes it
  // (a sanitizer's exit hook does) would print the parent's lines twice.
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    body();
    _exit(0);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return false;  // ECHILD (SIGCHLD ignored): retrying would spin forever
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace

int shared_memory_demo() {
  std::printf("lesson 02 · processes · demo shared-memory: who sees whose writes\n");
  std::printf("each writer adds 1 to a counter %ld times; every reader prints what it reads\n",
              k_adds);

  // 1. Threads: one address space. Both threads add to the very same counter.
  // [snippet:threads-share]
  {
    std::jthread a([] { add_many(g_counter); });
    std::jthread b([] { add_many(g_counter); });
  }
  // [end-snippet]
  std::printf("threads     2 threads add to g_counter: main reads %ld  (shared: one counter)\n",
              g_counter.load());

  // 2. fork: the child gets a copy of every page. Its writes go to its copy (copy-on-write).
  int seen[2];
  if (pipe2(seen, O_CLOEXEC) != 0) return 1;
  // [snippet:fork-copies]
  const bool forked_ok = in_child([&] {
    add_many(g_counter);  // the same address as the parent's g_counter, in another process
    const long child_reads = g_counter.load();
    write_all(seen[1], std::as_bytes(std::span(&child_reads, 1)));
  });
  // [end-snippet]
  long child_read = -1;
  close(seen[1]);
  read_all(seen[0], std::as_writable_bytes(std::span(&child_read, 1)));
  close(seen[0]);
  std::printf(
      "fork        a child adds to g_counter: the child reads %ld, the parent still reads %ld  "
      "(not shared: a copy, same address)\n",
      child_read, g_counter.load());

  // 3. MAP_SHARED before fork: both processes map the same physical pages.
  // [snippet:map-shared]
  void* page = mmap(nullptr, sizeof(std::atomic<long>), PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED) return 1;
  auto* shared = new (page) std::atomic<long>(0);  // lock-free: works across processes
  const bool mapped_ok =
      in_child([&] { add_many(*shared); }) && in_child([&] { add_many(*shared); });
  // [end-snippet]
  std::printf(
      "MAP_SHARED  2 children add to a MAP_SHARED page mapped before fork: the parent "
      "reads %ld  (shared: the mapping)\n",
      shared->load());
  munmap(page, sizeof(std::atomic<long>));

  // 4. shm_open: a named shared-memory object; any process that knows the name can map it.
  const std::string name = "/clab-demo-" + std::to_string(getpid());
  const int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) return 1;
  const bool sized = ftruncate(fd, sizeof(std::atomic<long>)) == 0;
  close(fd);
  if (!sized) {
    shm_unlink(name.c_str());  // a named object outlives the process unless unlinked
    return 1;
  }
  auto add_by_name = [&name] {  // maps the object by its name, as an unrelated program would
    const int own = shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0);
    void* p = mmap(nullptr, sizeof(std::atomic<long>), PROT_READ | PROT_WRITE, MAP_SHARED, own, 0);
    if (own < 0 || p == MAP_FAILED) _exit(1);
    add_many(*static_cast<std::atomic<long>*>(p));
  };
  const bool named_ok = in_child(add_by_name) && in_child(add_by_name);
  const int mine = shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0);
  void* p = mine < 0 ? MAP_FAILED
                     : mmap(nullptr, sizeof(std::atomic<long>), PROT_READ, MAP_SHARED, mine, 0);
  const long by_name = p == MAP_FAILED ? -1 : static_cast<std::atomic<long>*>(p)->load();
  if (p != MAP_FAILED) munmap(p, sizeof(std::atomic<long>));
  if (mine >= 0) close(mine);
  shm_unlink(name.c_str());
  std::printf(
      "shm_open    2 children map \"/clab-demo-<pid>\" by name and add: the parent reads "
      "%ld  (shared: the named object)\n",
      by_name);

  const bool ok = forked_ok && mapped_ok && named_ok && g_counter.load() == 2 * k_adds &&
                  child_read == 3 * k_adds && by_name == 2 * k_adds;
  std::printf("%s\n", ok ? "so: threads share everything; processes share only what they map as "
                           "shared"
                         : "unexpected: a child failed or a count differs");
  return ok ? 0 : 1;
}

}  // namespace clab
