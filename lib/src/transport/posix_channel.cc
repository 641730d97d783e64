#include "transport/posix_channel.h"

#include <limits.h>
#include <linux/sockios.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "transport/iovec_cursor.h"

namespace procmig {

absl::StatusOr<std::unique_ptr<PosixChannel>> PosixChannel::Create(UniqueFd fd, std::string name) {
  struct stat st;
  if (!fd.valid() || fstat(fd.get(), &st) != 0) {
    return ErrnoStatus(absl::StatusCode::kInvalidArgument, absl::StrCat("posix channel ", name),
                       fd.valid() ? errno : EBADF);
  }
  return std::unique_ptr<PosixChannel>(
      new PosixChannel(std::move(fd), std::move(name), S_ISSOCK(st.st_mode)));
}

PosixChannel::PosixChannel(UniqueFd fd, std::string name, bool is_socket)
    : Channel(std::move(name)),
      fd_(std::move(fd)),
      is_socket_(is_socket),
      write_step_(absl::StrCat(is_socket ? "sendmsg to " : "writev to ", this->name())),
      read_step_(absl::StrCat(is_socket ? "recv from " : "read from ", this->name())) {}

absl::Status PosixChannel::WaitReady(short events, const std::string& step) {
  pollfd p{fd_.get(), events, 0};
  for (;;) {
    if (aborted_.load()) return absl::UnavailableError(absl::StrCat(step, ": channel aborted"));
    int r = poll(&p, 1, -1);
    if (r > 0) return absl::OkStatus();
    if (r < 0 && errno != EINTR) return ErrnoStatus(step, errno);
  }
}

absl::Status PosixChannel::WriteV(const iovec* iov, size_t n) {
  std::lock_guard<std::mutex> lock(write_mu_);
  const std::string& step = write_step_;
  if (write_shut_.load() || aborted_.load()) {
    return absl::UnavailableError(absl::StrCat(step, ": channel was shut down"));
  }
  IovecCursor cursor(iov, n);
  iovec window[IOV_MAX];
  while (!cursor.done()) {
    size_t want = 0;
    size_t cnt = cursor.Fill(window, IOV_MAX, SSIZE_MAX, &want);
    ssize_t r;
    if (is_socket_) {
      msghdr msg{};
      msg.msg_iov = window;
      msg.msg_iovlen = cnt;
      r = sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
    } else {
      r = writev(fd_.get(), window, static_cast<int>(cnt));
    }
    if (r < 0) {
      int err = errno;
      if (err == EINTR) {
        write_resumes_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      if (err == EAGAIN || err == EWOULDBLOCK) {
        write_resumes_.fetch_add(1, std::memory_order_relaxed);
        RETURN_IF_ERROR(WaitReady(POLLOUT, step));
        continue;
      }
      if (aborted_.load()) return absl::UnavailableError(absl::StrCat(step, ": channel aborted"));
      return ErrnoStatus(step, err);
    }
    if (r == 0) {
      return absl::InternalError(absl::StrCat(step, ": kernel accepted 0 of ", want, " bytes"));
    }
    cursor.Advance(static_cast<size_t>(r));
    bytes_out_.fetch_add(static_cast<uint64_t>(r), std::memory_order_relaxed);
    if (static_cast<size_t>(r) < want) write_resumes_.fetch_add(1, std::memory_order_relaxed);
  }
  write_batches_.fetch_add(1, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::StatusOr<size_t> PosixChannel::ReadOnce(void* buf, size_t cap) {
  cap = std::min<size_t>(cap, SSIZE_MAX);
  for (;;) {
    if (aborted_.load()) {
      return absl::UnavailableError(absl::StrCat(read_step_, ": channel aborted"));
    }
    ssize_t r = is_socket_ ? recv(fd_.get(), buf, cap, 0) : read(fd_.get(), buf, cap);
    if (r >= 0) {
      bytes_in_.fetch_add(static_cast<uint64_t>(r), std::memory_order_relaxed);
      return static_cast<size_t>(r);
    }
    int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) {
      RETURN_IF_ERROR(WaitReady(POLLIN, read_step_));
      continue;
    }
    return ErrnoStatus(read_step_, err);
  }
}

absl::StatusOr<size_t> PosixChannel::ReadSome(void* buf, size_t cap) {
  std::lock_guard<std::mutex> lock(read_mu_);
  if (cap == 0) return absl::InvalidArgumentError(absl::StrCat("read from ", name(), ": cap 0"));
  return ReadOnce(buf, cap);
}

absl::Status PosixChannel::ReadExact(void* buf, size_t len) {
  std::lock_guard<std::mutex> lock(read_mu_);
  size_t done = 0;
  while (done < len) {
    ASSIGN_OR_RETURN(size_t r, ReadOnce(static_cast<char*>(buf) + done, len - done));
    if (r == 0) {
      return absl::UnavailableError(
          absl::StrCat("read from ", name(), ": EOF after ", done, " of ", len, " bytes"));
    }
    done += r;
  }
  return absl::OkStatus();
}

std::optional<Channel::SendQueue> TcpSendQueue(int fd) {
  // SIOCOUTQNSD: bytes written and not yet sent (TCP only; other sockets and files refuse it).
  int unsent = 0;
  int buffer = 0;
  socklen_t len = sizeof buffer;
  if (ioctl(fd, SIOCOUTQNSD, &unsent) != 0 || unsent < 0) return std::nullopt;
  if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer, &len) != 0 || buffer <= 0) {
    return std::nullopt;
  }
  return Channel::SendQueue{static_cast<size_t>(unsent), static_cast<size_t>(buffer)};
}

std::optional<Channel::SendQueue> PosixChannel::PendingSend() const {
  if (!is_socket_) return std::nullopt;
  return TcpSendQueue(fd_.get());
}

absl::Status PosixChannel::Shutdown() {
  if (write_shut_.exchange(true)) return absl::OkStatus();
  if (is_socket_ && shutdown(fd_.get(), SHUT_WR) != 0 && errno != ENOTCONN) {
    return ErrnoStatus(absl::StrCat("shutdown(SHUT_WR) ", name()), errno);
  }
  return absl::OkStatus();
}

void PosixChannel::Abort() {
  aborted_.store(true);
  // Wakes a reader or writer blocked in the kernel; for pipes and files nothing can, but their
  // operations do not block indefinitely on a live peer that has stopped.
  if (is_socket_) shutdown(fd_.get(), SHUT_RDWR);
}

std::vector<int> PosixChannel::descriptors() const {
  if (!fd_.valid()) return {};
  return {fd_.get()};
}

absl::Status PosixChannel::Close() {
  if (!fd_.valid()) return absl::OkStatus();
  int fd = fd_.Release();
  if (close(fd) != 0) return ErrnoStatus(absl::StrCat("close ", name()), errno);
  return absl::OkStatus();
}

}  // namespace procmig
