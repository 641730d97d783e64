// mem_workload: the migration bench's subject. --mib MiB of anonymous memory filled with random
// bytes (--fill random), touched zeros (--fill zero) or words holding 16 random bits each, the
// other 6 bytes zero (--fill compressible: small counters and lengths, as much of a heap holds;
// zlib level 1 shrinks such a 4 KiB page about 2.6x), then, if --dirty-mbps is non-zero, a
// writer that dirties random pages at that rate, changing 64 bytes of each (the case XBZRLE is
// for). Prints READY like the other workloads; SIGUSR1 checks that the untouched part of each
// page still holds its fill and exits. Single-threaded.
#include <sys/mman.h>

#include <cinttypes>
#include <cstdint>

#include "workload_common.h"

namespace procmig::examples {
namespace {

constexpr size_t kDirtyBytes = 64;  // changed per dirtied page, at the page's start

enum class Fill { kRandom, kZero, kCompressible };

// The fill's word at index i (of the whole region).
uint64_t FillWord(Fill fill, size_t i) {
  switch (fill) {
    case Fill::kZero:
      return 0;
    case Fill::kCompressible:
      return Mix64(i) & 0xffff;
    case Fill::kRandom:
      break;
  }
  return Mix64(i);
}

int Main(int argc, char** argv) {
  InstallCheckHandlers();
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const uint64_t mib = FlagU64(argc, argv, "--mib", 1024);
  const uint64_t dirty_mbps = FlagU64(argc, argv, "--dirty-mbps", 0);
  const char* fill_name = FlagStr(argc, argv, "--fill", "random");
  Fill fill = Fill::kRandom;
  if (strcmp(fill_name, "zero") == 0) {
    fill = Fill::kZero;
  } else if (strcmp(fill_name, "compressible") == 0) {
    fill = Fill::kCompressible;
  } else if (strcmp(fill_name, "random") != 0) {
    FailNow("--fill must be random, zero or compressible");
  }
  const size_t bytes = mib << 20;
  void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) FailNow("mmap %" PRIu64 " MiB: %s", mib, strerror(errno));
  auto* words = static_cast<uint64_t*>(m);
  const size_t nwords = bytes / 8;
  if (fill == Fill::kZero) {
    // Touch every page so it is populated with (zero) memory, as a program's zeroed heap is.
    for (size_t off = 0; off < bytes; off += page) static_cast<volatile uint8_t*>(m)[off] = 0;
  } else {
    for (size_t i = 0; i < nwords; ++i) words[i] = FillWord(fill, i);
  }
  Say("READY pid=%d addr=0x%" PRIxPTR " bytes=%zu fill=%s dirty-mbps=%" PRIu64, getpid(),
      reinterpret_cast<uintptr_t>(m), bytes, fill_name, dirty_mbps);

  const size_t pages = bytes / page;
  const size_t wpp = page / 8;
  Rng rng(7);
  uint64_t dirtied = 0;
  // Rate counts whole pages: the tracker sees a page dirty whatever part of it was written.
  Pacer pacer(static_cast<double>(dirty_mbps) * 1e6 / static_cast<double>(page));
  for (;;) {
    const CheckRequest req = CheckRequested();
    if (req == CheckRequest::kQuit) _exit(0);
    if (req != CheckRequest::kNone) {
      bool ok = true;
      char detail[200];
      for (size_t p = 0; p < pages && ok; ++p) {
        for (size_t k = kDirtyBytes / 8; k < wpp && ok; ++k) {
          const uint64_t want = FillWord(fill, p * wpp + k);
          ok = words[p * wpp + k] == want;
          if (!ok) snprintf(detail, sizeof(detail), "page %zu word %zu changed", p, k);
        }
      }
      if (ok)
        snprintf(detail, sizeof(detail), "mem_workload: %zu pages intact, %" PRIu64 " dirtied",
                 pages, dirtied);
      ReportCheck(req, ok, detail);
    }
    if (dirty_mbps == 0) {
      SleepUntil(NowNs() + 20000000);
      continue;
    }
    // A batch of pages per loop keeps the check latency low without a syscall per page.
    for (int i = 0; i < 16; ++i) {
      uint64_t* p = words + rng.Below(pages) * wpp;
      const uint64_t v = rng.Next();
      for (size_t k = 0; k < kDirtyBytes / 8; ++k) p[k] = v + k;
      ++dirtied;
    }
    pacer.Tick(16);
  }
}

}  // namespace
}  // namespace procmig::examples

int main(int argc, char** argv) { return procmig::examples::Main(argc, argv); }
