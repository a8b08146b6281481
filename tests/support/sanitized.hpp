// Whether this test program is built under a sanitizer. Under ASan or TSan every thread start,
// fork and memory access costs several times more, so the slowest tests run smaller sets there
// (each says what it cuts); what they check stays the same.
#pragma once

namespace clab::testing {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool k_sanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool k_sanitized = true;
#else
inline constexpr bool k_sanitized = false;
#endif
#else
inline constexpr bool k_sanitized = false;
#endif

}  // namespace clab::testing
