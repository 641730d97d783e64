#include "preload/agent_heap.h"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

namespace procmig::preload {
namespace {

constexpr uintptr_t kPage = 4096;
constexpr unsigned long kPrSetVma = 0x53564d41;  // PR_SET_VMA (Linux 5.17)
constexpr unsigned long kPrSetVmaAnonName = 0;

// Raw system calls: the agent's own mmap/madvise interposers must not see the heap's.
void* RawMap(uintptr_t hint, size_t bytes, int extra_flags) {
  long r = syscall(SYS_mmap, hint, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | extra_flags, -1, 0);
  return r < 0 && r > -4096 ? MAP_FAILED : reinterpret_cast<void*>(r);
}

void RawUnmap(uintptr_t addr, size_t bytes) {
  if (bytes > 0) syscall(SYS_munmap, addr, bytes);
}

uintptr_t AlignUp(uintptr_t v, uintptr_t a) { return (v + a - 1) & ~(a - 1); }

// The smallest k with 2^k >= n (n >= 1).
size_t CeilLog2(size_t n) { return n <= 1 ? 0 : 64 - static_cast<size_t>(__builtin_clzll(n - 1)); }

// Reserves `bytes` aligned to `align` (trimming the rest), names it; {0, 0} on failure.
std::pair<uintptr_t, uintptr_t> Reserve(size_t bytes, uintptr_t align, const char* name,
                                        uintptr_t at = 0) {
  if (at != 0) {
    void* p = RawMap(at, bytes, MAP_FIXED_NOREPLACE);
    if (p == reinterpret_cast<void*>(at)) {
      syscall(SYS_prctl, kPrSetVma, kPrSetVmaAnonName, at, bytes, name);
      return {at, at + bytes};
    }
    if (p != MAP_FAILED) RawUnmap(reinterpret_cast<uintptr_t>(p), bytes);  // (an old kernel)
  }
  void* p = RawMap(0, bytes + align, 0);
  if (p == MAP_FAILED) return {0, 0};
  const auto raw = reinterpret_cast<uintptr_t>(p);
  const uintptr_t base = AlignUp(raw, align);
  RawUnmap(raw, base - raw);
  RawUnmap(base + bytes, raw + bytes + align - (base + bytes));
  syscall(SYS_prctl, kPrSetVma, kPrSetVmaAnonName, base, bytes, name);
  return {base, base + bytes};
}

// The unit class table at a zone's head: one byte per 64 KiB unit; the slabs it takes.
size_t TableSlabs(size_t zone_bytes) {
  const size_t units = zone_bytes / AgentHeap::kSlab;
  return (units + AgentHeap::kSlab - 1) / AgentHeap::kSlab;
}

}  // namespace

class AgentHeap::Lock {
 public:
  explicit Lock(AgentHeap* h) : h_(h) {
    while (h_->locked_.exchange(true, std::memory_order_acquire)) syscall(SYS_sched_yield);
  }
  ~Lock() { h_->locked_.store(false, std::memory_order_release); }

 private:
  AgentHeap* h_;
};

bool AgentHeap::EnsureReserved() {
  if (tried_) return small_base_ != 0;
  tried_ = true;
  const size_t small = AlignUp(small_want_, kSlab);
  auto [sb, se] = Reserve(small, kSlab, "procmig-heap-small");
  if (sb == 0) return false;
  small_base_ = sb;
  small_end_ = se;
  small_class_ = reinterpret_cast<uint8_t*>(sb);
  small_bump_ = sb + TableSlabs(small) * kSlab;
  const size_t large = AlignUp(large_want_, kMaxAlign);
  auto [lb, le] = Reserve(large, kMaxAlign, "procmig-heap-large");
  if (lb != 0) {
    large_base_ = lb;
    large_end_ = le;
    large_class_ = reinterpret_cast<uint8_t*>(lb);
    large_bump_ = lb + TableSlabs(large) * kSlab;
  }
  Publish();
  return true;
}

void AgentHeap::Publish() {
  // Length first to 0, so no reader pairs a new base with an old length.
  bounds_[1].store(0, std::memory_order_release);
  bounds_[0].store(small_base_, std::memory_order_release);
  bounds_[1].store(small_end_ - small_base_, std::memory_order_release);
  bounds_[3].store(0, std::memory_order_release);
  bounds_[2].store(large_base_, std::memory_order_release);
  bounds_[3].store(large_end_ - large_base_, std::memory_order_release);
}

bool AgentHeap::Start() {
  Lock l(this);
  return EnsureReserved();
}

void* AgentHeap::AllocateSmall(size_t cls) {
  if (void* p = small_free_[cls]) {
    small_free_[cls] = *static_cast<void**>(p);
    return p;
  }
  if (small_bump_ + kSlab > small_end_) return nullptr;
  const uintptr_t slab = small_bump_;
  small_bump_ += kSlab;
  small_class_[(slab - small_base_) / kSlab] = static_cast<uint8_t>(cls + 1);
  const size_t obj = kMinClass << cls;
  // Objects 1..n-1 onto the free list, lowest first out; object 0 is the caller's.
  for (uintptr_t o = slab + kSlab - obj; o > slab; o -= obj) {
    *reinterpret_cast<void**>(o) = small_free_[cls];
    small_free_[cls] = reinterpret_cast<void*>(o);
  }
  return reinterpret_cast<void*>(slab);
}

void* AgentHeap::AllocateLarge(size_t cls) {
  const size_t size = kSlab << cls;
  if (void* p = large_free_[cls]) {
    large_free_[cls] = *static_cast<void**>(p);
    std::memset(p, 0, kPage);  // the link and what was left on the first page (Free)
    return p;
  }
  if (large_base_ == 0) return nullptr;
  const uintptr_t start = AlignUp(large_bump_, size < kMaxAlign ? size : kMaxAlign);
  if (start < large_bump_ || start > large_end_ || large_end_ - start < size) return nullptr;
  large_bump_ = start + size;
  large_class_[(start - large_base_) / kSlab] = static_cast<uint8_t>(cls + 1);
  return reinterpret_cast<void*>(start);
}

void* AgentHeap::Allocate(size_t size, size_t align) {
  if (align > kMaxAlign || (align & (align - 1)) != 0) return nullptr;
  size_t want = size > align ? size : align;
  if (want < kMinClass) want = kMinClass;
  if (want > (size_t{1} << 46)) return nullptr;
  Lock l(this);
  if (!EnsureReserved()) return nullptr;
  if (want <= kSmallMax) return AllocateSmall(CeilLog2(want) - CeilLog2(kMinClass));
  const size_t k = CeilLog2(want);
  return AllocateLarge(k < 16 ? 0 : k - 16);
}

size_t AgentHeap::UsableSize(const void* p) const {
  const auto a = reinterpret_cast<uintptr_t>(p);
  if (a >= small_base_ && a < small_end_) {
    const uint8_t c = small_class_[(a - small_base_) / kSlab];
    return c == 0 ? 0 : kMinClass << (c - 1);
  }
  if (a >= large_base_ && a < large_end_) {
    const uint8_t c = large_class_[(a - large_base_) / kSlab];
    return c == 0 ? 0 : kSlab << (c - 1);
  }
  return 0;
}

void AgentHeap::Free(void* p) {
  if (p == nullptr) return;
  const auto a = reinterpret_cast<uintptr_t>(p);
  Lock l(this);
  if (a >= small_base_ && a < small_end_) {
    const uint8_t c = small_class_[(a - small_base_) / kSlab];
    if (c == 0) return;
    *static_cast<void**>(p) = small_free_[c - 1];
    small_free_[c - 1] = p;
    return;
  }
  if (a >= large_base_ && a < large_end_) {
    const uint8_t c = large_class_[(a - large_base_) / kSlab];
    if (c == 0) return;  // not a run's start: a pointer of a forgotten zone
    const size_t size = kSlab << (c - 1);
    syscall(SYS_madvise, a + kPage, size - kPage, MADV_DONTNEED);
    *static_cast<void**>(p) = large_free_[c - 1];
    large_free_[c - 1] = p;
  }
}

void AgentHeap::ForgetLargeZone() {
  Lock l(this);
  for (void*& f : large_free_) f = nullptr;
  if (large_base_ == 0) return;
  const uintptr_t old = large_base_;
  const size_t bytes = large_end_ - large_base_;
  large_base_ = large_end_ = large_bump_ = 0;
  large_class_ = nullptr;
  // At the same addresses when they are free (they are in a restored copy: the zone was left
  // out), so a stale pointer into the old zone still reads as ours and its free is ignored.
  auto [lb, le] = Reserve(bytes, kMaxAlign, "procmig-heap-large", old);
  if (lb == 0) {
    Publish();  // no large zone: large requests are glibc's from now on
    return;
  }
  large_base_ = lb;
  large_end_ = le;
  large_class_ = reinterpret_cast<uint8_t*>(lb);
  large_bump_ = lb + TableSlabs(bytes) * kSlab;
  Publish();
}

}  // namespace procmig::preload
