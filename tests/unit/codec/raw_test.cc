#include "codec/raw.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace procmig {
namespace {

std::vector<uint8_t> Pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7);
  return v;
}

TEST_CASE("raw encode copies the page and reports its size") {
  auto page = Pattern(4096, 3);
  std::vector<uint8_t> out(5000, 0xee);
  auto n = raw::Encode(page.data(), page.size(), out.data(), out.size());
  REQUIRE(n.ok());
  CHECK(*n == 4096);
  CHECK(std::equal(page.begin(), page.end(), out.begin()));
  CHECK(out[4096] == 0xee);
}

TEST_CASE("raw encode refuses an output buffer smaller than the page") {
  auto page = Pattern(4096, 3);
  std::vector<uint8_t> out(4095);
  auto n = raw::Encode(page.data(), page.size(), out.data(), out.size());
  CHECK(n.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(n.status().message()).find("4095") != std::string::npos);
}

TEST_CASE("raw decode accepts exactly one page and rejects any other length untouched") {
  auto payload = Pattern(4096, 9);
  std::vector<uint8_t> page(4096, 0x55);
  REQUIRE(raw::Decode(payload.data(), payload.size(), page.data(), page.size()).ok());
  CHECK(page == payload);

  for (size_t len : {size_t{0}, size_t{4095}, size_t{4097}}) {
    std::vector<uint8_t> p(len, 1);
    std::vector<uint8_t> dst(4096, 0x55);
    absl::Status s = raw::Decode(p.data(), len, dst.data(), dst.size());
    CHECK(s.code() == absl::StatusCode::kDataLoss);
    CHECK(s.message() ==
          "raw decode: payload of " + std::to_string(len) + " bytes, expected page size 4096");
    CHECK(dst == std::vector<uint8_t>(4096, 0x55));
  }
}

}  // namespace
}  // namespace procmig
