#include "dirty/discard_log.h"

#include <doctest/doctest.h>

#include <thread>
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

TEST_CASE("marks are drained once, kept across Reset for blocks that stay") {
  RamBlock blocks[] = {Block(1, 0x10000, 8), Block(2, 0x20000, 8)};
  DiscardLog log;
  log.Reset(blocks);
  log.Mark(0x11000, 0x2000);  // block 1 pages 1-2
  log.Mark(0x27000, 0x3000);  // block 2 page 7, the rest is outside
  log.Mark(0x50000, 0x1000);  // untracked
  RamBlock only_one[] = {Block(1, 0x10000, 8)};
  log.Reset(only_one);  // block 2 gone with its mark
  DirtySet out(blocks);
  log.Drain(out);
  CHECK(out.DirtyPageCount() == 2);
  CHECK(out.Find(1)->pages.Test(1));
  CHECK(out.Find(1)->pages.Test(2));
  DirtySet again(blocks);
  log.Drain(again);
  CHECK(again.DirtyPageCount() == 0);
}

TEST_CASE("concurrent marks are all drained") {
  RamBlock blocks[] = {Block(1, 0x100000, 4096)};
  DiscardLog log;
  log.Reset(blocks);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&log, t] {
      for (uintptr_t p = static_cast<uintptr_t>(t); p < 4096; p += 4) {
        log.Mark(0x100000 + p * 4096, 1);
      }
    });
  }
  DirtySet out(blocks);
  for (int i = 0; i < 100; ++i) log.Drain(out);  // while the marks arrive
  for (std::thread& t : threads) t.join();
  log.Drain(out);
  CHECK(out.DirtyPageCount() == 4096);
}

}  // namespace
}  // namespace procmig
