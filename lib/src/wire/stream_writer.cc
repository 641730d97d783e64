#include "wire/stream_writer.h"

#include "absl/strings/str_cat.h"
#include "base/coding.h"
#include "base/crc32c.h"

namespace procmig::wire {
namespace {

// The smallest buffers that still hold the preamble and one full page run.
constexpr size_t kMinScratch =
    kPreambleSize + kRecordHeaderSize + kPageRunHeaderSize + kMaxPagesPerRun * kPageDescriptorSize;
constexpr size_t kMinIovecs = 16;

}  // namespace

absl::StatusOr<std::unique_ptr<StreamWriter>> StreamWriter::Create(const Preamble& preamble,
                                                                   const WriterOptions& options) {
  if (Reason why = ValidatePreamble(preamble)) {
    return absl::InvalidArgumentError(absl::StrCat("create stream writer: preamble: ", why));
  }
  if (options.scratch_bytes < kMinScratch || options.max_iovecs < kMinIovecs) {
    return absl::InvalidArgumentError(absl::StrCat("create stream writer: need scratch_bytes >= ",
                                                   kMinScratch, " and max_iovecs >= ", kMinIovecs));
  }
  if (options.banks != 1 && options.banks != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("create stream writer: banks must be 1 or 2, not ", options.banks));
  }
  return std::unique_ptr<StreamWriter>(new StreamWriter(preamble, options));
}

StreamWriter::StreamWriter(const Preamble& preamble, const WriterOptions& options)
    : preamble_(preamble),
      options_(options),
      zero_page_crc_(ZeroPageCrc(preamble.page_size)),
      scratch_store_(new uint8_t[options.banks * options.scratch_bytes]),
      iov_store_(new iovec[options.banks * options.max_iovecs]),
      scratch_(scratch_store_.get()),
      iov_(iov_store_.get()) {
  uint8_t* p = TakeScratch(kPreambleSize);
  EncodePreamble(preamble_, p);
  PushIov(p, kPreambleSize);
}

void StreamWriter::ClearBatch() {
  scratch_used_ = 0;
  iov_count_ = 0;
  batch_bytes_ = 0;
}

std::span<const iovec> StreamWriter::TakeBatch() {
  const std::span<const iovec> taken = batch();
  if (options_.banks == 2) {
    bank_ ^= 1;
    scratch_ = scratch_store_.get() + bank_ * options_.scratch_bytes;
    iov_ = iov_store_.get() + bank_ * options_.max_iovecs;
  }
  ClearBatch();
  return taken;
}

absl::Status StreamWriter::DescribeLastError() const {
  if (last_code_ == absl::StatusCode::kOk) return absl::OkStatus();
  return absl::Status(last_code_, absl::StrCat("add ", RecordTypeName(last_type_), ": ",
                                               last_reason_ ? last_reason_ : "unknown"));
}

absl::Status StreamWriter::Reject(absl::StatusCode code, RecordType type, Reason why) {
  last_code_ = code;
  last_type_ = type;
  last_reason_ = why;
  return absl::Status(code, "");  // code only: an empty message does not allocate
}

absl::Status StreamWriter::CheckAllowed(RecordType type) {
  if (ended_) return Reject(absl::StatusCode::kFailedPrecondition, type, "after end_of_stream");
  if (!TypeMatchesDirection(type, preamble_.direction)) {
    return Reject(absl::StatusCode::kFailedPrecondition, type,
                  "record type not allowed in this stream's direction");
  }
  // The reader's order rules that need no block table are mirrored here, so a writer bug
  // shows at the sender rather than as DataLoss at the receiver.
  if (error_sent_ && type != RecordType::kEndOfStream) {
    return Reject(absl::StatusCode::kFailedPrecondition, type, "after an error record");
  }
  if (process_state_sent_ && type != RecordType::kEndOfStream) {
    return Reject(absl::StatusCode::kFailedPrecondition, type, "after process_state");
  }
  if (final_sent_ && type != RecordType::kEndOfStream && type != RecordType::kProcessState) {
    return Reject(absl::StatusCode::kFailedPrecondition, type, "after the final iteration");
  }
  if (preamble_.channel_index != 0 && preamble_.direction == Direction::kForward &&
      type != RecordType::kPageRun && type != RecordType::kZeroRun &&
      type != RecordType::kIteration && type != RecordType::kEndOfStream) {
    return Reject(absl::StatusCode::kFailedPrecondition, type,
                  "secondary channels carry only page runs, zero runs and iterations");
  }
  return absl::OkStatus();
}

absl::Status StreamWriter::CheckRoom(RecordType type, size_t scratch, size_t iovecs) {
  if (scratch_used_ + scratch <= options_.scratch_bytes &&
      iov_count_ + iovecs <= options_.max_iovecs) {
    return absl::OkStatus();
  }
  if (scratch > options_.scratch_bytes || iovecs > options_.max_iovecs) {
    return Reject(absl::StatusCode::kInvalidArgument, type,
                  "record can never fit in a batch of this writer's capacity");
  }
  return Reject(absl::StatusCode::kResourceExhausted, type, "batch full: send and clear it");
}

uint8_t* StreamWriter::TakeScratch(size_t n) {
  uint8_t* p = scratch_ + scratch_used_;
  scratch_used_ += n;
  return p;
}

void StreamWriter::PushIov(const void* p, size_t n) {
  if (n == 0) return;
  batch_bytes_ += n;
  if (iov_count_ > 0) {
    iovec& last = iov_[iov_count_ - 1];
    if (static_cast<const uint8_t*>(last.iov_base) + last.iov_len == p) {
      last.iov_len += n;
      return;
    }
  }
  iov_[iov_count_++] = iovec{const_cast<void*>(p), n};
}

size_t StreamWriter::CountIovecs(const uint8_t* scratch_piece, size_t scratch_size,
                                 std::span<const PageEntry> pages) const {
  size_t n = 0;
  const uint8_t* end = nullptr;
  if (iov_count_ > 0) {
    end = static_cast<const uint8_t*>(iov_[iov_count_ - 1].iov_base) + iov_[iov_count_ - 1].iov_len;
  }
  if (scratch_piece != end) ++n;
  end = scratch_piece + scratch_size;
  for (const PageEntry& e : pages) {
    if (e.data.empty()) continue;
    if (e.data.data() != end) ++n;
    end = e.data.data() + e.data.size();
  }
  return n;
}

absl::Status StreamWriter::AddSmallRecord(RecordType type, uint8_t flags, size_t payload_size,
                                          uint8_t** payload) {
  if (absl::Status s = CheckAllowed(type); !s.ok()) return s;
  size_t size = kRecordHeaderSize + payload_size;
  const uint8_t* at = scratch_ + scratch_used_;
  if (absl::Status s = CheckRoom(type, size, CountIovecs(at, size, {})); !s.ok()) return s;
  uint8_t* header = TakeScratch(size);
  EncodeRecordHeader({static_cast<uint8_t>(type), flags, 0, static_cast<uint32_t>(payload_size), 0},
                     header);
  *payload = header + kRecordHeaderSize;
  return absl::OkStatus();
}

void StreamWriter::FinishSmallRecord(uint8_t* header, size_t payload_size) {
  EncodeFixed32(header + kRecordCrcOffset,
                RecordCrc(header, {header + kRecordHeaderSize, payload_size}));
  PushIov(header, kRecordHeaderSize + payload_size);
  ++records_;
}

absl::Status StreamWriter::AddBlockAdd(const BlockAdd& b) {
  if (Reason why = ValidateBlockAdd(b, preamble_.page_size)) {
    return Reject(absl::StatusCode::kInvalidArgument, RecordType::kBlockAdd, why);
  }
  uint8_t* payload;
  size_t size = BlockAddSize(b);
  if (absl::Status s = AddSmallRecord(RecordType::kBlockAdd, 0, size, &payload); !s.ok()) {
    return s;
  }
  EncodeBlockAdd(b, payload);
  FinishSmallRecord(payload - kRecordHeaderSize, size);
  return absl::OkStatus();
}

absl::Status StreamWriter::AddBlockRemove(const BlockRemove& b) {
  if (b.block_id == 0) {
    return Reject(absl::StatusCode::kInvalidArgument, RecordType::kBlockRemove,
                  "block id 0 is invalid");
  }
  uint8_t* payload;
  if (absl::Status s = AddSmallRecord(RecordType::kBlockRemove, 0, kBlockRemoveSize, &payload);
      !s.ok()) {
    return s;
  }
  EncodeBlockRemove(b, payload);
  FinishSmallRecord(payload - kRecordHeaderSize, kBlockRemoveSize);
  return absl::OkStatus();
}

absl::Status StreamWriter::AddBlockResize(const BlockResize& b) {
  if (Reason why = ValidateBlockResize(b, preamble_.page_size)) {
    return Reject(absl::StatusCode::kInvalidArgument, RecordType::kBlockResize, why);
  }
  uint8_t* payload;
  if (absl::Status s = AddSmallRecord(RecordType::kBlockResize, 0, kBlockResizeSize, &payload);
      !s.ok()) {
    return s;
  }
  EncodeBlockResize(b, payload);
  FinishSmallRecord(payload - kRecordHeaderSize, kBlockResizeSize);
  return absl::OkStatus();
}

absl::Status StreamWriter::AddPageRun(uint32_t block_id, uint64_t first_page,
                                      std::span<const PageEntry> pages, bool live) {
  constexpr RecordType kType = RecordType::kPageRun;
  if (absl::Status s = CheckAllowed(kType); !s.ok()) return s;
  if (block_id == 0) {
    return Reject(absl::StatusCode::kInvalidArgument, kType, "block id 0 is invalid");
  }
  if (pages.empty() || pages.size() > kMaxPagesPerRun) {
    return Reject(absl::StatusCode::kInvalidArgument, kType, "page count not in [1, 1024]");
  }
  if (first_page + pages.size() < first_page) {
    return Reject(absl::StatusCode::kInvalidArgument, kType, "page range wraps");
  }
  size_t data_bytes = 0;
  for (const PageEntry& e : pages) {
    if (Reason why =
            ValidatePageEntry(e.encoding, e.data.size(), preamble_.page_size, preamble_.features)) {
      return Reject(absl::StatusCode::kInvalidArgument, kType, why);
    }
    data_bytes += e.data.size();
  }
  size_t meta = PageRunMetaSize(pages.size());
  const uint8_t* at = scratch_ + scratch_used_;
  if (absl::Status s = CheckRoom(kType, kRecordHeaderSize + meta,
                                 CountIovecs(at, kRecordHeaderSize + meta, pages));
      !s.ok()) {
    return s;
  }
  uint8_t* header = TakeScratch(kRecordHeaderSize + meta);
  uint8_t* body = header + kRecordHeaderSize;
  EncodePageRunMeta(block_id, first_page, pages, zero_page_crc_, body);
  EncodeRecordHeader({static_cast<uint8_t>(kType), live ? kPageRunLive : uint8_t{0}, 0,
                      static_cast<uint32_t>(meta + data_bytes), 0},
                     header);
  // The record crc covers the header and descriptors; the pages are covered by their own crcs.
  EncodeFixed32(header + kRecordCrcOffset, RecordCrc(header, {body, meta}));
  PushIov(header, kRecordHeaderSize + meta);
  for (const PageEntry& e : pages) PushIov(e.data.data(), e.data.size());
  ++records_;
  pages_ += pages.size();
  return absl::OkStatus();
}

absl::Status StreamWriter::AddZeroRun(const ZeroRun& z) {
  if (Reason why = ValidateZeroRun(z, preamble_.features)) {
    return Reject(absl::StatusCode::kInvalidArgument, RecordType::kZeroRun, why);
  }
  uint8_t* payload;
  if (absl::Status s = AddSmallRecord(RecordType::kZeroRun, 0, kZeroRunSize, &payload); !s.ok()) {
    return s;
  }
  EncodeZeroRun(z, payload);
  FinishSmallRecord(payload - kRecordHeaderSize, kZeroRunSize);
  pages_ += z.count;
  return absl::OkStatus();
}

absl::Status StreamWriter::AddIteration(const IterationMarker& m) {
  if (m.iteration != next_iteration_) {
    return Reject(absl::StatusCode::kInvalidArgument, RecordType::kIteration,
                  "iterations must be numbered 0, 1, 2, ... without gaps");
  }
  uint8_t* payload;
  if (absl::Status s = AddSmallRecord(
          RecordType::kIteration, m.final ? kIterationFinal : uint8_t{0}, kIterationSize, &payload);
      !s.ok()) {
    return s;
  }
  EncodeIteration(m, payload);
  FinishSmallRecord(payload - kRecordHeaderSize, kIterationSize);
  ++next_iteration_;
  final_sent_ = m.final;
  return absl::OkStatus();
}

absl::Status StreamWriter::AddProcessState(std::span<const uint8_t> state) {
  constexpr RecordType kType = RecordType::kProcessState;
  if (absl::Status s = CheckAllowed(kType); !s.ok()) return s;
  if (state.empty() || state.size() > kMaxProcessState) {
    return Reject(absl::StatusCode::kInvalidArgument, kType,
                  "process state size not in [1, 64 MiB]");
  }
  const uint8_t* at = scratch_ + scratch_used_;
  PageEntry piece{PageEncoding::kRaw, 0, state, false};
  if (absl::Status s =
          CheckRoom(kType, kRecordHeaderSize, CountIovecs(at, kRecordHeaderSize, {&piece, 1}));
      !s.ok()) {
    return s;
  }
  uint8_t* header = TakeScratch(kRecordHeaderSize);
  EncodeRecordHeader({static_cast<uint8_t>(kType), 0, 0, static_cast<uint32_t>(state.size()), 0},
                     header);
  EncodeFixed32(header + kRecordCrcOffset, RecordCrc(header, state));
  PushIov(header, kRecordHeaderSize);
  PushIov(state.data(), state.size());
  ++records_;
  process_state_sent_ = true;
  return absl::OkStatus();
}

absl::Status StreamWriter::AddRestoreCheck(std::span<const uint8_t> check) {
  constexpr RecordType kType = RecordType::kRestoreCheck;
  if (absl::Status s = CheckAllowed(kType); !s.ok()) return s;
  if (records_ != 0) {
    return Reject(absl::StatusCode::kFailedPrecondition, kType,
                  "restore_check must be the first record after the preamble");
  }
  if (check.empty() || check.size() > kMaxRestoreCheck) {
    return Reject(absl::StatusCode::kInvalidArgument, kType,
                  "restore check size not in [1, 16 MiB]");
  }
  const uint8_t* at = scratch_ + scratch_used_;
  PageEntry piece{PageEncoding::kRaw, 0, check, false};
  if (absl::Status s =
          CheckRoom(kType, kRecordHeaderSize, CountIovecs(at, kRecordHeaderSize, {&piece, 1}));
      !s.ok()) {
    return s;
  }
  uint8_t* header = TakeScratch(kRecordHeaderSize);
  EncodeRecordHeader({static_cast<uint8_t>(kType), 0, 0, static_cast<uint32_t>(check.size()), 0},
                     header);
  EncodeFixed32(header + kRecordCrcOffset, RecordCrc(header, check));
  PushIov(header, kRecordHeaderSize);
  PushIov(check.data(), check.size());
  ++records_;
  return absl::OkStatus();
}

absl::Status StreamWriter::AddEndOfStream(bool aborted) {
  uint8_t* payload;
  if (absl::Status s = AddSmallRecord(RecordType::kEndOfStream, aborted ? kEndAborted : uint8_t{0},
                                      kEndOfStreamSize, &payload);
      !s.ok()) {
    return s;
  }
  EncodeEndOfStream({records_, pages_, aborted}, payload);
  FinishSmallRecord(payload - kRecordHeaderSize, kEndOfStreamSize);
  --records_;  // end_of_stream counts the records before it
  ended_ = true;
  return absl::OkStatus();
}

absl::Status StreamWriter::AddAck(const Ack& a) {
  if (a.kind < AckKind::kPreambleAccepted || a.kind > AckKind::kRestoreChecked) {
    return Reject(absl::StatusCode::kInvalidArgument, RecordType::kAck, "unknown ack kind");
  }
  uint8_t* payload;
  if (absl::Status s = AddSmallRecord(RecordType::kAck, 0, kAckSize, &payload); !s.ok()) {
    return s;
  }
  EncodeAck(a, payload);
  FinishSmallRecord(payload - kRecordHeaderSize, kAckSize);
  return absl::OkStatus();
}

absl::Status StreamWriter::AddError(const ErrorRecord& e) {
  if (Reason why = ValidateError(e)) {
    return Reject(absl::StatusCode::kInvalidArgument, RecordType::kError, why);
  }
  uint8_t* payload;
  size_t size = ErrorSize(e);
  if (absl::Status s = AddSmallRecord(RecordType::kError, 0, size, &payload); !s.ok()) {
    return s;
  }
  EncodeError(e, payload);
  FinishSmallRecord(payload - kRecordHeaderSize, size);
  error_sent_ = true;
  return absl::OkStatus();
}

}  // namespace procmig::wire
