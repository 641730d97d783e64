// Os: the seam between lib/ and the kernel (LevelDB's Env, for a process instead of a database).
//
// Everything lib/ asks of the kernel that a test may want to fake or fail goes through an Os:
// reading /proc files, preads on fds, ioctls, mappings, clocks, ids, and the handful of syscalls
// the KernelCaps probe needs. RealOs (real_os.h) makes the real calls; OsWrapper (os_wrapper.h)
// forwards every call to another Os so a test can override just the calls it wants to fail.
// There is no global instance: whoever needs an Os is handed one (usually a RealOs owned by the
// agent or the command) and does not own it.
//
// Errors: every failed call returns OsError(step, errno): the ErrnoStatus code and message of
// base/status_macros.h ("<step>: EPERM (Operation not permitted)") plus the errno itself as a
// payload, so a caller can branch on it with OsErrno() instead of parsing text.
//
// Threads: the interface itself keeps no state. RealOs may be called from any thread at once;
// fakes document their own rules.
#ifndef PROCMIG_OS_OS_H_
#define PROCMIG_OS_OS_H_

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace procmig {

// ErrnoStatus(step, err) with err attached as a payload (see OsErrno). Every Os implementation,
// real or fake, reports failures through this so that callers see one format.
absl::Status OsError(std::string_view step, int err);

// The errno carried by a status built with OsError, or 0 when there is none (ok statuses,
// statuses from elsewhere).
int OsErrno(const absl::Status& status);

class Os {
 public:
  virtual ~Os() = default;

  // --- Files and file descriptors.
  // Reads the whole file. Works for /proc and /sys files, whose st_size is 0 (reads to EOF).
  virtual absl::StatusOr<std::string> ReadFile(const std::string& path) = 0;
  // Writes `data` to an existing file with one write(2) (e.g. "4" to /proc/self/clear_refs);
  // neither creates nor truncates. A short write is an error.
  virtual absl::Status WriteFile(const std::string& path, std::string_view data) = 0;
  // open(2); O_CLOEXEC is always added. Returns the fd, owned by the caller.
  virtual absl::StatusOr<int> Open(const std::string& path, int flags, mode_t mode) = 0;
  virtual absl::Status Close(int fd) = 0;
  // pread(2): returns the number of bytes read (short at EOF). Retries on EINTR.
  virtual absl::StatusOr<size_t> Pread(int fd, void* buf, size_t len, uint64_t offset) = 0;
  // ioctl(2) with a pointer argument: returns the (non-negative) return value.
  virtual absl::StatusOr<int> Ioctl(int fd, unsigned long request, void* arg) = 0;

  // --- Memory.
  virtual absl::StatusOr<void*> Mmap(void* addr, size_t length, int prot, int flags, int fd,
                                     uint64_t offset) = 0;
  virtual absl::Status Munmap(void* addr, size_t length) = 0;
  virtual absl::Status Mprotect(void* addr, size_t length, int prot) = 0;
  virtual absl::Status Madvise(void* addr, size_t length, int advice) = 0;

  // --- Clock, identity, machine. These cannot fail.
  virtual uint64_t MonotonicNanos() = 0;  // CLOCK_MONOTONIC in nanoseconds
  virtual pid_t GetPid() = 0;
  virtual pid_t GetTid() = 0;
  virtual size_t PageSize() = 0;

  // --- Kernel objects and process control (raw syscalls; mostly for the KernelCaps probe).
  virtual absl::StatusOr<int> Userfaultfd(int flags) = 0;
  // io_uring_setup(2); `params` points to a struct io_uring_params (kept opaque here so that
  // <linux/io_uring.h> is not included by every user of the seam).
  virtual absl::StatusOr<int> IoUringSetup(uint32_t entries, void* params) = 0;
  virtual absl::StatusOr<int> IoUringRegister(int fd, uint32_t opcode, void* arg,
                                              uint32_t nr_args) = 0;
  virtual absl::StatusOr<int> PidfdOpen(pid_t pid, unsigned int flags) = 0;
  virtual absl::StatusOr<size_t> ProcessVmReadv(pid_t pid, const struct iovec* local,
                                                size_t local_count, const struct iovec* remote,
                                                size_t remote_count) = 0;
  virtual absl::StatusOr<long> Prctl(int option, unsigned long arg2, unsigned long arg3,
                                     unsigned long arg4, unsigned long arg5) = 0;
  // clone3(2) for probing its argument checks: `args` points to a struct clone_args of `size`
  // bytes. Flags that share the caller's memory, threads or signal handlers (CLONE_VM,
  // CLONE_VFORK, CLONE_THREAD, CLONE_SIGHAND) are refused with InvalidArgument because a child
  // is never given a stack. A child that does get created exits at once with status 0; the
  // caller must reap it with WaitPid. Returns the child's pid.
  virtual absl::StatusOr<pid_t> Clone3(void* args, size_t size) = 0;
  // waitpid(2) (retries on EINTR); returns the wait status.
  virtual absl::StatusOr<int> WaitPid(pid_t pid, int options) = 0;
  // The calling thread's effective capability set, bit N = capability N (capget(2)).
  virtual absl::StatusOr<uint64_t> EffectiveCapabilities() = 0;
};

}  // namespace procmig

#endif  // PROCMIG_OS_OS_H_
