// IovecCursor: a read position inside a caller's iovec batch.
//
// Both channels resume partial writes from where the kernel stopped: Advance() by what was
// written, then Fill() the next window. The cursor never modifies the caller's iovecs (they are
// const); windows are written into scratch arrays the channel owns. Single-threaded.
#ifndef PROCMIG_TRANSPORT_IOVEC_CURSOR_H_
#define PROCMIG_TRANSPORT_IOVEC_CURSOR_H_

#include <sys/uio.h>

#include <cstddef>

namespace procmig {

class IovecCursor {
 public:
  IovecCursor(const iovec* iov, size_t n);

  // Bytes not yet consumed.
  size_t remaining() const { return remaining_; }
  bool done() const { return remaining_ == 0; }

  // Consumes `bytes` (at most remaining()).
  void Advance(size_t bytes);

  // Writes into out[0..max_iov) the iovecs covering the next at most `max_bytes` unconsumed bytes,
  // starting at the cursor, without consuming them; skips empty iovecs and merges iovecs that are
  // adjacent in memory (a run of neighbouring pages becomes one segment: the kernel copies one
  // large segment markedly faster than many 4 KiB ones). Returns the iovec count and sets *bytes
  // to the bytes they cover.
  size_t Fill(iovec* out, size_t max_iov, size_t max_bytes, size_t* bytes) const;

 private:
  const iovec* iov_;
  size_t n_;
  size_t index_ = 0;   // current iovec
  size_t offset_ = 0;  // bytes of iov_[index_] already consumed
  size_t remaining_ = 0;
};

}  // namespace procmig

#endif  // PROCMIG_TRANSPORT_IOVEC_CURSOR_H_
