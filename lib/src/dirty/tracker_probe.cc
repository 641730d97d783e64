#include "dirty/tracker_probe.h"

#include <sys/mman.h>
#include <sys/rseq.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "dirty/block_list.h"
#include "dirty/full_tracker.h"
#include "dirty/mprotect_tracker.h"
#include "dirty/pagemap_scan_tracker.h"
#include "dirty/soft_dirty_tracker.h"
#include "dirty/uffd_wp_tracker.h"

namespace procmig {
namespace {

constexpr size_t kProbePages = 16;
constexpr size_t kFirstPage = 5;
constexpr size_t kSecondPage = 11;
constexpr uint32_t kProbeBlockId = 0xfffffff0u;

std::vector<size_t> ReportedPages(const DirtySet& set) {
  std::vector<size_t> pages;
  set.ForEachRun([&pages](const DirtyBlock&, PageRun run) {
    for (size_t p = run.first; p < run.first + run.count; ++p) pages.push_back(p);
  });
  return pages;
}

std::string Describe(const std::vector<size_t>& pages) {
  if (pages.empty()) return "no page";
  if (pages.size() > 8) return absl::StrCat(pages.size(), " pages");
  return absl::StrCat(pages.size() == 1 ? "page " : "pages ", absl::StrJoin(pages, ","));
}

// One round: write `page` (or nothing for full), sync, compare. Empty string = as expected.
std::string Round(DirtyTracker& tracker, char* base, size_t page_size, size_t page) {
  static_cast<volatile char*>(base)[page * page_size + 7] = static_cast<char>(page);
  absl::StatusOr<const DirtySet*> set = tracker.Sync();
  if (!set.ok()) return std::string(set.status().message());
  std::vector<size_t> got = ReportedPages(**set);
  std::vector<size_t> want;
  if (tracker.kind() == TrackerKind::kFull) {
    for (size_t p = 0; p < kProbePages; ++p) want.push_back(p);
  } else {
    want.push_back(page);
  }
  if (got == want) return "";
  std::string why = absl::StrCat("wrote page ", page, " after a reset, sync reported ",
                                 Describe(got), " (expected ", Describe(want), ")");
  if (tracker.kind() == TrackerKind::kSoftDirty && got.empty()) {
    absl::StrAppend(&why,
                    ": the kernel accepts clear_refs but does not set soft-dirty bits "
                    "(CONFIG_MEM_SOFT_DIRTY off?)");
  }
  return why;
}

}  // namespace

std::unique_ptr<DirtyTracker> MakeTracker(TrackerKind kind, const TrackerConfig& config) {
  switch (kind) {
    case TrackerKind::kPagemapScan:
      return std::make_unique<PagemapScanTracker>(config.layout_gate);
    case TrackerKind::kSoftDirty:
      return std::make_unique<SoftDirtyTracker>(config.quiescer, config.layout_gate);
    case TrackerKind::kUffdWp:
      return std::make_unique<UffdWpTracker>(config.layout_gate);
    case TrackerKind::kMprotect:
      return std::make_unique<MprotectTracker>(config.layout_gate);
    case TrackerKind::kFull:
      break;
  }
  return std::make_unique<FullTracker>();
}

TrackerProbeResult ProbeTracker(TrackerKind kind, const TrackerConfig& config) {
  TrackerProbeResult result{kind, false, ""};
  if (kind == TrackerKind::kMprotect && config.whole_process) {
    // Seen here (mem_workload with a writer thread, --tracker mprotect): with rseq the thread
    // whose rseq area was protected died with SIGSEGV SI_KERNEL; with rseq off
    // (GLIBC_TUNABLES=glibc.pthread.rseq=0) the writer thread died on a write fault in a malloc
    // arena's heap. Until both are understood and tested, no whole program is tracked this way.
    result.reason = __rseq_size > 0
                        ? "not safe for a whole program: the kernel writes each thread's rseq "
                          "area itself, and write-protected it kills the thread"
                        : "not safe for a whole program yet: a thread writing to a protected "
                          "malloc heap was seen killed instead of tracked";
    return result;
  }
  if (kind == TrackerKind::kUffdWp && config.whole_process) {
    // Seen here (`checkpoint --tracker uffd-wp` of pattern_writer): registration of the
    // program's written .data failed with EINVAL. And were every block armed, the handler thread
    // would write-fault on its own stack, its TLS and the tracker's state (all in tracked memory)
    // and wait for itself.
    result.reason =
        "not safe for a whole program: synchronous userfaultfd write-protect covers anonymous "
        "memory only (a program's written .data is a private file mapping: EINVAL), and the "
        "tracker's fault handler thread would wait on its own writes to tracked memory";
    return result;
  }
  const size_t page_size = BasePageSize();
  const size_t len = kProbePages * page_size;
  void* mem = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    result.reason = absl::StrCat("map probe region: ", strerror(errno));
    return result;
  }
  char* base = static_cast<char*>(mem);
  // Present pages: a tracker that reports only first touches would fail here, as it should.
  memset(base, 0x5a, len);
  RamBlock block;
  block.id = kProbeBlockId;
  block.start = reinterpret_cast<uintptr_t>(base);
  block.length = len;
  block.page_size = page_size;
  block.name = "probe";
  block.prot = PROT_READ | PROT_WRITE;

  // The probe's own scratch mapping needs no gate, and must not take the discard hook.
  TrackerConfig probe_config = config;
  probe_config.layout_gate = nullptr;
  std::unique_ptr<DirtyTracker> tracker = MakeTracker(kind, probe_config);
  absl::Status s = tracker->Start({&block, 1});
  if (!s.ok()) {
    result.reason = std::string(s.message());
  } else if (absl::StatusOr<const DirtySet*> reset = tracker->Sync(); !reset.ok()) {
    result.reason = std::string(reset.status().message());
  } else if (std::string why = Round(*tracker, base, page_size, kFirstPage); !why.empty()) {
    result.reason = why;
  } else if (why = Round(*tracker, base, page_size, kSecondPage); !why.empty()) {
    result.reason = absl::StrCat("second round: ", why);
  } else {
    result.available = true;
    result.reason =
        kind == TrackerKind::kFull
            ? "reports every page at every sync (no tracking)"
            : absl::StrCat("wrote page ", kFirstPage, " then page ", kSecondPage, " of ",
                           kProbePages, " after a reset: each sync reported exactly that page");
  }
  absl::Status stop = tracker->Stop();
  if (result.available && !stop.ok()) {
    result.available = false;
    result.reason = std::string(stop.message());
  }
  munmap(mem, len);
  return result;
}

std::vector<TrackerProbeResult> ProbeAllTrackers(const TrackerConfig& config) {
  std::vector<TrackerProbeResult> out;
  for (TrackerKind k : kAllTrackerKinds) out.push_back(ProbeTracker(k, config));
  return out;
}

absl::StatusOr<std::unique_ptr<DirtyTracker>> SelectTracker(
    const TrackerConfig& config, std::vector<TrackerProbeResult>* probes) {
  if (config.forced.has_value()) {
    TrackerProbeResult r = ProbeTracker(*config.forced, config);
    if (probes != nullptr) probes->push_back(r);
    if (!r.available) {
      return absl::FailedPreconditionError(absl::StrCat("select dirty tracker: forced backend ",
                                                        std::string(TrackerKindName(r.kind)),
                                                        " failed its probe: ", r.reason));
    }
    return MakeTracker(r.kind, config);
  }
  for (TrackerKind k : kAllTrackerKinds) {
    TrackerProbeResult r = ProbeTracker(k, config);
    if (probes != nullptr) probes->push_back(r);
    if (r.available) return MakeTracker(k, config);
  }
  // Unreachable in practice: `full` always passes.
  return absl::InternalError("select dirty tracker: no backend passed its probe, not even full");
}

}  // namespace procmig
