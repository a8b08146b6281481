// Lesson 07's frame allocator: every task frame comes from here (the promise's operator new). A
// per-thread cache of free blocks in 8-byte size classes makes the usual case (a frame freed,
// another of the same size allocated, as skynet and await loops do) a pop from a list: no lock.
// Look for: a block freed on another thread joins THAT thread's list (blocks come from
// ::operator new, so any thread may keep or free them), and the cap that bounds each list.
#include <array>
#include <new>

#include "lessons/07_coroutines/task.hpp"

namespace clab::coro {
namespace {

// Size classes 8, 16, 24, ..., k_frame_cap: a frame needs 8-byte alignment (16 only with an
// over-aligned local, which ::operator new's blocks have anyway), and each block is one malloc
// chunk of its size plus an 8-byte header rounded up to 16: a class of 8 × odd (88, 120) fills its
// chunk exactly, where rounding the size up to 16 first would waste 16 bytes of every frame (a
// million sleepers: 16 MB).
constexpr std::size_t k_class_bytes = 8;
constexpr std::size_t k_frame_cap = 1024;  // larger frames go straight to ::operator new
constexpr std::size_t k_classes = k_frame_cap / k_class_bytes;
// A list keeps at most this many bytes of free blocks, so a thread that only frees (M:N: frames
// made on one thread, finished on another) does not hoard memory; the rest go back to the heap.
constexpr std::size_t k_list_cap_bytes = 1U << 20;

struct free_block {
  free_block* next;
};

struct frame_cache {
  std::array<free_block*, k_classes> head{};
  std::array<std::size_t, k_classes> count{};
  frame_stats stats;
  bool alive = true;

  constexpr frame_cache() = default;
  frame_cache(const frame_cache&) = delete;
  frame_cache& operator=(const frame_cache&) = delete;
  // Thread exit: the cached blocks go back to the heap (frames still alive elsewhere are not here).
  ~frame_cache() {
    alive = false;
    for (std::size_t c = 0; c < k_classes; ++c) {
      while (free_block* b = head[c]) {
        head[c] = b->next;
        ::operator delete(static_cast<void*>(b));
      }
    }
  }
};

thread_local frame_cache t_cache;

constexpr std::size_t class_of(std::size_t bytes) noexcept {
  return (bytes + k_class_bytes - 1) / k_class_bytes - 1;
}

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
  return ::operator new((k + 1) * k_class_bytes);
}

void detail::deallocate_block(void* p, std::size_t bytes) noexcept {
  frame_cache& c = t_cache;
  if (bytes == 0 || bytes > k_frame_cap) {
    ::operator delete(p);
    return;
  }
  const std::size_t k = class_of(bytes);
  const std::size_t block = (k + 1) * k_class_bytes;
  // After the cache's destructor (a frame freed by another thread_local's destructor): no list.
  if (!c.alive || c.count[k] * block >= k_list_cap_bytes) {
    ::operator delete(p);
    return;
  }
  auto* b = static_cast<free_block*>(p);
  b->next = c.head[k];
  c.head[k] = b;
  ++c.count[k];
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
