// BlockMemory: the receiver's copy of one RAM block, held in memory while the stream arrives.
//
// An anonymous private mapping (MAP_NORESERVE: a sparse source block costs only the pages that
// carry data) with transparent huge pages requested for blocks of 2 MiB and more, plus one bit
// per page saying "this page may hold non-zero bytes". The bit lets a zero page that overwrites
// data be cleared with a memset, a zero page over untouched memory cost nothing, and the image
// store write holes for zero pages without scanning them.
//
// A checkpoint receive keeps no copy in memory (CreateUnmapped): the pages go to the block's image
// file (FileRunWriter) and BlockMemory keeps only the bookkeeping (bits, crcs).
//
// Populate(): faults in a range ahead of the data (MADV_POPULATE_WRITE), so the receive path does
// not pay a page fault per page (about 2.8 us per 4 KiB page on the reference VM).
//
// Threads: page writes (page(), MarkNonZero(), ClearPage()) may run concurrently from several
// channel threads for DIFFERENT pages; the bitmap uses atomic word operations for that.
// Resize() and destruction need exclusive access (the Receiver holds its block lock exclusively).
#ifndef PROCMIG_MIGRATION_BLOCK_MEMORY_H_
#define PROCMIG_MIGRATION_BLOCK_MEMORY_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace procmig {

// Fresh read-write private memory of `bytes` for a block that lives at `final_start` in the
// migrated process (0: unknown): mapped there when that range is free here (a restore then moves
// nothing), else at an address congruent to it modulo 2 MiB when bytes >= 2 MiB (a move keeps its
// huge pages whole), else anywhere. `grows_down`: MAP_GROWSDOWN, anywhere. MAP_FAILED with errno
// on failure.
void* MapForBlock(uint64_t bytes, uint64_t final_start, uint32_t page_size,
                  bool grows_down = false);

// Whether a restorer copies a block of these wire flags into a fresh mapping of its file (the
// written pages of a private file mapping) rather than moving it into place.
bool RestorerCopiesBlock(uint32_t block_flags);
// Whether a block's memory grows down (the [stack]): mapped MAP_GROWSDOWN here, so a restorer
// moves it into place and the main thread's stack can still grow there.
bool BlockGrowsDown(uint32_t block_flags);
// The final address to give MapForBlock for a block of these flags at `start`: 0 where that
// address would only be in the restorer's way (a block it copies, a stack).
uint64_t BlockMapHint(uint32_t block_flags, uint64_t start);

class BlockMemory {
 public:
  // length > 0, a multiple of page_size. ResourceExhausted when the mapping fails.
  // `final_start` is where the block lives in the migrated process (0: unknown). The memory is
  // placed there when that range is free here (a restore then has nothing to move), else at an
  // address congruent to it modulo 2 MiB, so moving it keeps its huge pages whole (the kernel
  // moves page-table entries one by one, splitting every huge page, when the two differ).
  // `grows_down`: MAP_GROWSDOWN, no huge pages (BlockGrowsDown).
  static absl::StatusOr<std::unique_ptr<BlockMemory>> Create(uint64_t length, uint32_t page_size,
                                                             uint64_t final_start = 0,
                                                             bool grows_down = false);
  // Bookkeeping only (bits and crcs): the pages live elsewhere, e.g. in the block's image file.
  // page() and bytes() are not to be used; ClearPage() and Populate() touch no memory.
  static absl::StatusOr<std::unique_ptr<BlockMemory>> CreateUnmapped(uint64_t length,
                                                                     uint32_t page_size);
  ~BlockMemory();
  BlockMemory(const BlockMemory&) = delete;
  BlockMemory& operator=(const BlockMemory&) = delete;

  // Grows or shrinks the block, keeping its contents up to min(old, new) length; grown pages
  // read as zero. May move the mapping.
  absl::Status Resize(uint64_t new_length);

  // Faults in pages [first, first + count) for writing. Best effort: a kernel without
  // MADV_POPULATE_WRITE (before 5.14) simply faults on first write later.
  void Populate(uint64_t first_page, uint64_t count);

  uint8_t* page(uint64_t index) { return base_ + index * page_size_; }
  const uint8_t* page(uint64_t index) const { return base_ + index * page_size_; }
  std::span<const uint8_t> bytes() const {
    return mapped() ? std::span<const uint8_t>(base_, length_) : std::span<const uint8_t>();
  }
  bool mapped() const { return base_ != nullptr; }

  // The crc32c of each page as it now holds (a zero page's until set): the receiver records
  // the crc it checked, so the whole block's digest is ContentCrc(), computed from the page crcs
  // without reading the memory again (a 1 GiB re-read took 360 ms of the pause under load).
  void SetPageCrc(uint64_t index, uint32_t crc) { crcs_[index] = crc; }
  uint32_t ContentCrc() const;
  // Marks pages [first, first + count) as holding data: one atomic OR per 64 pages (a locked
  // instruction waits for the page copies' stores to drain, so the receiver marks a run's raw
  // pages once, after copying them all).
  void MarkNonZero(uint64_t first, uint64_t count = 1);
  // Makes the page read as zero (memset only when it may hold data) and clears its bit. True
  // when it may have held data.
  bool ClearPage(uint64_t index);
  bool MaybeNonZero(uint64_t index) const;
  uint64_t CountMaybeNonZero() const;

  // A second home for the block's pages during a live restore: the receiver's own mapping of the
  // block's file, made ahead at the block's final address (restore/file_premaps.h). While set,
  // the receiver writes every page it applies there too, so a restorer that keeps that mapping
  // has nothing to copy. 0: none. Dropped (for good) when a write there failed.
  void set_mirror(uint64_t address) { mirror_.store(address, std::memory_order_relaxed); }
  uint64_t mirror() const { return mirror_.load(std::memory_order_relaxed); }
  void DropMirror() { mirror_.store(0, std::memory_order_relaxed); }

  bool grows_down() const { return grows_down_; }
  uint64_t length() const { return length_; }
  uint64_t page_count() const { return length_ / page_size_; }
  uint32_t page_size() const { return page_size_; }

 private:
  BlockMemory(uint8_t* base, uint64_t mapped, uint64_t length, uint32_t page_size, bool grows_down);

  uint8_t* base_;
  uint64_t mapped_;  // bytes mapped at base_ (>= length_, rounded for huge pages)
  uint64_t length_;
  const uint32_t page_size_;
  const bool grows_down_;
  std::vector<uint64_t> nonzero_;  // one bit per page; accessed through std::atomic_ref
  std::vector<uint32_t> crcs_;     // one per page; each written by one thread at a time
  std::atomic<uint64_t> mirror_{0};
};

}  // namespace procmig

#endif  // PROCMIG_MIGRATION_BLOCK_MEMORY_H_
