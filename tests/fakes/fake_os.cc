#include "fakes/fake_os.h"

#include "absl/strings/str_cat.h"
#include "os/kernel_compat.h"

namespace procmig {

void FakeOs::ClearFaults() {
  call_errno_.fill(0);
  path_errno_.clear();
  ioctl_errno_.clear();
  prctl_errno_.clear();
  uffd_flags_errno_.clear();
}

int FakeOs::Enter(OsCall call) {
  ++calls_[static_cast<size_t>(call)];
  return call_errno_[static_cast<size_t>(call)];
}

absl::StatusOr<std::string> FakeOs::ReadFile(const std::string& path) {
  if (int err = Enter(OsCall::kReadFile)) return OsError(absl::StrCat("open ", path), err);
  if (auto it = path_errno_.find(path); it != path_errno_.end()) {
    return OsError(absl::StrCat("open ", path), it->second);
  }
  if (auto it = files_.find(path); it != files_.end()) return it->second;
  return OsWrapper::ReadFile(path);
}

absl::Status FakeOs::WriteFile(const std::string& path, std::string_view data) {
  if (int err = Enter(OsCall::kWriteFile)) return OsError(absl::StrCat("write ", path), err);
  if (auto it = path_errno_.find(path); it != path_errno_.end()) {
    return OsError(absl::StrCat("open ", path), it->second);
  }
  writes_.emplace_back(path, std::string(data));
  return OsWrapper::WriteFile(path, data);
}

absl::StatusOr<int> FakeOs::Open(const std::string& path, int flags, mode_t mode) {
  if (int err = Enter(OsCall::kOpen)) return OsError(absl::StrCat("open ", path), err);
  if (auto it = path_errno_.find(path); it != path_errno_.end()) {
    return OsError(absl::StrCat("open ", path), it->second);
  }
  absl::StatusOr<int> fd = OsWrapper::Open(path, flags, mode);
  if (fd.ok()) fds_[*fd] = path;
  return fd;
}

absl::Status FakeOs::Close(int fd) {
  fds_.erase(fd);  // like Linux: the fd is gone even when close reports an error
  if (int err = Enter(OsCall::kClose)) {
    (void)OsWrapper::Close(fd);
    return OsError(absl::StrCat("close fd ", fd), err);
  }
  return OsWrapper::Close(fd);
}

absl::StatusOr<size_t> FakeOs::Pread(int fd, void* buf, size_t len, uint64_t offset) {
  if (int err = Enter(OsCall::kPread)) return OsError(absl::StrCat("pread fd ", fd), err);
  absl::StatusOr<size_t> n = OsWrapper::Pread(fd, buf, len, offset);
  auto it = fds_.find(fd);
  if (n.ok() && pread_hook_ && it != fds_.end()) pread_hook_(it->second, offset, buf, *n);
  return n;
}

absl::StatusOr<int> FakeOs::Ioctl(int fd, unsigned long request, void* arg) {
  if (int err = Enter(OsCall::kIoctl)) return OsError(absl::StrCat("ioctl on fd ", fd), err);
  if (auto it = ioctl_errno_.find(request); it != ioctl_errno_.end()) {
    return OsError(absl::StrCat("ioctl on fd ", fd), it->second);
  }
  absl::StatusOr<int> r = OsWrapper::Ioctl(fd, request, arg);
  if (r.ok() && request == USERFAULTFD_IOC_NEW) fds_[*r] = "userfaultfd (/dev/userfaultfd)";
  if (r.ok()) {
    if (auto it = ioctl_hooks_.find(request); it != ioctl_hooks_.end()) it->second(arg);
  }
  return r;
}

absl::StatusOr<void*> FakeOs::Mmap(void* addr, size_t length, int prot, int flags, int fd,
                                   uint64_t offset) {
  if (int err = Enter(OsCall::kMmap)) return OsError("mmap", err);
  absl::StatusOr<void*> p = OsWrapper::Mmap(addr, length, prot, flags, fd, offset);
  if (p.ok()) mappings_[reinterpret_cast<uintptr_t>(*p)] = length;
  return p;
}

absl::Status FakeOs::Munmap(void* addr, size_t length) {
  if (int err = Enter(OsCall::kMunmap)) return OsError("munmap", err);
  absl::Status s = OsWrapper::Munmap(addr, length);
  if (s.ok()) mappings_.erase(reinterpret_cast<uintptr_t>(addr));
  return s;
}

absl::Status FakeOs::Mprotect(void* addr, size_t length, int prot) {
  if (int err = Enter(OsCall::kMprotect)) return OsError("mprotect", err);
  return OsWrapper::Mprotect(addr, length, prot);
}

absl::Status FakeOs::Madvise(void* addr, size_t length, int advice) {
  if (int err = Enter(OsCall::kMadvise)) return OsError("madvise", err);
  return OsWrapper::Madvise(addr, length, advice);
}

absl::StatusOr<int> FakeOs::Userfaultfd(int flags) {
  if (int err = Enter(OsCall::kUserfaultfd)) return OsError("userfaultfd", err);
  if (auto it = uffd_flags_errno_.find(flags); it != uffd_flags_errno_.end()) {
    return OsError("userfaultfd", it->second);
  }
  absl::StatusOr<int> fd = OsWrapper::Userfaultfd(flags);
  if (fd.ok()) fds_[*fd] = "userfaultfd";
  return fd;
}

absl::StatusOr<int> FakeOs::IoUringSetup(uint32_t entries, void* params) {
  if (int err = Enter(OsCall::kIoUringSetup)) return OsError("io_uring_setup", err);
  absl::StatusOr<int> fd = OsWrapper::IoUringSetup(entries, params);
  if (fd.ok()) fds_[*fd] = "io_uring";
  return fd;
}

absl::StatusOr<int> FakeOs::IoUringRegister(int fd, uint32_t opcode, void* arg, uint32_t nr_args) {
  if (int err = Enter(OsCall::kIoUringRegister)) return OsError("io_uring_register", err);
  absl::StatusOr<int> r = OsWrapper::IoUringRegister(fd, opcode, arg, nr_args);
  if (r.ok()) {
    if (auto it = uring_register_hooks_.find(opcode); it != uring_register_hooks_.end()) {
      it->second(arg);
    }
  }
  return r;
}

absl::StatusOr<int> FakeOs::PidfdOpen(pid_t pid, unsigned int flags) {
  if (int err = Enter(OsCall::kPidfdOpen)) return OsError("pidfd_open", err);
  absl::StatusOr<int> fd = OsWrapper::PidfdOpen(pid, flags);
  if (fd.ok()) fds_[*fd] = "pidfd";
  return fd;
}

absl::StatusOr<size_t> FakeOs::ProcessVmReadv(pid_t pid, const struct iovec* local,
                                              size_t local_count, const struct iovec* remote,
                                              size_t remote_count) {
  if (int err = Enter(OsCall::kProcessVmReadv)) return OsError("process_vm_readv", err);
  return OsWrapper::ProcessVmReadv(pid, local, local_count, remote, remote_count);
}

absl::StatusOr<long> FakeOs::Prctl(int option, unsigned long arg2, unsigned long arg3,
                                   unsigned long arg4, unsigned long arg5) {
  if (int err = Enter(OsCall::kPrctl)) return OsError(absl::StrCat("prctl(", option, ")"), err);
  if (auto it = prctl_errno_.find(option); it != prctl_errno_.end()) {
    return OsError(absl::StrCat("prctl(", option, ")"), it->second);
  }
  return OsWrapper::Prctl(option, arg2, arg3, arg4, arg5);
}

absl::StatusOr<pid_t> FakeOs::Clone3(void* args, size_t size) {
  if (int err = Enter(OsCall::kClone3)) return OsError("clone3", err);
  absl::StatusOr<pid_t> pid = OsWrapper::Clone3(args, size);
  if (pid.ok()) children_.insert(*pid);
  return pid;
}

absl::StatusOr<int> FakeOs::WaitPid(pid_t pid, int options) {
  if (int err = Enter(OsCall::kWaitPid)) return OsError("waitpid", err);
  absl::StatusOr<int> status = OsWrapper::WaitPid(pid, options);
  if (status.ok()) children_.erase(pid);
  return status;
}

absl::StatusOr<uint64_t> FakeOs::EffectiveCapabilities() {
  if (int err = Enter(OsCall::kEffectiveCapabilities)) return OsError("capget", err);
  if (caps_.has_value()) return *caps_;
  return OsWrapper::EffectiveCapabilities();
}

}  // namespace procmig
