#include "dirty/layout_check.h"

#include <cerrno>

#include "absl/strings/str_format.h"
#include "base/status_macros.h"

namespace procmig {

namespace {

constexpr size_t kMapsBufferBytes = 256u << 10;
constexpr int kArmRetries = 3;

}  // namespace

bool IsLayoutRefusal(int err) {
  return err == EINVAL || err == ENOMEM || err == ENOENT || err == EFAULT;
}

void LayoutCheck::GrowBufferIfNeeded() {
  if (maps_.capacity() == 0) {
    maps_.Reserve(kMapsBufferBytes);
  } else if (maps_.truncated()) {
    maps_.Reserve(maps_.capacity() * 2);
  }
}

bool LayoutCheck::LinesUp(const RamBlock& b, bool fresh) {
  if (!read_ || fresh) {
    (void)maps_.Read();
    read_ = true;
  }
  return maps_.CoversExactly(b.start, b.end());
}

absl::StatusOr<bool> LayoutCheck::Arm(const RamBlock& b, bool check, absl::FunctionRef<int()> arm,
                                      TrackerStats& stats) {
  if (check && !LinesUp(b, /*fresh=*/false)) {
    ++stats.stale_blocks;
    return false;
  }
  int err = arm();
  // A change the gate did not see (glibc's own mmap/munmap, which may go on meanwhile) or a
  // stale snapshot: look again. Refused while the range still lines up, every time: an error.
  for (int retry = 0; err != 0 && IsLayoutRefusal(err) && retry < kArmRetries; ++retry) {
    ++stats.arm_retries;
    if (!LinesUp(b, /*fresh=*/true)) {
      ++stats.stale_blocks;
      return false;
    }
    err = arm();
  }
  if (err != 0) {
    return ErrnoStatus(absl::StatusCode::kFailedPrecondition,
                       absl::StrFormat("arm block %u (%s): register and write-protect uffd range "
                                       "0x%x+0x%x",
                                       b.id, b.name, b.start, b.length),
                       err);
  }
  return true;
}

}  // namespace procmig
