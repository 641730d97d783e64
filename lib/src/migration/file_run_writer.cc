#include "migration/file_run_writer.h"

#include <fcntl.h>
#include <liburing.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "transport/iovec_cursor.h"

namespace procmig {

struct FileRunWriter::Ring {
  io_uring ring;
};

FileRunWriter::FileRunWriter(uint32_t page_size) : page_size_(page_size) {}

FileRunWriter::~FileRunWriter() {
  if (ring_ != nullptr) {
    while (in_flight_ > 0) {
      io_uring_cqe* cqe = nullptr;
      const int r = io_uring_wait_cqe(&ring_->ring, &cqe);
      if (r == -EINTR) continue;
      if (r < 0) break;  // (io_uring_queue_exit waits for what is left)
      io_uring_cqe_seen(&ring_->ring, cqe);
      --in_flight_;
    }
    io_uring_queue_exit(&ring_->ring);
  }
  if (scratch_ != nullptr) munmap(scratch_, (kBanks * kMaxIov + 1) * page_size_);
}

absl::Status FileRunWriter::Start(int fd, std::string what, bool direct) {
  if (fd != fd_) RETURN_IF_ERROR(Flush());
  if (scratch_ == nullptr) {
    // Untouched banks cost no memory: through the page cache only bank 0's slots are used.
    void* p = mmap(nullptr, (kBanks * kMaxIov + 1) * page_size_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return ErrnoStatus("store image: map the page writer's slots", errno);
    scratch_ = static_cast<uint8_t*>(p);  // the last page stays zero
    for (size_t i = 0; i < kBanks; ++i) banks_[i].slots = scratch_ + i * kMaxIov * page_size_;
  }
  if (direct && !ring_tried_) {
    ring_tried_ = true;
    auto r = std::make_unique<Ring>();
    // No ring (an old kernel, a seccomp filter): the direct writes are made synchronously.
    if (io_uring_queue_init(kBanks, &r->ring, 0) == 0) ring_ = std::move(r);
  }
  fd_ = fd;
  what_ = std::move(what);
  direct_ = direct;
  return absl::OkStatus();
}

bool FileRunWriter::Continues(uint64_t page) const {
  const Bank& b = banks_[cur_];
  return b.count == 0 || (page == b.first + b.count && b.count < kMaxIov);
}

absl::Status FileRunWriter::Queue(uint64_t page, const uint8_t* bytes) {
  if (!Continues(page)) RETURN_IF_ERROR(Flush());
  Bank& b = bank();
  if (b.count == 0) {
    b.first = page;
    b.fd = fd_;
    b.direct = direct_;
    b.what = what_;
  }
  b.iov[b.count++] = {const_cast<uint8_t*>(bytes), page_size_};
  return absl::OkStatus();
}

absl::Status FileRunWriter::Add(uint64_t page, const uint8_t* bytes) {
  if (!direct_) return Queue(page, bytes);
  ASSIGN_OR_RETURN(uint8_t * slot, Slot(page));
  std::memcpy(slot, bytes, page_size_);
  return absl::OkStatus();
}

absl::Status FileRunWriter::AddZero(uint64_t page) {
  return Queue(page, scratch_ + kBanks * kMaxIov * page_size_);
}

absl::StatusOr<uint8_t*> FileRunWriter::Slot(uint64_t page) {
  // Flushed first when the page does not continue the stretch, so Queue below never flushes
  // and frees the slot it is given.
  if (bank().slots_used == kMaxIov || !Continues(page)) RETURN_IF_ERROR(Flush());
  Bank& b = bank();
  uint8_t* slot = b.slots + b.slots_used++ * page_size_;
  RETURN_IF_ERROR(Queue(page, slot));
  return slot;
}

absl::StatusOr<uint8_t*> FileRunWriter::SlotHolding(uint64_t page) {
  RETURN_IF_ERROR(Drain());
  ASSIGN_OR_RETURN(uint8_t * dst, Slot(page));
  size_t got = 0;
  while (got < page_size_) {
    ssize_t r =
        pread(fd_, dst + got, page_size_ - got, static_cast<off_t>(page * page_size_ + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      return ErrnoStatus(absl::StrCat("store image: read back ", what_, " page ", page), errno);
    }
    if (r == 0) {  // past the end: reads as zero, as a hole does
      std::fill(dst + got, dst + page_size_, 0);
      break;
    }
    got += static_cast<size_t>(r);
  }
  return dst;
}

absl::Status FileRunWriter::WriteError(Bank& b, int err) {
  const uint64_t first = b.first, count = b.count;
  b.count = b.slots_used = 0;
  return ErrnoStatus(absl::StatusCode::kResourceExhausted,
                     absl::StrCat("store image: write ", b.what, " pages ", first, "..",
                                  first + count - 1, " to its file"),
                     err);
}

absl::Status FileRunWriter::WriteSync(Bank& b, size_t done) {
  IovecCursor cursor(b.iov.data(), b.count);
  cursor.Advance(done);  // what a short asynchronous write took already
  const off_t start = static_cast<off_t>(b.first * page_size_);
  std::array<iovec, kMaxIov> window;
  while (!cursor.done()) {
    size_t bytes = 0;
    const size_t n = cursor.Fill(window.data(), window.size(), cursor.remaining(), &bytes);
    const off_t off = start + static_cast<off_t>(b.count * page_size_ - cursor.remaining());
    ssize_t w = pwritev(b.fd, window.data(), static_cast<int>(n), off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EINVAL && b.direct) {
      // Not this file system's way (alignment, no O_DIRECT support): through the page cache.
      const int flags = fcntl(b.fd, F_GETFL);
      if (flags >= 0 && fcntl(b.fd, F_SETFL, flags & ~O_DIRECT) == 0) {
        b.direct = false;
        if (b.fd == fd_) direct_ = false;
        continue;
      }
    }
    if (w <= 0) return WriteError(b, w < 0 ? errno : ENOSPC);
    written_ += static_cast<uint64_t>(w);
    cursor.Advance(static_cast<size_t>(w));
  }
  b.count = b.slots_used = 0;
  return absl::OkStatus();
}

absl::Status FileRunWriter::Reap(bool wait, bool* got) {
  *got = false;
  io_uring_cqe* cqe = nullptr;
  int r;
  do {
    r = wait ? io_uring_wait_cqe(&ring_->ring, &cqe) : io_uring_peek_cqe(&ring_->ring, &cqe);
  } while (r == -EINTR);
  if (r == -EAGAIN && !wait) return absl::OkStatus();
  if (r < 0) return ErrnoStatus("store image: wait for a page write", -r);
  Bank& b = banks_[io_uring_cqe_get_data64(cqe)];
  const int res = cqe->res;
  io_uring_cqe_seen(&ring_->ring, cqe);
  b.in_flight = false;
  --in_flight_;
  *got = true;
  if (res == static_cast<int>(b.count * page_size_)) {  // every iovec is one whole page
    written_ += static_cast<uint64_t>(res);
    b.count = b.slots_used = 0;
    return absl::OkStatus();
  }
  if (res < 0 && !(res == -EINVAL && b.direct)) return WriteError(b, -res);
  // Short (the rest is written here) or refused as direct (WriteSync turns O_DIRECT off).
  if (res > 0) written_ += static_cast<uint64_t>(res);
  return WriteSync(b, res > 0 ? static_cast<size_t>(res) : 0);
}

absl::Status FileRunWriter::Flush() {
  Bank& b = bank();
  if (b.count == 0) return absl::OkStatus();
  if (!b.direct || ring_ == nullptr) return WriteSync(b, 0);
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_->ring);
  if (sqe == nullptr) return WriteSync(b, 0);  // (never: a bank is reaped before reuse)
  io_uring_prep_writev(sqe, b.fd, b.iov.data(), static_cast<unsigned>(b.count),
                       b.first * page_size_);
  io_uring_sqe_set_data64(sqe, cur_);
  int r;
  do {
    r = io_uring_submit(&ring_->ring);
  } while (r == -EINTR);
  if (r < 0) return ErrnoStatus("store image: submit a page write", -r);
  b.in_flight = true;
  ++in_flight_;
  ++async_writes_;
  cur_ = (cur_ + 1) % kBanks;
  // Collect what is done already (errors surface early), then wait for the next bank if it is
  // still on its way.
  bool got = true;
  while (got && in_flight_ > 0) RETURN_IF_ERROR(Reap(/*wait=*/false, &got));
  while (bank().in_flight) RETURN_IF_ERROR(Reap(/*wait=*/true, &got));
  return absl::OkStatus();
}

absl::Status FileRunWriter::Drain() {
  RETURN_IF_ERROR(Flush());
  absl::Status first_error;
  while (in_flight_ > 0) {
    bool got = false;
    absl::Status s = Reap(/*wait=*/true, &got);
    if (!s.ok() && first_error.ok()) first_error = s;
    if (!got && !s.ok()) break;  // the ring itself failed
  }
  return first_error;
}

}  // namespace procmig
