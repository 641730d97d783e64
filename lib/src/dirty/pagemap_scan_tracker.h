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
// Layout races (dirty_tracker.h): with a LayoutGate, Start/AddBlocks/Sync hold its lock while
// they register, write-protect and scan, so no interposed mmap/munmap/mremap/mprotect/madvise
// runs meanwhile. A block whose range an interposed change touched since the layout it came from
// was read is checked against /proc/self/maps first and armed only if its ends are where
// mappings start and end (registering anything else would split a mapping of the program, whose
// next mremap of it would fail with EFAULT); otherwise it stays stale. A refused registration
// (EINVAL/ENOMEM/ENOENT: a change glibc made itself, e.g. malloc's munmap) is retried after that
// check, a few times; only a range that still lines up and is refused every time is an error. A
// scan refused with EPERM (a mapping replaced since it was armed: the new one is not registered)
// re-arms the block the same way and reports it wholly dirty. Removed blocks are not unregistered
// (that too could split a mapping that grew or merged since); registrations end when Stop closes
// the descriptor, and a registered range outside every block costs the program at most one minor
// fault per page.
//
// Threads: see dirty_tracker.h. Sync makes only ioctls (and, for stale or replaced blocks, reads
// /proc/self/maps into a buffer allocated beforehand) and writes the preallocated DirtySet.
#ifndef PROCMIG_DIRTY_PAGEMAP_SCAN_TRACKER_H_
#define PROCMIG_DIRTY_PAGEMAP_SCAN_TRACKER_H_

#include <memory>
#include <vector>

#include "dirty/dirty_tracker.h"
#include "dirty/discard_log.h"
#include "dirty/layout_check.h"
#include "dirty/userfault_fd.h"

struct page_region;

namespace procmig {

class PagemapScanTracker final : public DirtyTracker {
 public:
  // Regions per PAGEMAP_SCAN call (24 bytes each).
  static constexpr size_t kMaxRegions = 4096;

  // protect_by_scan = false skips ProtectByScan and write-protects with UFFDIO_WRITEPROTECT, the
  // path a kernel that refuses the scan takes (tests run it that way too).
  explicit PagemapScanTracker(LayoutGate* gate = nullptr, bool protect_by_scan = true);
  ~PagemapScanTracker() override;

  TrackerKind kind() const override { return TrackerKind::kPagemapScan; }
  std::vector<int> descriptors() const override;
  absl::Status Start(std::span<const RamBlock> blocks) override;
  absl::StatusOr<bool> StartUnprotected(std::span<const RamBlock> blocks) override;
  int ProtectRange(uintptr_t start, uintptr_t end, size_t page_size) override;
  absl::Status AddBlocks(std::span<const RamBlock> blocks) override;
  absl::Status RemoveBlocks(std::span<const uint32_t> ids) override;
  absl::StatusOr<const DirtySet*> Sync() override { return Scan(/*rearm=*/true); }
  absl::StatusOr<const DirtySet*> SyncFinal() override { return Scan(/*rearm=*/false); }
  absl::Status Stop() override;
  void MarkDiscarded(uintptr_t addr, size_t len) override { discards_.Mark(addr, len); }
  TrackerStats stats() const override { return stats_; }
  LayoutGate* layout_gate() const override { return gate_; }

 private:
  struct BlockState {
    bool armed = false;
    uint64_t since = 0;  // gate seq before the layout read the block came from
  };
  // Arms one block (the gate locked, if any), or leaves it stale when its range no longer lines
  // up with the mappings. `check`: look at /proc/self/maps first even if no interposed change
  // touched the range. No allocation unless it fails (an error the layout does not explain).
  absl::Status Arm(const RamBlock& block, BlockState& state, bool check);
  // Register + write-protect (only register while StartUnprotected runs); raw errno.
  int RegisterAndProtect(const RamBlock& block) const;
  // Write-protects [start, end) with one PAGEMAP_SCAN walk; raw errno (0 on success), after
  // which the callers fall back to UFFDIO_WRITEPROTECT.
  int ProtectByScan(uintptr_t start, uintptr_t end) const;
  // Scans one block, marking written pages into `out` and re-protecting them; raw errno of a
  // refused ioctl in *err (then the Status is OK and the caller decides).
  absl::StatusOr<const DirtySet*> Scan(bool rearm);
  absl::Status ScanBlock(const RamBlock& block, bool rearm, DirtyBlock& out, int* err);

  LayoutGate* const gate_;  // not owned; may be null
  const bool protect_by_scan_;
  bool started_ = false;
  bool register_only_ = false;  // in StartUnprotected
  UserfaultFd uffd_;
  int pagemap_fd_ = -1;
  std::unique_ptr<page_region[]> regions_;
  std::vector<RamBlock> blocks_;   // sorted by start, as result_.blocks()
  std::vector<BlockState> state_;  // parallel to blocks_
  uint64_t epoch_ = 0;             // gate seq at the end of the last Sync (or construction)
  LayoutCheck layout_;             // maps read once per gate hold
  DirtySet result_;
  DiscardLog discards_;  // marked by application threads, drained by Sync
  TrackerStats stats_;
};

}  // namespace procmig

#endif  // PROCMIG_DIRTY_PAGEMAP_SCAN_TRACKER_H_
