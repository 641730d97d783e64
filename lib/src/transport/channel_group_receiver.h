// ChannelGroupReceiver: the receiving side of a ChannelGroup.
//
// Accept() takes connections until one session is complete: it reads each connection's
// GroupHandshake (with a timeout, straight from the socket, before any channel exists), keeps
// those of the first valid session at their announced index, and closes and counts the rest
// (bad handshake, another session, a duplicate index). FromChannels() does the same for channels
// that already exist (in-memory tests). Run() then reads every channel concurrently, one thread
// per channel, and hands each chunk read to the sink with its channel index; the sink runs on the
// channel's thread, so it is called concurrently for different channels and in stream order for
// one channel. Run returns when every channel reached orderly EOF, or with the first error (from
// a channel or the sink) after aborting the other channels so no thread is left blocked.
// Run may be called once; Close must be the last call.
#ifndef PROCMIG_TRANSPORT_CHANNEL_GROUP_RECEIVER_H_
#define PROCMIG_TRANSPORT_CHANNEL_GROUP_RECEIVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "transport/channel.h"
#include "transport/endpoint.h"
#include "transport/transport_config.h"

namespace procmig {

class ChannelGroupReceiver {
 public:
  using Sink = std::function<absl::Status(size_t channel_index, std::span<const uint8_t> chunk)>;

  // Accepts on `listen_fd` until a full group arrived; DeadlineExceeded after timeout_ms without
  // progress. Each connection is opened with OpenChannel(config).
  static absl::StatusOr<std::unique_ptr<ChannelGroupReceiver>> Accept(
      int listen_fd, const TransportConfig& config, int timeout_ms,
      const SocketOptions& options = {});
  // Reads the handshake from each channel; DataLoss unless they form exactly one group.
  static absl::StatusOr<std::unique_ptr<ChannelGroupReceiver>> FromChannels(
      std::vector<std::unique_ptr<Channel>> channels);
  ~ChannelGroupReceiver();

  absl::Status Run(const Sink& sink, size_t chunk_bytes = 1u << 20);
  void Abort();
  absl::Status Close();

  size_t size() const { return channels_.size(); }
  uint64_t session_id() const { return session_id_; }
  // Connections Accept() closed because they did not belong to the session.
  int rejected_connections() const { return rejected_; }
  Channel& channel(size_t i) { return *channels_[i]; }

 private:
  ChannelGroupReceiver(std::vector<std::unique_ptr<Channel>> channels, uint64_t session_id,
                       int rejected);

  // Immutable after construction.
  const std::vector<std::unique_ptr<Channel>> channels_;  // by channel index
  const uint64_t session_id_;
  const int rejected_;
};

}  // namespace procmig

#endif  // PROCMIG_TRANSPORT_CHANNEL_GROUP_RECEIVER_H_
