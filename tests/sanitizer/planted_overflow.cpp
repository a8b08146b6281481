// A deliberately faulty program, built only in the asan preset (which also enables
// UndefinedBehaviorSanitizer): a signed integer overflow. The test `ubsan_report_is_fatal` expects
// the report and a non-zero exit, which proves -fno-sanitize-recover makes every UBSan report fail.
#include <climits>
#include <cstdio>

int main(int argc, char**) {
  volatile int big = INT_MAX - 1 + argc;  // INT_MAX when run without arguments
  const int overflowed = big + 1;
  std::printf("INT_MAX + 1 = %d: UndefinedBehaviorSanitizer missed it\n", overflowed);
  return 0;
}
