#include "ram/ram_block.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace procmig {

absl::Status ValidateRamBlock(const RamBlock& block) {
  auto bad = [&block](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrFormat("validate ram block %u (%s, 0x%x+0x%x, page %u): %s", block.id, block.name,
                        block.start, block.length, block.page_size, why));
  };
  if (block.page_size == 0 || (block.page_size & (block.page_size - 1)) != 0) {
    return bad("page size is not a power of two");
  }
  if (block.length == 0) return bad("empty");
  if (block.start % block.page_size != 0) return bad("start not page aligned");
  if (block.length % block.page_size != 0) return bad("length not a multiple of the page size");
  if (block.start + block.length < block.start) return bad("wraps around the address space");
  return absl::OkStatus();
}

std::string AnonymousBlockName(uintptr_t start) { return absl::StrFormat("anon@0x%x", start); }

RamBlockKind KindOf(const RamBlock& block) {
  if (block.name == "heap") return RamBlockKind::kHeap;
  if (block.name == "[stack]") return RamBlockKind::kStack;
  if (!block.name.empty() && block.name[0] == '/') return RamBlockKind::kFilePrivate;
  return RamBlockKind::kAnonymous;
}

}  // namespace procmig
