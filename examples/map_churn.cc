// map_churn: maps, unmaps, grows (mremap), shrinks and mprotects anonymous regions while it runs,
// so a migration sees its layout change between iterations.
//
// Up to --regions regions live at once. Word w of page j of a region holds
// Mix64(id, generation, j) + w: content is a function of (region id, generation, page), so a
// region that moved (mremap MAYMOVE), grew or shrank is still fully checkable, and a page that
// belongs to another region or an older generation is caught. Read-only regions (mprotect) are
// checked too; they are made writable again before any write. Each operation verifies the region
// it touches first; SIGUSR1/SIGUSR2 verify every live region and that /proc/self/maps shows each
// with its protection. Single-threaded.
#include <sys/mman.h>

#include <cinttypes>
#include <cstdint>
#include <vector>

#include "workload_common.h"

namespace procmig::examples {
namespace {

struct Region {
  uint8_t* addr = nullptr;
  size_t pages = 0;
  uint64_t gen = 0;
  bool read_only = false;
};

struct World {
  size_t page = 4096;
  size_t max_pages = 64;
  std::vector<Region> regions;  // index = region id; addr == nullptr: not mapped
  uint64_t ops = 0;
};

uint64_t PageBase(size_t id, uint64_t gen, size_t j) {
  return Mix64((static_cast<uint64_t>(id) << 48) ^ (gen << 20) ^ j);
}

void FillPages(const World& w, size_t id, const Region& r, size_t from) {
  for (size_t j = from; j < r.pages; ++j) {
    auto* p = reinterpret_cast<uint64_t*>(r.addr + j * w.page);
    const uint64_t base = PageBase(id, r.gen, j);
    for (size_t k = 0; k < w.page / 8; ++k) p[k] = base + k;
  }
}

bool VerifyRegion(const World& w, size_t id, const Region& r, char* why, size_t len) {
  for (size_t j = 0; j < r.pages; ++j) {
    const auto* p = reinterpret_cast<const uint64_t*>(r.addr + j * w.page);
    const uint64_t base = PageBase(id, r.gen, j);
    for (size_t k = 0; k < w.page / 8; ++k) {
      if (p[k] != base + k) {
        snprintf(why, len,
                 "region %zu (gen %" PRIu64
                 ", %zu pages at %p%s): page %zu word %zu is"
                 " %016" PRIx64 ", want %016" PRIx64,
                 id, r.gen, r.pages, static_cast<void*>(r.addr), r.read_only ? ", read-only" : "",
                 j, k, p[k], base + k);
        return false;
      }
    }
  }
  return true;
}

void Protect(Region& r, size_t page, bool read_only) {
  if (r.read_only == read_only) return;
  const int prot = read_only ? PROT_READ : PROT_READ | PROT_WRITE;
  if (mprotect(r.addr, r.pages * page, prot) != 0) FailNow("mprotect: %s", strerror(errno));
  r.read_only = read_only;
}

void OneOp(World& w, Rng& rng) {
  const size_t id = rng.Below(w.regions.size());
  Region& r = w.regions[id];
  char why[320];
  ++w.ops;
  if (r.addr == nullptr) {
    r.pages = 1 + rng.Below(w.max_pages);
    void* m =
        mmap(nullptr, r.pages * w.page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) FailNow("mmap: %s", strerror(errno));
    r.addr = static_cast<uint8_t*>(m);
    r.gen += 1;
    r.read_only = false;
    FillPages(w, id, r, 0);
    return;
  }
  if (!VerifyRegion(w, id, r, why, sizeof(why))) FailNow("%s", why);
  switch (rng.Below(6)) {
    case 0:  // unmap
      if (munmap(r.addr, r.pages * w.page) != 0) FailNow("munmap: %s", strerror(errno));
      r.addr = nullptr;
      break;
    case 1: {  // grow, in place when the kernel can, else moved
      const size_t more = 1 + rng.Below(w.max_pages);
      Protect(r, w.page, false);
      void* m = mremap(r.addr, r.pages * w.page, (r.pages + more) * w.page, MREMAP_MAYMOVE);
      if (m == MAP_FAILED) FailNow("mremap grow: %s", strerror(errno));
      r.addr = static_cast<uint8_t*>(m);
      const size_t old = r.pages;
      r.pages += more;
      FillPages(w, id, r, old);
      break;
    }
    case 2:  // shrink
      if (r.pages > 1) {
        const size_t keep = 1 + rng.Below(r.pages - 1);
        void* m = mremap(r.addr, r.pages * w.page, keep * w.page, 0);
        if (m == MAP_FAILED) FailNow("mremap shrink: %s", strerror(errno));
        r.pages = keep;
      }
      break;
    case 3:  // toggle read-only
      Protect(r, w.page, !r.read_only);
      break;
    default:  // new generation
      Protect(r, w.page, false);
      r.gen += 1;
      FillPages(w, id, r, 0);
      break;
  }
}

// Each live region must appear in /proc/self/maps inside one or more lines with its protection.
bool CheckMaps(const World& w, char* why, size_t len) {
  FILE* f = fopen("/proc/self/maps", "r");
  if (f == nullptr) return snprintf(why, len, "open /proc/self/maps failed"), false;
  struct Line {
    uintptr_t lo, hi;
    char perms[5];
  };
  std::vector<Line> lines;
  char buf[512];
  while (fgets(buf, sizeof(buf), f) != nullptr) {
    Line l{};
    if (sscanf(buf, "%" SCNxPTR "-%" SCNxPTR " %4s", &l.lo, &l.hi, l.perms) == 3)
      lines.push_back(l);
  }
  fclose(f);
  for (size_t id = 0; id < w.regions.size(); ++id) {
    const Region& r = w.regions[id];
    if (r.addr == nullptr) continue;
    const uintptr_t lo = reinterpret_cast<uintptr_t>(r.addr), hi = lo + r.pages * w.page;
    uintptr_t at = lo;
    for (const Line& l : lines) {
      if (l.lo <= at && at < l.hi) {
        const bool writable = l.perms[1] == 'w';
        if (writable == r.read_only) {
          return snprintf(why, len, "region %zu at %p: maps says %s", id,
                          static_cast<void*>(r.addr), l.perms),
                 false;
        }
        at = l.hi;
        if (at >= hi) break;
      }
    }
    if (at < hi) {
      return snprintf(why, len, "region %zu [%" PRIxPTR ", %" PRIxPTR ") not fully in maps", id, lo,
                      hi),
             false;
    }
  }
  return true;
}

bool CheckAll(const World& w, char* detail, size_t len) {
  size_t live = 0, pages = 0;
  for (size_t id = 0; id < w.regions.size(); ++id) {
    const Region& r = w.regions[id];
    if (r.addr == nullptr) continue;
    if (!VerifyRegion(w, id, r, detail, len)) return false;
    ++live;
    pages += r.pages;
  }
  if (!CheckMaps(w, detail, len)) return false;
  snprintf(detail, len,
           "map_churn: %zu live regions, %zu pages intact after %" PRIu64 " operations", live,
           pages, w.ops);
  return true;
}

int Main(int argc, char** argv) {
  InstallCheckHandlers();
  World w;
  w.page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  w.regions.resize(FlagU64(argc, argv, "--regions", 48));
  w.max_pages = FlagU64(argc, argv, "--max-pages", 64);
  const uint64_t ops_per_s = FlagU64(argc, argv, "--ops-per-sec", 300);
  if (w.regions.empty() || w.max_pages == 0) FailNow("bad configuration");
  Rng rng(Mix64(static_cast<uint64_t>(getpid())));
  for (size_t i = 0; i < w.regions.size() * 2; ++i) OneOp(w, rng);

  Say("READY pid=%d regions=%zu", getpid(), w.regions.size());
  Pacer pacer(static_cast<double>(ops_per_s));
  char detail[320];
  for (;;) {
    const CheckRequest req = CheckRequested();
    if (req == CheckRequest::kQuit) _exit(0);
    if (req != CheckRequest::kNone) ReportCheck(req, CheckAll(w, detail, sizeof(detail)), detail);
    OneOp(w, rng);
    pacer.Tick();
  }
}

}  // namespace
}  // namespace procmig::examples

int main(int argc, char** argv) { return procmig::examples::Main(argc, argv); }
