// A deliberately faulty program, built only in the asan preset: it reads a heap block after
// freeing it. The test `asan_catches_planted_fault` expects AddressSanitizer to report it and the
// program to exit non-zero; if that test fails, the asan stage of CI could not have caught ours.
#include <cstdio>
#include <cstdlib>

int main(int argc, char**) {
  // volatile and argc keep the compiler from proving the read away at any optimisation level.
  int* volatile block = static_cast<int*>(std::malloc(16 * sizeof(int)));
  block[3] = argc;
  std::free(block);
  const int read_after_free = block[3];
  std::printf("read %d from a freed block: AddressSanitizer missed it\n", read_after_free);
  return 0;
}
