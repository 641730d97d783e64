// MapsSnapshot: which ranges line up with the mappings, on fixed maps text and on the process's
// own /proc/self/maps after real mmap/munmap/mprotect.
#include "dirty/maps_snapshot.h"

#include <doctest/doctest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

namespace procmig {
namespace {

constexpr char kMaps[] =
    "00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/x\n"
    "00651000-00652000 rw-p 00051000 08:02 173521      /usr/bin/x\n"
    "00652000-00655000 rw-p 00000000 00:00 0           [heap]\n"
    "7f0000000000-7f0000004000 rw-p 00000000 00:00 0\n"
    "7f0000006000-7f0000008000 rw-p 00000000 00:00 0\n"
    "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0   [stack]\n";

TEST_CASE("maps snapshot: ranges against fixed maps text") {
  MapsSnapshot m;
  CHECK_FALSE(m.CoversExactly(0x400000, 0x452000));  // nothing read yet
  m.SetTextForTest(kMaps, std::strlen(kMaps));
  CHECK(m.CoversExactly(0x400000, 0x452000));         // one mapping
  CHECK(m.CoversExactly(0x651000, 0x655000));         // two adjacent mappings
  CHECK(m.CoversExactly(0x7ffd00000000, 0x7ffd00021000));
  CHECK_FALSE(m.CoversExactly(0x652000, 0x654000));   // ends inside a mapping
  CHECK_FALSE(m.CoversExactly(0x653000, 0x655000));   // starts inside one
  CHECK_FALSE(m.CoversExactly(0x7f0000000000, 0x7f0000008000));  // a hole in between
  CHECK_FALSE(m.CoversExactly(0x7f0000004000, 0x7f0000006000));  // the hole itself
  CHECK_FALSE(m.CoversExactly(0x1000, 0x2000));                   // before everything
  CHECK_FALSE(m.CoversExactly(0x7ffd00021000, 0x7ffd00022000));  // after everything
  CHECK_FALSE(m.CoversExactly(0x400000, 0x400000));               // empty
}

TEST_CASE("maps snapshot: the process's own mappings as they change") {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  // A reservation around the test mapping keeps neighbours from merging with it.
  char* res = static_cast<char*>(
      mmap(nullptr, 12 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  REQUIRE(res != MAP_FAILED);
  char* p = static_cast<char*>(mmap(res + 4 * page, 4 * page, PROT_READ | PROT_WRITE,
                                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0));
  REQUIRE(p == res + 4 * page);
  const auto a = reinterpret_cast<uintptr_t>(p);
  MapsSnapshot m;
  m.Reserve(1 << 20);
  REQUIRE(m.Read());
  CHECK(m.CoversExactly(a, a + 4 * page));
  CHECK_FALSE(m.CoversExactly(a, a + 3 * page));
  // mprotect splits the mapping: the whole range still lines up, and so do its parts now.
  REQUIRE(mprotect(p + page, page, PROT_READ) == 0);
  REQUIRE(m.Read());
  CHECK(m.CoversExactly(a, a + 4 * page));
  CHECK(m.CoversExactly(a, a + page));
  CHECK(m.CoversExactly(a + 2 * page, a + 4 * page));
  // A hole: no longer mapped without one.
  REQUIRE(munmap(p + 2 * page, page) == 0);
  REQUIRE(m.Read());
  CHECK_FALSE(m.CoversExactly(a, a + 4 * page));
  CHECK(m.CoversExactly(a, a + 2 * page));
  munmap(res, 12 * page);
}

TEST_CASE("maps snapshot: a buffer too small says so") {
  MapsSnapshot m;
  m.Reserve(64);
  CHECK_FALSE(m.Read());
  CHECK(m.truncated());
  const auto any = reinterpret_cast<uintptr_t>(&m);
  CHECK_FALSE(m.CoversExactly(any & ~uintptr_t{4095}, (any & ~uintptr_t{4095}) + 4096));
}

}  // namespace
}  // namespace procmig
