#include "codec/zlib_codec.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace procmig {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Bytes v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// Compressible: text, small integers and zero runs.
Bytes Text(size_t n) {
  static const char kWords[] = "the quick brown fox jumps over the lazy dog 0123456789 ";
  Bytes v(n, 0);
  for (size_t i = 0; i < n; ++i) v[i] = (i / 512) % 3 == 0 ? 0 : kWords[i % (sizeof(kWords) - 1)];
  return v;
}

Bytes Compress(ZlibCompressor& c, const Bytes& in) {
  Bytes out(ZlibCompressor::MaxCompressedSize(in.size()));
  auto n = c.Compress(in.data(), in.size(), out.data(), out.size());
  REQUIRE_MESSAGE(n.ok(), n.status().ToString());
  out.resize(*n);
  return out;
}

std::unique_ptr<ZlibCompressor> Compressor(int level) {
  auto c = ZlibCompressor::Create(level);
  REQUIRE(c.ok());
  return *std::move(c);
}

std::unique_ptr<ZlibDecompressor> Decompressor() {
  auto d = ZlibDecompressor::Create();
  REQUIRE(d.ok());
  return *std::move(d);
}

TEST_CASE("levels outside 0..9 are rejected") {
  for (int level : {-1, 10}) {
    auto c = ZlibCompressor::Create(level);
    CHECK(c.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(c.status().message() ==
          "zlib compressor create: level " + std::to_string(level) + " is outside 0..9");
  }
}

TEST_CASE("round trips at every level, with the level in the zlib header") {
  auto d = Decompressor();
  // FLEVEL in the header's second byte: 0-1 -> 0x01, 2-5 -> 0x5e, 6 -> 0x9c, 7-9 -> 0xda.
  const std::vector<std::pair<int, uint8_t>> levels = {{0, 0x01}, {1, 0x01}, {6, 0x9c}, {9, 0xda}};
  for (auto [level, flg] : levels) {
    CAPTURE(level);
    auto c = Compressor(level);
    CHECK(c->level() == level);
    for (const Bytes& in : {RandomBytes(4096, 1), Text(4096), Bytes(4096, 0), Text(16 * 4096),
                            RandomBytes(1, 2), Bytes{}}) {
      Bytes z = Compress(*c, in);
      REQUIRE(z.size() >= 6);
      CHECK(z[0] == 0x78);
      CHECK(z[1] == flg);
      Bytes out(in.size() + 1);
      auto n = d->Decompress(z.data(), z.size(), out.data(), in.size());
      REQUIRE_MESSAGE(n.ok(), n.status().ToString());
      CHECK(*n == in.size());
      out.resize(*n);
      CHECK(out == in);
    }
  }
}

TEST_CASE("compression ratios are what zlib should give") {
  auto c = Compressor(6);
  CHECK(Compress(*c, Bytes(4096, 0)).size() < 30);
  CHECK(Compress(*c, Text(4096)).size() < 300);
  // Random data does not compress: stored blocks cost a few bytes over the input.
  CHECK(Compress(*c, RandomBytes(4096, 3)).size() > 4096);
  CHECK(Compress(*c, RandomBytes(4096, 3)).size() <= ZlibCompressor::MaxCompressedSize(4096));
}

TEST_CASE("a reused stream gives identical output for identical input") {
  auto c = Compressor(1);
  Bytes first = Compress(*c, Text(8192));
  Compress(*c, RandomBytes(4096, 4));
  CHECK(Compress(*c, Text(8192)) == first);
}

TEST_CASE("compress refuses an output buffer below the bound") {
  auto c = Compressor(1);
  Bytes in(4096, 0), out(ZlibCompressor::MaxCompressedSize(4096) - 1);
  auto n = c->Compress(in.data(), in.size(), out.data(), out.size());
  CHECK(n.status().code() == absl::StatusCode::kInvalidArgument);
}

absl::Status DecodeError(ZlibDecompressor& d, const Bytes& z, size_t cap) {
  Bytes out(cap);
  auto n = d.Decompress(z.data(), z.size(), out.data(), cap);
  REQUIRE_FALSE(n.ok());
  CHECK(n.status().code() == absl::StatusCode::kDataLoss);
  return n.status();
}

bool Contains(const absl::Status& s, const std::string& part) {
  return std::string(s.message()).find(part) != std::string::npos;
}

TEST_CASE("a zero bound with a null output buffer works (found by fuzz_zlib_decode)") {
  auto c = Compressor(6);
  auto d = Decompressor();
  Bytes empty = Compress(*c, Bytes{});
  auto n = d->Decompress(empty.data(), empty.size(), nullptr, 0);
  REQUIRE(n.ok());
  CHECK(*n == 0);
  Bytes one = Compress(*c, Bytes{1});
  CHECK(d->Decompress(one.data(), one.size(), nullptr, 0).status().message() ==
        "zlib decompress: stream decompresses to more than the bound of 0 bytes");
  Bytes junk = {0x00, 0x3b, 0x0a};
  CHECK(d->Decompress(junk.data(), junk.size(), nullptr, 0).status().code() ==
        absl::StatusCode::kDataLoss);
}

TEST_CASE("the decoder rejects each malformed input with DataLoss, and stays usable") {
  auto c = Compressor(6);
  auto d = Decompressor();
  const Bytes text = Text(4096);
  const Bytes z = Compress(*c, text);

  SUBCASE("more output than the bound") {
    absl::Status s = DecodeError(*d, z, 4095);
    CHECK(s.message() ==
          "zlib decompress: stream decompresses to more than the bound of 4095 bytes");
    // A zip bomb: 16 MiB of zeros in a few KiB, refused after 4 KiB of work.
    Bytes zeros(16 << 20, 0);
    Bytes bomb = Compress(*c, zeros);
    CHECK(bomb.size() < 20000);
    CHECK(Contains(DecodeError(*d, bomb, 4096), "more than the bound of 4096"));
  }
  SUBCASE("declared length differs from the actual") {
    Bytes out(8192);
    absl::Status s = d->DecompressExact(z.data(), z.size(), out.data(), 8192);
    CHECK(s.code() == absl::StatusCode::kDataLoss);
    CHECK(s.message() == "zlib decompress: stream holds 4096 bytes, the record declared 8192");
    CHECK(d->DecompressExact(z.data(), z.size(), out.data(), 4096).ok());
  }
  SUBCASE("truncated") {
    for (size_t keep : {size_t{0}, size_t{1}, size_t{2}, z.size() / 2, z.size() - 1}) {
      CAPTURE(keep);
      Bytes cut(z.begin(), z.begin() + static_cast<long>(keep));
      CHECK(Contains(DecodeError(*d, cut, 4096), "truncated stream"));
    }
  }
  SUBCASE("trailing bytes") {
    Bytes more = z;
    more.push_back(0);
    more.push_back(1);
    CHECK(DecodeError(*d, more, 4096).message() ==
          "zlib decompress: 2 trailing bytes after the end of the zlib stream");
  }
  SUBCASE("bad header") {
    Bytes bad = z;
    bad[1] ^= 0x01;  // FCHECK no longer makes the header a multiple of 31
    CHECK(DecodeError(*d, bad, 4096).message() ==
          "zlib decompress: corrupt stream: incorrect header check");
  }
  SUBCASE("checksum mismatch") {
    Bytes bad = z;
    bad[bad.size() - 1] ^= 0x01;
    CHECK(DecodeError(*d, bad, 4096).message() ==
          "zlib decompress: corrupt stream: incorrect data check");
  }
  SUBCASE("corrupt deflate data") {
    // Block type 3 is reserved: first deflate byte with BTYPE=11.
    Bytes bad = {0x78, 0x9c, 0x07, 0x00};
    CHECK(DecodeError(*d, bad, 4096).message() ==
          "zlib decompress: corrupt stream: invalid block type");
  }
  SUBCASE("preset dictionary") {
    Bytes dict = {0x78, 0x00, 0, 0, 0, 1, 0x03, 0x00};
    dict[1] = 0x20;  // FDICT
    dict[1] = static_cast<uint8_t>(dict[1] + (31 - (0x78 * 256 + dict[1]) % 31) % 31);
    CHECK(DecodeError(*d, dict, 4096).message() ==
          "zlib decompress: stream needs a preset dictionary");
  }
  // After any failure the same decompressor decodes a good stream.
  Bytes out(4096);
  CHECK(d->DecompressExact(z.data(), z.size(), out.data(), 4096).ok());
  CHECK(out == text);
}

TEST_CASE("random bit flips never decode to wrong data") {
  auto c = Compressor(1);
  auto d = Decompressor();
  const Bytes text = Text(4096);
  const Bytes z = Compress(*c, text);
  std::mt19937_64 rng(5);
  int errors = 0;
  for (int k = 0; k < 2000; ++k) {
    Bytes bad = z;
    bad[rng() % bad.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
    Bytes out(4096);
    absl::Status s = d->DecompressExact(bad.data(), bad.size(), out.data(), 4096);
    if (!s.ok()) {
      CHECK(s.code() == absl::StatusCode::kDataLoss);
      ++errors;
    } else if (out != text) {
      // A flip in padding bits is harmless; one that changes the data must fail the Adler-32.
      FAIL_CHECK("flip " << k << " decoded to different bytes without an error");
    }
  }
  CHECK(errors > 1800);
}

}  // namespace
}  // namespace procmig
