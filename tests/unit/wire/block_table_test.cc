// BlockTable: ids only grow, live ranges never overlap, runs stay inside live blocks.
#include "wire/block_table.h"

#include <doctest/doctest.h>

#include <string>

namespace procmig::wire {
namespace {

std::string Why(Reason r) { return r == nullptr ? "ok" : r; }

BlockAdd Add(uint32_t id, uint64_t start, uint64_t pages) {
  return {id, 3, start, pages * 4096, pages, "b"};
}

TEST_CASE("add, find, remove; ids never come back") {
  BlockTable t(4096);
  CHECK(Why(t.Add(Add(5, 0x10000, 4))) == "ok");
  REQUIRE(t.Find(5) != nullptr);
  CHECK(t.Find(5)->start == 0x10000);
  CHECK(t.Find(5)->page_count == 4);
  CHECK(Why(t.Add(Add(5, 0x90000, 1))) == "block id not above every id added before");
  CHECK(Why(t.Add(Add(3, 0x90000, 1))) == "block id not above every id added before");
  CHECK(Why(t.Remove(5)) == "ok");
  CHECK(t.Find(5) == nullptr);
  CHECK(Why(t.Remove(5)) == "block is not live");
  CHECK(Why(t.Add(Add(5, 0x10000, 4))) == "block id not above every id added before");
  CHECK(Why(t.Add(Add(6, 0x10000, 4))) == "ok");  // the space is free again
  CHECK(t.size() == 1);
}

TEST_CASE("overlaps are refused on either side, neighbours are fine") {
  BlockTable t(4096);
  REQUIRE(t.Add(Add(1, 0x10000, 4)) == nullptr);  // [0x10000, 0x14000)
  CHECK(Why(t.Add(Add(2, 0x13000, 1))) == "range overlaps a live block");
  CHECK(Why(t.Add(Add(2, 0xf000, 2))) == "range overlaps a live block");
  CHECK(Why(t.Add(Add(2, 0x8000, 16))) == "range overlaps a live block");  // covers it
  CHECK(Why(t.Add(Add(2, 0x14000, 1))) == "ok");
  CHECK(Why(t.Add(Add(3, 0xf000, 1))) == "ok");
}

TEST_CASE("resize keeps the start and respects the next block") {
  BlockTable t(4096);
  REQUIRE(t.Add(Add(1, 0x10000, 4)) == nullptr);
  REQUIRE(t.Add(Add(2, 0x20000, 1)) == nullptr);
  CHECK(Why(t.Resize({1, 0x10000, 16})) == "ok");  // grows up to block 2 exactly
  CHECK(t.Find(1)->page_count == 16);
  CHECK(Why(t.Resize({1, 0x11000, 17})) == "resized range overlaps a live block");
  CHECK(Why(t.Resize({1, 0x1000, 1})) == "ok");
  CHECK(Why(t.Resize({9, 0x1000, 1})) == "block is not live");
}

TEST_CASE("runs must lie inside a live block") {
  BlockTable t(4096);
  REQUIRE(t.Add(Add(1, 0x10000, 4)) == nullptr);
  CHECK(Why(t.CheckRun(1, 0, 4)) == "ok");
  CHECK(Why(t.CheckRun(1, 3, 1)) == "ok");
  CHECK(Why(t.CheckRun(1, 3, 2)) == "page run past the end of its block");
  CHECK(Why(t.CheckRun(1, 4, 1)) == "page run past the end of its block");
  CHECK(Why(t.CheckRun(1, UINT64_MAX, 2)) == "page run past the end of its block");
  CHECK(Why(t.CheckRun(2, 0, 1)) == "page run for a block that is not live");
}

TEST_CASE("zero runs must lie inside a live block, with their own wording") {
  BlockTable t(4096);
  REQUIRE(t.Add(Add(1, 0x10000, 4)) == nullptr);
  CHECK(Why(t.CheckZeroRun(1, 0, 4)) == "ok");
  CHECK(Why(t.CheckZeroRun(1, 3, 1)) == "ok");
  CHECK(Why(t.CheckZeroRun(1, 1, 4)) == "zero run past the end of its block");
  CHECK(Why(t.CheckZeroRun(1, 4, 1)) == "zero run past the end of its block");
  CHECK(Why(t.CheckZeroRun(1, UINT64_MAX, 2)) == "zero run past the end of its block");
  CHECK(Why(t.CheckZeroRun(2, 0, 1)) == "zero run for a block that is not live");
  REQUIRE(t.Remove(1) == nullptr);
  CHECK(Why(t.CheckZeroRun(1, 0, 1)) == "zero run for a block that is not live");
}

TEST_CASE("the table is bounded") {
  BlockTable t(4096);
  for (uint32_t i = 1; i <= kMaxBlocks; ++i) REQUIRE(t.Add(Add(i, i * 0x2000ull, 1)) == nullptr);
  CHECK(Why(t.Add(Add(kMaxBlocks + 1, 0, 1))) == "too many live blocks");
}

}  // namespace
}  // namespace procmig::wire
