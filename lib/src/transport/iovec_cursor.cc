#include "transport/iovec_cursor.h"

#include <algorithm>
#include <cassert>

namespace procmig {

IovecCursor::IovecCursor(const iovec* iov, size_t n) : iov_(iov), n_(n) {
  for (size_t i = 0; i < n; ++i) remaining_ += iov[i].iov_len;
}

void IovecCursor::Advance(size_t bytes) {
  assert(bytes <= remaining_);
  remaining_ -= bytes;
  while (bytes > 0) {
    size_t avail = iov_[index_].iov_len - offset_;
    if (bytes < avail) {
      offset_ += bytes;
      return;
    }
    bytes -= avail;
    ++index_;
    offset_ = 0;
  }
  // Land on the next non-empty iovec so Fill() starts cleanly.
  while (index_ < n_ && iov_[index_].iov_len == offset_) {
    ++index_;
    offset_ = 0;
  }
}

size_t IovecCursor::Fill(iovec* out, size_t max_iov, size_t max_bytes, size_t* bytes) const {
  size_t count = 0;
  size_t total = 0;
  size_t i = index_;
  size_t off = offset_;
  while (i < n_ && total < max_bytes) {
    size_t len = iov_[i].iov_len - off;
    if (len > 0) {
      len = std::min(len, max_bytes - total);
      char* base = static_cast<char*>(iov_[i].iov_base) + off;
      if (count > 0 &&
          static_cast<char*>(out[count - 1].iov_base) + out[count - 1].iov_len == base) {
        out[count - 1].iov_len += len;  // adjacent in memory: one segment for the kernel
      } else {
        if (count == max_iov) break;
        out[count].iov_base = base;
        out[count].iov_len = len;
        ++count;
      }
      total += len;
    }
    ++i;
    off = 0;
  }
  *bytes = total;
  return count;
}

}  // namespace procmig
