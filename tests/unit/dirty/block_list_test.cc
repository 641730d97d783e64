#include "dirty/block_list.h"

#include <doctest/doctest.h>
#include <sys/mman.h>

namespace procmig {
namespace {

RamBlock Block(uint32_t id, uintptr_t start, size_t pages) {
  RamBlock b;
  b.id = id;
  b.start = start;
  b.page_size = BasePageSize();
  b.length = pages * b.page_size;
  b.prot = PROT_READ | PROT_WRITE;
  return b;
}

TEST_CASE("BlocksWithAdded sorts and validates") {
  const size_t p = BasePageSize();
  RamBlock a = Block(1, 100 * p, 4);
  RamBlock b = Block(2, 10 * p, 4);
  absl::StatusOr<std::vector<RamBlock>> l = BlocksWithAdded({}, {&a, 1});
  REQUIRE(l.ok());
  l = BlocksWithAdded(*l, {&b, 1});
  REQUIRE(l.ok());
  REQUIRE(l->size() == 2);
  CHECK((*l)[0].id == 2);
  CHECK((*l)[1].id == 1);
  CHECK(FindBlockHolding(*l, 11 * p)->id == 2);
  CHECK(FindBlockHolding(*l, 103 * p + 5)->id == 1);
  CHECK(FindBlockHolding(*l, 14 * p) == nullptr);

  RamBlock overlap = Block(3, 103 * p, 2);
  CHECK(BlocksWithAdded(*l, {&overlap, 1}).status().code() == absl::StatusCode::kInvalidArgument);
  RamBlock dup = Block(1, 500 * p, 1);
  CHECK(BlocksWithAdded(*l, {&dup, 1}).status().code() == absl::StatusCode::kInvalidArgument);
  // A read-only block is tracked (a JIT makes its code writable and read-only again between two
  // layout reads); only the mprotect backend, which sets protections itself, refuses it.
  RamBlock ro = Block(4, 600 * p, 1);
  ro.prot = PROT_READ | PROT_EXEC;
  absl::StatusOr<std::vector<RamBlock>> with_ro = BlocksWithAdded(*l, {&ro, 1});
  REQUIRE(with_ro.ok());
  CHECK(with_ro->size() == l->size() + 1);
  CHECK(RequireWritable({&ro, 1}).code() == absl::StatusCode::kInvalidArgument);
  CHECK(RequireWritable(*l).ok());
  RamBlock huge = Block(5, 1024 * p, 512);
  huge.page_size = 2 << 20;
  CHECK(BlocksWithAdded(*l, {&huge, 1}).status().code() == absl::StatusCode::kInvalidArgument);
  RamBlock unaligned = Block(6, 700 * p + 1, 1);
  CHECK(BlocksWithAdded(*l, {&unaligned, 1}).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("BlocksWithRemoved and BlocksById") {
  const size_t p = BasePageSize();
  RamBlock blocks[] = {Block(1, 10 * p, 1), Block(2, 20 * p, 1), Block(3, 30 * p, 1)};
  uint32_t ids[] = {3, 1};
  absl::StatusOr<std::vector<RamBlock>> gone = BlocksById(blocks, ids);
  REQUIRE(gone.ok());
  CHECK((*gone)[0].id == 3);
  CHECK((*gone)[1].id == 1);
  absl::StatusOr<std::vector<RamBlock>> left = BlocksWithRemoved(blocks, ids);
  REQUIRE(left.ok());
  REQUIRE(left->size() == 1);
  CHECK((*left)[0].id == 2);
  uint32_t unknown = 4;
  CHECK(BlocksWithRemoved(blocks, {&unknown, 1}).status().code() == absl::StatusCode::kNotFound);
  CHECK(BlocksById(blocks, {&unknown, 1}).status().code() == absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace procmig
