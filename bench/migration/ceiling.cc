#include "ceiling.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

#include "base/crc32c.h"

namespace procmig::bench {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kChunk = 1 << 20;

double Rate(size_t bytes, Clock::time_point a, Clock::time_point b) {
  const double s = std::chrono::duration<double>(b - a).count();
  return s > 0 ? static_cast<double>(bytes) / s : 0;
}

bool WriteAll(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    const ssize_t w = write(fd, p, n);
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

void SetTimeouts(int fd, int seconds) {
  const timeval tv{seconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

// The forked child of NetnsTcpCopyRate: joins the namespace, listens on `addr`, reports the port
// on `port_fd`, reads one connection to its end and answers with the byte count. Exits.
[[noreturn]] void NetnsSink(const std::string& netns_path, const std::string& addr, int port_fd) {
  const int ns = open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) _exit(1);
  const int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  socklen_t len = sizeof(a);
  if (l < 0 || inet_pton(AF_INET, addr.c_str(), &a.sin_addr) != 1 ||
      bind(l, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || listen(l, 1) != 0 ||
      getsockname(l, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    _exit(1);
  }
  SetTimeouts(l, 30);
  if (write(port_fd, &a.sin_port, sizeof(a.sin_port)) != sizeof(a.sin_port)) _exit(1);
  const int s = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
  if (s < 0) _exit(1);
  SetTimeouts(s, 30);
  void* buf = mmap(nullptr, kChunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (buf == MAP_FAILED) _exit(1);
  uint64_t got = 0;
  for (;;) {
    const ssize_t r = read(s, buf, kChunk);
    if (r <= 0) {
      if (r < 0) _exit(1);
      break;
    }
    got += static_cast<uint64_t>(r);
  }
  _exit(WriteAll(s, reinterpret_cast<const uint8_t*>(&got), sizeof(got)) ? 0 : 1);
}

// `n` connected loopback TCP pairs: out[i] writes to in[i]. False (with whatever was opened left
// in the vectors, to be closed) on any failure.
bool LoopbackPairs(int n, std::vector<int>* out, std::vector<int>* in) {
  const int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  bool ok = l >= 0 && bind(l, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
            listen(l, n) == 0 && getsockname(l, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  for (int i = 0; ok && i < n; ++i) {
    out->push_back(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ok = out->back() >= 0 && connect(out->back(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    if (ok) in->push_back(accept4(l, nullptr, nullptr, SOCK_CLOEXEC));
    ok = ok && in->back() >= 0;
  }
  if (l >= 0) close(l);
  return ok;
}

void CloseAll(const std::vector<int>& fds) {
  for (int fd : fds) {
    if (fd >= 0) close(fd);
  }
}

}  // namespace

double NetnsTcpCopyRate(const std::string& netns_path, const std::string& addr, const uint8_t* src,
                        size_t bytes) {
  int port_pipe[2];
  if (pipe2(port_pipe, O_CLOEXEC) != 0) return 0;
  const pid_t child = fork();
  if (child == 0) {
    close(port_pipe[0]);
    NetnsSink(netns_path, addr, port_pipe[1]);
  }
  close(port_pipe[1]);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  pollfd p{port_pipe[0], POLLIN, 0};
  bool ok = child > 0 && inet_pton(AF_INET, addr.c_str(), &a.sin_addr) == 1 &&
            poll(&p, 1, 10000) == 1 &&
            read(port_pipe[0], &a.sin_port, sizeof(a.sin_port)) == sizeof(a.sin_port);
  close(port_pipe[0]);
  const int c = ok ? socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0) : -1;
  if (c >= 0) SetTimeouts(c, 30);
  ok = c >= 0 && connect(c, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  const auto t0 = Clock::now();
  uint64_t got = 0;
  ok = ok && WriteAll(c, src, bytes) && shutdown(c, SHUT_WR) == 0 &&
       read(c, &got, sizeof(got)) == sizeof(got) && got == bytes;
  const auto t1 = Clock::now();
  if (c >= 0) close(c);
  int status = 0;
  if (child > 0) {
    if (!ok) kill(child, SIGKILL);
    ok = waitpid(child, &status, 0) == child && ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  return ok ? Rate(bytes, t0, t1) : 0;
}

double TcpCopyRate(const uint8_t* src, size_t bytes, uint8_t* dst) {
  std::vector<int> out, in;
  if (!LoopbackPairs(1, &out, &in)) {
    CloseAll(out);
    CloseAll(in);
    return 0;
  }
  const int c = out[0], s = in[0];
  const auto t0 = Clock::now();
  bool sent = false;
  // A write per kChunk: one write() of the whole 1 GiB was measured 25-30% slower here (3.5-3.7
  // against 4.0-5.2 GB/s), and sizes from 1 to 8 MiB were the fastest.
  std::thread sender([&] {
    sent = true;
    for (size_t off = 0; sent && off < bytes; off += kChunk) {
      sent = WriteAll(c, src + off, std::min(kChunk, bytes - off));
    }
    shutdown(c, SHUT_WR);
  });
  size_t got = 0;
  while (got < bytes) {
    const ssize_t r = read(s, dst + got, std::min(kChunk, bytes - got));
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  const auto t1 = Clock::now();
  sender.join();
  CloseAll(out);
  CloseAll(in);
  return sent && got == bytes ? Rate(bytes, t0, t1) : 0;
}

double PipelineFloorRate(const uint8_t* src, size_t bytes, int streams) {
  constexpr size_t kPage = 4096, kRead = 256 << 10;
  if (streams < 1) return 0;
  const size_t slice = bytes / streams / kPage * kPage;
  if (slice == 0) return 0;
  void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return 0;
  madvise(m, bytes, MADV_HUGEPAGE);
  auto* dst = static_cast<uint8_t*>(m);
  std::vector<int> out, in;
  const bool ok = LoopbackPairs(streams, &out, &in);
  for (int fd : out) SetTimeouts(fd, 30);
  for (int fd : in) SetTimeouts(fd, 30);
  // Each side folds every page's crc, plus the page's offset in the slice (so that pages swapped
  // in transit do not cancel out), into one value per stream; they must agree. A receiver cut
  // short leaves its value unset.
  std::vector<std::optional<uint32_t>> sent(streams), got(streams);
  std::vector<std::thread> threads;
  const auto t0 = Clock::now();
  for (int i = 0; ok && i < streams; ++i) {
    const uint8_t* from = src + i * slice;
    uint8_t* to = dst + i * slice;
    threads.emplace_back([&, i, from] {
      uint32_t acc = 0;
      for (size_t off = 0; off < slice; off += kChunk) {
        const size_t n = std::min(kChunk, slice - off);
        for (size_t p = off; p < off + n; p += kPage) acc ^= crc32c::Value(from + p, kPage) + p;
        if (!WriteAll(out[i], from + off, n)) return;
      }
      sent[i] = acc;
    });
    threads.emplace_back([&, i, to] {
      uint32_t acc = 0;
      size_t have = 0, checked = 0;
      while (have < slice) {
        const ssize_t r = read(in[i], to + have, std::min(kRead, slice - have));
        if (r <= 0) return;
        have += static_cast<size_t>(r);
        for (; checked + kPage <= have; checked += kPage) {
          acc ^= crc32c::Value(to + checked, kPage) + checked;
        }
      }
      got[i] = acc;
    });
  }
  for (std::thread& t : threads) t.join();
  const auto t1 = Clock::now();
  CloseAll(out);
  CloseAll(in);
  munmap(m, bytes);
  bool agree = ok;
  for (int i = 0; i < streams; ++i) agree = agree && sent[i] && got[i] && *sent[i] == *got[i];
  return agree ? Rate(static_cast<size_t>(streams) * slice, t0, t1) : 0;
}

double FreshMemoryRate(const uint8_t* src, size_t bytes, bool huge) {
  void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return 0;
  if (huge) madvise(m, bytes, MADV_HUGEPAGE);
  auto* dst = static_cast<uint8_t*>(m);
  const auto t0 = Clock::now();
  for (size_t off = 0; off < bytes; off += kChunk) {
    std::memcpy(dst + off, src + off, std::min(kChunk, bytes - off));
  }
  const auto t1 = Clock::now();
  munmap(m, bytes);
  return Rate(bytes, t0, t1);
}

double StoreWriteRate(const uint8_t* src, size_t bytes, const std::string& dir, bool durable,
                      bool direct) {
  const std::string path = dir + "/ceiling-write.bin";
  const int fd =
      open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | (direct ? O_DIRECT : 0), 0600);
  if (fd < 0) return 0;
  const auto t0 = Clock::now();
  bool ok = true;
  for (size_t off = 0; off < bytes && ok; off += kChunk) {
    ok = WriteAll(fd, src + off, std::min(kChunk, bytes - off));
  }
  if (ok && durable) ok = fsync(fd) == 0;
  const auto t1 = Clock::now();
  close(fd);
  unlink(path.c_str());
  return ok ? Rate(bytes, t0, t1) : 0;
}

double DurableStoreRate(const uint8_t* src, size_t bytes, const std::string& dir) {
  return std::max(StoreWriteRate(src, bytes, dir, true, false),
                  StoreWriteRate(src, bytes, dir, true, true));
}

}  // namespace procmig::bench
