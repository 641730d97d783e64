// Field-by-field encoders and decoders for the preamble, the record header and every payload of
// wire_format.h, shared by StreamWriter and StreamReader so both apply the same rules.
//
// Nothing here allocates: encoders write into caller buffers of the sizes given by the *Size
// helpers, and the validators return a static reason string (nullptr = valid) rather than an
// absl::Status, because StreamWriter calls them while the program's threads are parked and must
// not touch malloc. StreamReader turns reasons into DataLoss messages with the record's offset.
// All functions are pure and may be called from any thread.
#ifndef PROCMIG_WIRE_RECORD_CODEC_H_
#define PROCMIG_WIRE_RECORD_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <span>

#include "wire/wire_format.h"

namespace procmig::wire {

// A validation result: nullptr when valid, otherwise a static, readable reason.
using Reason = const char*;

// ---- Preamble
void EncodePreamble(const Preamble& p, uint8_t out[kPreambleSize]);
// Decodes the fields after the magic and crc were checked by the caller.
Preamble DecodePreambleFields(const uint8_t in[kPreambleSize]);
// Checks version, direction, page size, required features, session id and channels.
Reason ValidatePreamble(const Preamble& p);

// ---- Record header
struct RecordHeader {
  uint8_t type = 0;
  uint8_t flags = 0;
  uint16_t reserved = 0;
  uint32_t length = 0;
  uint32_t crc = 0;
};
void EncodeRecordHeader(const RecordHeader& h, uint8_t out[kRecordHeaderSize]);
RecordHeader DecodeRecordHeader(const uint8_t in[kRecordHeaderSize]);

// The type's payload length bounds at this page size; false for numbers that are not a type.
struct PayloadLimits {
  size_t min = 0;
  size_t max = 0;
};
bool LimitsFor(uint8_t type, uint32_t page_size, PayloadLimits* out);
// Header flag bits the type allows.
uint8_t AllowedFlags(RecordType type);
// True for the types that may appear in a stream of this direction at all.
bool TypeMatchesDirection(RecordType type, Direction direction);

// crc32c over header bytes [0, 8) followed by `covered` (the payload, or for a page run the run
// header and descriptors).
uint32_t RecordCrc(const uint8_t header[kRecordHeaderSize], std::span<const uint8_t> covered);

// ---- Payloads. Encode* write exactly *Size() bytes. Decode* read an exact-length payload (the
// reader has already checked the length against LimitsFor) and validate the fields that need no
// stream state.
inline size_t BlockAddSize(const BlockAdd& b) { return kBlockAddFixedSize + b.name.size(); }
void EncodeBlockAdd(const BlockAdd& b, uint8_t* out);
Reason DecodeBlockAdd(std::span<const uint8_t> in, uint32_t page_size, BlockAdd* out);
Reason ValidateBlockAdd(const BlockAdd& b, uint32_t page_size);

void EncodeBlockRemove(const BlockRemove& b, uint8_t* out);
Reason DecodeBlockRemove(std::span<const uint8_t> in, BlockRemove* out);

void EncodeBlockResize(const BlockResize& b, uint8_t* out);
Reason DecodeBlockResize(std::span<const uint8_t> in, uint32_t page_size, BlockResize* out);
Reason ValidateBlockResize(const BlockResize& b, uint32_t page_size);

// The page run's run header and descriptors (the covered part), without the page data.
inline size_t PageRunMetaSize(size_t count) {
  return kPageRunHeaderSize + count * kPageDescriptorSize;
}
// The stored page_crc of a raw page is computed here over its data (the page memory, at this
// moment), of a zero page it is zero_page_crc; other encodings use PageEntry::page_crc.
void EncodePageRunMeta(uint32_t block_id, uint64_t first_page, std::span<const PageEntry> pages,
                       uint32_t zero_page_crc, uint8_t* out);
// Checks one page's encoding and length against the page size and the stream's features.
Reason ValidatePageEntry(PageEncoding encoding, size_t length, uint32_t page_size,
                         uint64_t features);
// Decodes a page run into `out`, with entries stored in `scratch` (kMaxPagesPerRun slots);
// zero_page_crc is ZeroPageCrc(page_size), computed once by the caller. Checks
// count, reserved bytes, encodings, lengths, the sum of lengths against the payload, the crc of
// zero pages and of raw pages; a raw page mismatching in a live run is marked torn (and counted
// in *torn) instead of failing. *bad_page is set to the page index on a per-page failure.
Reason DecodePageRun(std::span<const uint8_t> in, uint8_t flags, uint32_t page_size,
                     uint64_t features, uint32_t zero_page_crc, std::span<PageEntry> scratch,
                     PageRun* out, uint32_t* torn, uint32_t* bad_page);
// The same checks without the page data (StreamReader's split page runs): `meta` is the run
// header and descriptors (PageRunMetaSize(count) bytes), `payload_length` the record's. Entries get
// no data and are never torn; `lengths` (kMaxPagesPerRun slots) receives each page's encoded
// length. Every check but the raw pages' crcs happens here, so a run that passes it places no
// byte outside its pages' lengths, which sum to payload_length - PageRunMetaSize(count).
Reason DecodePageRunMeta(std::span<const uint8_t> meta, size_t payload_length, uint8_t flags,
                         uint32_t page_size, uint64_t features, uint32_t zero_page_crc,
                         std::span<PageEntry> scratch, std::span<uint32_t> lengths, PageRun* out,
                         uint32_t* bad_page);

// Writes kZeroRunSize bytes. Validate checks count, range and the stream's features; the block
// itself is checked against the block table (BlockTable::CheckZeroRun).
void EncodeZeroRun(const ZeroRun& z, uint8_t* out);
Reason ValidateZeroRun(const ZeroRun& z, uint64_t features);
Reason DecodeZeroRun(std::span<const uint8_t> in, uint64_t features, ZeroRun* out);

void EncodeIteration(const IterationMarker& m, uint8_t* out);
void DecodeIteration(std::span<const uint8_t> in, uint8_t flags, IterationMarker* out);

void EncodeEndOfStream(const EndOfStream& e, uint8_t* out);
void DecodeEndOfStream(std::span<const uint8_t> in, uint8_t flags, EndOfStream* out);

void EncodeAck(const Ack& a, uint8_t* out);
Reason DecodeAck(std::span<const uint8_t> in, Ack* out);

inline size_t ErrorSize(const ErrorRecord& e) { return kErrorFixedSize + e.message.size(); }
void EncodeError(const ErrorRecord& e, uint8_t* out);
Reason DecodeError(std::span<const uint8_t> in, ErrorRecord* out);
Reason ValidateError(const ErrorRecord& e);

// True when every byte is printable (no byte < 0x20 and no 0x7f); UTF-8 passes.
bool IsReadableText(std::string_view s);

}  // namespace procmig::wire

#endif  // PROCMIG_WIRE_RECORD_CODEC_H_
