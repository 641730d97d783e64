// LayoutCheck: arming a block with userfaultfd while the program may be changing its layout, as
// both userfaultfd trackers (pagemap-scan, uffd-wp) do it.
//
// Before arming a block that may have changed (the layout gate saw a change in its range, or the
// caller asks), look at /proc/self/maps: a range that no longer lines up with whole mappings is
// left unarmed ("stale": its tracker reports it wholly dirty), since registering it would split
// the program's mappings. A registration refused for a reason a layout change explains (glibc's
// own mmap/munmap bypass the gate) is retried after a fresh look, a few times.
//
// No allocation except when the buffer grows (GrowBufferIfNeeded, outside locks) or on an error
// the layout does not explain. Threads: one owner (the tracker's controlling thread).
#ifndef PROCMIG_DIRTY_LAYOUT_CHECK_H_
#define PROCMIG_DIRTY_LAYOUT_CHECK_H_

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "dirty/dirty_tracker.h"
#include "dirty/maps_snapshot.h"
#include "ram/ram_block.h"

namespace procmig {

// Refusals of a registration or write-protect that a layout change explains.
bool IsLayoutRefusal(int err);

class LayoutCheck {
 public:
  // Makes room for the maps text (first call), or more room when the last read was truncated.
  void GrowBufferIfNeeded();
  // The next LinesUp reads maps again (call when taking the layout gate).
  void Forget() { read_ = false; }
  // Whether the block lines up with the mappings; reads maps once until Forget (`fresh`: again).
  bool LinesUp(const RamBlock& block, bool fresh);
  // Arms `block` through `arm` (register and protect; 0 or errno), checking the layout first
  // when `check`. True when armed, false when left stale; counts stale blocks and retries into
  // `stats`. FailedPrecondition for a refusal the layout does not explain.
  absl::StatusOr<bool> Arm(const RamBlock& block, bool check, absl::FunctionRef<int()> arm,
                           TrackerStats& stats);

 private:
  MapsSnapshot maps_;
  bool read_ = false;
};

}  // namespace procmig

#endif  // PROCMIG_DIRTY_LAYOUT_CHECK_H_
