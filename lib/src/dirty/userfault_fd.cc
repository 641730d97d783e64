#include "dirty/userfault_fd.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "os/kernel_compat.h"

namespace procmig {
namespace {

struct FeatureName {
  uint64_t bit;
  const char* name;
};
constexpr FeatureName kFeatureNames[] = {
    {UFFD_FEATURE_PAGEFAULT_FLAG_WP, "PAGEFAULT_FLAG_WP"},
    {UFFD_FEATURE_EVENT_FORK, "EVENT_FORK"},
    {UFFD_FEATURE_EVENT_REMAP, "EVENT_REMAP"},
    {UFFD_FEATURE_EVENT_REMOVE, "EVENT_REMOVE"},
    {UFFD_FEATURE_MISSING_HUGETLBFS, "MISSING_HUGETLBFS"},
    {UFFD_FEATURE_MISSING_SHMEM, "MISSING_SHMEM"},
    {UFFD_FEATURE_EVENT_UNMAP, "EVENT_UNMAP"},
    {UFFD_FEATURE_SIGBUS, "SIGBUS"},
    {UFFD_FEATURE_THREAD_ID, "THREAD_ID"},
    {UFFD_FEATURE_MINOR_HUGETLBFS, "MINOR_HUGETLBFS"},
    {UFFD_FEATURE_MINOR_SHMEM, "MINOR_SHMEM"},
    {UFFD_FEATURE_EXACT_ADDRESS, "EXACT_ADDRESS"},
    {UFFD_FEATURE_WP_HUGETLBFS_SHMEM, "WP_HUGETLBFS_SHMEM"},
    {UFFD_FEATURE_WP_UNPOPULATED, "WP_UNPOPULATED"},
    {UFFD_FEATURE_POISON, "POISON"},
    {UFFD_FEATURE_WP_ASYNC, "WP_ASYNC"},
    {UFFD_FEATURE_MOVE, "MOVE"},
};

// Opens a raw descriptor, most capable way first. Sets *user_mode_only accordingly.
absl::StatusOr<int> OpenRaw(bool allow_user_mode_only, bool* user_mode_only) {
  const int flags = O_CLOEXEC | O_NONBLOCK;
  *user_mode_only = false;
  int fd = static_cast<int>(syscall(SYS_userfaultfd, flags));
  if (fd >= 0) return fd;
  const int first_err = errno;
  if (first_err == ENOSYS) return ErrnoStatus("open userfaultfd", ENOSYS);
  int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
  if (dev >= 0) {
    fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
    int err = errno;
    close(dev);
    if (fd >= 0) return fd;
    errno = err;
  }
  if (allow_user_mode_only) {
    fd = static_cast<int>(syscall(SYS_userfaultfd, flags | UFFD_USER_MODE_ONLY));
    if (fd >= 0) {
      *user_mode_only = true;
      return fd;
    }
  }
  return ErrnoStatus(absl::StatusCode::kFailedPrecondition,
                     "open userfaultfd (needs CAP_SYS_PTRACE, vm.unprivileged_userfaultfd=1 or "
                     "access to /dev/userfaultfd)",
                     first_err);
}

int RangeIoctl(int fd, unsigned long request, uintptr_t start, size_t len, uint64_t mode) {
  int rc;
  if (request == UFFDIO_WRITEPROTECT) {
    uffdio_writeprotect wp{};
    wp.range.start = start;
    wp.range.len = len;
    wp.mode = mode;
    rc = ioctl(fd, request, &wp);
  } else if (request == UFFDIO_ZEROPAGE) {
    uffdio_zeropage zp{};
    zp.range.start = start;
    zp.range.len = len;
    zp.mode = mode;
    rc = ioctl(fd, request, &zp);
  } else {
    uffdio_range r{start, len};
    rc = ioctl(fd, request, &r);
  }
  return rc == 0 ? 0 : errno;
}

}  // namespace

std::string UffdFeatureNames(uint64_t features) {
  std::string out;
  for (const FeatureName& f : kFeatureNames) {
    if ((features & f.bit) == 0) continue;
    absl::StrAppend(&out, out.empty() ? "" : "|", f.name);
    features &= ~f.bit;
  }
  if (features != 0)
    absl::StrAppend(&out, out.empty() ? "" : "|", absl::StrFormat("0x%x", features));
  return out.empty() ? "none" : out;
}

absl::StatusOr<UserfaultFd> UserfaultFd::Open(uint64_t features, bool allow_user_mode_only) {
  bool user_mode_only = false;
  ASSIGN_OR_RETURN(int fd, OpenRaw(allow_user_mode_only, &user_mode_only));
  UserfaultFd probe(fd, 0, user_mode_only);  // closes fd on every error path
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = features;
  if (ioctl(fd, UFFDIO_API, &api) != 0) {
    const int err = errno;
    if (err != EINVAL)
      return ErrnoStatus(absl::StatusCode::kFailedPrecondition, "userfaultfd API handshake", err);
    // EINVAL: some requested feature is unknown. A second descriptor with no feature request
    // tells which, for the reason `procmig check` prints.
    probe.Close();
    ASSIGN_OR_RETURN(int fd2, OpenRaw(allow_user_mode_only, &user_mode_only));
    UserfaultFd second(fd2, 0, user_mode_only);
    uffdio_api plain{};
    plain.api = UFFD_API;
    if (ioctl(fd2, UFFDIO_API, &plain) != 0) {
      return ErrnoStatus(absl::StatusCode::kFailedPrecondition, "userfaultfd API handshake", errno);
    }
    return absl::FailedPreconditionError(
        absl::StrCat("userfaultfd API handshake: kernel lacks UFFD_FEATURE_",
                     UffdFeatureNames(features & ~plain.features), " (it offers ",
                     UffdFeatureNames(plain.features), ")"));
  }
  if ((api.features & features) != features) {
    return absl::FailedPreconditionError(
        absl::StrCat("userfaultfd API handshake: kernel lacks UFFD_FEATURE_",
                     UffdFeatureNames(features & ~api.features)));
  }
  probe.features_ = api.features;
  return probe;
}

UserfaultFd::UserfaultFd(UserfaultFd&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      features_(other.features_),
      user_mode_only_(other.user_mode_only_) {}

UserfaultFd& UserfaultFd::operator=(UserfaultFd&& other) noexcept {
  if (this != &other) {
    Close();
    fd_ = std::exchange(other.fd_, -1);
    features_ = other.features_;
    user_mode_only_ = other.user_mode_only_;
  }
  return *this;
}

UserfaultFd::~UserfaultFd() { Close(); }

void UserfaultFd::Close() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

absl::Status UserfaultFd::RegisterWp(uintptr_t start, size_t len, bool missing) const {
  uffdio_register reg{};
  reg.range.start = start;
  reg.range.len = len;
  reg.mode = UFFDIO_REGISTER_MODE_WP | (missing ? UFFDIO_REGISTER_MODE_MISSING : 0);
  if (ioctl(fd_, UFFDIO_REGISTER, &reg) != 0) {
    return ErrnoStatus(absl::StatusCode::kFailedPrecondition,
                       absl::StrFormat("register uffd range 0x%x+0x%x for write-protect%s", start,
                                       len, missing ? " and missing" : ""),
                       errno);
  }
  if ((reg.ioctls & (uint64_t{1} << _UFFDIO_WRITEPROTECT)) == 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "register uffd range 0x%x+0x%x: UFFDIO_WRITEPROTECT not offered for it", start, len));
  }
  return absl::OkStatus();
}

int UserfaultFd::RegisterWpRaw(uintptr_t start, size_t len, bool missing) const {
  uffdio_register reg{};
  reg.range.start = start;
  reg.range.len = len;
  reg.mode = UFFDIO_REGISTER_MODE_WP | (missing ? UFFDIO_REGISTER_MODE_MISSING : 0);
  if (ioctl(fd_, UFFDIO_REGISTER, &reg) != 0) return errno;
  if ((reg.ioctls & (uint64_t{1} << _UFFDIO_WRITEPROTECT)) == 0) return EOPNOTSUPP;
  return 0;
}

absl::Status UserfaultFd::Unregister(uintptr_t start, size_t len) const {
  int err = RangeIoctl(fd_, UFFDIO_UNREGISTER, start, len, 0);
  if (err != 0) {
    return ErrnoStatus(absl::StrFormat("unregister uffd range 0x%x+0x%x", start, len), err);
  }
  return absl::OkStatus();
}

int UserfaultFd::WriteProtect(uintptr_t start, size_t len, bool protect) const {
  return RangeIoctl(fd_, UFFDIO_WRITEPROTECT, start, len,
                    protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0);
}

int UserfaultFd::WriteProtectAcrossVmas(uintptr_t start, size_t len, bool protect,
                                        size_t page_size) const {
  int err = WriteProtect(start, len, protect);
  if (err != ENOENT || len <= page_size) return err;
  const size_t half = (len / page_size / 2) * page_size;
  err = WriteProtectAcrossVmas(start, half, protect, page_size);
  if (err != 0) return err;
  return WriteProtectAcrossVmas(start + half, len - half, protect, page_size);
}

absl::Status UserfaultFd::WriteProtectStatus(uintptr_t start, size_t len, bool protect) const {
  int err = WriteProtectAcrossVmas(start, len, protect, static_cast<size_t>(sysconf(_SC_PAGESIZE)));
  if (err != 0) {
    return ErrnoStatus(absl::StrFormat("%s uffd range 0x%x+0x%x",
                                       protect ? "write-protect" : "unprotect", start, len),
                       err);
  }
  return absl::OkStatus();
}

int UserfaultFd::ZeroPage(uintptr_t start, size_t len) const {
  return RangeIoctl(fd_, UFFDIO_ZEROPAGE, start, len, 0);
}

int UserfaultFd::Wake(uintptr_t start, size_t len) const {
  return RangeIoctl(fd_, UFFDIO_WAKE, start, len, 0);
}

}  // namespace procmig
