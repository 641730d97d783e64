// RealOs against the real kernel: each call does what its syscall does, and failures come back
// as OsError with the errno.
#include "os/real_os.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "os/kernel_compat.h"

namespace procmig {
namespace {

TEST_CASE("ReadFile reads /proc files to EOF and WriteFile writes an existing file") {
  RealOs os;
  absl::StatusOr<std::string> status = os.ReadFile("/proc/self/status");
  REQUIRE(status.ok());
  CHECK(status->rfind("Name:", 0) == 0);
  CHECK(status->find("\nPid:\t" + std::to_string(getpid()) + "\n") != std::string::npos);

  absl::StatusOr<std::string> missing = os.ReadFile("/nonexistent/procmig");
  REQUIRE_FALSE(missing.ok());
  CHECK(OsErrno(missing.status()) == ENOENT);
  CHECK(std::string(missing.status().message()) ==
        "open /nonexistent/procmig: ENOENT (No such file or directory)");

  char name[] = "/tmp/procmig_real_os_XXXXXX";
  int fd = mkstemp(name);
  REQUIRE(fd >= 0);
  close(fd);
  REQUIRE(os.WriteFile(name, "hello\nworld").ok());
  absl::StatusOr<std::string> back = os.ReadFile(name);
  REQUIRE(back.ok());
  CHECK(*back == "hello\nworld");
  unlink(name);
  absl::Status gone = os.WriteFile(name, "x");  // WriteFile never creates
  CHECK(OsErrno(gone) == ENOENT);
}

TEST_CASE("Open, Pread and Close") {
  RealOs os;
  char name[] = "/tmp/procmig_real_os_XXXXXX";
  int wfd = mkstemp(name);
  REQUIRE(wfd >= 0);
  REQUIRE(write(wfd, "0123456789", 10) == 10);
  close(wfd);
  absl::StatusOr<int> fd = os.Open(name, O_RDONLY, 0);
  REQUIRE(fd.ok());
  CHECK((fcntl(*fd, F_GETFD) & FD_CLOEXEC) != 0);  // always added
  char buf[8] = {};
  absl::StatusOr<size_t> n = os.Pread(*fd, buf, 4, 3);
  REQUIRE(n.ok());
  CHECK(*n == 4);
  CHECK(std::string(buf, 4) == "3456");
  n = os.Pread(*fd, buf, 8, 8);  // short at EOF
  REQUIRE(n.ok());
  CHECK(*n == 2);
  CHECK(os.Close(*fd).ok());
  absl::StatusOr<size_t> bad = os.Pread(*fd, buf, 1, 0);
  CHECK(OsErrno(bad.status()) == EBADF);
  unlink(name);
}

TEST_CASE("Mmap, Mprotect, Madvise, Munmap") {
  RealOs os;
  const size_t ps = os.PageSize();
  CHECK(ps == static_cast<size_t>(sysconf(_SC_PAGESIZE)));
  absl::StatusOr<void*> p =
      os.Mmap(nullptr, 2 * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(p.ok());
  static_cast<char*>(*p)[ps] = 7;
  CHECK(os.Madvise(*p, 2 * ps, MADV_DONTNEED).ok());
  CHECK(static_cast<char*>(*p)[ps] == 0);  // MADV_DONTNEED dropped the private page
  CHECK(os.Mprotect(*p, ps, PROT_READ).ok());
  CHECK(OsErrno(os.Mprotect(static_cast<char*>(*p) + 1, ps, PROT_READ)) == EINVAL);
  CHECK(OsErrno(os.Madvise(*p, ps, 12345)) == EINVAL);
  CHECK(os.Munmap(*p, 2 * ps).ok());
  absl::StatusOr<void*> bad = os.Mmap(nullptr, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(OsErrno(bad.status()) == EINVAL);
}

TEST_CASE("clock and ids") {
  RealOs os;
  uint64_t a = os.MonotonicNanos();
  usleep(1000);
  uint64_t b = os.MonotonicNanos();
  CHECK(b - a >= 1000000u);
  CHECK(os.GetPid() == getpid());
  CHECK(os.GetTid() == gettid());
}

TEST_CASE("Clone3 creates a child that exits at once, and refuses sharing flags") {
  RealOs os;
  clone_args args = {};
  args.exit_signal = SIGCHLD;
  absl::StatusOr<pid_t> child = os.Clone3(&args, CLONE_ARGS_SIZE_VER0);
  REQUIRE(child.ok());
  absl::StatusOr<int> status = os.WaitPid(*child, 0);
  REQUIRE(status.ok());
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
  CHECK(OsErrno(os.WaitPid(*child, 0).status()) == ECHILD);

  args.flags = CLONE_VM;
  absl::StatusOr<pid_t> refused = os.Clone3(&args, CLONE_ARGS_SIZE_VER0);
  CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);
  args.flags = 0;
  args.set_tid_size = 99;  // more than the pid namespace depth
  pid_t tids[1] = {1};
  args.set_tid = reinterpret_cast<uintptr_t>(tids);
  CHECK(OsErrno(os.Clone3(&args, CLONE_ARGS_SIZE_VER2).status()) == EINVAL);
}

TEST_CASE("EffectiveCapabilities matches CapEff in /proc/self/status") {
  RealOs os;
  absl::StatusOr<uint64_t> caps = os.EffectiveCapabilities();
  REQUIRE(caps.ok());
  absl::StatusOr<std::string> status = os.ReadFile("/proc/self/status");
  REQUIRE(status.ok());
  size_t at = status->find("CapEff:\t");
  REQUIRE(at != std::string::npos);
  uint64_t want = 0;
  REQUIRE(absl::SimpleHexAtoi(status->substr(at + 8, 16), &want));
  CHECK(*caps == want);
}

TEST_CASE("Prctl, PidfdOpen, ProcessVmReadv, Userfaultfd, IoUringSetup report errno") {
  RealOs os;
  absl::StatusOr<long> dumpable = os.Prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
  REQUIRE(dumpable.ok());
  CHECK(*dumpable == prctl(PR_GET_DUMPABLE, 0, 0, 0, 0));
  CHECK(OsErrno(os.Prctl(-1, 0, 0, 0, 0).status()) == EINVAL);

  CHECK(OsErrno(os.PidfdOpen(-1, 0).status()) == EINVAL);
  CHECK(OsErrno(os.Userfaultfd(-1).status()) == EINVAL);
  CHECK(OsErrno(os.IoUringSetup(0, nullptr).status()) == EFAULT);

  char src[] = "abc";
  char dst[4] = {};
  struct iovec local = {dst, 4};
  struct iovec remote = {src, 4};
  absl::StatusOr<size_t> n = os.ProcessVmReadv(getpid(), &local, 1, &remote, 1);
  REQUIRE(n.ok());
  CHECK(*n == 4);
  CHECK(std::strcmp(dst, "abc") == 0);
  remote.iov_base = nullptr;
  CHECK(OsErrno(os.ProcessVmReadv(getpid(), &local, 1, &remote, 1).status()) == EFAULT);
}

TEST_CASE("Ioctl returns the errno of a bad request") {
  RealOs os;
  absl::StatusOr<int> fd = os.Open("/proc/self/status", O_RDONLY, 0);
  REQUIRE(fd.ok());
  absl::StatusOr<int> r = os.Ioctl(*fd, PAGEMAP_SCAN, nullptr);
  CHECK(OsErrno(r.status()) == ENOTTY);  // PAGEMAP_SCAN is only for pagemap files
  CHECK(os.Close(*fd).ok());
}

}  // namespace
}  // namespace procmig
