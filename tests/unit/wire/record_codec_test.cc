// record_codec: exact bytes of known records (golden values computed independently with a
// bit-by-bit crc32c), and the stateless validators.
#include "wire/record_codec.h"

#include <doctest/doctest.h>

#include <cstring>
#include <string>

#include "unit/wire/wire_test_util.h"

namespace procmig::wire {
namespace {

using testing::Bytes;

TEST_CASE("golden bytes: block_remove record") {
  auto w = StreamWriter::Create(testing::TestPreamble()).value();
  w->ClearBatch();  // drop the preamble
  REQUIRE(w->AddBlockRemove({7}).ok());
  Bytes got;
  testing::AppendBatch(*w, &got);
  const Bytes want = {0x02, 0x00, 0x00, 0x00,   // type 2, flags 0, reserved 0
                      0x04, 0x00, 0x00, 0x00,   // length 4
                      0x9a, 0x27, 0x9e, 0x71,   // crc32c(bytes 0..7 || payload)
                      0x07, 0x00, 0x00, 0x00};  // block id 7
  CHECK(got == want);
}

TEST_CASE("golden bytes: preamble") {
  const Bytes want = {0x89, 0x50, 0x4d, 0x49, 0x47, 0x0d, 0x0a, 0x1a,  // magic "\x89PMIG\r\n\x1a"
                      0x01, 0x00, 0x00, 0x00,  // version 1, forward, reserved
                      0x00, 0x10, 0x00, 0x00,  // page size 4096
                      0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // features xbzrle | zlib
                      0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,  // session id
                      0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf,  //
                      0x00, 0x00, 0x01, 0x00,                          // channel 0 of 1
                      0x46, 0xd4, 0x66, 0x6a};                         // crc32c of bytes 0..43
  CHECK(testing::PreambleBytes(testing::TestPreamble()) == want);
  Preamble p = DecodePreambleFields(want.data());
  CHECK(p.page_size == 4096);
  CHECK(p.features == 3);
  CHECK(p.channel_count == 1);
  CHECK(ValidatePreamble(p) == nullptr);
}

TEST_CASE("golden bytes: live page run of one zero page") {
  auto w = StreamWriter::Create(testing::TestPreamble()).value();
  w->ClearBatch();
  PageEntry zero{PageEncoding::kZero, 0, {}, false};
  REQUIRE(w->AddPageRun(1, 2, {&zero, 1}, true).ok());
  Bytes got;
  testing::AppendBatch(*w, &got);
  const Bytes want = {0x04, 0x01, 0x00, 0x00,                          // page_run, flags live
                      0x1c, 0x00, 0x00, 0x00,                          // length 28
                      0x78, 0xcb, 0xbe, 0x50,                          // crc
                      0x01, 0x00, 0x00, 0x00,                          // block 1
                      0x01, 0x00, 0x00, 0x00,                          // count 1
                      0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // first page 2
                      0x01, 0x00, 0x00, 0x00,                          // zero, reserved
                      0x00, 0x00, 0x00, 0x00,                          // encoded length 0
                      0x89, 0x41, 0xf9, 0x98};                         // crc of 4096 zeros
  CHECK(got == want);
  CHECK(ZeroPageCrc(4096) == 0x98f94189);
}

TEST_CASE("payload limits and flags per type") {
  PayloadLimits lim;
  CHECK_FALSE(LimitsFor(0, 4096, &lim));
  CHECK_FALSE(LimitsFor(10, 4096, &lim));  // the first free forward number
  CHECK_FALSE(LimitsFor(66, 4096, &lim));
  REQUIRE(LimitsFor(8, 4096, &lim));  // restore_check
  CHECK(lim.min == 1);
  CHECK(lim.max == (16u << 20));
  CHECK(AllowedFlags(RecordType::kRestoreCheck) == 0);
  CHECK_FALSE(TypeMatchesDirection(RecordType::kRestoreCheck, Direction::kReverse));
  {
    Ack a;
    const uint8_t five[16] = {5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0};
    CHECK(DecodeAck(five, &a) == nullptr);
    CHECK(a.kind == AckKind::kRestoreChecked);
    CHECK(a.sequence == 1);
    const uint8_t six[16] = {6};
    CHECK(std::string(DecodeAck(six, &a)) == "unknown ack kind");
  }
  REQUIRE(LimitsFor(4, 65536, &lim));
  CHECK(lim.max == 16 + 1024 * (12 + 65536));
  CHECK(lim.max <= kMaxRecordPayload);
  REQUIRE(LimitsFor(6, 4096, &lim));
  CHECK(lim.min == 1);
  CHECK(lim.max == (64u << 20));
  CHECK(AllowedFlags(RecordType::kBlockAdd) == 0);
  CHECK(AllowedFlags(RecordType::kPageRun) == kPageRunLive);
  CHECK(TypeMatchesDirection(RecordType::kEndOfStream, Direction::kReverse));
  CHECK_FALSE(TypeMatchesDirection(RecordType::kAck, Direction::kForward));
}

TEST_CASE("page entry rules") {
  const uint64_t all = kFeatureXbzrle | kFeatureZlib;
  CHECK(ValidatePageEntry(PageEncoding::kZero, 0, 4096, 0) == nullptr);
  CHECK(std::string(ValidatePageEntry(PageEncoding::kZero, 1, 4096, 0)) ==
        "zero page with a payload");
  CHECK(ValidatePageEntry(PageEncoding::kRaw, 4096, 4096, 0) == nullptr);
  CHECK(ValidatePageEntry(PageEncoding::kRaw, 4095, 4096, 0) != nullptr);
  CHECK(ValidatePageEntry(PageEncoding::kXbzrle, 4096, 4096, all) == nullptr);
  CHECK(ValidatePageEntry(PageEncoding::kXbzrle, 4097, 4096, all) != nullptr);
  CHECK(ValidatePageEntry(PageEncoding::kZlib, 0, 4096, all) != nullptr);
  CHECK(ValidatePageEntry(PageEncoding::kZlib, 1, 4096, kFeatureXbzrle) != nullptr);
  CHECK(ValidatePageEntry(static_cast<PageEncoding>(0), 0, 4096, all) != nullptr);
  CHECK(ValidatePageEntry(static_cast<PageEncoding>(5), 1, 4096, all) != nullptr);
}

TEST_CASE("block and error validators") {
  BlockAdd b{1, MakeBlockFlags(kBlockProtRead, BlockKind::kFilePrivate), 0x1000, 0x2000, 2, "x"};
  CHECK(ValidateBlockAdd(b, 4096) == nullptr);
  b.flags = 4u << kBlockKindShift;
  CHECK(std::string(ValidateBlockAdd(b, 4096)) == "unknown block kind");
  b.flags = 0;
  b.start = 0xfffffffffffff000ull;
  CHECK(std::string(ValidateBlockAdd(b, 4096)) == "range wraps past the end of the address space");
  b.start = 0x1000;
  b.name = std::string_view();
  CHECK(ValidateBlockAdd(b, 4096) != nullptr);
  std::string long_name(256, 'n');
  b.name = long_name;
  CHECK(ValidateBlockAdd(b, 4096) != nullptr);

  CHECK(ValidateError({2, "ok"}) == nullptr);
  CHECK(ValidateError({0, "ok"}) != nullptr);
  CHECK(ValidateError({17, "ok"}) != nullptr);
  CHECK(ValidateError({2, ""}) != nullptr);
  CHECK(ValidateError({2, "a\x01"}) != nullptr);
  CHECK(IsReadableText("heap@0x55d0c0a00000 \xc3\xa9"));
  CHECK_FALSE(IsReadableText("a\x7f"));
}

TEST_CASE("zero_run: fixed 16-byte payload, exact encoding, field checks") {
  PayloadLimits lim;
  REQUIRE(LimitsFor(9, 4096, &lim));
  CHECK(lim.min == 16);
  CHECK(lim.max == 16);
  CHECK(AllowedFlags(RecordType::kZeroRun) == 0);
  CHECK(TypeMatchesDirection(RecordType::kZeroRun, Direction::kForward));
  CHECK_FALSE(TypeMatchesDirection(RecordType::kZeroRun, Direction::kReverse));
  CHECK((kKnownRequiredFeatures & kFeatureZeroRun) == kFeatureZeroRun);
  CHECK(kFeatureZeroRun == 8);

  uint8_t out[kZeroRunSize];
  EncodeZeroRun({0x01020304, 0x0a0b0c0d, 0x1112131415161718ull}, out);
  const uint8_t want[16] = {0x04, 0x03, 0x02, 0x01, 0x0d, 0x0c, 0x0b, 0x0a,
                            0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11};
  CHECK(std::memcmp(out, want, sizeof want) == 0);
  ZeroRun z;
  REQUIRE(DecodeZeroRun(out, kFeatureZeroRun, &z) == nullptr);
  CHECK(z.block_id == 0x01020304);
  CHECK(z.count == 0x0a0b0c0d);
  CHECK(z.first_page == 0x1112131415161718ull);

  auto why = [](ZeroRun r, uint64_t features) {
    Reason w = ValidateZeroRun(r, features);
    return std::string(w == nullptr ? "ok" : w);
  };
  CHECK(why({1, 1, 0}, kFeatureZeroRun) == "ok");
  CHECK(why({1, UINT32_MAX, 0}, kFeatureZeroRun) == "ok");
  CHECK(why({1, 1, 0}, kFeatureXbzrle | kFeatureZlib) == "zero_run without the zero-run feature");
  CHECK(why({1, 0, 0}, kFeatureZeroRun) == "page count is zero");
  CHECK(why({0, 1, 0}, kFeatureZeroRun) == "block id 0 is invalid");
  CHECK(why({1, 2, UINT64_MAX}, kFeatureZeroRun) == "page range wraps");
  CHECK(std::string(DecodeZeroRun({out, 15}, kFeatureZeroRun, &z)) == "payload size");
}

TEST_CASE("names") {
  CHECK(std::string(RecordTypeName(RecordType::kZeroRun)) == "zero_run");
  CHECK(std::string(RecordTypeName(RecordType::kPageRun)) == "page_run");
  CHECK(std::string(RecordTypeName(static_cast<RecordType>(99))) == "unknown");
  CHECK(std::string(PageEncodingName(PageEncoding::kXbzrle)) == "xbzrle");
  CHECK(std::string(BlockKindName(BlockKind::kStack)) == "stack");
  CHECK(std::string(AckKindName(AckKind::kResumed)) == "resumed");
}

}  // namespace
}  // namespace procmig::wire
