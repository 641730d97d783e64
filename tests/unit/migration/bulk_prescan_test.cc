// BulkPrescan against real memory and the real pagemap-scan tracker: each chunk's exact resident
// and zero bits, every chunk protected before it was read (the first sync after the prescan
// reports exactly the pages written since), memory that is gone leaving its chunk unclassified,
// and every chunk classified once, by the helper thread or the caller. Exits 77 where the kernel
// has no pagemap-scan tracker.
#include "migration/bulk_prescan.h"

#include <doctest/doctest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "dirty/pagemap_scan_tracker.h"
#include "dirty/tracker_probe.h"

namespace procmig {
namespace {

constexpr uint64_t kChunk = BulkPrescan::kChunkPages;

size_t Page() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

bool Bit(const uint64_t* bits, uint64_t i) { return ((bits[i / 64] >> (i % 64)) & 1) != 0; }

struct Mapping {
  explicit Mapping(uint64_t pages) : pages(pages) {
    void* m =
        mmap(nullptr, pages * Page(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(m != MAP_FAILED);
    p = static_cast<uint8_t*>(m);
    madvise(p, pages * Page(), MADV_NOHUGEPAGE);  // empty pages stay empty
  }
  ~Mapping() { munmap(p, pages * Page()); }
  uintptr_t addr() const { return reinterpret_cast<uintptr_t>(p); }
  RamBlock Block(uint32_t id) const {
    RamBlock b;
    b.id = id;
    b.start = addr();
    b.length = pages * Page();
    b.page_size = Page();
    b.name = AnonymousBlockName(b.start);
    b.prot = PROT_READ | PROT_WRITE;
    return b;
  }
  uint64_t pages;
  uint8_t* p = nullptr;
};

void RequirePagemapScan() {
  const TrackerProbeResult probe = ProbeTracker(TrackerKind::kPagemapScan, {});
  if (!probe.available) {
    MESSAGE("skipped: ", probe.reason);
    std::exit(77);
  }
}

// Page kinds of the 2.5-chunk mapping: empty (never touched), zero (touched, all zeros), data.
enum class Kind { kEmpty, kZero, kData };
Kind KindOf(uint64_t page) {
  if (page % 7 == 3 || (page >= 1100 && page < 1300)) return Kind::kEmpty;
  if (page % 5 == 1 || page >= 2300) return Kind::kData;
  return Kind::kZero;
}

TEST_CASE("each chunk's resident and zero pages, exactly, and protected before it was read") {
  RequirePagemapScan();
  const uint64_t pages = 2 * kChunk + kChunk / 2;
  Mapping m(pages);
  for (uint64_t i = 0; i < pages; ++i) {
    if (KindOf(i) == Kind::kZero) m.p[i * Page()] = 0;  // touched: a page of zeros
    if (KindOf(i) == Kind::kData) m.p[i * Page() + (i * 29) % Page()] = static_cast<uint8_t>(i | 1);
  }
  // A second block, of exactly one chunk, all data.
  Mapping all(kChunk);
  std::memset(all.p, 0x5a, kChunk * Page());
  const RamBlock blocks[] = {m.Block(1), all.Block(2)};
  PagemapScanTracker tracker;
  absl::StatusOr<bool> unprotected = tracker.StartUnprotected(blocks);
  REQUIRE(unprotected.ok());
  REQUIRE(*unprotected);
  auto prescan = BulkPrescan::Start(&tracker, {{m.addr(), pages}, {all.addr(), kChunk}}, Page());
  REQUIRE(prescan.ok());
  for (uint64_t c = 0; c < 3; ++c) {
    const BulkPrescan::Chunk& k = (*prescan)->Await(0, c);
    REQUIRE(k.classified);
    for (uint64_t i = 0; i < kChunk; ++i) {
      const uint64_t page = c * kChunk + i;
      const Kind want = page < pages ? KindOf(page) : Kind::kEmpty;
      CHECK_MESSAGE(Bit(k.resident, i) == (want != Kind::kEmpty), "page ", page);
      CHECK_MESSAGE(Bit(k.zero, i) == (want == Kind::kZero), "page ", page);
    }
  }
  const BulkPrescan::Chunk& k = (*prescan)->Await(1, 0);
  REQUIRE(k.classified);
  for (uint64_t w = 0; w < kChunk / 64; ++w) {
    CHECK(k.resident[w] == ~uint64_t{0});
    CHECK(k.zero[w] == 0);
  }
  MESSAGE("chunks classified by the caller: ", (*prescan)->caller_chunks(), " of 4");
  CHECK((*prescan)->caller_chunks() + (*prescan)->helper_chunks() == 4);
  prescan->reset();  // joins the helper
  // Everything was protected: the first sync reports exactly the pages written since.
  for (uint64_t i : {0, 1, 3, 1200, 2400}) m.p[i * Page() + 7] = 9;
  all.p[100 * Page()] = 1;
  absl::StatusOr<const DirtySet*> set = tracker.Sync();
  REQUIRE(set.ok());
  const DirtyBlock* d1 = (*set)->Find(1);
  const DirtyBlock* d2 = (*set)->Find(2);
  REQUIRE(d1 != nullptr);
  REQUIRE(d2 != nullptr);
  CHECK(d1->pages.Count() == 5);
  for (uint64_t i : {0, 1, 3, 1200, 2400}) CHECK(d1->pages.Test(i));
  CHECK(d2->pages.Count() == 1);
  CHECK(d2->pages.Test(100));
  REQUIRE(tracker.Stop().ok());
}

TEST_CASE("a chunk whose memory is gone is left unclassified; the others are classified") {
  RequirePagemapScan();
  Mapping m(3 * kChunk);
  std::memset(m.p, 0, 3 * kChunk * Page());
  const RamBlock block = m.Block(1);
  PagemapScanTracker tracker;
  REQUIRE(tracker.StartUnprotected({&block, 1}).ok());
  // The middle chunk's second half goes away before the prescan looks (as free() would).
  REQUIRE(munmap(m.p + (kChunk + kChunk / 2) * Page(), (kChunk / 2) * Page()) == 0);
  auto prescan = BulkPrescan::Start(&tracker, {{m.addr(), 3 * kChunk}}, Page());
  REQUIRE(prescan.ok());
  CHECK((*prescan)->Await(0, 0).classified);
  CHECK_FALSE((*prescan)->Await(0, 1).classified);
  const BulkPrescan::Chunk& last = (*prescan)->Await(0, 2);
  REQUIRE(last.classified);
  for (uint64_t w = 0; w < kChunk / 64; ++w) CHECK(last.zero[w] == ~uint64_t{0});
  prescan->reset();
  REQUIRE(tracker.Stop().ok());
  // (The Mapping's munmap of the whole range covers the hole too.)
}

// Every chunk is classified exactly once, by whichever thread claims it; which share each takes
// depends on the scheduler (the caller took 1 to 4 of the first test's chunks and 24 to 34 of the
// 64 below in runs here), so the split is printed, and only the sum is checked.
TEST_CASE("the caller's thread and the helper classify each chunk once between them") {
  RequirePagemapScan();
  const uint64_t chunks = 64;
  Mapping m(chunks * kChunk);
  for (uint64_t i = 0; i < chunks * kChunk; ++i) m.p[i * Page()] = 0;
  const RamBlock block = m.Block(1);
  PagemapScanTracker tracker;
  REQUIRE(tracker.StartUnprotected({&block, 1}).ok());
  auto prescan = BulkPrescan::Start(&tracker, {{m.addr(), chunks * kChunk}}, Page());
  REQUIRE(prescan.ok());
  for (uint64_t c = 0; c < chunks; ++c) {
    const BulkPrescan::Chunk& k = (*prescan)->Await(0, c);
    REQUIRE(k.classified);
    for (uint64_t w = 0; w < kChunk / 64; ++w) REQUIRE(k.zero[w] == ~uint64_t{0});
  }
  const uint64_t caller = (*prescan)->caller_chunks();
  MESSAGE("chunks classified by the caller: ", caller, " of ", chunks);
  CHECK(caller + (*prescan)->helper_chunks() == chunks);
  prescan->reset();
  REQUIRE(tracker.Stop().ok());
}

}  // namespace
}  // namespace procmig
