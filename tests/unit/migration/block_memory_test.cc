#include "migration/block_memory.h"

#include <doctest/doctest.h>
#include <sys/mman.h>

#include <cstring>

#include "base/crc32c.h"

namespace procmig {
namespace {

TEST_CASE("pages start zero; MarkNonZero/ClearPage track and zero them") {
  auto m = BlockMemory::Create(8 * 4096, 4096);
  REQUIRE(m.ok());
  BlockMemory& b = **m;
  CHECK(b.page_count() == 8);
  CHECK(b.CountMaybeNonZero() == 0);
  std::memset(b.page(3), 0x5a, 4096);
  b.MarkNonZero(3);
  b.MarkNonZero(7);
  CHECK(b.MaybeNonZero(3));
  CHECK_FALSE(b.MaybeNonZero(2));
  CHECK(b.CountMaybeNonZero() == 2);
  b.ClearPage(3);
  CHECK_FALSE(b.MaybeNonZero(3));
  CHECK(b.page(3)[0] == 0);
  CHECK(b.page(3)[4095] == 0);
  b.Populate(0, 100);  // clamps to the block
  CHECK(b.CountMaybeNonZero() == 1);
}

TEST_CASE("MarkNonZero of a range sets exactly its pages' bits, across 64-page words") {
  auto m = BlockMemory::Create(300 * 4096, 4096);
  REQUIRE(m.ok());
  BlockMemory& b = **m;
  b.MarkNonZero(60, 70);   // 60..129: the end of word 0, all of word 1, the start of word 2
  b.MarkNonZero(192, 64);  // exactly word 3
  b.MarkNonZero(299, 1);   // the last page
  b.MarkNonZero(10, 0);    // nothing
  for (uint64_t i = 0; i < 300; ++i) {
    CAPTURE(i);
    CHECK(b.MaybeNonZero(i) == ((i >= 60 && i < 130) || (i >= 192 && i < 256) || i == 299));
  }
  CHECK(b.CountMaybeNonZero() == 70 + 64 + 1);
}

TEST_CASE("resize keeps contents, and pages dropped by a shrink read zero after a regrow") {
  auto m = BlockMemory::Create(4 * 4096, 4096);
  REQUIRE(m.ok());
  BlockMemory& b = **m;
  for (int i = 0; i < 4; ++i) {
    std::memset(b.page(i), i + 1, 4096);
    b.MarkNonZero(i);
  }
  REQUIRE(b.Resize(1024 * 4096).ok());  // past 2 MiB: remapped, maybe moved
  CHECK(b.length() == 1024 * 4096);
  CHECK(b.page(3)[100] == 4);
  CHECK(b.page(1023)[0] == 0);
  CHECK(b.CountMaybeNonZero() == 4);
  REQUIRE(b.Resize(2 * 4096).ok());
  CHECK(b.CountMaybeNonZero() == 2);
  REQUIRE(b.Resize(4 * 4096).ok());
  CHECK(b.page(1)[0] == 2);
  CHECK(b.page(2)[0] == 0);
  CHECK(b.page(3)[4095] == 0);
  CHECK_FALSE(b.MaybeNonZero(3));
  CHECK(b.Resize(4097).code() == absl::StatusCode::kInvalidArgument);
  CHECK(BlockMemory::Create(0, 4096).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("ContentCrc follows the recorded page crcs: zero pages, written pages, clears, resizes") {
  auto m = BlockMemory::Create(8 * 4096, 4096);
  REQUIRE(m.ok());
  BlockMemory& b = **m;
  auto whole = [&] { return crc32c::Value(b.bytes().data(), b.length()); };
  CHECK(b.ContentCrc() == whole());  // all zero
  std::memset(b.page(3), 0x5a, 4096);
  b.SetPageCrc(3, crc32c::Value(b.page(3), 4096));
  b.MarkNonZero(3);
  CHECK(b.ContentCrc() == whole());
  b.ClearPage(3);
  CHECK(b.ContentCrc() == whole());
  std::memset(b.page(7), 0x11, 4096);
  b.SetPageCrc(7, crc32c::Value(b.page(7), 4096));
  b.MarkNonZero(7);
  REQUIRE(b.Resize(12 * 4096).ok());
  CHECK(b.ContentCrc() == whole());
  REQUIRE(b.Resize(5 * 4096).ok());
  CHECK(b.ContentCrc() == whole());
}

TEST_CASE("a block lands at its final address when that range is free here") {
  // A free range: map and unmap 4 MiB to learn one.
  void* probe = mmap(nullptr, 4u << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(probe != MAP_FAILED);
  munmap(probe, 4u << 20);
  const uint64_t want = reinterpret_cast<uint64_t>(probe) + 4096;
  auto m = BlockMemory::Create(2u << 20, 4096, want);
  REQUIRE(m.ok());
  CHECK(reinterpret_cast<uint64_t>((*m)->page(0)) == want);
  // Taken: the next one is placed congruent to it modulo 2 MiB.
  auto n = BlockMemory::Create(2u << 20, 4096, want);
  REQUIRE(n.ok());
  CHECK(reinterpret_cast<uint64_t>((*n)->page(0)) != want);
  CHECK(reinterpret_cast<uint64_t>((*n)->page(0)) % (2u << 20) == want % (2u << 20));
}

}  // namespace
}  // namespace procmig
