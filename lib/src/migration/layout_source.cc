#include "migration/layout_source.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "base/crc32c.h"
#include "base/status_macros.h"
#include "os/maps_parser.h"

namespace procmig {

namespace {

// Reads the whole file into buf with raw system calls; returns the length or -1.
ssize_t ReadAll(const char* path, char* buf, size_t cap) {
  int fd = static_cast<int>(syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC));
  if (fd < 0) return -1;
  size_t n = 0;
  while (n < cap) {
    ssize_t r = syscall(SYS_read, fd, buf + n, cap - n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    n += static_cast<size_t>(r);
  }
  syscall(SYS_close, fd);
  return n >= cap ? -1 : static_cast<ssize_t>(n);
}

// Sets private_copies on read-only private file mappings that hold anonymous (copied-on-write)
// pages: pagemap bit 63 (present) without bit 61 (file page). Such a mapping differs from its
// file (a RELRO segment after relocation) and has to be migrated like written memory. The same
// for read-only private anonymous mappings with present pages: a restored process's RELRO
// segments are anonymous (the restorer moved the copies in), and so is any memory a program
// filled and then made read-only. An unreadable pagemap leaves every flag false.
void MarkPrivateCopies(std::vector<MemoryRegion>& regions) {
  int fd = static_cast<int>(syscall(SYS_openat, AT_FDCWD, "/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  if (fd < 0) return;
  constexpr uint64_t kPresent = 1ull << 63, kFilePage = 1ull << 61;
  constexpr size_t kBatch = 512;
  uint64_t entries[kBatch];
  for (MemoryRegion& r : regions) {
    if (r.shared || r.writable || !r.readable ||
        (r.kind != RegionKind::kFile && r.kind != RegionKind::kAnonymous)) {
      continue;
    }
    const uint64_t pages = r.size() / 4096;
    for (uint64_t first = 0; first < pages && !r.private_copies; first += kBatch) {
      const uint64_t n = std::min<uint64_t>(kBatch, pages - first);
      ssize_t got = pread(fd, entries, n * 8, static_cast<off_t>((r.start / 4096 + first) * 8));
      if (got <= 0) break;
      for (ssize_t i = 0; i < got / 8; ++i) {
        if ((entries[i] & (kPresent | kFilePage)) == kPresent) {
          r.private_copies = true;
          break;
        }
      }
    }
  }
  close(fd);
}

}  // namespace

ProcMapsLayout::ProcMapsLayout(size_t buffer_bytes)
    : buf_(new char[buffer_bytes]), cap_(buffer_bytes) {}

absl::StatusOr<Layout> ProcMapsLayout::Read() {
  // /proc/self/maps comes in several read()s, with the layout free to change between them: a
  // mapping grown or moved meanwhile can appear twice, overlapping itself. Such a torn read is
  // read again.
  constexpr int kAttempts = 8;
  for (int attempt = 1;; ++attempt) {
    ssize_t n = ReadAll("/proc/self/maps", buf_.get(), cap_);
    if (n < 0) {
      return absl::ResourceExhaustedError(
          "read /proc/self/maps: unreadable or larger than the layout buffer");
    }
    Layout l;
    l.fingerprint = crc32c::Value(buf_.get(), static_cast<size_t>(n));
    ASSIGN_OR_RETURN(l.regions,
                     MapsParser::Parse(std::string(buf_.get(), static_cast<size_t>(n))));
    bool torn = false;
    for (size_t i = 1; i < l.regions.size() && !torn; ++i) {
      torn = l.regions[i].start < l.regions[i - 1].end;
    }
    if (!torn) {
      MarkPrivateCopies(l.regions);
      return l;
    }
    if (attempt == kAttempts) {
      return absl::UnavailableError(absl::StrCat(
          "read /proc/self/maps: entries overlapped (the layout changed during the read) ",
          kAttempts, " times in a row"));
    }
  }
}

uint32_t ProcMapsLayout::Fingerprint() {
  ssize_t n = ReadAll("/proc/self/maps", buf_.get(), cap_);
  if (n < 0) return 0xffffffffu;
  return crc32c::Value(buf_.get(), static_cast<size_t>(n));
}

}  // namespace procmig
