#include "transport/channel_group_receiver.h"

#include <doctest/doctest.h>
#include <unistd.h>

#include <mutex>
#include <string>
#include <thread>

#include "test_sockets.h"
#include "transport/channel_group.h"
#include "transport/group_handshake.h"
#include "transport/memory_channel.h"

namespace procmig {
namespace {

std::unique_ptr<MemoryChannel> Announce(MemoryChannel::Pair* p, uint64_t session, uint16_t index,
                                        uint16_t count) {
  GroupHandshake h;
  h.session_id = session;
  h.channel_index = index;
  h.channel_count = count;
  auto b = h.Encode();
  REQUIRE(p->first->Write(b.data(), b.size()).ok());
  return std::move(p->second);
}

MemoryChannel::Pair Pipe(MemoryPipeOptions o = {}) {
  auto p = MemoryChannel::CreatePair(o);
  REQUIRE(p.ok());
  return std::move(*p);
}

TEST_CASE("connections are ordered by their announced index and chunks carry it") {
  MemoryChannel::Pair p0 = Pipe(), p1 = Pipe();
  std::vector<std::unique_ptr<Channel>> in;
  in.push_back(Announce(&p1, 42, 1, 2));  // arrives first, is index 1
  in.push_back(Announce(&p0, 42, 0, 2));
  REQUIRE(p0.first->Write("zero", 4).ok());
  REQUIRE(p1.first->Write("one", 3).ok());
  REQUIRE(p0.first->Shutdown().ok());
  REQUIRE(p1.first->Shutdown().ok());
  auto r = ChannelGroupReceiver::FromChannels(std::move(in));
  REQUIRE(r.ok());
  CHECK((*r)->size() == 2);
  CHECK((*r)->session_id() == 42);
  std::mutex mu;
  std::string got[2];
  absl::Status s = (*r)->Run([&](size_t i, std::span<const uint8_t> chunk) {
    std::lock_guard<std::mutex> lock(mu);
    got[i].append(reinterpret_cast<const char*>(chunk.data()), chunk.size());
    return absl::OkStatus();
  });
  REQUIRE(s.ok());
  CHECK(got[0] == "zero");
  CHECK(got[1] == "one");
}

TEST_CASE("mixed sessions, wrong counts and duplicate indexes are DataLoss") {
  struct Case {
    uint64_t s0, s1;
    uint16_t i0, i1, c0, c1;
  } cases[] = {{1, 2, 0, 1, 2, 2}, {1, 1, 0, 0, 2, 2}, {1, 1, 0, 1, 2, 3}};
  for (const Case& c : cases) {
    MemoryChannel::Pair p0 = Pipe(), p1 = Pipe();
    std::vector<std::unique_ptr<Channel>> in;
    in.push_back(Announce(&p0, c.s0, c.i0, c.c0));
    in.push_back(Announce(&p1, c.s1, c.i1, c.c1));
    auto r = ChannelGroupReceiver::FromChannels(std::move(in));
    CHECK(r.status().code() == absl::StatusCode::kDataLoss);
  }
}

TEST_CASE("a channel that breaks mid-stream fails Run with Unavailable and stops the others") {
  MemoryPipeOptions o;
  o.first_to_second.disconnect_after = GroupHandshake::kSize + 1000;
  MemoryChannel::Pair p0 = Pipe(o), p1 = Pipe();
  std::vector<std::unique_ptr<Channel>> in;
  in.push_back(Announce(&p0, 7, 0, 2));
  in.push_back(Announce(&p1, 7, 1, 2));  // stays open and silent: its reader must be woken
  auto r = ChannelGroupReceiver::FromChannels(std::move(in));
  REQUIRE(r.ok());
  std::vector<uint8_t> data(5000, 1);
  CHECK(p0.first->Write(data.data(), data.size()).code() == absl::StatusCode::kUnavailable);
  size_t delivered = 0;
  absl::Status s = (*r)->Run([&](size_t, std::span<const uint8_t> chunk) {
    delivered += chunk.size();
    return absl::OkStatus();
  });
  CHECK(s.code() == absl::StatusCode::kUnavailable);
  CHECK(s.message() == "read from memory end 2: peer disconnected after 1024 bytes");
  CHECK(delivered == 1000);
}

TEST_CASE("a sink error stops every channel and is returned") {
  MemoryChannel::Pair p0 = Pipe(), p1 = Pipe();
  std::vector<std::unique_ptr<Channel>> in;
  in.push_back(Announce(&p0, 7, 0, 2));
  in.push_back(Announce(&p1, 7, 1, 2));
  auto r = ChannelGroupReceiver::FromChannels(std::move(in));
  REQUIRE(r.ok());
  REQUIRE(p1.first->Write("bad", 3).ok());
  absl::Status s = (*r)->Run([&](size_t i, std::span<const uint8_t>) {
    return i == 1 ? absl::DataLossError("record crc mismatch") : absl::OkStatus();
  });
  CHECK(s.code() == absl::StatusCode::kDataLoss);
  CHECK(s.message() == "record crc mismatch");
}

TEST_CASE("accept over TCP groups the session's connections and rejects strangers") {
  auto listener = Listen(*Endpoint::Parse("127.0.0.1:0"));
  REQUIRE(listener.ok());
  auto bound = LocalEndpoint(listener->get());
  REQUIRE(bound.ok());
  // A stranger that sends garbage, then the real group of three.
  auto stranger = Connect(*bound);
  REQUIRE(stranger.ok());
  REQUIRE(write(stranger->get(), "GET / HTTP/1.0\r\n\r\nxxxxxx", 24) == 24);
  absl::StatusOr<std::unique_ptr<ChannelGroup>> group;
  std::thread sender([&] {
    group = ChannelGroup::Connect(*bound, 3, 0x5eed, TransportConfig{});
    if (group.ok()) {
      for (int k = 0; k < 3; ++k) {
        uint8_t v = static_cast<uint8_t>(k);
        iovec iov{&v, 1};
        (void)(*group)->WriteBatch(&iov, 1);
      }
      (void)(*group)->Shutdown();
    }
  });
  auto r = ChannelGroupReceiver::Accept(listener->get(), TransportConfig{}, 5000);
  sender.join();
  REQUIRE(group.ok());
  REQUIRE(r.ok());
  CHECK((*r)->size() == 3);
  CHECK((*r)->session_id() == 0x5eed);
  CHECK((*r)->rejected_connections() == 1);
  std::mutex mu;
  std::string got[3];
  REQUIRE((*r)->Run([&](size_t i, std::span<const uint8_t> c) {
                std::lock_guard<std::mutex> lock(mu);
                got[i].append(reinterpret_cast<const char*>(c.data()), c.size());
                return absl::OkStatus();
              })
              .ok());
  // Round robin from a single writer: batch k went to channel k.
  for (int k = 0; k < 3; ++k) CHECK(got[k] == std::string(1, static_cast<char>(k)));
}

TEST_CASE("accept gives up with DeadlineExceeded when the group never completes") {
  auto listener = Listen(*Endpoint::Parse("127.0.0.1:0"));
  REQUIRE(listener.ok());
  auto r = ChannelGroupReceiver::Accept(listener->get(), TransportConfig{}, 50);
  CHECK(r.status().code() == absl::StatusCode::kDeadlineExceeded);
}

}  // namespace
}  // namespace procmig
