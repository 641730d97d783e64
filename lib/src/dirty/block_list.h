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
// size other than the base page size (hugetlb is not tracked yet), is not writable, overlaps
// another, or reuses a tracked id.
absl::StatusOr<std::vector<RamBlock>> BlocksWithAdded(std::span<const RamBlock> current,
                                                      std::span<const RamBlock> added);

// `current` without the blocks of `ids`; NotFound for an id that is not tracked.
absl::StatusOr<std::vector<RamBlock>> BlocksWithRemoved(std::span<const RamBlock> current,
                                                        std::span<const uint32_t> ids);

// The blocks of `ids` (in `current`), in the order of `ids`; NotFound as above.
absl::StatusOr<std::vector<RamBlock>> BlocksById(std::span<const RamBlock> current,
                                                 std::span<const uint32_t> ids);

// The block holding `addr` in a list sorted by start, or nullptr. No allocation; signal safe.
const RamBlock* FindBlockHolding(std::span<const RamBlock> sorted, uintptr_t addr);

// Whether `err`, from arming or re-arming a tracked block (UFFDIO_REGISTER, UFFDIO_WRITEPROTECT,
// mprotect, PAGEMAP_SCAN), means the block's range is no longer (wholly) mapped as it was read:
// the program unmapped, remapped or replaced part of it meanwhile. Such a block is not a failure
// but "stale": reported wholly dirty by every Sync until it is armed again (or removed after the
// caller's next layout read). `scan` adds EPERM, which PAGEMAP_SCAN with PM_SCAN_CHECK_WPASYNC
// returns for a range holding a VMA that is not registered with the userfaultfd.
bool IsLayoutChangeErrno(int err, bool scan = false);

// Stale flags (1 = stale) for `next`, sorted: a block keeps the flag it had in `current` (same
// id, flags in `stale`, same order as `current`), and is stale if its id is in `newly_stale`.
std::vector<uint8_t> StaleFlagsFor(std::span<const RamBlock> next,
                                   std::span<const RamBlock> current,
                                   std::span<const uint8_t> stale,
                                   std::span<const uint32_t> newly_stale);

// The base page size (sysconf(_SC_PAGESIZE)), read once per call site by the caller.
size_t BasePageSize();

}  // namespace procmig

#endif  // PROCMIG_DIRTY_BLOCK_LIST_H_
