// StreamWriter: builds one procmig stream (wire_format.h) as batches of iovecs for a transport.
//
// Built for the agent thread while the program's threads are parked (they may hold the malloc
// lock): after Create() no method allocates. Record headers, page-run descriptors and small
// payloads go into a scratch buffer fixed at construction; page payloads and process state are
// iovecs pointing straight at the caller's memory, never copied. When a record does not fit in
// the current batch (iovecs or scratch), Add*() returns ResourceExhausted and appends nothing:
// the caller sends batch(), calls ClearBatch() and adds the record again. The memory an iovec
// points at must stay unchanged-or-live (see kPageRunLive) until that batch is sent.
//
// Errors are code-only absl::Status values (a message would allocate); DescribeLastError()
// builds the readable message afterwards, outside any park window. The writer checks every
// per-record rule of the format, and direction and end-of-stream order; block-table order
// (adds before runs, ids increasing, no overlaps) is the caller's, checked by StreamReader.
// One thread at a time.
#ifndef PROCMIG_WIRE_STREAM_WRITER_H_
#define PROCMIG_WIRE_STREAM_WRITER_H_

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "wire/record_codec.h"
#include "wire/wire_format.h"

namespace procmig::wire {

struct WriterOptions {
  // IOV_MAX: one batch fits one sendmsg/writev. A page run needs one iovec for its header plus
  // one per run of contiguous payloads.
  size_t max_iovecs = 1024;
  // Headers, descriptors and small payloads of one batch. A full 1024-page run needs 12,316.
  size_t scratch_bytes = 256 << 10;
  // 2: two sets of these buffers (banks), so one batch can be on its way (TakeBatch) while the
  // next is built in the other bank.
  int banks = 1;
};

class StreamWriter {
 public:
  // Validates the preamble (InvalidArgument) and the options, allocates the fixed buffers and
  // puts the preamble into the first batch.
  static absl::StatusOr<std::unique_ptr<StreamWriter>> Create(const Preamble& preamble,
                                                              const WriterOptions& options = {});
  StreamWriter(const StreamWriter&) = delete;
  StreamWriter& operator=(const StreamWriter&) = delete;

  // Each appends one record to the batch. OK; ResourceExhausted = batch full (flush, retry);
  // InvalidArgument = the record breaks a format rule or can never fit in an empty batch;
  // FailedPrecondition = not allowed in this direction or after end of stream.
  absl::Status AddBlockAdd(const BlockAdd& b);
  absl::Status AddBlockRemove(const BlockRemove& b);
  absl::Status AddBlockResize(const BlockResize& b);
  // Page payloads are referenced, not copied; the crcs of raw pages are computed now, over the
  // memory as it is now. `live`: the memory may change before it is sent (kPageRunLive).
  absl::Status AddPageRun(uint32_t block_id, uint64_t first_page, std::span<const PageEntry> pages,
                          bool live);
  // Pages [first_page, first_page + count) of the block read as zero. Needs kFeatureZeroRun in
  // the preamble (InvalidArgument otherwise); counts z.count pages toward end_of_stream.
  absl::Status AddZeroRun(const ZeroRun& z);
  absl::Status AddIteration(const IterationMarker& m);
  // Referenced, not copied.
  absl::Status AddProcessState(std::span<const uint8_t> state);
  // Referenced, not copied. Only as the first record after the preamble (main channel).
  absl::Status AddRestoreCheck(std::span<const uint8_t> check);
  // Fills in the record and page counts of this stream.
  absl::Status AddEndOfStream(bool aborted);
  absl::Status AddAck(const Ack& a);
  // The message is copied into scratch.
  absl::Status AddError(const ErrorRecord& e);

  std::span<const iovec> batch() const { return {iov_, iov_count_}; }
  size_t batch_bytes() const { return batch_bytes_; }
  // Forgets the batch; call after it was sent. The scratch space is reused.
  void ClearBatch();
  // With two banks: returns the batch, whose iovecs and scratch stay untouched, and builds the
  // next batch in the other bank. The batch taken before this one must have been sent (its bank
  // is reused now). With one bank the batch must be sent before the next Add*().
  std::span<const iovec> TakeBatch();

  bool ended() const { return ended_; }
  uint64_t records() const { return records_; }
  uint64_t pages() const { return pages_; }
  const Preamble& preamble() const { return preamble_; }

  // The last failed Add*() as a full status, e.g. "add page_run: raw page length is not the
  // page size". Allocates: call outside park windows.
  absl::Status DescribeLastError() const;

 private:
  StreamWriter(const Preamble& preamble, const WriterOptions& options);

  absl::Status Reject(absl::StatusCode code, RecordType type, Reason why);
  // Checks direction and order for `type`.
  absl::Status CheckAllowed(RecordType type);
  // Room for `scratch` more bytes and `iovecs` more iovecs? Distinguishes "flush" from "never".
  absl::Status CheckRoom(RecordType type, size_t scratch, size_t iovecs);
  // Appends a record whose payload is entirely in scratch: writes the header and crc.
  absl::Status AddSmallRecord(RecordType type, uint8_t flags, size_t payload_size,
                              uint8_t** payload);
  void FinishSmallRecord(uint8_t* header, size_t payload_size);
  uint8_t* TakeScratch(size_t n);
  void PushIov(const void* p, size_t n);
  // Iovecs the pieces would need after the last one, merging contiguous neighbours as PushIov.
  size_t CountIovecs(const uint8_t* scratch_piece, size_t scratch_size,
                     std::span<const PageEntry> pages) const;

  const Preamble preamble_;
  const WriterOptions options_;
  const uint32_t zero_page_crc_;
  std::unique_ptr<uint8_t[]> scratch_store_;  // options_.banks banks of scratch_bytes
  std::unique_ptr<iovec[]> iov_store_;        // options_.banks banks of max_iovecs
  int bank_ = 0;
  uint8_t* scratch_ = nullptr;  // the current bank's
  iovec* iov_ = nullptr;

  size_t scratch_used_ = 0;
  size_t iov_count_ = 0;
  size_t batch_bytes_ = 0;
  uint64_t records_ = 0;
  uint64_t pages_ = 0;
  bool ended_ = false;
  uint64_t next_iteration_ = 0;
  bool final_sent_ = false;
  bool process_state_sent_ = false;
  bool error_sent_ = false;

  absl::StatusCode last_code_ = absl::StatusCode::kOk;
  RecordType last_type_ = RecordType::kPreamble;
  Reason last_reason_ = nullptr;
};

}  // namespace procmig::wire

#endif  // PROCMIG_WIRE_STREAM_WRITER_H_
