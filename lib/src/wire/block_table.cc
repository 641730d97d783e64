#include "wire/block_table.h"

#include <iterator>

namespace procmig::wire {

bool BlockTable::Overlaps(uint64_t start, uint64_t length, uint32_t except_id) const {
  uint64_t end = start + length;
  // The first block starting at or after `start`, and the one before it.
  auto it = by_start_.lower_bound(start);
  for (auto next = it; next != by_start_.end() && next->first < end; ++next) {
    if (next->second != except_id) return true;
  }
  if (it != by_start_.begin()) {
    auto prev = std::prev(it);
    const Block& b = by_id_.at(prev->second);
    if (b.id != except_id && b.start + b.length > start) return true;
  }
  return false;
}

Reason BlockTable::Add(const BlockAdd& b) {
  if (b.block_id <= max_id_) return "block id not above every id added before";
  if (by_id_.size() >= kMaxBlocks) return "too many live blocks";
  if (Overlaps(b.start, b.length, 0)) return "range overlaps a live block";
  max_id_ = b.block_id;
  by_id_[b.block_id] = Block{b.block_id, b.flags, b.start, b.length, b.page_count};
  by_start_[b.start] = b.block_id;
  return nullptr;
}

Reason BlockTable::Remove(uint32_t block_id) {
  auto it = by_id_.find(block_id);
  if (it == by_id_.end()) return "block is not live";
  by_start_.erase(it->second.start);
  by_id_.erase(it);
  return nullptr;
}

Reason BlockTable::Resize(const BlockResize& r) {
  auto it = by_id_.find(r.block_id);
  if (it == by_id_.end()) return "block is not live";
  Block& b = it->second;
  if (b.start + r.new_length < b.start) return "range wraps past the end of the address space";
  if (Overlaps(b.start, r.new_length, b.id)) return "resized range overlaps a live block";
  b.length = r.new_length;
  b.page_count = r.new_page_count;
  return nullptr;
}

Reason BlockTable::CheckRange(uint32_t block_id, uint64_t first_page, uint64_t count,
                              Reason not_live, Reason past_end) const {
  auto it = by_id_.find(block_id);
  if (it == by_id_.end()) return not_live;
  const Block& b = it->second;
  if (first_page >= b.page_count || count > b.page_count - first_page) return past_end;
  return nullptr;
}

Reason BlockTable::CheckRun(uint32_t block_id, uint64_t first_page, uint64_t count) const {
  return CheckRange(block_id, first_page, count, "page run for a block that is not live",
                    "page run past the end of its block");
}

Reason BlockTable::CheckZeroRun(uint32_t block_id, uint64_t first_page, uint64_t count) const {
  return CheckRange(block_id, first_page, count, "zero run for a block that is not live",
                    "zero run past the end of its block");
}

const BlockTable::Block* BlockTable::Find(uint32_t block_id) const {
  auto it = by_id_.find(block_id);
  return it == by_id_.end() ? nullptr : &it->second;
}

}  // namespace procmig::wire
