// The agent's own heap: what the agent's threads allocate (its code, libstdc++, abseil, glibc's
// internal allocations made on their behalf) comes from mappings of the agent's, never from the
// program's malloc (DESIGN.md: the agent must be able to allocate while the program's threads
// are parked holding glibc's malloc locks, and its memory must not grow the program's arenas).
//
// The preload exports malloc and its family (glibc supports replacing malloc by interposition;
// agent_heap.cc). A call from a thread marked as the agent's (MarkAgentThread; a thread an agent
// thread creates is marked too, through the pthread_create interposer) is served here; any other
// goes to the program's own malloc (the next definition in the lookup order: glibc's, or a
// tcmalloc or jemalloc it is linked with) after one thread-local test. free(), realloc() and
// malloc_usable_size() decide by address: a pointer inside the heap is the agent's, any other
// the program's. When the heap cannot serve a request (a zone is full, the reservation failed)
// it is the program's allocator's after all, so nothing fails that would not have.
//
// Two zones, one reserved mapping each (MAP_NORESERVE: untouched pages cost nothing), made at
// the first agent allocation, named [anon:procmig-heap-small] and [anon:procmig-heap-large]:
// - small (up to 32 KiB, power-of-two classes carved from 64 KiB slabs): migrated with the
//   program like its .bss, so what agent code keeps across a migration (function-local statics,
//   glibc's per-thread buffers, the tail of the old agent thread that the restored sentinel
//   reaps) stays valid in a restored copy. Objects live at the stop stay behind there.
// - large (64 KiB and more, power-of-two page runs): excluded from the RAM blocks, so the
//   sender's staging area, XBZRLE cache and buffers never travel; a freed run's pages go back to
//   the kernel at once (MADV_DONTNEED) and a run always starts zeroed. A restored copy has no
//   large zone: ForgetLargeZone() starts a new one (at the same addresses when they are free).
// Neither zone changes the process's layout as it fills (no mmap per allocation).
//
// Threads: one lock (a spinlock; only agent threads take it, so a parked program never holds
// it). The heap state is constant-initialized: malloc may run before any constructor.
#ifndef PROCMIG_PRELOAD_AGENT_HEAP_H_
#define PROCMIG_PRELOAD_AGENT_HEAP_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <utility>

namespace procmig::preload {

class AgentHeap {
 public:
  static constexpr size_t kMinClass = 16;
  static constexpr size_t kSmallMax = 32u << 10;
  static constexpr size_t kSlab = 64u << 10;
  static constexpr size_t kSmallClasses = 12;  // 16 B .. 32 KiB
  static constexpr size_t kLargeClasses = 32;  // 64 KiB .. 2^47
  static constexpr size_t kMaxAlign = 2u << 20;

  // Zone sizes; Reserve() rounds them to slabs. Not started until the first allocation.
  constexpr AgentHeap(size_t small_bytes, size_t large_bytes)
      : small_want_(small_bytes), large_want_(large_bytes) {}
  ~AgentHeap() = default;  // the zones outlive it: an exiting process may still free into them
  AgentHeap(const AgentHeap&) = delete;
  AgentHeap& operator=(const AgentHeap&) = delete;

  // Reserves the zones now (else at the first Allocate); false when the small one failed.
  bool Start();

  // `size` bytes aligned to `align` (a power of two; 0 or 1 mean 16), or nullptr when the heap
  // cannot serve it (then the caller uses glibc's). Memory from the large zone reads as zero.
  void* Allocate(size_t size, size_t align = 0);
  // Whether p lies in one of the zones (its Free/UsableSize are this heap's). Inline: every
  // free() of the program's asks.
  bool Owns(const void* p) const {
    const auto a = reinterpret_cast<uintptr_t>(p);
    return a - bounds_[0].load(std::memory_order_relaxed) <
               bounds_[1].load(std::memory_order_relaxed) ||
           a - bounds_[2].load(std::memory_order_relaxed) <
               bounds_[3].load(std::memory_order_relaxed);
  }
  // p from Allocate (nullptr and pointers of a forgotten large zone are ignored).
  void Free(void* p);
  // The bytes usable at p (its class), 0 for a pointer the heap does not know.
  size_t UsableSize(const void* p) const;
  // Whether a block of `size` from Allocate reads as zero (large ones do).
  static bool ZeroedOnAllocate(size_t size) { return size > kSmallMax; }

  // The zones' ranges ({0, 0} until the first allocation).
  std::pair<uintptr_t, uintptr_t> small_zone() const { return {small_base_, small_end_}; }
  std::pair<uintptr_t, uintptr_t> large_zone() const { return {large_base_, large_end_}; }

  // In a restored copy, before an agent thread allocates: the large zone did not come back
  // (it is never migrated). Its state is dropped and the zone reserved again.
  void ForgetLargeZone();

 private:
  class Lock;
  bool EnsureReserved();  // with the lock held
  void Publish();         // copies the zones' bounds to bounds_ (with the lock held)
  void* AllocateSmall(size_t cls);
  void* AllocateLarge(size_t cls);

  const size_t small_want_;
  const size_t large_want_;
  std::atomic<bool> locked_{false};
  // The zones as Owns() reads them, without the lock, from any thread (a pointer handed out
  // was published before): small base and length, large base and length (0 and 0: none).
  std::atomic<uintptr_t> bounds_[4] = {0, 0, 0, 0};
  bool tried_ = false;
  uintptr_t small_base_ = 0, small_end_ = 0, small_bump_ = 0;
  uintptr_t large_base_ = 0, large_end_ = 0, large_bump_ = 0;
  // Class + 1 of each 64 KiB unit that starts a slab or a run (0: none), one byte per unit, at the
  // head of each zone (the large zone's table is dropped with it).
  uint8_t* small_class_ = nullptr;
  uint8_t* large_class_ = nullptr;
  void* small_free_[kSmallClasses] = {};
  void* large_free_[kLargeClasses] = {};
};

// Marks the calling thread as the agent's: its allocations come from the agent heap from now on.
void MarkAgentThread();
bool IsAgentThread();
// The process's agent heap (constant-initialized).
AgentHeap& TheAgentHeap();
// For the malloc family and operator new/delete alike: memory of the agent heap for an agent
// thread (null for any other thread, or when the heap cannot serve it), and the free of a
// pointer that is not the program allocator's (true: done, or nothing to do).
void* AllocateIfAgent(size_t size, size_t align);
bool FreeIfNotProgramMemory(void* p);
// The file the program's malloc comes from (libc, or a jemalloc or tcmalloc preloaded after the
// agent or linked with the program), for the agent's log; looks it up if no malloc has yet.
const char* ProgramAllocatorFile();

}  // namespace procmig::preload

#endif  // PROCMIG_PRELOAD_AGENT_HEAP_H_
