#include "base/arena.h"

#include <doctest/doctest.h>
#include <malloc.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <utility>

namespace procmig {
namespace {

Arena MustCreate(size_t capacity, const char* name = "procmig-arena") {
  auto a = Arena::Create(capacity, name);
  REQUIRE(a.ok());
  return std::move(a).value();
}

TEST_CASE("capacity is rounded up to whole pages and the range is page-aligned") {
  Arena a = MustCreate(1);
  CHECK(a.capacity() == 4096);
  CHECK(a.used() == 0);
  CHECK(a.remaining() == 4096);
  CHECK(a.begin() % 4096 == 0);
  CHECK(a.end() == a.begin() + 4096);
  Arena b = MustCreate(3 * 4096 + 5);
  CHECK(b.capacity() == 4 * 4096);
}

TEST_CASE("allocations honour alignment and lie inside the range") {
  Arena a = MustCreate(1 << 20);
  auto* p1 = static_cast<uint8_t*>(a.Allocate(3, 1));
  REQUIRE(p1 != nullptr);
  CHECK(reinterpret_cast<uintptr_t>(p1) == a.begin());
  CHECK(a.used() == 3);
  for (size_t align : {1, 2, 4, 8, 16, 64, 256, 4096}) {
    CAPTURE(align);
    a.Allocate(1, 1);  // knock the cursor off any alignment
    void* p = a.Allocate(10, align);
    REQUIRE(p != nullptr);
    CHECK(reinterpret_cast<uintptr_t>(p) % align == 0);
    CHECK(a.Contains(p));
    CHECK(a.Contains(static_cast<uint8_t*>(p) + 9));
  }
  // Default alignment is max_align_t's.
  a.Allocate(1, 1);
  void* d = a.Allocate(8);
  CHECK(reinterpret_cast<uintptr_t>(d) % alignof(std::max_align_t) == 0);
  // Invalid alignments are refused, not rounded.
  size_t used = a.used();
  CHECK(a.Allocate(8, 0) == nullptr);
  CHECK(a.Allocate(8, 3) == nullptr);
  CHECK(a.Allocate(8, 8192) == nullptr);
  CHECK(a.used() == used);
  // Size 0 still gives distinct pointers.
  void* z1 = a.Allocate(0, 1);
  void* z2 = a.Allocate(0, 1);
  CHECK(z1 != nullptr);
  CHECK(z1 != z2);
  // Fresh memory reads as zero and is writable.
  auto* arr = a.AllocateArray<uint64_t>(1000);
  REQUIRE(arr != nullptr);
  CHECK(reinterpret_cast<uintptr_t>(arr) % alignof(uint64_t) == 0);
  for (int i = 0; i < 1000; ++i) REQUIRE(arr[i] == 0);
  std::memset(arr, 0xab, 1000 * sizeof(uint64_t));
  CHECK(!a.Contains(reinterpret_cast<void*>(a.end())));
  CHECK(!a.Contains(reinterpret_cast<void*>(a.begin() - 1)));
}

TEST_CASE("exhaustion returns nullptr, never aborts, and leaves the arena usable") {
  Arena a = MustCreate(4096);
  CHECK(a.Allocate(4000, 1) != nullptr);
  CHECK(a.Allocate(97, 1) == nullptr);  // 4000 + 97 > 4096
  CHECK(a.used() == 4000);
  CHECK(a.Allocate(96, 1) != nullptr);  // exactly fills it
  CHECK(a.remaining() == 0);
  CHECK(a.Allocate(1, 1) == nullptr);
  CHECK(a.Allocate(SIZE_MAX, 1) == nullptr);
  CHECK(a.AllocateArray<uint64_t>(SIZE_MAX / 4) == nullptr);  // count * size overflows
  a.Reset();
  CHECK(a.used() == 0);
  CHECK(a.Allocate(SIZE_MAX - 8, 16) == nullptr);  // alignment rounding must not wrap
  CHECK(a.Allocate(4096, 1) != nullptr);
}

TEST_CASE("Reset starts again at the beginning and keeps the old contents") {
  Arena a = MustCreate(8192);
  auto* p = static_cast<char*>(a.Allocate(6, 1));
  std::memcpy(p, "hello", 6);
  a.Allocate(100, 1);
  a.Reset();
  CHECK(a.used() == 0);
  auto* q = static_cast<char*>(a.Allocate(6, 1));
  CHECK(q == p);
  CHECK(std::string(q) == "hello");
}

TEST_CASE("moving transfers the mapping; the moved-from arena is empty") {
  Arena a = MustCreate(4096);
  uintptr_t begin = a.begin();
  a.Allocate(10, 1);
  Arena b(std::move(a));
  CHECK(b.begin() == begin);
  CHECK(b.used() == 10);
  CHECK(a.capacity() == 0);  // NOLINT(bugprone-use-after-move): checking the documented state
  CHECK(a.Allocate(1, 1) == nullptr);
  Arena c = MustCreate(4096);
  c = std::move(b);
  CHECK(c.begin() == begin);
}

TEST_CASE("the reservation is one named mapping in /proc/self/maps, unmapped on destruction") {
  uintptr_t begin = 0, end = 0;
  auto find_line = [&]() {
    std::ifstream maps("/proc/self/maps");
    std::string line;
    while (std::getline(maps, line)) {
      unsigned long lo = 0, hi = 0;
      if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) == 2 && lo <= begin && begin < hi) {
        return line;
      }
    }
    return std::string();
  };
  {
    Arena a = MustCreate(64 * 4096, "procmig-test-arena");
    begin = a.begin();
    end = a.end();
    std::string line = find_line();
    REQUIRE(!line.empty());
    unsigned long lo = 0, hi = 0;
    std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi);
    CHECK(lo == begin);
    CHECK(hi == end);
    CHECK(line.find("rw-p") != std::string::npos);
    // Naming needs CONFIG_ANON_VMA_NAME; when the kernel names it, it must be our name.
    if (line.find("[anon:") != std::string::npos) {
      CHECK(line.find("[anon:procmig-test-arena]") != std::string::npos);
    }
  }
  std::string after = find_line();
  CHECK((after.empty() || after.find("procmig-test-arena") == std::string::npos));
}

TEST_CASE("Create reports bad capacities and mmap failures by name") {
  auto zero = Arena::Create(0);
  REQUIRE_FALSE(zero.ok());
  CHECK(zero.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(zero.status().message() == "create arena: capacity is 0");

  auto overflow = Arena::Create(SIZE_MAX);
  REQUIRE_FALSE(overflow.ok());
  CHECK(overflow.status().code() == absl::StatusCode::kInvalidArgument);

  // 2^62 bytes exceed the 47-bit user address space: mmap fails with ENOMEM even with
  // MAP_NORESERVE.
  auto huge = Arena::Create(size_t{1} << 62);
  REQUIRE_FALSE(huge.ok());
  CHECK(huge.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(std::string(huge.status().message()) ==
        "create arena: mmap 4611686018427387904 bytes: ENOMEM (Cannot allocate memory)");
}

TEST_CASE("allocation never calls malloc") {
  Arena a = MustCreate(64 << 20);
  // Warm up anything lazily allocated by the first call.
  REQUIRE(a.Allocate(16) != nullptr);
  struct mallinfo2 before = mallinfo2();
  size_t ok = 0;
  for (int i = 0; i < 100000; ++i) {
    void* p = a.Allocate(static_cast<size_t>(i % 600) + 1, size_t{1} << (i % 7));
    ok += p != nullptr;
    if (i % 30000 == 0) a.Reset();
  }
  struct mallinfo2 after = mallinfo2();
  CHECK(ok == 100000);
  CHECK(after.uordblks == before.uordblks);
  CHECK(after.arena == before.arena);
  CHECK(after.hblks == before.hblks);
}

}  // namespace
}  // namespace procmig
