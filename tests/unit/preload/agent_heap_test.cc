// AgentHeap (preload/agent_heap.h) on its own, over real mappings: the class and alignment of
// every size, reuse of freed objects and runs, large runs that read as zero however they were
// used before, exhaustion answered with nullptr (the interposer then uses glibc's), a forgotten
// large zone reserved again at its old addresses with stale pointers ignored, and two threads
// allocating at once.
#include "preload/agent_heap.h"

#include <doctest/doctest.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

namespace procmig::preload {
namespace {

uintptr_t Addr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

bool AllZero(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  return std::all_of(b, b + n, [](uint8_t v) { return v == 0; });
}

TEST_CASE("small sizes get their power-of-two class, aligned to it, inside the small zone") {
  AgentHeap h(1u << 20, 8u << 20);
  CHECK(h.small_zone().first == 0);  // nothing reserved before the first allocation
  CHECK_FALSE(h.Owns(&h));
  const std::pair<size_t, size_t> cases[] = {
      {0, 16}, {1, 16}, {16, 16}, {17, 32}, {100, 128}, {4096, 4096}, {4097, 8192}, {32768, 32768}};
  std::vector<void*> got;
  for (auto [size, usable] : cases) {
    void* p = h.Allocate(size);
    REQUIRE(p != nullptr);
    INFO("size ", size);
    CHECK(h.UsableSize(p) == usable);
    CHECK(Addr(p) % usable == 0);
    CHECK(h.Owns(p));
    CHECK(Addr(p) >= h.small_zone().first);
    CHECK(Addr(p) + usable <= h.small_zone().second);
    std::memset(p, static_cast<int>(got.size() + 1), usable);
    got.push_back(p);
  }
  // Nothing overlaps: every object still holds its own byte.
  for (size_t i = 0; i < got.size(); ++i) {
    const auto* b = static_cast<const uint8_t*>(got[i]);
    const size_t n = h.UsableSize(got[i]);
    CHECK(std::all_of(b, b + n, [&](uint8_t v) { return v == i + 1; }));
  }
  CHECK(h.UsableSize(&h) == 0);
}

TEST_CASE("a freed object is the next one of its class; other classes are not disturbed") {
  AgentHeap h(1u << 20, 8u << 20);
  void* a = h.Allocate(40);
  void* b = h.Allocate(40);
  void* c = h.Allocate(200);
  REQUIRE(a != nullptr);
  REQUIRE(b != nullptr);
  REQUIRE(c != nullptr);
  CHECK(Addr(b) == Addr(a) + 64);  // lowest first out of a fresh slab
  h.Free(a);
  CHECK(h.Allocate(50) == a);
  CHECK(h.Allocate(50) != a);
  h.Free(c);
  CHECK(h.Allocate(129) == c);
  h.Free(nullptr);  // ignored
}

TEST_CASE("large runs: power-of-two page runs, aligned, zero when handed out, even reused") {
  AgentHeap h(1u << 20, 64u << 20);
  void* p = h.Allocate(100u << 10);  // 128 KiB class
  REQUIRE(p != nullptr);
  CHECK(h.UsableSize(p) == (128u << 10));
  CHECK(Addr(p) % (128u << 10) == 0);
  CHECK(Addr(p) >= h.large_zone().first);
  CHECK(Addr(p) + (128u << 10) <= h.large_zone().second);
  CHECK(AgentHeap::ZeroedOnAllocate(100u << 10));
  CHECK_FALSE(AgentHeap::ZeroedOnAllocate(32u << 10));
  CHECK(AllZero(p, 128u << 10));
  std::memset(p, 0xab, 128u << 10);
  h.Free(p);
  void* q = h.Allocate(65u << 10);
  CHECK(q == p);  // the same class: the freed run again
  CHECK(AllZero(q, 128u << 10));
  void* big = h.Allocate(3u << 20);  // 4 MiB class, aligned to 2 MiB (kMaxAlign)
  REQUIRE(big != nullptr);
  CHECK(h.UsableSize(big) == (4u << 20));
  CHECK(Addr(big) % (2u << 20) == 0);
}

TEST_CASE("alignment up to 2 MiB is honoured; more, or not a power of two, is refused") {
  AgentHeap h(1u << 20, 64u << 20);
  void* a = h.Allocate(10, 4096);
  REQUIRE(a != nullptr);
  CHECK(Addr(a) % 4096 == 0);
  CHECK(h.UsableSize(a) == 4096);
  void* b = h.Allocate(100, 1u << 20);
  REQUIRE(b != nullptr);
  CHECK(Addr(b) % (1u << 20) == 0);
  void* c = h.Allocate(1, 2u << 20);
  REQUIRE(c != nullptr);
  CHECK(Addr(c) % (2u << 20) == 0);
  CHECK(h.Allocate(1, 4u << 20) == nullptr);
  CHECK(h.Allocate(1, 3) == nullptr);
  CHECK(h.Allocate(size_t{1} << 50) == nullptr);
}

TEST_CASE("a full zone answers nullptr, and a freed object makes room again") {
  // The small zone: one slab of class table, two of objects: four 32 KiB objects fit.
  AgentHeap h(3 * AgentHeap::kSlab, 4u << 20);
  std::vector<void*> objs;
  for (int i = 0; i < 4; ++i) {
    void* p = h.Allocate(32u << 10);
    REQUIRE(p != nullptr);
    objs.push_back(p);
  }
  CHECK(h.Allocate(32u << 10) == nullptr);
  CHECK(h.Allocate(16) == nullptr);  // no slab left for another class either
  h.Free(objs[2]);
  CHECK(h.Allocate(20000) == objs[2]);
  // The large zone: 4 MiB, its table's slab first. A 1 MiB run, then a 2 MiB one (aligned to
  // 2 MiB: it takes the second half), then nothing: the bump never goes back to a gap.
  void* r1 = h.Allocate(1u << 20);
  REQUIRE(r1 != nullptr);
  CHECK(Addr(r1) == h.large_zone().first + (1u << 20));
  void* r2 = h.Allocate(2u << 20);
  REQUIRE(r2 != nullptr);
  CHECK(Addr(r2) == h.large_zone().first + (2u << 20));
  CHECK(h.Allocate(64u << 10) == nullptr);
  h.Free(r1);
  CHECK(h.Allocate(600u << 10) == r1);  // the freed 1 MiB run serves its class again
}

TEST_CASE("a forgotten large zone comes back at its addresses; its stale pointers are ignored") {
  AgentHeap h(1u << 20, 16u << 20);
  void* small = h.Allocate(100);
  void* a = h.Allocate(256u << 10);
  void* b = h.Allocate(512u << 10);
  REQUIRE(a != nullptr);
  REQUIRE(b != nullptr);
  std::memset(b, 0x5a, 512u << 10);
  const auto zone = h.large_zone();
  // As in a restored copy: the zone was not migrated, its range is free.
  REQUIRE(munmap(reinterpret_cast<void*>(zone.first), zone.second - zone.first) == 0);
  h.ForgetLargeZone();
  CHECK(h.large_zone() == zone);
  CHECK(h.UsableSize(b) == 0);  // the class table is new: b is nobody's
  h.Free(b);                    // ignored, not put on a free list
  void* c = h.Allocate(256u << 10);
  CHECK(c == a);  // the zone starts over from its first run
  CHECK(AllZero(c, 256u << 10));
  CHECK(h.UsableSize(small) == 128);  // the small zone is untouched
}

TEST_CASE("two threads allocating, writing and freeing at once never share an object") {
  AgentHeap h(8u << 20, 64u << 20);
  auto work = [&](uint8_t tag) {
    std::vector<std::pair<void*, size_t>> live;
    for (int i = 0; i < 20000; ++i) {
      const size_t size = 1 + (static_cast<size_t>(i) * 7919 + tag) % (i % 50 == 0 ? 200000 : 3000);
      void* p = h.Allocate(size);
      REQUIRE(p != nullptr);
      std::memset(p, tag, size);
      live.push_back({p, size});
      if (live.size() > 64) {
        auto [q, n] = live[static_cast<size_t>(i) % live.size()];
        const auto* bytes = static_cast<const uint8_t*>(q);
        REQUIRE(std::all_of(bytes, bytes + n, [&](uint8_t v) { return v == tag; }));
        h.Free(q);
        live[static_cast<size_t>(i) % live.size()] = live.back();
        live.pop_back();
      }
    }
    for (auto [q, n] : live) h.Free(q);
  };
  std::thread t1(work, 0x11);
  std::thread t2(work, 0x22);
  t1.join();
  t2.join();
}

}  // namespace
}  // namespace procmig::preload
