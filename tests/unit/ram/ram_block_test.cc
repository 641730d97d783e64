#include "ram/ram_block.h"

#include <doctest/doctest.h>

#include <string>

namespace procmig {
namespace {

RamBlock Valid() {
  RamBlock b;
  b.id = 4;
  b.start = 0x7f0000001000;
  b.length = 3 * 4096;
  b.page_size = 4096;
  b.prot = 3;
  return b;
}

TEST_CASE("geometry helpers") {
  RamBlock b = Valid();
  CHECK(b.end() == 0x7f0000004000);
  CHECK(b.page_count() == 3);
  CHECK(b.Contains(0x7f0000001000));
  CHECK(b.Contains(0x7f0000003fff));
  CHECK_FALSE(b.Contains(0x7f0000004000));
  CHECK_FALSE(b.Contains(0x7f0000000fff));
  CHECK(b.PageIndex(0x7f0000002abc) == 1);
  CHECK(b.PageAddress(2) == 0x7f0000003000);
  CHECK(AnonymousBlockName(0x7f0000001000) == "anon@0x7f0000001000");
}

TEST_CASE("ValidateRamBlock accepts a valid block and names what is wrong otherwise") {
  CHECK(ValidateRamBlock(Valid()).ok());
  RamBlock b = Valid();
  b.page_size = 3000;
  CHECK(std::string(ValidateRamBlock(b).message()).find("power of two") != std::string::npos);
  b = Valid();
  b.page_size = 0;
  CHECK(ValidateRamBlock(b).code() == absl::StatusCode::kInvalidArgument);
  b = Valid();
  b.length = 0;
  CHECK(std::string(ValidateRamBlock(b).message()).find("empty") != std::string::npos);
  b = Valid();
  b.start += 8;
  CHECK(std::string(ValidateRamBlock(b).message()).find("start not page aligned") !=
        std::string::npos);
  b = Valid();
  b.length += 1;
  CHECK(std::string(ValidateRamBlock(b).message()).find("multiple") != std::string::npos);
  b = Valid();
  b.start = ~uintptr_t{0} - 4095;
  b.length = 2 * 4096;
  CHECK(std::string(ValidateRamBlock(b).message()).find("wraps") != std::string::npos);
  // The message names the block.
  CHECK(std::string(ValidateRamBlock(b).message()).find("ram block 4") != std::string::npos);
}

TEST_CASE("a block's kind follows the registry's names") {
  RamBlock b;
  b.name = "heap";
  CHECK(KindOf(b) == RamBlockKind::kHeap);
  b.name = "[stack]";
  CHECK(KindOf(b) == RamBlockKind::kStack);
  b.name = "/usr/lib/libc.so.6";
  CHECK(KindOf(b) == RamBlockKind::kFilePrivate);
  b.name = "/memfd:cache (deleted)";
  CHECK(KindOf(b) == RamBlockKind::kFilePrivate);
  b.name = AnonymousBlockName(0x7f0000001000);
  CHECK(KindOf(b) == RamBlockKind::kAnonymous);
  b.name = "[anon:arena]";
  CHECK(KindOf(b) == RamBlockKind::kAnonymous);
}

}  // namespace
}  // namespace procmig
