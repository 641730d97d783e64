#include "migration/file_run_writer.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace procmig {
namespace {

// Pages per pwritev (IOV_MAX is 1024) and scratch slots per writer: 1 MiB of 4 KiB pages.
constexpr size_t kMaxIov = 256;
constexpr size_t kSlots = 256;

}  // namespace

FileRunWriter::FileRunWriter(uint32_t page_size) : page_size_(page_size) { iov_.reserve(kMaxIov); }

FileRunWriter::~FileRunWriter() {
  if (scratch_ != nullptr) munmap(scratch_, (kSlots + 1) * page_size_);
}

absl::Status FileRunWriter::Start(int fd, std::string what, bool direct) {
  if (fd != fd_) RETURN_IF_ERROR(Flush());
  if (scratch_ == nullptr) {
    void* p = mmap(nullptr, (kSlots + 1) * page_size_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return ErrnoStatus("store image: map the page writer's slots", errno);
    scratch_ = static_cast<uint8_t*>(p);  // the last page stays zero
  }
  fd_ = fd;
  what_ = std::move(what);
  direct_ = direct;
  return absl::OkStatus();
}

bool FileRunWriter::Continues(uint64_t page) const {
  return iov_.empty() || (page == first_ + iov_.size() && iov_.size() < kMaxIov);
}

absl::Status FileRunWriter::Queue(uint64_t page, const uint8_t* bytes) {
  if (!Continues(page)) RETURN_IF_ERROR(Flush());
  if (iov_.empty()) first_ = page;
  iov_.push_back({const_cast<uint8_t*>(bytes), page_size_});
  return absl::OkStatus();
}

absl::Status FileRunWriter::Add(uint64_t page, const uint8_t* bytes) {
  if (!direct_) return Queue(page, bytes);
  ASSIGN_OR_RETURN(uint8_t * slot, Slot(page));
  std::memcpy(slot, bytes, page_size_);
  return absl::OkStatus();
}

absl::Status FileRunWriter::AddZero(uint64_t page) {
  return Queue(page, scratch_ + kSlots * page_size_);
}

absl::StatusOr<uint8_t*> FileRunWriter::Slot(uint64_t page) {
  // Flushed first when the page does not continue the stretch, so Queue below never flushes
  // and frees the slot it is given.
  if (slots_used_ == kSlots || !Continues(page)) RETURN_IF_ERROR(Flush());
  uint8_t* slot = scratch_ + slots_used_++ * page_size_;
  RETURN_IF_ERROR(Queue(page, slot));
  return slot;
}

absl::StatusOr<uint8_t*> FileRunWriter::SlotHolding(uint64_t page) {
  RETURN_IF_ERROR(Flush());
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

absl::Status FileRunWriter::Flush() {
  if (iov_.empty()) return absl::OkStatus();
  const uint64_t first = first_, count = iov_.size();
  size_t i = 0;
  off_t off = static_cast<off_t>(first * page_size_);
  while (i < iov_.size()) {
    ssize_t w = pwritev(fd_, iov_.data() + i, static_cast<int>(iov_.size() - i), off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EINVAL && direct_) {
      // Not this file system's way (alignment, no O_DIRECT support): through the page cache.
      const int flags = fcntl(fd_, F_GETFL);
      if (flags >= 0 && fcntl(fd_, F_SETFL, flags & ~O_DIRECT) == 0) {
        direct_ = false;
        continue;
      }
    }
    if (w <= 0) {
      const int err = w < 0 ? errno : ENOSPC;
      iov_.clear();
      slots_used_ = 0;
      return ErrnoStatus(absl::StatusCode::kResourceExhausted,
                         absl::StrCat("store image: write ", what_, " pages ", first, "..",
                                      first + count - 1, " to its file"),
                         err);
    }
    off += w;
    written_ += static_cast<uint64_t>(w);
    // Drop what was written; a partial write leaves the rest of an iovec.
    size_t left = static_cast<size_t>(w);
    while (left > 0 && i < iov_.size()) {
      if (left >= iov_[i].iov_len) {
        left -= iov_[i].iov_len;
        ++i;
      } else {
        iov_[i].iov_base = static_cast<uint8_t*>(iov_[i].iov_base) + left;
        iov_[i].iov_len -= left;
        left = 0;
      }
    }
  }
  iov_.clear();
  slots_used_ = 0;
  return absl::OkStatus();
}

}  // namespace procmig
