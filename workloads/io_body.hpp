// The body that lesson 08's loopback service (io_service) sends for `GET /task?...&seed=S`: a
// fixed-size string that is a deterministic function of the seed, shared by the server and every
// client. A client checksums what came over the socket, so a run's checksum proves the bytes
// really travelled: a client that skipped the request could not have produced it.
//
// Look for: io_body (what the server sends), io_body_checksum (what a client folds the body
// into). Both are header-only so the server, the executors and the tests compile the same bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace clab {

/// Every body has this many bytes: small enough that the wait, not the transfer, is the cost.
inline constexpr std::size_t k_io_body_size = 64;

/// The body for `seed`: k_io_body_size lowercase hex digits from a splitmix64 stream (no newline,
/// so `curl -s` prints exactly this string).
[[nodiscard]] inline std::string io_body(std::uint64_t seed) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string body(k_io_body_size, '0');
  std::uint64_t state = seed;
  for (std::size_t i = 0; i < k_io_body_size; i += 16) {
    state += 0x9e3779b97f4a7c15ULL;  // splitmix64: one 64-bit word gives 16 hex digits
    std::uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    for (std::size_t d = 0; d < 16 && i + d < k_io_body_size; ++d) {
      body[i + d] = digits[(z >> (4 * d)) & 0xF];
    }
  }
  return body;
}

/// FNV-1a over the body's bytes: what a client records as the task's checksum.
[[nodiscard]] inline std::uint64_t io_body_checksum(std::string_view body) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (const char c : body) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

}  // namespace clab
