#include "dirty/discard_log.h"

#include <sched.h>

#include <utility>

namespace procmig {

void DiscardLog::Lock() {
  while (locked_.exchange(true, std::memory_order_acquire)) {
    while (locked_.load(std::memory_order_relaxed)) sched_yield();
  }
}

void DiscardLog::Reset(std::span<const RamBlock> blocks) {
  DirtySet next(blocks);
  Lock();
  next.HarvestFrom(pending_);
  std::swap(pending_, next);
  Unlock();
  // The old set is freed here, outside the lock.
}

void DiscardLog::Mark(uintptr_t addr, size_t len) {
  Lock();
  pending_.MarkRange(addr, len);
  Unlock();
}

void DiscardLog::Drain(DirtySet& out) {
  Lock();
  out.HarvestFrom(pending_);
  Unlock();
}

}  // namespace procmig
