// UserfaultFd: an owned userfaultfd with the handshake and the range ioctls the two uffd-based
// trackers (pagemap-scan, uffd-wp) need. It is the only includer of <linux/userfaultfd.h> in the
// dirty module (through os/kernel_compat.h), per STYLE.md.
//
// Opening tries, in order, userfaultfd(2) without UFFD_USER_MODE_ONLY (needs CAP_SYS_PTRACE or
// vm.unprivileged_userfaultfd=1), /dev/userfaultfd (needs access to the node), and, only when the
// caller accepts it, userfaultfd(2) with UFFD_USER_MODE_ONLY. A user-mode-only descriptor does
// not see faults the kernel takes inside a system call (they fail with EFAULT), which is harmless
// for WP_ASYNC (the kernel resolves those itself) but not for synchronous write-protect.
//
// Threads: the ioctls may be issued from any thread; the object itself has one owner.
#ifndef PROCMIG_DIRTY_USERFAULT_FD_H_
#define PROCMIG_DIRTY_USERFAULT_FD_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace procmig {

class UserfaultFd {
 public:
  // Opens a non-blocking, close-on-exec userfaultfd and runs the UFFDIO_API handshake requesting
  // `features`. FailedPrecondition naming the missing feature bits when the kernel lacks them.
  static absl::StatusOr<UserfaultFd> Open(uint64_t features, bool allow_user_mode_only);

  UserfaultFd() = default;
  UserfaultFd(UserfaultFd&& other) noexcept;
  UserfaultFd& operator=(UserfaultFd&& other) noexcept;
  UserfaultFd(const UserfaultFd&) = delete;
  UserfaultFd& operator=(const UserfaultFd&) = delete;
  ~UserfaultFd();

  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Feature bits the kernel reported in the handshake.
  uint64_t features() const { return features_; }
  bool user_mode_only() const { return user_mode_only_; }

  // UFFDIO_REGISTER of [start, start + len) for write-protect faults, plus missing faults when
  // `missing`.
  absl::Status RegisterWp(uintptr_t start, size_t len, bool missing) const;
  // The same without building a Status (no allocation): the raw errno, 0 on success, or
  // EOPNOTSUPP when UFFDIO_WRITEPROTECT is not offered for the range.
  int RegisterWpRaw(uintptr_t start, size_t len, bool missing) const;
  absl::Status Unregister(uintptr_t start, size_t len) const;
  // UFFDIO_WRITEPROTECT: arm (protect=true) or resolve (false, which wakes the faulting threads).
  // Returns the raw errno (0 on success) so that the fault handler can act on it without
  // building a Status; use WriteProtectStatus elsewhere.
  int WriteProtect(uintptr_t start, size_t len, bool protect) const;
  absl::Status WriteProtectStatus(uintptr_t start, size_t len, bool protect) const;
  // WriteProtect for a range that may span several VMAs: kernels before 6.2 refuse such a range
  // with ENOENT, so on ENOENT the range is halved (at page boundaries) and each half retried.
  // No allocation; recursion depth at most log2(len / page_size). Raw errno as above.
  int WriteProtectAcrossVmas(uintptr_t start, size_t len, bool protect, size_t page_size) const;
  // UFFDIO_ZEROPAGE (resolves a missing fault with the zero page); raw errno as above.
  int ZeroPage(uintptr_t start, size_t len) const;
  // UFFDIO_WAKE; raw errno.
  int Wake(uintptr_t start, size_t len) const;

  void Close();

 private:
  UserfaultFd(int fd, uint64_t features, bool user_mode_only)
      : fd_(fd), features_(features), user_mode_only_(user_mode_only) {}

  int fd_ = -1;
  uint64_t features_ = 0;
  bool user_mode_only_ = false;
};

// "WP_ASYNC|WP_UNPOPULATED" for a mask of UFFD_FEATURE_* bits (unknown bits as hex).
std::string UffdFeatureNames(uint64_t features);

}  // namespace procmig

#endif  // PROCMIG_DIRTY_USERFAULT_FD_H_
