#include "os/descriptor_table.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace procmig {

int DescriptorTableSize() {
  const int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[4096];
  size_t used = 0;
  for (ssize_t n; used < sizeof buf - 1 && (n = read(fd, buf + used, sizeof buf - 1 - used)) > 0;) {
    used += static_cast<size_t>(n);
  }
  close(fd);
  buf[used] = '\0';
  const char* at = std::strstr(buf, "\nFDSize:");
  return at == nullptr ? -1 : std::atoi(at + 8);
}

int ReserveDescriptorSlots(int slots) {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur != RLIM_INFINITY &&
      static_cast<rlim_t>(slots) > r.rlim_cur) {
    slots = static_cast<int>(r.rlim_cur);
  }
  if (slots > 0) {
    // Any open descriptor will do to duplicate; /dev/null when none of 0-2 is open.
    int from = fcntl(0, F_GETFD) >= 0 ? 0 : fcntl(2, F_GETFD) >= 0 ? 2 : -1;
    int opened = -1;
    if (from < 0) from = opened = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (from >= 0) {
      const int high = fcntl(from, F_DUPFD_CLOEXEC, slots - 1);
      if (high >= 0) close(high);
      if (opened >= 0) close(opened);
    }
  }
  return DescriptorTableSize();
}

}  // namespace procmig
