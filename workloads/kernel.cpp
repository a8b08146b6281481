// Kept in its own translation unit so that callers cannot see through it and fold it away.
#include "workloads/kernel.hpp"

namespace clab {

std::uint64_t spin(std::uint64_t seed, std::uint64_t iterations) {
  std::uint64_t x = seed | 1U;  // xorshift has one fixed point, zero: never start there
  for (std::uint64_t i = 0; i < iterations; ++i) {
    x ^= x >> 12U;
    x ^= x << 25U;
    x ^= x >> 27U;
    x *= 0x2545F4914F6CDD1DULL;
  }
  return x;
}

}  // namespace clab
