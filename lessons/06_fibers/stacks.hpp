// Lesson 06: where a fiber's stack comes from. Two pooled Boost.Context stack allocators that
// trade safety for scale: `guarded_stacks` (a mapping and a guard page each: an overflow faults at
// once, but the kernel's map count caps them near 32 000) and `slab_stacks` (carved from a few big
// mappings, a canary checked at every switch: detection after the fact, but no cap).
// Look for: the mapping count in guarded_stacks, and the canary words at the bottom of a slab
// stack.
#pragma once

#include <boost/context/stack_context.hpp>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace clab {

// 64 KiB: a fiber that runs a task (a CPU kernel, a timer wait, some formatting) needs a few KiB;
// 64 KiB leaves a margin of ten for library code (iostreams, exceptions: unwinding alone takes
// ~2 KiB), and costs only its touched pages in RAM (the rest is never faulted in), so a parked
// fiber costs ~8 KiB resident. Sanitizers inflate frames (ASan's redzones, TSan's bookkeeping) by
// 2-4x, so they get 256 KiB.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CLAB_FIBER_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define CLAB_FIBER_SANITIZED 1
#endif
#endif
#ifdef CLAB_FIBER_SANITIZED
inline constexpr std::size_t k_fiber_stack_size = 256 * 1024;
#else
inline constexpr std::size_t k_fiber_stack_size = 64 * 1024;
#endif

/// Stacks with a guard page each: one mmap of size + a page, whose lowest page is PROT_NONE, so an
/// overflow is a SIGSEGV at the faulting instruction. Each stack costs 2 kernel mappings (the guard
/// and the stack), and the kernel allows vm.max_map_count mappings per process (65 530 by
/// default): about 32 000 stacks. Past that, allocate() throws std::system_error naming the limit.
/// Freed stacks are kept on a free list and reused; the destructor unmaps them all.
/// Not thread-safe: one per thread (a pool's stacks may be freed into another thread's list).
class guarded_stacks {
 public:
  explicit guarded_stacks(std::size_t stack_size = k_fiber_stack_size);
  ~guarded_stacks();  ///< unmaps the free stacks; every stack must have been deallocated
  guarded_stacks(const guarded_stacks&) = delete;
  guarded_stacks& operator=(const guarded_stacks&) = delete;

  /// A stack of stack_size() usable bytes (sp is its top); throws std::system_error on ENOMEM.
  [[nodiscard]] boost::context::stack_context allocate();
  /// Puts the stack on the free list (it stays mapped).
  void deallocate(boost::context::stack_context& s) noexcept;

  [[nodiscard]] std::size_t stack_size() const noexcept { return size_; }
  /// Kernel mappings this allocator created and still holds: 2 per stack mapped.
  [[nodiscard]] std::size_t mappings() const noexcept { return 2 * mapped_; }

 private:
  struct free_stack {
    free_stack* next;
  };
  std::size_t size_;
  std::size_t page_;
  std::size_t mapped_ = 0;  // stacks mapped by this allocator and not unmapped
  free_stack* free_ = nullptr;
};

/// Stacks carved from large MAP_NORESERVE mappings (1024 stacks a slab): a million stacks take
/// ~1000 mappings, and only the pages a fiber touches become resident. No guard pages, so an
/// overflow would silently write into the neighbour below: instead the lowest 32 bytes of each
/// stack hold a canary: the scheduler checks its top word at every switch away from a fiber (and
/// all four words when the fiber finishes), and a broken canary stops the process with a one-line
/// report. The trade: one load and compare per switch and detection only after the fact (at the
/// next switch; a fiber that overflows and then faults or never switches is not caught), against 2
/// mappings per stack and an immediate fault. The canary also keeps each stack's lowest page
/// resident (4 KiB a fiber). A destroyed allocator's slabs go to a process-wide cache (up to 8
/// slabs, the rest unmapped), and a new allocator takes its slabs from there first: the pages
/// earlier fibers touched are still resident, so a new scheduler's fibers start without page
/// faults. The trade: after a run the process keeps up to 8 slabs' touched pages (about 8 KiB a
/// stack that was used: under 70 MiB). Not thread-safe: one per thread; all of a pool's slab
/// allocators must die together.
class slab_stacks {
 public:
  explicit slab_stacks(std::size_t stack_size = k_fiber_stack_size,
                       std::size_t stacks_per_slab = 1024);
  ~slab_stacks();  ///< unmaps every slab: no stack of it may still be in use
  slab_stacks(const slab_stacks&) = delete;
  slab_stacks& operator=(const slab_stacks&) = delete;

  /// A stack of stack_size() bytes with a fresh canary at its bottom; throws std::system_error if
  /// a new slab cannot be mapped.
  [[nodiscard]] boost::context::stack_context allocate();
  /// Puts the stack on the free list.
  void deallocate(boost::context::stack_context& s) noexcept;

  /// The canary word a switch checks: the highest of the four, which a stack growing down into
  /// its neighbour overwrites first. The four are all checked when a fiber finishes.
  static constexpr std::size_t k_checked_word = 3;
  /// Where the checked word of `s` lives.
  [[nodiscard]] static const std::uint64_t* checked_word(
      const boost::context::stack_context& s) noexcept {
    return reinterpret_cast<const std::uint64_t*>(static_cast<const char*>(s.sp) - s.size) +
           k_checked_word;
  }
  /// True if the canary at the bottom of `s` is intact (all four words).
  [[nodiscard]] static bool canary_intact(const boost::context::stack_context& s) noexcept {
    const auto* w = reinterpret_cast<const std::uint64_t*>(static_cast<const char*>(s.sp) - s.size);
    return ((w[0] ^ k_canary[0]) | (w[1] ^ k_canary[1]) | (w[2] ^ k_canary[2]) |
            (w[3] ^ k_canary[3])) == 0;
  }

  [[nodiscard]] std::size_t stack_size() const noexcept { return size_; }
  /// Kernel mappings this allocator holds: one per slab.
  [[nodiscard]] std::size_t mappings() const noexcept { return slabs_.size(); }

  static constexpr std::uint64_t k_canary[4] = {0xC0FFEE00DEADBEEFULL, 0x5AFE5AFE0BADF00DULL,
                                                0xA5A5A5A55A5A5A5AULL, 0xFEEDFACECAFEBABEULL};

 private:
  struct free_stack {
    free_stack* next;
  };
  std::size_t size_;
  std::size_t per_slab_;
  std::vector<char*> slabs_;
  std::size_t carved_ = 0;  // stacks handed out from the newest slab, carved from its top down
  free_stack* free_ = nullptr;
};

}  // namespace clab
