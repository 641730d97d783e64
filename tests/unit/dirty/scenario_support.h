// Support for the tracker scenarios: mappings, a ground truth per block, the check against a
// tracker's DirtySet, and small wrappers that fail the test on an error status.
#ifndef PROCMIG_TESTS_UNIT_DIRTY_SCENARIO_SUPPORT_H_
#define PROCMIG_TESTS_UNIT_DIRTY_SCENARIO_SUPPORT_H_

#include <doctest/doctest.h>
#include <sys/mman.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "dirty/block_list.h"
#include "dirty/dirty_tracker.h"

namespace procmig::testing {

#define REQUIRE_OK(expr)           \
  do {                             \
    absl::Status status_ = (expr); \
    INFO(status_.ToString());      \
    REQUIRE(status_.ok());         \
  } while (0)

inline size_t Page() { return BasePageSize(); }

// An anonymous private mapping, optionally aligned, unmapped on destruction.
class Region {
 public:
  explicit Region(size_t len, size_t align = 0) : len_(len) {
    size_t map_len = len + align;
    void* p = mmap(nullptr, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p != MAP_FAILED);
    auto addr = reinterpret_cast<uintptr_t>(p);
    uintptr_t aligned = align == 0 ? addr : (addr + align - 1) & ~(align - 1);
    if (aligned > addr) munmap(p, aligned - addr);
    if (addr + map_len > aligned + len)
      munmap(reinterpret_cast<void*>(aligned + len), addr + map_len - aligned - len);
    base_ = reinterpret_cast<char*>(aligned);
  }
  ~Region() {
    if (base_ != nullptr) munmap(base_, len_);
  }
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  char* base() const { return base_; }
  size_t len() const { return len_; }
  // After an mremap that moved or grew the mapping.
  void Reset(char* base, size_t len) {
    base_ = base;
    len_ = len;
  }

 private:
  char* base_ = nullptr;
  size_t len_ = 0;
};

RamBlock MakeBlock(uint32_t id, const char* base, size_t len);

// Ground truth of one block: the pages written since the last sync.
struct Truth {
  RamBlock block;
  std::vector<uint8_t> written;

  explicit Truth(RamBlock b) : block(std::move(b)), written(block.page_count()) {}
  void Write(size_t page, uint8_t value = 1) {
    REQUIRE(page < written.size());
    volatile char* p = reinterpret_cast<char*>(block.start + page * block.page_size);
    p[(page * 131) % block.page_size] = static_cast<char>(value);
    written[page] = 1;
  }
};

struct Totals {
  size_t written = 0;
  size_t reported = 0;
  size_t false_positives = 0;
};

// Fails the test for every written page the set lacks; counts false positives; clears truths.
void Check(const DirtySet& set, std::vector<Truth*> truths, Totals& totals, const char* what,
           int round);
void Print(TrackerKind kind, const char* scenario, const Totals& t, const std::string& extra = "");
const DirtySet& SyncOk(DirtyTracker& tracker);
std::unique_ptr<DirtyTracker> Started(TrackerKind kind, std::span<const RamBlock> blocks,
                                      WriteQuiescer* quiescer = nullptr);
// AnonHugePages (kB) of the mapping holding `addr`, from /proc/self/smaps.
size_t AnonHugeKb(const void* addr);

}  // namespace procmig::testing

#endif  // PROCMIG_TESTS_UNIT_DIRTY_SCENARIO_SUPPORT_H_
