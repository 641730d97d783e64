// DirtySet: the pages of each tracked RAM block written since the previous Sync, as one bitmap
// per block, read back as runs of pages per block.
//
// A tracker owns two kinds of sets: the result of Sync, which it hands out as a const pointer
// valid until its next Sync/AddBlocks/RemoveBlocks/Stop, and (for trackers that learn of writes
// one fault at a time) a "live" set that fault handlers fill with MarkPageAtomic while Sync
// harvests it. All storage is allocated by the constructor, which the trackers call from
// Start/AddBlocks/RemoveBlocks; every other method is allocation-free, lock-free and makes no
// system call, so Sync can use it while application threads are parked (they may hold the malloc
// lock), and MarkPageAtomic/IndexOf can run in a signal handler.
//
// Threads: one owner; MarkPageAtomic may race with HarvestFrom (see PageBitmap::SetAtomic).
#ifndef PROCMIG_DIRTY_DIRTY_SET_H_
#define PROCMIG_DIRTY_DIRTY_SET_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "base/page_bitmap.h"
#include "ram/ram_block.h"

namespace procmig {

// One block's dirty pages.
struct DirtyBlock {
  uint32_t id = 0;
  uintptr_t start = 0;
  size_t page_size = 0;
  PageBitmap pages;  // bit i = page at start + i * page_size

  uintptr_t end() const { return start + pages.size() * page_size; }
};

class DirtySet {
 public:
  DirtySet() = default;
  // All pages clean. `blocks` must be valid (ValidateRamBlock) and not overlap; they are kept
  // sorted by address. Allocates.
  explicit DirtySet(std::span<const RamBlock> blocks);

  DirtySet(DirtySet&&) noexcept = default;
  DirtySet& operator=(DirtySet&&) noexcept = default;
  DirtySet(const DirtySet&) = delete;
  DirtySet& operator=(const DirtySet&) = delete;

  std::span<const DirtyBlock> blocks() const { return blocks_; }
  std::span<DirtyBlock> mutable_blocks() { return blocks_; }
  // The block with this id, or nullptr.
  const DirtyBlock* Find(uint32_t id) const;
  // Index into blocks() of the block holding `addr`, or -1. Binary search; signal safe.
  ptrdiff_t IndexOf(uintptr_t addr) const;

  // Total dirty pages, and runs of dirty pages over all blocks.
  size_t DirtyPageCount() const;
  size_t RunCount() const;
  void ClearAll();
  void SetAll();

  // Marks every page overlapping [addr, addr + len) that lies in a block; returns how many pages
  // that was (counting pages already marked). Not atomic: for the owner only.
  size_t MarkRange(uintptr_t addr, size_t len);
  // Marks the page holding `addr` if a block holds it; returns whether one did. Signal safe.
  bool MarkPageAtomic(uintptr_t addr);

  // Calls f(const DirtyBlock&, PageRun) for every run of dirty pages, blocks in address order.
  template <typename F>
  void ForEachRun(F&& f) const {
    for (const DirtyBlock& b : blocks_) {
      b.pages.ForEachRun([&](size_t first, size_t count) { f(b, PageRun{first, count}); });
    }
  }

  // Moves every dirty bit of `live` into this set and clears it in `live`, word by word with an
  // atomic exchange, so a page that a fault handler marks concurrently is either taken now or
  // left for the next harvest. Blocks are matched by id; `live` blocks absent here are dropped.
  void HarvestFrom(DirtySet& live);

 private:
  std::vector<DirtyBlock> blocks_;  // sorted by start, non-overlapping
};

}  // namespace procmig

#endif  // PROCMIG_DIRTY_DIRTY_SET_H_
