// The bulk stage's first look at the big anonymous blocks, on two threads. Reading a GiB of
// touched zero pages is bound by memory bandwidth (30-35 ms here on one thread) and
// write-protecting it by the kernel's page-table walk (9 ms); done one after the other on the
// sender thread they were most of a zero-filled migration's time. Here each 4 MiB chunk (one
// wire chunk, wire::kMaxPagesPerRun pages) is write-protected through the tracker (which
// StartUnprotected left unprotected) and then classified: which pages hold memory (mincore) and
// which of those are all zeros (read in place under a ScanWindow). A helper thread claims chunks
// in order ahead of the sender; the sender, when the chunk it is at is not ready, classifies the
// next unclaimed one itself, so the two share the work whatever the content. Protecting a chunk
// before reading it keeps the tracker's promise: a write after the read re-dirties the page.
//
// The classification is a snapshot: a page found zero is sent as zero (a later write re-dirties
// it), a page found empty goes unread as a zero run (likewise), and the sender copies the others
// when it sends them. A chunk whose mincore or scan failed (the memory went away) is marked
// unclassified, and the sender sends it as it would without the prescan.
#ifndef PROCMIG_MIGRATION_BULK_PRESCAN_H_
#define PROCMIG_MIGRATION_BULK_PRESCAN_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "dirty/dirty_tracker.h"
#include "wire/wire_format.h"

namespace procmig {

class BulkPrescan {
 public:
  static constexpr uint64_t kChunkPages = wire::kMaxPagesPerRun;

  // A range of base pages to prescan, in the order the sender sends them.
  struct Span {
    uintptr_t start = 0;
    uint64_t pages = 0;
  };

  struct Chunk {
    bool classified = false;                   // false: send the chunk as without the prescan
    uint64_t resident[kChunkPages / 64] = {};  // bit i: page i of the chunk holds memory
    uint64_t zero[kChunkPages / 64] = {};      // bit i: it does, and is all zeros
  };

  // Starts the helper thread over `spans`. `tracker` (not owned) protects each chunk first.
  static absl::StatusOr<std::unique_ptr<BulkPrescan>> Start(DirtyTracker* tracker,
                                                            std::vector<Span> spans,
                                                            size_t page_size);
  // Stops the helper (after the chunk it is on) and joins it.
  ~BulkPrescan();
  BulkPrescan(const BulkPrescan&) = delete;
  BulkPrescan& operator=(const BulkPrescan&) = delete;

  // The sender thread only, chunks in order: chunk `chunk` of span `span`, once classified
  // (the sender classifies unclaimed chunks itself meanwhile).
  const Chunk& Await(size_t span, uint64_t chunk);

  // Chunks classified by the helper thread and by the caller of Await (tests): final for the
  // chunks Await has returned.
  uint64_t helper_chunks() const { return helper_chunks_.load(std::memory_order_relaxed); }
  uint64_t caller_chunks() const { return caller_chunks_.load(std::memory_order_relaxed); }

 private:
  BulkPrescan(DirtyTracker* tracker, std::vector<Span> spans, size_t page_size);
  void HelperLoop();
  // Claims the next unclaimed chunk, classifies it and counts it in *count; false when none is
  // left.
  bool ClassifyNext(std::atomic<uint64_t>* count);
  void Classify(size_t index);

  DirtyTracker* const tracker_;
  const std::vector<Span> spans_;
  const size_t page_size_;
  std::vector<size_t> first_chunk_;  // per span: its first chunk's index
  std::unique_ptr<Chunk[]> chunks_;
  std::unique_ptr<std::atomic<bool>[]> done_;  // per chunk: classified (by either thread)
  size_t total_ = 0;
  std::atomic<size_t> next_{0};  // the next chunk to claim
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> helper_chunks_{0};
  std::atomic<uint64_t> caller_chunks_{0};
  std::thread helper_;  // last: started after everything it uses
};

}  // namespace procmig

#endif  // PROCMIG_MIGRATION_BULK_PRESCAN_H_
