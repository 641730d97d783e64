#include "wire/record_codec.h"

#include <bit>

#include "base/coding.h"
#include "base/crc32c.h"

namespace procmig::wire {
namespace {

bool PageAligned(uint64_t v, uint32_t page_size) { return (v & (page_size - 1)) == 0; }

// Shared by block add and resize: a range of whole pages that does not wrap.
Reason ValidateRange(uint64_t start, uint64_t length, uint64_t page_count, uint32_t page_size) {
  if (length == 0) return "length is zero";
  if (!PageAligned(start, page_size)) return "start is not page aligned";
  if (!PageAligned(length, page_size)) return "length is not a multiple of the page size";
  if (length / page_size != page_count) return "page_count does not match length / page_size";
  if (start + length < start) return "range wraps past the end of the address space";
  return nullptr;
}

}  // namespace

void EncodePreamble(const Preamble& p, uint8_t out[kPreambleSize]) {
  for (size_t i = 0; i < kMagic.size(); ++i) out[i] = kMagic[i];
  EncodeFixed16(out + 8, p.version);
  out[10] = static_cast<uint8_t>(p.direction);
  out[11] = 0;
  EncodeFixed32(out + 12, p.page_size);
  EncodeFixed64(out + 16, p.features);
  for (size_t i = 0; i < p.session_id.size(); ++i) out[24 + i] = p.session_id[i];
  EncodeFixed16(out + 40, p.channel_index);
  EncodeFixed16(out + 42, p.channel_count);
  EncodeFixed32(out + kPreambleCrcOffset, crc32c::Value(out, kPreambleCrcOffset));
}

Preamble DecodePreambleFields(const uint8_t in[kPreambleSize]) {
  Preamble p;
  p.version = DecodeFixed16(in + 8);
  p.direction = static_cast<Direction>(in[10]);
  p.page_size = DecodeFixed32(in + 12);
  p.features = DecodeFixed64(in + 16);
  for (size_t i = 0; i < p.session_id.size(); ++i) p.session_id[i] = in[24 + i];
  p.channel_index = DecodeFixed16(in + 40);
  p.channel_count = DecodeFixed16(in + 42);
  return p;
}

Reason ValidatePreamble(const Preamble& p) {
  if (p.version != kVersion) return "unsupported version";
  if (p.direction != Direction::kForward && p.direction != Direction::kReverse) {
    return "unknown direction";
  }
  if (p.page_size < kMinPageSize || p.page_size > kMaxPageSize ||
      !std::has_single_bit(p.page_size)) {
    return "page size is not a power of two in [4096, 65536]";
  }
  if ((p.features & kRequiredFeatureMask & ~kKnownRequiredFeatures) != 0) {
    return "unknown required feature bits";
  }
  bool any = false;
  for (uint8_t b : p.session_id) any |= b != 0;
  if (!any) return "session id is all zero";
  if (p.channel_count == 0 || p.channel_count > kMaxChannels) {
    return "channel count is not in [1, 64]";
  }
  if (p.channel_index >= p.channel_count) return "channel index is not below channel count";
  if (p.channel_count > 1 && (p.features & kFeatureMultiChannel) == 0) {
    return "several channels without the multi-channel feature";
  }
  return nullptr;
}

void EncodeRecordHeader(const RecordHeader& h, uint8_t out[kRecordHeaderSize]) {
  out[0] = h.type;
  out[1] = h.flags;
  EncodeFixed16(out + 2, h.reserved);
  EncodeFixed32(out + 4, h.length);
  EncodeFixed32(out + 8, h.crc);
}

RecordHeader DecodeRecordHeader(const uint8_t in[kRecordHeaderSize]) {
  RecordHeader h;
  h.type = in[0];
  h.flags = in[1];
  h.reserved = DecodeFixed16(in + 2);
  h.length = DecodeFixed32(in + 4);
  h.crc = DecodeFixed32(in + 8);
  return h;
}

bool LimitsFor(uint8_t type, uint32_t page_size, PayloadLimits* out) {
  switch (static_cast<RecordType>(type)) {
    case RecordType::kBlockAdd:
      *out = {kBlockAddFixedSize + 1, kBlockAddFixedSize + kMaxBlockName};
      return true;
    case RecordType::kBlockRemove:
      *out = {kBlockRemoveSize, kBlockRemoveSize};
      return true;
    case RecordType::kBlockResize:
      *out = {kBlockResizeSize, kBlockResizeSize};
      return true;
    case RecordType::kPageRun:
      *out = {PageRunMetaSize(1), MaxPageRunPayload(page_size)};
      return true;
    case RecordType::kIteration:
      *out = {kIterationSize, kIterationSize};
      return true;
    case RecordType::kProcessState:
      *out = {1, kMaxProcessState};
      return true;
    case RecordType::kEndOfStream:
      *out = {kEndOfStreamSize, kEndOfStreamSize};
      return true;
    case RecordType::kRestoreCheck:
      *out = {1, kMaxRestoreCheck};
      return true;
    case RecordType::kZeroRun:
      *out = {kZeroRunSize, kZeroRunSize};
      return true;
    case RecordType::kAck:
      *out = {kAckSize, kAckSize};
      return true;
    case RecordType::kError:
      *out = {kErrorFixedSize + 1, kErrorFixedSize + kMaxErrorMessage};
      return true;
    case RecordType::kPreamble:
      break;
  }
  return false;
}

uint8_t AllowedFlags(RecordType type) {
  switch (type) {
    case RecordType::kPageRun:
      return kPageRunLive;
    case RecordType::kIteration:
      return kIterationFinal;
    case RecordType::kEndOfStream:
      return kEndAborted;
    default:
      return 0;
  }
}

bool TypeMatchesDirection(RecordType type, Direction direction) {
  if (type == RecordType::kEndOfStream) return true;
  bool reverse = type == RecordType::kAck || type == RecordType::kError;
  return reverse == (direction == Direction::kReverse);
}

uint32_t RecordCrc(const uint8_t header[kRecordHeaderSize], std::span<const uint8_t> covered) {
  uint32_t crc = crc32c::Value(header, kRecordCrcOffset);
  return crc32c::Extend(crc, covered.data(), covered.size());
}

bool IsReadableText(std::string_view s) {
  for (char c : s) {
    auto b = static_cast<uint8_t>(c);
    if (b < 0x20 || b == 0x7f) return false;
  }
  return true;
}

void EncodeBlockAdd(const BlockAdd& b, uint8_t* out) {
  EncodeFixed32(out, b.block_id);
  EncodeFixed32(out + 4, b.flags);
  EncodeFixed64(out + 8, b.start);
  EncodeFixed64(out + 16, b.length);
  EncodeFixed64(out + 24, b.page_count);
  for (size_t i = 0; i < b.name.size(); ++i) out[32 + i] = static_cast<uint8_t>(b.name[i]);
}

Reason ValidateBlockAdd(const BlockAdd& b, uint32_t page_size) {
  if (b.block_id == 0) return "block id 0 is invalid";
  if ((b.flags & ~(kBlockProtMask | kBlockKindMask)) != 0) return "unknown block flag bits";
  if (((b.flags & kBlockKindMask) >> kBlockKindShift) > kMaxBlockKind) {
    return "unknown block kind";
  }
  if (b.name.empty() || b.name.size() > kMaxBlockName) return "name length not in [1, 255]";
  if (!IsReadableText(b.name)) return "name holds control characters";
  return ValidateRange(b.start, b.length, b.page_count, page_size);
}

Reason DecodeBlockAdd(std::span<const uint8_t> in, uint32_t page_size, BlockAdd* out) {
  ByteReader r(in);
  out->block_id = r.U32();
  out->flags = r.U32();
  out->start = r.U64();
  out->length = r.U64();
  out->page_count = r.U64();
  auto name = r.Bytes(r.remaining());
  if (!r.ok()) return "payload too short";
  out->name = {reinterpret_cast<const char*>(name.data()), name.size()};
  return ValidateBlockAdd(*out, page_size);
}

void EncodeBlockRemove(const BlockRemove& b, uint8_t* out) { EncodeFixed32(out, b.block_id); }

Reason DecodeBlockRemove(std::span<const uint8_t> in, BlockRemove* out) {
  if (in.size() != kBlockRemoveSize) return "payload size";
  out->block_id = DecodeFixed32(in.data());
  return nullptr;
}

void EncodeBlockResize(const BlockResize& b, uint8_t* out) {
  EncodeFixed32(out, b.block_id);
  EncodeFixed32(out + 4, 0);
  EncodeFixed64(out + 8, b.new_length);
  EncodeFixed64(out + 16, b.new_page_count);
}

Reason ValidateBlockResize(const BlockResize& b, uint32_t page_size) {
  if (b.block_id == 0) return "block id 0 is invalid";
  // The start is checked against the block table; alignment of length is all that is local.
  return ValidateRange(0, b.new_length, b.new_page_count, page_size);
}

Reason DecodeBlockResize(std::span<const uint8_t> in, uint32_t page_size, BlockResize* out) {
  ByteReader r(in);
  out->block_id = r.U32();
  uint32_t reserved = r.U32();
  out->new_length = r.U64();
  out->new_page_count = r.U64();
  if (!r.AtEnd()) return "payload size";
  if (reserved != 0) return "reserved field is not zero";
  return ValidateBlockResize(*out, page_size);
}

void EncodePageRunMeta(uint32_t block_id, uint64_t first_page, std::span<const PageEntry> pages,
                       uint32_t zero_page_crc, uint8_t* out) {
  EncodeFixed32(out, block_id);
  EncodeFixed32(out + 4, static_cast<uint32_t>(pages.size()));
  EncodeFixed64(out + 8, first_page);
  uint8_t* d = out + kPageRunHeaderSize;
  for (const PageEntry& e : pages) {
    d[0] = static_cast<uint8_t>(e.encoding);
    d[1] = d[2] = d[3] = 0;
    EncodeFixed32(d + 4, static_cast<uint32_t>(e.data.size()));
    uint32_t crc = e.page_crc;
    if (e.encoding == PageEncoding::kRaw && !e.crc_known) {
      crc = crc32c::Value(e.data.data(), e.data.size());
    }
    if (e.encoding == PageEncoding::kZero) crc = zero_page_crc;
    EncodeFixed32(d + 8, crc);
    d += kPageDescriptorSize;
  }
}

Reason ValidatePageEntry(PageEncoding encoding, size_t length, uint32_t page_size,
                         uint64_t features) {
  switch (encoding) {
    case PageEncoding::kZero:
      return length == 0 ? nullptr : "zero page with a payload";
    case PageEncoding::kRaw:
      return length == page_size ? nullptr : "raw page length is not the page size";
    case PageEncoding::kXbzrle:
      if ((features & kFeatureXbzrle) == 0) return "xbzrle page without the xbzrle feature";
      break;
    case PageEncoding::kZlib:
      if ((features & kFeatureZlib) == 0) return "zlib page without the zlib feature";
      break;
    default:
      return "unknown page encoding";
  }
  if (length == 0 || length > page_size) return "encoded length not in [1, page size]";
  return nullptr;
}

namespace {

// The run header's fields and count bound, shared by both page run decoders.
Reason DecodeRunHeader(std::span<const uint8_t> in, uint8_t flags, std::span<PageEntry> scratch,
                       PageRun* out, uint32_t* count) {
  if (in.size() < kPageRunHeaderSize) return "payload too short";
  out->block_id = DecodeFixed32(in.data());
  *count = DecodeFixed32(in.data() + 4);
  out->first_page = DecodeFixed64(in.data() + 8);
  out->live = (flags & kPageRunLive) != 0;
  if (*count == 0 || *count > kMaxPagesPerRun || *count > scratch.size()) {
    return "page count not in [1, 1024]";
  }
  if (out->first_page + *count < out->first_page) return "page range wraps";
  if (in.size() < PageRunMetaSize(*count)) return "payload shorter than its descriptors";
  return nullptr;
}

// Descriptor `d` into `e` (data left empty) and its encoded length; `room` is how many payload
// bytes are left for this page and the ones after it.
Reason DecodeDescriptor(const uint8_t* d, uint32_t page_size, uint64_t features,
                        uint32_t zero_page_crc, size_t room, PageEntry* e, uint32_t* length) {
  if (d[1] != 0 || d[2] != 0 || d[3] != 0) return "descriptor reserved bytes are not zero";
  e->encoding = static_cast<PageEncoding>(d[0]);
  *length = DecodeFixed32(d + 4);
  e->page_crc = DecodeFixed32(d + 8);
  e->torn = false;
  e->data = {};
  if (Reason why = ValidatePageEntry(e->encoding, *length, page_size, features)) return why;
  if (room < *length) return "page data runs past the end of the record";
  if (e->encoding == PageEncoding::kZero && e->page_crc != zero_page_crc) {
    return "zero page crc mismatch";
  }
  return nullptr;
}

}  // namespace

Reason DecodePageRun(std::span<const uint8_t> in, uint8_t flags, uint32_t page_size,
                     uint64_t features, uint32_t zero_page_crc, std::span<PageEntry> scratch,
                     PageRun* out, uint32_t* torn, uint32_t* bad_page) {
  *torn = 0;
  *bad_page = UINT32_MAX;
  uint32_t count = 0;
  if (Reason why = DecodeRunHeader(in, flags, scratch, out, &count)) return why;
  size_t data_pos = PageRunMetaSize(count);
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t* d = in.data() + kPageRunHeaderSize + i * kPageDescriptorSize;
    PageEntry& e = scratch[i];
    uint32_t length = 0;
    *bad_page = i;
    Reason why =
        DecodeDescriptor(d, page_size, features, zero_page_crc, in.size() - data_pos, &e, &length);
    if (why != nullptr) return why;
    e.data = in.subspan(data_pos, length);
    data_pos += length;
    if (e.encoding == PageEncoding::kRaw &&
        crc32c::Value(e.data.data(), e.data.size()) != e.page_crc) {
      if (!out->live) return "raw page crc mismatch";
      e.torn = true;
      ++*torn;
    }
  }
  *bad_page = UINT32_MAX;
  if (data_pos != in.size()) return "record longer than its pages";
  out->pages = scratch.first(count);
  return nullptr;
}

Reason DecodePageRunMeta(std::span<const uint8_t> meta, size_t payload_length, uint8_t flags,
                         uint32_t page_size, uint64_t features, uint32_t zero_page_crc,
                         std::span<PageEntry> scratch, std::span<uint32_t> lengths, PageRun* out,
                         uint32_t* bad_page) {
  *bad_page = UINT32_MAX;
  uint32_t count = 0;
  if (Reason why = DecodeRunHeader(meta, flags, scratch, out, &count)) return why;
  if (count > lengths.size()) return "page count not in [1, 1024]";
  const size_t meta_size = PageRunMetaSize(count);
  if (meta.size() != meta_size || payload_length < meta_size) {
    return "payload shorter than its descriptors";
  }
  size_t data_pos = meta_size;
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t* d = meta.data() + kPageRunHeaderSize + i * kPageDescriptorSize;
    *bad_page = i;
    Reason why = DecodeDescriptor(d, page_size, features, zero_page_crc, payload_length - data_pos,
                                  &scratch[i], &lengths[i]);
    if (why != nullptr) return why;
    data_pos += lengths[i];
  }
  *bad_page = UINT32_MAX;
  if (data_pos != payload_length) return "record longer than its pages";
  out->pages = scratch.first(count);
  return nullptr;
}

void EncodeZeroRun(const ZeroRun& z, uint8_t* out) {
  EncodeFixed32(out, z.block_id);
  EncodeFixed32(out + 4, z.count);
  EncodeFixed64(out + 8, z.first_page);
}

Reason ValidateZeroRun(const ZeroRun& z, uint64_t features) {
  if ((features & kFeatureZeroRun) == 0) return "zero_run without the zero-run feature";
  if (z.block_id == 0) return "block id 0 is invalid";
  if (z.count == 0) return "page count is zero";
  if (z.first_page + z.count < z.first_page) return "page range wraps";
  return nullptr;
}

Reason DecodeZeroRun(std::span<const uint8_t> in, uint64_t features, ZeroRun* out) {
  if (in.size() != kZeroRunSize) return "payload size";
  out->block_id = DecodeFixed32(in.data());
  out->count = DecodeFixed32(in.data() + 4);
  out->first_page = DecodeFixed64(in.data() + 8);
  return ValidateZeroRun(*out, features);
}

void EncodeIteration(const IterationMarker& m, uint8_t* out) {
  EncodeFixed64(out, m.iteration);
  EncodeFixed64(out + 8, m.pages_sent);
  EncodeFixed64(out + 16, m.zero_pages);
  EncodeFixed64(out + 24, m.bytes_sent);
  EncodeFixed64(out + 32, m.dirty_pages);
  EncodeFixed64(out + 40, m.duration_ns);
}

void DecodeIteration(std::span<const uint8_t> in, uint8_t flags, IterationMarker* out) {
  const uint8_t* p = in.data();
  out->iteration = DecodeFixed64(p);
  out->pages_sent = DecodeFixed64(p + 8);
  out->zero_pages = DecodeFixed64(p + 16);
  out->bytes_sent = DecodeFixed64(p + 24);
  out->dirty_pages = DecodeFixed64(p + 32);
  out->duration_ns = DecodeFixed64(p + 40);
  out->final = (flags & kIterationFinal) != 0;
}

void EncodeEndOfStream(const EndOfStream& e, uint8_t* out) {
  EncodeFixed64(out, e.record_count);
  EncodeFixed64(out + 8, e.page_count);
}

void DecodeEndOfStream(std::span<const uint8_t> in, uint8_t flags, EndOfStream* out) {
  out->record_count = DecodeFixed64(in.data());
  out->page_count = DecodeFixed64(in.data() + 8);
  out->aborted = (flags & kEndAborted) != 0;
}

void EncodeAck(const Ack& a, uint8_t* out) {
  EncodeFixed32(out, static_cast<uint32_t>(a.kind));
  EncodeFixed32(out + 4, 0);
  EncodeFixed64(out + 8, a.sequence);
}

Reason DecodeAck(std::span<const uint8_t> in, Ack* out) {
  uint32_t kind = DecodeFixed32(in.data());
  if (DecodeFixed32(in.data() + 4) != 0) return "reserved field is not zero";
  if (kind < static_cast<uint32_t>(AckKind::kPreambleAccepted) ||
      kind > static_cast<uint32_t>(AckKind::kRestoreChecked)) {
    return "unknown ack kind";
  }
  out->kind = static_cast<AckKind>(kind);
  out->sequence = DecodeFixed64(in.data() + 8);
  return nullptr;
}

void EncodeError(const ErrorRecord& e, uint8_t* out) {
  EncodeFixed32(out, e.code);
  for (size_t i = 0; i < e.message.size(); ++i) out[4 + i] = static_cast<uint8_t>(e.message[i]);
}

Reason ValidateError(const ErrorRecord& e) {
  if (e.code == 0 || e.code > 16) return "error code is not a non-OK absl::StatusCode";
  if (e.message.empty() || e.message.size() > kMaxErrorMessage) {
    return "error message length not in [1, 4096]";
  }
  if (!IsReadableText(e.message)) return "error message holds control characters";
  return nullptr;
}

Reason DecodeError(std::span<const uint8_t> in, ErrorRecord* out) {
  if (in.size() < kErrorFixedSize) return "payload too short";
  out->code = DecodeFixed32(in.data());
  out->message = {reinterpret_cast<const char*>(in.data()) + 4, in.size() - 4};
  return ValidateError(*out);
}

}  // namespace procmig::wire
