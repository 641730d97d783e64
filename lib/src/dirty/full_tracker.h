// FullTracker: the `full` backend. Reports every page of every block at every Sync.
//
// It needs nothing from the kernel and is always correct, but useless for live iterations: it is
// what stop-and-copy migration uses when no other backend works. Threads: see dirty_tracker.h.
#ifndef PROCMIG_DIRTY_FULL_TRACKER_H_
#define PROCMIG_DIRTY_FULL_TRACKER_H_

#include <vector>

#include "dirty/dirty_tracker.h"

namespace procmig {

class FullTracker final : public DirtyTracker {
 public:
  FullTracker() = default;
  ~FullTracker() override = default;

  TrackerKind kind() const override { return TrackerKind::kFull; }
  absl::Status Start(std::span<const RamBlock> blocks) override;
  absl::Status AddBlocks(std::span<const RamBlock> blocks) override;
  absl::Status RemoveBlocks(std::span<const uint32_t> ids) override;
  absl::StatusOr<const DirtySet*> Sync() override;
  absl::Status Stop() override;
  void MarkDiscarded(uintptr_t, size_t) override {}  // every page is reported anyway
  TrackerStats stats() const override { return stats_; }

 private:
  bool started_ = false;
  std::vector<RamBlock> blocks_;
  DirtySet result_;
  TrackerStats stats_;
};

}  // namespace procmig

#endif  // PROCMIG_DIRTY_FULL_TRACKER_H_
