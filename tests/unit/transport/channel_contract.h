// Test helper: the Channel contract of channel.h, checked the same way for every implementation
// that runs over a descriptor (POSIX and io_uring). Each function takes a factory that wraps a
// descriptor in the channel under test.
#ifndef PROCMIG_TESTS_UNIT_TRANSPORT_CHANNEL_CONTRACT_H_
#define PROCMIG_TESTS_UNIT_TRANSPORT_CHANNEL_CONTRACT_H_

#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "pattern_stream.h"
#include "test_sockets.h"
#include "transport/channel.h"

namespace procmig::testing {

using ChannelFactory = std::function<std::unique_ptr<Channel>(UniqueFd)>;

inline void CheckRoundTrip(const ChannelFactory& make) {
  auto fds = UnixSocketPair();
  auto a = make(std::move(fds.first));
  auto b = make(std::move(fds.second));
  std::string x = "abc", empty, y = "defgh";
  iovec iov[3] = {{x.data(), x.size()}, {empty.data(), 0}, {y.data(), y.size()}};
  REQUIRE(a->WriteV(iov, 3).ok());
  REQUIRE(a->WriteV(iov, 0).ok());
  char buf[8] = {};
  REQUIRE(b->ReadExact(buf, 8).ok());
  CHECK(std::string(buf, 8) == "abcdefgh");
  REQUIRE(b->Write("z", 1).ok());
  auto n = a->ReadSome(buf, sizeof(buf));
  REQUIRE(n.ok());
  CHECK(*n == 1);
  CHECK(buf[0] == 'z');
  CHECK(a->counters().bytes_out == 8);
  CHECK(a->counters().bytes_in == 1);
  CHECK(a->counters().write_batches == 2);
  CHECK(b->counters().bytes_in == 8);
  // Shutdown: the peer sees orderly EOF, our later writes are refused.
  REQUIRE(a->Shutdown().ok());
  REQUIRE(a->Shutdown().ok());
  n = b->ReadSome(buf, sizeof(buf));
  REQUIRE(n.ok());
  CHECK(*n == 0);
  absl::Status late = a->Write("q", 1);
  CHECK(late.code() == absl::StatusCode::kUnavailable);
  CHECK(late.message().find("channel was shut down") != std::string::npos);
  CHECK(b->ReadSome(buf, 0).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(a->Close().ok());
  CHECK(a->Close().ok());
}

// The peer vanishes while we write: Unavailable (EPIPE/ECONNRESET), never SIGPIPE or a hang.
// The peer vanishes while we read: Unavailable naming the EOF position.
// PendingSend: a TCP socket reports what it holds unsent and its send buffer. What the peer has
// not read sits in its receive queue or, once that is full, unsent in ours, so the two add up to
// everything written; once the peer has read it all, nothing is unsent. UNIX sockets and pipes
// have no such queue.
inline void CheckPendingSend(const ChannelFactory& make) {
  SocketOptions o;
  o.send_buffer_bytes = 1 << 20;   // the kernel doubles it: 512 KiB fit without blocking
  o.recv_buffer_bytes = 64 << 10;  // and the peer takes far less than that
  auto fds = TcpLoopbackPair(o);
  const int peer = fds.second.get();
  int sndbuf = 0;
  socklen_t len = sizeof sndbuf;
  REQUIRE(getsockopt(fds.first.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) == 0);
  auto a = make(std::move(fds.first));
  std::optional<Channel::SendQueue> q = a->PendingSend();
  REQUIRE(q.has_value());
  CHECK(q->unsent == 0);
  CHECK(q->buffer == static_cast<size_t>(sndbuf));

  constexpr size_t kTotal = 512 << 10;
  std::vector<uint8_t> data(kTotal);
  for (size_t i = 0; i < kTotal; ++i) data[i] = static_cast<uint8_t>(i * 131 + 7);
  REQUIRE(a->Write(data.data(), kTotal).ok());
  // Loopback delivers at once, but let the stack settle (up to 2 s) before the exact sum.
  size_t unsent = 0;
  int inq = -1;
  for (int i = 0; i < 200; ++i) {
    q = a->PendingSend();
    REQUIRE(q.has_value());
    unsent = q->unsent;
    REQUIRE(ioctl(peer, SIOCINQ, &inq) == 0);
    if (unsent + static_cast<size_t>(inq) == kTotal) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(unsent + static_cast<size_t>(inq) == kTotal);
  CHECK(unsent > 0);
  CHECK(static_cast<size_t>(inq) < kTotal);

  std::vector<uint8_t> got(kTotal);
  size_t have = 0;
  while (have < kTotal) {
    ssize_t n = recv(peer, got.data() + have, kTotal - have, 0);
    REQUIRE(n > 0);
    have += static_cast<size_t>(n);
  }
  CHECK(got == data);
  for (int i = 0; i < 200 && a->PendingSend()->unsent != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(a->PendingSend()->unsent == 0);

  auto unix_pair = UnixSocketPair();
  CHECK_FALSE(make(std::move(unix_pair.first))->PendingSend().has_value());
  int p[2];
  REQUIRE(pipe2(p, O_CLOEXEC) == 0);
  UniqueFd read_end(p[0]);
  CHECK_FALSE(make(UniqueFd(p[1]))->PendingSend().has_value());
}

inline void CheckPeerDisconnect(const ChannelFactory& make, bool tcp) {
  auto fds = tcp ? TcpLoopbackPair() : UnixSocketPair();
  auto a = make(std::move(fds.first));
  UniqueFd peer = std::move(fds.second);
  std::thread closer([&] {
    std::vector<char> buf(64 * 1024);
    size_t got = 0;
    while (got < (1u << 20)) {
      ssize_t r = read(peer.get(), buf.data(), buf.size());
      if (r <= 0) break;
      got += static_cast<size_t>(r);
    }
    peer.Reset();  // close with unread data pending: TCP answers with a reset
  });
  std::vector<uint8_t> chunk(256 * 1024, 0xab);
  absl::Status s;
  for (int i = 0; i < 4096 && s.ok(); ++i) s = a->Write(chunk.data(), chunk.size());
  closer.join();
  CHECK(s.code() == absl::StatusCode::kUnavailable);
  CHECK(s.message().find(a->name()) != std::string::npos);
  MESSAGE("write after peer loss: ", std::string(s.message()));

  auto fds2 = tcp ? TcpLoopbackPair() : UnixSocketPair();
  auto r = make(std::move(fds2.first));
  REQUIRE(write(fds2.second.get(), "0123456789", 10) == 10);
  fds2.second.Reset();
  char buf[100];
  absl::Status rs = r->ReadExact(buf, 100);
  CHECK(rs.code() == absl::StatusCode::kUnavailable);
  CHECK(rs.message() == "read from " + r->name() + ": EOF after 10 of 100 bytes");
}

namespace internal {
inline void NoopHandler(int) {}
}  // namespace internal

// Signals without SA_RESTART hammer both threads while 32 MiB stream through; every EINTR must be
// absorbed inside the channel.
inline void CheckEintr(const ChannelFactory& make) {
  struct sigaction sa = {}, old = {};
  sa.sa_handler = internal::NoopHandler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: blocking calls fail with EINTR
  REQUIRE(sigaction(SIGUSR1, &sa, &old) == 0);
  auto fds = UnixSocketPair();
  int small = 16 * 1024;
  setsockopt(fds.first.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  auto a = make(std::move(fds.first));
  auto b = make(std::move(fds.second));
  std::atomic<bool> done{false};
  uint32_t crc = 0;
  absl::Status ws;
  std::atomic<pthread_t> writer_id{};
  std::thread writer([&] {
    writer_id = pthread_self();
    ws = WritePattern(*a, 11, 16, 512, &crc);
  });
  pthread_t reader_id = pthread_self();
  std::thread pest([&] {
    while (!done.load()) {
      pthread_kill(reader_id, SIGUSR1);
      if (writer_id.load() != pthread_t{}) pthread_kill(writer_id.load(), SIGUSR1);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  PatternChecker check(11, 16);
  absl::Status rs = check.Drain(*b, 70000);
  writer.join();
  done = true;
  pest.join();
  sigaction(SIGUSR1, &old, nullptr);
  REQUIRE(ws.ok());
  REQUIRE(rs.ok());
  CHECK(check.batches() == 512);
  CHECK(check.crc() == crc);
}

// Non-blocking descriptors with a small send buffer: EAGAIN on both sides is waited out.
inline uint64_t CheckNonBlocking(const ChannelFactory& make) {
  auto fds = UnixSocketPair();
  int small = 8 * 1024;
  setsockopt(fds.first.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  for (int fd : {fds.first.get(), fds.second.get()}) fcntl(fd, F_SETFL, O_NONBLOCK);
  auto a = make(std::move(fds.first));
  auto b = make(std::move(fds.second));
  uint32_t crc = 0;
  absl::Status ws;
  std::thread writer([&] { ws = WritePattern(*a, 3, 8, 512, &crc); });
  PatternChecker check(3, 8);
  absl::Status rs = check.Drain(*b, 5000);
  writer.join();
  REQUIRE(ws.ok());
  REQUIRE(rs.ok());
  CHECK(check.batches() == 512);
  CHECK(check.crc() == crc);
  return a->counters().write_resumes;
}

inline void CheckAbortWakesReader(const ChannelFactory& make) {
  auto fds = UnixSocketPair();
  auto a = make(std::move(fds.first));
  absl::StatusOr<size_t> got = 0;
  std::thread reader([&] {
    char c;
    got = a->ReadSome(&c, 1);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  a->Abort();
  reader.join();
  // Depending on the race the reader sees the shutdown as EOF or the abort itself.
  CHECK((!got.ok() ? got.status().code() == absl::StatusCode::kUnavailable : *got == 0));
  CHECK(a->Write("x", 1).code() == absl::StatusCode::kUnavailable);
}

// A recorded stream: written through one channel, read back through another, positions tracked.
inline void CheckFile(const ChannelFactory& make) {
  const std::string path = TempPath("contract.file");
  {
    UniqueFd fd(open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600));
    REQUIRE(fd.valid());
    REQUIRE(write(fd.get(), "HEAD", 4) == 4);  // the channel starts at the current offset
    auto w = make(std::move(fd));
    uint32_t crc = 0;
    REQUIRE(WritePattern(*w, 5, 4, 100, &crc).ok());
    REQUIRE(w->Close().ok());
  }
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  char head[4];
  REQUIRE(read(fd.get(), head, 4) == 4);
  auto r = make(std::move(fd));
  PatternChecker check(5, 4);
  REQUIRE(check.Drain(*r, 10007).ok());
  CHECK(check.batches() == 100);
  CHECK(check.bytes() == 100 * (16 + 4 * 4096));
  unlink(path.c_str());
}

// A pipe: not a socket and not seekable, so it is written at the current position.
inline void CheckPipe(const ChannelFactory& make) {
  int p[2];
  REQUIRE(pipe2(p, O_CLOEXEC) == 0);
  auto r = make(UniqueFd(p[0]));
  auto w = make(UniqueFd(p[1]));
  uint32_t crc = 0;
  absl::Status ws;
  std::thread writer([&] {
    ws = WritePattern(*w, 17, 16, 64, &crc);
    (void)w->Close();  // a pipe has no half-close: closing the write end is the EOF
  });
  PatternChecker check(17, 16);
  absl::Status rs = check.Drain(*r, 30000);
  writer.join();
  REQUIRE(ws.ok());
  REQUIRE(rs.ok());
  CHECK(check.batches() == 64);
  CHECK(check.crc() == crc);
}

// After warm-up, successful writes and reads allocate nothing (checked only in the writing and
// reading thread's calls; `count` wraps them and returns the number of allocations seen).
template <typename Count>
inline void CheckNoAllocationOnDataPath(const ChannelFactory& make, Count count) {
  auto fds = UnixSocketPair();
  auto a = make(std::move(fds.first));
  auto b = make(std::move(fds.second));
  std::vector<uint8_t> page(4096, 7), other(4096, 9), in(8192);
  iovec iov[2] = {{page.data(), page.size()}, {other.data(), other.size()}};
  REQUIRE(a->WriteV(iov, 2).ok());  // warm-up: lazily built state, if any
  REQUIRE(b->ReadExact(in.data(), in.size()).ok());
  uint64_t n = count([&] {
    for (int i = 0; i < 100; ++i) {
      if (!a->WriteV(iov, 2).ok()) return;
      if (!b->ReadExact(in.data(), 4096).ok()) return;
      if (!b->ReadSome(in.data(), 4096).ok()) return;
    }
  });
  CHECK(n == 0);
  CHECK(a->counters().bytes_out == 101 * 8192);
  // The counter itself works: a real allocation is seen.
  uint64_t seen = count([] {
    auto s = std::make_unique<std::string>(100, 'x');
    asm volatile("" : : "r"(s.get()) : "memory");
  });
  CHECK(seen >= 1);
  CHECK(in[0] == 9);
}

inline void CheckConcurrentWritersDoNotInterleave(const ChannelFactory& make) {
  auto fds = UnixSocketPair();
  auto a = make(std::move(fds.first));
  auto b = make(std::move(fds.second));
  constexpr int kBatches = 100;
  constexpr size_t kBatch = 300000;  // larger than the socket buffer: writers block mid-batch
  auto writer = [&](uint8_t tag) {
    std::vector<uint8_t> batch(kBatch, tag);
    std::vector<iovec> iov;
    for (size_t off = 0; off < kBatch; off += 4096) {
      iov.push_back({batch.data() + off, std::min<size_t>(4096, kBatch - off)});
    }
    for (int i = 0; i < kBatches; ++i) CHECK(a->WriteV(iov.data(), iov.size()).ok());
  };
  std::thread t1(writer, 1), t2(writer, 2);
  std::vector<uint8_t> got(kBatch);
  int count[3] = {};
  for (int i = 0; i < 2 * kBatches; ++i) {
    REQUIRE(b->ReadExact(got.data(), kBatch).ok());
    uint8_t tag = got[0];
    REQUIRE((tag == 1 || tag == 2));
    REQUIRE(std::count(got.begin(), got.end(), tag) == static_cast<long>(kBatch));
    ++count[tag];
  }
  t1.join();
  t2.join();
  CHECK(count[1] == kBatches);
  CHECK(count[2] == kBatches);
}

}  // namespace procmig::testing

#endif  // PROCMIG_TESTS_UNIT_TRANSPORT_CHANNEL_CONTRACT_H_
