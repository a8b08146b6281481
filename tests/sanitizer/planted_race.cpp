// A deliberately faulty program, built only in the tsan preset: two threads increment one plain
// int with no synchronisation. The test `tsan_catches_planted_fault` expects ThreadSanitizer to
// report the data race and the program to exit non-zero.
#include <cstdio>
#include <thread>

namespace {
int counter = 0;  // deliberately unguarded

void bump() {
  for (int i = 0; i < 100000; ++i) ++counter;
}
}  // namespace

int main() {
  std::thread a(bump);
  std::thread b(bump);
  a.join();
  b.join();
  std::printf("counter = %d: ThreadSanitizer missed the race\n", counter);
  return 0;
}
