#include "ram/ram_block_registry.h"

#include <doctest/doctest.h>
#include <sys/mman.h>

#include <vector>

#include "os/maps_parser.h"
#include "os/real_os.h"

namespace procmig {
namespace {

MemoryRegion Region(uint64_t start, uint64_t end, bool w, RegionKind kind, std::string path = "",
                    bool shared = false) {
  MemoryRegion r;
  r.start = start;
  r.end = end;
  r.readable = true;
  r.writable = w;
  r.shared = shared;
  r.kind = kind;
  r.path = std::move(path);
  return r;
}

TEST_CASE("candidates: writable private readable regions, minus excluded ranges") {
  RamBlockRegistry reg(4096, {{0x21000, 0x23000}});
  std::vector<MemoryRegion> maps = {
      Region(0x10000, 0x12000, false, RegionKind::kFile, "/bin/x"),      // read-only file
      Region(0x12000, 0x13000, true, RegionKind::kFile, "/bin/x"),       // written file pages
      Region(0x20000, 0x25000, true, RegionKind::kAnonymous),            // cut by the exclusion
      Region(0x30000, 0x31000, true, RegionKind::kAnonymous, "", true),  // shared: no
      Region(0x40000, 0x48000, true, RegionKind::kHeap, "[heap]"),
      Region(0x50000, 0x51000, false, RegionKind::kSpecial, "[vdso]"),
      Region(0x60000, 0x62000, true, RegionKind::kStack, "[stack]"),
  };
  std::vector<RamBlock> c = reg.Candidates(maps);
  REQUIRE(c.size() == 5);
  CHECK(c[0].start == 0x12000);
  CHECK(c[0].name == "/bin/x");
  CHECK(c[1].start == 0x20000);
  CHECK(c[1].length == 0x1000);
  CHECK(c[2].start == 0x23000);
  CHECK(c[2].length == 0x2000);
  CHECK(c[2].name == "anon@0x23000");
  CHECK(c[3].name == "heap");
  CHECK(c[3].length == 0x8000);
  CHECK(c[4].name == "[stack]");
  CHECK(c[4].prot == (PROT_READ | PROT_WRITE));
}

TEST_CASE("update: ids from 1, kept across updates, resize in place, remove and add") {
  RamBlockRegistry reg(4096, {});
  std::vector<MemoryRegion> a = {Region(0x10000, 0x12000, true, RegionKind::kAnonymous),
                                 Region(0x20000, 0x22000, true, RegionKind::kHeap, "[heap]")};
  RegistryDiff d = reg.Update(a);
  REQUIRE(d.added.size() == 2);
  CHECK(d.added[0].id == 1);
  CHECK(d.added[1].id == 2);
  CHECK(d.removed.empty());
  CHECK(reg.total_bytes() == 0x4000);
  CHECK(reg.Update(a).empty());

  std::vector<MemoryRegion> b = {Region(0x20000, 0x30000, true, RegionKind::kHeap, "[heap]"),
                                 Region(0x40000, 0x41000, true, RegionKind::kAnonymous)};
  d = reg.Update(b);
  REQUIRE(d.removed.size() == 1);
  CHECK(d.removed[0] == 1);
  REQUIRE(d.resized.size() == 1);
  CHECK(d.resized[0].id == 2);
  CHECK(d.resized[0].length == 0x10000);
  REQUIRE(d.added.size() == 1);
  CHECK(d.added[0].id == 3);  // ids are never reused
  // The same start with other protections is a new block.
  std::vector<MemoryRegion> c = b;
  c[1].executable = true;
  d = reg.Update(c);
  CHECK(d.removed == std::vector<uint32_t>{3});
  REQUIRE(d.added.size() == 1);
  CHECK(d.added[0].id == 4);
  CHECK(reg.Find(4) != nullptr);
  CHECK(reg.Find(3) == nullptr);
}

TEST_CASE("excludes: only a range the excluded ranges cover all of, across adjacent ones") {
  RamBlockRegistry reg(4096, {{0x10000, 0x12000}, {0x12000, 0x13000}, {0x20000, 0x21000}});
  reg.AddExcluded({0x11800, 0x14000});  // overlaps the first two, rounded out to pages
  CHECK(reg.Excludes(0x10000, 0x14000));
  CHECK(reg.Excludes(0x11000, 0x12000));
  CHECK(reg.Excludes(0x20000, 0x21000));
  CHECK_FALSE(reg.Excludes(0x10000, 0x15000));  // runs past the end
  CHECK_FALSE(reg.Excludes(0xf000, 0x11000));   // starts before
  CHECK_FALSE(reg.Excludes(0x13000, 0x21000));  // a hole between
  CHECK_FALSE(reg.Excludes(0x30000, 0x31000));
}

TEST_CASE(
    "excluded ranges added again (every block's crc table, at every layout change) are "
    "kept once") {
  RamBlockRegistry reg(4096, {});
  for (int round = 0; round < 1000; ++round) {
    for (uintptr_t t = 0; t < 50; ++t)
      reg.AddExcluded({0x100000 + t * 0x3000, 0x101000 + t * 0x3000});
  }
  CHECK(reg.excluded_count() == 50);
  reg.AddExcluded({0x100000, 0x100800});  // inside one: covered, rounded out to it
  CHECK(reg.excluded_count() == 50);
  reg.AddExcluded({0x101000, 0x102000});  // the hole after the first: new, sorted in
  CHECK(reg.excluded_count() == 51);
  CHECK(reg.Excludes(0x100000, 0x102000));
  CHECK_FALSE(reg.Excludes(0x100000, 0x103000 + 0x1000));
  // Blocks are cut around every one of them, in address order.
  std::vector<MemoryRegion> regions = {
      Region(0x100000, 0x100000 + 50 * 0x3000, true, RegionKind::kAnonymous)};
  std::vector<RamBlock> blocks = reg.Candidates(regions);
  REQUIRE(blocks.size() == 50);
  CHECK(blocks[0].start == 0x102000);
  CHECK(blocks[0].length == 0x1000);  // the added hole took the first page of the gap
  CHECK(blocks[49].start == 0x100000 + 49 * 0x3000 + 0x1000);
}

TEST_CASE("a range taken back is a block's memory again; only the exact range given goes") {
  RamBlockRegistry reg(4096, {{0x10000, 0x12000}});
  reg.AddExcluded({0x20000, 0x21800});  // rounded out to 0x22000
  REQUIRE(reg.excluded_count() == 2);
  reg.RemoveExcluded({0x20000, 0x21000});  // not a range that was given: nothing
  CHECK(reg.excluded_count() == 2);
  reg.RemoveExcluded({0x20000, 0x21800});  // rounded the same way: found
  CHECK(reg.excluded_count() == 1);
  CHECK_FALSE(reg.Excludes(0x20000, 0x21000));
  CHECK(reg.Excludes(0x10000, 0x12000));
  std::vector<MemoryRegion> regions = {Region(0x10000, 0x30000, true, RegionKind::kAnonymous)};
  std::vector<RamBlock> blocks = reg.Candidates(regions);
  REQUIRE(blocks.size() == 1);
  CHECK(blocks[0].start == 0x12000);
  CHECK(blocks[0].length == 0x1e000);
}

TEST_CASE("on this process: a fresh mapping becomes a block, an excluded one does not") {
  void* p = mmap(nullptr, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(p != MAP_FAILED);
  auto s = reinterpret_cast<uintptr_t>(p);
  RealOs os;
  auto maps = MapsParser::Read(os, 0);
  REQUIRE(maps.ok());
  RamBlockRegistry reg(4096, {{s + 4096, s + 2 * 4096}});
  reg.Update(*maps);
  bool first = false, middle = false, last = false;
  for (const RamBlock& b : reg.blocks()) {
    first |= b.Contains(s);
    middle |= b.Contains(s + 4096);
    last |= b.Contains(s + 2 * 4096);
  }
  CHECK(first);
  CHECK_FALSE(middle);
  CHECK(last);
  munmap(p, 3 * 4096);
}

}  // namespace
}  // namespace procmig
