// FakeOs: a fault-injecting, accounting Os for tests (an OsWrapper over a real or fake Os).
//
// Calls reach the wrapped Os unless the test said otherwise: a call kind can be failed with an
// errno (FailCall), a path can be failed (FailPath) or served from memory (SetFile), ioctls and
// prctls can be failed per request/option, and hooks can rewrite what a real ioctl or pread
// returned (e.g. set pagemap bit 55, hide a uffd feature bit). Every failure is built with
// OsError, exactly like RealOs's.
//
// It also keeps books: fds opened through it and not yet closed, mappings not yet unmapped,
// children created by Clone3 not yet reaped, so a test can assert that code "leaves nothing
// behind". Single-threaded: not safe to call from several threads at once.
#ifndef PROCMIG_TESTS_FAKES_FAKE_OS_H_
#define PROCMIG_TESTS_FAKES_FAKE_OS_H_

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "os/os_wrapper.h"

namespace procmig {

enum class OsCall {
  kReadFile,
  kWriteFile,
  kOpen,
  kClose,
  kPread,
  kIoctl,
  kMmap,
  kMunmap,
  kMprotect,
  kMadvise,
  kUserfaultfd,
  kIoUringSetup,
  kIoUringRegister,
  kPidfdOpen,
  kProcessVmReadv,
  kPrctl,
  kClone3,
  kWaitPid,
  kEffectiveCapabilities,
  kCount,  // not a call: the number of kinds
};

class FakeOs : public OsWrapper {
 public:
  explicit FakeOs(Os* target) : OsWrapper(target) {}

  // --- Fault injection. Each rule stays until cleared with ClearFaults().
  void FailCall(OsCall call, int err) { call_errno_[static_cast<size_t>(call)] = err; }
  void FailPath(const std::string& path, int err) { path_errno_[path] = err; }
  void FailIoctl(unsigned long request, int err) { ioctl_errno_[request] = err; }
  void FailPrctl(int option, int err) { prctl_errno_[option] = err; }
  // Userfaultfd(flags) fails only when called with exactly these flags.
  void FailUserfaultfdFlags(int flags, int err) { uffd_flags_errno_[flags] = err; }
  void ClearFaults();

  // --- Canned results.
  void SetFile(const std::string& path, std::string contents) {
    files_[path] = std::move(contents);
  }
  void SetCapabilities(uint64_t effective) { caps_ = effective; }

  // Runs after a successful forwarded ioctl with this request, on its argument.
  void SetIoctlHook(unsigned long request, std::function<void(void* arg)> hook) {
    ioctl_hooks_[request] = std::move(hook);
  }
  // Runs after a successful forwarded io_uring_register with this opcode, on its argument.
  void SetIoUringRegisterHook(uint32_t opcode, std::function<void(void* arg)> hook) {
    uring_register_hooks_[opcode] = std::move(hook);
  }
  // Runs after a successful forwarded pread on an fd opened through this FakeOs.
  using PreadHook =
      std::function<void(const std::string& path, uint64_t offset, void* buf, size_t n)>;
  void SetPreadHook(PreadHook hook) { pread_hook_ = std::move(hook); }

  // --- Books.
  int calls(OsCall call) const { return calls_[static_cast<size_t>(call)]; }
  size_t open_fds() const { return fds_.size(); }
  size_t live_mappings() const { return mappings_.size(); }
  size_t unreaped_children() const { return children_.size(); }
  // Everything written with WriteFile, in order, as {path, data}.
  const std::vector<std::pair<std::string, std::string>>& writes() const { return writes_; }

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
  // Counts the call; returns the injected errno for it, or 0.
  int Enter(OsCall call);

  std::array<int, static_cast<size_t>(OsCall::kCount)> calls_ = {};
  std::array<int, static_cast<size_t>(OsCall::kCount)> call_errno_ = {};
  std::map<std::string, int> path_errno_;
  std::map<unsigned long, int> ioctl_errno_;
  std::map<int, int> prctl_errno_;
  std::map<int, int> uffd_flags_errno_;
  std::map<std::string, std::string> files_;
  std::optional<uint64_t> caps_;
  std::map<unsigned long, std::function<void(void*)>> ioctl_hooks_;
  std::map<uint32_t, std::function<void(void*)>> uring_register_hooks_;
  PreadHook pread_hook_;

  std::map<int, std::string> fds_;  // fd -> what it is (path or kind)
  std::map<uintptr_t, size_t> mappings_;
  std::set<pid_t> children_;
  std::vector<std::pair<std::string, std::string>> writes_;
};

}  // namespace procmig

#endif  // PROCMIG_TESTS_FAKES_FAKE_OS_H_
