// FileRunWriter: writes the pages of a page run into a block's image file (a checkpoint receive,
// where the receiver keeps no copy of the block in memory).
//
// Pages are queued at increasing, contiguous page numbers and written with one pwritev per
// stretch: a raw page straight from where it was received (the channel's read buffer, no copy
// here), a decoded page (zlib, XBZRLE) from a scratch slot, a zero page from a page of zeros.
// A page that breaks the stretch, a full batch, and Flush() write what is queued. Writing into
// the page cache with large writes needs no zeroing and no page faults; a shared mapping of the
// file cost the receiver 70% of its CPU in zeroing folios that readahead made for holes.
//
// A file open with O_DIRECT (Start's `direct`) skips the page cache: the pages go from the slots to
// the device. Every page is then copied into a slot (page-aligned, as O_DIRECT needs; the read
// buffer is not), which costs less than filling fresh page cache: on the reference VM the
// receiver's copy into the page cache took 55% of the machine's CPU during a 1 GiB store. A
// file system that refuses such a write (EINVAL) gets O_DIRECT turned off for the file, and the
// write is retried through the page cache.
//
// One per channel thread (scratch slots); not thread-safe. Flush() before the queued bytes'
// buffers change (the end of each run) and before reading the file back.
#ifndef PROCMIG_MIGRATION_FILE_RUN_WRITER_H_
#define PROCMIG_MIGRATION_FILE_RUN_WRITER_H_

#include <sys/uio.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace procmig {

class FileRunWriter {
 public:
  explicit FileRunWriter(uint32_t page_size);
  ~FileRunWriter();
  FileRunWriter(const FileRunWriter&) = delete;
  FileRunWriter& operator=(const FileRunWriter&) = delete;

  // The following pages go to `fd` (the file of the block `what` names in errors; `direct`: it
  // is open with O_DIRECT). Flushes what is queued for another file.
  absl::Status Start(int fd, std::string what, bool direct = false);
  // Queues `bytes` (one page; must stay valid until the next Flush) as page `page`.
  absl::Status Add(uint64_t page, const uint8_t* bytes);
  // Queues a page of zeros.
  absl::Status AddZero(uint64_t page);
  // A scratch page to decode page `page` into, queued; valid until the next Flush.
  absl::StatusOr<uint8_t*> Slot(uint64_t page);
  // The same, holding the page as the file has it now (zeros in a hole): the base of an XBZRLE
  // delta. Writes what is queued first.
  absl::StatusOr<uint8_t*> SlotHolding(uint64_t page);
  // Writes what is queued.
  absl::Status Flush();

  // Bytes written since construction.
  uint64_t written() const { return written_; }

 private:
  // Whether page `page` can join what is queued (the next page, room in the batch).
  bool Continues(uint64_t page) const;
  absl::Status Queue(uint64_t page, const uint8_t* bytes);

  const uint32_t page_size_;
  int fd_ = -1;
  std::string what_;
  uint64_t first_ = 0;  // page of iov_[0]
  std::vector<iovec> iov_;
  bool direct_ = false;
  uint8_t* scratch_ = nullptr;  // kSlots pages and a page of zeros, page-aligned; made at need
  size_t slots_used_ = 0;
  uint64_t written_ = 0;
};

}  // namespace procmig

#endif  // PROCMIG_MIGRATION_FILE_RUN_WRITER_H_
