// Writes the seed corpus of fuzz_stream_reader: small valid streams built with StreamWriter,
// each prefixed with the fuzzer's two control bytes. Usage: make_stream_seeds DIR
#include <cstdio>
#include <string>

#include "unit/wire/wire_test_util.h"

namespace {

using namespace procmig::wire;
using testing::AppendBatch;
using testing::Bytes;
using testing::TestPreamble;

void Write(const std::string& dir, const char* name, uint8_t seed, uint8_t options,
           const Bytes& stream) {
  std::string path = dir + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  std::fputc(seed, f);
  std::fputc(options, f);
  std::fwrite(stream.data(), 1, stream.size(), f);
  std::fclose(f);
}

void Check(absl::Status s) {
  if (!s.ok()) std::abort();
}

// Only zero and small encoded pages: every record type of the main channel in ~600 bytes.
Bytes SmallMain() {
  auto w = StreamWriter::Create(TestPreamble()).value();
  Check(w->AddBlockAdd({1, MakeBlockFlags(3, BlockKind::kHeap), 0x10000, 0x4000, 4, "heap"}));
  Check(w->AddBlockAdd({2, MakeBlockFlags(3, BlockKind::kStack), 0x20000, 0x1000, 1, "stack"}));
  PageEntry run[] = {{PageEncoding::kZero, 0, {}, false},
                     {PageEncoding::kXbzrle, 7, testing::kXbzrleBytes, false},
                     {PageEncoding::kZlib, 9, testing::kZlibBytes, false}};
  Check(w->AddPageRun(1, 1, run, true));
  Check(w->AddIteration({0, 3, 1, 100, 0, 5, false}));
  Check(w->AddBlockResize({2, 0x2000, 2}));
  Check(w->AddBlockRemove({1}));
  PageEntry zero[] = {{PageEncoding::kZero, 0, {}, false}};
  Check(w->AddPageRun(2, 1, zero, false));
  Check(w->AddIteration({1, 1, 1, 40, 1, 5, true}));
  Check(w->AddProcessState(testing::kState));
  Check(w->AddEndOfStream(false));
  Bytes b;
  AppendBatch(*w, &b);
  return b;
}

// A restore_check record first (what a live migration sends), then a short stream.
Bytes WithRestoreCheck() {
  static const uint8_t kCheck[] = {'P', 'M', 'R', 'C', 1, 0, 0, 0};
  auto w = StreamWriter::Create(TestPreamble()).value();
  Check(w->AddRestoreCheck(kCheck));
  Check(w->AddBlockAdd({1, MakeBlockFlags(3, BlockKind::kHeap), 0x10000, 0x1000, 1, "heap"}));
  PageEntry zero[] = {{PageEncoding::kZero, 0, {}, false}};
  Check(w->AddPageRun(1, 0, zero, false));
  Check(w->AddIteration({0, 1, 1, 0, 0, 5, true}));
  Check(w->AddProcessState(testing::kState));
  Check(w->AddEndOfStream(false));
  Bytes b;
  AppendBatch(*w, &b);
  return b;
}

Bytes Secondary() {
  auto w = StreamWriter::Create(TestPreamble(Direction::kForward, 2, 3)).value();
  PageEntry zero[] = {{PageEncoding::kZero, 0, {}, false}, {PageEncoding::kZero, 0, {}, false}};
  Check(w->AddPageRun(4, 10, zero, true));
  Check(w->AddIteration({0, 2, 2, 0, 0, 1, false}));
  Check(w->AddEndOfStream(false));
  Bytes b;
  AppendBatch(*w, &b);
  return b;
}

// Zero runs between page runs, a torn-free resend, on a stream with the zero-run feature.
Bytes ZeroRuns() {
  Preamble pre = TestPreamble();
  pre.features |= kFeatureZeroRun;
  auto w = StreamWriter::Create(pre).value();
  Check(w->AddBlockAdd(
      {1, MakeBlockFlags(3, BlockKind::kAnonymous), 0x100000, 0x400000, 1024, "anon"}));
  PageEntry zero[] = {{PageEncoding::kZero, 0, {}, false}};
  Check(w->AddPageRun(1, 0, zero, false));
  Check(w->AddZeroRun({1, 1000, 1}));
  Check(w->AddZeroRun({1, 23, 1001}));
  Check(w->AddIteration({0, 1024, 1024, 0, 0, 5, false}));
  Check(w->AddZeroRun({1, 1, 7}));
  Check(w->AddIteration({1, 1, 1, 28, 1, 5, true}));
  Check(w->AddEndOfStream(false));
  Bytes b;
  AppendBatch(*w, &b);
  return b;
}

// A secondary channel's zero runs (no block table there).
Bytes SecondaryZeroRuns() {
  Preamble pre = TestPreamble(Direction::kForward, 1, 2);
  pre.features |= kFeatureZeroRun;
  auto w = StreamWriter::Create(pre).value();
  Check(w->AddZeroRun({3, 1024, 1024}));
  Check(w->AddIteration({0, 1024, 1024, 0, 0, 1, true}));
  Check(w->AddEndOfStream(false));
  Bytes b;
  AppendBatch(*w, &b);
  return b;
}

Bytes Reverse() {
  auto w = StreamWriter::Create(TestPreamble(Direction::kReverse)).value();
  Check(w->AddAck({AckKind::kPreambleAccepted, 0}));
  Check(w->AddAck({AckKind::kRestoreChecked, 1}));
  Check(w->AddAck({AckKind::kIterationApplied, 1}));
  Check(w->AddError({10, "restore: aborted"}));
  Check(w->AddEndOfStream(true));
  Bytes b;
  AppendBatch(*w, &b);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  std::string dir = argv[1];
  testing::SamplePages pages;
  Write(dir, "small_main", 5, 0, SmallMain());
  Write(dir, "small_main_bytewise", 0, 1, SmallMain());
  Write(dir, "small_main_repair_crcs", 2, 4, SmallMain());
  Write(dir, "sample_raw_pages", 4, 0, testing::SampleStream(pages));
  // Split page runs (option bit 3): runs cut by 97-byte and 4096-byte pieces, placed in pieces.
  Write(dir, "sample_raw_pages_split", 3, 8, testing::SampleStream(pages));
  Write(dir, "sample_raw_pages_split_4096", 4, 8 | 4, testing::SampleStream(pages));
  Write(dir, "secondary_channel", 2, 4, Secondary());
  Write(dir, "restore_check_first", 6, 4, WithRestoreCheck());
  Write(dir, "reverse", 3, 6, Reverse());
  Write(dir, "zero_runs", 7, 4, ZeroRuns());
  Write(dir, "zero_runs_bytewise", 0, 1, ZeroRuns());
  Write(dir, "secondary_zero_runs", 2, 4, SecondaryZeroRuns());
  Bytes cut = SmallMain();
  cut.resize(cut.size() - 5);
  Write(dir, "truncated", 1, 0, cut);
  return 0;
}
