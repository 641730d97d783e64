#include "codec/page_cache.h"

#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace procmig {

absl::Status PageCacheConfig::Validate() const {
  if (page_size < 64 || page_size > (size_t{1} << 30) || !std::has_single_bit(page_size)) {
    return absl::InvalidArgumentError(
        absl::StrCat("page cache config: page_size ", page_size,
                     " is not a power of two between 64 B and 1 GiB"));
  }
  if (ways < 1 || ways > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("page cache config: ways ", ways, " is outside 1..64"));
  }
  if (lifetime < 1) {
    return absl::InvalidArgumentError("page cache config: lifetime must be at least 1");
  }
  if (capacity_bytes / page_size < ways) {
    return absl::InvalidArgumentError(absl::StrCat("page cache config: capacity_bytes ",
                                                   capacity_bytes, " holds fewer than one set of ",
                                                   ways, " pages of ", page_size, " bytes"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<PageCache>> PageCache::Create(const PageCacheConfig& config) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  const size_t num_sets = config.capacity_bytes / config.page_size / config.ways;
  const size_t num_slots = num_sets * config.ways;
  // One anonymous mapping: zero-filled slots (all unused), then the page data, page-aligned.
  const size_t align = std::max<size_t>(config.page_size, 4096);
  const size_t slot_bytes = (num_slots * sizeof(Slot) + align - 1) / align * align;
  const size_t bytes = slot_bytes + num_slots * config.page_size;
  void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) {
    return absl::ResourceExhaustedError(absl::StrCat("page cache create: cannot map ", num_slots,
                                                     " pages of ", config.page_size,
                                                     " bytes: ", strerror(errno)));
  }
  return std::unique_ptr<PageCache>(new PageCache(config, num_sets, m, bytes));
}

PageCache::PageCache(const PageCacheConfig& config, size_t num_sets, void* mapping,
                     size_t mapping_bytes)
    : config_(config),
      num_sets_(num_sets),
      mapping_(mapping),
      mapping_bytes_(mapping_bytes),
      slots_(static_cast<Slot*>(mapping)),
      data_(static_cast<uint8_t*>(mapping) + mapping_bytes -
            num_sets * config.ways * config.page_size) {}

PageCache::~PageCache() { munmap(mapping_, mapping_bytes_); }

size_t PageCache::SetOf(uint32_t block, uint64_t page) const {
  // Consecutive pages of a block land in consecutive sets (like QEMU's address modulo), and each
  // block starts at a scrambled offset so that page 0 of every block does not share a set.
  const uint64_t block_offset = (uint64_t{block} + 1) * 0x9e3779b97f4a7c15ull;
  return static_cast<size_t>((page + (block_offset >> 17)) % num_sets_);
}

uint8_t* PageCache::Lookup(uint32_t block, uint64_t page, uint64_t generation) {
  const size_t first = SetOf(block, page) * config_.ways;
  for (size_t s = first; s < first + config_.ways; ++s) {
    Slot& slot = slots_[s];
    if (slot.used && slot.block == block && slot.page == page) {
      slot.generation = generation;
      ++stats_.hits;
      return DataOf(s);
    }
  }
  ++stats_.misses;
  return nullptr;
}

bool PageCache::Insert(uint32_t block, uint64_t page, const uint8_t* data, uint64_t generation) {
  const size_t first = SetOf(block, page) * config_.ways;
  size_t victim = SIZE_MAX;
  for (size_t s = first; s < first + config_.ways; ++s) {
    Slot& slot = slots_[s];
    if (slot.used && slot.block == block && slot.page == page) {
      std::memcpy(DataOf(s), data, config_.page_size);
      slot.generation = generation;
      ++stats_.updates;
      return true;
    }
    if (!slot.used) {
      // Prefer an empty slot over any eviction; keep scanning in case the page is further on.
      if (victim == SIZE_MAX || slots_[victim].used) victim = s;
      continue;
    }
    const bool protected_entry = slot.generation + config_.lifetime > generation;
    if (protected_entry) continue;
    if (victim == SIZE_MAX ||
        (slots_[victim].used && slot.generation < slots_[victim].generation)) {
      victim = s;
    }
  }
  if (victim == SIZE_MAX) {
    ++stats_.overflows;
    return false;
  }
  Slot& slot = slots_[victim];
  if (slot.used) {
    ++stats_.evictions;
  } else {
    ++used_;
  }
  slot = Slot{page, generation, block, true};
  std::memcpy(DataOf(victim), data, config_.page_size);
  ++stats_.inserts;
  return true;
}

void PageCache::EraseBlock(uint32_t block) {
  const size_t n = capacity_pages();
  for (size_t s = 0; s < n; ++s) {
    if (slots_[s].used && slots_[s].block == block) {
      slots_[s].used = false;
      --used_;
      ++stats_.erased;
    }
  }
}

}  // namespace procmig
