// PosixChannel: the Channel contract over plain readv/writev (sendmsg/recv on sockets).
//
// The fallback wherever io_uring is missing or refused (Docker's default seccomp profile blocks
// io_uring_setup with EPERM), and what PROCMIG_TRANSPORT=posix selects. It owns the descriptor.
// Sockets are written with sendmsg(MSG_NOSIGNAL) so a vanished peer is EPIPE, never SIGPIPE;
// pipes have no such flag, so a process writing to a pipe channel must ignore SIGPIPE itself.
// Non-blocking descriptors are supported (EAGAIN waits in poll). Threading: see channel.h.
#ifndef PROCMIG_TRANSPORT_POSIX_CHANNEL_H_
#define PROCMIG_TRANSPORT_POSIX_CHANNEL_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "transport/channel.h"
#include "transport/unique_fd.h"

namespace procmig {

class PosixChannel : public Channel {
 public:
  // Takes ownership of `fd`. InvalidArgument if it is not open.
  static absl::StatusOr<std::unique_ptr<PosixChannel>> Create(UniqueFd fd, std::string name);
  ~PosixChannel() override = default;

  absl::Status WriteV(const iovec* iov, size_t n) override;
  absl::Status ReadExact(void* buf, size_t len) override;
  absl::StatusOr<size_t> ReadSome(void* buf, size_t cap) override;
  absl::Status Shutdown() override;
  void Abort() override;
  absl::Status Close() override;
  std::optional<SendQueue> PendingSend() const override;
  std::string_view kind() const override { return "posix"; }
  std::vector<int> descriptors() const override;

 private:
  PosixChannel(UniqueFd fd, std::string name, bool is_socket);
  // One read(2)/recv(2) with EINTR and EAGAIN handled; 0 means EOF.
  absl::StatusOr<size_t> ReadOnce(void* buf, size_t cap);
  // Blocks in poll(2) until `events` is ready on the descriptor (for non-blocking fds).
  absl::Status WaitReady(short events, const std::string& step);

  // Immutable after construction (fd_ changes only in Close, the last call).
  UniqueFd fd_;
  const bool is_socket_;
  // Error-message prefixes, built once: the data path allocates nothing while it succeeds (the
  // agent sends while the program's threads are parked and may hold the malloc lock).
  const std::string write_step_;
  const std::string read_step_;

  std::mutex write_mu_;  // held for a whole WriteV batch
  std::mutex read_mu_;
  std::atomic<bool> write_shut_{false};
  std::atomic<bool> aborted_{false};
};

// Channel::PendingSend for a TCP socket `fd`; nullopt for anything else.
std::optional<Channel::SendQueue> TcpSendQueue(int fd);

}  // namespace procmig

#endif  // PROCMIG_TRANSPORT_POSIX_CHANNEL_H_
