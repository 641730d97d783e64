// Which pages of an anonymous private range of this process hold memory, found with mincore(2)
// without touching them (reading a never-touched page would map the zero page into it, a page
// fault and a page-table entry per page). CRIU dumps only the pages pagemap shows present for the
// same reason; the bulk stage sends the others as zero runs, unread.
//
// mincore reports an anonymous page resident when a page (the zero page included) is mapped
// there, and not resident when nothing is: no page table entry, or a userfaultfd write-protect
// marker (what the uffd tracker's WP_UNPOPULATED arming leaves in untouched pages). A page
// swapped out and no longer in the swap cache reads as not resident too, although it holds data:
// the answer means "never touched" only on a machine with no swap (SwapConfigured()).
//
// Raw system calls and stack buffers only (error paths aside): usable while the program is
// parked.
#ifndef PROCMIG_OS_RESIDENT_PAGES_H_
#define PROCMIG_OS_RESIDENT_PAGES_H_

#include <cstddef>
#include <cstdint>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"

namespace procmig {

// Whether /proc/swaps lists any swap area (zram and zswap's backing devices included); true
// when it cannot be read.
bool SwapConfigured();

// Calls fn(first, count, resident) for the maximal stretches of pages [0, pages) of the range at
// `start` (page-aligned, base pages), in order; stops at fn's first error. An error of mincore
// is returned after the stretches before its slice (NotFound for ENOMEM: part of the range is no
// longer mapped).
absl::Status ForEachResidency(uintptr_t start, uint64_t pages,
                              absl::FunctionRef<absl::Status(uint64_t, uint64_t, bool)> fn);

}  // namespace procmig

#endif  // PROCMIG_OS_RESIDENT_PAGES_H_
