#include "codec/page_cache.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace procmig {
namespace {

constexpr size_t kPage = 4096;

std::vector<uint8_t> Fill(uint8_t v) { return std::vector<uint8_t>(kPage, v); }

std::unique_ptr<PageCache> Make(size_t pages, size_t ways, uint64_t lifetime) {
  PageCacheConfig c;
  c.capacity_bytes = pages * kPage;
  c.page_size = kPage;
  c.ways = ways;
  c.lifetime = lifetime;
  auto cache = PageCache::Create(c);
  REQUIRE(cache.ok());
  return *std::move(cache);
}

bool Holds(PageCache& cache, uint32_t block, uint64_t page, uint8_t v, uint64_t gen) {
  const uint8_t* p = cache.Lookup(block, page, gen);
  return p != nullptr && std::all_of(p, p + kPage, [v](uint8_t b) { return b == v; });
}

TEST_CASE("config validation names the bad field") {
  auto check = [](PageCacheConfig c, const std::string& message) {
    absl::Status s = c.Validate();
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK(s.message() == message);
    CHECK(PageCache::Create(c).status() == s);
  };
  PageCacheConfig c;
  CHECK(c.Validate().ok());
  c.page_size = 3000;
  check(c, "page cache config: page_size 3000 is not a power of two between 64 B and 1 GiB");
  c.page_size = 32;
  check(c, "page cache config: page_size 32 is not a power of two between 64 B and 1 GiB");
  c = PageCacheConfig{};
  c.ways = 0;
  check(c, "page cache config: ways 0 is outside 1..64");
  c.ways = 65;
  check(c, "page cache config: ways 65 is outside 1..64");
  c = PageCacheConfig{};
  c.lifetime = 0;
  check(c, "page cache config: lifetime must be at least 1");
  c = PageCacheConfig{};
  c.capacity_bytes = 3 * 4096 + 4095;
  check(c,
        "page cache config: capacity_bytes 16383 holds fewer than one set of 4 pages of 4096 "
        "bytes");
}

TEST_CASE("capacity is rounded down to whole sets") {
  auto cache = Make(10, 4, 2);
  CHECK(cache->capacity_pages() == 8);
  CHECK(cache->page_size() == kPage);
  CHECK(cache->size_pages() == 0);
}

TEST_CASE("miss, insert, hit, update: contents and counters exact") {
  auto cache = Make(64, 4, 2);
  CHECK(cache->Lookup(1, 7, 1) == nullptr);
  auto a = Fill(0xaa);
  CHECK(cache->Insert(1, 7, a.data(), 1));
  a[0] = 0;  // the cache holds a copy
  CHECK(Holds(*cache, 1, 7, 0xaa, 1));
  CHECK(cache->Lookup(2, 7, 1) == nullptr);  // same page index, other block
  CHECK(cache->Lookup(1, 8, 1) == nullptr);
  auto b = Fill(0xbb);
  CHECK(cache->Insert(1, 7, b.data(), 1));
  CHECK(Holds(*cache, 1, 7, 0xbb, 1));

  // The returned pointer can be updated in place.
  uint8_t* p = cache->Lookup(1, 7, 1);
  REQUIRE(p != nullptr);
  std::fill(p, p + kPage, 0xcc);
  CHECK(Holds(*cache, 1, 7, 0xcc, 1));

  const PageCacheStats& s = cache->stats();
  CHECK(s.hits == 4);
  CHECK(s.misses == 3);
  CHECK(s.inserts == 1);
  CHECK(s.updates == 1);
  CHECK(s.evictions == 0);
  CHECK(s.overflows == 0);
  CHECK(cache->size_pages() == 1);
}

TEST_CASE("direct-mapped with lifetime 2 follows QEMU: a slot is not replaced within two cycles") {
  // 4 sets of 1: pages p and p+4 of a block share a set.
  auto cache = Make(4, 1, 2);
  auto a = Fill(1), b = Fill(2);
  REQUIRE(cache->Insert(0, 0, a.data(), 1));
  CHECK_FALSE(cache->Insert(0, 4, b.data(), 1));
  CHECK_FALSE(cache->Insert(0, 4, b.data(), 2));
  CHECK(cache->stats().overflows == 2);
  CHECK(cache->Insert(0, 4, b.data(), 3));
  CHECK(cache->stats().evictions == 1);
  CHECK(cache->Lookup(0, 0, 3) == nullptr);
  CHECK(Holds(*cache, 0, 4, 2, 3));
  CHECK(cache->size_pages() == 1);
}

TEST_CASE("a hit restamps the entry, protecting it again") {
  auto cache = Make(4, 1, 2);
  auto a = Fill(1), b = Fill(2);
  REQUIRE(cache->Insert(0, 1, a.data(), 1));
  REQUIRE(cache->Lookup(0, 1, 5) != nullptr);
  CHECK_FALSE(cache->Insert(0, 5, b.data(), 6));
  CHECK(cache->Insert(0, 5, b.data(), 7));
  CHECK(cache->stats().overflows == 1);
  CHECK(cache->stats().evictions == 1);
}

TEST_CASE("lifetime 1 protects only the current generation") {
  auto cache = Make(4, 1, 1);
  auto a = Fill(1), b = Fill(2);
  REQUIRE(cache->Insert(3, 2, a.data(), 1));
  CHECK_FALSE(cache->Insert(3, 6, b.data(), 1));
  CHECK(cache->Insert(3, 6, b.data(), 2));
  CHECK(Holds(*cache, 3, 6, 2, 2));
}

TEST_CASE("a full set evicts its stalest unprotected entry") {
  // One set of four ways: every page shares it.
  auto cache = Make(4, 4, 1);
  for (uint64_t p = 0; p < 4; ++p) {
    auto d = Fill(static_cast<uint8_t>(p));
    REQUIRE(cache->Insert(0, p, d.data(), p + 1));  // generations 1, 2, 3, 4
  }
  CHECK(cache->size_pages() == 4);
  auto x = Fill(0x10);
  // At generation 4, entries of generations 1..3 may go; the stalest (page 0) does.
  REQUIRE(cache->Insert(0, 10, x.data(), 4));
  auto y = Fill(0x11);
  REQUIRE(cache->Insert(0, 11, y.data(), 4));  // then page 1 (generation 2)
  auto z = Fill(0x12);
  REQUIRE(cache->Insert(0, 12, z.data(), 4));  // then page 2 (generation 3)
  // Now all four are of generation 4: refused.
  auto w = Fill(0x13);
  CHECK_FALSE(cache->Insert(0, 13, w.data(), 4));
  const PageCacheStats& s = cache->stats();
  CHECK(s.inserts == 7);
  CHECK(s.evictions == 3);
  CHECK(s.overflows == 1);
  CHECK(cache->Lookup(0, 0, 4) == nullptr);
  CHECK(cache->Lookup(0, 1, 4) == nullptr);
  CHECK(cache->Lookup(0, 2, 4) == nullptr);
  CHECK(Holds(*cache, 0, 3, 3, 4));
  CHECK(Holds(*cache, 0, 10, 0x10, 4));
  CHECK(Holds(*cache, 0, 11, 0x11, 4));
  CHECK(Holds(*cache, 0, 12, 0x12, 4));
  CHECK(cache->Lookup(0, 13, 4) == nullptr);
  CHECK(cache->size_pages() == 4);
}

TEST_CASE("an empty way is used before anything is evicted") {
  auto cache = Make(2, 2, 1);
  auto a = Fill(1), b = Fill(2);
  REQUIRE(cache->Insert(0, 0, a.data(), 1));
  REQUIRE(cache->Insert(0, 1, b.data(), 100));
  CHECK(cache->stats().evictions == 0);
  CHECK(Holds(*cache, 0, 0, 1, 100));
  CHECK(Holds(*cache, 0, 1, 2, 100));
}

TEST_CASE("EraseBlock drops exactly that block's entries") {
  auto cache = Make(64, 4, 2);
  auto a = Fill(1), b = Fill(2);
  for (uint64_t p = 0; p < 10; ++p) {
    REQUIRE(cache->Insert(1, p, a.data(), 1));
    REQUIRE(cache->Insert(2, p, b.data(), 1));
  }
  CHECK(cache->size_pages() == 20);
  cache->EraseBlock(1);
  CHECK(cache->size_pages() == 10);
  CHECK(cache->stats().erased == 10);
  for (uint64_t p = 0; p < 10; ++p) {
    CHECK(cache->Lookup(1, p, 1) == nullptr);
    CHECK(Holds(*cache, 2, p, 2, 1));
  }
  // Freed slots are reused without evictions.
  REQUIRE(cache->Insert(1, 3, b.data(), 1));
  CHECK(cache->stats().evictions == 0);
}

TEST_CASE("counters stay consistent over many generations of churn") {
  auto cache = Make(256, 4, 2);
  std::vector<uint8_t> d(kPage);
  uint64_t lookups = 0;
  for (uint64_t gen = 1; gen <= 20; ++gen) {
    for (uint64_t p = 0; p < 500; p += 1 + gen % 3) {
      d[0] = static_cast<uint8_t>(p);
      d[kPage - 1] = static_cast<uint8_t>(gen);
      uint8_t* hit = cache->Lookup(static_cast<uint32_t>(p % 3), p, gen);
      ++lookups;
      if (hit != nullptr) {
        CHECK(hit[0] == static_cast<uint8_t>(p));
        CHECK(hit[kPage - 1] < static_cast<uint8_t>(gen));
      }
      cache->Insert(static_cast<uint32_t>(p % 3), p, d.data(), gen);
    }
  }
  const PageCacheStats& s = cache->stats();
  CHECK(s.hits + s.misses == lookups);
  CHECK(s.hits == s.updates);  // every hit was followed by an update of the same page
  CHECK(s.inserts - s.evictions == cache->size_pages());
  CHECK(cache->size_pages() == 256);
  CHECK(s.overflows > 0);
  CHECK(s.evictions > 0);
}

}  // namespace
}  // namespace procmig
