// UniqueFd: sole owner of one file descriptor, closed on destruction.
//
// Endpoints hand connected sockets and opened files to channels as UniqueFd, so ownership is in
// the type: whoever holds it closes it, exactly once. Not thread-safe; move it, do not share it.
#ifndef PROCMIG_TRANSPORT_UNIQUE_FD_H_
#define PROCMIG_TRANSPORT_UNIQUE_FD_H_

#include <unistd.h>

#include <utility>

namespace procmig {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.Release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) Reset(other.Release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int Release() { return std::exchange(fd_, -1); }
  // Closes the current descriptor (errors from close are not actionable here: the data path
  // reports its own errors before this point) and takes `fd`.
  void Reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace procmig

#endif  // PROCMIG_TRANSPORT_UNIQUE_FD_H_
