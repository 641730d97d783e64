// BlockTable: the live RAM blocks of one migration stream, as announced by its block_add,
// block_remove and block_resize records, and the checks those records and page runs must pass.
//
// StreamReader keeps one for the main channel. A receiver with several channels reads page runs
// from secondary channels in "pages only" mode and checks them against the main channel's table
// with CheckRun() (see wire_format.h). Not thread-safe: the owner serializes access.
// Validators return a static reason (nullptr = ok), like record_codec.h.
#ifndef PROCMIG_WIRE_BLOCK_TABLE_H_
#define PROCMIG_WIRE_BLOCK_TABLE_H_

#include <cstddef>
#include <cstdint>

#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "wire/record_codec.h"
#include "wire/wire_format.h"

namespace procmig::wire {

class BlockTable {
 public:
  struct Block {
    uint32_t id = 0;
    uint32_t flags = 0;
    uint64_t start = 0;
    uint64_t length = 0;
    uint64_t page_count = 0;
  };

  explicit BlockTable(uint32_t page_size) : page_size_(page_size) {}

  // Applies a block_add whose fields already passed ValidateBlockAdd: the id must exceed every
  // id added before, the range must not overlap a live block, and the table must have room.
  Reason Add(const BlockAdd& b);
  Reason Remove(uint32_t block_id);
  // Keeps the start; the grown range must not overlap the next live block.
  Reason Resize(const BlockResize& r);
  // Pages [first_page, first_page + count) must lie in live block `block_id`.
  Reason CheckRun(uint32_t block_id, uint64_t first_page, uint64_t count) const;
  // The same for a zero_run record (its own wording in the reason).
  Reason CheckZeroRun(uint32_t block_id, uint64_t first_page, uint64_t count) const;

  const Block* Find(uint32_t block_id) const;
  size_t size() const { return by_id_.size(); }
  uint32_t page_size() const { return page_size_; }

 private:
  // True when [start, start + length) overlaps a live block other than `except_id`.
  bool Overlaps(uint64_t start, uint64_t length, uint32_t except_id) const;
  // nullptr when the pages lie in a live block; else `not_live` or `past_end`.
  Reason CheckRange(uint32_t block_id, uint64_t first_page, uint64_t count, Reason not_live,
                    Reason past_end) const;

  uint32_t page_size_;
  uint32_t max_id_ = 0;  // ids only grow, so a removed id can never come back
  absl::flat_hash_map<uint32_t, Block> by_id_;
  absl::btree_map<uint64_t, uint32_t> by_start_;  // start -> id, for overlap checks
};

}  // namespace procmig::wire

#endif  // PROCMIG_WIRE_BLOCK_TABLE_H_
