// PageCache: the sender's copy of what the receiver last got for recently sent pages, so XBZRLE
// can send a delta instead of the page (QEMU migration/page_cache.c, made set-associative).
//
// Entries are keyed by (block id, page index) and stamped with the generation (the migration
// iteration) that inserted or last hit them. An insert into a full set evicts the stalest entry
// whose stamp is at least `lifetime` generations old; if every entry of the set is fresher, the
// insert is refused (an "overflow") and the caller sends the page without a delta. With
// lifetime = 2 and ways = 1 this is exactly QEMU's rule ("a cached page is not replaced within
// two cycles"); lifetime = 1 protects only entries of the current generation.
//
// The cache must hold exactly what the receiver holds: encode from a private copy of the page
// (as QEMU does), and after sending store that copy, not the live page, which may have changed.
//
// All memory (slot table and page data) is one private mapping made by Create(), so a sender can
// keep it out of the memory it migrates (memory_range()); nothing allocates after. Untouched
// slots cost no RSS. NOT thread-safe: the cache is owned by the sender thread, which is the only
// caller of every method.
#ifndef PROCMIG_CODEC_PAGE_CACHE_H_
#define PROCMIG_CODEC_PAGE_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace procmig {

struct PageCacheConfig {
  size_t capacity_bytes = 64u << 20;  // rounded down to whole sets of pages
  size_t page_size = 4096;            // power of two, 64 B .. 1 GiB
  size_t ways = 4;                    // entries per set, 1 (direct-mapped) .. 64
  uint64_t lifetime = 2;              // generations an entry is protected from eviction, >= 1

  // InvalidArgument naming the first bad field, including a capacity below one set of pages.
  absl::Status Validate() const;
};

struct PageCacheStats {
  uint64_t hits = 0;       // Lookup found the page
  uint64_t misses = 0;     // Lookup did not
  uint64_t inserts = 0;    // Insert stored a page not cached before (empty slot or eviction)
  uint64_t updates = 0;    // Insert overwrote the same page's cached contents
  uint64_t evictions = 0;  // Insert replaced another page's entry (counted in inserts too)
  uint64_t overflows = 0;  // Insert refused: every entry of the set is still protected
  uint64_t erased = 0;     // entries dropped by EraseBlock
};

class PageCache {
 public:
  static absl::StatusOr<std::unique_ptr<PageCache>> Create(const PageCacheConfig& config);
  ~PageCache();

  PageCache(const PageCache&) = delete;
  PageCache& operator=(const PageCache&) = delete;

  // Returns the cached contents of the page (page_size bytes), or nullptr. A hit restamps the
  // entry with `generation`, as QEMU does: a page that keeps changing keeps its slot. The
  // pointer is valid until the next Insert or EraseBlock; the caller may update the bytes in
  // place (after encoding a delta, the new contents become the reference).
  uint8_t* Lookup(uint32_t block, uint64_t page, uint64_t generation);

  // Stores a copy of `data` as the page's contents, stamped with `generation`. Returns false
  // (and counts an overflow) when the set is full of entries fresher than `lifetime`.
  bool Insert(uint32_t block, uint64_t page, const uint8_t* data, uint64_t generation);

  // Drops every entry of a block (the block was unmapped or resized). O(capacity).
  void EraseBlock(uint32_t block);

  const PageCacheStats& stats() const { return stats_; }
  size_t page_size() const { return config_.page_size; }
  size_t capacity_pages() const { return num_sets_ * config_.ways; }
  size_t size_pages() const { return used_; }
  // [begin, end) of the cache's one mapping (slots and page data), page-aligned.
  std::pair<uintptr_t, uintptr_t> memory_range() const {
    auto b = reinterpret_cast<uintptr_t>(mapping_);
    return {b, b + mapping_bytes_};
  }

 private:
  struct Slot {
    uint64_t page;
    uint64_t generation;
    uint32_t block;
    bool used;
  };

  PageCache(const PageCacheConfig& config, size_t num_sets, void* mapping, size_t mapping_bytes);
  size_t SetOf(uint32_t block, uint64_t page) const;
  uint8_t* DataOf(size_t slot) const { return data_ + slot * config_.page_size; }

  // Immutable after construction.
  const PageCacheConfig config_;
  const size_t num_sets_;
  void* const mapping_;
  const size_t mapping_bytes_;
  Slot* const slots_;    // at the start of the mapping (zero-filled: every slot unused)
  uint8_t* const data_;  // page-aligned, after the slots

  // Mutated only by the owning (sender) thread.
  size_t used_ = 0;
  PageCacheStats stats_;
};

}  // namespace procmig

#endif  // PROCMIG_CODEC_PAGE_CACHE_H_
