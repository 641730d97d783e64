// StreamReader on every malformed form: truncation at every byte, 1-byte feeding, oversized
// lengths (no allocation), wrong crcs, order violations, unknown types/flags, reserved bits,
// bad preambles, and the three stream modes.
#include "wire/stream_reader.h"

#include <doctest/doctest.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/crc32c.h"
#include "unit/wire/wire_test_util.h"

namespace procmig::wire {
namespace {

using testing::AppendRecord;
using testing::Bytes;
using testing::Contains;
using testing::PreambleBytes;
using testing::ReadAll;
using testing::ReadResult;
using testing::SamplePages;
using testing::TestPreamble;

Bytes BlockAddPayload(uint32_t id, uint64_t start, uint64_t pages, std::string_view name = "b") {
  BlockAdd b{id, 3, start, pages * 4096, pages, name};
  Bytes p(BlockAddSize(b));
  EncodeBlockAdd(b, p.data());
  return p;
}

Bytes RawRunPayload(uint32_t block, uint64_t first, uint8_t fill) {
  Bytes page(4096, fill);
  PageEntry e{PageEncoding::kRaw, 0, page, false};
  Bytes p(PageRunMetaSize(1));
  EncodePageRunMeta(block, first, {&e, 1}, ZeroPageCrc(4096), p.data());
  p.insert(p.end(), page.begin(), page.end());
  return p;
}

void AppendRun(Bytes* s, uint32_t block, uint64_t first, uint8_t flags = 0) {
  AppendRecord(s, 4, flags, 0, RawRunPayload(block, first, 0x5a), PageRunMetaSize(1));
}

Bytes EndPayload(uint64_t records, uint64_t pages) {
  Bytes p(16);
  EncodeEndOfStream({records, pages, false}, p.data());
  return p;
}

Bytes IterationPayload(uint64_t n) {
  Bytes p(kIterationSize);
  EncodeIteration({n, 0, 0, 0, 0, 0, false}, p.data());
  return p;
}

// A stream that starts with a valid preamble and block 1 (pages 0..3 at 0x10000).
Bytes Start(const Preamble& pre = TestPreamble()) {
  Bytes s = PreambleBytes(pre);
  AppendRecord(&s, 1, 0, 0, BlockAddPayload(1, 0x10000, 4));
  return s;
}
constexpr size_t kAfterStart = 48 + 12 + 33;

absl::Status ReadError(const Bytes& s) {
  ReadResult r = ReadAll(s);
  return r.status;
}

void ExpectLoss(const Bytes& s, const std::string& message) {
  absl::Status st = ReadError(s);
  CHECK(st.code() == absl::StatusCode::kDataLoss);
  CHECK_MESSAGE(st.message() == message, st.ToString());
}

TEST_CASE("valid stream in any piece size, down to one byte") {
  SamplePages pages;
  Bytes s = testing::SampleStream(pages);
  ReadResult whole = ReadAll(s);
  REQUIRE(whole.status.ok());
  REQUIRE(whole.types.size() == 11);
  for (size_t chunk : {1, 2, 3, 7, 12, 13, 100, 4095, 4097}) {
    ReadResult r = ReadAll(s, chunk);
    CHECK_MESSAGE(r.status.ok(), chunk, r.status.ToString());
    CHECK(r.types == whole.types);
  }
}

TEST_CASE("truncated at every byte position: need more, then an error at the end") {
  SamplePages pages;
  Bytes s = testing::SampleStream(pages);
  ReadResult whole = ReadAll(s);
  // Record end offsets, to know how many complete records each prefix holds.
  std::vector<size_t> ends;
  {
    StreamReader r;
    REQUIRE(r.Feed(s).ok());
    while (true) {
      auto rec = r.Next();
      REQUIRE(rec.ok());
      if (*rec == nullptr) break;
      ends.push_back(r.offset());
    }
  }
  for (size_t n = 0; n < s.size(); ++n) {
    ReadResult r = ReadAll(std::span<const uint8_t>(s).first(n));
    size_t complete = std::upper_bound(ends.begin(), ends.end(), n) - ends.begin();
    CHECK(r.types.size() == complete);
    CHECK(r.status.code() == absl::StatusCode::kDataLoss);
    CHECK(Contains(r.status, absl::StrCat("stream truncated at offset ", n)));
  }
  // The same cuts with the stream arriving in small pieces (records assembled in the buffer).
  for (size_t n = 0; n < s.size(); n += 61) {
    for (size_t chunk : {1, 5}) {
      ReadResult r = ReadAll(std::span<const uint8_t>(s).first(n), chunk);
      size_t complete = std::upper_bound(ends.begin(), ends.end(), n) - ends.begin();
      CHECK(r.types.size() == complete);
      CHECK_MESSAGE(Contains(r.status, absl::StrCat("stream truncated at offset ", n, ":")),
                    r.status.ToString());
    }
  }
  CHECK(ReadAll(std::span<const uint8_t>(s).first(104), 1).status.message() ==
        "stream truncated at offset 104: no end_of_stream record");
  CHECK(ReadAll(std::span<const uint8_t>(s).first(10)).status.message() ==
        "stream truncated at offset 10: preamble incomplete (10 of 48 bytes)");
  CHECK(ReadAll(std::span<const uint8_t>(s).first(50)).status.message() ==
        "stream truncated at offset 50: record at offset 48 incomplete (2 of 12 bytes)");
  CHECK(ReadAll(std::span<const uint8_t>(s).first(70)).status.message() ==
        "stream truncated at offset 70: record at offset 48 incomplete (22 of 56 bytes)");
  CHECK(ReadAll(std::span<const uint8_t>(s).first(104)).status.message() ==
        "stream truncated at offset 104: no end_of_stream record");
}

TEST_CASE("oversized lengths are refused from the header alone, before any allocation") {
  Bytes s = PreambleBytes(TestPreamble());
  uint8_t h[kRecordHeaderSize];
  EncodeRecordHeader({4, 0, 0, 0xffffffffu, 0}, h);  // a 4 GiB page run
  s.insert(s.end(), h, h + sizeof(h));
  StreamReader r;
  REQUIRE(r.Feed(s).ok());
  REQUIRE(r.Next().ok());  // preamble
  auto rec = r.Next();
  CHECK(rec.status().code() == absl::StatusCode::kDataLoss);
  CHECK(rec.status().message() ==
        "record at offset 48 (page_run): length 4294967295 outside [28, 4206608]");
  CHECK(r.buffer_capacity() == 0);  // everything was parsed in place

  // The same, fed one byte at a time: only the header was ever buffered.
  StreamReader r1;
  absl::Status st;
  for (uint8_t b : s) {
    REQUIRE(r1.Feed({&b, 1}).ok());
    while (true) {
      auto x = r1.Next();
      if (!x.ok()) {
        st = x.status();
        break;
      }
      if (*x == nullptr) break;
    }
  }
  CHECK(st.code() == absl::StatusCode::kDataLoss);
  CHECK(r1.buffer_capacity() <= kPreambleSize);

  Bytes big = PreambleBytes(TestPreamble());
  EncodeRecordHeader({6, 0, 0, (64u << 20) + 1, 0}, h);
  big.insert(big.end(), h, h + sizeof(h));
  ExpectLoss(big, "record at offset 48 (process_state): length 67108865 outside [1, 67108864]");
}

TEST_CASE("a large declared record buffers only what has arrived") {
  Bytes s = PreambleBytes(TestPreamble());
  uint8_t h[kRecordHeaderSize];
  EncodeRecordHeader({6, 0, 0, 64u << 20, 0}, h);  // 64 MiB of process state, 100 bytes sent
  s.insert(s.end(), h, h + sizeof(h));
  s.resize(s.size() + 100, 0xab);
  StreamReader r;
  for (size_t pos = 0; pos < s.size(); pos += 10) {
    REQUIRE(r.Feed(std::span<const uint8_t>(s).subspan(pos, 10)).ok());
    while (true) {
      auto x = r.Next();
      REQUIRE(x.ok());
      if (*x == nullptr) break;
    }
  }
  CHECK(r.buffer_capacity() <= 256);
  CHECK(r.Finish().message() ==
        "stream truncated at offset 160: record at offset 48 incomplete (112 of 67108876 bytes)");
}

TEST_CASE("a big record assembled from pieces does not keep its buffer") {
  Bytes s = PreambleBytes(TestPreamble());
  AppendRecord(&s, 6, 0, 0, Bytes(9u << 20, 0x42));  // 9 MiB of process state
  AppendRecord(&s, 7, 0, 0, EndPayload(1, 0));
  StreamReader r;
  size_t max_capacity = 0;
  for (size_t pos = 0; pos < s.size(); pos += 1 << 20) {
    REQUIRE(
        r.Feed(std::span<const uint8_t>(s).subspan(pos, std::min<size_t>(1 << 20, s.size() - pos)))
            .ok());
    while (true) {
      auto x = r.Next();
      REQUIRE(x.ok());
      max_capacity = std::max(max_capacity, r.buffer_capacity());
      if (*x == nullptr) break;
      if ((*x)->type == RecordType::kProcessState) {
        CHECK(std::get<ProcessState>((*x)->body).data.size() == 9u << 20);
        CHECK(std::get<ProcessState>((*x)->body).data.back() == 0x42);
      }
    }
  }
  CHECK(r.Finish().ok());
  CHECK(max_capacity == kRecordHeaderSize + (9u << 20));
  CHECK(r.buffer_capacity() == 0);
}

TEST_CASE("crc mismatches name the record and both values") {
  Bytes s = Start();
  s[48 + 12 + 8] ^= 0x01;  // start address of the block_add
  absl::Status st = ReadError(s);
  CHECK(st.code() == absl::StatusCode::kDataLoss);
  CHECK(Contains(st, "record at offset 48 (block_add): crc mismatch (stored 0x"));
  CHECK(Contains(st, ", computed 0x"));

  Bytes pre = Start();
  pre[20] ^= 0x80;  // feature bits
  CHECK(Contains(ReadError(pre), "preamble at offset 0: crc mismatch (stored 0x"));

  // A page run's descriptors are under the record crc; its page data under the page crc.
  Bytes run = Start();
  AppendRun(&run, 1, 0);
  Bytes desc = run;
  desc[kAfterStart + 12 + 16 + 8] ^= 1;  // the page_crc field of descriptor 0
  CHECK(Contains(ReadError(desc), "record at offset 93 (page_run): crc mismatch"));
  Bytes data = run;
  data[kAfterStart + 12 + 28 + 100] ^= 1;
  ExpectLoss(data, "record at offset 93 (page_run): page 0: raw page crc mismatch");
  // In a live run the same damage is a torn page: dropped, and fatal only if never resent.
  Bytes live = Start();
  AppendRun(&live, 1, 0, kPageRunLive);
  live[kAfterStart + 12 + 28 + 100] ^= 1;
  Bytes resent = live;
  AppendRecord(&live, 7, 0, 0, EndPayload(2, 1));
  ExpectLoss(live,
             "record at offset 4229 (end_of_stream): 1 torn page(s) never resent (e.g. block 1 "
             "page 0, torn in record at offset 93)");
  AppendRun(&resent, 1, 0);
  AppendRecord(&resent, 7, 0, 0, EndPayload(3, 2));
  CHECK(ReadError(resent).ok());
  // A reader of one channel of several (track_torn off) reports the torn page but leaves the
  // resend to whoever reads every channel: the same stream ends fine.
  ReaderOptions one_of_several;
  one_of_several.track_torn = false;
  StreamReader multi(one_of_several);
  REQUIRE(multi.Feed(live).ok());
  uint32_t torn = 0;
  for (;;) {
    auto x = multi.Next();
    REQUIRE(x.ok());
    if (*x == nullptr) break;
    if ((*x)->type == RecordType::kPageRun) torn += (*x)->torn_pages;
  }
  CHECK(torn == 1);
  CHECK(multi.ended());
  CHECK(multi.Finish().ok());
}

TEST_CASE("records out of order") {
  Bytes pages_first = PreambleBytes(TestPreamble());
  AppendRun(&pages_first, 1, 0);
  ExpectLoss(pages_first, "record at offset 48 (page_run): page run for a block that is not live");

  Bytes past_end = Start();
  AppendRun(&past_end, 1, 4);
  ExpectLoss(past_end, "record at offset 93 (page_run): page run past the end of its block");

  Bytes after_end = Start();
  AppendRecord(&after_end, 7, 0, 0, EndPayload(1, 0));
  after_end.push_back(0x01);
  ExpectLoss(after_end, "record at offset 121: data after end_of_stream");

  Bytes second_preamble = Start();
  Bytes again = PreambleBytes(TestPreamble());
  second_preamble.insert(second_preamble.end(), again.begin(), again.end());
  ExpectLoss(second_preamble, "record at offset 93: unknown record type 137");

  Bytes same_id = Start();
  AppendRecord(&same_id, 1, 0, 0, BlockAddPayload(1, 0x80000, 1));
  ExpectLoss(same_id, "record at offset 93 (block_add): block id not above every id added before");

  Bytes overlap = Start();
  AppendRecord(&overlap, 1, 0, 0, BlockAddPayload(2, 0x13000, 2));
  ExpectLoss(overlap, "record at offset 93 (block_add): range overlaps a live block");

  Bytes remove_unknown = Start();
  Bytes rm(4);
  EncodeBlockRemove({9}, rm.data());
  AppendRecord(&remove_unknown, 2, 0, 0, rm);
  ExpectLoss(remove_unknown, "record at offset 93 (block_remove): block is not live");

  Bytes run_after_remove = Start();
  EncodeBlockRemove({1}, rm.data());
  AppendRecord(&run_after_remove, 2, 0, 0, rm);
  AppendRun(&run_after_remove, 1, 0);
  ExpectLoss(run_after_remove,
             "record at offset 109 (page_run): page run for a block that is not live");

  Bytes resize_unknown = Start();
  Bytes rs(kBlockResizeSize);
  EncodeBlockResize({5, 4096, 1}, rs.data());
  AppendRecord(&resize_unknown, 3, 0, 0, rs);
  ExpectLoss(resize_unknown, "record at offset 93 (block_resize): block is not live");

  Bytes resize_into = Start();
  AppendRecord(&resize_into, 1, 0, 0, BlockAddPayload(2, 0x20000, 1));
  EncodeBlockResize({1, 0x20000, 32}, rs.data());
  AppendRecord(&resize_into, 3, 0, 0, rs);
  ExpectLoss(resize_into,
             "record at offset 138 (block_resize): resized range overlaps a live block");

  Bytes shrink = Start();
  EncodeBlockResize({1, 4096, 1}, rs.data());
  AppendRecord(&shrink, 3, 0, 0, rs);
  AppendRun(&shrink, 1, 1);
  ExpectLoss(shrink, "record at offset 129 (page_run): page run past the end of its block");

  Bytes iteration_gap = Start();
  AppendRecord(&iteration_gap, 5, 0, 0, IterationPayload(1));
  ExpectLoss(iteration_gap,
             "record at offset 93 (iteration): iteration 1 out of order (expected 0)");

  Bytes after_final = Start();
  AppendRecord(&after_final, 5, kIterationFinal, 0, IterationPayload(0));
  AppendRun(&after_final, 1, 0);
  ExpectLoss(after_final, "record at offset 153 (page_run): record after the final iteration");

  Bytes after_state = Start();
  AppendRecord(&after_state, 6, 0, 0, Bytes{1, 2, 3});
  AppendRecord(&after_state, 6, 0, 0, Bytes{1, 2, 3});
  ExpectLoss(after_state, "record at offset 108 (process_state): record after process_state");

  Bytes counts = Start();
  AppendRecord(&counts, 7, 0, 0, EndPayload(2, 0));
  ExpectLoss(counts,
             "record at offset 93 (end_of_stream): counts do not match the stream (says 2 "
             "records and 0 pages, read 1 and 0)");
}

TEST_CASE("unknown types, reserved bits, unknown flags, malformed payloads") {
  Bytes unknown = Start();
  AppendRecord(&unknown, 10, 0, 0, Bytes(8, 0));
  ExpectLoss(unknown, "record at offset 93: unknown record type 10");

  Bytes zero_type = Start();
  AppendRecord(&zero_type, 0, 0, 0, Bytes(8, 0));
  ExpectLoss(zero_type, "record at offset 93: unknown record type 0");

  Bytes reserved = Start();
  AppendRecord(&reserved, 5, 0, 0x0100, IterationPayload(0));
  ExpectLoss(reserved, "record at offset 93 (iteration): reserved header bits set (0x0100)");

  Bytes flags = Start();
  AppendRecord(&flags, 5, 0x03, 0, IterationPayload(0));
  ExpectLoss(flags, "record at offset 93 (iteration): unknown flags 0x02");

  Bytes block_flags = Start();
  AppendRun(&block_flags, 1, 0, 0x80);
  ExpectLoss(block_flags, "record at offset 93 (page_run): unknown flags 0x80");

  Bytes short_len = Start();
  AppendRecord(&short_len, 5, 0, 0, Bytes(47, 0));
  ExpectLoss(short_len, "record at offset 93 (iteration): length 47 outside [48, 48]");

  Bytes bad_encoding = Start();
  Bytes run = RawRunPayload(1, 0, 1);
  run[16] = 9;
  AppendRecord(&bad_encoding, 4, 0, 0, run, PageRunMetaSize(1));
  ExpectLoss(bad_encoding, "record at offset 93 (page_run): page 0: unknown page encoding");

  Bytes desc_reserved = Start();
  run = RawRunPayload(1, 0, 1);
  run[18] = 1;
  AppendRecord(&desc_reserved, 4, 0, 0, run, PageRunMetaSize(1));
  ExpectLoss(desc_reserved,
             "record at offset 93 (page_run): page 0: descriptor reserved bytes are not zero");

  Bytes extra = Start();
  run = RawRunPayload(1, 0, 1);
  run.push_back(0);
  AppendRecord(&extra, 4, 0, 0, run, PageRunMetaSize(1));
  ExpectLoss(extra, "record at offset 93 (page_run): record longer than its pages");

  Bytes too_many = Start();
  run = RawRunPayload(1, 0, 1);
  EncodeFixed32(run.data() + 4, 1025);
  AppendRecord(&too_many, 4, 0, 0, run, PageRunMetaSize(1));
  CHECK(ReadError(too_many).code() == absl::StatusCode::kDataLoss);

  auto no_xbzrle = TestPreamble();
  no_xbzrle.features = 0;
  Bytes feature = Start(no_xbzrle);
  run = RawRunPayload(1, 0, 1);
  run[16] = 3;  // xbzrle, length 4096 is fine for it; the feature is missing
  AppendRecord(&feature, 4, 0, 0, run, PageRunMetaSize(1));
  ExpectLoss(feature,
             "record at offset 93 (page_run): page 0: xbzrle page without the xbzrle feature");

  Bytes control_name = PreambleBytes(TestPreamble());
  AppendRecord(&control_name, 1, 0, 0, BlockAddPayload(1, 0x10000, 1, "a\tb"));
  ExpectLoss(control_name, "record at offset 48 (block_add): name holds control characters");
}

TEST_CASE("bad preambles") {
  Bytes http = {'G', 'E', 'T', ' ', '/'};
  StreamReader r;
  REQUIRE(r.Feed(std::span<const uint8_t>(http).first(1)).ok());
  CHECK(r.Next().status().message() == "preamble at offset 0: bad magic (not a procmig stream)");

  auto with = [](auto mutate) {
    Preamble p = TestPreamble();
    mutate(p);
    return PreambleBytes(p);  // a correct crc, so the field check itself is exercised
  };
  ExpectLoss(with([](Preamble& p) { p.version = 2; }),
             "preamble at offset 0: unsupported version 2 (this reader reads 1)");
  ExpectLoss(with([](Preamble& p) { p.page_size = 8192 + 4096; }),
             "preamble at offset 0: page size is not a power of two in [4096, 65536]");
  ExpectLoss(with([](Preamble& p) { p.features |= 1ull << 7; }),
             "preamble at offset 0: unknown required feature bits");
  ExpectLoss(with([](Preamble& p) { p.session_id = {}; }),
             "preamble at offset 0: session id is all zero");
  ExpectLoss(with([](Preamble& p) { p.channel_index = 2; }),
             "preamble at offset 0: channel index is not below channel count");
  ExpectLoss(with([](Preamble& p) { p.channel_count = 2; }),
             "preamble at offset 0: several channels without the multi-channel feature");
  ExpectLoss(with([](Preamble& p) { p.direction = static_cast<Direction>(2); }),
             "preamble at offset 0: unknown direction");
  // Unknown optional feature bits are ignored.
  Bytes optional = with([](Preamble& p) { p.features |= 1ull << 40; });
  AppendRecord(&optional, 7, 0, 0, EndPayload(0, 0));
  CHECK(ReadError(optional).ok());
  Bytes reserved = PreambleBytes(TestPreamble());
  reserved[11] = 1;
  EncodeFixed32(reserved.data() + 44, crc32c::Value(reserved.data(), 44));
  ExpectLoss(reserved, "preamble at offset 0: reserved byte is not zero");
}

TEST_CASE("modes: secondary channels carry pages only; reverse channels acks and errors") {
  Bytes secondary = PreambleBytes(TestPreamble(Direction::kForward, 1, 4));
  AppendRun(&secondary, 77, 123456);  // block checks are the receiver's (BlockTable::CheckRun)
  AppendRecord(&secondary, 5, 0, 0, IterationPayload(0));
  AppendRecord(&secondary, 7, 0, 0, EndPayload(2, 1));
  CHECK(ReadError(secondary).ok());
  Bytes secondary_block = PreambleBytes(TestPreamble(Direction::kForward, 1, 4));
  AppendRecord(&secondary_block, 1, 0, 0, BlockAddPayload(1, 0, 1));
  ExpectLoss(secondary_block,
             "record at offset 48 (block_add): type not allowed on a secondary (pages only) "
             "channel");

  Bytes reverse = PreambleBytes(TestPreamble(Direction::kReverse));
  Bytes ack(kAckSize);
  EncodeAck({AckKind::kEndOfStream, 3}, ack.data());
  AppendRecord(&reverse, 64, 0, 0, ack);
  Bytes copy = reverse;
  AppendRecord(&copy, 5, 0, 0, IterationPayload(0));
  ExpectLoss(copy, "record at offset 76 (iteration): type not allowed on a reverse channel");
  Bytes forward_ack = Start();
  AppendRecord(&forward_ack, 64, 0, 0, ack);
  ExpectLoss(forward_ack, "record at offset 93 (ack): type not allowed on the main channel");
  Bytes bad_ack = PreambleBytes(TestPreamble(Direction::kReverse));
  EncodeFixed32(ack.data(), 9);
  AppendRecord(&bad_ack, 64, 0, 0, ack);
  ExpectLoss(bad_ack, "record at offset 48 (ack): unknown ack kind");

  ReaderOptions want_forward;
  want_forward.direction = Direction::kForward;
  CHECK(ReadAll(reverse, SIZE_MAX, want_forward).status.message() ==
        "preamble at offset 0: stream direction is not the expected one");
}

TEST_CASE("feeding before the input is consumed is a caller error; errors are sticky") {
  SamplePages pages;
  Bytes s = testing::SampleStream(pages);
  StreamReader r;
  REQUIRE(r.Feed(s).ok());
  REQUIRE(r.Next().ok());
  CHECK(r.Feed(s).code() == absl::StatusCode::kFailedPrecondition);

  Bytes bad = Start();
  bad[60] ^= 1;
  StreamReader r2;
  REQUIRE(r2.Feed(bad).ok());
  REQUIRE(r2.Next().ok());
  absl::Status first = r2.Next().status();
  CHECK(first.code() == absl::StatusCode::kDataLoss);
  CHECK(r2.Next().status() == first);
  CHECK(r2.Finish() == first);
  CHECK(r2.Feed(s) == first);
}

TEST_CASE("the main channel's block table follows the stream") {
  SamplePages pages;
  Bytes s = testing::SampleStream(pages);
  StreamReader r;
  REQUIRE(r.Feed(s).ok());
  while (true) {
    auto rec = r.Next();
    REQUIRE(rec.ok());
    if (*rec == nullptr) break;
  }
  CHECK(r.ended());
  CHECK(r.mode() == StreamReader::Mode::kMain);
  CHECK(r.blocks().size() == 1);
  CHECK(r.blocks().Find(1) == nullptr);
  REQUIRE(r.blocks().Find(2) != nullptr);
  CHECK(r.blocks().Find(2)->page_count == 3);
  CHECK(r.blocks().CheckRun(2, 2, 1) == nullptr);
  CHECK(std::string(r.blocks().CheckRun(2, 2, 2)) == "page run past the end of its block");
}

}  // namespace
}  // namespace procmig::wire

namespace procmig::wire {
namespace {

using testing::AppendBatch;

TEST_CASE("restore_check: first record after the preamble, main channel only, opaque payload") {
  static const uint8_t kCheck[] = {'c', 'h', 'e', 'c', 'k'};
  auto w = StreamWriter::Create(TestPreamble()).value();
  REQUIRE(w->AddRestoreCheck(kCheck).ok());
  REQUIRE(w->AddBlockAdd({1, MakeBlockFlags(3, BlockKind::kHeap), 0x10000, 0x1000, 1, "h"}).ok());
  REQUIRE(w->AddEndOfStream(false).ok());
  Bytes good;
  AppendBatch(*w, &good);
  {
    StreamReader reader;
    REQUIRE(reader.Feed(good).ok());
    auto pre = reader.Next();
    REQUIRE(pre.ok());
    auto rec = reader.Next();
    REQUIRE(rec.ok());
    REQUIRE(*rec != nullptr);
    CHECK((*rec)->type == RecordType::kRestoreCheck);
    CHECK((*rec)->offset == 48);
    auto data = std::get<RestoreCheck>((*rec)->body).data;
    CHECK(std::string(data.begin(), data.end()) == "check");
  }
  ReadResult all = ReadAll(good, 1);
  CHECK(all.status.ok());
  CHECK(all.types == std::vector<RecordType>{RecordType::kPreamble, RecordType::kRestoreCheck,
                                             RecordType::kBlockAdd, RecordType::kEndOfStream});

  Bytes late = Start();
  AppendRecord(&late, 8, 0, 0, Bytes(kCheck, kCheck + 5));
  ExpectLoss(late,
             "record at offset 93 (restore_check): restore_check is not the first record "
             "after the preamble");

  Bytes twice = PreambleBytes(TestPreamble());
  AppendRecord(&twice, 8, 0, 0, Bytes(kCheck, kCheck + 5));
  AppendRecord(&twice, 8, 0, 0, Bytes(kCheck, kCheck + 5));
  ExpectLoss(twice,
             "record at offset 65 (restore_check): restore_check is not the first record "
             "after the preamble");

  Bytes empty = PreambleBytes(TestPreamble());
  AppendRecord(&empty, 8, 0, 0, Bytes());
  CHECK(ReadError(empty).code() == absl::StatusCode::kDataLoss);

  Bytes flagged = PreambleBytes(TestPreamble());
  AppendRecord(&flagged, 8, 1, 0, Bytes(kCheck, kCheck + 5));
  CHECK(ReadError(flagged).code() == absl::StatusCode::kDataLoss);

  Bytes secondary = PreambleBytes(TestPreamble(Direction::kForward, 1, 2));
  AppendRecord(&secondary, 8, 0, 0, Bytes(kCheck, kCheck + 5));
  ExpectLoss(secondary,
             "record at offset 48 (restore_check): type not allowed on a secondary (pages only) "
             "channel");

  // The verdict: ack kind 5 on the reverse stream; 6 is not a kind.
  Bytes reverse = PreambleBytes(TestPreamble(Direction::kReverse));
  Bytes ack(kAckSize);
  EncodeAck({AckKind::kRestoreChecked, 1}, ack.data());
  AppendRecord(&reverse, 64, 0, 0, ack);
  CHECK(ReadAll(reverse).types == std::vector<RecordType>{RecordType::kPreamble, RecordType::kAck});
  Bytes bad = PreambleBytes(TestPreamble(Direction::kReverse));
  EncodeFixed32(ack.data(), 6);
  AppendRecord(&bad, 64, 0, 0, ack);
  ExpectLoss(bad, "record at offset 48 (ack): unknown ack kind");
}

TEST_CASE("restore_check: the writer refuses it anywhere but first, and on other channels") {
  static const uint8_t kCheck[] = {1};
  auto w = StreamWriter::Create(TestPreamble()).value();
  REQUIRE(w->AddBlockAdd({1, MakeBlockFlags(3, BlockKind::kHeap), 0x10000, 0x1000, 1, "h"}).ok());
  CHECK(w->AddRestoreCheck(kCheck).code() == absl::StatusCode::kFailedPrecondition);
  CHECK(w->DescribeLastError().message() ==
        "add restore_check: restore_check must be the first record after the preamble");
  auto s = StreamWriter::Create(TestPreamble(Direction::kForward, 1, 2)).value();
  CHECK(s->AddRestoreCheck(kCheck).code() == absl::StatusCode::kFailedPrecondition);
  auto r = StreamWriter::Create(TestPreamble(Direction::kReverse)).value();
  CHECK(r->AddRestoreCheck(kCheck).code() == absl::StatusCode::kFailedPrecondition);
  CHECK(r->AddAck({AckKind::kRestoreChecked, 0}).ok());  // the verdict a receiver writes
  CHECK(r->AddAck({static_cast<AckKind>(6), 0}).code() == absl::StatusCode::kInvalidArgument);
  auto e = StreamWriter::Create(TestPreamble()).value();
  CHECK(e->AddRestoreCheck({}).code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(AckKindName(AckKind::kRestoreChecked)) == "restore-checked");
  CHECK(std::string(RecordTypeName(RecordType::kRestoreCheck)) == "restore_check");
}

Preamble ZeroRunPreamble(uint16_t index = 0, uint16_t count = 1) {
  Preamble p = TestPreamble(Direction::kForward, index, count);
  p.features |= kFeatureZeroRun;
  return p;
}

Bytes ZeroRunPayload(uint32_t block, uint32_t count, uint64_t first) {
  Bytes p(kZeroRunSize);
  EncodeZeroRun({block, count, first}, p.data());
  return p;
}

TEST_CASE("zero_run: read with its fields and counted in end_of_stream's page count") {
  Bytes s = Start(ZeroRunPreamble());
  AppendRecord(&s, 9, 0, 0, ZeroRunPayload(1, 3, 1));
  AppendRecord(&s, 7, 0, 0, EndPayload(2, 3));
  for (size_t chunk : {size_t{1}, size_t{5}, SIZE_MAX}) {
    ReadResult r = ReadAll(s, chunk);
    CHECK_MESSAGE(r.status.ok(), r.status.ToString());
    CHECK(r.types == std::vector<RecordType>{RecordType::kPreamble, RecordType::kBlockAdd,
                                             RecordType::kZeroRun, RecordType::kEndOfStream});
  }
  StreamReader reader;
  REQUIRE(reader.Feed(s).ok());
  ZeroRun got;
  while (true) {
    auto rec = reader.Next();
    REQUIRE(rec.ok());
    if (*rec == nullptr) break;
    if (auto* z = std::get_if<ZeroRun>(&(*rec)->body)) {
      got = *z;
      CHECK((*rec)->offset == kAfterStart);
      CHECK((*rec)->length == 16);
    }
  }
  CHECK(got.block_id == 1);
  CHECK(got.count == 3);
  CHECK(got.first_page == 1);

  // Left out of the page count, the end of stream does not match.
  Bytes uncounted = Start(ZeroRunPreamble());
  AppendRecord(&uncounted, 9, 0, 0, ZeroRunPayload(1, 3, 1));
  AppendRecord(&uncounted, 7, 0, 0, EndPayload(2, 0));
  ExpectLoss(uncounted,
             "record at offset 121 (end_of_stream): counts do not match the stream (says 2 "
             "records and 0 pages, read 2 and 3)");
}

TEST_CASE("zero_run: every hostile form is refused, naming the record and the cause") {
  auto one = [](uint32_t block, uint32_t count, uint64_t first,
                const Preamble& pre = ZeroRunPreamble()) {
    Bytes s = Start(pre);
    AppendRecord(&s, 9, 0, 0, ZeroRunPayload(block, count, first));
    return s;
  };
  ExpectLoss(one(1, 1, 0, TestPreamble()),
             "record at offset 93 (zero_run): zero_run without the zero-run feature");
  ExpectLoss(one(2, 1, 0), "record at offset 93 (zero_run): zero run for a block that is not live");
  ExpectLoss(one(1, 2, 3), "record at offset 93 (zero_run): zero run past the end of its block");
  ExpectLoss(one(1, 1, 4), "record at offset 93 (zero_run): zero run past the end of its block");
  ExpectLoss(one(1, UINT32_MAX, 0),
             "record at offset 93 (zero_run): zero run past the end of its block");
  ExpectLoss(one(1, 0, 0), "record at offset 93 (zero_run): page count is zero");
  ExpectLoss(one(0, 1, 0), "record at offset 93 (zero_run): block id 0 is invalid");
  ExpectLoss(one(1, 2, UINT64_MAX), "record at offset 93 (zero_run): page range wraps");

  Bytes removed = Start(ZeroRunPreamble());
  Bytes id(4);
  EncodeFixed32(id.data(), 1);
  AppendRecord(&removed, 2, 0, 0, id);
  AppendRecord(&removed, 9, 0, 0, ZeroRunPayload(1, 1, 0));
  ExpectLoss(removed, "record at offset 109 (zero_run): zero run for a block that is not live");

  Bytes shrunk = Start(ZeroRunPreamble());
  Bytes resize(kBlockResizeSize);
  EncodeBlockResize({1, 0x2000, 2}, resize.data());
  AppendRecord(&shrunk, 3, 0, 0, resize);
  AppendRecord(&shrunk, 9, 0, 0, ZeroRunPayload(1, 1, 2));
  ExpectLoss(shrunk, "record at offset 129 (zero_run): zero run past the end of its block");

  Bytes after_final = Start(ZeroRunPreamble());
  Bytes fin(kIterationSize);
  EncodeIteration({0, 0, 0, 0, 0, 0, true}, fin.data());
  AppendRecord(&after_final, 5, kIterationFinal, 0, fin);
  AppendRecord(&after_final, 9, 0, 0, ZeroRunPayload(1, 1, 0));
  ExpectLoss(after_final, "record at offset 153 (zero_run): record after the final iteration");

  Bytes after_state = Start(ZeroRunPreamble());
  AppendRecord(&after_state, 6, 0, 0, Bytes{'s'});
  AppendRecord(&after_state, 9, 0, 0, ZeroRunPayload(1, 1, 0));
  ExpectLoss(after_state, "record at offset 106 (zero_run): record after process_state");

  Bytes long_payload = Start(ZeroRunPreamble());
  Bytes p17 = ZeroRunPayload(1, 1, 0);
  p17.push_back(0);
  AppendRecord(&long_payload, 9, 0, 0, p17);
  ExpectLoss(long_payload, "record at offset 93 (zero_run): length 17 outside [16, 16]");
  Bytes short_payload = Start(ZeroRunPreamble());
  AppendRecord(&short_payload, 9, 0, 0, Bytes(15, 0));
  ExpectLoss(short_payload, "record at offset 93 (zero_run): length 15 outside [16, 16]");

  Bytes flagged = Start(ZeroRunPreamble());
  AppendRecord(&flagged, 9, kPageRunLive, 0, ZeroRunPayload(1, 1, 0));
  ExpectLoss(flagged, "record at offset 93 (zero_run): unknown flags 0x01");
  Bytes reserved = Start(ZeroRunPreamble());
  AppendRecord(&reserved, 9, 0, 1, ZeroRunPayload(1, 1, 0));
  ExpectLoss(reserved, "record at offset 93 (zero_run): reserved header bits set (0x0001)");

  // The crc covers the whole payload: one flipped bit of first_page is caught.
  Bytes flipped = one(1, 1, 0);
  flipped[kAfterStart + kRecordHeaderSize + 8] ^= 0x01;
  absl::Status st = ReadError(flipped);
  CHECK(st.code() == absl::StatusCode::kDataLoss);
  CHECK_MESSAGE(std::string(st.message())
                    .starts_with("record at offset 93 (zero_run): crc mismatch (stored 0x"),
                st.ToString());

  // Reverse channels never carry it.
  Bytes reverse = PreambleBytes([] {
    Preamble p = TestPreamble(Direction::kReverse);
    p.features |= kFeatureZeroRun;
    return p;
  }());
  AppendRecord(&reverse, 9, 0, 0, ZeroRunPayload(1, 1, 0));
  ExpectLoss(reverse, "record at offset 48 (zero_run): type not allowed on a reverse channel");

  // A required feature bit this reader does not know is still refused (bit 3 is known now).
  Preamble unknown = ZeroRunPreamble();
  unknown.features |= 1ull << 4;
  ExpectLoss(PreambleBytes(unknown), "preamble at offset 0: unknown required feature bits");
}

TEST_CASE("zero_run on a secondary channel: no block check here (the receiver's), pages counted") {
  Bytes s = PreambleBytes(ZeroRunPreamble(1, 3));
  AppendRecord(&s, 9, 0, 0, ZeroRunPayload(77, 100000, 123456));
  AppendRecord(&s, 7, 0, 0, EndPayload(1, 100000));
  ReadResult r = ReadAll(s);
  CHECK_MESSAGE(r.status.ok(), r.status.ToString());
  CHECK(r.types.size() == 3);
  // Still feature-gated and field-checked there.
  Bytes nofeature = PreambleBytes(TestPreamble(Direction::kForward, 1, 3));
  AppendRecord(&nofeature, 9, 0, 0, ZeroRunPayload(77, 1, 0));
  ExpectLoss(nofeature, "record at offset 48 (zero_run): zero_run without the zero-run feature");
}

TEST_CASE("zero_run resends a torn page; without it the end of stream refuses") {
  auto stream = [](bool resend) {
    Bytes s = Start(ZeroRunPreamble());
    Bytes torn = RawRunPayload(1, 2, 0x5a);
    torn[PageRunMetaSize(1) + 100] ^= 0x01;  // written while it was sent
    AppendRecord(&s, 4, kPageRunLive, 0, torn, PageRunMetaSize(1));
    uint64_t pages = 1, records = 2;
    if (resend) {
      AppendRecord(&s, 9, 0, 0, ZeroRunPayload(1, 3, 1));  // pages 1..3, the torn one among them
      pages += 3;
      ++records;
    }
    AppendRecord(&s, 7, 0, 0, EndPayload(records, pages));
    return s;
  };
  ReadResult ok = ReadAll(stream(true));
  CHECK_MESSAGE(ok.status.ok(), ok.status.ToString());
  absl::Status st = ReadError(stream(false));
  CHECK(st.code() == absl::StatusCode::kDataLoss);
  CHECK(Contains(st, "1 torn page(s) never resent (e.g. block 1 page 2"));
}

// ---- Split page runs (ReaderOptions::split_page_runs).

// One page of a run as the caller ends up with it: encoding, torn, and its bytes (raw pages as
// placed and checked, encoded ones as their payload; nothing for zero pages).
struct PageOut {
  PageEncoding encoding;
  bool torn;
  Bytes bytes;
  bool operator==(const PageOut&) const = default;
};
struct RecordOut {
  RecordType type;
  uint64_t offset;
  uint64_t offset_after;  // reader.offset() once the record is closed
  uint32_t torn_pages;
  std::vector<PageOut> pages;
  bool operator==(const RecordOut&) const = default;
};
struct SplitResult {
  std::vector<RecordOut> records;
  absl::Status status;
  size_t split = 0;   // page runs handed out before their payload
  size_t direct = 0;  // payload bytes taken from the stream without Feed
};

ReaderOptions SplitOptions() {
  ReaderOptions o;
  o.split_page_runs = true;
  return o;
}

// Reads the buffered way: each record's pages from the record.
SplitResult ReadBuffered(std::span<const uint8_t> s) {
  SplitResult out;
  StreamReader r;
  out.status = r.Feed(s);
  while (out.status.ok()) {
    auto rec = r.Next();
    if (!rec.ok()) {
      out.status = rec.status();
      return out;
    }
    if (*rec == nullptr) break;
    RecordOut o{(*rec)->type, (*rec)->offset, r.offset(), (*rec)->torn_pages, {}};
    if (const auto* run = std::get_if<PageRun>(&(*rec)->body)) {
      for (const PageEntry& e : run->pages) {
        o.pages.push_back({e.encoding, e.torn, Bytes(e.data.begin(), e.data.end())});
      }
    }
    out.records.push_back(std::move(o));
  }
  if (out.status.ok()) out.status = r.Finish();
  return out;
}

// Reads as the receiver does: `s` fed in pieces ending at `ends`; a split run's payload placed
// from the fed bytes into a buffer of its pages and, when `direct`, the rest taken straight from
// the bytes not fed yet (as the receiver reads its socket), at most `direct_max` at a time.
SplitResult ReadSplit(std::span<const uint8_t> s, const std::vector<size_t>& ends, bool direct,
                      size_t direct_max = SIZE_MAX) {
  SplitResult out;
  StreamReader r(SplitOptions());
  size_t pos = 0;  // stream bytes handed to the reader so far, fed or direct
  RecordOut cur{};
  Bytes pages;  // the open run's raw pages, at their index
  std::vector<Bytes> encoded;
  const PageRun* run = nullptr;
  auto place = [&]() -> absl::Status {
    while (auto seg = r.NextSegment()) {
      std::span<const uint8_t> src = r.FedPayload();
      if (src.empty()) {
        if (!direct || pos == s.size()) return absl::OkStatus();
        src = s.subspan(pos, std::min({seg->remaining(), s.size() - pos, direct_max}));
        pos += src.size();
        out.direct += src.size();
      }
      REQUIRE(src.size() <= seg->remaining());
      if (seg->raw) {
        std::copy(src.begin(), src.end(), pages.begin() + seg->page * 4096 + seg->placed);
      } else {
        encoded[seg->page].insert(encoded[seg->page].end(), src.begin(), src.end());
      }
      if (absl::Status st = r.ConsumePayload(src.size()); !st.ok()) return st;
      if (!seg->raw) continue;
      for (size_t k = seg->page + seg->placed / 4096;
           k < seg->page + (seg->placed + src.size()) / 4096; ++k) {
        auto torn = r.CheckPage(static_cast<uint32_t>(k), {pages.data() + k * 4096, 4096});
        if (!torn.ok()) return torn.status();
      }
    }
    return absl::OkStatus();
  };
  // Before the Next() that closes it: the record still holds the run then.
  auto close = [&] {
    cur.torn_pages = 0;
    for (size_t i = 0; i < run->pages.size(); ++i) {
      const PageEntry& e = run->pages[i];
      Bytes b = e.encoding == PageEncoding::kRaw
                    ? Bytes(pages.begin() + i * 4096, pages.begin() + (i + 1) * 4096)
                    : encoded[i];
      cur.pages.push_back({e.encoding, e.torn, b});
      cur.torn_pages += e.torn;
    }
    out.records.push_back(cur);
    run = nullptr;
  };
  for (size_t end : ends) {
    if (end <= pos) continue;  // taken directly already
    out.status = r.Feed(s.subspan(pos, end - pos));
    pos = end;
    while (out.status.ok()) {
      if (r.split_open()) {
        out.status = place();
        if (!out.status.ok()) break;
        if (run != nullptr && !r.NextSegment().has_value()) close();
      }
      auto rec = r.Next();
      if (!rec.ok()) {
        out.status = rec.status();
        break;
      }
      if (*rec == nullptr) break;
      const Record& x = **rec;
      cur = RecordOut{x.type, x.offset, r.offset(), x.torn_pages, {}};
      if (x.split) {
        ++out.split;
        run = &std::get<PageRun>(x.body);
        cur.offset_after = x.offset + kRecordHeaderSize + x.length;
        pages.assign(run->pages.size() * 4096, 0);
        encoded.assign(run->pages.size(), Bytes());
        for (const PageEntry& e : run->pages) CHECK(e.data.empty());
        continue;
      }
      if (const auto* b = std::get_if<PageRun>(&x.body)) {
        for (const PageEntry& e : b->pages) {
          cur.pages.push_back({e.encoding, e.torn, Bytes(e.data.begin(), e.data.end())});
        }
      }
      out.records.push_back(cur);
    }
    if (!out.status.ok()) return out;
  }
  out.status = r.Finish();
  return out;
}

// block 1 of 8 pages; a run of raw, zero, raw, raw, xbzrle, raw, zlib pages; a live run of two raw
// pages whose first is torn; a run resending it; the final iteration; end_of_stream.
Bytes SplitStream() {
  auto w = StreamWriter::Create(TestPreamble()).value();
  auto check = [](absl::Status st) { REQUIRE(st.ok()); };
  check(w->AddBlockAdd({1, MakeBlockFlags(kBlockProtRead | kBlockProtWrite, BlockKind::kHeap),
                        0x10000, 8 * 4096, 8, "heap"}));
  static Bytes mem = [] {
    Bytes m(6 * 4096);
    for (size_t i = 0; i < m.size(); ++i) m[i] = static_cast<uint8_t>(i * 7 / 4096 + i % 251);
    return m;
  }();
  auto page = [&](size_t i) { return std::span<const uint8_t>(mem.data() + i * 4096, 4096); };
  static const uint8_t xb[] = {1, 2, 3, 4, 5};
  static const uint8_t zl[] = {9, 8, 7, 6, 5, 4, 3};
  PageEntry run1[] = {
      {PageEncoding::kRaw, 0, page(0), false},    {PageEncoding::kZero, 0, {}, false},
      {PageEncoding::kRaw, 0, page(1), false},    {PageEncoding::kRaw, 0, page(2), false},
      {PageEncoding::kXbzrle, 0x1234, xb, false}, {PageEncoding::kRaw, 0, page(3), false},
      {PageEncoding::kZlib, 0x5678, zl, false},
  };
  check(w->AddPageRun(1, 0, run1, false));
  PageEntry run2[] = {{PageEncoding::kRaw, 0, page(4), false},
                      {PageEncoding::kRaw, 0, page(5), false}};
  check(w->AddPageRun(1, 6, run2, true));
  check(w->AddPageRun(1, 6, {run2, 1}, false));
  check(w->AddIteration({0, 9, 1, 0, 0, 0, true}));
  check(w->AddEndOfStream(false));
  Bytes out;
  testing::AppendBatch(*w, &out);
  // Tear the live run's first page: a byte of its payload changed after its crc.
  const size_t run2_payload_end =
      out.size() - (12 + 48) - (12 + 16) - (12 + PageRunMetaSize(1) + 4096);
  out[run2_payload_end - 4096 - 100] ^= 0x40;
  return out;
}

TEST_CASE("split page runs: cut at every byte, they decode as the buffered path does") {
  Bytes s = SplitStream();
  SplitResult want = ReadBuffered(s);
  REQUIRE_MESSAGE(want.status.ok(), want.status.ToString());
  REQUIRE(want.records.size() == 7);
  REQUIRE(want.records[3].torn_pages == 1);
  REQUIRE(want.records[3].pages[0].torn);
  for (size_t cut = 0; cut <= s.size(); ++cut) {
    for (bool direct : {false, true}) {
      SplitResult got = ReadSplit(s, {cut, s.size()}, direct);
      INFO("cut ", cut, " direct ", direct);
      REQUIRE_MESSAGE(got.status.ok(), got.status.ToString());
      CHECK(got.records == want.records);
      // A run is split exactly when the cut falls in its payload: with less, the next piece
      // brings all of it.
      auto in_payload = [&](const RecordOut& run) {
        return cut >= run.offset + kRecordHeaderSize + PageRunMetaSize(run.pages.size()) &&
               cut < run.offset_after;
      };
      const bool split =
          in_payload(want.records[2]) || in_payload(want.records[3]) || in_payload(want.records[4]);
      CHECK(got.split == (split ? 1u : 0u));
      if (!direct) CHECK(got.direct == 0);
    }
  }
  // Pieces of every small size, and direct reads of a few bytes at a time.
  for (size_t piece : {1, 2, 5, 12, 13, 100, 4095, 4096, 4097}) {
    std::vector<size_t> ends;
    for (size_t e = piece; e < s.size(); e += piece) ends.push_back(e);
    ends.push_back(s.size());
    for (size_t direct_max : {size_t{1}, size_t{7}, size_t{4096}, SIZE_MAX}) {
      SplitResult got = ReadSplit(s, ends, true, direct_max);
      INFO("piece ", piece, " direct_max ", direct_max);
      REQUIRE_MESSAGE(got.status.ok(), got.status.ToString());
      CHECK(got.records == want.records);
    }
  }
}

TEST_CASE("split page runs: truncated anywhere, Finish says what the buffered path says") {
  Bytes s = SplitStream();
  for (size_t cut = 0; cut < s.size(); ++cut) {
    std::span<const uint8_t> part = std::span<const uint8_t>(s).first(cut);
    SplitResult want = ReadBuffered(part);
    SplitResult got = ReadSplit(part, {cut}, false);
    INFO("cut ", cut);
    CHECK(got.status == want.status);
  }
}

// A page run of two pages whose descriptors say `a` and `b` (encoding, length), followed by
// `data` payload bytes (all 0x33); the record crc and the raw pages' crcs are right, so only the
// descriptor checks can refuse it (the buffered path checks page 0's crc before page 1's
// descriptor).
Bytes RunWithDescriptors(uint8_t enc_a, uint32_t len_a, uint8_t enc_b, uint32_t len_b, size_t data,
                         uint8_t reserved = 0) {
  Bytes s = Start();
  Bytes p(PageRunMetaSize(2) + data, 0x33);
  EncodeFixed32(p.data(), 1);
  EncodeFixed32(p.data() + 4, 2);
  EncodeFixed64(p.data() + 8, 0);
  uint8_t* d = p.data() + kPageRunHeaderSize;
  d[0] = enc_a;
  d[1] = d[2] = d[3] = 0;
  const Bytes page(4096, 0x33);
  const uint32_t crc = crc32c::Value(page.data(), page.size());
  EncodeFixed32(d + 4, len_a);
  EncodeFixed32(d + 8, enc_a == 2 ? crc : 0);
  d += kPageDescriptorSize;
  d[0] = enc_b;
  d[1] = reserved;
  d[2] = d[3] = 0;
  EncodeFixed32(d + 4, len_b);
  EncodeFixed32(d + 8, enc_b == 2 ? crc : 0);
  AppendRecord(&s, 4, 0, 0, p, PageRunMetaSize(2));
  return s;
}

TEST_CASE("split page runs: a bad descriptor is refused before a payload byte is handed out") {
  struct Case {
    Bytes stream;
    std::string message;
  };
  const Case cases[] = {
      {RunWithDescriptors(2, 4096, 2, 4000, 8096),
       "record at offset 93 (page_run): page 1: raw page length is not the page size"},
      {RunWithDescriptors(2, 4096, 4, 0, 4096),
       "record at offset 93 (page_run): page 1: encoded length not in [1, page size]"},
      {RunWithDescriptors(2, 4096, 2, 4096, 4096 + 4000),
       "record at offset 93 (page_run): page 1: page data runs past the end of the record"},
      {RunWithDescriptors(2, 4096, 2, 4096, 3 * 4096),
       "record at offset 93 (page_run): record longer than its pages"},
      {RunWithDescriptors(2, 4096, 2, 4096, 2 * 4096, /*reserved=*/1),
       "record at offset 93 (page_run): page 1: descriptor reserved bytes are not zero"},
      {RunWithDescriptors(0, 4096, 2, 4096, 2 * 4096),
       "record at offset 93 (page_run): page 0: unknown page encoding"},
  };
  for (const Case& c : cases) {
    INFO(c.message);
    // The buffered path says the same (with every byte there).
    CHECK(ReadBuffered(c.stream).status.message() == c.message);
    // Cut right after the descriptors, and 10 bytes into the payload.
    for (size_t extra : {0, 10}) {
      const size_t cut = kAfterStart + kRecordHeaderSize + PageRunMetaSize(2) + extra;
      StreamReader r(SplitOptions());
      REQUIRE(r.Feed(std::span<const uint8_t>(c.stream).first(cut)).ok());
      REQUIRE(r.Next().ok());  // preamble
      REQUIRE(r.Next().ok());  // block_add
      auto rec = r.Next();
      REQUIRE_FALSE(rec.ok());
      CHECK(rec.status().message() == c.message);
      CHECK_FALSE(r.split_open());
      CHECK_FALSE(r.NextSegment().has_value());
      CHECK(r.FedPayload().empty());
    }
  }
  // A wrong record crc over the header and descriptors: refused the same way.
  Bytes bad = RunWithDescriptors(2, 4096, 2, 4096, 2 * 4096);
  bad[kAfterStart + kRecordHeaderSize + kPageRunHeaderSize + 8] ^= 1;  // page 0's crc
  const std::string message(ReadBuffered(bad).status.message());
  CHECK(Contains(ReadBuffered(bad).status, "(page_run): crc mismatch"));
  SplitResult got =
      ReadSplit(bad, {kAfterStart + kRecordHeaderSize + PageRunMetaSize(2) + 1, bad.size()}, true);
  CHECK(got.status.message() == message);
  CHECK(got.split == 0);
}

TEST_CASE("split page runs: offsets, a non-live mismatch, and misuse of the calls") {
  Bytes s = SplitStream();
  SplitResult want = ReadBuffered(s);
  const RecordOut& run1 = want.records[2];
  const size_t cut = run1.offset + kRecordHeaderSize + PageRunMetaSize(7) + 5000;
  StreamReader r(SplitOptions());
  REQUIRE(r.Feed(std::span<const uint8_t>(s).first(cut)).ok());
  REQUIRE(*r.Next() != nullptr);
  REQUIRE(*r.Next() != nullptr);
  auto rec = r.Next();
  REQUIRE(rec.ok());
  REQUIRE((*rec)->split);
  CHECK((*rec)->offset == run1.offset);
  CHECK((*rec)->length == run1.offset_after - run1.offset - kRecordHeaderSize);
  CHECK(r.offset() == run1.offset);  // the run is not complete yet
  // Segments: pages 0 (raw), 2..3 (raw), 4 (xbzrle, 5 bytes), 5 (raw), 6 (zlib, 7 bytes).
  auto seg = r.NextSegment();
  REQUIRE(seg.has_value());
  CHECK(seg->page == 0);
  CHECK(seg->count == 1);
  CHECK(seg->raw);
  CHECK(seg->length == 4096);
  CHECK(r.FedPayload().size() == 4096);
  CHECK(r.PayloadBytesBefore(2) == 4096);              // page 0 alone; pages 2..3 are two
  CHECK(r.PayloadBytesBefore(3) == 4 * 4096 + 5 + 7);  // no stretch of 3: all of it
  // Misuse: more than the segment, or an unplaced page checked.
  CHECK(r.ConsumePayload(4097).code() == absl::StatusCode::kFailedPrecondition);
  Bytes page0(r.FedPayload().begin(), r.FedPayload().end());
  CHECK(r.CheckPage(0, page0).status().code() == absl::StatusCode::kFailedPrecondition);
  REQUIRE(r.ConsumePayload(4096).ok());
  CHECK(r.CheckPage(1, page0).status().code() == absl::StatusCode::kFailedPrecondition);
  // Next() before page 0 is checked: refused, and the fed payload is still there.
  CHECK(r.Next().status().code() == absl::StatusCode::kFailedPrecondition);
  auto torn = r.CheckPage(0, page0);
  REQUIRE(torn.ok());
  CHECK_FALSE(*torn);
  seg = r.NextSegment();
  REQUIRE(seg.has_value());
  CHECK(seg->page == 2);
  CHECK(seg->count == 2);
  CHECK(seg->length == 2 * 4096);
  CHECK(r.FedPayload().size() == 5000 - 4096);  // what was fed of it
  // The fed bytes come first: a direct read reported while some are left is refused.
  CHECK(r.ConsumePayload(5000).code() == absl::StatusCode::kFailedPrecondition);
  CHECK(r.Next().status().code() == absl::StatusCode::kFailedPrecondition);
  Bytes partial(r.FedPayload().begin(), r.FedPayload().end());
  REQUIRE(r.ConsumePayload(partial.size()).ok());
  CHECK(*r.Next() == nullptr);  // waits for the rest
  // Truncated here: the buffered path's message.
  CHECK(r.Finish().message() ==
        ReadBuffered(std::span<const uint8_t>(s).first(cut)).status.message());
  // The rest of page 2 read "directly", but corrupted: a non-live run's page fails as buffered.
  Bytes page2(partial);
  const size_t at = cut;
  page2.insert(page2.end(), s.begin() + at, s.begin() + at + (4096 - partial.size()));
  page2[17] ^= 1;
  REQUIRE(r.ConsumePayload(4096 - partial.size()).ok());
  auto bad = r.CheckPage(2, page2);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message() == absl::StrCat("record at offset ", run1.offset,
                                               " (page_run): page 2: raw page crc mismatch"));
  CHECK(r.Next().status() == bad.status());  // sticky
}

}  // namespace
}  // namespace procmig::wire
