#include "migration/receive_session.h"

#include <doctest/doctest.h>
#include <sys/socket.h>

#include <thread>

#include "migration/image_store.h"
#include "receiver_test_util.h"
#include "transport/channel_group.h"
#include "transport/posix_channel.h"
#include "wire/stream_reader.h"

namespace procmig {
namespace {

using testing::Bytes;
using testing::kPs;
using testing::PatternPage;
using testing::StreamBuilder;

struct Wires {
  std::unique_ptr<ChannelGroup> sender;
  std::unique_ptr<ChannelGroupReceiver> receiver;
};

Wires Connect(int n) {
  std::vector<std::unique_ptr<Channel>> out, in;
  for (int i = 0; i < n; ++i) {
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    auto a = PosixChannel::Create(UniqueFd(sv[0]), "sender " + std::to_string(i));
    auto b = PosixChannel::Create(UniqueFd(sv[1]), "receiver " + std::to_string(i));
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    out.push_back(std::move(*a));
    in.push_back(std::move(*b));
  }
  Wires w;
  auto g = ChannelGroup::Start(std::move(out), 77);
  REQUIRE(g.ok());
  w.sender = std::move(*g);
  auto r = ChannelGroupReceiver::FromChannels(std::move(in));
  REQUIRE(r.ok());
  w.receiver = std::move(*r);
  return w;
}

// Reads the reverse stream to EOF and returns its records' kinds: "ack:1 error:15 end".
std::string ReadReverse(Channel& c) {
  wire::StreamReader r(wire::ReaderOptions{wire::Direction::kReverse});
  std::vector<std::string> out;
  uint8_t buf[4096];
  for (;;) {
    auto n = c.ReadSome(buf, sizeof buf);
    if (!n.ok() || *n == 0) break;
    REQUIRE(r.Feed({buf, *n}).ok());
    for (;;) {
      auto rec = r.Next();
      REQUIRE(rec.ok());
      if (*rec == nullptr) break;
      const wire::Record& x = **rec;
      if (x.type == wire::RecordType::kAck) {
        out.push_back("ack:" + std::to_string(static_cast<int>(std::get<wire::Ack>(x.body).kind)));
      } else if (x.type == wire::RecordType::kError) {
        out.push_back("error:" + std::to_string(std::get<wire::ErrorRecord>(x.body).code));
      } else if (x.type == wire::RecordType::kEndOfStream) {
        out.push_back(std::get<wire::EndOfStream>(x.body).aborted ? "end-aborted" : "end");
      }
    }
  }
  std::string joined;
  for (const auto& o : out) joined += (joined.empty() ? "" : " ") + o;
  return joined;
}

struct TwoChannelStream {
  Bytes a0 = PatternPage(1), a2 = PatternPage(2), old1 = PatternPage(3), x1 = PatternPage(4),
        z3 = PatternPage(5), b0 = PatternPage(6);
  Bytes main, second;
  explicit TwoChannelStream(bool corrupt_zlib = false) {
    StreamBuilder m(testing::DstPreamble(0, 2)), s(testing::DstPreamble(1, 2));
    m.BlockAdd(1, 0x10000, 4, "heap");
    m.Run(1, 0, {m.Raw(a0)});
    s.Run(1, 2, {s.Raw(a2)});
    s.Run(1, 1, {s.Raw(old1)});  // iteration 0's copy of page 1 ...
    m.Iteration(0);
    s.Iteration(0);
    m.BlockAdd(2, 0x20000, 2, "late");
    m.Run(1, 1, {m.Raw(x1)});  // ... replaced in iteration 1 on the other channel
    s.Run(2, 0, {s.Raw(b0)});  // a block the main channel announces in this iteration
    auto z = s.Zlib(z3);
    if (corrupt_zlib) z.page_crc ^= 1;
    s.Run(1, 3, {z});
    m.Iteration(1, true);
    s.Iteration(1, true);
    m.State({'p', 's'});
    main = m.End();
    second = s.End();
  }
};

void Send(ChannelGroup& g, const TwoChannelStream& t, bool second_first) {
  auto write = [&](size_t i, const Bytes& b) { (void)g.channel(i).Write(b.data(), b.size()); };
  if (second_first) {
    write(1, t.second);
    write(0, t.main);
  } else {
    write(0, t.main);
    write(1, t.second);
  }
}

TEST_CASE("two channels in either order: pages of iteration k+1 win, late blocks wait, ack") {
  for (bool second_first : {true, false}) {
    CAPTURE(second_first);
    TwoChannelStream t;
    Wires w = Connect(2);
    testing::TempDir dir;
    std::string reverse;
    std::thread sender([&] {
      Send(*w.sender, t, second_first);
      reverse = ReadReverse(w.sender->channel(0));
      (void)w.sender->Shutdown();
    });
    ReceiveSessionOptions o;
    o.image_dir = [&](const std::array<uint8_t, 16>& id) {
      return dir.path() + "/" + SessionIdHex(id);
    };
    auto res = RunReceiveSession(*w.receiver, o);
    sender.join();
    REQUIRE(res.ok());
    CHECK(res->image_dir == dir.path() + "/101112131415161718191a1b1c1d1e1f");
    CHECK(reverse == "ack:1 ack:3 end");
    auto m = ImageStore::ReadManifest(res->image_dir);
    REQUIRE(m.ok());
    CHECK(m->channels == 2);
    CHECK(m->iterations == 2);
    REQUIRE(m->blocks.size() == 2);
    auto b1 = ImageStore::ReadBlock(res->image_dir, *m, m->blocks[0]);
    REQUIRE(b1.ok());
    Bytes want1 = t.a0;
    for (const Bytes* p : {&t.x1, &t.a2, &t.z3}) want1.insert(want1.end(), p->begin(), p->end());
    CHECK(*b1 == want1);
    auto b2 = ImageStore::ReadBlock(res->image_dir, *m, m->blocks[1]);
    REQUIRE(b2.ok());
    Bytes want2 = t.b0;
    want2.resize(2 * kPs, 0);
    CHECK(*b2 == want2);
    CHECK(m->stats.pages == 6);
  }
}

TEST_CASE("a corrupt page on the second channel: DataLoss to both sides, no image left") {
  TwoChannelStream t(/*corrupt_zlib=*/true);
  Wires w = Connect(2);
  testing::TempDir dir;
  std::string reverse;
  std::thread sender([&] {
    Send(*w.sender, t, false);
    reverse = ReadReverse(w.sender->channel(0));
    (void)w.sender->Shutdown();
  });
  ReceiveSessionOptions o;
  o.image_dir = [&](const std::array<uint8_t, 16>&) { return dir.path() + "/img"; };
  auto res = RunReceiveSession(*w.receiver, o);
  w.receiver->Abort();
  sender.join();
  CHECK(res.status().code() == absl::StatusCode::kDataLoss);
  CHECK(res.status().message().find("receive channel 1: block 1 (heap) page 3") !=
        absl::string_view::npos);
  CHECK(dir.List().empty());
  CHECK(reverse == "ack:1 error:15 end-aborted");
}

TEST_CASE("a sender that disappears mid-stream: Unavailable or DataLoss, no image") {
  TwoChannelStream t;
  Wires w = Connect(2);
  testing::TempDir dir;
  std::thread sender([&] {
    (void)w.sender->channel(0).Write(t.main.data(), t.main.size() / 2);
    (void)w.sender->channel(1).Write(t.second.data(), t.second.size());
    w.sender->Abort();
  });
  ReceiveSessionOptions o;
  o.image_dir = [&](const std::array<uint8_t, 16>&) { return dir.path() + "/img"; };
  auto res = RunReceiveSession(*w.receiver, o);
  sender.join();
  CHECK_FALSE(res.ok());
  CHECK((res.status().code() == absl::StatusCode::kDataLoss ||
         res.status().code() == absl::StatusCode::kUnavailable));
  CHECK(dir.List().empty());
}

TEST_CASE("an existing non-empty image directory is refused, and nothing is acked") {
  TwoChannelStream t;
  Wires w = Connect(2);
  testing::TempDir dir;
  REQUIRE(mkdir((dir.path() + "/img").c_str(), 0700) == 0);
  REQUIRE(mkdir((dir.path() + "/img/x").c_str(), 0700) == 0);
  std::string reverse;
  std::thread sender([&] {
    Send(*w.sender, t, false);
    reverse = ReadReverse(w.sender->channel(0));
    (void)w.sender->Shutdown();
  });
  ReceiveSessionOptions o;
  o.image_dir = [&](const std::array<uint8_t, 16>&) { return dir.path() + "/img"; };
  auto res = RunReceiveSession(*w.receiver, o);
  w.receiver->Abort();
  sender.join();
  CHECK(res.status().code() == absl::StatusCode::kAlreadyExists);
  CHECK(reverse == "ack:1 error:6 end-aborted");
  CHECK(dir.List() == std::vector<std::string>{"img"});
}

}  // namespace
}  // namespace procmig
