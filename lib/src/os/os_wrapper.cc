#include "os/os_wrapper.h"

namespace procmig {

absl::StatusOr<std::string> OsWrapper::ReadFile(const std::string& path) {
  return target_->ReadFile(path);
}
absl::Status OsWrapper::WriteFile(const std::string& path, std::string_view data) {
  return target_->WriteFile(path, data);
}
absl::StatusOr<int> OsWrapper::Open(const std::string& path, int flags, mode_t mode) {
  return target_->Open(path, flags, mode);
}
absl::Status OsWrapper::Close(int fd) { return target_->Close(fd); }
absl::StatusOr<size_t> OsWrapper::Pread(int fd, void* buf, size_t len, uint64_t offset) {
  return target_->Pread(fd, buf, len, offset);
}
absl::StatusOr<int> OsWrapper::Ioctl(int fd, unsigned long request, void* arg) {
  return target_->Ioctl(fd, request, arg);
}

absl::StatusOr<void*> OsWrapper::Mmap(void* addr, size_t length, int prot, int flags, int fd,
                                      uint64_t offset) {
  return target_->Mmap(addr, length, prot, flags, fd, offset);
}
absl::Status OsWrapper::Munmap(void* addr, size_t length) { return target_->Munmap(addr, length); }
absl::Status OsWrapper::Mprotect(void* addr, size_t length, int prot) {
  return target_->Mprotect(addr, length, prot);
}
absl::Status OsWrapper::Madvise(void* addr, size_t length, int advice) {
  return target_->Madvise(addr, length, advice);
}

uint64_t OsWrapper::MonotonicNanos() { return target_->MonotonicNanos(); }
pid_t OsWrapper::GetPid() { return target_->GetPid(); }
pid_t OsWrapper::GetTid() { return target_->GetTid(); }
size_t OsWrapper::PageSize() { return target_->PageSize(); }

absl::StatusOr<int> OsWrapper::Userfaultfd(int flags) { return target_->Userfaultfd(flags); }
absl::StatusOr<int> OsWrapper::IoUringSetup(uint32_t entries, void* params) {
  return target_->IoUringSetup(entries, params);
}
absl::StatusOr<int> OsWrapper::IoUringRegister(int fd, uint32_t opcode, void* arg,
                                               uint32_t nr_args) {
  return target_->IoUringRegister(fd, opcode, arg, nr_args);
}
absl::StatusOr<int> OsWrapper::PidfdOpen(pid_t pid, unsigned int flags) {
  return target_->PidfdOpen(pid, flags);
}
absl::StatusOr<size_t> OsWrapper::ProcessVmReadv(pid_t pid, const struct iovec* local,
                                                 size_t local_count, const struct iovec* remote,
                                                 size_t remote_count) {
  return target_->ProcessVmReadv(pid, local, local_count, remote, remote_count);
}
absl::StatusOr<long> OsWrapper::Prctl(int option, unsigned long arg2, unsigned long arg3,
                                      unsigned long arg4, unsigned long arg5) {
  return target_->Prctl(option, arg2, arg3, arg4, arg5);
}
absl::StatusOr<pid_t> OsWrapper::Clone3(void* args, size_t size) {
  return target_->Clone3(args, size);
}
absl::StatusOr<int> OsWrapper::WaitPid(pid_t pid, int options) {
  return target_->WaitPid(pid, options);
}
absl::StatusOr<uint64_t> OsWrapper::EffectiveCapabilities() {
  return target_->EffectiveCapabilities();
}

}  // namespace procmig
