#include "transport/io_uring_channel.h"

#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "alloc_counter.h"
#include "channel_contract.h"

namespace procmig {
namespace {

// io_uring is a kernel feature: where it is refused (seccomp, io_uring_disabled) these tests
// skip with the reason, as kernel tests do.
void RequireIoUring() {
  auto fds = testing::UnixSocketPair();
  UniqueFd fd = std::move(fds.first);
  auto c = IoUringChannel::Create(&fd, TransportConfig{}, "probe");
  if (!c.ok()) {
    std::printf("SKIP: %s\n", std::string(c.status().message()).c_str());
    std::exit(77);
  }
}

TransportConfig Config() { return TransportConfig{}; }

testing::ChannelFactory Factory(TransportConfig config) {
  RequireIoUring();
  return [config](UniqueFd fd) -> std::unique_ptr<Channel> {
    auto c = IoUringChannel::Create(&fd, config, "io_uring test");
    REQUIRE(c.ok());
    return *std::move(c);
  };
}

TEST_CASE("io_uring: descriptors() names the socket and its two rings until Close") {
  RequireIoUring();
  auto fds = testing::UnixSocketPair();
  const int sock = fds.first.get();
  auto c = IoUringChannel::Create(&fds.first, Config(), "descriptors");
  REQUIRE(c.ok());
  const std::vector<int> own = (*c)->descriptors();
  REQUIRE(own.size() == 3);
  CHECK(own[0] == sock);
  for (int fd : {own[1], own[2]}) {
    char link[64] = {};
    const std::string path = "/proc/self/fd/" + std::to_string(fd);
    REQUIRE(readlink(path.c_str(), link, sizeof link - 1) > 0);
    CHECK(std::string(link) == "anon_inode:[io_uring]");
  }
  CHECK(own[1] != own[2]);
  REQUIRE((*c)->Close().ok());
  CHECK((*c)->descriptors().empty());
}

TEST_CASE("io_uring: the successful data path allocates nothing") {
  testing::CheckNoAllocationOnDataPath(Factory(Config()),
                                       [](auto&& f) { return testing::AllocationsDuring(f); });
}
TEST_CASE("io_uring: a pipe carries the stream at the current position") {
  testing::CheckPipe(Factory(Config()));
}
TEST_CASE("io_uring: round trip, counters, shutdown") {
  testing::CheckRoundTrip(Factory(Config()));
}
TEST_CASE("io_uring: peer disconnect is Unavailable (unix)") {
  testing::CheckPeerDisconnect(Factory(Config()), false);
}
TEST_CASE("io_uring: peer disconnect is Unavailable (tcp)") {
  testing::CheckPeerDisconnect(Factory(Config()), true);
}
TEST_CASE("io_uring: a TCP socket reports what it holds unsent; others say nothing") {
  testing::CheckPendingSend(Factory(Config()));
}
TEST_CASE("io_uring: EINTR storms are absorbed") { testing::CheckEintr(Factory(Config())); }
TEST_CASE("io_uring: non-blocking descriptors wait out EAGAIN") {
  uint64_t resumes = testing::CheckNonBlocking(Factory(Config()));
  MESSAGE("write resumes on a non-blocking socket: ", resumes);
}
TEST_CASE("io_uring: abort wakes a blocked reader") {
  testing::CheckAbortWakesReader(Factory(Config()));
}
TEST_CASE("io_uring: file written and read back at tracked offsets") {
  testing::CheckFile(Factory(Config()));
}
TEST_CASE("io_uring: concurrent writers' batches stay whole") {
  testing::CheckConcurrentWritersDoNotInterleave(Factory(Config()));
}

TEST_CASE("io_uring: tiny chunks and queue depth 2 force many linked rounds, order kept") {
  TransportConfig c;
  c.queue_depth = 2;
  c.max_chunk_bytes = 4096;
  auto make = Factory(c);
  auto fds = testing::UnixSocketPair();
  auto a = make(std::move(fds.first));
  auto b = make(std::move(fds.second));
  uint32_t crc = 0;
  absl::Status ws;
  std::thread writer([&] { ws = testing::WritePattern(*a, 21, 32, 64, &crc); });
  testing::PatternChecker check(21, 32);
  absl::Status rs = check.Drain(*b, 9000);
  writer.join();
  REQUIRE(ws.ok());
  REQUIRE(rs.ok());
  CHECK(check.batches() == 64);
  CHECK(check.crc() == crc);
}

TEST_CASE("io_uring: without MSG_WAITALL short sends are resubmitted from the right byte") {
  TransportConfig c;
  c.send_waitall = false;
  auto make = Factory(c);
  auto fds = testing::TcpLoopbackPair();
  int small = 32 * 1024;
  setsockopt(fds.first.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  auto a = make(std::move(fds.first));
  auto b = make(std::move(fds.second));
  uint32_t crc = 0;
  absl::Status ws;
  std::thread writer([&] { ws = testing::WritePattern(*a, 8, 64, 32, &crc); });
  testing::PatternChecker check(8, 64);
  absl::Status rs = check.Drain(*b, 3000);  // a slow reader keeps the send buffer full
  writer.join();
  REQUIRE(ws.ok());
  REQUIRE(rs.ok());
  CHECK(check.crc() == crc);
  CHECK(check.batches() == 32);
  // 8 MiB through a 64 KiB send buffer to a reader taking 3 KB at a time: sends come back short.
  CHECK(a->counters().write_resumes > 0);
  MESSAGE("write resumes (short sends, cancelled links): ", a->counters().write_resumes);
}

TEST_CASE("io_uring: SEND_ZC over TCP delivers exact bytes and waits for notifications") {
  TransportConfig c;
  c.send_zerocopy = true;
  RequireIoUring();
  auto fds = testing::TcpLoopbackPair();
  UniqueFd fa = std::move(fds.first);
  auto a = IoUringChannel::Create(&fa, c, "zc");
  REQUIRE(a.ok());
  if (!(*a)->zerocopy_active()) {
    std::printf("SKIP: %s\n", (*a)->zerocopy_fallback_reason().c_str());
    std::exit(77);
  }
  auto b = Factory(Config())(std::move(fds.second));
  uint32_t crc = 0;
  absl::Status ws;
  std::thread writer([&] { ws = testing::WritePattern(**a, 9, 64, 128, &crc); });
  testing::PatternChecker check(9, 64);
  absl::Status rs = check.Drain(*b);
  writer.join();
  REQUIRE(ws.ok());
  REQUIRE(rs.ok());
  CHECK(check.crc() == crc);
  CHECK((*a)->zerocopy_active());
  // One notification per SQE at least; every batch of 64 pages needs one SQE.
  CHECK((*a)->counters().zerocopy_notifications >= 128);
  CHECK((*a)->zerocopy_fallback_reason().empty());
  CHECK((*a)->counters().zerocopy_copied <= (*a)->counters().zerocopy_notifications);
  MESSAGE("SEND_ZC notifications: ", (*a)->counters().zerocopy_notifications,
          ", of which the kernel copied: ", (*a)->counters().zerocopy_copied);
}

TEST_CASE("io_uring: SEND_ZC falls back with a reason on UNIX sockets and files") {
  TransportConfig c;
  c.send_zerocopy = true;
  RequireIoUring();
  auto fds = testing::UnixSocketPair();
  UniqueFd fa = std::move(fds.first);
  auto a = IoUringChannel::Create(&fa, c, "unix zc");
  REQUIRE(a.ok());
  auto b = Factory(Config())(std::move(fds.second));
  REQUIRE((*a)->Write("hello", 5).ok());
  char buf[5];
  REQUIRE(b->ReadExact(buf, 5).ok());
  CHECK(std::string(buf, 5) == "hello");
  CHECK_FALSE((*a)->zerocopy_active());
  CHECK((*a)->zerocopy_fallback_reason() ==
        "sendmsg_zc to unix zc: EOPNOTSUPP; using plain sendmsg");

  UniqueFd file(open("/dev/null", O_WRONLY | O_CLOEXEC));
  auto f = IoUringChannel::Create(&file, c, "null");
  REQUIRE(f.ok());
  CHECK((*f)->zerocopy_fallback_reason() ==
        "send_zerocopy: null is not a socket; using plain writev");
}

TEST_CASE("io_uring: a refused io_uring_setup is FailedPrecondition and leaves the fd") {
  TransportConfig c;
  c.io_uring_setup_errno_for_test = EPERM;
  auto fds = testing::UnixSocketPair();
  UniqueFd fd = std::move(fds.first);
  auto ch = IoUringChannel::Create(&fd, c, "sock");
  CHECK(ch.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(ch.status().message() ==
        "io_uring_setup (queue depth 64) for sock: EPERM (Operation not permitted)");
  CHECK(fd.valid());
}

}  // namespace
}  // namespace procmig
