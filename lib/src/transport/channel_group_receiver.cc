#include "transport/channel_group_receiver.h"

#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "transport/channel_factory.h"
#include "transport/group_handshake.h"

namespace procmig {
namespace {

// Reads the handshake from a fresh socket, giving up after timeout_ms so a silent peer cannot
// stall the whole accept.
absl::StatusOr<GroupHandshake> ReadHandshake(int fd, int timeout_ms) {
  std::array<uint8_t, GroupHandshake::kSize> buf;
  size_t got = 0;
  while (got < buf.size()) {
    pollfd p{fd, POLLIN, 0};
    int r = poll(&p, 1, timeout_ms);
    if (r == 0) return absl::DeadlineExceededError("read group handshake: timed out");
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("read group handshake: poll", errno);
    }
    ssize_t n = recv(fd, buf.data() + got, buf.size() - got, 0);
    if (n == 0) return absl::UnavailableError("read group handshake: EOF");
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return ErrnoStatus("read group handshake", errno);
    }
    got += static_cast<size_t>(n);
  }
  return GroupHandshake::Decode(buf);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ChannelGroupReceiver>> ChannelGroupReceiver::Accept(
    int listen_fd, const TransportConfig& config, int timeout_ms, const SocketOptions& options) {
  std::vector<std::unique_ptr<Channel>> slots;
  std::optional<uint64_t> session;
  size_t filled = 0;
  int rejected = 0;
  while (!session.has_value() || filled < slots.size()) {
    ASSIGN_OR_RETURN(UniqueFd fd, ::procmig::Accept(listen_fd, options, timeout_ms));
    absl::StatusOr<GroupHandshake> h = ReadHandshake(fd.get(), timeout_ms);
    bool fits = h.ok() && (!session.has_value() ||
                           (h->session_id == *session && h->channel_count == slots.size() &&
                            slots[h->channel_index] == nullptr));
    if (!fits) {
      ++rejected;  // not ours: dropping the UniqueFd closes it
      continue;
    }
    if (!session.has_value()) {
      session = h->session_id;
      slots.resize(h->channel_count);
    }
    ASSIGN_OR_RETURN(OpenedChannel opened,
                     OpenChannel(std::move(fd), config,
                                 absl::StrCat("group ", *session, " channel ", h->channel_index)));
    slots[h->channel_index] = std::move(opened.channel);
    ++filled;
  }
  return std::unique_ptr<ChannelGroupReceiver>(
      new ChannelGroupReceiver(std::move(slots), *session, rejected));
}

absl::StatusOr<std::unique_ptr<ChannelGroupReceiver>> ChannelGroupReceiver::FromChannels(
    std::vector<std::unique_ptr<Channel>> channels) {
  if (channels.empty()) return absl::InvalidArgumentError("channel group receiver: no channels");
  std::vector<std::unique_ptr<Channel>> slots(channels.size());
  uint64_t session = 0;
  for (size_t i = 0; i < channels.size(); ++i) {
    std::array<uint8_t, GroupHandshake::kSize> buf;
    RETURN_IF_ERROR(channels[i]->ReadExact(buf.data(), buf.size()));
    ASSIGN_OR_RETURN(GroupHandshake h, GroupHandshake::Decode(buf));
    if (i == 0) session = h.session_id;
    if (h.session_id != session || h.channel_count != channels.size() ||
        slots[h.channel_index] != nullptr) {
      return absl::DataLossError(absl::StrCat(
          "channel group receiver: connection ", i, " announces session ", h.session_id,
          " channel ", h.channel_index, "/", h.channel_count, ", expected session ", session,
          " with ", channels.size(), " distinct channels"));
    }
    slots[h.channel_index] = std::move(channels[i]);
  }
  return std::unique_ptr<ChannelGroupReceiver>(
      new ChannelGroupReceiver(std::move(slots), session, 0));
}

ChannelGroupReceiver::ChannelGroupReceiver(std::vector<std::unique_ptr<Channel>> channels,
                                           uint64_t session_id, int rejected)
    : channels_(std::move(channels)), session_id_(session_id), rejected_(rejected) {}

ChannelGroupReceiver::~ChannelGroupReceiver() { (void)Close(); }

absl::Status ChannelGroupReceiver::Run(const Sink& sink, size_t chunk_bytes) {
  if (chunk_bytes == 0) return absl::InvalidArgumentError("channel group receiver: chunk 0");
  std::mutex mu;
  absl::Status first_error;  // guarded by mu
  std::atomic<bool> failed{false};
  auto fail = [&](absl::Status s) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (first_error.ok()) first_error = std::move(s);
    }
    if (!failed.exchange(true)) Abort();
  };
  std::vector<std::thread> threads;
  for (size_t i = 0; i < channels_.size(); ++i) {
    threads.emplace_back([&, i] {
      std::unique_ptr<uint8_t[]> buf(new uint8_t[chunk_bytes]);
      for (;;) {
        absl::StatusOr<size_t> n = channels_[i]->ReadSome(buf.get(), chunk_bytes);
        if (!n.ok()) {
          if (!failed.load()) fail(n.status());
          return;
        }
        if (*n == 0) return;  // orderly EOF on this channel
        absl::Status s = sink(i, std::span<const uint8_t>(buf.get(), *n));
        if (!s.ok()) {
          fail(std::move(s));
          return;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  std::lock_guard<std::mutex> lock(mu);
  return first_error;
}

void ChannelGroupReceiver::Abort() {
  for (auto& c : channels_) c->Abort();
}

absl::Status ChannelGroupReceiver::Close() {
  absl::Status first;
  for (auto& c : channels_) {
    absl::Status s = c->Close();
    if (first.ok()) first = s;
  }
  return first;
}

}  // namespace procmig
