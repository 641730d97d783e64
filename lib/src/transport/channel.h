// Channel: an ordered, reliable byte stream to the peer (a socket, a recorded-stream file, or an
// in-process pipe for tests).
//
// Batches: WriteV() writes its whole iovec batch before returning, handling short writes, EAGAIN
// and EINTR inside, and holds the channel's write lock for the whole batch, so the records of one
// batch are contiguous on the wire and never interleave with another caller's batch.
//
// Threading contract: every method may be called from any thread. Writes are serialized by a
// write lock and reads by a read lock, so one writer and one reader run in parallel (the usual
// arrangement is one sender thread and one receiver thread per channel). Shutdown() and Abort()
// may be called at any time, also while another thread is blocked in a read or write. Close()
// must be the last call: no other thread may be inside the channel when it runs (it releases the
// descriptor, which the kernel may then reuse).
//
// Errors: Unavailable when the peer is gone (EPIPE, ECONNRESET, EOF in the middle of ReadExact,
// a write after Shutdown()), with a message naming the step and the channel; Internal for
// anything that is a bug or unexpected from the kernel. Memory passed to WriteV may be reused as
// soon as WriteV returns (the zero-copy path waits for the kernel's notifications first).
#ifndef PROCMIG_TRANSPORT_CHANNEL_H_
#define PROCMIG_TRANSPORT_CHANNEL_H_

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace procmig {

struct ChannelCounters {
  uint64_t bytes_out = 0;
  uint64_t bytes_in = 0;
  uint64_t write_batches = 0;
  // Times a write had to be resumed: short writes, EAGAIN waits, EINTR, cancelled links.
  uint64_t write_resumes = 0;
  // Zero-copy sends whose kernel notification arrived (io_uring SEND_ZC only).
  uint64_t zerocopy_notifications = 0;
  // Of those, how many said the kernel copied the data after all (loopback always does; Linux
  // 6.2+ reports it).
  uint64_t zerocopy_copied = 0;
};

class Channel {
 public:
  virtual ~Channel() = default;
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // Writes every byte of iov[0..n) in order, or fails. n == 0 is a no-op.
  virtual absl::Status WriteV(const iovec* iov, size_t n) = 0;
  absl::Status Write(const void* data, size_t len) {
    iovec v{const_cast<void*>(data), len};
    return WriteV(&v, 1);
  }
  // Reads exactly len bytes. EOF before the first byte or in the middle is Unavailable (a caller
  // that wants to accept EOF at a boundary uses ReadSome).
  virtual absl::Status ReadExact(void* buf, size_t len) = 0;
  // Reads at least one byte and at most cap (cap > 0); returns 0 only at orderly EOF.
  virtual absl::StatusOr<size_t> ReadSome(void* buf, size_t cap) = 0;
  // No more writes: the peer reads EOF after the last byte written. Idempotent.
  virtual absl::Status Shutdown() = 0;
  // Breaks the stream in both directions now, waking any thread blocked in this channel (it
  // returns Unavailable or EOF). Used to stop the other channels of a group after a failure.
  virtual void Abort() = 0;
  // Releases the descriptor. Last call; see the threading contract above.
  virtual absl::Status Close() = 0;

  // What the kernel still holds of this channel's writes, not yet sent to the peer, against the
  // socket's send buffer: how a sender sees that the link is about to wait for it. For TCP
  // sockets (SIOCOUTQNSD and SO_SNDBUF, which counts the kernel's overhead too, so `unsent`
  // tops out below `buffer`); nullopt for files, pipes and in-process channels, or when the
  // kernel does not say. Called by the writing thread between its writes.
  struct SendQueue {
    size_t unsent = 0;
    size_t buffer = 0;
  };
  virtual std::optional<SendQueue> PendingSend() const { return std::nullopt; }

  // "io_uring", "posix" or "memory".
  virtual std::string_view kind() const = 0;

  // The descriptors this channel holds open (its socket or file, its rings), for the agent to
  // leave out of the migrated process's descriptors. Stable from creation to Close().
  virtual std::vector<int> descriptors() const { return {}; }
  // Human-readable identity used in error messages, e.g. "tcp 127.0.0.1:7000 (fd 5)".
  const std::string& name() const { return name_; }

  ChannelCounters counters() const {
    ChannelCounters c;
    c.bytes_out = bytes_out_.load(std::memory_order_relaxed);
    c.bytes_in = bytes_in_.load(std::memory_order_relaxed);
    c.write_batches = write_batches_.load(std::memory_order_relaxed);
    c.write_resumes = write_resumes_.load(std::memory_order_relaxed);
    c.zerocopy_notifications = zerocopy_notifications_.load(std::memory_order_relaxed);
    c.zerocopy_copied = zerocopy_copied_.load(std::memory_order_relaxed);
    return c;
  }

 protected:
  explicit Channel(std::string name) : name_(std::move(name)) {}

  // Counters are written by the thread holding the matching lock and read by anyone.
  std::atomic<uint64_t> bytes_out_{0};
  std::atomic<uint64_t> bytes_in_{0};
  std::atomic<uint64_t> write_batches_{0};
  std::atomic<uint64_t> write_resumes_{0};
  std::atomic<uint64_t> zerocopy_notifications_{0};
  std::atomic<uint64_t> zerocopy_copied_{0};

 private:
  const std::string name_;
};

}  // namespace procmig

#endif  // PROCMIG_TRANSPORT_CHANNEL_H_
