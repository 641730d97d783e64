// PagemapScanTracker: the `pagemap-scan` backend (Linux 6.7+), the best one.
//
// Blocks are registered with a userfaultfd opened with UFFD_FEATURE_WP_ASYNC |
// UFFD_FEATURE_WP_UNPOPULATED in write-protect mode and write-protected, empty ptes included. A
// write fault is then resolved by the kernel itself (it clears the pte's uffd-wp bit, no thread
// of ours runs), so the program pays only a minor fault per page and round. Sync issues
// PAGEMAP_SCAN on /proc/self/pagemap with PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC, category
// and return mask PAGE_IS_WRITTEN: one pass under the page-table lock that reports every written
// page and write-protects it again, so no write can fall between the read and the re-arm.
// The output vector is bounded (kMaxRegions, allocated at Start) and the walk resumes from
// walk_end until the block is covered. A transparent huge page written anywhere is reported as
// all of its base pages (the kernel keeps one uffd-wp bit per PMD), a page dropped with
// MADV_DONTNEED is reported (an empty pte is "written" to the scan), and its next write too.
//
// Threads: see dirty_tracker.h. Sync makes only ioctls and writes the preallocated DirtySet.
#ifndef PROCMIG_DIRTY_PAGEMAP_SCAN_TRACKER_H_
#define PROCMIG_DIRTY_PAGEMAP_SCAN_TRACKER_H_

#include <memory>
#include <vector>

#include "dirty/dirty_tracker.h"
#include "dirty/discard_log.h"
#include "dirty/userfault_fd.h"

struct page_region;

namespace procmig {

class PagemapScanTracker final : public DirtyTracker {
 public:
  // Regions per PAGEMAP_SCAN call (24 bytes each).
  static constexpr size_t kMaxRegions = 4096;

  PagemapScanTracker();
  ~PagemapScanTracker() override;

  TrackerKind kind() const override { return TrackerKind::kPagemapScan; }
  absl::Status Start(std::span<const RamBlock> blocks) override;
  absl::Status AddBlocks(std::span<const RamBlock> blocks) override;
  absl::Status RemoveBlocks(std::span<const uint32_t> ids) override;
  absl::StatusOr<const DirtySet*> Sync() override;
  absl::Status Stop() override;
  void MarkDiscarded(uintptr_t addr, size_t len) override { discards_.Mark(addr, len); }
  TrackerStats stats() const override { return stats_; }

 private:
  absl::Status Arm(const RamBlock& block);
  // Scans one block, marking written pages into `out` and re-protecting them.
  absl::Status ScanBlock(const RamBlock& block, DirtyBlock& out);

  bool started_ = false;
  UserfaultFd uffd_;
  int pagemap_fd_ = -1;
  std::unique_ptr<page_region[]> regions_;
  std::vector<RamBlock> blocks_;  // sorted by start, as result_.blocks()
  DirtySet result_;
  DiscardLog discards_;  // marked by application threads, drained by Sync
  TrackerStats stats_;
};

}  // namespace procmig

#endif  // PROCMIG_DIRTY_PAGEMAP_SCAN_TRACKER_H_
