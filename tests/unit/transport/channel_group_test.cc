#include "transport/channel_group.h"

#include <doctest/doctest.h>

#include <map>
#include <set>
#include <thread>

#include "transport/group_handshake.h"
#include "transport/memory_channel.h"

namespace procmig {
namespace {

struct Group {
  std::unique_ptr<ChannelGroup> sender;
  std::vector<std::unique_ptr<MemoryChannel>> peers;  // the receiving ends, by index
};

Group MakeGroup(size_t n, uint64_t session) {
  std::vector<std::unique_ptr<Channel>> mine;
  Group g;
  for (size_t i = 0; i < n; ++i) {
    auto p = MemoryChannel::CreatePair(MemoryPipeOptions{});
    REQUIRE(p.ok());
    mine.push_back(std::move(p->first));
    g.peers.push_back(std::move(p->second));
  }
  auto s = ChannelGroup::Start(std::move(mine), session);
  REQUIRE(s.ok());
  g.sender = *std::move(s);
  return g;
}

TEST_CASE("start sends the handshake with each channel's index") {
  Group g = MakeGroup(3, 0xabcdef);
  for (size_t i = 0; i < 3; ++i) {
    std::array<uint8_t, GroupHandshake::kSize> buf;
    REQUIRE(g.peers[i]->ReadExact(buf.data(), buf.size()).ok());
    auto h = GroupHandshake::Decode(buf);
    REQUIRE(h.ok());
    CHECK(h->session_id == 0xabcdef);
    CHECK(h->channel_index == i);
    CHECK(h->channel_count == 3);
  }
  CHECK(g.sender->size() == 3);
  CHECK(g.sender->session_id() == 0xabcdef);
}

TEST_CASE("one writer thread spreads batches round robin, each batch whole on one channel") {
  Group g = MakeGroup(2, 1);
  std::vector<size_t> used;
  for (uint8_t b = 0; b < 6; ++b) {
    std::vector<uint8_t> batch(100, b);
    iovec iov[2] = {{batch.data(), 40}, {batch.data() + 40, 60}};
    auto index = g.sender->WriteBatch(iov, 2);
    REQUIRE(index.ok());
    used.push_back(*index);
  }
  CHECK(used == std::vector<size_t>{0, 1, 0, 1, 0, 1});
  for (size_t i = 0; i < 2; ++i) {
    std::vector<uint8_t> buf(GroupHandshake::kSize + 300);
    REQUIRE(g.peers[i]->ReadExact(buf.data(), buf.size()).ok());
    for (size_t k = 0; k < 3; ++k) {
      uint8_t want = static_cast<uint8_t>(2 * k + i);
      for (size_t j = 0; j < 100; ++j) REQUIRE(buf[GroupHandshake::kSize + 100 * k + j] == want);
    }
  }
}

TEST_CASE("a busy channel is skipped: a second writer goes to the idle one") {
  Group g = MakeGroup(2, 1);
  std::array<uint8_t, GroupHandshake::kSize> hs;
  for (auto& p : g.peers) REQUIRE(p->ReadExact(hs.data(), hs.size()).ok());
  // Writer 1 blocks on a batch larger than the pipe until we read it.
  std::vector<uint8_t> big(4u << 20, 1);
  absl::StatusOr<size_t> first = 99;
  std::thread t([&] {
    first = g.sender->WriteBatch(std::vector<iovec>{{big.data(), big.size()}}.data(), 1);
  });
  // Wait until the big batch is in flight (it cannot finish: the pipe holds 1 MiB, nobody reads).
  while (g.sender->channel(0).counters().bytes_out + g.sender->channel(1).counters().bytes_out <=
         2 * GroupHandshake::kSize) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  uint8_t small = 2;
  iovec iov{&small, 1};
  // Whatever the round-robin cursor says, the least busy channel is the idle one.
  size_t busy = 99;
  for (int k = 0; k < 4; ++k) {
    auto idx = g.sender->WriteBatch(&iov, 1);
    REQUIRE(idx.ok());
    if (busy == 99) busy = 1 - *idx;
    CHECK(*idx == 1 - busy);
  }
  std::vector<uint8_t> sink(big.size());
  REQUIRE(g.peers[busy]->ReadExact(sink.data(), sink.size()).ok());
  t.join();
  REQUIRE(first.ok());
  CHECK(*first == busy);
}

TEST_CASE("invalid groups and failing channels are reported") {
  CHECK(ChannelGroup::Start({}, 1).status().code() == absl::StatusCode::kInvalidArgument);
  auto p = MemoryChannel::CreatePair(MemoryPipeOptions{});
  REQUIRE(p.ok());
  REQUIRE(p->second->Close().ok());
  std::vector<std::unique_ptr<Channel>> v;
  v.push_back(std::move(p->first));
  auto s = ChannelGroup::Start(std::move(v), 1);
  CHECK(s.status().code() == absl::StatusCode::kUnavailable);
  CHECK(s.status().message().find("send group handshake 0: ") == 0);
  CHECK(ChannelGroup::Connect(*Endpoint::Parse("127.0.0.1:1"), 0, 1, TransportConfig{})
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace procmig
