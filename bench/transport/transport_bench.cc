// transport_bench: throughput of the transport module over loopback TCP, next to the same run's
// ceiling (a plain write()/read() loop), and `--demo`, the README's main job until live
// migration exists: 1 GiB of page-like data streamed through io_uring from a sender thread to a
// receiver thread over real sockets, every page's crc32c checked against the sender's.
//
//   transport_bench [--mib N] [--runs N] [--batch-pages N] [--sndbuf BYTES] [--one-iovec]
//   transport_bench --demo [--mib N] [--corrupt-page N]
//
// Bench batches are `batch-pages` 4 KiB pages sent as one iovec each, every other page of the pool
// so no two are adjacent (scattered dirty pages; adjacent ones the channels merge into one
// segment); --one-iovec sends each batch as one contiguous iovec instead, the shape the ceiling
// has. The ceiling writes the batch's bytes with one write() per batch. Receivers read into a
// 1 MiB buffer and discard (no checksums in the timed loop). Modes are interleaved run by run and
// each gets a fresh connection; besides GB/s the table shows CPU seconds (user+sys, all threads)
// per GiB, which stays meaningful when other work on the machine steals the cores. Exit status: 0,
// or 1 on any error or (demo) on any page whose crc32c differs.
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "transport/channel_factory.h"
#include "transport/channel_group.h"
#include "transport/channel_group_receiver.h"
#include "transport/endpoint.h"

namespace procmig {
namespace {

using namespace bench;  // NOLINT: the bench's own helpers

struct Options {
  uint64_t mib = 1024;
  int runs = 5;
  size_t batch_pages = 64;
  bool one_iovec = false;
  int sndbuf = 0;
  bool demo = false;
  int64_t corrupt_page = -1;
};

enum class Mode { kPlain, kIoUring, kPosix, kZeroCopy, kTwoChannels };
const char* ModeName(Mode m) {
  switch (m) {
    case Mode::kPlain:
      return "plain write/read (ceiling)";
    case Mode::kIoUring:
      return "io_uring";
    case Mode::kPosix:
      return "posix readv/writev";
    case Mode::kZeroCopy:
      return "io_uring + SEND_ZC";
    case Mode::kTwoChannels:
      return "2 channels (io_uring)";
  }
  return "?";
}

TransportConfig ConfigFor(Mode m) {
  TransportConfig c;
  c.read_environment = false;
  c.kind = m == Mode::kPosix ? TransportKind::kPosix : TransportKind::kIoUring;
  c.send_zerocopy = m == Mode::kZeroCopy;
  return c;
}

// Batch k as iovecs, one per page, cycling through the pool.
const uint8_t* BatchStart(const std::vector<uint8_t>& pool, size_t pages, uint64_t k) {
  return &pool[((k * pages) % kPoolPages) * kPage];
}
void BatchIov(const std::vector<uint8_t>& pool, size_t pages, uint64_t k, std::vector<iovec>* iov,
              bool one_iovec) {
  iov->clear();
  const uint8_t* first = BatchStart(pool, pages, k);
  if (one_iovec) {
    iov->push_back({const_cast<uint8_t*>(first), pages * kPage});
    return;
  }
  // Every other page, as dirty pages scattered over memory would be: the channel cannot merge
  // neighbours into one segment here, so this is the per-page cost in full.
  for (size_t i = 0; i < pages; ++i) {
    iov->push_back({const_cast<uint8_t*>(first + 2 * i * kPage), kPage});
  }
}

double CpuSeconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// One timed transfer of o.mib MiB; returns GB/s (1e9 bytes per second).
double RunOnce(Mode mode, const Options& o, const std::vector<uint8_t>& pool, std::string* note) {
  const uint64_t batch_bytes = o.batch_pages * kPage;
  const uint64_t batches = (o.mib << 20) / batch_bytes;
  const uint64_t total = batches * batch_bytes;
  SocketOptions so;
  so.send_buffer_bytes = o.sndbuf;
  std::vector<uint8_t> rbuf(1 << 20);

  if (mode == Mode::kTwoChannels) {
    UniqueFd l = Must(Listen(Must(Endpoint::Parse("127.0.0.1:0")), so));
    Endpoint bound = Must(LocalEndpoint(l.get()));
    std::unique_ptr<ChannelGroup> group;
    std::thread c([&] { group = Must(ChannelGroup::Connect(bound, 2, 1, ConfigFor(mode), so)); });
    auto recv = Must(ChannelGroupReceiver::Accept(l.get(), ConfigFor(mode), 5000, so));
    c.join();
    std::atomic<uint64_t> next{0};
    auto start = Clock::now();
    auto writer = [&] {
      std::vector<iovec> iov;
      for (uint64_t k; (k = next.fetch_add(1)) < batches;) {
        BatchIov(pool, o.batch_pages, k, &iov, o.one_iovec);
        if (auto r = group->WriteBatch(iov.data(), iov.size()); !r.ok()) Die(r.status());
      }
    };
    std::thread w0(writer), w1(writer);
    std::thread closer([&] {
      w0.join();
      w1.join();
      if (auto s = group->Shutdown(); !s.ok()) Die(s);
    });
    std::atomic<uint64_t> got{0};
    absl::Status s = recv->Run([&](size_t, std::span<const uint8_t> chunk) {
      got += chunk.size();
      return absl::OkStatus();
    });
    auto end = Clock::now();
    closer.join();
    if (!s.ok()) Die(s);
    if (got != total) Die(absl::InternalError("2 channels: byte count mismatch"));
    return static_cast<double>(total) / Seconds(start, end) / 1e9;
  }

  TcpPair p = Loopback(so);
  std::unique_ptr<Channel> tx, rx;
  if (mode != Mode::kPlain) {
    OpenedChannel a = Must(OpenChannel(std::move(p.client), ConfigFor(mode), "bench tx"));
    // The receiving side has no zero-copy: it reads with the same transport otherwise.
    Mode rx_mode = mode == Mode::kZeroCopy ? Mode::kIoUring : mode;
    OpenedChannel b = Must(OpenChannel(std::move(p.server), ConfigFor(rx_mode), "bench rx"));
    *note = a.reason;
    tx = std::move(a.channel);
    rx = std::move(b.channel);
  }
  uint64_t received = 0;
  Clock::time_point end;
  std::thread reader([&] {
    while (received < total) {
      size_t n;
      if (mode == Mode::kPlain) {
        ssize_t r = read(p.server.get(), rbuf.data(), rbuf.size());
        if (r <= 0) Die(absl::UnavailableError("plain read failed"));
        n = static_cast<size_t>(r);
      } else {
        n = Must(rx->ReadSome(rbuf.data(), rbuf.size()));
        if (n == 0) Die(absl::UnavailableError("early EOF"));
      }
      received += n;
    }
    end = Clock::now();
  });
  auto start = Clock::now();
  std::vector<iovec> iov;
  for (uint64_t k = 0; k < batches; ++k) {
    if (mode == Mode::kPlain) {  // the same bytes, one write() per batch
      const uint8_t* src = BatchStart(pool, o.batch_pages, k);
      for (size_t done = 0; done < batch_bytes;) {
        ssize_t r = write(p.client.get(), src + done, batch_bytes - done);
        if (r <= 0) Die(absl::UnavailableError("plain write failed"));
        done += static_cast<size_t>(r);
      }
    } else {
      BatchIov(pool, o.batch_pages, k, &iov, o.one_iovec);
      if (auto s = tx->WriteV(iov.data(), iov.size()); !s.ok()) Die(s);
    }
  }
  reader.join();
  if (mode == Mode::kZeroCopy) {
    ChannelCounters c = tx->counters();
    *note += " [" + std::to_string(c.zerocopy_copied) + " of " +
             std::to_string(c.zerocopy_notifications) + " zero-copy sends copied by the kernel]";
  }
  return static_cast<double>(total) / Seconds(start, end) / 1e9;
}

int Bench(const Options& o) {
  std::vector<uint8_t> pool = MakePool();
  std::printf(
      "transport_bench: %llu MiB over loopback TCP per run, %d runs, batches of %zu pages "
      "(%zu KiB) as %s, %u CPUs\n",
      static_cast<unsigned long long>(o.mib), o.runs, o.batch_pages, o.batch_pages * kPage / 1024,
      o.one_iovec ? "one iovec" : "one iovec per scattered page",
      std::thread::hardware_concurrency());
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {  // other load skews every figure below
    char line[128] = {};
    if (std::fgets(line, sizeof(line), f) != nullptr) std::printf("load average: %s", line);
    std::fclose(f);
  }
  const Mode modes[] = {Mode::kPlain, Mode::kIoUring, Mode::kPosix, Mode::kZeroCopy,
                        Mode::kTwoChannels};
  // Modes are interleaved run by run, so load from elsewhere on the machine hits each alike.
  constexpr size_t kModes = std::size(modes);
  std::vector<double> results[kModes];
  std::vector<double> cpu[kModes];  // CPU seconds (user+sys, whole process) per GiB moved
  std::string notes[kModes];
  for (int i = 0; i < o.runs; ++i) {
    for (size_t m = 0; m < kModes; ++m) {
      double c0 = CpuSeconds();
      results[m].push_back(RunOnce(modes[m], o, pool, &notes[m]));
      cpu[m].push_back((CpuSeconds() - c0) * 1024.0 / static_cast<double>(o.mib));
    }
    std::printf("  run %d/%d done\n", i + 1, o.runs);
    std::fflush(stdout);
  }
  std::printf("%-28s %9s %9s %9s %9s %12s\n", "mode", "median", "min", "max", "vs ceil",
              "CPU s/GiB");
  double ceiling = 0;
  for (size_t m = 0; m < kModes; ++m) {
    std::vector<double>& r = results[m];
    std::sort(r.begin(), r.end());
    double median = r[r.size() / 2];
    if (modes[m] == Mode::kPlain) ceiling = median;
    std::sort(cpu[m].begin(), cpu[m].end());
    std::printf("%-28s %7.2f GB/s %5.2f %9.2f %8.0f%% %12.2f%s%s\n", ModeName(modes[m]), median,
                r.front(), r.back(), 100.0 * median / ceiling, cpu[m][cpu[m].size() / 2],
                notes[m].empty() ? "" : "   ", notes[m].c_str());
  }
  return 0;
}

}  // namespace

// transport_demo.cc
int Demo(uint64_t mib, int64_t corrupt_page);

}  // namespace procmig

int main(int argc, char** argv) {
  procmig::Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "transport_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--demo") {
      o.demo = true;
    } else if (a == "--mib") {
      o.mib = std::strtoull(next(), nullptr, 10);
    } else if (a == "--runs") {
      o.runs = std::atoi(next());
    } else if (a == "--batch-pages") {
      o.batch_pages = std::strtoull(next(), nullptr, 10);
    } else if (a == "--one-iovec") {
      o.one_iovec = true;
    } else if (a == "--sndbuf") {
      o.sndbuf = std::atoi(next());
    } else if (a == "--corrupt-page") {
      o.corrupt_page = std::strtoll(next(), nullptr, 10);
    } else {
      std::fprintf(stderr,
                   "usage: transport_bench [--mib N] [--runs N] [--batch-pages N] [--sndbuf B] "
                   "[--one-iovec]\n"
                   "       transport_bench --demo [--mib N] [--corrupt-page N]\n");
      return 2;
    }
  }
  if (o.mib == 0 || o.runs < 1 || o.batch_pages == 0 || o.batch_pages > 1024) {
    std::fprintf(stderr, "transport_bench: --mib, --runs > 0 and --batch-pages in [1, 1024]\n");
    return 2;
  }
  return o.demo ? procmig::Demo(o.mib, o.corrupt_page) : procmig::Bench(o);
}
