// The CPU kernel: a chain of xorshift* rounds, each depending on the one before, so the compiler
// can neither vectorise nor remove it and its time is proportional to the iteration count.
#pragma once

#include <cstdint>

namespace clab {

/// Runs `iterations` dependent rounds starting from `seed` and returns the final state: the
/// task's checksum. Deterministic: the same (seed, iterations) give the same value everywhere.
[[nodiscard]] std::uint64_t spin(std::uint64_t seed, std::uint64_t iterations);

}  // namespace clab
