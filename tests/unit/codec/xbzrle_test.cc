#include "codec/xbzrle.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace procmig {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes Random(size_t n, std::mt19937_64& rng) {
  Bytes v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// Encodes with unlimited room, checks the size bound, decodes onto a copy of `old_page`.
Bytes RoundTrip(const Bytes& old_page, const Bytes& new_page) {
  const size_t cap = xbzrle::MaxEncodedSize(old_page.size());
  Bytes delta(cap);
  std::optional<size_t> n =
      xbzrle::Encode(old_page.data(), new_page.data(), old_page.size(), delta.data(), cap);
  REQUIRE(n.has_value());
  REQUIRE(*n <= cap);
  delta.resize(*n);
  Bytes page = old_page;
  absl::Status s = xbzrle::Decode(delta.data(), delta.size(), page.data(), page.size());
  REQUIRE_MESSAGE(s.ok(), s.ToString());
  CHECK(page == new_page);
  return delta;
}

size_t EncodedSize(const Bytes& old_page, const Bytes& new_page) {
  Bytes delta(xbzrle::MaxEncodedSize(old_page.size()));
  return *xbzrle::Encode(old_page.data(), new_page.data(), old_page.size(), delta.data(),
                         delta.size());
}

TEST_CASE("identical pages encode to an empty delta, which decodes to no change") {
  std::mt19937_64 rng(1);
  Bytes page = Random(4096, rng);
  Bytes out(16, 0xee);
  CHECK(xbzrle::Encode(page.data(), page.data(), 4096, out.data(), 0) == size_t{0});
  CHECK(xbzrle::Encode(page.data(), page.data(), 4096, out.data(), out.size()) == size_t{0});
  Bytes copy = page;
  CHECK(xbzrle::Decode(nullptr, 0, copy.data(), copy.size()).ok());
  CHECK(copy == page);
}

TEST_CASE("the delta has QEMU's layout: zrun, nzrun, literals; no trailing zrun") {
  Bytes old_page(16, 0);
  Bytes new_page = old_page;
  new_page[3] = 0xaa;
  new_page[4] = 0xbb;
  new_page[10] = 0xcc;
  CHECK(RoundTrip(old_page, new_page) == Bytes{3, 2, 0xaa, 0xbb, 5, 1, 0xcc});

  // Only the first unchanged run may be empty.
  Bytes first = old_page;
  first[0] = 0x01;
  first[15] = 0x02;
  CHECK(RoundTrip(old_page, first) == Bytes{0, 1, 0x01, 14, 1, 0x02});
}

TEST_CASE("run lengths of 128 and more take two ULEB128 bytes") {
  Bytes old_page(4096, 0x11);
  Bytes new_page = old_page;
  for (size_t i = 300; i < 500; ++i) new_page[i] = 0x22;
  Bytes delta = RoundTrip(old_page, new_page);
  REQUIRE(delta.size() == 2 + 2 + 200);
  // 300 = 0b10_0101100 -> 0xac 0x02; 200 = 0b1_1001000 -> 0xc8 0x01.
  CHECK(delta[0] == 0xac);
  CHECK(delta[1] == 0x02);
  CHECK(delta[2] == 0xc8);
  CHECK(delta[3] == 0x01);
  CHECK(std::all_of(delta.begin() + 4, delta.end(), [](uint8_t b) { return b == 0x22; }));
}

TEST_CASE("round trips: random, sparse, all-zero, all-changed, adversarial") {
  std::mt19937_64 rng(42);
  const size_t n = 4096;
  Bytes zero(n, 0);

  SUBCASE("random old and new") {
    for (int k = 0; k < 50; ++k) RoundTrip(Random(n, rng), Random(n, rng));
  }
  SUBCASE("sparse: a few bytes changed") {
    for (int k = 0; k < 200; ++k) {
      Bytes old_page = Random(n, rng);
      Bytes new_page = old_page;
      const int changes = 1 + static_cast<int>(rng() % 40);
      for (int c = 0; c < changes; ++c)
        new_page[rng() % n] ^= static_cast<uint8_t>(1 + rng() % 255);
      Bytes delta = RoundTrip(old_page, new_page);
      // Each change costs at most one pair: a 2-byte zrun, a 1-byte nzrun, 1 literal.
      CHECK(delta.size() <= static_cast<size_t>(changes) * 4);
    }
  }
  SUBCASE("all-zero pages") {
    CHECK(RoundTrip(zero, zero).empty());
    RoundTrip(Random(n, rng), zero);
    RoundTrip(zero, Random(n, rng));
  }
  SUBCASE("every byte changed: one run, 4096 = 0x80 0x20") {
    Bytes old_page = Random(n, rng);
    Bytes new_page = old_page;
    for (auto& b : new_page) b ^= 0xff;
    Bytes delta = RoundTrip(old_page, new_page);
    REQUIRE(delta.size() == 3 + n);
    CHECK(delta[0] == 0);
    CHECK(delta[1] == 0x80);
    CHECK(delta[2] == 0x20);
  }
  SUBCASE("alternating changed bytes hit the 1.5x worst case exactly") {
    Bytes old_page = Random(n, rng);
    Bytes even = old_page;
    Bytes odd = old_page;
    for (size_t i = 0; i < n; i += 2) even[i] ^= 0x01;
    for (size_t i = 1; i < n; i += 2) odd[i] ^= 0x01;
    // even: (0,1,x) then 2047 x (1,1,x); odd: 2048 x (1,1,x).
    CHECK(RoundTrip(old_page, even).size() == 3 + 2047 * 3);
    CHECK(RoundTrip(old_page, odd).size() == 2048 * 3);
    CHECK(xbzrle::MaxEncodedSize(n) == 6146);
    Bytes out(n);
    CHECK_FALSE(xbzrle::Encode(old_page.data(), even.data(), n, out.data(), n).has_value());
  }
}

TEST_CASE("the worst case stays within MaxEncodedSize for small and odd page sizes") {
  for (size_t n = 1; n <= 300; ++n) {
    Bytes old_page(n, 0);
    for (int phase = 0; phase < 2; ++phase) {
      Bytes new_page(n, 0);
      for (size_t i = phase; i < n; i += 2) new_page[i] = 1;
      const size_t size = EncodedSize(old_page, new_page);
      CHECK(size <= xbzrle::MaxEncodedSize(n));
      RoundTrip(old_page, new_page);
    }
  }
}

TEST_CASE("odd page sizes and unaligned buffers round-trip") {
  std::mt19937_64 rng(7);
  for (size_t n : {1, 2, 7, 8, 9, 31, 33, 100, 4095, 4097, 65536}) {
    CAPTURE(n);
    for (int k = 0; k < 20; ++k) {
      Bytes old_page = Random(n + 3, rng);
      Bytes new_page = old_page;
      const size_t changes = rng() % (n / 4 + 2);
      for (size_t c = 0; c < changes; ++c) new_page[rng() % new_page.size()] ^= 0x5a;
      Bytes a(old_page.begin() + 3, old_page.end());
      Bytes b(new_page.begin() + 3, new_page.end());
      // Encode from unaligned pointers into the original buffers.
      Bytes delta(xbzrle::MaxEncodedSize(n) + 1);
      auto size = xbzrle::Encode(old_page.data() + 3, new_page.data() + 3, n, delta.data() + 1,
                                 delta.size() - 1);
      REQUIRE(size.has_value());
      CHECK(*size == EncodedSize(a, b));
      Bytes page = a;
      REQUIRE(xbzrle::Decode(delta.data() + 1, *size, page.data(), n).ok());
      CHECK(page == b);
    }
  }
}

TEST_CASE("a delta one byte longer than the room is 'does not fit'; exactly the room fits") {
  std::mt19937_64 rng(9);
  for (int k = 0; k < 300; ++k) {
    Bytes old_page = Random(4096, rng);
    Bytes new_page = old_page;
    const size_t changes = 1 + rng() % 1500;
    for (size_t c = 0; c < changes; ++c) new_page[rng() % 4096] ^= 0x33;
    const size_t size = EncodedSize(old_page, new_page);
    Bytes out(size);
    CHECK(xbzrle::Encode(old_page.data(), new_page.data(), 4096, out.data(), size) == size);
    CHECK_FALSE(
        xbzrle::Encode(old_page.data(), new_page.data(), 4096, out.data(), size - 1).has_value());
  }
}

struct Malformed {
  const char* what;
  Bytes delta;
  std::string message;
};

TEST_CASE("every malformed delta is DataLoss naming the fault, and the page is unchanged") {
  const std::vector<Malformed> cases = {
      {"truncated unchanged-run length",
       {0x80},
       "xbzrle decode: truncated unchanged-run length at offset 0"},
      {"truncated changed-run length",
       {3, 0x81},
       "xbzrle decode: truncated changed-run length at offset 1"},
      {"unchanged run with nothing after it",
       {3},
       "xbzrle decode: truncated changed-run length at offset 1"},
      {"trailing unchanged run after a valid pair",
       {0, 1, 0xaa, 4},
       "xbzrle decode: truncated changed-run length at offset 4"},
      {"empty changed run", {3, 0}, "xbzrle decode: empty changed run at offset 1"},
      {"empty unchanged run after the first pair",
       {0, 1, 0xaa, 0, 1, 0xbb},
       "xbzrle decode: empty unchanged run at offset 3 (only the first run may be empty)"},
      {"unchanged run past the page end",
       {17, 1, 0xaa},
       "xbzrle decode: unchanged run of 17 bytes at offset 0 starts at page byte 0 and passes "
       "the page end 16"},
      {"unchanged run ending exactly at the page end",
       {16, 1, 0xaa},
       "xbzrle decode: changed run of 1 bytes at offset 1 starts at page byte 16 and passes the "
       "page end 16"},
      {"changed run past the page end",
       {10, 7, 1, 2, 3, 4, 5, 6, 7},
       "xbzrle decode: changed run of 7 bytes at offset 1 starts at page byte 10 and passes the "
       "page end 16"},
      {"literal bytes missing",
       {0, 5, 1, 2},
       "xbzrle decode: changed run of 5 bytes at offset 1 is truncated: only 2 bytes of delta "
       "left"},
      {"trailing garbage after a complete page",
       {0, 16, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 0x05},
       "xbzrle decode: 1 trailing bytes at offset 18 after the page is complete"},
      {"ULEB128 longer than the page size needs",
       {2, 0x81, 0x80, 0x00},
       "xbzrle decode: overlong changed-run length at offset 1 (more than 1 bytes)"},
      {"huge ULEB128",
       {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
       "xbzrle decode: overlong unchanged-run length at offset 0 (more than 1 bytes)"},
  };
  for (const Malformed& c : cases) {
    CAPTURE(c.what);
    Bytes page(16);
    for (size_t i = 0; i < page.size(); ++i) page[i] = static_cast<uint8_t>(0xa0 + i);
    const Bytes before = page;
    // Exact-size heap copy: ASan reports any read past the delta.
    Bytes delta = c.delta;
    absl::Status s = xbzrle::Decode(delta.data(), delta.size(), page.data(), page.size());
    CHECK(s.code() == absl::StatusCode::kDataLoss);
    CHECK(s.message() == c.message);
    CHECK(page == before);
  }
}

TEST_CASE("a 4 KiB page takes two-byte lengths but not three") {
  Bytes page(4096, 0);
  Bytes ok = {0x80, 0x1f, 0x01, 0x77};  // zrun 3968, nzrun 1
  REQUIRE(xbzrle::Decode(ok.data(), ok.size(), page.data(), page.size()).ok());
  CHECK(page[3968] == 0x77);
  Bytes three = {0x80, 0x80, 0x01, 0x01, 0x77};
  absl::Status s = xbzrle::Decode(three.data(), three.size(), page.data(), page.size());
  CHECK(s.message() ==
        "xbzrle decode: overlong unchanged-run length at offset 0 (more than 2 bytes)");
  Bytes non_minimal = {0x83, 0x00, 1, 0x77};  // 3 with a redundant continuation byte
  s = xbzrle::Decode(non_minimal.data(), non_minimal.size(), page.data(), page.size());
  CHECK(s.code() == absl::StatusCode::kDataLoss);
  CHECK(s.message() ==
        "xbzrle decode: overlong unchanged-run length at offset 0 (non-minimal encoding)");
  CHECK(page[3] == 0);
}

TEST_CASE("mutated deltas either decode or fail without touching the page") {
  std::mt19937_64 rng(1234);
  const size_t n = 512;
  int failures = 0;
  for (int k = 0; k < 20000; ++k) {
    Bytes old_page = Random(n, rng);
    Bytes new_page = old_page;
    for (int c = 0; c < 8; ++c) new_page[rng() % n] ^= 0x0f;
    Bytes delta(xbzrle::MaxEncodedSize(n));
    delta.resize(*xbzrle::Encode(old_page.data(), new_page.data(), n, delta.data(), delta.size()));
    // Flip, drop or append a byte.
    switch (rng() % 3) {
      case 0:
        if (!delta.empty()) delta[rng() % delta.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
        break;
      case 1:
        if (!delta.empty()) delta.erase(delta.begin() + static_cast<long>(rng() % delta.size()));
        break;
      default:
        delta.push_back(static_cast<uint8_t>(rng()));
    }
    Bytes page = old_page;
    absl::Status s = xbzrle::Decode(delta.data(), delta.size(), page.data(), n);
    if (!s.ok()) {
      ++failures;
      CHECK(s.code() == absl::StatusCode::kDataLoss);
      if (page != old_page) FAIL_CHECK("page modified on error: " << s);
    }
  }
  // Most mutations break the structure; some (a flipped literal) are valid deltas.
  CHECK(failures > 5000);
  CHECK(failures < 20000);
}

}  // namespace
}  // namespace procmig
