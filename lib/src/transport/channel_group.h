// ChannelGroup: the sending side of one session spread over N connections (QEMU multifd).
//
// Start() sends a GroupHandshake on every channel (index = position in the vector) and takes
// ownership. WriteBatch() writes one whole batch to one channel, chosen as the channel with the
// fewest bytes being written right now (ties broken round robin), so a batch never spans
// channels and batches from different channels may be received in any order: each batch must be
// an independent unit. Parallelism comes from the callers: WriteBatch is thread-safe, and callers
// on K threads keep up to K channels busy at once (one caller thread gets round robin).
// Shutdown/Abort/Close act on every channel; Close must be the last call.
#ifndef PROCMIG_TRANSPORT_CHANNEL_GROUP_H_
#define PROCMIG_TRANSPORT_CHANNEL_GROUP_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "transport/channel.h"
#include "transport/endpoint.h"
#include "transport/transport_config.h"

namespace procmig {

class ChannelGroup {
 public:
  // InvalidArgument for 0 or more than GroupHandshake::kMaxChannels channels.
  static absl::StatusOr<std::unique_ptr<ChannelGroup>> Start(
      std::vector<std::unique_ptr<Channel>> channels, uint64_t session_id);
  // Opens `count` connections to `endpoint` with OpenChannel and starts the group on them.
  static absl::StatusOr<std::unique_ptr<ChannelGroup>> Connect(const Endpoint& endpoint, int count,
                                                               uint64_t session_id,
                                                               const TransportConfig& config,
                                                               const SocketOptions& options = {});
  ~ChannelGroup();

  // Writes the batch to one channel and returns that channel's index.
  absl::StatusOr<size_t> WriteBatch(const iovec* iov, size_t n);
  absl::Status Shutdown();
  void Abort();
  absl::Status Close();

  size_t size() const { return channels_.size(); }
  uint64_t session_id() const { return session_id_; }
  Channel& channel(size_t i) { return *channels_[i]; }

 private:
  ChannelGroup(std::vector<std::unique_ptr<Channel>> channels, uint64_t session_id);
  size_t PickChannel();

  // Immutable after construction.
  const std::vector<std::unique_ptr<Channel>> channels_;
  const uint64_t session_id_;
  // Bytes currently being written on each channel (the "busy" measure).
  const std::unique_ptr<std::atomic<uint64_t>[]> in_flight_;
  std::atomic<uint64_t> next_{0};  // round-robin start for ties
};

}  // namespace procmig

#endif  // PROCMIG_TRANSPORT_CHANNEL_GROUP_H_
