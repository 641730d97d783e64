// IoUringChannel: the Channel contract over io_uring (liburing), for sockets and files.
//
// Owns the descriptor and two rings, one per direction, so the writer and the reader never share
// a submission queue (rings are not thread-safe; each is used only under its direction's lock).
// A write batch is cut into SQEs of at most max_chunk_bytes / IOV_MAX iovecs, linked with
// IOSQE_IO_LINK and submitted together (up to the queue depth per io_uring_enter); the kernel
// runs a chain in order and cancels the rest of it after a short write, so the channel can always
// tell exactly how many leading bytes landed and resubmit the remainder. Sockets use
// sendmsg/recv (MSG_NOSIGNAL: a vanished peer is EPIPE, not SIGPIPE); regular files use
// writev/readv at tracked offsets (one position per direction, starting at the descriptor's
// current offset); pipes and other streams use the current position.
//
// Zero-copy (config.send_zerocopy, sockets only): IORING_OP_SENDMSG_ZC. Each send posts a result
// CQE flagged IORING_CQE_F_MORE and later a notification CQE flagged IORING_CQE_F_NOTIF when the
// kernel no longer references the pages; WriteV returns only after every notification of its
// batch arrived, so callers may reuse the memory at once. Where the kernel lacks the opcode or
// the socket refuses it (AF_UNIX says EOPNOTSUPP) the channel switches to plain sendmsg for good
// and zerocopy_fallback_reason() says why.
//
// <liburing.h> is included only by io_uring_channel.cc. Threading: see channel.h.
#ifndef PROCMIG_TRANSPORT_IO_URING_CHANNEL_H_
#define PROCMIG_TRANSPORT_IO_URING_CHANNEL_H_

#include <sys/socket.h>
#include <sys/uio.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "transport/channel.h"
#include "transport/transport_config.h"
#include "transport/unique_fd.h"

namespace procmig {

class IoUringChannel : public Channel {
 public:
  // Takes ownership of *fd on success only, so a caller can fall back to another channel on the
  // same descriptor. FailedPrecondition naming the call and errno when the kernel refuses
  // io_uring ("io_uring_setup (queue depth 64) for ...: EPERM (Operation not permitted)").
  static absl::StatusOr<std::unique_ptr<IoUringChannel>> Create(UniqueFd* fd,
                                                                const TransportConfig& config,
                                                                std::string name);
  ~IoUringChannel() override;

  absl::Status WriteV(const iovec* iov, size_t n) override;
  absl::Status ReadExact(void* buf, size_t len) override;
  absl::StatusOr<size_t> ReadSome(void* buf, size_t cap) override;
  absl::Status Shutdown() override;
  void Abort() override;
  absl::Status Close() override;
  std::optional<SendQueue> PendingSend() const override;
  std::string_view kind() const override { return "io_uring"; }
  std::vector<int> descriptors() const override;

  // True while writes go through SENDMSG_ZC.
  bool zerocopy_active() const { return zerocopy_.load(); }
  // Why zero-copy was asked for but is not used; empty otherwise.
  std::string zerocopy_fallback_reason() const;

 private:
  struct Ring;  // wraps struct io_uring; defined in the .cc
  enum class FdType { kSocket, kFile, kStream };

  IoUringChannel(UniqueFd fd, const TransportConfig& config, std::string name, FdType type);
  // One submission round of a write: up to queue_depth linked SQEs. Returns bytes written in
  // order (possibly short), or an error.
  absl::StatusOr<size_t> WriteRound(class IovecCursor& cursor, const std::string& step);
  // Submits what is queued on `ring` and reaps until `want` result CQEs were seen (each lands in
  // results[user_data]) and, when `drain` is set, until *pending_notifs (zero-copy notifications
  // still owed by the kernel) is zero.
  absl::Status Reap(Ring& ring, unsigned want, int* results, int* pending_notifs, bool drain,
                    const std::string& step);
  // One read SQE (recv with MSG_WAITALL if `all`). Returns bytes read; 0 at EOF.
  absl::StatusOr<size_t> ReadOnce(void* buf, size_t len, bool all);
  absl::Status WaitReady(short events, const std::string& step);
  void SetZerocopyFallback(std::string reason);

  // Immutable after construction (fd_ changes only in Close, the last call).
  UniqueFd fd_;
  const TransportConfig config_;
  const FdType type_;
  // Error-message prefixes, built once: the data path allocates nothing while it succeeds (the
  // agent sends while the program's threads are parked and may hold the malloc lock).
  const std::string write_step_;
  const std::string read_step_;

  std::mutex write_mu_;  // held for a whole WriteV batch; guards the members below
  std::unique_ptr<Ring> tx_ ABSL_GUARDED_BY(write_mu_);
  uint64_t write_pos_ ABSL_GUARDED_BY(write_mu_) = 0;
  int pending_notifs_ ABSL_GUARDED_BY(write_mu_) = 0;
  // Scratch for one round: per-SQE iovecs, msghdrs and results (sized queue_depth).
  std::unique_ptr<struct iovec[]> iov_scratch_ ABSL_GUARDED_BY(write_mu_);
  std::unique_ptr<struct msghdr[]> msg_scratch_ ABSL_GUARDED_BY(write_mu_);
  std::unique_ptr<int[]> results_ ABSL_GUARDED_BY(write_mu_);
  std::unique_ptr<size_t[]> wanted_ ABSL_GUARDED_BY(write_mu_);

  std::mutex read_mu_;
  std::unique_ptr<Ring> rx_ ABSL_GUARDED_BY(read_mu_);
  uint64_t read_pos_ ABSL_GUARDED_BY(read_mu_) = 0;
  int read_result_ ABSL_GUARDED_BY(read_mu_) = 0;

  std::atomic<bool> zerocopy_{false};
  // The two rings' descriptors (set once in Create, -1 after Close), for descriptors(): the
  // rings themselves are only reached under their direction's lock.
  std::atomic<int> ring_fds_[2] = {-1, -1};
  // Ask for IORING_NOTIF_USAGE_ZC_COPIED in notifications; dropped if the kernel (< 6.2) refuses.
  bool zerocopy_report_ ABSL_GUARDED_BY(write_mu_) = true;
  mutable std::mutex reason_mu_;
  std::string zerocopy_reason_ ABSL_GUARDED_BY(reason_mu_);
  std::atomic<bool> write_shut_{false};
  std::atomic<bool> aborted_{false};
};

}  // namespace procmig

#endif  // PROCMIG_TRANSPORT_IO_URING_CHANNEL_H_
