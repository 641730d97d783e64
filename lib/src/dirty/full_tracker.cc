#include "dirty/full_tracker.h"

#include "base/status_macros.h"
#include "dirty/block_list.h"

namespace procmig {

absl::Status FullTracker::Start(std::span<const RamBlock> blocks) {
  if (started_) return absl::FailedPreconditionError("start full tracker: already started");
  ASSIGN_OR_RETURN(blocks_, BlocksWithAdded({}, blocks));
  result_ = DirtySet(blocks_);
  started_ = true;
  return absl::OkStatus();
}

absl::Status FullTracker::AddBlocks(std::span<const RamBlock> blocks) {
  if (!started_) return absl::FailedPreconditionError("add blocks to full tracker: not started");
  ASSIGN_OR_RETURN(blocks_, BlocksWithAdded(blocks_, blocks));
  result_ = DirtySet(blocks_);
  return absl::OkStatus();
}

absl::Status FullTracker::RemoveBlocks(std::span<const uint32_t> ids) {
  if (!started_)
    return absl::FailedPreconditionError("remove blocks from full tracker: not started");
  ASSIGN_OR_RETURN(blocks_, BlocksWithRemoved(blocks_, ids));
  result_ = DirtySet(blocks_);
  return absl::OkStatus();
}

absl::StatusOr<const DirtySet*> FullTracker::Sync() {
  if (!started_) return absl::FailedPreconditionError("sync full tracker: not started");
  result_.SetAll();
  ++stats_.syncs;
  return &result_;
}

absl::Status FullTracker::Stop() {
  started_ = false;
  blocks_.clear();
  result_ = DirtySet();
  return absl::OkStatus();
}

}  // namespace procmig
