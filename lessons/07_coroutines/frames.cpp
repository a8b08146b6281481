// Lesson 07's frame allocator: every task frame comes from here (the promise's operator new). A
// per-thread cache of free blocks in 8-byte size classes makes the usual case (a frame freed,
// another of the same size allocated, as skynet and await loops do) a pop from a list: no lock.
// New blocks are carved from 256 KiB chunks: no malloc header per frame (16 bytes of a 56-byte
// frame: 16 MB for a million sleepers), and no rounding of a 56-byte frame up to 64.
// Look for: a block freed on another thread joins THAT thread's list (any thread may keep any
// block), the cap that bounds each list (the rest goes to a depot every thread takes from), which
// blocks start at a multiple of 16, and why sanitizer builds allocate each block alone.
#include <array>
#include <cstdint>
#include <mutex>
#include <new>

#include "lessons/07_coroutines/task.hpp"

// Under a sanitizer every block is its own ::operator new (a heap overflow out of a frame, or a
// frame freed to the heap, stays visible to it); otherwise blocks are carved from chunks, which
// live until the process ends (a frame may be freed on any thread, so no chunk is ever known to be
// empty).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CLAB_FRAMES_CARVED 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define CLAB_FRAMES_CARVED 0
#endif
#endif
#if !defined(CLAB_FRAMES_CARVED)
#define CLAB_FRAMES_CARVED 1
#endif

namespace clab::coro {
namespace {

// Size classes 8, 16, 24, ..., k_frame_cap. operator new promises 16-byte alignment, but only an
// object whose size is a multiple of 16 can need it (a type's size is a multiple of its alignment):
// blocks of those classes are carved at multiples of 16, the others (24, 40, 56, ...) at multiples
// of 8. A frame of 56 bytes (a sleeper's) then takes 56, not 64.
constexpr std::size_t k_class_bytes = 8;
constexpr std::size_t k_max_align = 16;
constexpr std::size_t k_frame_cap = 1024;  // larger frames go straight to ::operator new
constexpr std::size_t k_classes = k_frame_cap / k_class_bytes;
// A list keeps at most this many bytes of free blocks, so a thread that only frees (M:N: frames
// made on one thread, finished on another) does not hoard them; the rest go to the depot (carved)
// or back to the heap (sanitizer builds).
constexpr std::size_t k_list_cap_bytes = 1U << 20;
constexpr std::size_t k_chunk_bytes = 256U << 10;
// A thread whose list is empty takes at most this many blocks of a class from the depot at once.
constexpr std::size_t k_depot_take = 64;

struct free_block {
  free_block* next;
};

constexpr std::size_t class_of(std::size_t bytes) noexcept {
  return (bytes + k_class_bytes - 1) / k_class_bytes - 1;
}
constexpr std::size_t block_of(std::size_t k) noexcept { return (k + 1) * k_class_bytes; }

#if CLAB_FRAMES_CARVED
/// Free blocks no thread's list has room for, shared (one lock per batch, not per block).
struct depot {
  std::mutex m;
  std::array<free_block*, k_classes> head{};
};
depot& the_depot() {
  static depot* d = new depot;  // never destroyed: a thread may exit after static destruction
  return *d;
}
/// Hands the list [first, last] of class k to the depot.
void to_depot(std::size_t k, free_block* first, free_block* last) noexcept {
  depot& d = the_depot();
  const std::lock_guard lock(d.m);
  last->next = d.head[k];
  d.head[k] = first;
}
#endif

struct frame_cache {
  std::array<free_block*, k_classes> head{};
  std::array<std::size_t, k_classes> count{};
  frame_stats stats;
  bool alive = true;
#if CLAB_FRAMES_CARVED
  char* carve = nullptr;  // the unused end of this thread's current chunk
  std::size_t carve_left = 0;
#endif

  constexpr frame_cache() = default;
  frame_cache(const frame_cache&) = delete;
  frame_cache& operator=(const frame_cache&) = delete;
  // Thread exit: the cached blocks go to the depot (carved) or back to the heap (frames still alive
  // elsewhere are not here).
  ~frame_cache() {
    alive = false;
    for (std::size_t c = 0; c < k_classes; ++c) {
#if CLAB_FRAMES_CARVED
      if (free_block* first = head[c]) {
        free_block* last = first;
        while (last->next != nullptr) last = last->next;
        to_depot(c, first, last);
        head[c] = nullptr;
      }
#else
      while (free_block* b = head[c]) {
        head[c] = b->next;
        ::operator delete(static_cast<void*>(b));
      }
#endif
    }
  }

  /// A new block of class k (the list is empty).
  void* fresh(std::size_t k) {
#if CLAB_FRAMES_CARVED
    {
      depot& d = the_depot();
      const std::lock_guard lock(d.m);
      std::size_t taken = 0;
      while (d.head[k] != nullptr && taken < k_depot_take) {
        free_block* b = d.head[k];
        d.head[k] = b->next;
        b->next = head[k];
        head[k] = b;
        ++taken;
      }
      count[k] += taken;
    }
    if (free_block* b = head[k]) {
      head[k] = b->next;
      --count[k];
      return b;
    }
    const std::size_t bytes = block_of(k);
    // The carve point is a multiple of 8; a class that may hold a 16-aligned object skips to 16.
    std::size_t skip =
        bytes % k_max_align == 0 ? reinterpret_cast<std::uintptr_t>(carve) % k_max_align : 0;
    if (carve_left < skip + bytes) {
      // The old chunk's tail (less than one block of this class) is left unused.
      carve = static_cast<char*>(::operator new(k_chunk_bytes));  // 16-aligned
      carve_left = k_chunk_bytes;
      skip = 0;
    }
    carve += skip;
    carve_left -= skip;
    void* p = carve;
    carve += bytes;
    carve_left -= bytes;
    return p;
#else
    return ::operator new(block_of(k));
#endif
  }
};

thread_local frame_cache t_cache;

}  // namespace

void* detail::allocate_block(std::size_t bytes) {
  frame_cache& c = t_cache;
  if (bytes == 0 || bytes > k_frame_cap) {
    ++c.stats.large;
    return ::operator new(bytes);
  }
  const std::size_t k = class_of(bytes);
  if (free_block* b = c.head[k]) {
    c.head[k] = b->next;
    --c.count[k];
    ++c.stats.from_cache;
    return b;
  }
  return c.fresh(k);
}

void detail::deallocate_block(void* p, std::size_t bytes) noexcept {
  frame_cache& c = t_cache;
  if (bytes == 0 || bytes > k_frame_cap) {
    ::operator delete(p);
    return;
  }
  const std::size_t k = class_of(bytes);
  auto* b = static_cast<free_block*>(p);
#if CLAB_FRAMES_CARVED
  // After the cache's destructor (a frame freed by another thread_local's destructor): the depot.
  if (!c.alive) {
    b->next = nullptr;
    to_depot(k, b, b);
    return;
  }
  b->next = c.head[k];
  c.head[k] = b;
  if (++c.count[k] * block_of(k) > k_list_cap_bytes) {
    // Over the cap: the whole list but this block to the depot, in one lock.
    free_block* first = b->next;
    free_block* last = first;
    while (last->next != nullptr) last = last->next;
    to_depot(k, first, last);
    b->next = nullptr;
    c.count[k] = 1;
  }
#else
  // After the cache's destructor (a frame freed by another thread_local's destructor): no list.
  if (!c.alive || c.count[k] * block_of(k) >= k_list_cap_bytes) {
    ::operator delete(p);
    return;
  }
  b->next = c.head[k];
  c.head[k] = b;
  ++c.count[k];
#endif
}

void* detail::allocate_frame(std::size_t bytes) {
  frame_cache& c = t_cache;
  c.stats.last_bytes = bytes;
  if (bytes > c.stats.max_bytes) c.stats.max_bytes = bytes;
  void* p = allocate_block(bytes);
  ++c.stats.allocations;  // after: a bad_alloc allocated nothing
  if (c.stats.live() > c.stats.peak_live) c.stats.peak_live = c.stats.live();
  return p;
}

void detail::deallocate_frame(void* p, std::size_t bytes) noexcept {
  ++t_cache.stats.deallocations;
  deallocate_block(p, bytes);
}

frame_stats this_thread_frame_stats() noexcept { return t_cache.stats; }

void reset_frame_stats() noexcept { t_cache.stats = frame_stats{}; }

}  // namespace clab::coro
