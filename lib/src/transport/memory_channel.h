// MemoryChannel: an in-process pipe pair with the Channel contract, for tests of the layers above
// (sender and receiver state machines) without sockets.
//
// CreatePair() returns two connected ends; each direction is a bounded ring buffer (writers block
// when it is full, readers when it is empty), so back-pressure behaves like a socket. Faults are
// injected per direction, on the writing side's stream offsets:
//   - max_write_chunk: the pipe takes at most this many bytes per step, so a reader sees batches
//     arrive in pieces (what short writes look like from the other end);
//   - disconnect_after: once this many bytes went through, the connection breaks: the writer gets
//     Unavailable, the reader gets every byte before the break and then Unavailable (a reset, not
//     an orderly EOF);
//   - flip_byte_at: the byte at this stream offset is XORed with 0xff on its way through.
// The two ends share only the pipes (std::shared_ptr), so either may be destroyed first; a
// destroyed or closed end looks like a vanished peer to the other. Threading: see channel.h.
#ifndef PROCMIG_TRANSPORT_MEMORY_CHANNEL_H_
#define PROCMIG_TRANSPORT_MEMORY_CHANNEL_H_

#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "transport/channel.h"

namespace procmig {

struct MemoryFaults {
  static constexpr uint64_t kNever = std::numeric_limits<uint64_t>::max();
  size_t max_write_chunk = 0;  // 0: no limit
  uint64_t disconnect_after = kNever;
  uint64_t flip_byte_at = kNever;
};

struct MemoryPipeOptions {
  size_t capacity = 1u << 20;  // bytes buffered per direction
  MemoryFaults first_to_second;
  MemoryFaults second_to_first;
};

class MemoryChannel : public Channel {
 public:
  using Pair = std::pair<std::unique_ptr<MemoryChannel>, std::unique_ptr<MemoryChannel>>;
  // InvalidArgument for capacity 0.
  static absl::StatusOr<Pair> CreatePair(const MemoryPipeOptions& options);
  ~MemoryChannel() override;

  absl::Status WriteV(const iovec* iov, size_t n) override;
  absl::Status ReadExact(void* buf, size_t len) override;
  absl::StatusOr<size_t> ReadSome(void* buf, size_t cap) override;
  absl::Status Shutdown() override;
  void Abort() override;
  absl::Status Close() override;
  std::string_view kind() const override { return "memory"; }

 private:
  struct Pipe;  // one direction; defined in the .cc

  MemoryChannel(std::string name, std::shared_ptr<Pipe> out, std::shared_ptr<Pipe> in);
  absl::StatusOr<size_t> ReadLocked(void* buf, size_t cap);

  // Immutable after construction; the pipes synchronize themselves.
  const std::shared_ptr<Pipe> out_;
  const std::shared_ptr<Pipe> in_;
  const std::string write_step_;  // built once: no allocation on the data path
  std::mutex write_mu_;           // held for a whole WriteV batch
  std::mutex read_mu_;
};

}  // namespace procmig

#endif  // PROCMIG_TRANSPORT_MEMORY_CHANNEL_H_
