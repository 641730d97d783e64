// ReserveDescriptorSlots on this kernel: in a child (its table as large as the parent's highest
// open descriptor needed, 64 slots at least), the table grows to the slots asked (1024), or to
// the soft RLIMIT_NOFILE rounded up as the kernel sizes tables (300 -> 512), and no descriptor
// is left open.
#include <dirent.h>
#include <doctest/doctest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "os/descriptor_table.h"

namespace procmig {
namespace {

int OpenDescriptors() {
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  int n = 0;
  while (readdir(d) != nullptr) ++n;
  closedir(d);
  return n - 3;  // ".", ".." and the directory's own
}

// Runs fn in a child whose descriptors above 2 are closed; its exit status (0: all held).
template <typename F>
int InChild(F fn) {
  fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    for (int fd = 3; fd < 1024; ++fd) close(fd);
    _exit(fn());
  }
  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

TEST_CASE("the table grows to the slots asked, and nothing stays open") {
  const int r = InChild([] {
    rlimit l{};
    if (getrlimit(RLIMIT_NOFILE, &l) != 0 || l.rlim_cur < 1024) return 10;  // cannot tell
    const int before = DescriptorTableSize();
    if (before < 64) return 1;
    if (before >= 1024) return 10;
    const int open_before = OpenDescriptors();
    if (ReserveDescriptorSlots(1024) != 1024) return 2;
    if (DescriptorTableSize() != 1024) return 3;
    if (OpenDescriptors() != open_before) return 4;
    return 0;
  });
  if (r == 10) {
    MESSAGE("soft RLIMIT_NOFILE below 1024, or a table of 1024 already: not checked");
    return;
  }
  CHECK(r == 0);
}

TEST_CASE("capped by the soft RLIMIT_NOFILE") {
  const int r = InChild([] {
    rlimit l{};
    if (getrlimit(RLIMIT_NOFILE, &l) != 0) return 1;
    if (DescriptorTableSize() >= 512) return 10;
    l.rlim_cur = 300;
    if (setrlimit(RLIMIT_NOFILE, &l) != 0) return 2;
    // Descriptor 299: 128-slot units, rounded up to a power of two of them.
    if (ReserveDescriptorSlots(1024) != 512) return 3;
    return 0;
  });
  if (r == 10) {
    MESSAGE("a table of 512 already: not checked");
    return;
  }
  CHECK(r == 0);
}

}  // namespace
}  // namespace procmig
