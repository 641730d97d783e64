// demo_counter: the README's main-job workload. It holds --mib MiB (256 by default) of patterned
// memory and once a second rewrites 1 MiB of it and prints
//   "tick N checksum 0x... pages-rewritten M"
// so a reader can watch it keep counting at the destination once restore exists (for now: its
// image is stored and verified by the receiver).
//
// Word k of page p holds Mix64(p, k, version[p]) where version[p] counts the rewrites of page p
// (kept in a separate heap array): SIGUSR1/SIGUSR2 check every page against it. Single-threaded.
#include <sys/mman.h>

#include <cinttypes>
#include <cstdint>
#include <vector>

#include "workload_common.h"

namespace procmig::examples {
namespace {

uint64_t WordOf(size_t page, size_t k, uint32_t version) {
  return Mix64((static_cast<uint64_t>(page) << 32) ^ (static_cast<uint64_t>(version) << 12) ^ k);
}

int Main(int argc, char** argv) {
  InstallCheckHandlers();
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const uint64_t mib = FlagU64(argc, argv, "--mib", 256);
  const uint64_t ticks = FlagU64(argc, argv, "--ticks", 0);  // 0 = forever
  const size_t pages = (mib << 20) / page;
  const size_t per_tick = (1u << 20) / page;
  void* m = mmap(nullptr, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) FailNow("mmap %" PRIu64 " MiB: %s", mib, strerror(errno));
  auto* words = static_cast<uint64_t*>(m);
  const size_t wpp = page / 8;
  std::vector<uint32_t> version(pages, 0);
  for (size_t p = 0; p < pages; ++p) {
    for (size_t k = 0; k < wpp; ++k) words[p * wpp + k] = WordOf(p, k, 0);
  }
  Say("READY pid=%d addr=0x%" PRIxPTR " bytes=%zu", getpid(), reinterpret_cast<uintptr_t>(m),
      pages * page);

  uint64_t tick = 0;
  size_t next_page = 0;
  uint64_t next_tick_ns = NowNs();
  char detail[256];
  for (;;) {
    const CheckRequest req = CheckRequested();
    if (req == CheckRequest::kQuit) _exit(0);
    if (req != CheckRequest::kNone) {
      bool ok = true;
      for (size_t p = 0; p < pages && ok; ++p) {
        for (size_t k = 0; k < wpp && ok; ++k) {
          if (words[p * wpp + k] != WordOf(p, k, version[p])) {
            snprintf(detail, sizeof(detail), "page %zu word %zu differs (version %u)", p, k,
                     version[p]);
            ok = false;
          }
        }
      }
      if (ok)
        snprintf(detail, sizeof(detail), "demo_counter: %zu pages intact at tick %" PRIu64, pages,
                 tick);
      ReportCheck(req, ok, detail);
    }
    if (NowNs() < next_tick_ns) {
      SleepUntil(NowNs() + 20000000);  // 20 ms: stay responsive to check requests
      continue;
    }
    next_tick_ns += 1000000000ull;
    for (size_t i = 0; i < per_tick && pages > 0; ++i, next_page = (next_page + 1) % pages) {
      const uint32_t v = ++version[next_page];
      for (size_t k = 0; k < wpp; ++k) words[next_page * wpp + k] = WordOf(next_page, k, v);
    }
    uint64_t sum = 0;
    for (size_t i = 0; i < pages * wpp; ++i) sum = (sum ^ words[i]) * 0x100000001b3ull;
    ++tick;
    Say("tick %" PRIu64 " checksum 0x%016" PRIx64 " pages-rewritten %" PRIu64, tick, sum,
        tick * per_tick);
    if (ticks != 0 && tick >= ticks) _exit(0);
  }
}

}  // namespace
}  // namespace procmig::examples

int main(int argc, char** argv) { return procmig::examples::Main(argc, argv); }
