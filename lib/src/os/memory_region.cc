#include "os/memory_region.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace procmig {

std::string_view RegionKindName(RegionKind kind) {
  switch (kind) {
    case RegionKind::kAnonymous:
      return "anonymous";
    case RegionKind::kHeap:
      return "heap";
    case RegionKind::kStack:
      return "stack";
    case RegionKind::kFile:
      return "file";
    case RegionKind::kSpecial:
      return "special";
  }
  return "unknown";
}

bool MemoryRegion::IsRamBlockCandidate() const {
  if (shared) return false;
  if (!writable) {
    return (kind == RegionKind::kFile || kind == RegionKind::kAnonymous) && readable &&
           private_copies;
  }
  switch (kind) {
    case RegionKind::kAnonymous:
    case RegionKind::kHeap:
    case RegionKind::kStack:
    case RegionKind::kFile:
      return true;
    case RegionKind::kSpecial:
      // User memory that merely carries a name; everything else in brackets is the kernel's.
      return absl::StartsWith(path, "[anon:") || absl::StartsWith(path, "[stack:");
  }
  return false;
}

std::string MemoryRegion::ToString() const {
  std::string line = absl::StrFormat(
      "%x-%x %c%c%c%c %08x %02x:%02x %u", start, end, readable ? 'r' : '-', writable ? 'w' : '-',
      executable ? 'x' : '-', shared ? 's' : 'p', offset, dev_major, dev_minor, inode);
  if (!path.empty()) absl::StrAppend(&line, " ", path);
  if (deleted) absl::StrAppend(&line, " (deleted)");
  return line;
}

}  // namespace procmig
