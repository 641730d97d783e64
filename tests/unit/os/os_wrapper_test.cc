#include "os/os_wrapper.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace procmig {
namespace {

// Records every call with its arguments and answers with values derived from them, so a
// forwarding mistake (wrong call, dropped or swapped argument) shows up.
class RecordingOs : public Os {
 public:
  std::vector<std::string> log;

  absl::StatusOr<std::string> ReadFile(const std::string& path) override {
    log.push_back("ReadFile " + path);
    return "contents of " + path;
  }
  absl::Status WriteFile(const std::string& path, std::string_view data) override {
    log.push_back("WriteFile " + path + " " + std::string(data));
    return OsError("write", EROFS);
  }
  absl::StatusOr<int> Open(const std::string& path, int flags, mode_t mode) override {
    log.push_back(absl::StrCat("Open ", path, " ", flags, " ", mode));
    return 40;
  }
  absl::Status Close(int fd) override {
    log.push_back(absl::StrCat("Close ", fd));
    return absl::OkStatus();
  }
  absl::StatusOr<size_t> Pread(int fd, void* buf, size_t len, uint64_t offset) override {
    log.push_back(absl::StrCat("Pread ", fd, " ", buf != nullptr, " ", len, " ", offset));
    return len / 2;
  }
  absl::StatusOr<int> Ioctl(int fd, unsigned long request, void* arg) override {
    log.push_back(absl::StrCat("Ioctl ", fd, " ", request, " ", arg != nullptr));
    return 3;
  }
  absl::StatusOr<void*> Mmap(void* addr, size_t length, int prot, int flags, int fd,
                             uint64_t offset) override {
    log.push_back(absl::StrCat("Mmap ", addr == nullptr, " ", length, " ", prot, " ", flags, " ",
                               fd, " ", offset));
    return reinterpret_cast<void*>(0x1000);
  }
  absl::Status Munmap(void* addr, size_t length) override {
    log.push_back(absl::StrCat("Munmap ", reinterpret_cast<uintptr_t>(addr), " ", length));
    return absl::OkStatus();
  }
  absl::Status Mprotect(void* addr, size_t length, int prot) override {
    log.push_back(
        absl::StrCat("Mprotect ", reinterpret_cast<uintptr_t>(addr), " ", length, " ", prot));
    return absl::OkStatus();
  }
  absl::Status Madvise(void* addr, size_t length, int advice) override {
    log.push_back(
        absl::StrCat("Madvise ", reinterpret_cast<uintptr_t>(addr), " ", length, " ", advice));
    return absl::OkStatus();
  }
  uint64_t MonotonicNanos() override { return 123; }
  pid_t GetPid() override { return 11; }
  pid_t GetTid() override { return 12; }
  size_t PageSize() override { return 16384; }
  absl::StatusOr<int> Userfaultfd(int flags) override {
    log.push_back(absl::StrCat("Userfaultfd ", flags));
    return 50;
  }
  absl::StatusOr<int> IoUringSetup(uint32_t entries, void* params) override {
    log.push_back(absl::StrCat("IoUringSetup ", entries, " ", params != nullptr));
    return 51;
  }
  absl::StatusOr<int> IoUringRegister(int fd, uint32_t opcode, void* arg,
                                      uint32_t nr_args) override {
    log.push_back(
        absl::StrCat("IoUringRegister ", fd, " ", opcode, " ", arg != nullptr, " ", nr_args));
    return 0;
  }
  absl::StatusOr<int> PidfdOpen(pid_t pid, unsigned int flags) override {
    log.push_back(absl::StrCat("PidfdOpen ", pid, " ", flags));
    return 52;
  }
  absl::StatusOr<size_t> ProcessVmReadv(pid_t pid, const struct iovec*, size_t local_count,
                                        const struct iovec*, size_t remote_count) override {
    log.push_back(absl::StrCat("ProcessVmReadv ", pid, " ", local_count, " ", remote_count));
    return 9;
  }
  absl::StatusOr<long> Prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4,
                             unsigned long a5) override {
    log.push_back(absl::StrCat("Prctl ", option, " ", a2, " ", a3, " ", a4, " ", a5));
    return 1;
  }
  absl::StatusOr<pid_t> Clone3(void*, size_t size) override {
    log.push_back(absl::StrCat("Clone3 ", size));
    return OsError("clone3", EEXIST);
  }
  absl::StatusOr<int> WaitPid(pid_t pid, int options) override {
    log.push_back(absl::StrCat("WaitPid ", pid, " ", options));
    return 0;
  }
  absl::StatusOr<uint64_t> EffectiveCapabilities() override {
    log.push_back("EffectiveCapabilities");
    return uint64_t{0x3};
  }
};

TEST_CASE("OsWrapper forwards every call with its arguments and result") {
  RecordingOs rec;
  OsWrapper os(&rec);
  CHECK(os.target() == &rec);
  char buf[8];
  struct iovec iov = {buf, 8};

  CHECK(*os.ReadFile("/a") == "contents of /a");
  CHECK(OsErrno(os.WriteFile("/b", "xy")) == EROFS);
  CHECK(*os.Open("/c", 2, 0600) == 40);
  CHECK(os.Close(40).ok());
  CHECK(*os.Pread(40, buf, 8, 77) == 4);
  CHECK(*os.Ioctl(40, 0xc018aa3f, buf) == 3);
  CHECK(*os.Mmap(nullptr, 8192, 3, 34, -1, 0) == reinterpret_cast<void*>(0x1000));
  CHECK(os.Munmap(reinterpret_cast<void*>(0x1000), 8192).ok());
  CHECK(os.Mprotect(reinterpret_cast<void*>(0x1000), 4096, 1).ok());
  CHECK(os.Madvise(reinterpret_cast<void*>(0x1000), 4096, 4).ok());
  CHECK(os.MonotonicNanos() == 123);
  CHECK(os.GetPid() == 11);
  CHECK(os.GetTid() == 12);
  CHECK(os.PageSize() == 16384);
  CHECK(*os.Userfaultfd(0x80800) == 50);
  CHECK(*os.IoUringSetup(4, buf) == 51);
  CHECK(*os.IoUringRegister(51, 8, buf, 256) == 0);
  CHECK(*os.PidfdOpen(11, 0) == 52);
  CHECK(*os.ProcessVmReadv(11, &iov, 1, &iov, 1) == 9);
  CHECK(*os.Prctl(35, 15, 1, 2, 3) == 1);
  CHECK(OsErrno(os.Clone3(buf, 88).status()) == EEXIST);
  CHECK(*os.WaitPid(99, 1) == 0);
  CHECK(*os.EffectiveCapabilities() == 3);

  const std::vector<std::string> want = {
      "ReadFile /a",
      "WriteFile /b xy",
      "Open /c 2 384",
      "Close 40",
      "Pread 40 1 8 77",
      "Ioctl 40 3222841919 1",
      "Mmap 1 8192 3 34 -1 0",
      "Munmap 4096 8192",
      "Mprotect 4096 4096 1",
      "Madvise 4096 4096 4",
      "Userfaultfd 526336",
      "IoUringSetup 4 1",
      "IoUringRegister 51 8 1 256",
      "PidfdOpen 11 0",
      "ProcessVmReadv 11 1 1",
      "Prctl 35 15 1 2 3",
      "Clone3 88",
      "WaitPid 99 1",
      "EffectiveCapabilities",
  };
  CHECK(rec.log == want);
}

}  // namespace
}  // namespace procmig
