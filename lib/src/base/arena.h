// Arena: the agent's own memory, an mmap-backed bump allocator that never calls malloc.
//
// Create() reserves `capacity` bytes (rounded up to whole pages) with one private anonymous
// MAP_NORESERVE mapping, so pages cost nothing until touched. Allocate() bumps a pointer and
// returns nullptr once the reservation is used up: the caller decides what running out means,
// nothing aborts. While application threads are parked (they may hold the malloc lock) the agent
// takes memory only from arenas it created beforehand; Allocate() and Reset() make no system call.
// range() reports the reservation so the agent can exclude its own memory from the RAM blocks it
// migrates; nothing in an arena survives migration. The mapping is named "[anon:<name>]" in
// /proc/PID/maps where the kernel supports it (best effort).
//
// Threads: an Arena is used by one thread at a time (the agent thread); it has no locks.
// Ownership: the Arena owns its mapping and unmaps it on destruction; it is movable.
#ifndef PROCMIG_BASE_ARENA_H_
#define PROCMIG_BASE_ARENA_H_

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>

#include "absl/status/statusor.h"

namespace procmig {

class Arena {
 public:
  // Errors: InvalidArgument for a capacity of 0 or one that overflows when rounded to pages,
  // ResourceExhausted when mmap fails with ENOMEM, otherwise ErrnoStatus's mapping of mmap's errno.
  static absl::StatusOr<Arena> Create(size_t capacity, const char* name = "procmig-arena");

  Arena(Arena&& other) noexcept;
  Arena& operator=(Arena&& other) noexcept;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  ~Arena();

  // Returns `size` bytes aligned to `align` (a power of two, at most 4096), or nullptr
  // when they do not fit or `align` is invalid. A size of 0 is treated as 1 so every pointer
  // returned is distinct. Memory from a fresh arena reads as zero; after Reset() it holds
  // whatever was written before.
  void* Allocate(size_t size, size_t align = alignof(std::max_align_t));

  // Uninitialised storage for `count` objects of T (an implicit-lifetime type: integers, PODs),
  // or nullptr when it does not fit or count * sizeof(T) overflows.
  template <typename T>
  T* AllocateArray(size_t count) {
    if (count > std::numeric_limits<size_t>::max() / sizeof(T)) return nullptr;
    return static_cast<T*>(Allocate(count * sizeof(T), alignof(T)));
  }

  // Forgets every allocation: pointers handed out before must no longer be used. Keeps the
  // mapping (and its touched pages).
  void Reset() { used_ = 0; }

  size_t used() const { return used_; }
  size_t capacity() const { return capacity_; }
  size_t remaining() const { return capacity_ - used_; }

  // The whole reservation [begin, end), page-aligned, used or not.
  uintptr_t begin() const { return reinterpret_cast<uintptr_t>(base_); }
  uintptr_t end() const { return begin() + capacity_; }
  bool Contains(const void* p) const {
    auto a = reinterpret_cast<uintptr_t>(p);
    return a >= begin() && a < end();
  }

 private:
  Arena(uint8_t* base, size_t capacity) : base_(base), capacity_(capacity) {}

  uint8_t* base_ = nullptr;
  size_t capacity_ = 0;
  size_t used_ = 0;
};

}  // namespace procmig

#endif  // PROCMIG_BASE_ARENA_H_
