// transport_bench --demo: 1 GiB of page-like data from a sender thread to a receiver thread over
// loopback TCP through the transport (io_uring unless refused; the chosen transport and why is
// printed), every page's crc32c checked at the receiver against the one the sender computed.
//
// Demo batch := magic:u32 ("PDMO") batch:u32 pages:u32 reserved:u32  crc32c:u32 * pages
//               page * pages
// Pages are the bench pool's (one in four zero) with the global page number stamped into bytes
// 0..7 of every non-zero page, so no two pages on the wire are alike.
#include <atomic>
#include <cinttypes>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/coding.h"
#include "base/crc32c.h"
#include "bench_util.h"
#include "transport/channel_factory.h"

namespace procmig {
namespace {

using namespace bench;  // NOLINT: the bench's own helpers

constexpr uint32_t kDemoMagic = 0x4f4d4450;  // "PDMO"
constexpr size_t kPagesPerBatch = 64;
constexpr size_t kHeader = 16;

struct Progress {
  std::atomic<uint64_t> sent{0};
  std::atomic<uint64_t> received{0};
  std::atomic<bool> done{false};
};

absl::Status Send(Channel& ch, uint64_t batches, int64_t corrupt_page, Progress* progress) {
  std::vector<uint8_t> pool = MakePool();
  std::vector<uint8_t> pages(kPagesPerBatch * kPage);
  uint8_t header[kHeader];
  uint8_t crcs[4 * kPagesPerBatch];
  std::vector<iovec> iov;
  for (uint64_t b = 0; b < batches; ++b) {
    for (size_t i = 0; i < kPagesPerBatch; ++i) {
      uint64_t global = b * kPagesPerBatch + i;
      size_t src = global % kPoolPages;
      uint8_t* page = &pages[i * kPage];
      std::memcpy(page, &pool[src * kPage], kPage);
      if (!IsZeroPage(src)) EncodeFixed64(page, global);
      EncodeFixed32(&crcs[4 * i], crc32c::Value(page, kPage));
      if (static_cast<int64_t>(global) == corrupt_page) page[100] ^= 0x20;  // after the crc
    }
    EncodeFixed32(header, kDemoMagic);
    EncodeFixed32(header + 4, static_cast<uint32_t>(b));
    EncodeFixed32(header + 8, kPagesPerBatch);
    EncodeFixed32(header + 12, 0);
    iov.clear();
    iov.push_back({header, kHeader});
    iov.push_back({crcs, sizeof(crcs)});
    for (size_t i = 0; i < kPagesPerBatch; ++i) iov.push_back({&pages[i * kPage], kPage});
    absl::Status s = ch.WriteV(iov.data(), iov.size());
    if (!s.ok()) return s;
    progress->sent += kPagesPerBatch * kPage;
  }
  return ch.Shutdown();
}

struct Verdict {
  uint64_t verified = 0;
  uint64_t zero = 0;
  uint64_t mismatched = 0;
};

absl::Status Receive(Channel& ch, uint64_t batches, Progress* progress, Verdict* v) {
  std::vector<uint8_t> pages(kPagesPerBatch * kPage);
  uint8_t header[kHeader];
  uint8_t crcs[4 * kPagesPerBatch];
  static const uint8_t kZero[kPage] = {};
  for (uint64_t b = 0; b < batches; ++b) {
    absl::Status s = ch.ReadExact(header, kHeader);
    if (s.ok()) s = ch.ReadExact(crcs, sizeof(crcs));
    if (!s.ok()) return s;
    if (DecodeFixed32(header) != kDemoMagic || DecodeFixed32(header + 4) != b ||
        DecodeFixed32(header + 8) != kPagesPerBatch || DecodeFixed32(header + 12) != 0) {
      return absl::DataLossError(absl::StrCat("demo batch ", b, ": bad header"));
    }
    s = ch.ReadExact(pages.data(), pages.size());
    if (!s.ok()) return s;
    for (size_t i = 0; i < kPagesPerBatch; ++i) {
      const uint8_t* page = &pages[i * kPage];
      uint32_t want = DecodeFixed32(&crcs[4 * i]);
      uint32_t got = crc32c::Value(page, kPage);
      if (got != want) {
        if (++v->mismatched <= 10) {
          std::printf("MISMATCH: page %" PRIu64 " (batch %" PRIu64
                      ", slot %zu): crc32c %08x, "
                      "sender said %08x\n",
                      b * kPagesPerBatch + i, b, i, got, want);
        }
        continue;
      }
      ++v->verified;
      if (std::memcmp(page, kZero, kPage) == 0) ++v->zero;
    }
    progress->received += kPagesPerBatch * kPage;
  }
  char extra;
  auto eof = ch.ReadSome(&extra, 1);
  if (!eof.ok()) return eof.status();
  if (*eof != 0) return absl::DataLossError("demo: bytes after the last batch");
  return absl::OkStatus();
}

}  // namespace

int Demo(uint64_t mib, int64_t corrupt_page) {
  const uint64_t batches = (mib << 20) / (kPagesPerBatch * kPage);
  const uint64_t total_mib = batches * kPagesPerBatch * kPage >> 20;
  TcpPair p = Loopback(SocketOptions{});
  OpenedChannel tx = Must(OpenChannel(std::move(p.client), TransportConfig{}, "demo sender"));
  OpenedChannel rx = Must(OpenChannel(std::move(p.server), TransportConfig{}, "demo receiver"));
  std::printf("transport demo: %" PRIu64
              " MiB of page-like data (1 page in 4 zero) over loopback "
              "TCP, sender thread -> receiver thread\n",
              total_mib);
  std::printf("sender transport:   %s\nreceiver transport: %s\n", tx.reason.c_str(),
              rx.reason.c_str());
  std::fflush(stdout);

  Progress progress;
  absl::Status send_status, recv_status;
  Verdict verdict;
  auto start = Clock::now();
  std::thread receiver([&] {
    recv_status = Receive(*rx.channel, batches, &progress, &verdict);
    if (!recv_status.ok()) rx.channel->Abort();
  });
  std::thread sender([&] {
    send_status = Send(*tx.channel, batches, corrupt_page, &progress);
    if (!send_status.ok()) tx.channel->Abort();
  });
  std::thread reporter([&] {
    auto last_t = start;
    uint64_t last_sent = 0;
    while (!progress.done.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      auto now = Clock::now();
      if (Seconds(last_t, now) < 0.5 && !progress.done.load()) continue;
      if (progress.done.load()) break;
      uint64_t sent = progress.sent.load();
      std::printf("  sent %5" PRIu64 " MiB, received %5" PRIu64 " MiB, %.2f GB/s\n", sent >> 20,
                  progress.received.load() >> 20,
                  static_cast<double>(sent - last_sent) / Seconds(last_t, now) / 1e9);
      std::fflush(stdout);
      last_t = now;
      last_sent = sent;
    }
  });
  sender.join();
  receiver.join();
  auto end = Clock::now();
  progress.done = true;
  reporter.join();

  double secs = Seconds(start, end);
  double gbps = static_cast<double>(progress.received.load()) / secs / 1e9;
  if (!send_status.ok()) std::printf("sender failed: %s\n", send_status.ToString().c_str());
  if (!recv_status.ok()) std::printf("receiver failed: %s\n", recv_status.ToString().c_str());
  if (!send_status.ok() || !recv_status.ok() || verdict.mismatched != 0) {
    std::printf("FAILED: %" PRIu64 " pages verified, %" PRIu64 " mismatched\n", verdict.verified,
                verdict.mismatched);
    return 1;
  }
  std::printf("%" PRIu64 " MiB in %.2f s, %.2f GB/s, all %" PRIu64 " pages verified (%" PRIu64
              " zero) by crc32c\n",
              total_mib, secs, gbps, verdict.verified, verdict.zero);
  return 0;
}

}  // namespace procmig
