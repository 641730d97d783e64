// OsWrapper: an Os that forwards every call to another Os (LevelDB's EnvWrapper).
//
// Subclass it and override only the calls a test wants to observe or fail; everything else
// reaches the wrapped Os unchanged. The wrapper does not own the target, which must outlive it.
// Thread safety is the target's (the wrapper adds no state).
#ifndef PROCMIG_OS_OS_WRAPPER_H_
#define PROCMIG_OS_OS_WRAPPER_H_

#include "os/os.h"

namespace procmig {

class OsWrapper : public Os {
 public:
  explicit OsWrapper(Os* target) : target_(target) {}

  Os* target() const { return target_; }

  absl::StatusOr<std::string> ReadFile(const std::string& path) override;
  absl::Status WriteFile(const std::string& path, std::string_view data) override;
  absl::StatusOr<int> Open(const std::string& path, int flags, mode_t mode) override;
  absl::Status Close(int fd) override;
  absl::StatusOr<size_t> Pread(int fd, void* buf, size_t len, uint64_t offset) override;
  absl::StatusOr<int> Ioctl(int fd, unsigned long request, void* arg) override;

  absl::StatusOr<void*> Mmap(void* addr, size_t length, int prot, int flags, int fd,
                             uint64_t offset) override;
  absl::Status Munmap(void* addr, size_t length) override;
  absl::Status Mprotect(void* addr, size_t length, int prot) override;
  absl::Status Madvise(void* addr, size_t length, int advice) override;

  uint64_t MonotonicNanos() override;
  pid_t GetPid() override;
  pid_t GetTid() override;
  size_t PageSize() override;

  absl::StatusOr<int> Userfaultfd(int flags) override;
  absl::StatusOr<int> IoUringSetup(uint32_t entries, void* params) override;
  absl::StatusOr<int> IoUringRegister(int fd, uint32_t opcode, void* arg,
                                      uint32_t nr_args) override;
  absl::StatusOr<int> PidfdOpen(pid_t pid, unsigned int flags) override;
  absl::StatusOr<size_t> ProcessVmReadv(pid_t pid, const struct iovec* local, size_t local_count,
                                        const struct iovec* remote, size_t remote_count) override;
  absl::StatusOr<long> Prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4,
                             unsigned long arg5) override;
  absl::StatusOr<pid_t> Clone3(void* args, size_t size) override;
  absl::StatusOr<int> WaitPid(pid_t pid, int options) override;
  absl::StatusOr<uint64_t> EffectiveCapabilities() override;

 private:
  Os* const target_;  // not owned
};

}  // namespace procmig

#endif  // PROCMIG_OS_OS_WRAPPER_H_
