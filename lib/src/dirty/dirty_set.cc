#include "dirty/dirty_set.h"

#include <algorithm>

namespace procmig {

DirtySet::DirtySet(std::span<const RamBlock> blocks) {
  blocks_.reserve(blocks.size());
  for (const RamBlock& b : blocks) {
    blocks_.push_back(DirtyBlock{b.id, b.start, b.page_size, PageBitmap(b.page_count())});
  }
  std::sort(blocks_.begin(), blocks_.end(),
            [](const DirtyBlock& a, const DirtyBlock& b) { return a.start < b.start; });
}

const DirtyBlock* DirtySet::Find(uint32_t id) const {
  for (const DirtyBlock& b : blocks_) {
    if (b.id == id) return &b;
  }
  return nullptr;
}

ptrdiff_t DirtySet::IndexOf(uintptr_t addr) const {
  size_t lo = 0;
  size_t hi = blocks_.size();
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const DirtyBlock& b = blocks_[mid];
    if (addr < b.start) {
      hi = mid;
    } else if (addr >= b.end()) {
      lo = mid + 1;
    } else {
      return static_cast<ptrdiff_t>(mid);
    }
  }
  return -1;
}

size_t DirtySet::DirtyPageCount() const {
  size_t n = 0;
  for (const DirtyBlock& b : blocks_) n += b.pages.Count();
  return n;
}

size_t DirtySet::RunCount() const {
  size_t n = 0;
  for (const DirtyBlock& b : blocks_) b.pages.ForEachRun([&n](size_t, size_t) { ++n; });
  return n;
}

void DirtySet::ClearAll() {
  for (DirtyBlock& b : blocks_) b.pages.ClearAll();
}

void DirtySet::SetAll() {
  for (DirtyBlock& b : blocks_) b.pages.SetAll();
}

size_t DirtySet::MarkRange(uintptr_t addr, size_t len) {
  if (len == 0) return 0;
  const uintptr_t end = addr + len < addr ? UINTPTR_MAX : addr + len;
  size_t marked = 0;
  // Blocks are sorted: start at the first block that ends after addr.
  auto it = std::upper_bound(blocks_.begin(), blocks_.end(), addr,
                             [](uintptr_t a, const DirtyBlock& b) { return a < b.end(); });
  for (; it != blocks_.end() && it->start < end; ++it) {
    uintptr_t lo = std::max(addr, it->start);
    uintptr_t hi = std::min(end, it->end());
    size_t first = (lo - it->start) / it->page_size;
    size_t last = (hi - it->start + it->page_size - 1) / it->page_size;  // exclusive
    it->pages.SetRange(first, last - first);
    marked += last - first;
  }
  return marked;
}

bool DirtySet::MarkPageAtomic(uintptr_t addr) {
  ptrdiff_t i = IndexOf(addr);
  if (i < 0) return false;
  DirtyBlock& b = blocks_[static_cast<size_t>(i)];
  b.pages.SetAtomic((addr - b.start) / b.page_size);
  return true;
}

void DirtySet::HarvestFrom(DirtySet& live) {
  for (DirtyBlock& from : live.blocks_) {
    DirtyBlock* to = nullptr;
    for (DirtyBlock& b : blocks_) {
      if (b.id == from.id) to = &b;
    }
    if (to == nullptr) {
      from.pages.HarvestRuns([](size_t, size_t) {});
      continue;
    }
    from.pages.HarvestRuns([&](size_t first, size_t count) {
      // Blocks are matched by id; map by address in case the block moved or changed size.
      uintptr_t lo = std::max(from.start + first * from.page_size, to->start);
      uintptr_t hi = std::min(from.start + (first + count) * from.page_size, to->end());
      if (lo >= hi) return;
      size_t a = (lo - to->start) / to->page_size;
      size_t z = (hi - to->start + to->page_size - 1) / to->page_size;
      to->pages.SetRange(a, z - a);
    });
  }
}

}  // namespace procmig
