#include "wire/wire_format.h"

#include "base/crc32c.h"

namespace procmig::wire {

const char* RecordTypeName(RecordType type) {
  switch (type) {
    case RecordType::kPreamble:
      return "preamble";
    case RecordType::kBlockAdd:
      return "block_add";
    case RecordType::kBlockRemove:
      return "block_remove";
    case RecordType::kBlockResize:
      return "block_resize";
    case RecordType::kPageRun:
      return "page_run";
    case RecordType::kIteration:
      return "iteration";
    case RecordType::kProcessState:
      return "process_state";
    case RecordType::kEndOfStream:
      return "end_of_stream";
    case RecordType::kRestoreCheck:
      return "restore_check";
    case RecordType::kZeroRun:
      return "zero_run";
    case RecordType::kAck:
      return "ack";
    case RecordType::kError:
      return "error";
  }
  return "unknown";
}

const char* PageEncodingName(PageEncoding encoding) {
  switch (encoding) {
    case PageEncoding::kZero:
      return "zero";
    case PageEncoding::kRaw:
      return "raw";
    case PageEncoding::kXbzrle:
      return "xbzrle";
    case PageEncoding::kZlib:
      return "zlib";
  }
  return "unknown";
}

const char* BlockKindName(BlockKind kind) {
  switch (kind) {
    case BlockKind::kAnonymous:
      return "anon";
    case BlockKind::kHeap:
      return "heap";
    case BlockKind::kStack:
      return "stack";
    case BlockKind::kFilePrivate:
      return "file-private";
  }
  return "unknown";
}

const char* AckKindName(AckKind kind) {
  switch (kind) {
    case AckKind::kPreambleAccepted:
      return "preamble-accepted";
    case AckKind::kIterationApplied:
      return "iteration-applied";
    case AckKind::kEndOfStream:
      return "end-of-stream";
    case AckKind::kResumed:
      return "resumed";
    case AckKind::kRestoreChecked:
      return "restore-checked";
  }
  return "unknown";
}

uint32_t ZeroPageCrc(uint32_t page_size) {
  // A constant table, not mutable state: extended page_size / 4096 times.
  static constexpr uint8_t kZeros[4096] = {};
  uint32_t crc = 0;
  for (uint32_t done = 0; done < page_size; done += sizeof(kZeros)) {
    size_t n = page_size - done < sizeof(kZeros) ? page_size - done : sizeof(kZeros);
    crc = crc32c::Extend(crc, kZeros, n);
  }
  return crc;
}

}  // namespace procmig::wire
