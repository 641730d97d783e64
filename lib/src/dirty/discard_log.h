// DiscardLog: pages the program discarded (MADV_DONTNEED/MADV_FREE, punched holes) since the
// last Sync, for the backends whose kernel mechanism does not see discards (soft-dirty) or may
// miss them (pagemap-scan when the kernel frees an emptied page table).
//
// Mark() is called by the agent's interposers on application threads and Drain() by Sync on the
// agent thread, under a spinlock that neither holds while allocating; Reset() (from
// AddBlocks/RemoveBlocks) builds the new set before taking it. Mark and Drain do not allocate.
#ifndef PROCMIG_DIRTY_DISCARD_LOG_H_
#define PROCMIG_DIRTY_DISCARD_LOG_H_

#include <atomic>
#include <span>

#include "dirty/dirty_set.h"

namespace procmig {

class DiscardLog {
 public:
  // Tracks `blocks` from now on, keeping marks of blocks that stay (by id). Allocates.
  void Reset(std::span<const RamBlock> blocks);
  // Marks the tracked pages of [addr, addr + len).
  void Mark(uintptr_t addr, size_t len);
  // Moves every mark into `out` (blocks matched by id) and clears them.
  void Drain(DirtySet& out);

 private:
  void Lock();
  void Unlock() { locked_.store(false, std::memory_order_release); }

  std::atomic<bool> locked_{false};
  DirtySet pending_;  // guarded by locked_
};

}  // namespace procmig

#endif  // PROCMIG_DIRTY_DISCARD_LOG_H_
