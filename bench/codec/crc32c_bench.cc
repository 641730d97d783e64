// crc32c_bench: single-thread throughput of each crc32c implementation on this machine, printed
// as medians of several runs (thread CPU time, so other processes on the shared machine taking
// the core do not show up as a slow crc):
//
//   4096-byte pages, one Value() per page as the sender and receiver do, from a 256 KiB set (in L2,
//     not L1) and streaming once through a 1 GiB buffer (from DRAM), each with pages starting on
//     a page boundary and one byte past it;
//   64 KiB buffers in L2;
//   the sender's in-place copy of 1 GiB, page by page: memcpy and then Value() against the fused
//   CopyValue().
//
// Not a test: it asserts nothing about speed. Runs in about 10 seconds.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "base/crc32c.h"

namespace procmig {
namespace {

constexpr size_t kPage = 4096;
constexpr int kRuns = 7;
volatile uint32_t g_sink;  // keeps results observable so the work is not optimised away

double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

struct Candidate {
  const char* name;
  crc32c::Impl impl;
  bool dispatch;  // through Extend() rather than ExtendWith()
};

uint32_t Crc(const Candidate& c, const uint8_t* p, size_t n) {
  return c.dispatch ? crc32c::Value(p, n) : crc32c::ExtendWith(c.impl, 0, p, n);
}

// Median seconds per buffer: each run checksums `per_run` buffers of `len` bytes, buffer i at
// base + offset + (i % slots) * len.
double MedianSecondsPerBuffer(const Candidate& c, const uint8_t* base, size_t slots, size_t len,
                              size_t offset, size_t per_run) {
  std::vector<double> t;
  for (int r = 0; r < kRuns; ++r) {
    uint32_t acc = 0;
    const double t0 = ThreadCpuSeconds();
    for (size_t i = 0, slot = 0; i < per_run; ++i) {
      acc ^= Crc(c, base + offset + slot * len, len);
      if (++slot == slots) slot = 0;
    }
    t.push_back((ThreadCpuSeconds() - t0) / static_cast<double>(per_run));
    g_sink = acc;
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Buffer {
  std::unique_ptr<uint8_t, decltype(&std::free)> mem{nullptr, &std::free};
  uint8_t* data() const { return mem.get(); }
};

// `bytes` of random data plus a page of slack (for the unaligned runs), page-aligned.
Buffer RandomBuffer(size_t bytes, std::mt19937_64& rng) {
  Buffer b;
  b.mem.reset(static_cast<uint8_t*>(std::aligned_alloc(kPage, bytes + kPage)));
  if (b.mem == nullptr) {
    std::perror("aligned_alloc");
    std::exit(1);
  }
  for (size_t i = 0; i < bytes + kPage; i += 8) {
    const uint64_t v = rng();
    std::memcpy(b.data() + i, &v, 8);
  }
  return b;
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "?";
}

void Run() {
  std::string load;
  std::getline(std::ifstream("/proc/loadavg"), load);
  std::printf(
      "crc32c_bench: medians of %d runs, thread CPU time, one thread; %s; Extend() uses %s; "
      "load average at start: %s\n",
      kRuns, CpuModel().c_str(), crc32c::ImplName(crc32c::ChosenImpl()), load.c_str());

  std::vector<Candidate> all = {{"Extend()", crc32c::ChosenImpl(), true},
                                {"sse4.2", crc32c::Impl::kSse42, false},
                                {"vpclmul-256", crc32c::Impl::kClmul256, false},
                                {"vpclmul-512", crc32c::Impl::kClmul512, false},
                                {"portable", crc32c::Impl::kPortable, false}};
  std::vector<Candidate> candidates;
  for (const Candidate& c : all) {
    if (c.dispatch || crc32c::Supported(c.impl)) {
      candidates.push_back(c);
    } else {
      std::printf("(%s: not supported on this CPU)\n", c.name);
    }
  }

  std::mt19937_64 rng(1);
  constexpr size_t kHotBytes = 256 << 10;  // in L2 (1 MiB on Zen 4/5), not in L1
  constexpr size_t kColdBytes = size_t{1} << 30;
  const Buffer hot = RandomBuffer(kHotBytes, rng);
  const Buffer cold = RandomBuffer(kColdBytes, rng);

  std::printf("\n%-12s %22s %22s %22s %22s %22s\n", "", "page, L2", "page+1, L2", "64 KiB, L2",
              "page, 1 GiB stream", "page+1, 1 GiB stream");
  std::printf("%-12s", "impl");
  for (int i = 0; i < 5; ++i) std::printf(" %13s %8s", i == 2 ? "ns/buffer" : "ns/page", "GB/s");
  std::printf("\n");
  for (const Candidate& c : candidates) {
    const bool slow = c.impl == crc32c::Impl::kPortable;
    // About 0.5 GB per run in L2 (0.05 GB for the portable table), one pass over 1 GiB.
    const size_t hot_pages = (slow ? 50'000'000 : 500'000'000) / kPage;
    std::printf("%-12s", c.name);
    auto print = [](double seconds, size_t len) {
      std::printf(" %13.1f %8.1f", seconds * 1e9, static_cast<double>(len) / seconds * 1e-9);
      std::fflush(stdout);
    };
    const size_t hot_slots = kHotBytes / kPage;
    print(MedianSecondsPerBuffer(c, hot.data(), hot_slots, kPage, 0, hot_pages), kPage);
    print(MedianSecondsPerBuffer(c, hot.data(), hot_slots, kPage, 1, hot_pages), kPage);
    constexpr size_t k64K = 64 << 10;
    print(MedianSecondsPerBuffer(c, hot.data(), kHotBytes / k64K, k64K, 0, hot_pages / 16), k64K);
    if (slow) {
      std::printf("   (the table is not timed on 1 GiB)\n");
      continue;
    }
    const size_t cold_pages = kColdBytes / kPage;
    print(MedianSecondsPerBuffer(c, cold.data(), cold_pages, kPage, 0, cold_pages), kPage);
    print(MedianSecondsPerBuffer(c, cold.data(), cold_pages, kPage, 1, cold_pages), kPage);
    std::printf("\n");
  }

  // The sender's in-place copy: every page of the 1 GiB stream into an 8 MiB staging ring.
  constexpr size_t kStage = 8 << 20;
  const Buffer stage = RandomBuffer(kStage, rng);
  auto copy_ms = [&](bool fused) {
    std::vector<double> t;
    for (int r = 0; r < kRuns; ++r) {
      uint32_t acc = 0;
      const double t0 = ThreadCpuSeconds();
      for (size_t off = 0; off < kColdBytes; off += kPage) {
        uint8_t* to = stage.data() + off % kStage;
        if (fused) {
          acc ^= crc32c::CopyValue(to, cold.data() + off, kPage);
        } else {
          std::memcpy(to, cold.data() + off, kPage);
          acc ^= crc32c::Value(to, kPage);
        }
      }
      t.push_back((ThreadCpuSeconds() - t0) * 1e3);
      g_sink = acc;
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  };
  const double apart = copy_ms(false), fused = copy_ms(true);
  std::printf(
      "\ncopying the 1 GiB stream page by page into an 8 MiB ring and checksumming each page: "
      "memcpy then Value() %.1f ms, CopyValue() %.1f ms (%.2f of it)\n",
      apart, fused, fused / apart);
}

}  // namespace
}  // namespace procmig

int main() {
  procmig::Run();
  return 0;
}
