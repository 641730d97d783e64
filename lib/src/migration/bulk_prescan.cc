#include "migration/bulk_prescan.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>

#include "codec/zero_page.h"
#include "os/fault_guard.h"
#include "os/resident_pages.h"

namespace procmig {

absl::StatusOr<std::unique_ptr<BulkPrescan>> BulkPrescan::Start(DirtyTracker* tracker,
                                                                std::vector<Span> spans,
                                                                size_t page_size) {
  if (tracker == nullptr || page_size == 0) {
    return absl::InvalidArgumentError("bulk prescan: no tracker or page size");
  }
  std::unique_ptr<BulkPrescan> p(new BulkPrescan(tracker, std::move(spans), page_size));
  p->helper_ = std::thread(&BulkPrescan::HelperLoop, p.get());
  return p;
}

BulkPrescan::BulkPrescan(DirtyTracker* tracker, std::vector<Span> spans, size_t page_size)
    : tracker_(tracker), spans_(std::move(spans)), page_size_(page_size) {
  first_chunk_.reserve(spans_.size());
  for (const Span& s : spans_) {
    first_chunk_.push_back(total_);
    total_ += (s.pages + kChunkPages - 1) / kChunkPages;
  }
  chunks_ = std::make_unique<Chunk[]>(total_);
  done_ = std::make_unique<std::atomic<bool>[]>(total_);
  for (size_t i = 0; i < total_; ++i) done_[i].store(false, std::memory_order_relaxed);
}

BulkPrescan::~BulkPrescan() {
  stop_.store(true, std::memory_order_release);
  if (helper_.joinable()) helper_.join();
}

const BulkPrescan::Chunk& BulkPrescan::Await(size_t span, uint64_t chunk) {
  const size_t index = first_chunk_[span] + chunk;
  // Chunks are awaited in order and claimed in order, so this one is claimed already or is the
  // next to claim: claiming the next is either doing this one or getting ahead meanwhile.
  while (!done_[index].load(std::memory_order_acquire)) {
    if (!ClassifyNext(&caller_chunks_)) sched_yield();  // the helper is on it
  }
  return chunks_[index];
}

void BulkPrescan::HelperLoop() {
  while (!stop_.load(std::memory_order_acquire) && ClassifyNext(&helper_chunks_)) {
  }
}

bool BulkPrescan::ClassifyNext(std::atomic<uint64_t>* count) {
  size_t index = next_.load(std::memory_order_relaxed);
  do {
    if (index >= total_) return false;
  } while (!next_.compare_exchange_weak(index, index + 1, std::memory_order_acq_rel));
  Classify(index);
  count->fetch_add(1, std::memory_order_relaxed);  // published by the release below
  done_[index].store(true, std::memory_order_release);
  return true;
}

void BulkPrescan::Classify(size_t index) {
  // The span holding chunk `index`: the last whose first chunk is not after it.
  const size_t span =
      static_cast<size_t>(std::upper_bound(first_chunk_.begin(), first_chunk_.end(), index) -
                          first_chunk_.begin()) -
      1;
  const uint64_t first = (index - first_chunk_[span]) * kChunkPages;
  const uint64_t pages = std::min<uint64_t>(kChunkPages, spans_[span].pages - first);
  const uintptr_t addr = spans_[span].start + first * page_size_;
  Chunk& c = chunks_[index];
  c.classified = false;
  // An error leaves the chunk's pages reported written at the first sync: resent, not lost.
  (void)tracker_->ProtectRange(addr, addr + pages * page_size_, page_size_);
  std::fill(std::begin(c.resident), std::end(c.resident), 0);
  std::fill(std::begin(c.zero), std::end(c.zero), 0);
  ScanWindow window;
  if (!window.open()) return;
  // Only the resident stretches are read: reading an empty page would map the zero page in.
  uint64_t stretch[kChunkPages / 64];
  absl::Status s = ForEachResidency(addr, pages, [&](uint64_t from, uint64_t n, bool resident) {
    if (!resident) return absl::OkStatus();
    bool faulted = false;
    if (window.ZeroBitmap(addr + from * page_size_, n, page_size_, IsZeroPage, stretch, &faulted) !=
        n) {
      return absl::DataLossError("the memory went away under the scan");
    }
    for (uint64_t k = from; k < from + n; ++k) {
      c.resident[k / 64] |= uint64_t{1} << (k % 64);
      if ((stretch[(k - from) / 64] >> ((k - from) % 64)) & 1)
        c.zero[k / 64] |= uint64_t{1} << (k % 64);
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return;  // mincore or the scan failed: the sender sends the chunk as usual
  c.classified = true;
}

}  // namespace procmig
