#include "migration/block_memory.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/crc32c.h"
#include "base/status_macros.h"
#include "wire/wire_format.h"

namespace procmig {
namespace {

constexpr uint64_t kHugePage = 2u << 20;

uint32_t ZeroPageCrc(uint32_t page_size) {
  static const uint32_t k4096 = [] {
    static const uint8_t zeros[4096] = {};
    return crc32c::Value(zeros, sizeof zeros);
  }();
  if (page_size == 4096) return k4096;
  std::vector<uint8_t> zeros(page_size, 0);
  return crc32c::Value(zeros.data(), zeros.size());
}

// Rounds up so a block of 2 MiB and more can be backed by whole huge pages.
uint64_t MappedSize(uint64_t length) {
  return length >= kHugePage ? (length + kHugePage - 1) / kHugePage * kHugePage : length;
}

wire::BlockKind KindOf(uint32_t block_flags) {
  return static_cast<wire::BlockKind>((block_flags & wire::kBlockKindMask) >>
                                      wire::kBlockKindShift);
}

void AdviseHuge(uint8_t* base, uint64_t mapped) {
  // Best effort: with THP in "madvise" mode this turns 512 faults into one.
  if (mapped >= kHugePage) (void)madvise(base, mapped, MADV_HUGEPAGE);
}

absl::Status CheckBlockLength(uint64_t length, uint32_t page_size) {
  if (length != 0 && page_size != 0 && length % page_size == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "block memory: length ", length, " is not a positive multiple of the page size ", page_size));
}

}  // namespace

void* MapForBlock(uint64_t mapped, uint64_t final_start, uint32_t page_size, bool grows_down) {
  const int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
  if (grows_down) {
    return mmap(nullptr, mapped, PROT_READ | PROT_WRITE, flags | MAP_GROWSDOWN, -1, 0);
  }
  void* p = MAP_FAILED;
  if (final_start != 0 && page_size != 0 && final_start % page_size == 0) {
    p = mmap(reinterpret_cast<void*>(final_start), mapped, PROT_READ | PROT_WRITE,
             flags | MAP_FIXED_NOREPLACE, -1, 0);
    if (p != MAP_FAILED && reinterpret_cast<uint64_t>(p) != final_start) {
      munmap(p, mapped);  // a kernel before 4.17 took the address as a hint
      p = MAP_FAILED;
    }
  }
  if (p == MAP_FAILED && final_start != 0 && mapped >= kHugePage) {
    // Reserve a huge page more and keep the part that starts at final_start's phase.
    void* r = mmap(nullptr, mapped + kHugePage, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (r != MAP_FAILED) {
      const uint64_t lo = reinterpret_cast<uint64_t>(r);
      const uint64_t phase = final_start % kHugePage;
      uint64_t at = (lo - phase + kHugePage - 1) / kHugePage * kHugePage + phase;
      if (at < lo) at += kHugePage;
      if (at > lo) munmap(r, at - lo);
      munmap(reinterpret_cast<void*>(at + mapped), lo + kHugePage - at);  // at < lo + 2 MiB
      p = reinterpret_cast<void*>(at);
    }
  }
  if (p == MAP_FAILED) p = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, flags, -1, 0);
  return p;
}

bool RestorerCopiesBlock(uint32_t block_flags) {
  return KindOf(block_flags) == wire::BlockKind::kFilePrivate;
}

bool BlockGrowsDown(uint32_t block_flags) { return KindOf(block_flags) == wire::BlockKind::kStack; }

uint64_t BlockMapHint(uint32_t block_flags, uint64_t start) {
  return RestorerCopiesBlock(block_flags) || BlockGrowsDown(block_flags) ? 0 : start;
}

absl::StatusOr<std::unique_ptr<BlockMemory>> BlockMemory::Create(uint64_t length,
                                                                 uint32_t page_size,
                                                                 uint64_t final_start,
                                                                 bool grows_down) {
  RETURN_IF_ERROR(CheckBlockLength(length, page_size));
  const uint64_t mapped = grows_down ? length : MappedSize(length);
  void* p = MapForBlock(mapped, final_start, page_size, grows_down);
  if (p == MAP_FAILED) {
    return ErrnoStatus(absl::StatusCode::kResourceExhausted,
                       absl::StrCat("map ", length, " bytes for a received block"), errno);
  }
  auto* base = static_cast<uint8_t*>(p);
  if (!grows_down) AdviseHuge(base, mapped);
  return std::unique_ptr<BlockMemory>(new BlockMemory(base, mapped, length, page_size, grows_down));
}

absl::StatusOr<std::unique_ptr<BlockMemory>> BlockMemory::CreateUnmapped(uint64_t length,
                                                                         uint32_t page_size) {
  RETURN_IF_ERROR(CheckBlockLength(length, page_size));
  return std::unique_ptr<BlockMemory>(new BlockMemory(nullptr, 0, length, page_size, false));
}

BlockMemory::BlockMemory(uint8_t* base, uint64_t mapped, uint64_t length, uint32_t page_size,
                         bool grows_down)
    : base_(base),
      mapped_(mapped),
      length_(length),
      page_size_(page_size),
      grows_down_(grows_down),
      nonzero_((length / page_size + 63) / 64, 0),
      crcs_(length / page_size, ZeroPageCrc(page_size)) {}

uint32_t BlockMemory::ContentCrc() const {
  return crc32c::Concatenate(crcs_.data(), crcs_.size(), page_size_);
}

BlockMemory::~BlockMemory() {
  if (mapped()) munmap(base_, mapped_);
}

absl::Status BlockMemory::Resize(uint64_t new_length) {
  if (new_length == 0 || new_length % page_size_ != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("resize received block to ", new_length, ": not a page multiple"));
  }
  uint64_t old_pages = page_count();
  uint64_t new_mapped = !mapped() ? 0 : grows_down_ ? new_length : MappedSize(new_length);
  if (new_mapped != mapped_) {
    void* p = mremap(base_, mapped_, new_mapped, MREMAP_MAYMOVE);
    if (p == MAP_FAILED) {
      return ErrnoStatus(absl::StatusCode::kResourceExhausted,
                         absl::StrCat("resize received block from ", length_, " to ", new_length),
                         errno);
    }
    base_ = static_cast<uint8_t*>(p);
    mapped_ = new_mapped;
    if (!grows_down_) AdviseHuge(base_, mapped_);
  }
  uint64_t new_pages = new_length / page_size_;
  if (new_pages < old_pages) {
    // Pages past the new end must read as zero if the block grows again later; dropping them
    // does that and returns their memory.
    if (mapped()) (void)madvise(base_ + new_length, length_ - new_length, MADV_DONTNEED);
    for (uint64_t i = new_pages; i < old_pages; ++i) {
      nonzero_[i / 64] &= ~(uint64_t{1} << (i % 64));
    }
  }
  nonzero_.resize((new_pages + 63) / 64, 0);
  crcs_.resize(new_pages, ZeroPageCrc(page_size_));  // grown pages read as zero
  length_ = new_length;
  return absl::OkStatus();
}

void BlockMemory::Populate(uint64_t first_page, uint64_t count) {
  if (!mapped() || first_page >= page_count()) return;
  if (count > page_count() - first_page) count = page_count() - first_page;
#ifdef MADV_POPULATE_WRITE
  (void)madvise(page(first_page), count * page_size_, MADV_POPULATE_WRITE);
#endif
}

void BlockMemory::MarkNonZero(uint64_t first, uint64_t count) {
  const uint64_t end = first + count;
  while (first < end) {
    const uint64_t bit = first % 64, n = std::min<uint64_t>(64 - bit, end - first);
    const uint64_t mask = (n == 64 ? ~uint64_t{0} : ((uint64_t{1} << n) - 1)) << bit;
    std::atomic_ref<uint64_t>(nonzero_[first / 64]).fetch_or(mask, std::memory_order_relaxed);
    first += n;
  }
}

bool BlockMemory::ClearPage(uint64_t index) {
  uint64_t bit = uint64_t{1} << (index % 64);
  uint64_t old =
      std::atomic_ref<uint64_t>(nonzero_[index / 64]).fetch_and(~bit, std::memory_order_relaxed);
  if ((old & bit) != 0 && mapped()) std::memset(page(index), 0, page_size_);
  crcs_[index] = ZeroPageCrc(page_size_);
  return (old & bit) != 0;
}

bool BlockMemory::MaybeNonZero(uint64_t index) const {
  uint64_t w = std::atomic_ref<uint64_t>(const_cast<uint64_t&>(nonzero_[index / 64]))
                   .load(std::memory_order_relaxed);
  return (w >> (index % 64)) & 1;
}

uint64_t BlockMemory::CountMaybeNonZero() const {
  uint64_t n = 0;
  for (uint64_t w : nonzero_) n += std::popcount(w);
  return n;
}

}  // namespace procmig
