// RamBlockRegistry: which parts of the process's memory are RAM blocks, kept in step with
// /proc/self/maps.
//
// A block is made of every region that MemoryRegion::IsRamBlockCandidate() accepts (writable
// private memory: anonymous, heap, stacks, [anon:*], private file mappings) and that is readable,
// minus the excluded ranges (the agent's own arena, rings and stack: nothing in them is migrated).
// One block per maps line (adjacent lines are not merged: an mprotect that splits a region shows
// up as a remove and two adds). Update() takes a fresh parse of maps and returns the difference
// from the previous one: blocks removed (their ids), blocks added (new ids, never reused), and
// blocks resized in place (same start, same id, new length: mremap growth or shrink of a heap).
// Ids start at 1 and only grow, as the wire format requires.
//
// Threads: one owner (the agent thread); allocates, so call it outside park windows.
#ifndef PROCMIG_RAM_RAM_BLOCK_REGISTRY_H_
#define PROCMIG_RAM_RAM_BLOCK_REGISTRY_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "os/memory_region.h"
#include "ram/ram_block.h"

namespace procmig {

struct AddressRange {
  uintptr_t start = 0;
  uintptr_t end = 0;  // exclusive
};

struct RegistryDiff {
  std::vector<uint32_t> removed;
  std::vector<RamBlock> added;
  std::vector<RamBlock> resized;  // the new extent, under the old id
  bool empty() const { return removed.empty() && added.empty() && resized.empty(); }
};

class RamBlockRegistry {
 public:
  // `excluded` ranges are rounded out to pages. page_size is the base page size.
  RamBlockRegistry(size_t page_size, std::vector<AddressRange> excluded);

  // The candidate extents of `regions` (sorted by address, excluded parts cut out), as blocks
  // without ids. Pure; exposed for tests.
  std::vector<RamBlock> Candidates(std::span<const MemoryRegion> regions) const;

  // Replaces the block list with the candidates of `regions` and returns what changed.
  RegistryDiff Update(std::span<const MemoryRegion> regions);

  // Adds a range to leave out of every block (nothing when it is already covered).
  void AddExcluded(AddressRange range);
  // Takes back a range given to AddExcluded (rounded the same way); nothing when it was not
  // given as such (one that was already covered by others when it was added, for one).
  void RemoveExcluded(AddressRange range);
  size_t excluded_count() const { return excluded_.size(); }
  // True when the excluded ranges cover all of [start, end): memory that is entirely the agent's.
  bool Excludes(uintptr_t start, uintptr_t end) const;
  std::span<const RamBlock> blocks() const { return blocks_; }
  const RamBlock* Find(uint32_t id) const;
  uint64_t total_bytes() const;

 private:
  const size_t page_size_;
  std::vector<AddressRange> excluded_;  // sorted, page aligned
  std::vector<RamBlock> blocks_;        // sorted by start
  uint32_t next_id_ = 1;
};

}  // namespace procmig

#endif  // PROCMIG_RAM_RAM_BLOCK_REGISTRY_H_
