// FileRunWriter: writes the pages of a page run into a block's image file (a checkpoint receive,
// where the receiver keeps no copy of the block in memory).
//
// Pages are queued at increasing, contiguous page numbers and written with one write per
// stretch: a raw page straight from where it was received (the channel's read buffer, no copy
// here), a decoded page (zlib, XBZRLE) from a scratch slot, a zero page from a page of zeros.
// A page that breaks the stretch, a full batch, and Flush() write what is queued. Writing into
// the page cache with large writes needs no zeroing and no page faults; a shared mapping of the
// file cost the receiver 70% of its CPU in zeroing folios that readahead made for holes.
//
// A file open with O_DIRECT (Start's `direct`) skips the page cache: the pages go from the slots to
// the device. Every page is then copied into a slot (page-aligned, as O_DIRECT needs; the read
// buffer is not), which costs less than filling fresh page cache: on the reference VM the
// receiver's copy into the page cache took 55% of the machine's CPU during a 1 GiB store. Those
// writes are asynchronous (io_uring): a stretch's slots belong to one of kBanks banks, Flush()
// submits the bank and moves on to the next, and only a bank still in flight when its turn comes
// round is waited for. The channel thread thus reads the next run from the socket while the
// device takes the last one (a synchronous pwritev took 0.65 s of a 1.0 s 1 GiB stream, strace).
// A file system that refuses such a write (EINVAL) gets O_DIRECT turned off for the file, and the
// write is redone through the page cache. Without io_uring (refused by the kernel or a seccomp
// filter) the direct writes are synchronous.
//
// One per channel thread (scratch slots, a ring); not thread-safe. Flush() before the queued
// bytes' buffers change (the end of each run); Drain() before the file is read back, resized,
// removed or synced. An error of an asynchronous write is returned by the call that collects it.
#ifndef PROCMIG_MIGRATION_FILE_RUN_WRITER_H_
#define PROCMIG_MIGRATION_FILE_RUN_WRITER_H_

#include <sys/uio.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace procmig {

class FileRunWriter {
 public:
  // Pages per write (IOV_MAX) and scratch slots per bank: 4 MiB of 4 KiB pages. Every direct
  // write into a hole of an ext4 file allocates, under the inode's exclusive lock: 4 MiB writes
  // cut the receiver's waits for a free bank in a 1 GiB store from 98-130 ms (3 runs) to 20 and
  // 26 ms (2 runs) against 1 MiB ones (instrumented, reference VM, virtio disk; two more runs
  // where the device stalled waited 284 and 325 ms).
  static constexpr size_t kMaxIov = 1024;
  // Banks of slots, so direct writes in flight at most (32 MiB of 4 KiB pages per channel).
  static constexpr size_t kBanks = 8;

  explicit FileRunWriter(uint32_t page_size);
  // Waits for the writes in flight (their errors are lost: Drain() first to see them).
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
  // delta. Drains first.
  absl::StatusOr<uint8_t*> SlotHolding(uint64_t page);
  // Writes what is queued: at once through the page cache, submitted when direct.
  absl::Status Flush();
  // Flush(), then waits until every write is done.
  absl::Status Drain();

  // Bytes written (completed) since construction.
  uint64_t written() const { return written_; }
  // Direct writes submitted to the ring (0 when they were all synchronous).
  uint64_t async_writes() const { return async_writes_; }

 private:
  struct Bank {
    uint8_t* slots = nullptr;  // kMaxIov pages
    std::array<iovec, kMaxIov> iov{};
    size_t count = 0;  // iovecs queued
    size_t slots_used = 0;
    uint64_t first = 0;  // page of iov[0]
    int fd = -1;
    bool direct = false;
    bool in_flight = false;
    std::string what;
  };
  struct Ring;

  Bank& bank() { return banks_[cur_]; }
  // Whether page `page` can join what is queued (the next page, room in the batch).
  bool Continues(uint64_t page) const;
  absl::Status Queue(uint64_t page, const uint8_t* bytes);
  // Writes bank b from byte `done` of it on with pwritev (EINVAL on a direct file: O_DIRECT off,
  // retried), then empties it.
  absl::Status WriteSync(Bank& b, size_t done);
  // Empties bank b and names its block and pages in the error.
  static absl::Status WriteError(Bank& b, int err);
  // Collects one completed write (waiting for one when `wait`); false in *got when none was.
  absl::Status Reap(bool wait, bool* got);

  const uint32_t page_size_;
  int fd_ = -1;
  std::string what_;
  bool direct_ = false;
  uint8_t* scratch_ = nullptr;  // kBanks * kMaxIov slots and a page of zeros; made at need
  std::array<Bank, kBanks> banks_;
  size_t cur_ = 0;
  std::unique_ptr<Ring> ring_;  // made for the first direct file; null: synchronous
  bool ring_tried_ = false;
  size_t in_flight_ = 0;
  uint64_t written_ = 0;
  uint64_t async_writes_ = 0;
};

}  // namespace procmig

#endif  // PROCMIG_MIGRATION_FILE_RUN_WRITER_H_
