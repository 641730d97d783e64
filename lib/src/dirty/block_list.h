// The tracked-block list every backend keeps: validation of blocks handed to Start/AddBlocks and
// the new sorted list after an add or a remove.
//
// These functions allocate (they build a new vector) and are called by the controlling thread
// outside any lock; the backends then swap the new list in under their lock, so a fault handler
// never sees a list being modified and nothing allocates while that lock is held.
#ifndef PROCMIG_DIRTY_BLOCK_LIST_H_
#define PROCMIG_DIRTY_BLOCK_LIST_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "ram/ram_block.h"

namespace procmig {

// `current` plus `added`, sorted by start. InvalidArgument when a block is invalid, has a page
// size other than the base page size (hugetlb is not tracked yet), overlaps another, or reuses
// a tracked id. Read-only blocks are tracked too: a program can make one writable, write it and
// make it read-only again between two reads of its layout (a JIT's W^X flips do).
absl::StatusOr<std::vector<RamBlock>> BlocksWithAdded(std::span<const RamBlock> current,
                                                      std::span<const RamBlock> added);

// InvalidArgument naming the first block that is not writable (for a backend that changes
// protections itself: the mprotect tracker).
absl::Status RequireWritable(std::span<const RamBlock> blocks);

// `current` without the blocks of `ids`; NotFound for an id that is not tracked.
absl::StatusOr<std::vector<RamBlock>> BlocksWithRemoved(std::span<const RamBlock> current,
                                                        std::span<const uint32_t> ids);

// The blocks of `ids` (in `current`), in the order of `ids`; NotFound as above.
absl::StatusOr<std::vector<RamBlock>> BlocksById(std::span<const RamBlock> current,
                                                 std::span<const uint32_t> ids);

// The block holding `addr` in a list sorted by start, or nullptr. No allocation; signal safe.
const RamBlock* FindBlockHolding(std::span<const RamBlock> sorted, uintptr_t addr);

// The base page size (sysconf(_SC_PAGESIZE)), read once per call site by the caller.
size_t BasePageSize();

}  // namespace procmig

#endif  // PROCMIG_DIRTY_BLOCK_LIST_H_
