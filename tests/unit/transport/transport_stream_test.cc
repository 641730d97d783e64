// Component test: 256 MiB of page-like data through every transport a user would have (UNIX
// socketpair, TCP loopback, a file; io_uring, POSIX, io_uring SEND_ZC, a 2-channel group), each
// byte checked in place and the whole stream by crc32c.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <set>
#include <thread>

#include "pattern_stream.h"
#include "test_sockets.h"
#include "transport/channel_group.h"
#include "transport/channel_group_receiver.h"
#include "transport/io_uring_channel.h"
#include "transport/posix_channel.h"

namespace procmig {
namespace {

constexpr size_t kPagesPerBatch = 64;
constexpr uint64_t kBatches = 1024;  // 1024 * 256 KiB = 256 MiB (+16 B headers)
constexpr uint64_t kStreamBytes = kBatches * (16 + kPagesPerBatch * testing::kPage);

enum class Impl { kIoUring, kPosix, kZeroCopy };

std::unique_ptr<Channel> Make(Impl impl, UniqueFd fd) {
  if (impl == Impl::kPosix) {
    auto c = PosixChannel::Create(std::move(fd), "posix");
    REQUIRE(c.ok());
    return *std::move(c);
  }
  TransportConfig config;
  config.send_zerocopy = impl == Impl::kZeroCopy;
  auto c = IoUringChannel::Create(&fd, config, "io_uring");
  if (!c.ok()) {
    std::printf("SKIP: %s\n", std::string(c.status().message()).c_str());
    std::exit(77);
  }
  return *std::move(c);
}

void Stream(Channel& writer_ch, Channel& reader_ch, uint64_t seed) {
  uint32_t crc = 0;
  absl::Status ws;
  std::thread writer(
      [&] { ws = testing::WritePattern(writer_ch, seed, kPagesPerBatch, kBatches, &crc); });
  testing::PatternChecker check(seed, kPagesPerBatch);
  absl::Status rs = check.Drain(reader_ch, 1 << 20);
  if (!rs.ok()) reader_ch.Abort();  // unblock the writer before joining
  writer.join();
  REQUIRE(ws.ok());
  REQUIRE(rs.ok());
  CHECK(check.batches() == kBatches);
  CHECK(check.bytes() == kStreamBytes);
  CHECK(check.crc() == crc);
  CHECK(writer_ch.counters().bytes_out == kStreamBytes);
  CHECK(reader_ch.counters().bytes_in == kStreamBytes);
}

void SocketPairRun(Impl impl) {
  auto fds = testing::UnixSocketPair();
  auto a = Make(impl, std::move(fds.first));
  auto b = Make(impl, std::move(fds.second));
  Stream(*a, *b, 101);
}

void TcpRun(Impl impl) {
  auto fds = testing::TcpLoopbackPair();
  auto a = Make(impl, std::move(fds.first));
  auto b = Make(impl == Impl::kZeroCopy ? Impl::kIoUring : impl, std::move(fds.second));
  Stream(*a, *b, 202);
  if (impl == Impl::kZeroCopy) {
    auto* zc = static_cast<IoUringChannel*>(a.get());
    CHECK(zc->zerocopy_active());
    CHECK(a->counters().zerocopy_notifications >= kBatches);
  }
}

void FileRun(Impl impl) {
  const std::string path =
      testing::TempPath(impl == Impl::kPosix ? "posix.stream" : "uring.stream");
  UniqueFd w(open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600));
  REQUIRE(w.valid());
  auto wc = Make(impl, std::move(w));
  uint32_t crc = 0;
  REQUIRE(testing::WritePattern(*wc, 303, kPagesPerBatch, kBatches, &crc).ok());
  REQUIRE(wc->Close().ok());
  UniqueFd r(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  REQUIRE(r.valid());
  auto rc = Make(impl, std::move(r));
  testing::PatternChecker check(303, kPagesPerBatch);
  REQUIRE(check.Drain(*rc, 1 << 20).ok());
  CHECK(check.bytes() == kStreamBytes);
  CHECK(check.crc() == crc);
  unlink(path.c_str());
}

TEST_CASE("io_uring: 256 MiB over a UNIX socketpair") { SocketPairRun(Impl::kIoUring); }
TEST_CASE("io_uring: 256 MiB over TCP loopback") { TcpRun(Impl::kIoUring); }
TEST_CASE("io_uring: 256 MiB to a file and back") { FileRun(Impl::kIoUring); }
TEST_CASE("posix: 256 MiB over a UNIX socketpair") { SocketPairRun(Impl::kPosix); }
TEST_CASE("posix: 256 MiB over TCP loopback") { TcpRun(Impl::kPosix); }
TEST_CASE("posix: 256 MiB to a file and back") { FileRun(Impl::kPosix); }
TEST_CASE("io_uring SEND_ZC: 256 MiB over TCP loopback") { TcpRun(Impl::kZeroCopy); }

TEST_CASE("2-channel group: 256 MiB over TCP from two writer threads, every batch once") {
  auto listener = Listen(*Endpoint::Parse("127.0.0.1:0"));
  REQUIRE(listener.ok());
  auto bound = LocalEndpoint(listener->get());
  REQUIRE(bound.ok());
  absl::StatusOr<std::unique_ptr<ChannelGroup>> group;
  std::thread connector([&] { group = ChannelGroup::Connect(*bound, 2, 77, TransportConfig{}); });
  auto receiver = ChannelGroupReceiver::Accept(listener->get(), TransportConfig{}, 10000);
  connector.join();
  REQUIRE(group.ok());
  REQUIRE(receiver.ok());

  std::atomic<uint64_t> next{0};
  absl::Status werr[2];
  uint64_t per_channel[2] = {0, 0};
  std::mutex mu;
  auto writer = [&](int w) {
    testing::PatternStream p(404, kPagesPerBatch);
    for (uint64_t b; (b = next.fetch_add(1)) < kBatches;) {
      const auto& iov = p.Build(b);
      auto idx = (*group)->WriteBatch(iov.data(), iov.size());
      if (!idx.ok()) {
        werr[w] = idx.status();
        return;
      }
      std::lock_guard<std::mutex> lock(mu);
      ++per_channel[*idx];
    }
  };
  std::thread w0(writer, 0), w1(writer, 1);
  std::thread closer([&] {
    w0.join();
    w1.join();
    (void)(*group)->Shutdown();
  });
  std::vector<testing::PatternChecker> checks;
  checks.emplace_back(404, kPagesPerBatch);
  checks.emplace_back(404, kPagesPerBatch);
  absl::Status rs = (*receiver)->Run([&](size_t i, std::span<const uint8_t> chunk) {
    return checks[i].Feed(chunk.data(), chunk.size(), /*sequential=*/false);
  });
  if (!rs.ok()) (*group)->Abort();
  closer.join();
  REQUIRE(werr[0].ok());
  REQUIRE(werr[1].ok());
  REQUIRE(rs.ok());
  std::set<uint64_t> seen;
  for (auto& c : checks) {
    CHECK(c.at_batch_boundary());
    for (uint64_t b : c.completed()) CHECK(seen.insert(b).second);
  }
  CHECK(seen.size() == kBatches);
  CHECK(*seen.rbegin() == kBatches - 1);
  CHECK(checks[0].batches() == per_channel[0]);
  CHECK(checks[1].batches() == per_channel[1]);
  MESSAGE("batches per channel: ", per_channel[0], " / ", per_channel[1]);
  CHECK(per_channel[0] > 0);
  CHECK(per_channel[1] > 0);
}

}  // namespace
}  // namespace procmig
