#include "os/descriptor_table.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "os/real_os.h"

namespace procmig {

int DescriptorTableSize() {
  absl::StatusOr<std::string> status = RealOs().ReadFile("/proc/self/status");
  if (!status.ok()) return -1;
  const size_t at = status->find("\nFDSize:");
  return at == std::string::npos ? -1 : std::atoi(status->c_str() + at + 8);
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
