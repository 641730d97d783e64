// StreamInspector on a file written by StreamWriter, and on corrupted and truncated copies.
#include "wire/stream_inspector.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "unit/wire/wire_test_util.h"

namespace procmig::wire {
namespace {

using testing::Bytes;

// A temporary file that removes itself.
class TempFile {
 public:
  explicit TempFile(const Bytes& bytes) {
    char name[] = "/tmp/procmig_wire_inspect_XXXXXX";
    int fd = mkstemp(name);
    REQUIRE(fd >= 0);
    path_ = name;
    REQUIRE(write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
    close(fd);
  }
  ~TempFile() { unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

size_t TypeCount(const StreamSummary& s, RecordType t) {
  return s.records_per_type[static_cast<uint8_t>(t)];
}

TEST_CASE("summary of a complete stream file") {
  testing::SamplePages pages;
  Bytes bytes = testing::SampleStream(pages);
  TempFile f(bytes);
  auto got = StreamInspector::InspectFile(f.path());
  REQUIRE(got.ok());
  const StreamSummary& s = *got;
  CHECK(s.error.ok());
  REQUIRE(s.preamble.has_value());
  CHECK(s.preamble->page_size == 4096);
  CHECK(s.bytes == bytes.size());
  CHECK(s.records == 10);
  CHECK(TypeCount(s, RecordType::kBlockAdd) == 2);
  CHECK(TypeCount(s, RecordType::kPageRun) == 2);
  CHECK(TypeCount(s, RecordType::kIteration) == 2);
  CHECK(TypeCount(s, RecordType::kEndOfStream) == 1);
  REQUIRE(s.blocks.size() == 2);
  CHECK(s.blocks[0].id == 1);
  CHECK(s.blocks[0].name == "heap@0x10000");
  CHECK(s.blocks[0].removed);
  CHECK(s.blocks[0].pages_received == 4);
  CHECK(s.blocks[0].added_at == 48);
  CHECK(s.blocks[1].page_count == 3);
  CHECK(s.blocks[1].resizes == 1);
  CHECK_FALSE(s.blocks[1].removed);
  CHECK(s.pages_per_encoding[static_cast<int>(PageEncoding::kZero)] == 1);
  CHECK(s.pages_per_encoding[static_cast<int>(PageEncoding::kRaw)] == 3);
  CHECK(s.bytes_per_encoding[static_cast<int>(PageEncoding::kRaw)] == 3 * 4096);
  CHECK(s.pages_per_encoding[static_cast<int>(PageEncoding::kXbzrle)] == 1);
  CHECK(s.bytes_per_encoding[static_cast<int>(PageEncoding::kZlib)] == 4);
  REQUIRE(s.iterations.size() == 2);
  CHECK(s.iterations[0].marker.duration_ns == 1000000);
  CHECK(s.iterations[1].marker.final);
  CHECK(s.process_state_bytes == 5);
  CHECK(s.end_of_stream);
  CHECK_FALSE(s.aborted);

  std::string text = StreamInspector::Render(s);
  CHECK(text.find("stream: version 1, forward, page size 4096, features 0x3 xbzrle zlib, "
                  "session a0a1a2a3a4a5a6a7a8a9aaabacadaeaf, channel 0 of 1\n") == 0);
  CHECK(text.find("  #1 heap@0x10000 0x10000-0x14000 rw- heap, 4 pages, 4 received, removed\n") !=
        std::string::npos);
  CHECK(
      text.find("  #2 stack@0x20000 0x20000-0x23000 rw- stack, 3 pages, 2 received, resized 1\n") !=
      std::string::npos);
  CHECK(text.find("  raw: 3 pages, 12288 bytes\n") != std::string::npos);
  CHECK(text.find("iteration 0: 4 pages sent (1 zero), 16384 bytes, 0 dirty, 1.000 ms") !=
        std::string::npos);
  CHECK(text.find("iteration 1 (final)") != std::string::npos);
  CHECK(text.find("process state: 5 bytes\n") != std::string::npos);
  CHECK(text.ends_with("OK: end of stream\n"));
}

TEST_CASE("a corrupted copy: what was read, and the error with its offset") {
  testing::SamplePages pages;
  Bytes bytes = testing::SampleStream(pages);
  // Damage the iteration marker after the first page run (record 4: offset 48+56+57+12+...).
  StreamSummary clean = StreamInspector::InspectBytes(bytes);
  REQUIRE(clean.iterations.size() == 2);
  uint64_t at = clean.iterations[0].offset;
  bytes[at + 12 + 3] ^= 0x40;
  TempFile f(bytes);
  auto got = StreamInspector::InspectFile(f.path());
  REQUIRE(got.ok());
  const StreamSummary& s = *got;
  CHECK(s.error.code() == absl::StatusCode::kDataLoss);
  CHECK(std::string(s.error.message())
            .starts_with(
                absl::StrCat("record at offset ", at, " (iteration): crc mismatch (stored 0x")));
  CHECK(s.records == 3);  // two block adds and the first run
  CHECK(s.bytes == at);
  CHECK(s.iterations.empty());
  CHECK_FALSE(s.end_of_stream);
  std::string text = StreamInspector::Render(s);
  CHECK(text.find(absl::StrCat("CORRUPT: record at offset ", at, " (iteration): crc mismatch")) !=
        std::string::npos);
}

TEST_CASE("a truncated copy, an fd, a missing file") {
  testing::SamplePages pages;
  Bytes bytes = testing::SampleStream(pages);
  bytes.resize(bytes.size() - 1);
  TempFile f(bytes);
  int fd = open(f.path().c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  auto got = StreamInspector::InspectFd(fd);
  close(fd);
  REQUIRE(got.ok());
  CHECK(got->error.message() == absl::StrCat("stream truncated at offset ", bytes.size(),
                                             ": record at offset ", bytes.size() - 27,
                                             " incomplete (27 of 28 bytes)"));
  CHECK(got->records == 9);

  auto missing = StreamInspector::InspectFile("/nonexistent/procmig.stream");
  CHECK(missing.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(missing.status().message())
            .starts_with("inspect stream: open /nonexistent/procmig.stream: ENOENT"));
}

TEST_CASE("a reverse stream") {
  auto w = StreamWriter::Create(testing::TestPreamble(Direction::kReverse)).value();
  REQUIRE(w->AddAck({AckKind::kEndOfStream, 2}).ok());
  REQUIRE(w->AddError({13, "restore: clone3: EPERM"}).ok());
  REQUIRE(w->AddEndOfStream(false).ok());
  Bytes bytes;
  testing::AppendBatch(*w, &bytes);
  StreamSummary s = StreamInspector::InspectBytes(bytes, 5);
  CHECK(s.error.ok());
  REQUIRE(s.acks.size() == 1);
  CHECK(s.acks[0].sequence == 2);
  REQUIRE(s.errors.size() == 1);
  CHECK(s.errors[0].second == "restore: clone3: EPERM");
  std::string text = StreamInspector::Render(s);
  CHECK(text.find("ack: end-of-stream 2\n") != std::string::npos);
  CHECK(text.find("error record: INTERNAL: restore: clone3: EPERM\n") != std::string::npos);
}

TEST_CASE("zero runs: counted per block and in the pages, rendered on their own line") {
  testing::SamplePages pages;
  Preamble pre = testing::TestPreamble();
  pre.features |= kFeatureZeroRun;
  auto w = StreamWriter::Create(pre).value();
  REQUIRE(w->AddBlockAdd({1, 3, 0x10000, 2048 * 4096ull, 2048, "big"}).ok());
  PageEntry run[] = {{PageEncoding::kRaw, 0, pages.Page(0), false},
                     {PageEncoding::kZero, 0, {}, false}};
  REQUIRE(w->AddPageRun(1, 0, run, false).ok());
  REQUIRE(w->AddZeroRun({1, 1022, 2}).ok());
  REQUIRE(w->AddZeroRun({1, 1024, 1024}).ok());
  REQUIRE(w->AddIteration({0, 2048, 2047, 0, 0, 1000, true}).ok());
  REQUIRE(w->AddEndOfStream(false).ok());
  Bytes bytes;
  testing::AppendBatch(*w, &bytes);

  StreamSummary s = StreamInspector::InspectBytes(bytes, 3);
  CHECK(s.error.ok());
  CHECK(TypeCount(s, RecordType::kZeroRun) == 2);
  CHECK(s.zero_run_pages == 2046);
  REQUIRE(s.blocks.size() == 1);
  CHECK(s.blocks[0].pages_received == 2048);
  CHECK(s.pages_per_encoding[static_cast<int>(PageEncoding::kZero)] == 1);
  CHECK(s.pages_per_encoding[static_cast<int>(PageEncoding::kRaw)] == 1);
  std::string text = StreamInspector::Render(s);
  CHECK(text.find("features 0xb xbzrle zlib zero-run, session ") != std::string::npos);
  CHECK(text.find("  zero_run: 2\n") != std::string::npos);
  CHECK(text.find("  #1 big 0x10000-0x810000 rw- anon, 2048 pages, 2048 received\n") !=
        std::string::npos);
  CHECK(text.find("pages: 2048\n  zero: 1 pages, 0 bytes\n  raw: 1 pages, 4096 bytes\n"
                  "  zero runs: 2046 pages in 2 records\n") != std::string::npos);
  CHECK(text.ends_with("OK: end of stream\n"));

  // A zero run past its block: the summary stops there, with the reader's reason.
  Bytes bad(bytes.begin(), bytes.begin() + kPreambleSize + 12 + 35);  // preamble, block_add
  auto w2 = StreamWriter::Create(pre).value();
  REQUIRE(w2->AddZeroRun({1, 2, 2047}).ok());
  Bytes tail;
  testing::AppendBatch(*w2, &tail);
  bad.insert(bad.end(), tail.begin() + kPreambleSize, tail.end());
  StreamSummary b = StreamInspector::InspectBytes(bad);
  CHECK(b.error.message() == absl::StrCat("record at offset ", kPreambleSize + 12 + 35,
                                          " (zero_run): zero run past the end of its block"));
  CHECK(StreamInspector::Render(b).find("CORRUPT: record at offset 95 (zero_run): zero run past "
                                        "the end of its block\n") != std::string::npos);
}

}  // namespace
}  // namespace procmig::wire
