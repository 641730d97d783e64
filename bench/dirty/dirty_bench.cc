// dirty_bench: the cost of each dirty-tracking backend on a 1 GiB region.
//
// For every backend whose probe passes: the Sync cost with 100%, 6% and 0.1% of the pages written
// since the previous sync, and the program's cost of a first write to a protected page (ns per
// page, the write loop timed as a whole and divided by the pages written). Printed next to two
// floors measured in the same run on the same region: the bare PAGEMAP_SCAN ioctl loop (the same
// ioctl pagemap-scan's Sync issues, with no bookkeeping: the target is Sync within 1.2x of it) and
// the same write loop on untracked memory. Medians of several runs.
//
//   dirty_bench [--mib N] [--reps N]
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "dirty/block_list.h"
#include "dirty/tracker_probe.h"
#include "dirty/userfault_fd.h"
#include "os/kernel_compat.h"

namespace procmig {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct Pattern {
  const char* name;
  std::vector<size_t> pages;  // in increasing order
};

// 100%, 6% and 0.1% of the pages, spread pseudo-randomly (fixed seed).
std::vector<Pattern> MakePatterns(size_t n_pages) {
  std::vector<Pattern> out = {{"100%", {}}, {"6%", {}}, {"0.1%", {}}};
  uint64_t x = 88172645463325252ull;
  for (size_t p = 0; p < n_pages; ++p) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    const uint64_t r = x % 100000;
    out[0].pages.push_back(p);
    if (r < 6000) out[1].pages.push_back(p);
    if (r < 100) out[2].pages.push_back(p);
  }
  return out;
}

// Writes one byte per page of the pattern; returns the elapsed time.
Clock::duration WritePattern(char* base, size_t page, const Pattern& pat, char value) {
  auto t0 = Clock::now();
  for (size_t p : pat.pages) static_cast<volatile char*>(base)[p * page + 8] = value;
  return Clock::now() - t0;
}

// The floor: the bare PAGEMAP_SCAN loop, measured on the same region registered by hand.
struct ScanFloor {
  std::vector<double> ms[3];
};

bool MeasureScanFloor(char* base, size_t len, size_t page, const std::vector<Pattern>& patterns,
                      int reps, ScanFloor& out, std::string& why) {
  absl::StatusOr<UserfaultFd> uffd =
      UserfaultFd::Open(UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED, true);
  if (!uffd.ok()) {
    why = std::string(uffd.status().message());
    return false;
  }
  const auto start = reinterpret_cast<uintptr_t>(base);
  if (absl::Status s = uffd->RegisterWp(start, len, false); !s.ok()) {
    why = std::string(s.message());
    return false;
  }
  uffd->WriteProtect(start, len, true);
  int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  constexpr size_t kVec = 4096;
  std::unique_ptr<page_region[]> vec(new page_region[kVec]);
  auto scan = [&] {
    pm_scan_arg arg{};
    arg.size = sizeof(arg);
    arg.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC;
    arg.start = start;
    arg.end = start + len;
    arg.vec = reinterpret_cast<uintptr_t>(vec.get());
    arg.vec_len = kVec;
    arg.category_mask = PAGE_IS_WRITTEN;
    arg.return_mask = PAGE_IS_WRITTEN;
    for (;;) {
      if (ioctl(fd, PAGEMAP_SCAN, &arg) < 0) return false;
      if (arg.walk_end >= arg.end) return true;
      arg.start = arg.walk_end;
    }
  };
  bool ok = scan();
  for (size_t i = 0; i < patterns.size() && ok; ++i) {
    for (int r = 0; r < reps && ok; ++r) {
      WritePattern(base, page, patterns[i], static_cast<char>(r));
      auto t0 = Clock::now();
      ok = scan();
      out.ms[i].push_back(Ms(Clock::now() - t0));
    }
  }
  if (!ok) why = std::string("PAGEMAP_SCAN: ") + strerror(errno);
  close(fd);
  return ok;
}

}  // namespace
}  // namespace procmig

int main(int argc, char** argv) {
  using namespace procmig;
  size_t mib = 1024;
  int reps = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--mib") mib = std::strtoul(argv[i + 1], nullptr, 10);
    if (std::string(argv[i]) == "--reps") reps = std::atoi(argv[i + 1]);
  }
  const size_t page = BasePageSize();
  const size_t len = mib << 20;
  const size_t n_pages = len / page;
  void* mem = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    std::perror("mmap");
    return 1;
  }
  char* base = static_cast<char*>(mem);
  memset(base, 1, len);  // populated, as a running program's memory is
  const std::vector<Pattern> patterns = MakePatterns(n_pages);
  std::printf("dirty_bench: %zu MiB region (%zu pages of %zu B), medians of %d runs\n", mib,
              n_pages, page, reps);

  // Floor 1: the same write loops on untracked memory.
  double bare_write_ns[3];
  for (size_t i = 0; i < 3; ++i) {
    std::vector<double> ns;
    for (int r = 0; r < reps; ++r) {
      ns.push_back(std::chrono::duration<double, std::nano>(
                       WritePattern(base, page, patterns[i], static_cast<char>(r)))
                       .count() /
                   static_cast<double>(patterns[i].pages.size()));
    }
    bare_write_ns[i] = Median(ns);
  }
  // Floor 2: the bare PAGEMAP_SCAN loop (its userfaultfd is closed when the function returns).
  ScanFloor floor;
  std::string floor_why;
  const bool have_floor = MeasureScanFloor(base, len, page, patterns, reps, floor, floor_why);
  double floor_ms[3] = {0, 0, 0};
  for (int i = 0; i < 3; ++i) floor_ms[i] = Median(floor.ms[i]);
  if (have_floor) {
    std::printf("floor: bare PAGEMAP_SCAN loop: %.2f ms (100%%), %.2f ms (6%%), %.2f ms (0.1%%)\n",
                floor_ms[0], floor_ms[1], floor_ms[2]);
  } else {
    std::printf("floor: bare PAGEMAP_SCAN loop unavailable: %s\n", floor_why.c_str());
  }
  std::printf("floor: write loop on untracked memory: %.1f / %.1f / %.1f ns per page\n\n",
              bare_write_ns[0], bare_write_ns[1], bare_write_ns[2]);
  std::printf("%-13s %-6s %9s %12s %10s %14s %9s\n", "backend", "dirty", "pages", "sync ms",
              "vs floor", "1st write ns", "reported");

  for (TrackerKind kind : kAllTrackerKinds) {
    const std::string name(TrackerKindName(kind));
    TrackerProbeResult probe = ProbeTracker(kind, TrackerConfig{});
    if (!probe.available) {
      std::printf("%-13s unavailable: %s\n", name.c_str(), probe.reason.c_str());
      continue;
    }
    RamBlock block;
    block.id = 1;
    block.start = reinterpret_cast<uintptr_t>(base);
    block.length = len;
    block.page_size = page;
    block.name = "bench";
    block.prot = PROT_READ | PROT_WRITE;
    std::unique_ptr<DirtyTracker> tracker = MakeTracker(kind, TrackerConfig{});
    if (absl::Status s = tracker->Start({&block, 1}); !s.ok()) {
      std::printf("%-13s start failed: %s\n", name.c_str(), s.ToString().c_str());
      continue;
    }
    (void)tracker->Sync();
    for (size_t i = 0; i < 3; ++i) {
      std::vector<double> sync_ms, write_ns;
      size_t reported = 0;
      const int runs = (i == 0 && (kind == TrackerKind::kUffdWp)) ? std::min(reps, 3) : reps;
      for (int r = 0; r < runs; ++r) {
        Clock::duration w = WritePattern(base, page, patterns[i], static_cast<char>(r + 2));
        auto t0 = Clock::now();
        absl::StatusOr<const DirtySet*> set = tracker->Sync();
        sync_ms.push_back(Ms(Clock::now() - t0));
        if (!set.ok()) {
          std::printf("%-13s sync failed: %s\n", name.c_str(), set.status().ToString().c_str());
          break;
        }
        reported = (*set)->DirtyPageCount();
        write_ns.push_back(std::chrono::duration<double, std::nano>(w).count() /
                           static_cast<double>(patterns[i].pages.size()));
      }
      const double ms = Median(sync_ms);
      char ratio[32] = "";
      if (have_floor && floor_ms[i] > 0)
        std::snprintf(ratio, sizeof(ratio), "%.2fx", ms / floor_ms[i]);
      std::printf("%-13s %-6s %9zu %12.2f %10s %14.1f %9zu\n", name.c_str(), patterns[i].name,
                  patterns[i].pages.size(), ms, ratio, Median(write_ns), reported);
      std::fflush(stdout);
    }
    (void)tracker->Stop();
  }
  munmap(mem, len);
  return 0;
}
