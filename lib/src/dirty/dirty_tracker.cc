#include "dirty/dirty_tracker.h"

#include "absl/strings/str_cat.h"

namespace procmig {

std::string_view TrackerKindName(TrackerKind kind) {
  switch (kind) {
    case TrackerKind::kPagemapScan:
      return "pagemap-scan";
    case TrackerKind::kSoftDirty:
      return "soft-dirty";
    case TrackerKind::kUffdWp:
      return "uffd-wp";
    case TrackerKind::kMprotect:
      return "mprotect";
    case TrackerKind::kFull:
      return "full";
  }
  return "unknown";
}

absl::StatusOr<TrackerKind> ParseTrackerKind(std::string_view name) {
  for (TrackerKind k : kAllTrackerKinds) {
    if (TrackerKindName(k) == name) return k;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("parse dirty tracker \"", std::string(name),
                   "\": expected pagemap-scan, soft-dirty, uffd-wp, mprotect or full"));
}

absl::StatusOr<bool> DirtyTracker::StartUnprotected(std::span<const RamBlock> blocks) {
  absl::Status s = Start(blocks);
  if (!s.ok()) return s;
  return false;
}

int DirtyTracker::ProtectRange(uintptr_t, uintptr_t, size_t) { return 0; }

absl::Status DirtyTracker::PrepareKernelWrite(uintptr_t, size_t) { return absl::OkStatus(); }

void DirtyTracker::FinishKernelWrite(uintptr_t, size_t) {}

void DirtyTracker::DiscardToTracker(void* self, uintptr_t addr, size_t len) {
  static_cast<DirtyTracker*>(self)->MarkDiscarded(addr, len);
}

}  // namespace procmig
