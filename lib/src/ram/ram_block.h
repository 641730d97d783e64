// RamBlock: one region of the migrated process's memory that procmig tracks and sends.
//
// A block is a value: id, address range, page size, a readable name and the protections the
// program gave it. The id is stable for the life of a migration (a block that grows with mremap
// keeps its id), so the wire and the dirty trackers name blocks by id, never by address. Building
// blocks from /proc/self/maps is the registry's job (a later issue); this type only describes one.
//
// Threads: a plain value, safe to copy between threads.
#ifndef PROCMIG_RAM_RAM_BLOCK_H_
#define PROCMIG_RAM_RAM_BLOCK_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace procmig {

struct RamBlock {
  uint32_t id = 0;
  uintptr_t start = 0;   // page aligned
  size_t length = 0;     // bytes, a multiple of page_size
  size_t page_size = 0;  // a power of two: the base page size, or the hugetlb page size
  // "heap", "[stack]", "anon@0x7f..", or the path of a file mapping.
  std::string name;
  int prot = 0;  // PROT_* as in /proc/self/maps

  uintptr_t end() const { return start + length; }
  size_t page_count() const { return page_size == 0 ? 0 : length / page_size; }
  bool Contains(uintptr_t addr) const { return addr >= start && addr - start < length; }
  // Index of the page holding `addr`; `addr` must be inside the block.
  size_t PageIndex(uintptr_t addr) const { return (addr - start) / page_size; }
  uintptr_t PageAddress(size_t index) const { return start + index * page_size; }
};

// InvalidArgument unless the block is non-empty, its page size a power of two and its start and
// length multiples of it, and it does not wrap around the address space.
absl::Status ValidateRamBlock(const RamBlock& block);

// "anon@0x7f0000001000": the name given to an anonymous region that has no better one.
std::string AnonymousBlockName(uintptr_t start);

// What a block holds, as the name the registry gave it says: the brk heap, the main stack, a
// private file mapping (named by its path: an untouched page there is the file's, not zeros), or
// anonymous memory (anything else).
enum class RamBlockKind { kHeap, kStack, kFilePrivate, kAnonymous };
RamBlockKind KindOf(const RamBlock& block);

}  // namespace procmig

#endif  // PROCMIG_RAM_RAM_BLOCK_H_
