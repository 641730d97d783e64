#include "transport/io_uring_channel.h"

#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "transport/iovec_cursor.h"
#include "transport/posix_channel.h"

// Linux 6.2 uapi; liburing 2.3's copy of io_uring.h predates them.
#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3)
#endif
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#endif

namespace procmig {
namespace {

// Iovecs per SQE: 1 MiB of 4 KiB pages; keeps the per-round scratch at queue_depth * 4 KiB.
constexpr size_t kMaxIovPerSqe = 256;
// One read SQE moves at most this much (the SQE length field is 32 bits).
constexpr size_t kMaxReadPerSqe = 1u << 30;

}  // namespace

struct IoUringChannel::Ring {
  io_uring ring;
  bool initialized = false;
  ~Ring() {
    if (initialized) io_uring_queue_exit(&ring);
  }
};

absl::StatusOr<std::unique_ptr<IoUringChannel>> IoUringChannel::Create(
    UniqueFd* fd_in, const TransportConfig& config, std::string name) {
  UniqueFd& fd = *fd_in;
  RETURN_IF_ERROR(config.Validate());
  const std::string setup_step =
      absl::StrCat("io_uring_setup (queue depth ", config.queue_depth, ") for ", name);
  if (config.io_uring_setup_errno_for_test != 0) {
    return ErrnoStatus(absl::StatusCode::kFailedPrecondition, setup_step,
                       config.io_uring_setup_errno_for_test);
  }
  struct stat st;
  if (!fd.valid() || fstat(fd.get(), &st) != 0) {
    return ErrnoStatus(absl::StatusCode::kInvalidArgument, absl::StrCat("io_uring channel ", name),
                       fd.valid() ? errno : EBADF);
  }
  FdType type = FdType::kStream;
  uint64_t pos = 0;
  if (S_ISSOCK(st.st_mode)) {
    type = FdType::kSocket;
  } else if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)) {
    off_t cur = lseek(fd.get(), 0, SEEK_CUR);
    if (cur >= 0) {
      type = FdType::kFile;
      pos = static_cast<uint64_t>(cur);
    }
  }
  auto tx = std::make_unique<Ring>();
  auto rx = std::make_unique<Ring>();
  for (Ring* ring : {tx.get(), rx.get()}) {
    // COOP_TASKRUN (5.19+): completions are processed when the task enters the kernel anyway,
    // instead of interrupting it with an IPI; older kernels reject the flag, so retry without.
    io_uring_params params{};
    params.flags = IORING_SETUP_COOP_TASKRUN;
    int r = io_uring_queue_init_params(config.queue_depth, &ring->ring, &params);
    if (r == -EINVAL) {
      params = io_uring_params{};
      r = io_uring_queue_init_params(config.queue_depth, &ring->ring, &params);
    }
    if (r < 0) return ErrnoStatus(absl::StatusCode::kFailedPrecondition, setup_step, -r);
    ring->initialized = true;
  }
  std::unique_ptr<IoUringChannel> ch(new IoUringChannel(std::move(fd), config, name, type));
  ch->ring_fds_[0].store(tx->ring.ring_fd);
  ch->ring_fds_[1].store(rx->ring.ring_fd);
  ch->tx_ = std::move(tx);
  ch->rx_ = std::move(rx);
  ch->write_pos_ = pos;
  ch->read_pos_ = pos;
  if (config.send_zerocopy) {
    if (type != FdType::kSocket) {
      ch->SetZerocopyFallback(
          absl::StrCat("send_zerocopy: ", name, " is not a socket; using plain writev"));
    } else {
      io_uring_probe* probe = io_uring_get_probe_ring(&ch->tx_->ring);
      bool supported = probe != nullptr && io_uring_opcode_supported(probe, IORING_OP_SENDMSG_ZC);
      if (probe != nullptr) io_uring_free_probe(probe);
      if (supported) {
        ch->zerocopy_.store(true);
      } else {
        ch->SetZerocopyFallback(
            "send_zerocopy: kernel lacks IORING_OP_SENDMSG_ZC (Linux 6.1+); using plain sendmsg");
      }
    }
  }
  return ch;
}

IoUringChannel::IoUringChannel(UniqueFd fd, const TransportConfig& config, std::string name,
                               FdType type)
    : Channel(std::move(name)),
      fd_(std::move(fd)),
      config_(config),
      type_(type),
      write_step_(
          absl::StrCat(type == FdType::kSocket ? "sendmsg to " : "writev to ", this->name())),
      read_step_(absl::StrCat(type == FdType::kSocket ? "recv from " : "read from ", this->name())),
      iov_scratch_(new iovec[config.queue_depth * kMaxIovPerSqe]),
      msg_scratch_(new msghdr[config.queue_depth]),
      results_(new int[config.queue_depth]),
      wanted_(new size_t[config.queue_depth]) {}

IoUringChannel::~IoUringChannel() { (void)Close(); }

std::vector<int> IoUringChannel::descriptors() const {
  std::vector<int> out;
  if (fd_.valid()) out.push_back(fd_.get());
  for (const std::atomic<int>& fd : ring_fds_) {
    if (int v = fd.load(); v >= 0) out.push_back(v);
  }
  return out;
}

std::string IoUringChannel::zerocopy_fallback_reason() const {
  std::lock_guard<std::mutex> lock(reason_mu_);
  return zerocopy_reason_;
}

void IoUringChannel::SetZerocopyFallback(std::string reason) {
  zerocopy_.store(false);
  std::lock_guard<std::mutex> lock(reason_mu_);
  zerocopy_reason_ = std::move(reason);
}

absl::Status IoUringChannel::WaitReady(short events, const std::string& step) {
  pollfd p{fd_.get(), events, 0};
  for (;;) {
    if (aborted_.load()) return absl::UnavailableError(absl::StrCat(step, ": channel aborted"));
    int r = poll(&p, 1, -1);
    if (r > 0) return absl::OkStatus();
    if (r < 0 && errno != EINTR) return ErrnoStatus(step, errno);
  }
}

absl::Status IoUringChannel::Reap(Ring& ring, unsigned want, int* results, int* pending_notifs,
                                  bool drain, const std::string& step) {
  unsigned got = 0;
  while (got < want || (drain && *pending_notifs > 0)) {
    unsigned wait_nr = got < want ? want - got : static_cast<unsigned>(*pending_notifs);
    int ret = io_uring_submit_and_wait(&ring.ring, wait_nr);
    // EINTR: a signal arrived while waiting (whatever was queued is submitted on the next call);
    // EAGAIN/EBUSY: the kernel wants the CQ drained first, which the loop below does.
    if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
      return ErrnoStatus(absl::StrCat("io_uring_enter (", step, ")"), -ret);
    }
    io_uring_cqe* cqe;
    unsigned head;
    unsigned seen = 0;
    io_uring_for_each_cqe(&ring.ring, head, cqe) {
      ++seen;
      if (cqe->flags & IORING_CQE_F_NOTIF) {
        --*pending_notifs;
        zerocopy_notifications_.fetch_add(1, std::memory_order_relaxed);
        if (static_cast<uint32_t>(cqe->res) & IORING_NOTIF_USAGE_ZC_COPIED) {
          zerocopy_copied_.fetch_add(1, std::memory_order_relaxed);
        }
        continue;
      }
      results[cqe->user_data] = cqe->res;
      if ((cqe->flags & IORING_CQE_F_MORE) && pending_notifs != nullptr) ++*pending_notifs;
      ++got;
    }
    io_uring_cq_advance(&ring.ring, seen);
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> IoUringChannel::WriteRound(IovecCursor& cursor, const std::string& step) {
  IovecCursor probe = cursor;
  const bool zc = zerocopy_.load();
  const int msg_flags = MSG_NOSIGNAL | (config_.send_waitall ? MSG_WAITALL : 0);
  unsigned count = 0;
  size_t offset = 0;
  io_uring_sqe* last = nullptr;
  while (count < config_.queue_depth && !probe.done()) {
    iovec* v = &iov_scratch_[count * kMaxIovPerSqe];
    size_t bytes = 0;
    size_t cnt = probe.Fill(v, kMaxIovPerSqe, config_.max_chunk_bytes, &bytes);
    probe.Advance(bytes);
    io_uring_sqe* sqe = io_uring_get_sqe(&tx_->ring);
    if (sqe == nullptr) return absl::InternalError(absl::StrCat(step, ": submission queue full"));
    switch (type_) {
      case FdType::kSocket: {
        msghdr& m = msg_scratch_[count];
        m = msghdr{};
        m.msg_iov = v;
        m.msg_iovlen = cnt;
        if (zc) {
          io_uring_prep_sendmsg_zc(sqe, fd_.get(), &m, msg_flags);
          if (zerocopy_report_) sqe->ioprio |= IORING_SEND_ZC_REPORT_USAGE;
        } else {
          io_uring_prep_sendmsg(sqe, fd_.get(), &m, msg_flags);
        }
        break;
      }
      case FdType::kFile:
        io_uring_prep_writev(sqe, fd_.get(), v, static_cast<unsigned>(cnt), write_pos_ + offset);
        break;
      case FdType::kStream:
        io_uring_prep_writev(sqe, fd_.get(), v, static_cast<unsigned>(cnt), -1);
        break;
    }
    // Linked: the kernel starts chunk i+1 only after chunk i completed in full, and cancels the
    // rest of the chain after a short one, so the bytes that landed are always a prefix.
    sqe->flags |= IOSQE_IO_LINK;
    sqe->user_data = count;
    wanted_[count] = bytes;
    offset += bytes;
    last = sqe;
    ++count;
  }
  if (last != nullptr) last->flags &= ~IOSQE_IO_LINK;
  RETURN_IF_ERROR(Reap(*tx_, count, results_.get(), &pending_notifs_, false, step));

  size_t done = 0;
  bool wait_writable = false;
  for (unsigned i = 0; i < count; ++i) {
    int r = results_[i];
    if (r >= 0 && static_cast<size_t>(r) == wanted_[i]) {
      done += static_cast<size_t>(r);
      continue;
    }
    write_resumes_.fetch_add(1, std::memory_order_relaxed);
    if (r > 0) {
      done += static_cast<size_t>(r);  // short: the rest of the chain was cancelled
      break;
    }
    if (r == 0) {
      if (done > 0) break;
      return absl::InternalError(
          absl::StrCat(step, ": kernel accepted 0 of ", wanted_[i], " bytes"));
    }
    int err = -r;
    if (err == ECANCELED || err == EINTR) break;
    if (err == EAGAIN) {  // non-blocking descriptor: io_uring does not poll for us
      wait_writable = true;
      break;
    }
    if (zc && err == EINVAL && zerocopy_report_) {
      zerocopy_report_ = false;  // a kernel before 6.2: zero-copy without usage reports
      break;
    }
    if (zc && (err == EOPNOTSUPP || err == EINVAL)) {
      SetZerocopyFallback(
          absl::StrCat("sendmsg_zc to ", name(), ": ", ErrnoName(err), "; using plain sendmsg"));
      break;
    }
    if (aborted_.load()) return absl::UnavailableError(absl::StrCat(step, ": channel aborted"));
    return ErrnoStatus(step, err);
  }
  if (wait_writable && done == 0) RETURN_IF_ERROR(WaitReady(POLLOUT, step));
  return done;
}

absl::Status IoUringChannel::WriteV(const iovec* iov, size_t n) {
  std::lock_guard<std::mutex> lock(write_mu_);
  const std::string& step = write_step_;
  if (write_shut_.load() || aborted_.load()) {
    return absl::UnavailableError(absl::StrCat(step, ": channel was shut down"));
  }
  if (!fd_.valid()) return absl::FailedPreconditionError(absl::StrCat(step, ": closed"));
  IovecCursor cursor(iov, n);
  absl::Status status;
  while (!cursor.done()) {
    absl::StatusOr<size_t> done = WriteRound(cursor, step);
    if (!done.ok()) {
      status = done.status();
      break;
    }
    cursor.Advance(*done);
    if (type_ == FdType::kFile) write_pos_ += *done;
    bytes_out_.fetch_add(*done, std::memory_order_relaxed);
  }
  // Whatever happened, the caller gets its memory back only once the kernel let go of it.
  if (pending_notifs_ > 0) {
    absl::Status drained = Reap(*tx_, 0, results_.get(), &pending_notifs_, true, step);
    if (status.ok()) status = drained;
  }
  if (status.ok()) write_batches_.fetch_add(1, std::memory_order_relaxed);
  return status;
}

absl::StatusOr<size_t> IoUringChannel::ReadOnce(void* buf, size_t len, bool all) {
  const std::string& step = read_step_;
  if (!fd_.valid()) return absl::FailedPreconditionError(absl::StrCat(step, ": closed"));
  len = std::min(len, kMaxReadPerSqe);
  for (;;) {
    if (aborted_.load()) return absl::UnavailableError(absl::StrCat(step, ": channel aborted"));
    io_uring_sqe* sqe = io_uring_get_sqe(&rx_->ring);
    if (sqe == nullptr) return absl::InternalError(absl::StrCat(step, ": submission queue full"));
    switch (type_) {
      case FdType::kSocket:
        io_uring_prep_recv(sqe, fd_.get(), buf, len, all ? MSG_WAITALL : 0);
        break;
      case FdType::kFile:
        io_uring_prep_read(sqe, fd_.get(), buf, static_cast<unsigned>(len), read_pos_);
        break;
      case FdType::kStream:
        io_uring_prep_read(sqe, fd_.get(), buf, static_cast<unsigned>(len), -1);
        break;
    }
    sqe->user_data = 0;
    RETURN_IF_ERROR(Reap(*rx_, 1, &read_result_, nullptr, false, step));
    int r = read_result_;
    if (r >= 0) {
      if (type_ == FdType::kFile) read_pos_ += static_cast<uint64_t>(r);
      bytes_in_.fetch_add(static_cast<uint64_t>(r), std::memory_order_relaxed);
      return static_cast<size_t>(r);
    }
    if (-r == EINTR) continue;
    if (-r == EAGAIN) {
      RETURN_IF_ERROR(WaitReady(POLLIN, step));
      continue;
    }
    return ErrnoStatus(step, -r);
  }
}

absl::StatusOr<size_t> IoUringChannel::ReadSome(void* buf, size_t cap) {
  std::lock_guard<std::mutex> lock(read_mu_);
  if (cap == 0) return absl::InvalidArgumentError(absl::StrCat("read from ", name(), ": cap 0"));
  return ReadOnce(buf, cap, false);
}

absl::Status IoUringChannel::ReadExact(void* buf, size_t len) {
  std::lock_guard<std::mutex> lock(read_mu_);
  size_t done = 0;
  while (done < len) {
    ASSIGN_OR_RETURN(size_t r, ReadOnce(static_cast<char*>(buf) + done, len - done, true));
    if (r == 0) {
      return absl::UnavailableError(
          absl::StrCat("read from ", name(), ": EOF after ", done, " of ", len, " bytes"));
    }
    done += r;
  }
  return absl::OkStatus();
}

std::optional<Channel::SendQueue> IoUringChannel::PendingSend() const {
  if (type_ != FdType::kSocket) return std::nullopt;
  return TcpSendQueue(fd_.get());
}

absl::Status IoUringChannel::Shutdown() {
  if (write_shut_.exchange(true)) return absl::OkStatus();
  if (type_ == FdType::kSocket && shutdown(fd_.get(), SHUT_WR) != 0 && errno != ENOTCONN) {
    return ErrnoStatus(absl::StrCat("shutdown(SHUT_WR) ", name()), errno);
  }
  return absl::OkStatus();
}

void IoUringChannel::Abort() {
  aborted_.store(true);
  // A recv or send parked in the ring on a socket wakes up with EOF/EPIPE.
  if (type_ == FdType::kSocket) shutdown(fd_.get(), SHUT_RDWR);
}

absl::Status IoUringChannel::Close() {
  for (std::atomic<int>& fd : ring_fds_) fd.store(-1);
  {
    std::lock_guard<std::mutex> lock(write_mu_);
    tx_.reset();
  }
  {
    std::lock_guard<std::mutex> lock(read_mu_);
    rx_.reset();
  }
  if (!fd_.valid()) return absl::OkStatus();
  int fd = fd_.Release();
  if (close(fd) != 0) return ErrnoStatus(absl::StrCat("close ", name()), errno);
  return absl::OkStatus();
}

}  // namespace procmig
