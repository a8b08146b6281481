// Lesson 06's stack allocators: a mapping per stack with a guard page, or slabs with a canary.
// Look for: the ENOMEM message that names vm.max_map_count, and where the canary is written.
#include "lessons/06_fibers/stacks.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <system_error>

#ifdef CLAB_FIBER_SANITIZED
#if defined(__SANITIZE_ADDRESS__)
#define CLAB_FIBER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CLAB_FIBER_ASAN 1
#endif
#endif
#endif
#ifdef CLAB_FIBER_ASAN
#include <sanitizer/asan_interface.h>
#endif

namespace clab {
namespace {

std::size_t page_size() { return static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)); }

std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

std::string max_map_count() {
  std::ifstream in("/proc/sys/vm/max_map_count");
  std::string v;
  if (!(in >> v)) v = "unknown";
  return v;
}

// A reused stack may still carry ASan's poison from frames of its previous fiber that never
// returned (the fiber's entry frame), and a fresh mapping may land where an old one was, whose
// shadow ASan never cleared: either way, a new fiber starts on clean shadow memory.
void unpoison(void* base, std::size_t size) {
#ifdef CLAB_FIBER_ASAN
  ASAN_UNPOISON_MEMORY_REGION(base, size);
#else
  (void)base;
  (void)size;
#endif
}

// Slabs a finished slab_stacks left behind, for the next one to reuse: their pages that earlier
// fibers touched are still resident, so a new scheduler's first fibers do not page-fault (each
// fault costs microseconds here: a run of a thousand short fibers on fresh slabs took five times
// as long as on warm ones). Shared by every thread, so it takes a lock, once per slab.
class slab_cache {
 public:
  static constexpr std::size_t k_max_slabs = 8;

  /// A cached slab of `bytes`, or nullptr.
  char* take(std::size_t bytes) {
    std::lock_guard lock(mutex_);
    for (auto it = slabs_.begin(); it != slabs_.end(); ++it) {
      if (it->bytes == bytes) {
        char* slab = it->base;
        slabs_.erase(it);
        return slab;
      }
    }
    return nullptr;
  }
  /// Keeps `slab` for reuse, or unmaps it if the cache is full.
  void give(char* slab, std::size_t bytes) {
    {
      std::lock_guard lock(mutex_);
      if (slabs_.size() < k_max_slabs) {
        slabs_.push_back({slab, bytes});
        return;
      }
    }
    ::munmap(slab, bytes);
  }

 private:
  struct entry {
    char* base;
    std::size_t bytes;
  };
  std::mutex mutex_;
  std::vector<entry> slabs_;  // guarded by mutex_
};

// Never destroyed: a scheduler destroyed during exit may still hand its slabs back.
slab_cache& the_slab_cache() {
  static auto* cache = new slab_cache;
  return *cache;
}

}  // namespace

// ---- guarded_stacks ----

guarded_stacks::guarded_stacks(std::size_t stack_size)
    : size_(round_up(stack_size, page_size())), page_(page_size()) {}

guarded_stacks::~guarded_stacks() {
  while (free_ != nullptr) {
    free_stack* f = free_;
    free_ = f->next;
    char* top = reinterpret_cast<char*>(f) + sizeof(free_stack);
    ::munmap(top - size_ - page_, size_ + page_);
  }
}

boost::context::stack_context guarded_stacks::allocate() {
  boost::context::stack_context s;
  s.size = size_;
  if (free_ != nullptr) {
    free_stack* f = free_;
    free_ = f->next;
    s.sp = reinterpret_cast<char*>(f) + sizeof(free_stack);
    unpoison(static_cast<char*>(s.sp) - size_, size_);
    return s;
  }
  // One mapping, split in two by mprotect: the guard page at the low end (stacks grow down).
  void* base = ::mmap(nullptr, size_ + page_, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  int err = base == MAP_FAILED ? errno : 0;
  if (err == 0 && ::mprotect(base, page_, PROT_NONE) != 0) {
    err = errno;
    ::munmap(base, size_ + page_);
  }
  if (err == ENOMEM) {
    throw std::system_error(err, std::generic_category(),
                            "guarded_stacks: cannot map another guarded stack after " +
                                std::to_string(mapped_) + " stacks (" +
                                std::to_string(2 * mapped_) +
                                " mappings, 2 per stack): the kernel's vm.max_map_count is " +
                                max_map_count() + " (raise it, or use slab stacks)");
  }
  if (err != 0) throw std::system_error(err, std::generic_category(), "guarded_stacks: mmap");
  ++mapped_;
  s.sp = static_cast<char*>(base) + page_ + size_;
  unpoison(static_cast<char*>(base) + page_, size_);
  return s;
}

void guarded_stacks::deallocate(boost::context::stack_context& s) noexcept {
  // The free-list link lives in the stack's top bytes, which every fiber has touched already.
  auto* f = reinterpret_cast<free_stack*>(static_cast<char*>(s.sp) - sizeof(free_stack));
  f->next = free_;
  free_ = f;
}

// ---- slab_stacks ----

slab_stacks::slab_stacks(std::size_t stack_size, std::size_t stacks_per_slab)
    : size_(round_up(stack_size, page_size())), per_slab_(stacks_per_slab) {
  slabs_.reserve(64);
}

slab_stacks::~slab_stacks() {
  for (char* slab : slabs_) the_slab_cache().give(slab, size_ * per_slab_);
}

boost::context::stack_context slab_stacks::allocate() {
  boost::context::stack_context s;
  s.size = size_;
  if (free_ != nullptr) {
    free_stack* f = free_;
    free_ = f->next;
    s.sp = reinterpret_cast<char*>(f) + sizeof(free_stack);
    unpoison(static_cast<char*>(s.sp) - size_, size_);
  } else {
    if (slabs_.empty() || carved_ == per_slab_) {
      void* slab = the_slab_cache().take(size_ * per_slab_);
      if (slab == nullptr) {
        slab = ::mmap(nullptr, size_ * per_slab_, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      }
      if (slab == MAP_FAILED) {
        throw std::system_error(
            errno, std::generic_category(),
            "slab_stacks: cannot map a slab of " + std::to_string(per_slab_) + " stacks");
      }
      slabs_.push_back(static_cast<char*>(slab));
      carved_ = 0;
    }
    // Carved from the top down, so an overflowing stack runs into a neighbour (and is caught by
    // its canary at the next switch) rather than off the start of the slab.
    ++carved_;
    s.sp = slabs_.back() + size_ * (per_slab_ - carved_ + 1);
    unpoison(static_cast<char*>(s.sp) - size_, size_);
  }
  // The canary: 4 words at the lowest addresses, where an overflow arrives first.
  std::memcpy(static_cast<char*>(s.sp) - size_, k_canary, sizeof(k_canary));
  return s;
}

void slab_stacks::deallocate(boost::context::stack_context& s) noexcept {
  auto* f = reinterpret_cast<free_stack*>(static_cast<char*>(s.sp) - sizeof(free_stack));
  f->next = free_;
  free_ = f;
}

}  // namespace clab
