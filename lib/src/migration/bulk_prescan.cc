#include "migration/bulk_prescan.h"

#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>

#include "codec/zero_page.h"
#include "os/fault_guard.h"

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
  states_ = std::make_unique<std::atomic<uint8_t>[]>(total_);
  for (size_t i = 0; i < total_; ++i) states_[i].store(kUnclaimed, std::memory_order_relaxed);
}

BulkPrescan::~BulkPrescan() {
  stop_.store(true, std::memory_order_release);
  if (helper_.joinable()) helper_.join();
}

const BulkPrescan::Chunk& BulkPrescan::Await(size_t span, uint64_t chunk) {
  const size_t index = first_chunk_[span] + chunk;
  // Chunks are awaited in order and claimed in order, so this one is claimed already or is the
  // next to claim: claiming the next is either doing this one or getting ahead meanwhile.
  while (states_[index].load(std::memory_order_acquire) != kDone) {
    if (!ClassifyNext()) sched_yield();  // the helper is on it
  }
  return chunks_[index];
}

void BulkPrescan::HelperLoop() {
  uint64_t mine = 0;
  while (!stop_.load(std::memory_order_acquire) && ClassifyNext()) ++mine;
  helper_chunks_.store(mine, std::memory_order_relaxed);
}

bool BulkPrescan::ClassifyNext() {
  size_t index = next_.load(std::memory_order_relaxed);
  do {
    if (index >= total_) return false;
  } while (!next_.compare_exchange_weak(index, index + 1, std::memory_order_acq_rel));
  states_[index].store(kClaimed, std::memory_order_relaxed);
  Classify(index);
  states_[index].store(kDone, std::memory_order_release);
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
  unsigned char vec[kChunkPages];
  if (syscall(SYS_mincore, addr, pages * page_size_, vec) != 0) return;
  std::fill(std::begin(c.resident), std::end(c.resident), 0);
  std::fill(std::begin(c.zero), std::end(c.zero), 0);
  for (uint64_t i = 0; i < pages; ++i) {
    if ((vec[i] & 1) != 0) c.resident[i / 64] |= uint64_t{1} << (i % 64);
  }
  ScanWindow window;
  if (!window.open()) return;
  // Only the resident stretches are read: reading an empty page would map the zero page in.
  uint64_t stretch[kChunkPages / 64];
  for (uint64_t i = 0; i < pages;) {
    if ((vec[i] & 1) == 0) {
      ++i;
      continue;
    }
    uint64_t j = i;
    while (j < pages && (vec[j] & 1) != 0) ++j;
    bool faulted = false;
    const uint64_t n =
        window.ZeroBitmap(addr + i * page_size_, j - i, page_size_, IsZeroPage, stretch, &faulted);
    if (faulted || n != j - i) return;
    for (uint64_t k = 0; k < n; ++k) {
      if ((stretch[k / 64] >> (k % 64)) & 1) c.zero[(i + k) / 64] |= uint64_t{1} << ((i + k) % 64);
    }
    i = j;
  }
  c.classified = true;
}

}  // namespace procmig
