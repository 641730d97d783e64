// StreamReader: incremental parser and checker of one procmig stream (wire_format.h).
//
// The caller feeds bytes in pieces of any size (one byte at a time works) and pulls decoded
// records. Every check of the format happens here: magic, version, preamble crc, header fields,
// per-type length bounds (before any byte of a payload is buffered), record crc, payload fields,
// page crcs, and the record order of the stream's mode (main channel, pages-only secondary
// channel, or reverse channel; chosen by the preamble). Any failure is DataLoss with a message
// naming the record's stream offset and the failed check, e.g.
//   "record at offset 4096 (page_run): crc mismatch (stored 0x1a2b3c4d, computed 0x...)"
// and is sticky.
//
// Memory: records lying wholly inside a fed piece are decoded in place (zero copy); a record
// split across pieces is assembled in an internal buffer that grows with the bytes actually
// received, never past the record's checked length (at most kMaxRecordPayload + header).
//
// Split page runs (ReaderOptions::split_page_runs): a page_run whose bytes have not all been fed
// yet is handed out as soon as its header and descriptors are checked (Record::split), so the
// caller can put the page data straight where it belongs (the receiver reads it from the socket
// into the block's memory) instead of having it assembled here and copied again. The caller then
// places the payload in order, segment by segment (NextSegment: a stretch of raw pages, or one
// encoded page), taking the fed bytes first (FedPayload) and reporting every byte placed
// (ConsumePayload), and has each raw page's crc checked here once its bytes are placed
// (CheckPage). The run closes at the next Next(), which refuses to go on while a raw page is
// unchecked. Offsets, order, counts and error messages are those of the buffered path.
// One thread at a time; the receiver owns one reader per channel.
#ifndef PROCMIG_WIRE_STREAM_READER_H_
#define PROCMIG_WIRE_STREAM_READER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "wire/block_table.h"
#include "wire/wire_format.h"

namespace procmig::wire {

struct ReaderOptions {
  // When set, a stream whose preamble says the other direction is refused.
  std::optional<Direction> direction;
  // Main channel: remember pages that arrived torn (a live run whose crc did not hold) and
  // refuse the end of stream while one was not resent on this stream. A reader of one channel of
  // several must not (a torn page may be resent on another channel): the caller, which sees
  // every channel, tracks torn pages itself (the Receiver does); torn pages are still reported.
  bool track_torn = true;
  // Hand out page runs whose payload has not been fed yet before it is (see the file comment).
  bool split_page_runs = false;
};

// One decoded record. Views inside `body` point into the reader's buffer or the caller's fed
// bytes and stay valid until the next Feed() or Next().
struct Record {
  RecordType type = RecordType::kPreamble;
  uint8_t flags = 0;
  uint64_t offset = 0;  // stream offset of the record's first byte
  uint32_t length = 0;  // payload length; kPreambleSize for the preamble
  std::variant<Preamble, BlockAdd, BlockRemove, BlockResize, PageRun, IterationMarker, ProcessState,
               EndOfStream, Ack, ErrorRecord, RestoreCheck, ZeroRun>
      body;
  uint32_t torn_pages = 0;  // page runs: pages whose crc mismatched in a live run
  // A split page run: its entries have no data (torn is set by CheckPage); the payload is placed
  // by the caller through NextSegment/FedPayload/ConsumePayload/CheckPage. Its PageRun stays
  // valid across Feed() calls, until the Next() that closes it.
  bool split = false;
};

// The next stretch of an open split run's payload: `count` raw pages from run index `page`
// (count * page_size bytes), or one xbzrle/zlib page (its encoded length). `placed` bytes of it
// are placed already (a page may be cut between two feeds or reads).
struct PayloadSegment {
  uint32_t page = 0;
  uint32_t count = 0;
  bool raw = true;
  size_t length = 0;
  size_t placed = 0;
  size_t remaining() const { return length - placed; }
};

class StreamReader {
 public:
  enum class Mode { kUnknown, kMain, kPagesOnly, kReverse };

  explicit StreamReader(ReaderOptions options = {});
  StreamReader(const StreamReader&) = delete;
  StreamReader& operator=(const StreamReader&) = delete;

  // Hands the reader the next piece of the stream. The bytes are read in place and must stay
  // valid until Next() has returned nullptr (all of them consumed); feeding again before that
  // is a caller bug (FailedPrecondition).
  absl::Status Feed(std::span<const uint8_t> bytes);

  // The next record (the preamble first), or nullptr when more bytes are needed. DataLoss on a
  // malformed stream; the same error on every later call.
  absl::StatusOr<const Record*> Next();

  // Call at the end of the input: OK when end_of_stream was read and nothing is left over,
  // otherwise DataLoss saying where the stream was cut.
  absl::Status Finish() const;

  // Split page runs. Between a Next() that returned a split run and the payload's last byte:
  bool split_open() const { return split_open_; }
  // The segment the next payload byte belongs to; nullopt once the whole payload is placed (the
  // zero pages of the run carry no payload and are never part of a segment).
  std::optional<PayloadSegment> NextSegment() const;
  // Payload bytes from the next one to the first page of the next stretch of at least
  // `min_raw_pages` raw pages (0 when the next byte is in one), or to the payload's end: what a
  // caller that reads only long raw stretches in place has to read in some other way first.
  size_t PayloadBytesBefore(uint32_t min_raw_pages) const;
  // The fed bytes that belong to that segment (at most its remaining bytes); may be empty.
  std::span<const uint8_t> FedPayload() const;
  // `n` more bytes of the segment were placed: taken from FedPayload() while it is not empty
  // (then n <= its size), else read by the caller from the stream's source itself (those bytes
  // never pass through Feed). FailedPrecondition on a misuse (not sticky).
  absl::Status ConsumePayload(size_t n);
  // Checks raw page `index` of the open run against its descriptor once all its bytes are placed
  // (`page`: page_size bytes, where they were placed). Pages are checked in order. Returns
  // whether the page is torn (a live run); DataLoss (sticky) for a mismatch in a non-live run,
  // with the buffered path's message.
  absl::StatusOr<bool> CheckPage(uint32_t index, std::span<const uint8_t> page);

  const std::optional<Preamble>& preamble() const { return preamble_; }
  Mode mode() const { return mode_; }
  // Main channel only; empty otherwise.
  const BlockTable& blocks() const { return blocks_; }
  bool ended() const { return ended_; }
  uint64_t offset() const { return offset_; }  // bytes of complete units consumed
  size_t buffer_capacity() const { return pending_.capacity(); }

 private:
  // Returns `need` contiguous bytes of the unit starting at offset_, or nullptr after buffering
  // everything fed so far.
  const uint8_t* Take(size_t need);
  void Consume(size_t size);
  // Forgets the consumed unit in pending_, releasing the buffer when it grew past kKeepBuffer.
  void DropPending();
  static constexpr size_t kKeepBuffer = 8u << 20;  // holds any page run of 4 KiB pages
  absl::Status Fail(uint64_t offset, const std::string& what, const std::string& detail);
  absl::Status ParsePreamble(const uint8_t* p);
  absl::Status CheckHeader(const RecordHeader& h);
  absl::Status DecodeBody(const RecordHeader& h, std::span<const uint8_t> payload);
  // A page_run not wholly fed: its header and descriptors, checked as the buffered path checks
  // them. OK with *ready false: more bytes needed.
  absl::Status NextSplitRun(const RecordHeader& h, bool* ready);
  // Closes the open split run when its payload is placed and checked; *closed false otherwise.
  absl::Status CloseSplitRun(bool* closed);
  // Skips the run's pages without payload from split_page_ on.
  void SkipEmptyPages();
  // Moves split_checked_ past pages that CheckPage does not check (zero and encoded ones).
  void SkipUncheckedPages();
  absl::Status ApplyOrder(const RecordHeader& h);
  void TrackTorn(const PageRun& run);
  // A zero run resends its pages: none of them is torn any more.
  void UntrackTorn(const ZeroRun& run);

  const ReaderOptions options_;
  std::optional<Preamble> preamble_;
  Mode mode_ = Mode::kUnknown;
  uint32_t zero_page_crc_ = 0;
  BlockTable blocks_{kMinPageSize};

  // Input and assembly.
  std::span<const uint8_t> input_;
  size_t input_pos_ = 0;
  std::vector<uint8_t> pending_;
  bool clear_pending_ = false;  // the last record was assembled in pending_; drop it next call
  size_t unit_need_ = 0;        // size of the unit being assembled (for Finish's message)
  uint64_t offset_ = 0;

  // Order state.
  uint64_t records_ = 0;  // records after the preamble, before end_of_stream
  uint64_t pages_ = 0;    // pages in page runs and zero runs
  uint64_t next_iteration_ = 0;
  bool final_seen_ = false;
  bool process_state_seen_ = false;
  bool error_seen_ = false;
  bool ended_ = false;
  // Main channel: torn pages (block, page) -> offset of the run that tore them.
  absl::flat_hash_map<std::pair<uint32_t, uint64_t>, uint64_t> torn_;

  absl::Status status_;
  Record record_;
  std::unique_ptr<PageEntry[]> page_scratch_;

  // The open split run (record_ holds it). Its unit is header + payload (split_unit_ bytes);
  // split_done_ of them are consumed: the header, the descriptors and the payload placed so far.
  bool split_open_ = false;
  size_t split_unit_ = 0;
  size_t split_done_ = 0;
  uint32_t split_count_ = 0;
  uint32_t split_page_ = 0;              // the page the next payload byte belongs to
  size_t split_page_placed_ = 0;         // bytes of that page placed
  uint32_t split_checked_ = 0;           // pages before this index are checked (or not raw)
  std::unique_ptr<uint32_t[]> lengths_;  // encoded length per page of the open split run
};

}  // namespace procmig::wire

#endif  // PROCMIG_WIRE_STREAM_READER_H_
