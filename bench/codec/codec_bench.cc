// codec_bench: throughput of the page codecs on this machine, printed as medians of several runs.
//
//   zero-page scan (GB/s), each implementation, on zero pages and on non-zero pages (first
//     non-zero byte at the end of the page, and random pages), hot in cache and from memory;
//   XBZRLE encode and decode (MB/s of page data) with 1%, 10% and 50% of bytes changed;
//   zlib compression through CompressPool (MB/s of input, ratio) at levels 1, 6 and 9 on random
//     and heap-like data with 1 and 2 worker threads, and single-thread decompression.
//
// Not a test: it asserts nothing about speed. Runs in well under a minute.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "codec/compress_pool.h"
#include "codec/xbzrle.h"
#include "codec/zero_page.h"
#include "codec/zlib_codec.h"

namespace procmig {
namespace {

constexpr size_t kPage = 4096;
constexpr int kRepeats = 5;
volatile uint64_t g_sink;  // keeps results observable so the work is not optimised away

using Bytes = std::vector<uint8_t>;

// Single-threaded work is timed in this thread's CPU time, so other processes on the shared
// machine taking the core do not show up as a slow codec; the pool is timed in wall-clock time,
// since running in parallel is its whole point.
enum class Clock { kThreadCpu, kProcessCpu, kWall };

double Now(Clock clock) {
  timespec ts;
  clock_gettime(clock == Clock::kWall         ? CLOCK_MONOTONIC
                : clock == Clock::kProcessCpu ? CLOCK_PROCESS_CPUTIME_ID
                                              : CLOCK_THREAD_CPUTIME_ID,
                &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Median of kRepeats runs of `fn`, each processing `bytes`, in bytes per second.
// With `cpu_rate`, also the median rate per CPU-second of the whole process (all threads).
double MedianRate(size_t bytes, const std::function<void()>& fn, Clock clock = Clock::kThreadCpu,
                  double* cpu_rate = nullptr) {
  std::vector<double> rates, cpu_rates;
  for (int r = 0; r < kRepeats; ++r) {
    const double c0 = Now(Clock::kProcessCpu);
    const double t0 = Now(clock);
    fn();
    rates.push_back(static_cast<double>(bytes) / (Now(clock) - t0));
    cpu_rates.push_back(static_cast<double>(bytes) / (Now(Clock::kProcessCpu) - c0));
  }
  std::sort(rates.begin(), rates.end());
  std::sort(cpu_rates.begin(), cpu_rates.end());
  if (cpu_rate != nullptr) *cpu_rate = cpu_rates[cpu_rates.size() / 2];
  return rates[rates.size() / 2];
}

void FillRandom(uint8_t* p, size_t n, std::mt19937_64& rng) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = rng();
    std::memcpy(p + i, &v, 8);
  }
  for (; i < n; ++i) p[i] = static_cast<uint8_t>(rng());
}

// Heap-like page contents: what a malloc heap of a typical program holds. Objects of 16..256
// bytes, each one of: pointers into a few heap/mmap regions, small integers, ASCII text, zeroed
// memory, or doubles; malloc-style size headers between them.
void FillHeapLike(uint8_t* p, size_t n, std::mt19937_64& rng) {
  static const char* const kWords[] = {"error",  "config", "user",  "session", "GET",   "/api/v1/",
                                       "status", "true",   "false", "null",    "id",    "name",
                                       "value",  "2024-",  "http",  "json",    "cache", "key"};
  const uint64_t bases[] = {0x000055d4a3c00000ull, 0x00007f3b21000000ull, 0x00007ffd8e500000ull};
  size_t i = 0;
  while (i < n) {
    const size_t obj = std::min<size_t>(16 + (rng() % 16) * 16, n - i);
    if (obj >= 8) {  // malloc chunk header: size | flags
      uint64_t hdr = (obj + 16) | 1;
      std::memcpy(p + i, &hdr, 8);
    }
    const size_t start = std::min(i + 8, i + obj);
    const size_t end = i + obj;
    const unsigned kind = rng() % 100;
    for (size_t k = start; k < end;) {
      if (kind < 30) {  // pointers
        uint64_t v = bases[rng() % 3] + (rng() % 0x40000) * 16;
        size_t m = std::min<size_t>(8, end - k);
        std::memcpy(p + k, &v, m);
        k += m;
      } else if (kind < 55) {  // small integers
        uint32_t v = static_cast<uint32_t>(rng() % (rng() % 2 ? 16 : 4096));
        size_t m = std::min<size_t>(4, end - k);
        std::memcpy(p + k, &v, m);
        k += m;
      } else if (kind < 75) {  // text
        const char* w = kWords[rng() % (sizeof(kWords) / sizeof(kWords[0]))];
        size_t m = std::min(std::strlen(w), end - k);
        std::memcpy(p + k, w, m);
        k += m;
        if (k < end) p[k++] = static_cast<uint8_t>(rng() % 4 == 0 ? '\0' : ' ');
      } else if (kind < 92) {  // zeroed memory
        p[k++] = 0;
      } else {  // doubles
        double d = static_cast<double>(rng() % 100000) / 100.0;
        size_t m = std::min<size_t>(8, end - k);
        std::memcpy(p + k, &d, m);
        k += m;
      }
    }
    i = end;
  }
}

void ZeroPageBench() {
  std::printf("== zero-page scan (GB/s; impl chosen by dispatch: %s)\n",
              std::string(ZeroPageImplName()).c_str());
  struct Impl {
    const char* name;
    bool (*fn)(const uint8_t*, size_t);
  };
  std::vector<Impl> impls = {{"dispatch", &IsZeroPage}, {"sse2", &IsZeroPageSse2}};
  if (ZeroPageImplName() == "avx2") impls.push_back({"avx2", &IsZeroPageAvx2});
  impls.push_back({"portable", &IsZeroPagePortable});

  std::mt19937_64 rng(1);
  const size_t kHotPages = 32;                     // 128 KiB: stays in L2
  const size_t kColdPages = (256u << 20) / kPage;  // 256 MiB: streams from DRAM
  struct Data {
    const char* name;
    Bytes hot, cold;
  };
  std::vector<Data> sets(3);
  sets[0].name = "zero pages";
  sets[1].name = "last byte non-zero";
  sets[2].name = "random pages";
  for (Data& d : sets) {
    d.hot.assign(kHotPages * kPage, 0);
    d.cold.assign(kColdPages * kPage, 0);  // written, so each page is real memory
  }
  for (size_t p = 0; p < kHotPages; ++p) sets[1].hot[p * kPage + kPage - 1] = 1;
  for (size_t p = 0; p < kColdPages; ++p) sets[1].cold[p * kPage + kPage - 1] = 1;
  FillRandom(sets[2].hot.data(), sets[2].hot.size(), rng);
  FillRandom(sets[2].cold.data(), sets[2].cold.size(), rng);

  std::printf("%-20s %-9s %10s %10s\n", "data", "impl", "hot", "memory");
  for (const Data& d : sets) {
    for (const Impl& impl : impls) {
      const size_t hot_rounds = 2000;
      double hot = MedianRate(hot_rounds * d.hot.size(), [&] {
        uint64_t zeros = 0;
        for (size_t r = 0; r < hot_rounds; ++r) {
          for (size_t p = 0; p < kHotPages; ++p) zeros += impl.fn(d.hot.data() + p * kPage, kPage);
        }
        g_sink = zeros;
      });
      double cold = MedianRate(d.cold.size(), [&] {
        uint64_t zeros = 0;
        for (size_t p = 0; p < kColdPages; ++p) zeros += impl.fn(d.cold.data() + p * kPage, kPage);
        g_sink = zeros;
      });
      std::printf("%-20s %-9s %10.1f %10.1f\n", d.name, impl.name, hot / 1e9, cold / 1e9);
    }
  }
}

void XbzrleBench() {
  std::printf("\n== XBZRLE, 4 KiB pages, 16 MiB per run (MB/s of page data)\n");
  std::printf("%-8s %12s %8s %12s %12s %12s\n", "changed", "encode", "fit", "avg delta",
              "encode(max)", "decode");
  const size_t kPages = 4096;
  std::mt19937_64 rng(2);
  Bytes old_pages(kPages * kPage);
  FillHeapLike(old_pages.data(), old_pages.size(), rng);
  for (double fraction : {0.01, 0.10, 0.50}) {
    Bytes new_pages = old_pages;
    const size_t changes = static_cast<size_t>(fraction * kPage);
    for (size_t p = 0; p < kPages; ++p) {
      // Distinct random positions: exactly `changes` bytes of the page differ.
      std::vector<uint16_t> pos(kPage);
      for (size_t i = 0; i < kPage; ++i) pos[i] = static_cast<uint16_t>(i);
      for (size_t i = 0; i < changes; ++i) std::swap(pos[i], pos[i + rng() % (kPage - i)]);
      for (size_t i = 0; i < changes; ++i) {
        new_pages[p * kPage + pos[i]] ^= static_cast<uint8_t>(1 + rng() % 255);
      }
    }
    // As the sender uses it: room for one page, "does not fit" means send raw.
    Bytes out(kPage);
    size_t fit = 0, fit_bytes = 0;
    double enc = MedianRate(kPages * kPage, [&] {
      fit = 0;
      fit_bytes = 0;
      for (size_t p = 0; p < kPages; ++p) {
        auto n = xbzrle::Encode(old_pages.data() + p * kPage, new_pages.data() + p * kPage, kPage,
                                out.data(), kPage);
        if (n) {
          ++fit;
          fit_bytes += *n;
        }
      }
    });
    // With unlimited room, keeping every delta for the decode run.
    const size_t cap = xbzrle::MaxEncodedSize(kPage);
    Bytes deltas(kPages * cap);
    std::vector<size_t> lens(kPages);
    double enc_max = MedianRate(kPages * kPage, [&] {
      for (size_t p = 0; p < kPages; ++p) {
        lens[p] = *xbzrle::Encode(old_pages.data() + p * kPage, new_pages.data() + p * kPage, kPage,
                                  deltas.data() + p * cap, cap);
      }
    });
    Bytes work(kPages * kPage);
    double dec = MedianRate(kPages * kPage, [&] {
      std::memcpy(work.data(), old_pages.data(), work.size());  // not timed separately; small
      for (size_t p = 0; p < kPages; ++p) {
        if (!xbzrle::Decode(deltas.data() + p * cap, lens[p], work.data() + p * kPage, kPage)
                 .ok()) {
          std::abort();
        }
      }
    });
    if (work != new_pages) std::abort();
    std::printf("%6.0f%% %12.0f %7.0f%% %12.0f %12.0f %12.0f\n", fraction * 100, enc / 1e6,
                100.0 * static_cast<double>(fit) / kPages,
                fit ? static_cast<double>(fit_bytes) / static_cast<double>(fit) : 0.0,
                enc_max / 1e6, dec / 1e6);
  }
  std::printf("(decode includes a memcpy of the 16 MiB old pages per run)\n");
}

void ZlibBench() {
  std::printf(
      "\n== zlib through CompressPool, one 4 KiB page per job, 4 MiB per run (MB/s of input:\n"
      "   wall = per wall-second, CPU = per CPU-second of all threads; decompress: one thread)\n");
  std::printf("%-10s %5s %7s %10s %10s %8s %12s\n", "data", "level", "threads", "MB/s wall",
              "MB/s CPU", "ratio", "decompress");
  const size_t kPages = 1024;
  std::mt19937_64 rng(3);
  Bytes random(kPages * kPage), heap(kPages * kPage);
  FillRandom(random.data(), random.size(), rng);
  FillHeapLike(heap.data(), heap.size(), rng);
  auto decompressor = *ZlibDecompressor::Create();
  for (auto [name, data] : {std::pair<const char*, const Bytes*>{"random", &random},
                            std::pair<const char*, const Bytes*>{"heap-like", &heap}}) {
    for (int level : {1, 6, 9}) {
      for (int threads : {1, 2}) {
        CompressPoolConfig config;
        config.threads = threads;
        config.level = level;
        config.max_job_bytes = kPage;
        auto pool = *CompressPool::Create(config);
        size_t compressed = 0;
        double cpu_rate = 0;
        Bytes streams(kPages * ZlibCompressor::MaxCompressedSize(kPage));
        std::vector<size_t> lens(kPages);
        const size_t stride = ZlibCompressor::MaxCompressedSize(kPage);
        double rate = MedianRate(
            data->size(),
            [&] {
              compressed = 0;
              size_t next = 0;
              auto collect = [&] {
                auto r = pool->Collect();
                if (!r.ok()) std::abort();
                const size_t page = r->seq % kPages;  // sequence numbers continue across runs
                std::memcpy(streams.data() + page * stride, r->data, r->size);
                lens[page] = r->size;
                compressed += r->size;
              };
              while (next < kPages) {
                if (pool->Full()) collect();
                if (!pool->Submit(data->data() + next * kPage, kPage).ok()) std::abort();
                ++next;
              }
              while (pool->Outstanding() > 0) collect();
            },
            Clock::kWall, &cpu_rate);
        Bytes out(kPage);
        double drate = MedianRate(data->size(), [&] {
          for (size_t p = 0; p < kPages; ++p) {
            if (!decompressor
                     ->DecompressExact(streams.data() + p * stride, lens[p], out.data(), kPage)
                     .ok()) {
              std::abort();
            }
          }
        });
        std::printf("%-10s %5d %7d %10.0f %10.0f %8.3f %12.0f\n", name, level, threads, rate / 1e6,
                    cpu_rate / 1e6,
                    static_cast<double>(data->size()) / static_cast<double>(compressed),
                    drate / 1e6);
      }
    }
  }
}

}  // namespace
}  // namespace procmig

int main() {
  auto t0 = std::chrono::steady_clock::now();
  std::string load;
  std::getline(std::ifstream("/proc/loadavg"), load);
  std::printf(
      "codec_bench: medians of %d runs; single-thread rates per CPU-second, pool rates "
      "per wall-second; load average at start: %s\n\n",
      procmig::kRepeats, load.c_str());
  procmig::ZeroPageBench();
  procmig::XbzrleBench();
  procmig::ZlibBench();
  std::printf("\ntotal %.1f s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return 0;
}
