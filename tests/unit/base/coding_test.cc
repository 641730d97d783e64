#include "base/coding.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <string>

namespace procmig {
namespace {

TEST_CASE("fixed-width fields are little-endian") {
  std::string s;
  ByteWriter w(&s);
  w.U8(0x01);
  w.U16(0x0302);
  w.U32(0x07060504);
  w.U64(0x0f0e0d0c0b0a0908ull);
  REQUIRE(s.size() == 15);
  for (size_t i = 0; i < s.size(); ++i) CHECK(static_cast<uint8_t>(s[i]) == i + 1);

  ByteReader r(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  CHECK(r.U8() == 0x01);
  CHECK(r.U16() == 0x0302);
  CHECK(r.U32() == 0x07060504);
  CHECK(r.U64() == 0x0f0e0d0c0b0a0908ull);
  CHECK(r.AtEnd());
}

TEST_CASE("reader fails sticky on overrun and never reads past the span") {
  const uint8_t buf[3] = {1, 2, 3};
  ByteReader r(buf, 3);
  CHECK(r.U16() == 0x0201);
  CHECK(r.U32() == 0);
  CHECK_FALSE(r.ok());
  CHECK(r.U8() == 0);  // still failed, even though one byte remains
  CHECK(r.remaining() == 0);
}

TEST_CASE("string lengths are bounded before use") {
  std::string s;
  ByteWriter w(&s);
  w.String("hello");
  ByteReader ok(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  CHECK(ok.String(5) == "hello");
  ByteReader too_long(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  CHECK(too_long.String(4).empty());
  CHECK_FALSE(too_long.ok());
  // A length that claims more than the buffer holds.
  s[0] = 100;
  ByteReader lies(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  CHECK(lies.String(1000).empty());
  CHECK_FALSE(lies.ok());
}

TEST_CASE("uleb128 round-trips and rejects truncated or overlong input") {
  uint8_t buf[10];
  for (uint64_t v : {uint64_t{0}, uint64_t{1}, uint64_t{127}, uint64_t{128}, uint64_t{4096},
                     uint64_t{1} << 35, std::numeric_limits<uint64_t>::max()}) {
    size_t n = EncodeUleb128(buf, sizeof buf, v);
    REQUIRE(n > 0);
    uint64_t back = 0;
    CHECK(DecodeUleb128(buf, n, &back) == n);
    CHECK(back == v);
    if (n > 1) CHECK(DecodeUleb128(buf, n - 1, &back) == 0);
  }
  CHECK(EncodeUleb128(buf, 1, 128) == 0);
  const uint8_t overflow[10] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
  uint64_t v = 0;
  CHECK(DecodeUleb128(overflow, 10, &v) == 0);
  const uint8_t two[2] = {0x80, 0x01};
  CHECK(DecodeUleb128(two, 2, &v, 1) == 0);  // longer than the caller allows
  CHECK(DecodeUleb128(two, 2, &v, 2) == 2);
  CHECK(v == 128);
}

}  // namespace
}  // namespace procmig
