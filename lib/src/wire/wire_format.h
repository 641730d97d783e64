// The procmig stream format, version 1: the one authoritative description of what goes on the
// wire (and into a recorded stream file), next to the constants that implement it.
//
// This header holds only constants and plain value types; StreamWriter builds streams,
// StreamReader parses and checks them, record_codec.h holds the field-by-field encoders and
// decoders both share. Nothing here is mutable or thread-affine.
//
// ============================================================================================
// Grammar (all integers little-endian; "u8".."u64" fixed width; [n] is n raw bytes)
// ============================================================================================
//
//   stream        := preamble record* end_of_stream
//   preamble      := magic[8] version:u16 direction:u8 reserved:u8 page_size:u32
//                    features:u64 session_id[16] channel_index:u16 channel_count:u16 crc32c:u32
//                    (48 bytes; crc32c covers bytes 0..43, i.e. everything before it)
//   record        := type:u8 flags:u8 reserved:u16 length:u32 crc32c:u32 payload[length]
//
//   magic         = 89 50 4D 49 47 0D 0A 1A   ("\x89PMIG\r\n\x1a": the PNG trick, so text-mode
//                   mangling and 7-bit channels break the magic rather than the data)
//   version       = 1. A reader accepts exactly the versions it knows.
//   direction     = 0 forward (sender -> receiver), 1 reverse (receiver -> sender).
//   page_size     = a power of two in [4096, 65536].
//   features      = bits 0..31 are REQUIRED features: a reader that does not know a set bit must
//                   refuse the stream. Bits 32..63 are OPTIONAL: unknown ones are ignored.
//                   Known: bit 0 XBZRLE pages may appear, bit 1 zlib pages may appear,
//                   bit 2 multi-channel (required when channel_count > 1), bit 3 zero_run
//                   records may appear.
//   session_id    = 16 random bytes chosen by the sender, the same on every channel of one
//                   migration and on its reverse channel; all-zero is invalid.
//   channel_index < channel_count <= 64. Channel 0 is the main channel.
//
// Record header: `type` is one of the numbers below; `flags` may only hold the bits defined for
// that type; `reserved` must be 0; `length` is the payload length and is checked against the
// type's [min, max] (LimitsFor in record_codec.h) before a single payload byte is buffered.
//
// What crc32c covers: crc32c(header bytes 0..7 || payload), i.e. type, flags, reserved and
// length, then the payload; the crc field itself (bytes 8..11) is not covered. EXCEPTION:
// for page_run the record crc covers header bytes 0..7 and the run header and descriptors only,
// not the page payloads; every page is instead covered by its own crc of the decoded page. This
// lets the sender send from live memory (see page_run) and avoids hashing every page twice.
//
// Payloads per type (forward direction: 1..63; reverse direction: 64..127):
//
//   1 block_add     := block_id:u32 block_flags:u32 start:u64 length:u64 page_count:u64
//                      name[1..255]                                (length 33..287)
//        block_id > every block_id added before in this stream (ids are never reused, so a
//        stale page run for a removed block can never land in a new one); block_id != 0.
//        block_flags: bits 0..2 = PROT_READ/WRITE/EXEC (kBlockProt*), bits 8..15 = kind
//        (BlockKind), all other bits 0. start and length are page aligned, length > 0,
//        page_count * page_size == length, start + length does not wrap, and the range does
//        not overlap a live block. name is readable text (no byte < 0x20 and no 0x7f), e.g.
//        "heap@0x55d0c0a00000".
//   2 block_remove  := block_id:u32                                (length 4)
//        block_id must be live. Senders send removals before the additions that reuse space.
//   3 block_resize  := block_id:u32 reserved:u32 new_length:u64 new_page_count:u64   (24)
//        The block keeps its start; same alignment/overlap rules as block_add.
//   4 page_run      := block_id:u32 count:u32 first_page:u64 descriptor[count] data*
//                      descriptor := encoding:u8 reserved[3] encoded_length:u32 page_crc:u32
//        1 <= count <= 1024; pages first_page .. first_page+count-1 of the block, which must be
//        live and hold them (main channel). data is the concatenation of the encoded pages in
//        descriptor order; length == 16 + 12*count + sum(encoded_length).
//        encoding (PageEncoding): 1 zero (encoded_length 0, no data), 2 raw (encoded_length
//        == page_size), 3 xbzrle (1..page_size, needs feature bit 0), 4 zlib (1..page_size,
//        needs feature bit 1); 0 and 5..255 are reserved and invalid. page_crc is crc32c of
//        the page after decoding (for zero pages: of page_size zero bytes).
//        flags: kPageRunLive (0x01): the pages were read from live memory, which the program
//        may write between the crc and the send. A raw page whose crc then mismatches is
//        "torn": the receiver drops it, and the write that tore it re-dirtied it, so it must be
//        sent again later in the stream; a torn page still not resent by end_of_stream is
//        DataLoss. Without the flag, a page crc mismatch is DataLoss at once.
//   9 zero_run      := block_id:u32 count:u32 first_page:u64        (length 16)
//        Pages first_page .. first_page+count-1 of the block read as zero: the receiver makes
//        them zero (clearing any data they held) and takes ZeroPageCrc as their page crc.
//        Needs feature bit 3. 1 <= count <= 2^32-1 (count 0 is invalid), first_page + count
//        does not wrap, and the block must be live and hold all count pages (main channel; on
//        other channels the receiver checks it, as for page_run). No flags. The record crc
//        covers header bytes 0..7 and the whole payload (no exception: there is no page data).
//        A stretch of zero pages costs 28 bytes on the wire whatever its length, where a
//        page_run spends 12 per zero page. A zero page read from live memory needs no crc: the
//        tracker re-protects a page before it is read, so a write after the read re-dirties it
//        and the page is sent again later in the stream (senders read into a private copy).
//   5 iteration     := iteration:u64 pages_sent:u64 zero_pages:u64 bytes_sent:u64
//                      dirty_pages:u64 duration_ns:u64             (length 48)
//        Ends iteration `iteration` (0 = the bulk stage) on this channel; iterations are
//        numbered 0, 1, 2, ... without gaps. flags: kIterationFinal (0x01) marks the
//        stop-and-copy pass; after it no page_run, zero_run, block record or iteration may
//        follow.
//   6 process_state := opaque[1..64 MiB]    main channel only, at most once; afterwards only
//                      end_of_stream. (Contents defined by the restore module.)
//   8 restore_check := opaque[1..16 MiB]   main channel only, at most once, and only as the
//                      first record after the preamble. What the receiver needs to refuse a
//                      restore before any memory is sent: CPU features, vDSO, file identities
//                      (contents defined by the migration module: migration/restore_check.h).
//                      A sender that sends it waits for the receiver's verdict before the next
//                      record: ack(kRestoreChecked) or an error record.
//   7 end_of_stream := record_count:u64 page_count:u64             (length 16)
//        record_count = records on this channel before this one (preamble not counted);
//        page_count = sum of page_run and zero_run counts on this channel (a zero run's pages
//        count like pages sent: a lost or duplicated zero_run must not go unnoticed). Both are
//        checked. Nothing may
//        follow. flags: kEndAborted (0x01): the sender gave up; discard everything.
//  64 ack           := kind:u32 reserved:u32 sequence:u64          (length 16)
//        kind (AckKind): 1 preamble accepted (sequence = channel index), 2 iteration applied
//        (sequence = iteration), 3 end of stream verified, 4 process resumed on destination
//        (the source may exit now), 5 restore_check accepted (sequence 1: checked for a live
//        restore here; 0: stored unchecked, e.g. by a --store receiver).
//  65 error         := code:u32 message[1..4096]                   (length 5..4100)
//        code is an absl::StatusCode (1..16); message is readable text. Nothing but
//        end_of_stream may follow an error.
//
// Which records a stream may carry (checked by StreamReader):
//   forward, channel 0 ("main"):   1 2 3 4 5 6 7 8 9, with the order rules above.
//   forward, channel > 0:          4 5 7 9 only. These channels carry pages for blocks announced
//                                  on the main channel; their reader runs in "pages only" mode and
//                                  checks each run's structure, encodings and crcs but not its
//                                  block: the receiver checks runs (page_run and zero_run) against
//                                  the main channel's
//                                  BlockTable (BlockTable::CheckRun) once it has read the main
//                                  channel up to the same iteration. Torn-page bookkeeping for
//                                  these channels is likewise the receiver's.
//   reverse (any channel):         64 65 7.
//
// Type numbers are never reused. Retired numbers (do not assign again): none yet.
// 0 is invalid on the wire forever (a zeroed header must not parse). Taken for later, invalid
// until defined: 66 (reverse: post-copy page request). Free: 10..63 forward, 67..127 reverse;
// 128..255 stay unused so a future extension can mark "skippable" types by the top bit.
//
// Compatibility: a change to any layout above is a new version. Readers reject versions they do
// not know; new optional behaviour that old readers may ignore goes in optional feature bits.
#ifndef PROCMIG_WIRE_WIRE_FORMAT_H_
#define PROCMIG_WIRE_WIRE_FORMAT_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace procmig::wire {

inline constexpr std::array<uint8_t, 8> kMagic = {0x89, 'P', 'M', 'I', 'G', '\r', '\n', 0x1a};
inline constexpr uint16_t kVersion = 1;
inline constexpr size_t kPreambleSize = 48;
inline constexpr size_t kPreambleCrcOffset = 44;
inline constexpr size_t kRecordHeaderSize = 12;
inline constexpr size_t kRecordCrcOffset = 8;  // header bytes [0, 8) are covered by the crc

inline constexpr uint32_t kMinPageSize = 4096;
inline constexpr uint32_t kMaxPageSize = 65536;
inline constexpr uint16_t kMaxChannels = 64;

// Feature bits. Low 32 bits: required (unknown = refuse). High 32 bits: optional.
inline constexpr uint64_t kFeatureXbzrle = 1ull << 0;
inline constexpr uint64_t kFeatureZlib = 1ull << 1;
inline constexpr uint64_t kFeatureMultiChannel = 1ull << 2;
inline constexpr uint64_t kFeatureZeroRun = 1ull << 3;
inline constexpr uint64_t kRequiredFeatureMask = 0xffffffffull;
inline constexpr uint64_t kKnownRequiredFeatures =
    kFeatureXbzrle | kFeatureZlib | kFeatureMultiChannel | kFeatureZeroRun;

enum class Direction : uint8_t { kForward = 0, kReverse = 1 };

// Wire type numbers. kPreamble is NOT a wire number: 0 is invalid in a record header, and the
// reader uses it only to tag the preamble it hands out as its first "record".
enum class RecordType : uint8_t {
  kPreamble = 0,
  kBlockAdd = 1,
  kBlockRemove = 2,
  kBlockResize = 3,
  kPageRun = 4,
  kIteration = 5,
  kProcessState = 6,
  kEndOfStream = 7,
  kRestoreCheck = 8,
  kZeroRun = 9,
  kAck = 64,
  kError = 65,
};
inline constexpr size_t kNumRecordTypeSlots = 256;

// Header flags, per type.
inline constexpr uint8_t kPageRunLive = 0x01;
inline constexpr uint8_t kIterationFinal = 0x01;
inline constexpr uint8_t kEndAborted = 0x01;

// Block flags (block_add payload).
inline constexpr uint32_t kBlockProtRead = 0x1;
inline constexpr uint32_t kBlockProtWrite = 0x2;
inline constexpr uint32_t kBlockProtExec = 0x4;
inline constexpr uint32_t kBlockProtMask = 0x7;
inline constexpr uint32_t kBlockKindShift = 8;
inline constexpr uint32_t kBlockKindMask = 0xffu << kBlockKindShift;
enum class BlockKind : uint8_t {
  kAnonymous = 0,
  kHeap = 1,
  kStack = 2,
  kFilePrivate = 3,  // the written (private, copied-on-write) pages of a file mapping
};
inline constexpr uint8_t kMaxBlockKind = 3;
inline constexpr uint32_t MakeBlockFlags(uint32_t prot, BlockKind kind) {
  return (prot & kBlockProtMask) | (static_cast<uint32_t>(kind) << kBlockKindShift);
}

enum class PageEncoding : uint8_t { kZero = 1, kRaw = 2, kXbzrle = 3, kZlib = 4 };
inline constexpr size_t kNumEncodingSlots = 5;  // index by the numeric value; 0 unused

enum class AckKind : uint32_t {
  kPreambleAccepted = 1,
  kIterationApplied = 2,
  kEndOfStream = 3,
  kResumed = 4,
  kRestoreChecked = 5,
};

// Bounds. Every length is checked against these before anything is allocated.
inline constexpr size_t kMaxBlockName = 255;
inline constexpr uint32_t kMaxPagesPerRun = 1024;
inline constexpr size_t kPageRunHeaderSize = 16;
inline constexpr size_t kPageDescriptorSize = 12;
inline constexpr size_t kZeroRunSize = 16;
inline constexpr size_t kMaxProcessState = 64u << 20;
inline constexpr size_t kMaxErrorMessage = 4096;
inline constexpr size_t kMaxRestoreCheck = 16u << 20;
inline constexpr size_t kMaxBlocks = 65536;  // above vm.max_map_count's default of 65530

inline constexpr size_t kBlockAddFixedSize = 32;
inline constexpr size_t kBlockRemoveSize = 4;
inline constexpr size_t kBlockResizeSize = 24;
inline constexpr size_t kIterationSize = 48;
inline constexpr size_t kEndOfStreamSize = 16;
inline constexpr size_t kAckSize = 16;
inline constexpr size_t kErrorFixedSize = 4;

inline constexpr size_t MaxPageRunPayload(uint32_t page_size) {
  return kPageRunHeaderSize +
         static_cast<size_t>(kMaxPagesPerRun) * (kPageDescriptorSize + page_size);
}
// The largest payload of any record, at the largest page size: what a reader may buffer.
inline constexpr size_t kMaxRecordPayload = MaxPageRunPayload(kMaxPageSize) > kMaxProcessState
                                                ? MaxPageRunPayload(kMaxPageSize)
                                                : kMaxProcessState;

// ---- Value types. Views (spans, string_views) point into a buffer owned by whoever produced
// the value: the reader's record (valid until the next Feed/Next) or the writer's caller.

struct Preamble {
  uint16_t version = kVersion;
  Direction direction = Direction::kForward;
  uint32_t page_size = 4096;
  uint64_t features = 0;
  std::array<uint8_t, 16> session_id{};
  uint16_t channel_index = 0;
  uint16_t channel_count = 1;
};

struct BlockAdd {
  uint32_t block_id = 0;
  uint32_t flags = 0;  // MakeBlockFlags(prot, kind)
  uint64_t start = 0;
  uint64_t length = 0;
  uint64_t page_count = 0;
  std::string_view name;
};

struct BlockRemove {
  uint32_t block_id = 0;
};

struct BlockResize {
  uint32_t block_id = 0;
  uint64_t new_length = 0;
  uint64_t new_page_count = 0;
};

// One page of a run. For the writer: `data` points at the encoded bytes (page memory itself for
// raw pages; empty for zero pages) and page_crc is the crc32c of the decoded page, which the
// caller supplies for xbzrle and zlib pages (the writer computes it for raw and zero pages).
// For the reader: `data` views the record, and `torn` says a raw page's crc did not match in a
// live run (drop the page; it will be sent again).
struct PageEntry {
  PageEncoding encoding = PageEncoding::kRaw;
  uint32_t page_crc = 0;
  std::span<const uint8_t> data;
  bool torn = false;
  // Writing side: page_crc already holds a raw page's crc32c (the encoder then uses it instead of
  // computing it again). Not on the wire.
  bool crc_known = false;
};

struct PageRun {
  uint32_t block_id = 0;
  uint64_t first_page = 0;
  std::span<const PageEntry> pages;
  bool live = false;  // header flag kPageRunLive
};

// Pages [first_page, first_page + count) of a block read as zero.
struct ZeroRun {
  uint32_t block_id = 0;
  uint32_t count = 0;
  uint64_t first_page = 0;
};

struct IterationMarker {
  uint64_t iteration = 0;
  uint64_t pages_sent = 0;
  uint64_t zero_pages = 0;
  uint64_t bytes_sent = 0;
  uint64_t dirty_pages = 0;
  uint64_t duration_ns = 0;
  bool final = false;  // header flag kIterationFinal
};

struct ProcessState {
  std::span<const uint8_t> data;
};

struct RestoreCheck {
  std::span<const uint8_t> data;
};

struct EndOfStream {
  uint64_t record_count = 0;
  uint64_t page_count = 0;
  bool aborted = false;  // header flag kEndAborted
};

struct Ack {
  AckKind kind = AckKind::kEndOfStream;
  uint64_t sequence = 0;
};

struct ErrorRecord {
  uint32_t code = 0;  // absl::StatusCode
  std::string_view message;
};

// Readable names for inspection and error messages ("page_run", "zlib", ...). Unknown values
// give "unknown".
const char* RecordTypeName(RecordType type);
const char* PageEncodingName(PageEncoding encoding);
const char* BlockKindName(BlockKind kind);
const char* AckKindName(AckKind kind);

// crc32c of `page_size` zero bytes: the page_crc of every zero page.
uint32_t ZeroPageCrc(uint32_t page_size);

}  // namespace procmig::wire

#endif  // PROCMIG_WIRE_WIRE_FORMAT_H_
