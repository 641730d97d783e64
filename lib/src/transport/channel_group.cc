#include "transport/channel_group.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "transport/channel_factory.h"
#include "transport/group_handshake.h"

namespace procmig {

absl::StatusOr<std::unique_ptr<ChannelGroup>> ChannelGroup::Start(
    std::vector<std::unique_ptr<Channel>> channels, uint64_t session_id) {
  if (channels.empty() || channels.size() > GroupHandshake::kMaxChannels) {
    return absl::InvalidArgumentError(absl::StrCat("start channel group: ", channels.size(),
                                                   " channels, expected 1..",
                                                   GroupHandshake::kMaxChannels));
  }
  for (size_t i = 0; i < channels.size(); ++i) {
    GroupHandshake h;
    h.session_id = session_id;
    h.channel_index = static_cast<uint16_t>(i);
    h.channel_count = static_cast<uint16_t>(channels.size());
    auto bytes = h.Encode();
    absl::Status s = channels[i]->Write(bytes.data(), bytes.size());
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat("send group handshake ", i, ": ", s.message()));
    }
  }
  return std::unique_ptr<ChannelGroup>(new ChannelGroup(std::move(channels), session_id));
}

absl::StatusOr<std::unique_ptr<ChannelGroup>> ChannelGroup::Connect(const Endpoint& endpoint,
                                                                    int count, uint64_t session_id,
                                                                    const TransportConfig& config,
                                                                    const SocketOptions& options) {
  if (count < 1 || count > GroupHandshake::kMaxChannels) {
    return absl::InvalidArgumentError(absl::StrCat("connect channel group: count ", count,
                                                   " outside [1, ", GroupHandshake::kMaxChannels,
                                                   "]"));
  }
  std::vector<std::unique_ptr<Channel>> channels;
  for (int i = 0; i < count; ++i) {
    ASSIGN_OR_RETURN(UniqueFd fd, ::procmig::Connect(endpoint, options));
    ASSIGN_OR_RETURN(
        OpenedChannel opened,
        OpenChannel(std::move(fd), config, absl::StrCat(endpoint.ToString(), " channel ", i)));
    channels.push_back(std::move(opened.channel));
  }
  return Start(std::move(channels), session_id);
}

ChannelGroup::ChannelGroup(std::vector<std::unique_ptr<Channel>> channels, uint64_t session_id)
    : channels_(std::move(channels)),
      session_id_(session_id),
      in_flight_(new std::atomic<uint64_t>[channels_.size()]) {
  for (size_t i = 0; i < channels_.size(); ++i) in_flight_[i].store(0);
}

ChannelGroup::~ChannelGroup() { (void)Close(); }

size_t ChannelGroup::PickChannel() {
  const size_t n = channels_.size();
  size_t start = next_.fetch_add(1, std::memory_order_relaxed) % n;
  size_t best = start;
  uint64_t best_load = in_flight_[start].load(std::memory_order_relaxed);
  for (size_t k = 1; k < n && best_load > 0; ++k) {
    size_t i = (start + k) % n;
    uint64_t load = in_flight_[i].load(std::memory_order_relaxed);
    if (load < best_load) {
      best = i;
      best_load = load;
    }
  }
  return best;
}

absl::StatusOr<size_t> ChannelGroup::WriteBatch(const iovec* iov, size_t n) {
  uint64_t bytes = 0;
  for (size_t i = 0; i < n; ++i) bytes += iov[i].iov_len;
  size_t index = PickChannel();
  in_flight_[index].fetch_add(bytes, std::memory_order_relaxed);
  absl::Status s = channels_[index]->WriteV(iov, n);
  in_flight_[index].fetch_sub(bytes, std::memory_order_relaxed);
  if (!s.ok()) return s;
  return index;
}

absl::Status ChannelGroup::Shutdown() {
  absl::Status first;
  for (auto& c : channels_) {
    absl::Status s = c->Shutdown();
    if (first.ok()) first = s;
  }
  return first;
}

void ChannelGroup::Abort() {
  for (auto& c : channels_) c->Abort();
}

absl::Status ChannelGroup::Close() {
  absl::Status first;
  for (auto& c : channels_) {
    absl::Status s = c->Close();
    if (first.ok()) first = s;
  }
  return first;
}

}  // namespace procmig
