#include "dirty/dirty_set.h"

#include <doctest/doctest.h>

#include <vector>

namespace procmig {
namespace {

RamBlock Block(uint32_t id, uintptr_t start, size_t pages) {
  RamBlock b;
  b.id = id;
  b.start = start;
  b.length = pages * 4096;
  b.page_size = 4096;
  b.prot = 3;
  return b;
}

std::vector<std::pair<uint32_t, PageRun>> Runs(const DirtySet& s) {
  std::vector<std::pair<uint32_t, PageRun>> out;
  s.ForEachRun([&](const DirtyBlock& b, PageRun r) { out.push_back({b.id, r}); });
  return out;
}

TEST_CASE("blocks are sorted by address and found by address and id") {
  RamBlock blocks[] = {Block(7, 0x30000, 4), Block(3, 0x10000, 2), Block(5, 0x20000, 16)};
  DirtySet s(blocks);
  REQUIRE(s.blocks().size() == 3);
  CHECK(s.blocks()[0].id == 3);
  CHECK(s.blocks()[1].id == 5);
  CHECK(s.blocks()[2].id == 7);
  CHECK(s.IndexOf(0x10000) == 0);
  CHECK(s.IndexOf(0x11fff) == 0);
  CHECK(s.IndexOf(0x12000) == -1);
  CHECK(s.IndexOf(0x2ffff) == 1);
  CHECK(s.IndexOf(0x33fff) == 2);
  CHECK(s.IndexOf(0x34000) == -1);
  CHECK(s.IndexOf(0xfff) == -1);
  CHECK(s.Find(5)->pages.size() == 16);
  CHECK(s.Find(6) == nullptr);
  CHECK(s.DirtyPageCount() == 0);
}

TEST_CASE("MarkRange marks overlapping pages of every block, partial pages included") {
  RamBlock blocks[] = {Block(1, 0x10000, 4), Block(2, 0x20000, 4)};
  DirtySet s(blocks);
  // From the middle of block 1's page 3 across the gap into block 2's page 1.
  CHECK(s.MarkRange(0x13800, 0x20000 + 0x1001 - 0x13800) == 1 + 2);
  auto runs = Runs(s);
  REQUIRE(runs.size() == 2);
  CHECK(runs[0] == std::pair<uint32_t, PageRun>{1, PageRun{3, 1}});
  CHECK(runs[1] == std::pair<uint32_t, PageRun>{2, PageRun{0, 2}});
  CHECK(s.MarkRange(0x50000, 0x1000) == 0);
  CHECK(s.MarkRange(0x10000, 0) == 0);
  CHECK(s.DirtyPageCount() == 3);
  CHECK(s.RunCount() == 2);
  s.ClearAll();
  CHECK(s.DirtyPageCount() == 0);
  s.SetAll();
  CHECK(s.DirtyPageCount() == 8);
}

TEST_CASE("MarkPageAtomic marks only tracked pages") {
  RamBlock blocks[] = {Block(1, 0x10000, 4)};
  DirtySet s(blocks);
  CHECK(s.MarkPageAtomic(0x12345));
  CHECK_FALSE(s.MarkPageAtomic(0x14000));
  CHECK(Runs(s) == std::vector<std::pair<uint32_t, PageRun>>{{1, PageRun{2, 1}}});
}

TEST_CASE("HarvestFrom moves bits by id and clears the source") {
  RamBlock old_blocks[] = {Block(1, 0x10000, 4), Block(2, 0x20000, 4), Block(3, 0x30000, 4)};
  DirtySet live(old_blocks);
  live.MarkRange(0x10000, 0x2000);  // block 1 pages 0-1
  live.MarkRange(0x23000, 0x1000);  // block 2 page 3
  live.MarkRange(0x30000, 0x1000);  // block 3 page 0: block 3 is gone from `out`
  // Block 2 grew and block 1 is unchanged.
  RamBlock new_blocks[] = {Block(1, 0x10000, 4), Block(2, 0x20000, 8)};
  DirtySet out(new_blocks);
  out.MarkRange(0x27000, 0x1000);  // already set bits stay
  out.HarvestFrom(live);
  CHECK(live.DirtyPageCount() == 0);
  auto runs = Runs(out);
  REQUIRE(runs.size() == 3);
  CHECK(runs[0] == std::pair<uint32_t, PageRun>{1, PageRun{0, 2}});
  CHECK(runs[1] == std::pair<uint32_t, PageRun>{2, PageRun{3, 1}});
  CHECK(runs[2] == std::pair<uint32_t, PageRun>{2, PageRun{7, 1}});
  CHECK(out.DirtyPageCount() == 4);
}

TEST_CASE("HarvestFrom maps a moved block by address") {
  RamBlock a[] = {Block(9, 0x10000, 4)};
  RamBlock b[] = {Block(9, 0x11000, 4)};  // starts one page later
  DirtySet live(a);
  live.MarkRange(0x10000, 0x4000);
  DirtySet out(b);
  out.HarvestFrom(live);
  // Pages 0x11000..0x13fff overlap: pages 0-2 of the new block.
  CHECK(Runs(out) == std::vector<std::pair<uint32_t, PageRun>>{{9, PageRun{0, 3}}});
}

}  // namespace
}  // namespace procmig
