#include "base/crc32c.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace procmig {
namespace {

// Bit-at-a-time reference, independent of both implementations' tables.
uint32_t BitwiseCrc32c(const uint8_t* p, size_t n) {
  uint32_t c = 0xffffffff;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82f63b78 & (0u - (c & 1)));
  }
  return ~c;
}

TEST_CASE("crc32c matches the published vectors (RFC 3720 B.4 and the check value)") {
  uint8_t buf[32];
  std::memset(buf, 0x00, sizeof buf);
  CHECK(crc32c::Value(buf, 32) == 0x8A9136AAu);
  CHECK(crc32c::ExtendPortable(0, buf, 32) == 0x8A9136AAu);
  std::memset(buf, 0xff, sizeof buf);
  CHECK(crc32c::Value(buf, 32) == 0x62A8AB43u);
  CHECK(crc32c::ExtendPortable(0, buf, 32) == 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) buf[i] = static_cast<uint8_t>(i);
  CHECK(crc32c::Value(buf, 32) == 0x46DD794Eu);
  CHECK(crc32c::ExtendPortable(0, buf, 32) == 0x46DD794Eu);
  for (int i = 0; i < 32; ++i) buf[i] = static_cast<uint8_t>(31 - i);
  CHECK(crc32c::Value(buf, 32) == 0x113FDB5Cu);
  CHECK(crc32c::ExtendPortable(0, buf, 32) == 0x113FDB5Cu);
  CHECK(crc32c::Value("123456789", 9) == 0xE3069283u);
  CHECK(crc32c::ExtendPortable(0, "123456789", 9) == 0xE3069283u);
  CHECK(crc32c::Value("", 0) == 0u);
  CHECK(crc32c::Extend(0x12345678u, "", 0) == 0x12345678u);
}

TEST_CASE("the hardware path is used on this CPU when it has SSE4.2") {
  // The CI machines have SSE4.2; if this fails on an old CPU, the portable path is what runs and
  // the equality tests below still hold.
#if defined(__x86_64__)
  CHECK(crc32c::HardwareAccelerated() == static_cast<bool>(__builtin_cpu_supports("sse4.2")));
#else
  CHECK_FALSE(crc32c::HardwareAccelerated());
#endif
}

std::vector<uint8_t> RandomBytes(std::mt19937_64& rng, size_t n) {
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

TEST_CASE("hardware == portable == bitwise on random lengths and alignments") {
  std::mt19937_64 rng(42);
  auto data = RandomBytes(rng, 3 * 8192 * 2 + 4096);
  // Every length up to 1100 (covers the 3 x 256 stripe threshold and all tails) at every
  // alignment mod 8, then random long lengths that exercise the 3 x 8192 stripes.
  for (size_t len = 0; len <= 1100; ++len) {
    for (size_t off = 0; off < 8; ++off) {
      const uint8_t* p = data.data() + off;
      uint32_t want = crc32c::ExtendPortable(0, p, len);
      if (crc32c::Extend(0, p, len) != want) {
        FAIL("len ", len, " off ", off);
      }
    }
  }
  for (int i = 0; i < 200; ++i) {
    size_t off = rng() % 64;
    size_t len = rng() % (data.size() - off);
    const uint8_t* p = data.data() + off;
    uint32_t want = BitwiseCrc32c(p, len);
    REQUIRE(crc32c::ExtendPortable(0, p, len) == want);
    REQUIRE(crc32c::Value(p, len) == want);
  }
  // Exactly at and around the stripe sizes.
  for (size_t len : {size_t{767}, size_t{768}, size_t{769}, size_t{3 * 8192 - 1}, size_t{3 * 8192},
                     size_t{3 * 8192 + 1}, size_t{6 * 8192}, size_t{6 * 8192 + 3 * 256 + 7}}) {
    CHECK(crc32c::Value(data.data() + 1, len) == BitwiseCrc32c(data.data() + 1, len));
  }
}

TEST_CASE("Extend over any split equals one pass, with any initial crc") {
  std::mt19937_64 rng(7);
  auto data = RandomBytes(rng, 70000);
  for (int i = 0; i < 300; ++i) {
    size_t len = rng() % data.size();
    size_t cut1 = len == 0 ? 0 : rng() % (len + 1);
    size_t cut2 = cut1 + (len == cut1 ? 0 : rng() % (len - cut1 + 1));
    uint32_t whole = crc32c::Value(data.data(), len);
    uint32_t c = crc32c::Extend(0, data.data(), cut1);
    c = crc32c::Extend(c, data.data() + cut1, cut2 - cut1);
    c = crc32c::Extend(c, data.data() + cut2, len - cut2);
    REQUIRE(c == whole);
    uint32_t p = crc32c::ExtendPortable(0, data.data(), cut1);
    p = crc32c::ExtendPortable(p, data.data() + cut1, len - cut1);
    REQUIRE(p == whole);
  }
}

TEST_CASE("Combine joins independently computed checksums") {
  std::mt19937_64 rng(99);
  auto data = RandomBytes(rng, 20000);
  for (size_t cut : {size_t{0}, size_t{1}, size_t{4096}, size_t{12345}, size_t{20000}}) {
    uint32_t a = crc32c::Value(data.data(), cut);
    uint32_t b = crc32c::Value(data.data() + cut, data.size() - cut);
    CHECK(crc32c::Combine(a, b, data.size() - cut) == crc32c::Value(data.data(), data.size()));
  }
  // Combining with an empty B is the identity.
  CHECK(crc32c::Combine(0xdeadbeef, 0, 0) == 0xdeadbeef);
}

TEST_CASE("a single flipped bit changes the checksum") {
  std::mt19937_64 rng(3);
  auto data = RandomBytes(rng, 4096);
  uint32_t base = crc32c::Value(data.data(), data.size());
  for (size_t bit = 0; bit < data.size() * 8; bit += 97) {
    data[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    REQUIRE(crc32c::Value(data.data(), data.size()) != base);
    data[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
  }
}

TEST_CASE("Concatenate joins equal-sized pieces' crcs into the crc of the whole") {
  std::vector<uint8_t> buf(4096 * 37);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<uint8_t>(i * 2654435761u >> 13);
  std::vector<uint32_t> crcs;
  for (size_t p = 0; p < 37; ++p) crcs.push_back(crc32c::Value(buf.data() + p * 4096, 4096));
  CHECK(crc32c::Concatenate(crcs.data(), crcs.size(), 4096) ==
        crc32c::Value(buf.data(), buf.size()));
  CHECK(crc32c::Concatenate(crcs.data(), 1, 4096) == crcs[0]);
  // Every prefix: pieces split into four quarters plus a tail of every length.
  for (size_t k = 0; k <= crcs.size(); ++k) {
    CAPTURE(k);
    CHECK(crc32c::Concatenate(crcs.data(), k, 4096) == crc32c::Value(buf.data(), k * 4096));
  }
  CHECK(crc32c::Concatenate(crcs.data(), 0, 4096) == 0);
  crcs[5] ^= 1;
  CHECK(crc32c::Concatenate(crcs.data(), crcs.size(), 4096) !=
        crc32c::Value(buf.data(), buf.size()));
  // Another piece length takes the table built at run time.
  std::vector<uint32_t> odd;
  for (size_t p = 0; p < 37 * 4; ++p) odd.push_back(crc32c::Value(buf.data() + p * 1024, 1024));
  CHECK(crc32c::Concatenate(odd.data(), odd.size(), 1024) ==
        crc32c::Value(buf.data(), buf.size()));
  CHECK(crc32c::Concatenate(odd.data(), 3, 1024) == crc32c::Value(buf.data(), 3 * 1024));
}

}  // namespace
}  // namespace procmig
