// StreamWriter: every record type round-trips through StreamReader with exact fields; batches
// reference page memory without copying; batch-full is reported, not grown; no allocation after
// Create (counted by replacing operator new in this test binary).
#include "wire/stream_writer.h"

#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "base/coding.h"
#include "base/crc32c.h"
#include "unit/wire/wire_test_util.h"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0};
}  // namespace

void* operator new(size_t n) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1);
  void* p = std::malloc(n == 0 ? 1 : n);
  if (p == nullptr) std::abort();
  return p;
}
void* operator new[](size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }

namespace procmig::wire {
namespace {

using testing::AppendBatch;
using testing::Bytes;
using testing::SamplePages;
using testing::TestPreamble;

// Reads a complete stream and returns copies of its records' bodies in order.
struct Decoded {
  std::vector<Record> records;
  std::vector<std::vector<PageEntry>> runs;  // copies of page entries, per page run
  std::vector<std::string> names;
};

Decoded DecodeAll(const Bytes& bytes) {
  Decoded d;
  StreamReader r;
  REQUIRE(r.Feed(bytes).ok());
  while (true) {
    auto rec = r.Next();
    REQUIRE_MESSAGE(rec.ok(), rec.status().ToString());
    if (*rec == nullptr) break;
    d.records.push_back(**rec);
    if (auto* run = std::get_if<PageRun>(&(*rec)->body)) {
      d.runs.emplace_back(run->pages.begin(), run->pages.end());
    }
    if (auto* add = std::get_if<BlockAdd>(&(*rec)->body)) d.names.emplace_back(add->name);
  }
  CHECK(r.Finish().ok());
  return d;
}

TEST_CASE("every forward record type round-trips with exact fields") {
  SamplePages pages;
  Bytes bytes = testing::SampleStream(pages);  // `bytes` keeps the views of `d` valid
  Decoded d = DecodeAll(bytes);
  REQUIRE(d.records.size() == 11);

  const auto& pre = std::get<Preamble>(d.records[0].body);
  CHECK(pre.version == 1);
  CHECK(pre.direction == Direction::kForward);
  CHECK(pre.page_size == 4096);
  CHECK(pre.features == (kFeatureXbzrle | kFeatureZlib));
  CHECK(pre.session_id[0] == 0xa0);
  CHECK(pre.session_id[15] == 0xaf);
  CHECK(pre.channel_index == 0);
  CHECK(pre.channel_count == 1);

  const auto& add1 = std::get<BlockAdd>(d.records[1].body);
  CHECK(d.records[1].offset == kPreambleSize);
  CHECK(add1.block_id == 1);
  CHECK(add1.flags == (kBlockProtRead | kBlockProtWrite | (1u << kBlockKindShift)));
  CHECK(add1.start == 0x10000);
  CHECK(add1.length == 0x4000);
  CHECK(add1.page_count == 4);
  CHECK(d.names[0] == "heap@0x10000");
  CHECK(d.names[1] == "stack@0x20000");
  CHECK(d.records[2].offset == kPreambleSize + kRecordHeaderSize + 32 + 12);

  const auto& run1 = std::get<PageRun>(d.records[3].body);
  CHECK(run1.block_id == 1);
  CHECK(run1.first_page == 0);
  CHECK_FALSE(run1.live);
  REQUIRE(d.runs[0].size() == 4);
  CHECK(d.runs[0][0].encoding == PageEncoding::kZero);
  CHECK(d.runs[0][0].data.empty());
  CHECK(d.runs[0][0].page_crc == ZeroPageCrc(4096));
  CHECK(d.runs[0][1].encoding == PageEncoding::kRaw);
  CHECK(d.runs[0][1].page_crc == crc32c::Value(pages.Page(0).data(), 4096));
  CHECK(Bytes(d.runs[0][1].data.begin(), d.runs[0][1].data.end()) ==
        Bytes(pages.Page(0).begin(), pages.Page(0).end()));
  CHECK(d.runs[0][2].encoding == PageEncoding::kXbzrle);
  CHECK(d.runs[0][2].page_crc == 0x11111111);
  CHECK(Bytes(d.runs[0][2].data.begin(), d.runs[0][2].data.end()) == Bytes{0x01, 0x02, 0xaa, 0xbb});
  CHECK(d.runs[0][3].encoding == PageEncoding::kZlib);
  CHECK(d.runs[0][3].page_crc == 0x22222222);
  CHECK(d.runs[0][3].data.size() == 4);
  CHECK(d.records[3].length == 16 + 4 * 12 + 4096 + 4 + 4);

  const auto& it0 = std::get<IterationMarker>(d.records[4].body);
  CHECK(it0.iteration == 0);
  CHECK(it0.pages_sent == 4);
  CHECK(it0.zero_pages == 1);
  CHECK(it0.bytes_sent == 16384);
  CHECK(it0.dirty_pages == 0);
  CHECK(it0.duration_ns == 1000000);
  CHECK_FALSE(it0.final);

  const auto& rs = std::get<BlockResize>(d.records[5].body);
  CHECK(rs.block_id == 2);
  CHECK(rs.new_length == 0x3000);
  CHECK(rs.new_page_count == 3);

  const auto& run2 = std::get<PageRun>(d.records[6].body);
  CHECK(run2.block_id == 2);
  CHECK(run2.first_page == 1);
  CHECK(run2.live);
  CHECK(d.records[6].flags == kPageRunLive);
  CHECK(d.runs[1].size() == 2);
  CHECK(d.runs[1][1].data[0] == 3);
  CHECK_FALSE(d.runs[1][1].torn);

  CHECK(std::get<BlockRemove>(d.records[7].body).block_id == 1);
  const auto& it1 = std::get<IterationMarker>(d.records[8].body);
  CHECK(it1.iteration == 1);
  CHECK(it1.final);
  CHECK(d.records[8].flags == kIterationFinal);
  CHECK(std::get<ProcessState>(d.records[9].body).data.size() == 5);
  CHECK(std::get<ProcessState>(d.records[9].body).data[0] == 's');
  const auto& end = std::get<EndOfStream>(d.records[10].body);
  CHECK(end.record_count == 9);
  CHECK(end.page_count == 6);
  CHECK_FALSE(end.aborted);
  CHECK(d.records[10].offset + kRecordHeaderSize + 16 == bytes.size());
}

TEST_CASE("reverse records round-trip") {
  auto w = StreamWriter::Create(TestPreamble(Direction::kReverse)).value();
  REQUIRE(w->AddAck({AckKind::kPreambleAccepted, 0}).ok());
  REQUIRE(w->AddAck({AckKind::kIterationApplied, 7}).ok());
  REQUIRE(w->AddError({14, "restore: mmap 0x7f00: ENOMEM"}).ok());
  CHECK(w->AddAck({AckKind::kResumed, 1}).code() == absl::StatusCode::kFailedPrecondition);
  REQUIRE(w->AddEndOfStream(true).ok());
  Bytes bytes;
  AppendBatch(*w, &bytes);
  Decoded d = DecodeAll(bytes);
  REQUIRE(d.records.size() == 5);
  CHECK(std::get<Preamble>(d.records[0].body).direction == Direction::kReverse);
  CHECK(std::get<Ack>(d.records[1].body).kind == AckKind::kPreambleAccepted);
  CHECK(std::get<Ack>(d.records[2].body).kind == AckKind::kIterationApplied);
  CHECK(std::get<Ack>(d.records[2].body).sequence == 7);
  CHECK(std::get<ErrorRecord>(d.records[3].body).code == 14);
  CHECK(std::get<ErrorRecord>(d.records[3].body).message == "restore: mmap 0x7f00: ENOMEM");
  CHECK(std::get<EndOfStream>(d.records[4].body).aborted);
  CHECK(std::get<EndOfStream>(d.records[4].body).record_count == 3);
}

TEST_CASE("page payloads are referenced, contiguous pages share one iovec") {
  SamplePages pages;
  auto w = StreamWriter::Create(TestPreamble()).value();
  REQUIRE(w->AddBlockAdd({1, 3, 0x10000, 0x4000, 4, "a"}).ok());
  PageEntry run[] = {{PageEncoding::kRaw, 0, pages.Page(0), false},
                     {PageEncoding::kRaw, 0, pages.Page(1), false},
                     {PageEncoding::kZero, 0, {}, false},
                     {PageEncoding::kRaw, 0, pages.Page(3), false}};
  REQUIRE(w->AddPageRun(1, 0, run, false).ok());
  // preamble + block_add + run header merge into one scratch iovec; pages 0-1 are contiguous.
  REQUIRE(w->batch().size() == 3);
  CHECK(w->batch()[1].iov_base == pages.mem.data());
  CHECK(w->batch()[1].iov_len == 8192);
  CHECK(w->batch()[2].iov_base == pages.mem.data() + 3 * 4096);
  CHECK(w->batch_bytes() == 48 + 12 + 33 + 12 + 16 + 4 * 12 + 3 * 4096);
  CHECK(w->pages() == 4);
  CHECK(w->records() == 2);
}

TEST_CASE("crc of raw pages is taken when the record is built") {
  SamplePages pages;
  Bytes mem = pages.mem;
  for (bool live : {false, true}) {
    auto w = StreamWriter::Create(TestPreamble()).value();
    REQUIRE(w->AddBlockAdd({1, 3, 0x10000, 0x4000, 4, "a"}).ok());
    PageEntry run[] = {{PageEncoding::kRaw, 0, {mem.data(), 4096}, false}};
    REQUIRE(w->AddPageRun(1, 0, run, live).ok());
    mem[100] ^= 0xff;  // the program writes the page after the crc, before the send
    REQUIRE(w->AddEndOfStream(false).ok());
    Bytes bytes;
    AppendBatch(*w, &bytes);
    testing::ReadResult r = testing::ReadAll(bytes);
    CHECK(r.status.code() == absl::StatusCode::kDataLoss);
    if (live) {
      // Torn, and never resent: the end of stream refuses.
      CHECK_MESSAGE(testing::Contains(r.status, "1 torn page(s) never resent (e.g. block 1 page 0"),
                    r.status.ToString());
    } else {
      CHECK_MESSAGE(
          testing::Contains(r.status, "record at offset 93 (page_run): page 0: raw page crc"),
          r.status.ToString());
    }
  }
}

TEST_CASE("a torn page resent later is accepted") {
  SamplePages pages;
  auto w = StreamWriter::Create(TestPreamble()).value();
  REQUIRE(w->AddBlockAdd({1, 3, 0x10000, 0x4000, 4, "a"}).ok());
  PageEntry run[] = {{PageEncoding::kRaw, 0, pages.Page(0), false}};
  REQUIRE(w->AddPageRun(1, 0, run, true).ok());
  Bytes bytes;
  AppendBatch(*w, &bytes);
  bytes[bytes.size() - 4096 + 7] ^= 0x55;  // the program wrote the page during the send
  w->ClearBatch();
  REQUIRE(w->AddPageRun(1, 0, run, true).ok());  // the tracker saw the write: sent again
  REQUIRE(w->AddEndOfStream(false).ok());
  AppendBatch(*w, &bytes);

  StreamReader r;
  REQUIRE(r.Feed(bytes).ok());
  std::vector<uint32_t> torn;
  while (true) {
    auto rec = r.Next();
    REQUIRE_MESSAGE(rec.ok(), rec.status().ToString());
    if (*rec == nullptr) break;
    if (auto* pr = std::get_if<PageRun>(&(*rec)->body)) {
      torn.push_back((*rec)->torn_pages);
      CHECK(pr->pages[0].torn == ((*rec)->torn_pages == 1));
    }
  }
  CHECK(r.Finish().ok());
  CHECK(torn == std::vector<uint32_t>{1, 0});
}

TEST_CASE("batch full is reported and nothing is appended") {
  SamplePages pages;
  WriterOptions opt;
  opt.max_iovecs = 16;
  auto w = StreamWriter::Create(TestPreamble(), opt).value();
  REQUIRE(w->AddBlockAdd({1, 3, 0x10000, 0x4000, 4, "a"}).ok());
  // Non-contiguous pages: each needs its own iovec (header iovec merges with the preamble).
  PageEntry one[] = {{PageEncoding::kRaw, 0, pages.Page(0), false},
                     {PageEncoding::kRaw, 0, pages.Page(2), false}};
  int added = 0;
  absl::Status s;
  while ((s = w->AddPageRun(1, 0, one, false)).ok()) ++added;
  CHECK(s.code() == absl::StatusCode::kResourceExhausted);
  CHECK(s.message().empty());
  CHECK(w->DescribeLastError().message() == "add page_run: batch full: send and clear it");
  CHECK(added == 5);  // 1 + 2 + 3*(1 + 2) + ... = 16 iovecs
  size_t bytes_before = w->batch_bytes();
  CHECK(w->AddPageRun(1, 0, one, false).code() == absl::StatusCode::kResourceExhausted);
  CHECK(w->batch_bytes() == bytes_before);
  w->ClearBatch();
  CHECK(w->batch().empty());
  CHECK(w->AddPageRun(1, 0, one, false).ok());
  CHECK(w->batch().size() == 3);
}

TEST_CASE("two banks: a taken batch stays intact while the next is built in the other bank") {
  SamplePages pages;
  WriterOptions opt;
  opt.banks = 2;
  auto w = StreamWriter::Create(TestPreamble(), opt).value();
  REQUIRE(w->AddBlockAdd({1, 3, 0x10000, 0x4000, 4, "a"}).ok());
  PageEntry one[] = {{PageEncoding::kRaw, 0, pages.Page(0), false}};
  REQUIRE(w->AddPageRun(1, 0, one, false).ok());
  Bytes first_copy;
  AppendBatch(*w, &first_copy);
  std::span<const iovec> first = w->TakeBatch();
  CHECK(w->batch().empty());
  CHECK(w->batch_bytes() == 0);
  // The next batch's records go into the other bank: the first batch's bytes do not change.
  PageEntry two[] = {{PageEncoding::kRaw, 0, pages.Page(1), false}};
  REQUIRE(w->AddPageRun(1, 1, two, false).ok());
  REQUIRE(w->AddBlockRemove({1}).ok());
  Bytes first_after;
  for (const iovec& v : first) {
    auto* p = static_cast<const uint8_t*>(v.iov_base);
    first_after.insert(first_after.end(), p, p + v.iov_len);
  }
  CHECK(first_after == first_copy);
  // The two batches in order are one valid stream with every record.
  Bytes stream = first_copy;
  AppendBatch(*w, &stream);
  std::span<const iovec> second = w->TakeBatch();
  CHECK(second.data() != first.data());
  // Back in the first bank (its batch counts as sent): records land there again.
  REQUIRE(w->AddEndOfStream(false).ok());
  CHECK(w->batch().data() == first.data());
  AppendBatch(*w, &stream);
  testing::ReadResult r = testing::ReadAll(stream);
  REQUIRE_MESSAGE(r.status.ok(), r.status.ToString());
  CHECK(r.types == std::vector<RecordType>{RecordType::kPreamble, RecordType::kBlockAdd,
                                           RecordType::kPageRun, RecordType::kPageRun,
                                           RecordType::kBlockRemove, RecordType::kEndOfStream});
}

TEST_CASE("banks other than 1 or 2 are refused") {
  WriterOptions opt;
  opt.banks = 3;
  auto w = StreamWriter::Create(TestPreamble(), opt);
  CHECK(w.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(w.status().message() == "create stream writer: banks must be 1 or 2, not 3");
}

TEST_CASE("the writer rejects what the format forbids") {
  SamplePages pages;
  auto w = StreamWriter::Create(TestPreamble()).value();
  CHECK(w->AddBlockAdd({0, 3, 0, 4096, 1, "a"}).code() == absl::StatusCode::kInvalidArgument);
  CHECK(w->AddBlockAdd({1, 3, 1, 4096, 1, "a"}).code() == absl::StatusCode::kInvalidArgument);
  CHECK(w->DescribeLastError().message() == "add block_add: start is not page aligned");
  CHECK(w->AddBlockAdd({1, 3, 0, 4096, 2, "a"}).code() == absl::StatusCode::kInvalidArgument);
  CHECK(w->AddBlockAdd({1, 3, 0, 4096, 1, "a\nb"}).code() == absl::StatusCode::kInvalidArgument);
  CHECK(w->AddBlockAdd({1, 1u << 20, 0, 4096, 1, "a"}).code() ==
        absl::StatusCode::kInvalidArgument);
  PageEntry short_raw[] = {{PageEncoding::kRaw, 0, pages.Page(0).first(100), false}};
  CHECK(w->AddPageRun(1, 0, short_raw, false).code() == absl::StatusCode::kInvalidArgument);
  CHECK(w->AddPageRun(1, 0, {}, false).code() == absl::StatusCode::kInvalidArgument);
  CHECK(w->AddAck({AckKind::kResumed, 0}).code() == absl::StatusCode::kFailedPrecondition);
  CHECK(w->AddIteration({1, 0, 0, 0, 0, 0, false}).code() == absl::StatusCode::kInvalidArgument);
  CHECK(w->AddEndOfStream(false).ok());
  CHECK(w->AddIteration({0, 0, 0, 0, 0, 0, false}).code() == absl::StatusCode::kFailedPrecondition);

  auto no_features = TestPreamble();
  no_features.features = 0;
  auto w2 = StreamWriter::Create(no_features).value();
  PageEntry x[] = {{PageEncoding::kXbzrle, 0, testing::kXbzrleBytes, false}};
  CHECK(w2->AddPageRun(1, 0, x, false).code() == absl::StatusCode::kInvalidArgument);
  CHECK(w2->DescribeLastError().message() ==
        "add page_run: xbzrle page without the xbzrle feature");

  auto secondary = StreamWriter::Create(TestPreamble(Direction::kForward, 1, 2)).value();
  CHECK(secondary->AddBlockAdd({1, 3, 0, 4096, 1, "a"}).code() ==
        absl::StatusCode::kFailedPrecondition);

  auto bad = TestPreamble();
  bad.page_size = 3000;
  CHECK(StreamWriter::Create(bad).status().code() == absl::StatusCode::kInvalidArgument);
  WriterOptions tiny;
  tiny.scratch_bytes = 100;
  CHECK(StreamWriter::Create(TestPreamble(), tiny).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("zero_run: exact bytes, round trip, pages counted in end_of_stream") {
  SamplePages pages;
  Preamble pre = TestPreamble();
  pre.features |= kFeatureZeroRun;
  auto w = StreamWriter::Create(pre).value();
  REQUIRE(w->AddBlockAdd({1, 3, 0x10000, 0x400000, 1024, "a"}).ok());
  Bytes bytes;
  AppendBatch(*w, &bytes);
  w->ClearBatch();
  REQUIRE(w->AddZeroRun({1, 1000, 24}).ok());
  Bytes rec;
  AppendBatch(*w, &rec);
  REQUIRE(rec.size() == kRecordHeaderSize + kZeroRunSize);
  const uint8_t want[28] = {9,    0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0,  // header, crc filled below
                            1,    0, 0, 0,                           // block_id
                            0xe8, 3, 0, 0,                           // count 1000
                            24,   0, 0, 0, 0,  0, 0, 0};             // first_page
  CHECK(std::memcmp(rec.data(), want, 8) == 0);
  CHECK(std::memcmp(rec.data() + 12, want + 12, 16) == 0);
  uint32_t crc = crc32c::Extend(crc32c::Value(want, 8), want + 12, 16);
  CHECK(DecodeFixed32(rec.data() + 8) == crc);
  CHECK(w->pages() == 1000);
  bytes.insert(bytes.end(), rec.begin(), rec.end());
  w->ClearBatch();
  PageEntry run[] = {{PageEncoding::kRaw, 0, pages.Page(0), false}};
  REQUIRE(w->AddPageRun(1, 1024 - 1, run, false).ok());
  REQUIRE(w->AddEndOfStream(false).ok());
  AppendBatch(*w, &bytes);

  Decoded d = DecodeAll(bytes);
  REQUIRE(d.records.size() == 5);
  REQUIRE(d.records[2].type == RecordType::kZeroRun);
  const auto& z = std::get<ZeroRun>(d.records[2].body);
  CHECK(z.block_id == 1);
  CHECK(z.count == 1000);
  CHECK(z.first_page == 24);
  const auto& end = std::get<EndOfStream>(d.records[4].body);
  CHECK(end.record_count == 3);
  CHECK(end.page_count == 1001);
}

TEST_CASE("zero_run: the writer refuses it without the feature, empty, wrapping, or too late") {
  auto plain = StreamWriter::Create(TestPreamble()).value();
  CHECK(plain->AddZeroRun({1, 1, 0}).code() == absl::StatusCode::kInvalidArgument);
  CHECK(plain->DescribeLastError().message() ==
        "add zero_run: zero_run without the zero-run feature");
  CHECK(plain->batch_bytes() == kPreambleSize);  // nothing appended

  Preamble pre = TestPreamble();
  pre.features |= kFeatureZeroRun;
  auto w = StreamWriter::Create(pre).value();
  CHECK(w->AddZeroRun({1, 0, 0}).code() == absl::StatusCode::kInvalidArgument);
  CHECK(w->DescribeLastError().message() == "add zero_run: page count is zero");
  CHECK(w->AddZeroRun({0, 1, 0}).code() == absl::StatusCode::kInvalidArgument);
  CHECK(w->DescribeLastError().message() == "add zero_run: block id 0 is invalid");
  CHECK(w->AddZeroRun({1, 2, UINT64_MAX}).code() == absl::StatusCode::kInvalidArgument);
  CHECK(w->DescribeLastError().message() == "add zero_run: page range wraps");
  CHECK(w->pages() == 0);
  REQUIRE(w->AddIteration({0, 0, 0, 0, 0, 0, true}).ok());
  CHECK(w->AddZeroRun({1, 1, 0}).code() == absl::StatusCode::kFailedPrecondition);
  CHECK(w->DescribeLastError().message() == "add zero_run: after the final iteration");

  // Secondary channels carry them; reverse streams do not.
  Preamble sec = TestPreamble(Direction::kForward, 1, 2);
  sec.features |= kFeatureZeroRun;
  auto secondary = StreamWriter::Create(sec).value();
  CHECK(secondary->AddZeroRun({5, 7, 2048}).ok());
  Preamble rev = TestPreamble(Direction::kReverse);
  rev.features |= kFeatureZeroRun;
  auto reverse = StreamWriter::Create(rev).value();
  CHECK(reverse->AddZeroRun({5, 7, 2048}).code() == absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("no allocation after construction") {
  SamplePages pages;
  WriterOptions opt;
  opt.max_iovecs = 64;
  opt.scratch_bytes = 16 << 10;
  auto w = StreamWriter::Create(TestPreamble(), opt).value();
  PageEntry run[] = {{PageEncoding::kZero, 0, {}, false},
                     {PageEncoding::kRaw, 0, pages.Page(1), false},
                     {PageEncoding::kZlib, 5, testing::kZlibBytes, false}};
  absl::Status last;
  g_allocations = 0;
  g_counting = true;
  int ok = 0;
  ok += w->AddBlockAdd({1, 3, 0x10000, 0x4000, 4, "heap@0x10000"}).ok();
  ok += w->AddBlockResize({1, 0x8000, 8}).ok();
  for (int i = 0; i < 40; ++i) {
    last = w->AddPageRun(1, 0, run, true);
    if (last.code() == absl::StatusCode::kResourceExhausted) w->ClearBatch();
    ok += last.ok();
  }
  last = w->AddPageRun(1, 0, {}, true);  // an invalid call does not allocate either
  ok += w->AddIteration({0, 3, 1, 4096, 3, 10, true}).ok();
  ok += w->AddProcessState(testing::kState).ok();
  ok += w->AddEndOfStream(false).ok();
  g_counting = false;
  CHECK(g_allocations.load() == 0);
  CHECK(last.code() == absl::StatusCode::kInvalidArgument);
  CHECK(ok >= 40);
}

}  // namespace
}  // namespace procmig::wire
