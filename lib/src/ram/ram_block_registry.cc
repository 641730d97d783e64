#include "ram/ram_block_registry.h"

#include <sys/mman.h>

#include <algorithm>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace procmig {

namespace {

std::string BlockName(const MemoryRegion& r) {
  switch (r.kind) {
    case RegionKind::kHeap:
      return "heap";
    case RegionKind::kStack:
      return "[stack]";
    case RegionKind::kAnonymous:
      return AnonymousBlockName(r.start);
    case RegionKind::kFile:
    case RegionKind::kSpecial:
      break;
  }
  return r.path.empty() ? AnonymousBlockName(r.start) : r.path;
}

}  // namespace

RamBlockRegistry::RamBlockRegistry(size_t page_size, std::vector<AddressRange> excluded)
    : page_size_(page_size) {
  for (const AddressRange& r : excluded) AddExcluded(r);
}

void RamBlockRegistry::AddExcluded(AddressRange r) {
  r.start &= ~(page_size_ - 1);
  r.end = (r.end + page_size_ - 1) & ~(page_size_ - 1);
  if (r.end <= r.start) return;
  // A range already covered adds nothing, and a new one is inserted in order: the list stays as
  // long as the distinct ranges given, however often one is given again.
  if (Excludes(r.start, r.end)) return;
  auto at = std::upper_bound(
      excluded_.begin(), excluded_.end(), r,
      [](const AddressRange& a, const AddressRange& b) { return a.start < b.start; });
  excluded_.insert(at, r);
}

void RamBlockRegistry::RemoveExcluded(AddressRange r) {
  r.start &= ~(page_size_ - 1);
  r.end = (r.end + page_size_ - 1) & ~(page_size_ - 1);
  std::erase_if(excluded_,
                [&](const AddressRange& x) { return x.start == r.start && x.end == r.end; });
}

bool RamBlockRegistry::Excludes(uintptr_t start, uintptr_t end) const {
  uintptr_t covered = start;  // [start, covered) is known excluded; excluded_ is sorted by start
  for (const AddressRange& x : excluded_) {
    if (x.start > covered) break;
    if (x.end > covered) covered = x.end;
    if (covered >= end) return true;
  }
  return covered >= end;
}

std::vector<RamBlock> RamBlockRegistry::Candidates(std::span<const MemoryRegion> regions) const {
  std::vector<RamBlock> out;
  for (const MemoryRegion& r : regions) {
    // Unreadable memory cannot be sent from; a PROT_NONE or write-only region is rare enough to
    // be the restorer's business (it is still in the VMA list).
    if (!r.IsRamBlockCandidate() || !r.readable) continue;
    uintptr_t pos = r.start;
    const uintptr_t end = r.end;
    auto emit = [&](uintptr_t s, uintptr_t e) {
      if (e <= s) return;
      RamBlock b;
      b.start = s;
      b.length = e - s;
      b.page_size = page_size_;
      b.name = BlockName(r);
      if (s != r.start && r.kind == RegionKind::kAnonymous) b.name = AnonymousBlockName(s);
      b.prot = (r.readable ? PROT_READ : 0) | (r.writable ? PROT_WRITE : 0) |
               (r.executable ? PROT_EXEC : 0);
      out.push_back(std::move(b));
    };
    for (const AddressRange& x : excluded_) {
      if (x.end <= pos) continue;
      if (x.start >= end) break;
      emit(pos, std::max(pos, x.start));
      pos = std::max(pos, x.end);
      if (pos >= end) break;
    }
    if (pos < end) emit(pos, end);
  }
  return out;
}

RegistryDiff RamBlockRegistry::Update(std::span<const MemoryRegion> regions) {
  std::vector<RamBlock> next = Candidates(regions);
  std::unordered_map<uintptr_t, const RamBlock*> old_by_start;
  for (const RamBlock& b : blocks_) old_by_start[b.start] = &b;
  RegistryDiff diff;
  std::unordered_set<uint32_t> kept;
  for (RamBlock& b : next) {
    auto it = old_by_start.find(b.start);
    // A block keeps its id when it starts at the same place with the same protections; its
    // length may change (resize). Anything else is new.
    if (it != old_by_start.end() && it->second->prot == b.prot) {
      b.id = it->second->id;
      kept.insert(b.id);
      if (it->second->length != b.length) diff.resized.push_back(b);
    } else {
      b.id = next_id_++;
      diff.added.push_back(b);
    }
  }
  for (const RamBlock& b : blocks_) {
    if (!kept.count(b.id)) diff.removed.push_back(b.id);
  }
  blocks_ = std::move(next);
  return diff;
}

const RamBlock* RamBlockRegistry::Find(uint32_t id) const {
  for (const RamBlock& b : blocks_) {
    if (b.id == id) return &b;
  }
  return nullptr;
}

uint64_t RamBlockRegistry::total_bytes() const {
  uint64_t n = 0;
  for (const RamBlock& b : blocks_) n += b.length;
  return n;
}

}  // namespace procmig
