// Helpers shared by the wire tests: a valid sample stream of every forward record type, raw
// record building for malformed streams, and reading a whole byte string with StreamReader.
#ifndef PROCMIG_TESTS_UNIT_WIRE_WIRE_TEST_UTIL_H_
#define PROCMIG_TESTS_UNIT_WIRE_WIRE_TEST_UTIL_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "base/coding.h"
#include "wire/record_codec.h"
#include "wire/stream_reader.h"
#include "wire/stream_writer.h"
#include "wire/wire_format.h"

namespace procmig::wire::testing {

using Bytes = std::vector<uint8_t>;

inline Preamble TestPreamble(Direction d = Direction::kForward, uint16_t index = 0,
                             uint16_t count = 1) {
  Preamble p;
  p.direction = d;
  p.page_size = 4096;
  p.features = kFeatureXbzrle | kFeatureZlib | (count > 1 ? kFeatureMultiChannel : 0);
  for (int i = 0; i < 16; ++i) p.session_id[i] = static_cast<uint8_t>(0xa0 + i);
  p.channel_index = index;
  p.channel_count = count;
  return p;
}

inline void AppendBatch(const StreamWriter& w, Bytes* out) {
  for (const iovec& v : w.batch()) {
    auto* p = static_cast<const uint8_t*>(v.iov_base);
    out->insert(out->end(), p, p + v.iov_len);
  }
}

// Appends a record with a correct crc (unless crc_override is given); for a page run the crc
// covers `covered` bytes of the payload.
inline void AppendRecord(Bytes* out, uint8_t type, uint8_t flags, uint16_t reserved,
                         const Bytes& payload, size_t covered = SIZE_MAX,
                         const uint32_t* crc_override = nullptr) {
  uint8_t h[kRecordHeaderSize];
  EncodeRecordHeader({type, flags, reserved, static_cast<uint32_t>(payload.size()), 0}, h);
  uint32_t crc = RecordCrc(h, {payload.data(), std::min(covered, payload.size())});
  if (crc_override != nullptr) crc = *crc_override;
  EncodeFixed32(h + kRecordCrcOffset, crc);
  out->insert(out->end(), h, h + kRecordHeaderSize);
  out->insert(out->end(), payload.begin(), payload.end());
}

inline Bytes PreambleBytes(const Preamble& p) {
  Bytes b(kPreambleSize);
  EncodePreamble(p, b.data());
  return b;
}

// Page memory for the sample stream: page i is filled with byte (i + 1).
struct SamplePages {
  SamplePages() : mem(4096 * 4) {
    for (size_t i = 0; i < mem.size(); ++i) mem[i] = static_cast<uint8_t>(i / 4096 + 1);
  }
  std::span<const uint8_t> Page(size_t i) const { return {mem.data() + 4096 * i, 4096}; }
  Bytes mem;
};

inline const uint8_t kXbzrleBytes[] = {0x01, 0x02, 0xaa, 0xbb};
inline const uint8_t kZlibBytes[] = {0x78, 0x9c, 0x03, 0x00};
inline const uint8_t kState[] = {'s', 't', 'a', 't', 'e'};

// A valid main-channel stream using every forward record type:
//   block_add 1, block_add 2, page_run(1: zero, raw, xbzrle, zlib), iteration 0,
//   block_resize 2, page_run(2: raw, raw contiguous, live), block_remove 1, iteration 1 final,
//   process_state, end_of_stream.
inline Bytes SampleStream(const SamplePages& pages) {
  auto w = StreamWriter::Create(TestPreamble()).value();
  auto check = [](absl::Status s) {
    if (!s.ok()) std::abort();
  };
  check(w->AddBlockAdd({1, MakeBlockFlags(kBlockProtRead | kBlockProtWrite, BlockKind::kHeap),
                        0x10000, 0x4000, 4, "heap@0x10000"}));
  check(w->AddBlockAdd({2, MakeBlockFlags(kBlockProtRead | kBlockProtWrite, BlockKind::kStack),
                        0x20000, 0x2000, 2, "stack@0x20000"}));
  PageEntry run1[] = {
      {PageEncoding::kZero, 0, {}, false},
      {PageEncoding::kRaw, 0, pages.Page(0), false},
      {PageEncoding::kXbzrle, 0x11111111, kXbzrleBytes, false},
      {PageEncoding::kZlib, 0x22222222, kZlibBytes, false},
  };
  check(w->AddPageRun(1, 0, run1, false));
  check(w->AddIteration({0, 4, 1, 16384, 0, 1000000, false}));
  check(w->AddBlockResize({2, 0x3000, 3}));
  PageEntry run2[] = {
      {PageEncoding::kRaw, 0, pages.Page(1), false},
      {PageEncoding::kRaw, 0, pages.Page(2), false},
  };
  check(w->AddPageRun(2, 1, run2, true));
  check(w->AddBlockRemove({1}));
  check(w->AddIteration({1, 2, 0, 8192, 2, 500, true}));
  check(w->AddProcessState(kState));
  check(w->AddEndOfStream(false));
  Bytes out;
  AppendBatch(*w, &out);
  return out;
}

struct ReadResult {
  std::vector<RecordType> types;
  absl::Status status;  // first error of Next(), or Finish()
};

// Feeds `bytes` in pieces of `chunk` and pulls every record.
inline ReadResult ReadAll(std::span<const uint8_t> bytes, size_t chunk = SIZE_MAX,
                          ReaderOptions options = {}) {
  ReadResult r;
  StreamReader reader(options);
  size_t pos = 0;
  do {
    size_t n = std::min(chunk, bytes.size() - pos);
    if (absl::Status s = reader.Feed(bytes.subspan(pos, n)); !s.ok()) {
      r.status = s;
      return r;
    }
    pos += n;
    while (true) {
      auto rec = reader.Next();
      if (!rec.ok()) {
        r.status = rec.status();
        return r;
      }
      if (*rec == nullptr) break;
      r.types.push_back((*rec)->type);
    }
  } while (pos < bytes.size());
  r.status = reader.Finish();
  return r;
}

inline bool Contains(const absl::Status& s, const std::string& needle) {
  return std::string(s.message()).find(needle) != std::string::npos;
}

}  // namespace procmig::wire::testing

#endif  // PROCMIG_TESTS_UNIT_WIRE_WIRE_TEST_UTIL_H_
