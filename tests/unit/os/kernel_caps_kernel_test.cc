// ProbeKernelCaps on the real kernel, checked against independent re-checks written here with
// raw syscalls (not through the probes' code), and against what the development machine (Linux
// 6.18, no CONFIG_MEM_SOFT_DIRTY) is known to have. Where the running kernel genuinely lacks one
// of those features the binary prints why and exits 77 (skipped) before asserting anything.
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "os/kernel_caps.h"
#include "os/kernel_compat.h"
#include "os/real_os.h"

namespace procmig {
namespace {

size_t PageSize() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

// "" when PAGEMAP_SCAN works, else why not.
std::string IndependentPagemapScan() {
  int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::string("open pagemap: ") + strerror(errno);
  const size_t ps = PageSize();
  char* p = static_cast<char*>(
      mmap(nullptr, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  p[0] = 1;
  page_region vec[2] = {};
  pm_scan_arg arg = {};
  arg.size = sizeof(arg);
  arg.start = reinterpret_cast<uintptr_t>(p);
  arg.end = arg.start + ps;
  arg.vec = reinterpret_cast<uintptr_t>(vec);
  arg.vec_len = 2;
  arg.category_mask = PAGE_IS_PRESENT;
  arg.return_mask = PAGE_IS_PRESENT;
  int n = ioctl(fd, PAGEMAP_SCAN, &arg);
  int err = errno;
  munmap(p, ps);
  close(fd);
  if (n < 0) return std::string("PAGEMAP_SCAN: ") + strerrorname_np(err) + " (Linux < 6.7?)";
  if (n != 1) return "PAGEMAP_SCAN returned " + std::to_string(n) + " regions for 1 page";
  return "";
}

// "" when a uffd accepts WP_ASYNC, else why not.
std::string IndependentWpAsync() {
  int fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (fd < 0) return std::string("userfaultfd: ") + strerrorname_np(errno);
  uffdio_api api = {};
  api.api = UFFD_API;
  api.features =
      UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_WP_ASYNC;
  int r = ioctl(fd, UFFDIO_API, &api);
  int err = errno;
  close(fd);
  if (r < 0) return std::string("UFFDIO_API(WP_ASYNC): ") + strerrorname_np(err) + " (< 6.7?)";
  return "";
}

// "" when io_uring supports IORING_OP_SEND_ZC, else why not.
std::string IndependentSendZc() {
  io_uring_params params = {};
  int fd = static_cast<int>(syscall(SYS_io_uring_setup, 2, &params));
  if (fd < 0) return std::string("io_uring_setup: ") + strerrorname_np(errno);
  alignas(8) unsigned char buf[sizeof(io_uring_probe) + 256 * sizeof(io_uring_probe_op)] = {};
  auto* probe = reinterpret_cast<io_uring_probe*>(buf);
  long r = syscall(SYS_io_uring_register, fd, IORING_REGISTER_PROBE, probe, 256);
  int err = errno;
  close(fd);
  if (r < 0) return std::string("IORING_REGISTER_PROBE: ") + strerrorname_np(err);
  if (probe->last_op < IORING_OP_SEND_ZC ||
      (probe->ops[IORING_OP_SEND_ZC].flags & IO_URING_OP_SUPPORTED) == 0) {
    return "IORING_OP_SEND_ZC unsupported (Linux < 6.0)";
  }
  return "";
}

// Soft-dirty by behaviour, the same idea as the probe but written out again.
bool IndependentSoftDirty() {
  const size_t ps = PageSize();
  volatile char* p = static_cast<char*>(
      mmap(nullptr, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  p[0] = 1;
  int cr = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
  bool cleared = cr >= 0 && write(cr, "4", 1) == 1;
  if (cr >= 0) close(cr);
  p[0] = 2;
  uint64_t entry = 0;
  int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  bool read_ok = pm >= 0 && pread(pm, &entry, 8, reinterpret_cast<uintptr_t>(p) / ps * 8) == 8;
  if (pm >= 0) close(pm);
  munmap(const_cast<char*>(p), ps);
  return cleared && read_ok && ((entry >> 55) & 1) != 0;
}

size_t CountFds() {
  size_t n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n - 1;  // the directory's own fd
}

size_t CountRegions() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  size_t n = 0;
  while (std::getline(maps, line)) ++n;
  return n;
}

std::string ReadAll(const char* path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Runs first (doctest orders test cases by file and line): skipping must happen before any
// assertion has been recorded.
TEST_CASE("the features this machine is known to have are reported available") {
  std::string missing;
  for (const std::string& why :
       {IndependentPagemapScan(), IndependentWpAsync(), IndependentSendZc()}) {
    if (!why.empty()) missing += (missing.empty() ? "" : "; ") + why;
  }
  if (!missing.empty()) {
    std::printf("SKIP: this kernel lacks a feature the test expects: %s\n", missing.c_str());
    std::exit(77);
  }
  RealOs os;
  KernelCaps caps = ProbeKernelCaps(os);
  std::fputs(ToTable(caps).c_str(), stdout);
  for (const char* name :
       {feature::kUserfaultfd, feature::kUffdWp, feature::kUffdWpAsync, feature::kUffdWpUnpopulated,
        feature::kPagemapScan, feature::kPagemapScanWp, feature::kIoUring, feature::kIoUringSendZc,
        feature::kIoUringSendmsgZc, feature::kIoUringReadv, feature::kBackendPagemapScan,
        feature::kBackendUffdWp, feature::kBackendMprotect, feature::kBackendFull}) {
    CAPTURE(name);
    REQUIRE(caps.Find(name) != nullptr);
    CHECK(caps.Available(name));
  }
  const bool soft_dirty = IndependentSoftDirty();
  CHECK(caps.Available(feature::kSoftDirty) == soft_dirty);
  CHECK(caps.Available(feature::kBackendSoftDirty) == soft_dirty);
  if (!soft_dirty) {
    CHECK(caps.Find(feature::kSoftDirty)->reason ==
          "kernel accepts clear_refs but pagemap bit 55 stayed 0 after a write: "
          "CONFIG_MEM_SOFT_DIRTY off");
  }
}

TEST_CASE("every probe agrees with an independent look, and nothing is left behind") {
  RealOs os;
  (void)ProbeKernelCaps(os);  // warm-up: first-use allocations (heap growth) happen here
  const size_t fds = CountFds();
  const size_t regions = CountRegions();
  const auto t0 = std::chrono::steady_clock::now();
  KernelCaps caps = ProbeKernelCaps(os);
  const auto t1 = std::chrono::steady_clock::now();
  std::printf("ProbeKernelCaps took %.3f ms\n",
              std::chrono::duration<double, std::milli>(t1 - t0).count());
  CHECK(CountFds() == fds);
  CHECK(CountRegions() == regions);
  errno = 0;
  CHECK(waitpid(-1, nullptr, WNOHANG) == -1);
  CHECK(errno == ECHILD);

  struct utsname u;
  REQUIRE(uname(&u) == 0);
  CHECK(caps.kernel_release == u.release);
  CHECK(caps.page_size == PageSize());

  CHECK(caps.Available(feature::kPagemapScan) == IndependentPagemapScan().empty());
  CHECK(caps.Available(feature::kUffdWpAsync) == IndependentWpAsync().empty());
  CHECK(caps.Available(feature::kIoUringSendZc) == IndependentSendZc().empty());
  CHECK(caps.Available(feature::kSoftDirty) == IndependentSoftDirty());

  // Capabilities: the CapEff line of /proc/self/status.
  std::string status = ReadAll("/proc/self/status");
  size_t at = status.find("CapEff:\t");
  REQUIRE(at != std::string::npos);
  uint64_t eff = std::stoull(status.substr(at + 8, 16), nullptr, 16);
  CHECK(caps.Available(feature::kCapSysAdmin) == (((eff >> 21) & 1) != 0));
  CHECK(caps.Available(feature::kCapSysPtrace) == (((eff >> 19) & 1) != 0));
  CHECK(caps.Available(feature::kCapSysResource) == (((eff >> 24) & 1) != 0));
  CHECK(caps.Available(feature::kCapCheckpointRestore) == (((eff >> 40) & 1) != 0));

  // clone3 set_tid: available exactly when we hold one of the two capabilities (5.5+ kernel).
  const bool may_set_tid = ((eff >> 21) & 1) || ((eff >> 40) & 1);
  CHECK(caps.Available(feature::kClone3SetTid) == may_set_tid);

  // THP: the bracketed word of the sysfs file.
  std::string thp = ReadAll("/sys/kernel/mm/transparent_hugepage/enabled");
  size_t open_b = thp.find('['), close_b = thp.find(']');
  if (open_b != std::string::npos && close_b != std::string::npos) {
    CHECK(caps.thp_mode == thp.substr(open_b + 1, close_b - open_b - 1));
  } else {
    CHECK(caps.thp_mode.empty());
  }

  // pidfd_open and process_vm_readv on ourselves.
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, getpid(), 0));
  CHECK(caps.Available(feature::kPidfdOpen) == (pidfd >= 0));
  if (pidfd >= 0) close(pidfd);

  // The JSON names every feature the table does.
  std::string json = ToJson(caps);
  for (const Feature& f : caps.features) {
    CAPTURE(f.name);
    CHECK(json.find("\"name\": \"" + f.name + "\"") != std::string::npos);
  }
}

}  // namespace
}  // namespace procmig
