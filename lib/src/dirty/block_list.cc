#include "dirty/block_list.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_format.h"
#include "base/status_macros.h"

namespace procmig {

size_t BasePageSize() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

absl::StatusOr<std::vector<RamBlock>> BlocksWithAdded(std::span<const RamBlock> current,
                                                      std::span<const RamBlock> added) {
  const size_t page = BasePageSize();
  std::vector<RamBlock> out(current.begin(), current.end());
  for (const RamBlock& b : added) {
    RETURN_IF_ERROR(ValidateRamBlock(b));
    if (b.page_size != page) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "track block %u (%s): page size %u is not the base page size %u (hugetlb blocks are "
          "not tracked)",
          b.id, b.name, b.page_size, page));
    }
    for (const RamBlock& o : out) {
      if (o.id == b.id) {
        return absl::InvalidArgumentError(
            absl::StrFormat("track block %u (%s): id already tracked (%s)", b.id, b.name, o.name));
      }
      if (b.start < o.end() && o.start < b.end()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("track block %u (%s, 0x%x+0x%x): overlaps block %u (%s)", b.id, b.name,
                            b.start, b.length, o.id, o.name));
      }
    }
    out.push_back(b);
  }
  std::sort(out.begin(), out.end(),
            [](const RamBlock& a, const RamBlock& b) { return a.start < b.start; });
  return out;
}

absl::Status RequireWritable(std::span<const RamBlock> blocks) {
  for (const RamBlock& b : blocks) {
    if ((b.prot & PROT_WRITE) == 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("track block %u (%s): not writable", b.id, b.name));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<RamBlock>> BlocksWithRemoved(std::span<const RamBlock> current,
                                                        std::span<const uint32_t> ids) {
  std::vector<RamBlock> out;
  out.reserve(current.size());
  for (uint32_t id : ids) {
    if (std::none_of(current.begin(), current.end(),
                     [id](const RamBlock& b) { return b.id == id; })) {
      return absl::NotFoundError(absl::StrFormat("untrack block %u: not tracked", id));
    }
  }
  for (const RamBlock& b : current) {
    if (std::find(ids.begin(), ids.end(), b.id) == ids.end()) out.push_back(b);
  }
  return out;
}

absl::StatusOr<std::vector<RamBlock>> BlocksById(std::span<const RamBlock> current,
                                                 std::span<const uint32_t> ids) {
  std::vector<RamBlock> out;
  for (uint32_t id : ids) {
    auto it = std::find_if(current.begin(), current.end(),
                           [id](const RamBlock& b) { return b.id == id; });
    if (it == current.end()) {
      return absl::NotFoundError(absl::StrFormat("untrack block %u: not tracked", id));
    }
    out.push_back(*it);
  }
  return out;
}

const RamBlock* FindBlockHolding(std::span<const RamBlock> sorted, uintptr_t addr) {
  size_t lo = 0;
  size_t hi = sorted.size();
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (addr < sorted[mid].start) {
      hi = mid;
    } else if (addr >= sorted[mid].end()) {
      lo = mid + 1;
    } else {
      return &sorted[mid];
    }
  }
  return nullptr;
}

}  // namespace procmig
