#include "wire/stream_reader.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/coding.h"
#include "base/crc32c.h"

namespace procmig::wire {
namespace {

bool AllowedInMode(RecordType t, StreamReader::Mode mode) {
  switch (mode) {
    case StreamReader::Mode::kMain:
      return t >= RecordType::kBlockAdd && t <= RecordType::kZeroRun;
    case StreamReader::Mode::kPagesOnly:
      return t == RecordType::kPageRun || t == RecordType::kZeroRun ||
             t == RecordType::kIteration || t == RecordType::kEndOfStream;
    case StreamReader::Mode::kReverse:
      return t == RecordType::kAck || t == RecordType::kError || t == RecordType::kEndOfStream;
    case StreamReader::Mode::kUnknown:
      break;
  }
  return false;
}

const char* ModeName(StreamReader::Mode mode) {
  switch (mode) {
    case StreamReader::Mode::kMain:
      return "the main channel";
    case StreamReader::Mode::kPagesOnly:
      return "a secondary (pages only) channel";
    case StreamReader::Mode::kReverse:
      return "a reverse channel";
    case StreamReader::Mode::kUnknown:
      break;
  }
  return "an unknown channel";
}

}  // namespace

StreamReader::StreamReader(ReaderOptions options)
    : options_(options),
      page_scratch_(new PageEntry[kMaxPagesPerRun]),
      lengths_(options.split_page_runs ? new uint32_t[kMaxPagesPerRun] : nullptr) {}

absl::Status StreamReader::Fail(uint64_t offset, const std::string& what,
                                const std::string& detail) {
  // "preamble at offset 0: ...", "record at offset N: ..." or "record at offset N (type): ...".
  if (what == "preamble" || what == "record") {
    status_ = absl::DataLossError(absl::StrCat(what, " at offset ", offset, ": ", detail));
  } else {
    status_ =
        absl::DataLossError(absl::StrCat("record at offset ", offset, " (", what, "): ", detail));
  }
  return status_;
}

absl::Status StreamReader::Feed(std::span<const uint8_t> bytes) {
  if (!status_.ok()) return status_;
  if (input_pos_ != input_.size()) {
    return absl::FailedPreconditionError(
        "feed stream reader: previous input not consumed (call Next() until it returns null)");
  }
  if (clear_pending_) DropPending();
  input_ = bytes;
  input_pos_ = 0;
  return absl::OkStatus();
}

const uint8_t* StreamReader::Take(size_t need) {
  unit_need_ = need;
  size_t avail = input_.size() - input_pos_;
  if (pending_.empty() && avail >= need) return input_.data() + input_pos_;
  if (pending_.size() >= need) return pending_.data();
  size_t n = std::min(need - pending_.size(), avail);
  if (n == 0) return nullptr;
  size_t want = pending_.size() + n;
  if (want > pending_.capacity()) {
    // Grow geometrically for 1-byte feeding, but never beyond this unit's checked size.
    pending_.reserve(std::min(need, std::max(want, 2 * pending_.capacity())));
  }
  pending_.insert(pending_.end(), input_.data() + input_pos_, input_.data() + input_pos_ + n);
  input_pos_ += n;
  return pending_.size() == need ? pending_.data() : nullptr;
}

void StreamReader::DropPending() {
  clear_pending_ = false;
  if (pending_.capacity() > kKeepBuffer) {
    std::vector<uint8_t>().swap(pending_);  // a rare big record (process state) is not kept
  } else {
    pending_.clear();
  }
}

void StreamReader::Consume(size_t size) {
  if (pending_.empty()) {
    input_pos_ += size;
  } else {
    clear_pending_ = true;  // record_ may still view it; dropped on the next call
  }
  offset_ += size;
  unit_need_ = 0;
}

absl::Status StreamReader::ParsePreamble(const uint8_t* p) {
  for (size_t i = 0; i < kMagic.size(); ++i) {
    if (p[i] != kMagic[i]) return Fail(0, "preamble", "bad magic (not a procmig stream)");
  }
  uint32_t stored = DecodeFixed32(p + kPreambleCrcOffset);
  uint32_t computed = crc32c::Value(p, kPreambleCrcOffset);
  if (stored != computed) {
    return Fail(0, "preamble",
                absl::StrFormat("crc mismatch (stored 0x%08x, computed 0x%08x)", stored, computed));
  }
  Preamble pre = DecodePreambleFields(p);
  if (pre.version != kVersion) {
    return Fail(
        0, "preamble",
        absl::StrCat("unsupported version ", pre.version, " (this reader reads ", kVersion, ")"));
  }
  if (p[11] != 0) return Fail(0, "preamble", "reserved byte is not zero");
  if (Reason why = ValidatePreamble(pre)) return Fail(0, "preamble", why);
  if (options_.direction && *options_.direction != pre.direction) {
    return Fail(0, "preamble", "stream direction is not the expected one");
  }
  preamble_ = pre;
  if (pre.direction == Direction::kReverse) {
    mode_ = Mode::kReverse;
  } else {
    mode_ = pre.channel_index == 0 ? Mode::kMain : Mode::kPagesOnly;
  }
  zero_page_crc_ = ZeroPageCrc(pre.page_size);
  blocks_ = BlockTable(pre.page_size);
  record_.type = RecordType::kPreamble;
  record_.flags = 0;
  record_.offset = 0;
  record_.length = kPreambleSize;
  record_.body = pre;
  record_.torn_pages = 0;
  record_.split = false;
  return absl::OkStatus();
}

absl::Status StreamReader::CheckHeader(const RecordHeader& h) {
  PayloadLimits lim;
  if (!LimitsFor(h.type, preamble_->page_size, &lim)) {
    return Fail(offset_, "record", absl::StrCat("unknown record type ", h.type));
  }
  auto type = static_cast<RecordType>(h.type);
  std::string what = RecordTypeName(type);
  if (!AllowedInMode(type, mode_)) {
    return Fail(offset_, what, absl::StrCat("type not allowed on ", ModeName(mode_)));
  }
  if (h.reserved != 0) {
    return Fail(offset_, what, absl::StrFormat("reserved header bits set (0x%04x)", h.reserved));
  }
  if ((h.flags & ~AllowedFlags(type)) != 0) {
    return Fail(offset_, what,
                absl::StrFormat("unknown flags 0x%02x", h.flags & ~AllowedFlags(type)));
  }
  if (h.length < lim.min || h.length > lim.max) {
    return Fail(offset_, what,
                absl::StrCat("length ", h.length, " outside [", lim.min, ", ", lim.max, "]"));
  }
  return absl::OkStatus();
}

absl::Status StreamReader::DecodeBody(const RecordHeader& h, std::span<const uint8_t> payload) {
  auto type = static_cast<RecordType>(h.type);
  const char* what = RecordTypeName(type);
  uint32_t page_size = preamble_->page_size;
  Reason why = nullptr;
  record_.torn_pages = 0;
  switch (type) {
    case RecordType::kBlockAdd: {
      BlockAdd b;
      why = DecodeBlockAdd(payload, page_size, &b);
      record_.body = b;
      break;
    }
    case RecordType::kBlockRemove: {
      BlockRemove b;
      why = DecodeBlockRemove(payload, &b);
      record_.body = b;
      break;
    }
    case RecordType::kBlockResize: {
      BlockResize b;
      why = DecodeBlockResize(payload, page_size, &b);
      record_.body = b;
      break;
    }
    case RecordType::kPageRun: {
      PageRun run;
      uint32_t bad_page = 0;
      why = DecodePageRun(payload, h.flags, page_size, preamble_->features, zero_page_crc_,
                          {page_scratch_.get(), kMaxPagesPerRun}, &run, &record_.torn_pages,
                          &bad_page);
      if (why != nullptr && bad_page != UINT32_MAX) {
        return Fail(offset_, what, absl::StrCat("page ", bad_page, ": ", why));
      }
      record_.body = run;
      break;
    }
    case RecordType::kZeroRun: {
      ZeroRun z;
      why = DecodeZeroRun(payload, preamble_->features, &z);
      record_.body = z;
      break;
    }
    case RecordType::kIteration: {
      IterationMarker m;
      DecodeIteration(payload, h.flags, &m);
      record_.body = m;
      break;
    }
    case RecordType::kProcessState:
      record_.body = ProcessState{payload};
      break;
    case RecordType::kRestoreCheck:
      record_.body = RestoreCheck{payload};
      break;
    case RecordType::kEndOfStream: {
      EndOfStream e;
      DecodeEndOfStream(payload, h.flags, &e);
      record_.body = e;
      break;
    }
    case RecordType::kAck: {
      Ack a;
      why = DecodeAck(payload, &a);
      record_.body = a;
      break;
    }
    case RecordType::kError: {
      ErrorRecord e;
      why = DecodeError(payload, &e);
      record_.body = e;
      break;
    }
    case RecordType::kPreamble:
      why = "not a record type";
      break;
  }
  if (why != nullptr) return Fail(offset_, what, why);
  return absl::OkStatus();
}

void StreamReader::TrackTorn(const PageRun& run) {
  for (size_t i = 0; i < run.pages.size(); ++i) {
    auto key = std::make_pair(run.block_id, run.first_page + i);
    if (run.pages[i].torn) {
      torn_.try_emplace(key, offset_);
    } else if (!torn_.empty()) {
      torn_.erase(key);
    }
  }
}

void StreamReader::UntrackTorn(const ZeroRun& run) {
  if (torn_.empty()) return;
  const uint64_t end = run.first_page + run.count;
  absl::erase_if(torn_, [&](const auto& kv) {
    return kv.first.first == run.block_id && kv.first.second >= run.first_page &&
           kv.first.second < end;
  });
}

absl::Status StreamReader::ApplyOrder(const RecordHeader& h) {
  auto type = static_cast<RecordType>(h.type);
  std::string what = RecordTypeName(type);
  if (error_seen_ && type != RecordType::kEndOfStream) {
    return Fail(offset_, what, "record after an error record");
  }
  if (process_state_seen_ && type != RecordType::kEndOfStream) {
    return Fail(offset_, what, "record after process_state");
  }
  bool block_or_pages = type == RecordType::kBlockAdd || type == RecordType::kBlockRemove ||
                        type == RecordType::kBlockResize || type == RecordType::kPageRun ||
                        type == RecordType::kZeroRun || type == RecordType::kIteration;
  if (final_seen_ && block_or_pages) {
    return Fail(offset_, what, "record after the final iteration");
  }
  Reason why = nullptr;
  switch (type) {
    case RecordType::kBlockAdd:
      why = blocks_.Add(std::get<BlockAdd>(record_.body));
      break;
    case RecordType::kBlockRemove: {
      uint32_t id = std::get<BlockRemove>(record_.body).block_id;
      why = blocks_.Remove(id);
      if (why == nullptr)
        absl::erase_if(torn_, [id](const auto& kv) { return kv.first.first == id; });
      break;
    }
    case RecordType::kBlockResize: {
      const auto& r = std::get<BlockResize>(record_.body);
      why = blocks_.Resize(r);
      if (why == nullptr) {
        absl::erase_if(torn_, [&r](const auto& kv) {
          return kv.first.first == r.block_id && kv.first.second >= r.new_page_count;
        });
      }
      break;
    }
    case RecordType::kPageRun: {
      const auto& run = std::get<PageRun>(record_.body);
      if (mode_ == Mode::kMain) {
        why = blocks_.CheckRun(run.block_id, run.first_page, run.pages.size());
        // A split run's pages are checked later: CloseSplitRun tracks them.
        if (why == nullptr && options_.track_torn && !record_.split) TrackTorn(run);
      }
      pages_ += run.pages.size();
      break;
    }
    case RecordType::kZeroRun: {
      const auto& run = std::get<ZeroRun>(record_.body);
      if (mode_ == Mode::kMain) {
        why = blocks_.CheckZeroRun(run.block_id, run.first_page, run.count);
        if (why == nullptr && options_.track_torn) UntrackTorn(run);
      }
      pages_ += run.count;
      break;
    }
    case RecordType::kIteration: {
      const auto& m = std::get<IterationMarker>(record_.body);
      if (m.iteration != next_iteration_) {
        return Fail(offset_, what,
                    absl::StrCat("iteration ", m.iteration, " out of order (expected ",
                                 next_iteration_, ")"));
      }
      ++next_iteration_;
      final_seen_ = m.final;
      break;
    }
    case RecordType::kProcessState:
      process_state_seen_ = true;
      break;
    case RecordType::kRestoreCheck:
      // Up front or never: the receiver decides before any memory arrives.
      if (records_ != 0) why = "restore_check is not the first record after the preamble";
      break;
    case RecordType::kError:
      error_seen_ = true;
      break;
    case RecordType::kEndOfStream: {
      const auto& e = std::get<EndOfStream>(record_.body);
      if (e.record_count != records_ || e.page_count != pages_) {
        return Fail(
            offset_, what,
            absl::StrCat("counts do not match the stream (says ", e.record_count, " records and ",
                         e.page_count, " pages, read ", records_, " and ", pages_, ")"));
      }
      if (!e.aborted && !torn_.empty()) {
        const auto& [key, at] = *torn_.begin();
        return Fail(offset_, what,
                    absl::StrCat(torn_.size(), " torn page(s) never resent (e.g. block ", key.first,
                                 " page ", key.second, ", torn in record at offset ", at, ")"));
      }
      ended_ = true;
      return absl::OkStatus();
    }
    default:
      break;
  }
  if (why != nullptr) return Fail(offset_, what, why);
  ++records_;
  return absl::OkStatus();
}

absl::Status StreamReader::NextSplitRun(const RecordHeader& h, bool* ready) {
  *ready = false;
  // Waiting for the descriptors, Finish() still speaks of the whole record, as when buffered.
  const size_t unit = kRecordHeaderSize + h.length;
  const uint8_t* p = Take(kRecordHeaderSize + kPageRunHeaderSize);  // length >= 28: inside it
  unit_need_ = unit;
  if (p == nullptr) return absl::OkStatus();
  // What the buffered path's crc covers, taken alone: the payload is not buffered.
  uint32_t count = DecodeFixed32(p + kRecordHeaderSize + 4);
  const size_t covered =
      std::min<size_t>(PageRunMetaSize(std::min(count, kMaxPagesPerRun)), h.length);
  p = Take(kRecordHeaderSize + covered);
  unit_need_ = unit;
  if (p == nullptr) return absl::OkStatus();
  std::span<const uint8_t> meta(p + kRecordHeaderSize, covered);
  uint32_t computed = RecordCrc(p, meta);
  if (computed != h.crc) {
    return Fail(offset_, RecordTypeName(RecordType::kPageRun),
                absl::StrFormat("crc mismatch (stored 0x%08x, computed 0x%08x)", h.crc, computed));
  }
  record_.type = RecordType::kPageRun;
  record_.flags = h.flags;
  record_.offset = offset_;
  record_.length = h.length;
  record_.torn_pages = 0;
  record_.split = true;
  PageRun run;
  uint32_t bad_page = 0;
  Reason why = DecodePageRunMeta(meta, h.length, h.flags, preamble_->page_size, preamble_->features,
                                 zero_page_crc_, {page_scratch_.get(), kMaxPagesPerRun},
                                 {lengths_.get(), kMaxPagesPerRun}, &run, &bad_page);
  if (why != nullptr) {
    return Fail(offset_, RecordTypeName(RecordType::kPageRun),
                bad_page != UINT32_MAX ? absl::StrCat("page ", bad_page, ": ", why) : why);
  }
  record_.body = run;
  if (absl::Status s = ApplyOrder(h); !s.ok()) return s;
  // The header and descriptors are consumed; the payload comes next. offset_ stays at the
  // record until the run closes ("bytes of complete units").
  if (pending_.empty()) {
    input_pos_ += kRecordHeaderSize + covered;
  } else {
    clear_pending_ = true;
  }
  split_open_ = true;
  split_unit_ = unit;
  split_done_ = kRecordHeaderSize + covered;
  split_count_ = static_cast<uint32_t>(run.pages.size());
  split_page_ = 0;
  split_page_placed_ = 0;
  split_checked_ = 0;
  unit_need_ = split_unit_;
  SkipEmptyPages();
  *ready = true;
  return absl::OkStatus();
}

void StreamReader::SkipEmptyPages() {
  while (split_page_ < split_count_ && split_page_placed_ == lengths_[split_page_]) {
    ++split_page_;
    split_page_placed_ = 0;
  }
}

void StreamReader::SkipUncheckedPages() {
  const PageEntry* e = page_scratch_.get();
  while (split_checked_ < split_count_ && e[split_checked_].encoding != PageEncoding::kRaw) {
    ++split_checked_;
  }
}

std::optional<PayloadSegment> StreamReader::NextSegment() const {
  if (!split_open_ || split_page_ >= split_count_) return std::nullopt;
  const PageEntry* e = page_scratch_.get();
  PayloadSegment s;
  s.page = split_page_;
  s.placed = split_page_placed_;
  if (e[split_page_].encoding == PageEncoding::kRaw) {
    uint32_t j = split_page_;
    while (j < split_count_ && e[j].encoding == PageEncoding::kRaw) ++j;
    s.count = j - split_page_;
    s.length = static_cast<size_t>(s.count) * preamble_->page_size;
  } else {
    s.raw = false;
    s.count = 1;
    s.length = lengths_[split_page_];
  }
  return s;
}

size_t StreamReader::PayloadBytesBefore(uint32_t min_raw_pages) const {
  if (!split_open_) return 0;
  const PageEntry* e = page_scratch_.get();
  size_t bytes = 0;
  size_t placed = split_page_placed_;
  for (uint32_t i = split_page_; i < split_count_; placed = 0) {
    if (e[i].encoding != PageEncoding::kRaw) {
      bytes += lengths_[i] - placed;
      ++i;
      continue;
    }
    uint32_t j = i;
    while (j < split_count_ && e[j].encoding == PageEncoding::kRaw) ++j;
    if (j - i >= min_raw_pages) break;
    bytes += static_cast<size_t>(j - i) * preamble_->page_size - placed;
    i = j;
  }
  return bytes;
}

std::span<const uint8_t> StreamReader::FedPayload() const {
  std::optional<PayloadSegment> seg = NextSegment();
  if (!seg) return {};
  return input_.subspan(input_pos_, std::min(input_.size() - input_pos_, seg->remaining()));
}

absl::Status StreamReader::ConsumePayload(size_t n) {
  if (!status_.ok()) return status_;
  std::optional<PayloadSegment> seg = NextSegment();
  if (!seg || n > seg->remaining()) {
    return absl::FailedPreconditionError(absl::StrCat("consume page run payload: ", n,
                                                      " bytes, more than the segment's ",
                                                      seg ? seg->remaining() : 0));
  }
  const size_t fed = input_.size() - input_pos_;
  if (fed > 0) {
    if (n > fed) {
      return absl::FailedPreconditionError(absl::StrCat(
          "consume page run payload: ", n, " bytes, but only the ", fed, " fed ones are next"));
    }
    input_pos_ += n;
  }
  split_done_ += n;
  while (n > 0) {  // inside the segment: its pages only
    const size_t k = std::min<size_t>(n, lengths_[split_page_] - split_page_placed_);
    split_page_placed_ += k;
    n -= k;
    SkipEmptyPages();
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> StreamReader::CheckPage(uint32_t index, std::span<const uint8_t> page) {
  if (!status_.ok()) return status_;
  SkipUncheckedPages();
  if (!split_open_ || index != split_checked_ || index >= split_page_) {
    return absl::FailedPreconditionError(
        absl::StrCat("check page ", index, " of a split page run: not the next placed raw page"));
  }
  if (page.size() != preamble_->page_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("check page ", index, " of a split page run: ", page.size(), " bytes"));
  }
  ++split_checked_;
  PageEntry& entry = page_scratch_[index];
  if (crc32c::Value(page.data(), page.size()) == entry.page_crc) return false;
  if (!std::get<PageRun>(record_.body).live) {
    return Fail(record_.offset, RecordTypeName(RecordType::kPageRun),
                absl::StrCat("page ", index, ": raw page crc mismatch"));
  }
  entry.torn = true;
  ++record_.torn_pages;
  return true;
}

absl::Status StreamReader::CloseSplitRun(bool* closed) {
  *closed = false;
  if (split_page_ < split_count_) {
    if (input_pos_ < input_.size()) {
      return absl::FailedPreconditionError(
          "next record: fed payload of the split page run not placed (ConsumePayload)");
    }
    return absl::OkStatus();  // the rest of the payload has not been placed yet
  }
  SkipUncheckedPages();
  if (split_checked_ < split_count_) {
    return absl::FailedPreconditionError(absl::StrCat("next record: raw page ", split_checked_,
                                                      " of the split page run at offset ", offset_,
                                                      " was not checked (CheckPage)"));
  }
  if (mode_ == Mode::kMain && options_.track_torn) TrackTorn(std::get<PageRun>(record_.body));
  offset_ += split_unit_;
  split_open_ = false;
  unit_need_ = 0;
  *closed = true;
  return absl::OkStatus();
}

absl::StatusOr<const Record*> StreamReader::Next() {
  if (!status_.ok()) return status_;
  if (clear_pending_) DropPending();
  if (split_open_) {
    bool closed = false;
    if (absl::Status s = CloseSplitRun(&closed); !s.ok()) return s;
    if (!closed) return nullptr;
  }
  if (!preamble_) {
    const uint8_t* p = Take(kPreambleSize);
    if (p == nullptr) {
      // Refuse a foreign stream as soon as its first bytes arrive.
      for (size_t i = 0; i < pending_.size() && i < kMagic.size(); ++i) {
        if (pending_[i] != kMagic[i])
          return Fail(0, "preamble", "bad magic (not a procmig stream)");
      }
      return nullptr;
    }
    if (absl::Status s = ParsePreamble(p); !s.ok()) return s;
    Consume(kPreambleSize);
    return &record_;
  }
  if (ended_) {
    if (input_pos_ < input_.size()) {
      return Fail(offset_, "record", "data after end_of_stream");
    }
    return nullptr;
  }
  const uint8_t* hp = Take(kRecordHeaderSize);
  if (hp == nullptr) return nullptr;
  RecordHeader h = DecodeRecordHeader(hp);
  if (absl::Status s = CheckHeader(h); !s.ok()) return s;
  if (options_.split_page_runs && static_cast<RecordType>(h.type) == RecordType::kPageRun &&
      pending_.size() + (input_.size() - input_pos_) < kRecordHeaderSize + h.length) {
    bool ready = false;
    if (absl::Status s = NextSplitRun(h, &ready); !s.ok()) return s;
    if (!ready) return nullptr;
    return &record_;
  }
  const uint8_t* p = Take(kRecordHeaderSize + h.length);
  if (p == nullptr) return nullptr;
  std::span<const uint8_t> payload(p + kRecordHeaderSize, h.length);
  auto type = static_cast<RecordType>(h.type);
  std::span<const uint8_t> covered = payload;
  if (type == RecordType::kPageRun) {
    // Only the run header and descriptors; pages carry their own crcs. The count is checked
    // again by DecodePageRun; here it only has to keep the span inside the payload.
    uint32_t count = DecodeFixed32(payload.data() + 4);
    covered = payload.first(
        std::min<size_t>(PageRunMetaSize(std::min(count, kMaxPagesPerRun)), payload.size()));
  }
  uint32_t computed = RecordCrc(p, covered);  // hp may have moved when pending_ grew
  if (computed != h.crc) {
    return Fail(offset_, RecordTypeName(type),
                absl::StrFormat("crc mismatch (stored 0x%08x, computed 0x%08x)", h.crc, computed));
  }
  record_.type = type;
  record_.flags = h.flags;
  record_.offset = offset_;
  record_.length = h.length;
  record_.split = false;
  if (absl::Status s = DecodeBody(h, payload); !s.ok()) return s;
  if (absl::Status s = ApplyOrder(h); !s.ok()) return s;
  Consume(kRecordHeaderSize + h.length);
  return &record_;
}

absl::Status StreamReader::Finish() const {
  if (!status_.ok()) return status_;
  size_t partial = clear_pending_ ? 0 : pending_.size();  // a consumed unit is not partial
  uint64_t have = offset_ + partial;
  if (!preamble_) {
    return absl::DataLossError(absl::StrCat("stream truncated at offset ", have,
                                            ": preamble incomplete (", partial, " of ",
                                            kPreambleSize, " bytes)"));
  }
  if (ended_) return absl::OkStatus();
  if (split_open_) {
    return absl::DataLossError(absl::StrCat("stream truncated at offset ", offset_ + split_done_,
                                            ": record at offset ", offset_, " incomplete (",
                                            split_done_, " of ", split_unit_, " bytes)"));
  }
  if (partial > 0) {
    return absl::DataLossError(absl::StrCat("stream truncated at offset ", have,
                                            ": record at offset ", offset_, " incomplete (",
                                            partial, " of ", unit_need_, " bytes)"));
  }
  return absl::DataLossError(
      absl::StrCat("stream truncated at offset ", offset_, ": no end_of_stream record"));
}

}  // namespace procmig::wire
