#include "dirty/soft_dirty_tracker.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "dirty/block_list.h"
#include "os/kernel_compat.h"

namespace procmig {

SoftDirtyTracker::~SoftDirtyTracker() { (void)Stop(); }

absl::Status SoftDirtyTracker::Start(std::span<const RamBlock> blocks) {
  if (started_) return absl::FailedPreconditionError("start soft-dirty tracker: already started");
  ASSIGN_OR_RETURN(std::vector<RamBlock> sorted, BlocksWithAdded({}, blocks));
  pagemap_fd_ = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (pagemap_fd_ < 0) {
    return ErrnoStatus(absl::StatusCode::kFailedPrecondition, "open /proc/self/pagemap", errno);
  }
  clear_refs_fd_ = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
  if (clear_refs_fd_ < 0) {
    int err = errno;
    close(pagemap_fd_);
    pagemap_fd_ = -1;
    return ErrnoStatus(absl::StatusCode::kFailedPrecondition, "open /proc/self/clear_refs", err);
  }
  entries_ = std::make_unique<uint64_t[]>(kBatchPages);
  blocks_ = std::move(sorted);
  result_ = DirtySet(blocks_);
  discards_.Reset(blocks_);
  started_ = true;
  if (gate_ != nullptr) {
    LayoutGateLock hold(gate_);
    gate_->Attach(&DiscardToTracker, this);
  }
  absl::Status s = ClearRefs();
  if (!s.ok()) (void)Stop();
  return s;
}

absl::Status SoftDirtyTracker::ClearRefs() {
  const size_t n = sizeof(kernel::kClearRefsSoftDirty) - 1;
  for (;;) {
    ssize_t w = pwrite(clear_refs_fd_, kernel::kClearRefsSoftDirty, n, 0);
    if (w == static_cast<ssize_t>(n)) return absl::OkStatus();
    if (w < 0 && errno == EINTR) continue;
    return ErrnoStatus(absl::StatusCode::kFailedPrecondition,
                       "reset soft-dirty bits (write 4 to /proc/self/clear_refs)",
                       w < 0 ? errno : EIO);
  }
}

absl::Status SoftDirtyTracker::AddBlocks(std::span<const RamBlock> blocks) {
  if (!started_)
    return absl::FailedPreconditionError("add blocks to soft-dirty tracker: not started");
  ASSIGN_OR_RETURN(blocks_, BlocksWithAdded(blocks_, blocks));
  result_ = DirtySet(blocks_);
  discards_.Reset(blocks_);
  return absl::OkStatus();
}

absl::Status SoftDirtyTracker::RemoveBlocks(std::span<const uint32_t> ids) {
  if (!started_)
    return absl::FailedPreconditionError("remove blocks from soft-dirty tracker: not started");
  ASSIGN_OR_RETURN(blocks_, BlocksWithRemoved(blocks_, ids));
  result_ = DirtySet(blocks_);
  discards_.Reset(blocks_);
  return absl::OkStatus();
}

absl::Status SoftDirtyTracker::ReadBlock(const RamBlock& block, DirtyBlock& out) {
  // pagemap has one entry per base page; blocks have the base page size (block_list.h).
  const size_t pages = block.page_count();
  const size_t first_pfn_index = block.start / block.page_size;
  for (size_t done = 0; done < pages;) {
    const size_t want = std::min(kBatchPages, pages - done);
    const off_t offset = static_cast<off_t>((first_pfn_index + done) * kernel::kPagemapEntrySize);
    ssize_t got = pread(pagemap_fd_, entries_.get(), want * kernel::kPagemapEntrySize, offset);
    ++stats_.scan_calls;
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0 || got % kernel::kPagemapEntrySize != 0) {
      return ErrnoStatus(absl::StrFormat("read /proc/self/pagemap for block %u (%s) at page %u",
                                         block.id, block.name, done),
                         got < 0 ? errno : EIO);
    }
    const size_t n = static_cast<size_t>(got) / kernel::kPagemapEntrySize;
    for (size_t i = 0; i < n; ++i) {
      if ((entries_[i] >> kernel::kPagemapSoftDirtyBit) & 1) out.pages.Set(done + i);
    }
    done += n;
  }
  return absl::OkStatus();
}

absl::StatusOr<const DirtySet*> SoftDirtyTracker::Sync() {
  if (!started_) return absl::FailedPreconditionError("sync soft-dirty tracker: not started");
  result_.ClearAll();
  if (quiescer_ != nullptr) RETURN_IF_ERROR(quiescer_->Pause());
  absl::Status s;
  std::span<DirtyBlock> out = result_.mutable_blocks();
  for (size_t i = 0; i < blocks_.size() && s.ok(); ++i) s = ReadBlock(blocks_[i], out[i]);
  if (s.ok()) s = ClearRefs();
  if (quiescer_ != nullptr) quiescer_->Resume();
  RETURN_IF_ERROR(s);
  discards_.Drain(result_);
  ++stats_.syncs;
  return &result_;
}

absl::Status SoftDirtyTracker::Stop() {
  if (!started_) return absl::OkStatus();
  started_ = false;
  if (gate_ != nullptr) {
    LayoutGateLock hold(gate_);
    gate_->Detach();
  }
  if (pagemap_fd_ >= 0) close(pagemap_fd_);
  if (clear_refs_fd_ >= 0) close(clear_refs_fd_);
  pagemap_fd_ = clear_refs_fd_ = -1;
  blocks_.clear();
  result_ = DirtySet();
  discards_.Reset({});
  return absl::OkStatus();
}

}  // namespace procmig
