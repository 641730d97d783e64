#include "os/real_os.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "os/kernel_compat.h"

namespace procmig {
namespace {

std::string Hex(uint64_t v) { return absl::StrFormat("0x%x", v); }

// The clone_args.flags word is the first field of struct clone_args in every version.
constexpr uint64_t kSharingCloneFlags = CLONE_VM | CLONE_VFORK | CLONE_THREAD | CLONE_SIGHAND;

}  // namespace

absl::StatusOr<std::string> RealOs::ReadFile(const std::string& path) {
  ASSIGN_OR_RETURN(int fd, Open(path, O_RDONLY, 0));
  std::string out;
  char buf[16384];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      close(fd);
      return OsError(absl::StrCat("read ", path), err);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

absl::Status RealOs::WriteFile(const std::string& path, std::string_view data) {
  ASSIGN_OR_RETURN(int fd, Open(path, O_WRONLY, 0));
  ssize_t n;
  do {
    n = write(fd, data.data(), data.size());
  } while (n < 0 && errno == EINTR);
  int err = errno;
  close(fd);
  if (n < 0) return OsError(absl::StrCat("write ", path), err);
  if (static_cast<size_t>(n) != data.size()) {
    return absl::InternalError(
        absl::StrCat("write ", path, ": short write of ", n, " of ", data.size(), " bytes"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> RealOs::Open(const std::string& path, int flags, mode_t mode) {
  int fd;
  do {
    fd = open(path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return OsError(absl::StrCat("open ", path), errno);
  return fd;
}

absl::Status RealOs::Close(int fd) {
  // No retry on EINTR: Linux always releases the descriptor, retrying could close another.
  if (close(fd) != 0 && errno != EINTR) return OsError(absl::StrCat("close fd ", fd), errno);
  return absl::OkStatus();
}

absl::StatusOr<size_t> RealOs::Pread(int fd, void* buf, size_t len, uint64_t offset) {
  ssize_t n;
  do {
    n = pread(fd, buf, len, static_cast<off_t>(offset));
  } while (n < 0 && errno == EINTR);
  if (n < 0) return OsError(absl::StrCat("pread fd ", fd, " at ", Hex(offset)), errno);
  return static_cast<size_t>(n);
}

absl::StatusOr<int> RealOs::Ioctl(int fd, unsigned long request, void* arg) {
  int r = ioctl(fd, request, arg);
  if (r < 0) return OsError(absl::StrCat("ioctl ", Hex(request), " on fd ", fd), errno);
  return r;
}

absl::StatusOr<void*> RealOs::Mmap(void* addr, size_t length, int prot, int flags, int fd,
                                   uint64_t offset) {
  void* p = mmap(addr, length, prot, flags, fd, static_cast<off_t>(offset));
  if (p == MAP_FAILED) return OsError(absl::StrCat("mmap ", length, " bytes"), errno);
  return p;
}

absl::Status RealOs::Munmap(void* addr, size_t length) {
  if (munmap(addr, length) != 0) {
    return OsError(absl::StrCat("munmap ", Hex(reinterpret_cast<uintptr_t>(addr)), "+", length),
                   errno);
  }
  return absl::OkStatus();
}

absl::Status RealOs::Mprotect(void* addr, size_t length, int prot) {
  if (mprotect(addr, length, prot) != 0) {
    return OsError(absl::StrCat("mprotect ", Hex(reinterpret_cast<uintptr_t>(addr)), "+", length),
                   errno);
  }
  return absl::OkStatus();
}

absl::Status RealOs::Madvise(void* addr, size_t length, int advice) {
  if (madvise(addr, length, advice) != 0) {
    return OsError(
        absl::StrCat("madvise(", advice, ") ", Hex(reinterpret_cast<uintptr_t>(addr)), "+", length),
        errno);
  }
  return absl::OkStatus();
}

uint64_t RealOs::MonotonicNanos() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

pid_t RealOs::GetPid() { return getpid(); }

pid_t RealOs::GetTid() { return gettid(); }

size_t RealOs::PageSize() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

absl::StatusOr<int> RealOs::Userfaultfd(int flags) {
  long r = syscall(SYS_userfaultfd, flags);
  if (r < 0) return OsError("userfaultfd", errno);
  return static_cast<int>(r);
}

absl::StatusOr<int> RealOs::IoUringSetup(uint32_t entries, void* params) {
  long r = syscall(SYS_io_uring_setup, entries, params);
  if (r < 0) return OsError("io_uring_setup", errno);
  return static_cast<int>(r);
}

absl::StatusOr<int> RealOs::IoUringRegister(int fd, uint32_t opcode, void* arg, uint32_t nr_args) {
  long r = syscall(SYS_io_uring_register, fd, opcode, arg, nr_args);
  if (r < 0) return OsError(absl::StrCat("io_uring_register(", opcode, ")"), errno);
  return static_cast<int>(r);
}

absl::StatusOr<int> RealOs::PidfdOpen(pid_t pid, unsigned int flags) {
  long r = syscall(SYS_pidfd_open, pid, flags);
  if (r < 0) return OsError(absl::StrCat("pidfd_open ", pid), errno);
  return static_cast<int>(r);
}

absl::StatusOr<size_t> RealOs::ProcessVmReadv(pid_t pid, const struct iovec* local,
                                              size_t local_count, const struct iovec* remote,
                                              size_t remote_count) {
  ssize_t n = process_vm_readv(pid, local, local_count, remote, remote_count, 0);
  if (n < 0) return OsError(absl::StrCat("process_vm_readv pid ", pid), errno);
  return static_cast<size_t>(n);
}

absl::StatusOr<long> RealOs::Prctl(int option, unsigned long arg2, unsigned long arg3,
                                   unsigned long arg4, unsigned long arg5) {
  long r = syscall(SYS_prctl, option, arg2, arg3, arg4, arg5);
  if (r < 0) return OsError(absl::StrCat("prctl(", option, ")"), errno);
  return r;
}

absl::StatusOr<pid_t> RealOs::Clone3(void* args, size_t size) {
  uint64_t flags = 0;
  if (size >= sizeof(flags)) std::memcpy(&flags, args, sizeof(flags));
  if ((flags & kSharingCloneFlags) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("clone3: flags ", Hex(flags),
                                                   " would share memory or threads with a child "
                                                   "that has no stack of its own"));
  }
  long r = syscall(SYS_clone3, args, size);
  if (r == 0) {
    // The child: a copy of this process with no reason to live. exit_group skips atexit
    // handlers and stdio flushing, which belong to the parent.
    syscall(SYS_exit_group, 0);
    __builtin_unreachable();
  }
  if (r < 0) return OsError("clone3", errno);
  return static_cast<pid_t>(r);
}

absl::StatusOr<int> RealOs::WaitPid(pid_t pid, int options) {
  int status = 0;
  pid_t r;
  do {
    r = waitpid(pid, &status, options);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return OsError(absl::StrCat("waitpid ", pid), errno);
  return status;
}

absl::StatusOr<uint64_t> RealOs::EffectiveCapabilities() {
  struct __user_cap_header_struct header = {};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  header.pid = 0;
  struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (syscall(SYS_capget, &header, data) != 0) return OsError("capget", errno);
  return static_cast<uint64_t>(data[0].effective) |
         (static_cast<uint64_t>(data[1].effective) << 32);
}

}  // namespace procmig
