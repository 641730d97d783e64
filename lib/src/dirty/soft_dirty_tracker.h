// SoftDirtyTracker: the `soft-dirty` backend (CONFIG_MEM_SOFT_DIRTY: x86_64, ppc64, s390; never
// arm64; absent from this project's build host, present in Debian's stock kernels).
//
// Sync reads bit 55 of each page's /proc/self/pagemap entry in large batched preads (kBatchPages
// entries into a buffer allocated at Start), then writes "4" to /proc/self/clear_refs, which
// clears the bits and write-protects the ptes so the next write sets the bit again.
//
// Two properties of the kernel interface shape this class:
// - The reset is process-wide: clear_refs has no range, so nothing else in the process may use
//   soft-dirty (a second tracker, CRIU's pre-dump of this process) while this one runs.
// - Reading and resetting are two system calls. A write landing between them would be cleared
//   unseen, so Sync pauses the program's writers through the optional WriteQuiescer around the
//   pair. Without one, Sync is exact only when no other thread writes tracked memory during it
//   (e.g. when the agent calls it with application threads parked).
// False positives: a new or merged VMA (mremap, a grown region) is reported whole once.
//
// Threads: see dirty_tracker.h. Sync makes only pread/pwrite and writes preallocated memory.
#ifndef PROCMIG_DIRTY_SOFT_DIRTY_TRACKER_H_
#define PROCMIG_DIRTY_SOFT_DIRTY_TRACKER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "dirty/dirty_tracker.h"
#include "dirty/discard_log.h"

namespace procmig {

class SoftDirtyTracker final : public DirtyTracker {
 public:
  // pagemap entries per pread (8 bytes each: 512 KiB covers 256 MiB of 4 KiB pages).
  static constexpr size_t kBatchPages = 65536;

  // `gate` (may be null): only to receive the program's discards; Sync never locks it (soft-dirty
  // registers nothing, and its quiescer parks threads, which must not happen under the gate).
  explicit SoftDirtyTracker(WriteQuiescer* quiescer, LayoutGate* gate = nullptr)
      : quiescer_(quiescer), gate_(gate) {}
  ~SoftDirtyTracker() override;

  TrackerKind kind() const override { return TrackerKind::kSoftDirty; }
  std::vector<int> descriptors() const override {
    std::vector<int> out;
    for (int fd : {pagemap_fd_, clear_refs_fd_}) {
      if (fd >= 0) out.push_back(fd);
    }
    return out;
  }
  absl::Status Start(std::span<const RamBlock> blocks) override;
  absl::Status AddBlocks(std::span<const RamBlock> blocks) override;
  absl::Status RemoveBlocks(std::span<const uint32_t> ids) override;
  absl::StatusOr<const DirtySet*> Sync() override;
  absl::Status Stop() override;
  void MarkDiscarded(uintptr_t addr, size_t len) override { discards_.Mark(addr, len); }
  TrackerStats stats() const override { return stats_; }
  LayoutGate* layout_gate() const override { return gate_; }

 private:
  absl::Status ClearRefs();
  absl::Status ReadBlock(const RamBlock& block, DirtyBlock& out);

  WriteQuiescer* const quiescer_;  // not owned, may be null
  LayoutGate* const gate_;         // not owned, may be null
  bool started_ = false;
  int pagemap_fd_ = -1;
  int clear_refs_fd_ = -1;
  std::unique_ptr<uint64_t[]> entries_;  // kBatchPages pagemap entries
  std::vector<RamBlock> blocks_;
  DirtySet result_;
  DiscardLog discards_;  // marked by application threads, drained by Sync
  TrackerStats stats_;
};

}  // namespace procmig

#endif  // PROCMIG_DIRTY_SOFT_DIRTY_TRACKER_H_
