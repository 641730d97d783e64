// dirty_bench: the cost of each dirty-tracking backend on a 1 GiB region.
//
// For every backend whose probe passes: the Sync cost with 100%, 6% and 0.1% of the pages written
// since the previous sync, and the program's cost of a first write to a protected page (ns per
// page: the write loop timed as a whole, divided by the pages written). Printed next to two floors
// measured in the same run: the write loop on untracked memory, and the bare PAGEMAP_SCAN ioctl
// loop (the ioctl pagemap-scan's Sync issues, with no bookkeeping) over a second region of the
// same size, written with the same pattern and scanned right after each pagemap-scan Sync so both
// see the same machine load. Target: pagemap-scan Sync within 1.2x of that floor. Medians.
//
//   dirty_bench [--mib N] [--reps N]     (defaults: 1024 MiB, 3 runs)
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

// The floor: the bare PAGEMAP_SCAN loop over its own region (registered by hand, WP_ASYNC),
// with the same arguments as pagemap-scan's Sync and no bookkeeping.
class ScanFloor {
 public:
  bool Init(char* base, size_t len, std::string& why) {
    absl::StatusOr<UserfaultFd> uffd =
        UserfaultFd::Open(UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED, true);
    if (!uffd.ok()) {
      why = std::string(uffd.status().message());
      return false;
    }
    uffd_ = std::move(*uffd);
    start_ = reinterpret_cast<uintptr_t>(base);
    len_ = len;
    if (absl::Status s = uffd_.RegisterWp(start_, len, false); !s.ok()) {
      why = std::string(s.message());
      return false;
    }
    uffd_.WriteProtect(start_, len, true);
    fd_ = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    vec_.reset(new page_region[kVec]);
    if (!Scan()) {
      why = std::string("PAGEMAP_SCAN: ") + strerror(errno);
      return false;
    }
    return true;
  }
  ~ScanFloor() {
    if (fd_ >= 0) close(fd_);
  }
  bool Scan() {
    pm_scan_arg arg{};
    arg.size = sizeof(arg);
    arg.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC;
    arg.start = start_;
    arg.end = start_ + len_;
    arg.vec = reinterpret_cast<uintptr_t>(vec_.get());
    arg.vec_len = kVec;
    arg.category_mask = PAGE_IS_WRITTEN;
    arg.return_mask = PAGE_IS_WRITTEN;
    for (;;) {
      if (ioctl(fd_, PAGEMAP_SCAN, &arg) < 0) return false;
      if (arg.walk_end >= arg.end) return true;
      arg.start = arg.walk_end;
    }
  }

 private:
  static constexpr size_t kVec = 4096;  // as PagemapScanTracker::kMaxRegions
  UserfaultFd uffd_;
  uintptr_t start_ = 0;
  size_t len_ = 0;
  int fd_ = -1;
  std::unique_ptr<page_region[]> vec_;
};

char* MapPopulated(size_t len) {
  void* mem = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    std::perror("mmap");
    std::exit(1);
  }
  memset(mem, 1, len);  // populated, as a running program's memory is
  return static_cast<char*>(mem);
}

}  // namespace
}  // namespace procmig

int main(int argc, char** argv) {
  using namespace procmig;
  size_t mib = 1024;
  int reps = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--mib") mib = std::strtoul(argv[i + 1], nullptr, 10);
    if (std::string(argv[i]) == "--reps") reps = std::atoi(argv[i + 1]);
  }
  const size_t page = BasePageSize();
  const size_t len = mib << 20;
  const size_t n_pages = len / page;
  // Region A is tracked by each backend in turn; region B is the floor's, scanned right after A
  // with the same pattern, so both see the same machine load.
  char* base = MapPopulated(len);
  char* floor_base = MapPopulated(len);
  const std::vector<Pattern> patterns = MakePatterns(n_pages);
  std::printf("dirty_bench: %zu MiB region (%zu pages of %zu B), medians of %d runs\n", mib,
              n_pages, page, reps);

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
  std::printf("floor: write loop on untracked memory: %.1f / %.1f / %.1f ns per page\n",
              bare_write_ns[0], bare_write_ns[1], bare_write_ns[2]);
  ScanFloor floor;
  std::string floor_why;
  const bool have_floor = floor.Init(floor_base, len, floor_why);
  if (!have_floor)
    std::printf("floor: bare PAGEMAP_SCAN loop unavailable: %s\n", floor_why.c_str());
  // ratio: median sync / median floor; min ratio: fastest sync / fastest floor (less sensitive
  // to other load on the machine).
  std::printf("\n%-13s %-5s %7s %10s %10s %7s %9s %13s %8s\n", "backend", "dirty", "pages",
              "sync ms", "floor ms", "ratio", "min ratio", "1st write ns", "reported");

  double floor_median[3] = {0, 0, 0};
  double floor_min[3] = {0, 0, 0};
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
      std::vector<double> sync_ms, floor_ms, write_ns;
      size_t reported = 0;
      for (int r = 0; r < reps; ++r) {
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
        // The floor is interleaved with pagemap-scan only (the target compares those two); the
        // other rows show it for scale, which halves the run time (faults dominate it).
        if (have_floor && kind == TrackerKind::kPagemapScan) {
          WritePattern(floor_base, page, patterns[i], static_cast<char>(r + 2));
          auto f0 = Clock::now();
          floor.Scan();
          floor_ms.push_back(Ms(Clock::now() - f0));
        }
      }
      const double ms = Median(sync_ms);
      if (kind == TrackerKind::kPagemapScan) {
        floor_median[i] = Median(floor_ms);
        floor_min[i] = floor_ms.empty() ? 0 : *std::min_element(floor_ms.begin(), floor_ms.end());
      }
      const double min_ms = sync_ms.empty() ? 0 : *std::min_element(sync_ms.begin(), sync_ms.end());
      const double fms = floor_median[i];
      char ratio[32] = "-";
      if (have_floor && fms > 0) std::snprintf(ratio, sizeof(ratio), "%.2fx", ms / fms);
      char min_ratio[32] = "-";
      if (have_floor && floor_min[i] > 0) {
        std::snprintf(min_ratio, sizeof(min_ratio), "%.2fx", min_ms / floor_min[i]);
      }
      std::printf("%-13s %-5s %7zu %10.3f %10.3f %7s %9s %13.0f %8zu\n", name.c_str(),
                  patterns[i].name, patterns[i].pages.size(), ms, fms, ratio, min_ratio,
                  Median(write_ns), reported);
      std::fflush(stdout);
    }
    (void)tracker->Stop();
  }
  munmap(base, len);
  munmap(floor_base, len);
  return 0;
}
