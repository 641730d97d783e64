#include "os/resident_pages.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace procmig {

bool SwapConfigured() {
  const int fd =
      static_cast<int>(syscall(SYS_openat, AT_FDCWD, "/proc/swaps", O_RDONLY | O_CLOEXEC));
  if (fd < 0) return true;
  // The header line, then one line per swap area: any second line means swap.
  char buf[512];
  size_t lines = 0;
  bool configured = true;
  for (;;) {
    const ssize_t n = syscall(SYS_read, fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;  // unreadable: assume swap
    if (n == 0) {
      configured = false;
      break;
    }
    lines += static_cast<size_t>(std::count(buf, buf + n, '\n'));
    if (lines >= 2) break;
  }
  syscall(SYS_close, fd);
  return configured;
}

absl::Status ForEachResidency(uintptr_t start, uint64_t pages,
                              absl::FunctionRef<absl::Status(uint64_t, uint64_t, bool)> fn) {
  const size_t page_size = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  constexpr uint64_t kSlice = 8192;  // pages per mincore call (32 MiB of 4 KiB pages)
  unsigned char vec[kSlice];
  uint64_t run_first = 0;
  bool run_resident = false;
  bool open = false;
  for (uint64_t done = 0; done < pages;) {
    const uint64_t n = std::min(kSlice, pages - done);
    if (syscall(SYS_mincore, start + done * page_size, n * page_size, vec) != 0) {
      const int err = errno;
      if (open) RETURN_IF_ERROR(fn(run_first, done - run_first, run_resident));
      // ENOMEM: some of the range is not mapped (any more).
      return ErrnoStatus(
          err == ENOMEM ? absl::StatusCode::kNotFound : absl::StatusCode::kInternal,
          absl::StrCat("mincore of pages ", done, "..", done + n - 1, " at 0x", absl::Hex(start)),
          err);
    }
    for (uint64_t i = 0; i < n; ++i) {
      const bool resident = (vec[i] & 1) != 0;
      if (open && resident == run_resident) continue;
      if (open) RETURN_IF_ERROR(fn(run_first, done + i - run_first, run_resident));
      run_first = done + i;
      run_resident = resident;
      open = true;
    }
    done += n;
  }
  if (open) RETURN_IF_ERROR(fn(run_first, pages - run_first, run_resident));
  return absl::OkStatus();
}

}  // namespace procmig
