// libFuzzer target for StreamReader: arbitrary bytes, fed in pieces whose sizes come from the
// input, must give records or DataLoss, never a crash, an out-of-bounds view or a buffer larger
// than the biggest record the format allows.
//
// Input layout: byte 0 = chunking seed, byte 1 = options (bit 0/1: expect forward/reverse;
// bit 2: repair every crc first, so mutations get past the checksums to the order and field
// checks; bit 3: split page runs, whose payload is then placed as the receiver places it, from
// the fed bytes and straight from the input not fed yet, into a page buffer: every segment the
// reader hands out must stay inside its run's pages and within a page for encoded ones), the
// rest is the stream. Seeds: tests/fuzz/seeds/fuzz_stream_reader/
// (make_stream_seeds.cc).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <variant>
#include <vector>

#include "base/coding.h"
#include "base/crc32c.h"
#include "wire/record_codec.h"
#include "wire/stream_reader.h"

namespace {

using procmig::wire::Record;

// Reads every byte a record views, so ASan checks that the views are in bounds.
uint64_t Touch(const Record& r) {
  using namespace procmig::wire;
  uint64_t sum = r.offset + r.length;
  auto bytes = [&sum](const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i) sum += p[i];
  };
  if (auto* add = std::get_if<BlockAdd>(&r.body)) {
    bytes(reinterpret_cast<const uint8_t*>(add->name.data()), add->name.size());
  } else if (auto* run = std::get_if<PageRun>(&r.body)) {
    for (const PageEntry& e : run->pages) bytes(e.data.data(), e.data.size());
  } else if (auto* st = std::get_if<ProcessState>(&r.body)) {
    bytes(st->data.data(), st->data.size());
  } else if (auto* rc = std::get_if<RestoreCheck>(&r.body)) {
    bytes(rc->data.data(), rc->data.size());
  } else if (auto* err = std::get_if<ErrorRecord>(&r.body)) {
    bytes(reinterpret_cast<const uint8_t*>(err->message.data()), err->message.size());
  }
  return sum;
}

// Rewrites the preamble crc, the page crcs of raw and zero pages, and every record crc, following
// the declared lengths as far as the bytes go.
void RepairCrcs(std::vector<uint8_t>& s) {
  using namespace procmig;
  using namespace procmig::wire;
  if (s.size() < kPreambleSize) return;
  EncodeFixed32(s.data() + kPreambleCrcOffset, crc32c::Value(s.data(), kPreambleCrcOffset));
  uint32_t page_size = DecodeFixed32(s.data() + 12);
  size_t pos = kPreambleSize;
  while (s.size() - pos >= kRecordHeaderSize) {
    uint8_t* h = s.data() + pos;
    size_t len = DecodeFixed32(h + 4);
    if (s.size() - pos - kRecordHeaderSize < len) return;
    uint8_t* payload = h + kRecordHeaderSize;
    size_t covered = len;
    if (h[0] == static_cast<uint8_t>(RecordType::kPageRun) && len >= kPageRunHeaderSize) {
      uint32_t count = std::min(DecodeFixed32(payload + 4), kMaxPagesPerRun);
      covered = std::min(PageRunMetaSize(count), len);
      size_t data = covered;
      for (uint32_t i = 0; i < count; ++i) {
        uint8_t* d = payload + kPageRunHeaderSize + i * kPageDescriptorSize;
        if (d + kPageDescriptorSize > payload + covered) break;
        size_t n = DecodeFixed32(d + 4);
        if (n > len - data) break;
        if (d[0] == static_cast<uint8_t>(PageEncoding::kRaw)) {
          EncodeFixed32(d + 8, crc32c::Value(payload + data, n));
        } else if (d[0] == static_cast<uint8_t>(PageEncoding::kZero) && page_size <= 65536) {
          EncodeFixed32(d + 8, ZeroPageCrc(page_size));
        }
        data += n;
      }
    }
    EncodeFixed32(h + kRecordCrcOffset, RecordCrc(h, {payload, covered}));
    pos += kRecordHeaderSize + len;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace procmig::wire;
  if (size < 2) return 0;
  uint32_t rng = data[0] * 2654435761u + 1;
  static constexpr size_t kMaxChunk[] = {1, 3, 16, 97, 4096, SIZE_MAX};
  size_t max_chunk = kMaxChunk[data[0] % 6];
  const uint8_t flags = data[1];
  ReaderOptions options;
  if (data[1] & 1) options.direction = Direction::kForward;
  if (data[1] & 2) options.direction = Direction::kReverse;
  std::vector<uint8_t> repaired;
  if (data[1] & 4) {
    repaired.assign(data + 2, data + size);
    RepairCrcs(repaired);
    data = repaired.data();
  } else {
    data += 2;
  }
  size -= 2;

  options.split_page_runs = (flags & 8) != 0;
  StreamReader reader(options);
  const Record* last = nullptr;  // the open split run, when there is one
  volatile uint64_t sink = 0;
  size_t pos = 0;
  bool failed = false;
  static uint8_t page[kMaxPageSize];
  // Places what can be placed of an open split run; false on a DataLoss.
  auto place = [&]() -> bool {
    while (auto seg = reader.NextSegment()) {
      const size_t ps = reader.preamble()->page_size;
      if (last == nullptr || !last->split) __builtin_trap();
      const auto& run = std::get<PageRun>(last->body);
      if (seg->count == 0 || seg->page + seg->count > run.pages.size() ||
          seg->placed >= seg->length || (seg->raw && seg->length != seg->count * ps) ||
          (!seg->raw && (seg->count != 1 || seg->length > ps))) {
        __builtin_trap();
      }
      std::span<const uint8_t> src = reader.FedPayload();
      if (src.size() > seg->remaining()) __builtin_trap();
      const size_t in_page = seg->raw ? seg->placed % ps : seg->placed;
      size_t n = std::min(seg->raw ? ps - in_page : seg->remaining(), src.size());
      if (src.empty()) {  // read "directly" from the input not fed yet
        if (pos == size) return true;
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        n = std::min({seg->raw ? ps - in_page : seg->remaining(), size - pos,
                      max_chunk == SIZE_MAX ? size : 1 + rng % max_chunk});
        src = {data + pos, n};
        pos += n;
      }
      std::memcpy(page + in_page, src.data(), n);
      if (!reader.ConsumePayload(n).ok()) __builtin_trap();
      if (seg->raw && (in_page + n) == ps) {
        auto torn =
            reader.CheckPage(seg->page + static_cast<uint32_t>(seg->placed / ps), {page, ps});
        if (!torn.ok()) {
          if (torn.status().code() != absl::StatusCode::kDataLoss) __builtin_trap();
          return false;
        }
      }
    }
    return true;
  };
  while (pos < size && !failed) {
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    size_t n = max_chunk == SIZE_MAX ? size - pos : 1 + rng % max_chunk;
    if (n > size - pos) n = size - pos;
    if (!reader.Feed({data + pos, n}).ok()) __builtin_trap();  // all input was consumed
    pos += n;
    while (true) {
      if (reader.split_open() && !place()) {
        failed = true;
        break;
      }
      auto r = reader.Next();
      if (!r.ok()) {
        if (r.status().code() != absl::StatusCode::kDataLoss) __builtin_trap();
        failed = true;
        break;
      }
      if (*r == nullptr) break;
      last = *r;
      sink = sink + Touch(**r);
    }
    if (reader.buffer_capacity() > kRecordHeaderSize + kMaxRecordPayload) __builtin_trap();
  }
  absl::Status end = reader.Finish();
  if (!end.ok() && end.code() != absl::StatusCode::kDataLoss) __builtin_trap();
  if (end.ok() && (!reader.ended() || reader.offset() != size)) __builtin_trap();
  return 0;
}
