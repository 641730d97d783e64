#include "migration/block_memory.h"

#include <doctest/doctest.h>

#include <cstring>

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

}  // namespace
}  // namespace procmig
