#include "migration/image_manifest.h"

#include <doctest/doctest.h>

#include <string>

namespace procmig {
namespace {

ImageManifest Sample() {
  ImageManifest m;
  m.page_size = 4096;
  for (int i = 0; i < 16; ++i) m.session_id[i] = static_cast<uint8_t>(i);
  m.channels = 2;
  m.iterations = 5;
  m.process_state_length = 1234;
  m.process_state_crc32c = 0xdeadbeef;
  m.stats = {10, 2, 6, 1, 1, 0, 99999, 42};
  ImageBlock b;
  b.id = 3;
  b.flags = 0x103;
  b.start = 0x7f0000001000;
  b.length = 8192;
  b.stored_pages = 1;
  b.crc32c = 0x0000abcd;
  b.digest = DigestState::kOk;
  b.sent_digest = "crc32c:0000abcd/8192";
  b.name = "[heap] 50%=x";
  m.blocks.push_back(b);
  return m;
}

constexpr char kSampleText[] =
    "procmig-image 1\n"
    "page_size 4096\n"
    "session 000102030405060708090a0b0c0d0e0f\n"
    "channels 2\n"
    "iterations 5\n"
    "process_state 1234 crc32c=0xdeadbeef\n"
    "stats pages=10 zero_pages=2 raw_pages=6 xbzrle_pages=1 zlib_pages=1 torn_pages=0 "
    "bytes=99999 duration_ms=42\n"
    "block 3 start=0x7f0000001000 length=8192 flags=0x103 stored_pages=1 crc32c=0x0000abcd "
    "digest=ok sent=crc32c:0000abcd/8192 name=[heap]%2050%25%3Dx\n"
    "end\n";

TEST_CASE("manifest text is exact and round-trips") {
  CHECK(EncodeManifest(Sample()) == kSampleText);
  auto m = ParseManifest(kSampleText);
  REQUIRE(m.ok());
  CHECK(*m == Sample());
  CHECK(Sample().blocks[0].FileName() == "block-3.bin");
  CHECK(SessionIdHex(Sample().session_id) == "000102030405060708090a0b0c0d0e0f");
}

TEST_CASE("malformed manifests are DataLoss naming the line") {
  std::string t = kSampleText;
  auto bad = [](const std::string& text) { return ParseManifest(text).status(); };
  CHECK(bad("").code() == absl::StatusCode::kDataLoss);
  CHECK(bad(t.substr(0, t.size() - 1)).message() ==
        "parse image manifest: does not end with a newline (truncated?)");
  CHECK(bad(t.substr(0, t.size() - 4)).message() ==
        "parse image manifest: no 'end' line (truncated?)");
  std::string v2 = t;
  v2.replace(0, 15, "procmig-image 2");
  CHECK(bad(v2).message() ==
        "parse image manifest line 1: unsupported image version '2' (this build reads 1)");
  std::string extra = t + "x\n";
  CHECK(bad(extra).message() == "parse image manifest line 10: text after 'end'");
  std::string unknown = t;
  unknown.insert(unknown.find("end\n"), "color blue\n");
  CHECK(bad(unknown).message() == "parse image manifest line 9: unexpected 'color blue'");
  std::string len = t;
  len.replace(len.find("length=8192"), 11, "length=8191");
  CHECK(bad(len).message() == "parse image manifest line 8: malformed block line");
  std::string twice = t;
  size_t b = twice.find("block 3");
  twice.insert(b, twice.substr(b, twice.find('\n', b) - b + 1));
  CHECK(bad(twice).message() == "parse image manifest line 9: block 3 listed twice");
  std::string missing = t;
  missing.erase(missing.find("channels 2\n"), 11);
  CHECK(bad(missing).message() == "parse image manifest: a required line is missing");
  std::string pct = t;
  pct.replace(pct.find("%2050"), 5, "%2");
  CHECK(bad(pct).code() == absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace procmig
