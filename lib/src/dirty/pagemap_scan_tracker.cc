#include "dirty/pagemap_scan_tracker.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "dirty/block_list.h"
#include "os/kernel_compat.h"

namespace procmig {

PagemapScanTracker::PagemapScanTracker() = default;

PagemapScanTracker::~PagemapScanTracker() { (void)Stop(); }

absl::Status PagemapScanTracker::Start(std::span<const RamBlock> blocks) {
  if (started_) return absl::FailedPreconditionError("start pagemap-scan tracker: already started");
  ASSIGN_OR_RETURN(std::vector<RamBlock> sorted, BlocksWithAdded({}, blocks));
  ASSIGN_OR_RETURN(uffd_, UserfaultFd::Open(UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED,
                                            /*allow_user_mode_only=*/true));
  pagemap_fd_ = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (pagemap_fd_ < 0) {
    int err = errno;
    uffd_.Close();
    return ErrnoStatus(absl::StatusCode::kFailedPrecondition, "open /proc/self/pagemap", err);
  }
  regions_ = std::make_unique<page_region[]>(kMaxRegions);
  blocks_ = std::move(sorted);
  result_ = DirtySet(blocks_);
  discards_.Reset(blocks_);
  started_ = true;
  for (const RamBlock& b : blocks_) {
    absl::Status s = Arm(b);
    if (!s.ok()) {
      (void)Stop();
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status PagemapScanTracker::Arm(const RamBlock& b) {
  RETURN_IF_ERROR(uffd_.RegisterWp(b.start, b.length, /*missing=*/false));
  return uffd_.WriteProtectStatus(b.start, b.length, /*protect=*/true);
}

absl::Status PagemapScanTracker::AddBlocks(std::span<const RamBlock> blocks) {
  if (!started_)
    return absl::FailedPreconditionError("add blocks to pagemap-scan tracker: not started");
  ASSIGN_OR_RETURN(std::vector<RamBlock> next, BlocksWithAdded(blocks_, blocks));
  for (size_t i = 0; i < blocks.size(); ++i) {
    absl::Status s = Arm(blocks[i]);
    if (!s.ok()) {
      for (size_t j = 0; j <= i; ++j) (void)uffd_.Unregister(blocks[j].start, blocks[j].length);
      return s;
    }
  }
  blocks_ = std::move(next);
  result_ = DirtySet(blocks_);
  discards_.Reset(blocks_);
  return absl::OkStatus();
}

absl::Status PagemapScanTracker::RemoveBlocks(std::span<const uint32_t> ids) {
  if (!started_)
    return absl::FailedPreconditionError("remove blocks from pagemap-scan tracker: not started");
  ASSIGN_OR_RETURN(std::vector<RamBlock> gone, BlocksById(blocks_, ids));
  ASSIGN_OR_RETURN(std::vector<RamBlock> next, BlocksWithRemoved(blocks_, ids));
  for (const RamBlock& b : gone) {
    // The region may already be unmapped (often why it is removed), so a failure here only
    // means there was nothing left to unregister.
    (void)uffd_.Unregister(b.start, b.length);
  }
  blocks_ = std::move(next);
  result_ = DirtySet(blocks_);
  discards_.Reset(blocks_);
  return absl::OkStatus();
}

absl::Status PagemapScanTracker::ScanBlock(const RamBlock& block, DirtyBlock& out) {
  pm_scan_arg arg{};
  arg.size = sizeof(arg);
  arg.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC;
  arg.start = block.start;
  arg.end = block.end();
  arg.vec = reinterpret_cast<uintptr_t>(regions_.get());
  arg.vec_len = kMaxRegions;
  // Exactly PAGE_IS_WRITTEN in both masks selects the kernel's fast path, which also counts an
  // empty pte (a page dropped since the last sync) as written.
  arg.category_mask = PAGE_IS_WRITTEN;
  arg.return_mask = PAGE_IS_WRITTEN;
  for (;;) {
    long n = ioctl(pagemap_fd_, PAGEMAP_SCAN, &arg);
    ++stats_.scan_calls;
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(absl::StatusCode::kFailedPrecondition,
                         absl::StrFormat("PAGEMAP_SCAN block %u (%s) 0x%x..0x%x", block.id,
                                         block.name, arg.start, arg.end),
                         errno);
    }
    for (long i = 0; i < n; ++i) {
      const page_region& r = regions_[static_cast<size_t>(i)];
      uint64_t lo = std::max<uint64_t>(r.start, block.start);
      uint64_t hi = std::min<uint64_t>(r.end, block.end());
      if (lo >= hi) continue;
      size_t first = (lo - block.start) / block.page_size;
      size_t last = (hi - block.start + block.page_size - 1) / block.page_size;
      out.pages.SetRange(first, last - first);
    }
    if (arg.walk_end >= arg.end) return absl::OkStatus();
    if (arg.walk_end <= arg.start && n == 0) {
      return absl::InternalError(
          absl::StrFormat("PAGEMAP_SCAN block %u: no progress at 0x%x (walk_end 0x%x)", block.id,
                          arg.start, arg.walk_end));
    }
    arg.start = arg.walk_end;
  }
}

absl::StatusOr<const DirtySet*> PagemapScanTracker::Sync() {
  if (!started_) return absl::FailedPreconditionError("sync pagemap-scan tracker: not started");
  result_.ClearAll();
  std::span<DirtyBlock> out = result_.mutable_blocks();
  for (size_t i = 0; i < blocks_.size(); ++i) RETURN_IF_ERROR(ScanBlock(blocks_[i], out[i]));
  discards_.Drain(result_);
  ++stats_.syncs;
  return &result_;
}

absl::Status PagemapScanTracker::Stop() {
  if (!started_) return absl::OkStatus();
  started_ = false;
  // Closing the userfaultfd unregisters every range and clears the uffd-wp bits.
  uffd_.Close();
  if (pagemap_fd_ >= 0) close(pagemap_fd_);
  pagemap_fd_ = -1;
  blocks_.clear();
  result_ = DirtySet();
  discards_.Reset({});
  return absl::OkStatus();
}

}  // namespace procmig
