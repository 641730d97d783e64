// KernelCaps with a fault-injecting Os: derivations, reasons for each failure, and the promise
// that probes leave nothing behind whatever fails. Calls not faked reach the real kernel; the
// checks that need a real feature say so and are skipped where it is missing.
#include "os/kernel_caps.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "fakes/fake_os.h"
#include "os/kernel_compat.h"
#include "os/kernel_probes.h"
#include "os/real_os.h"

namespace procmig {
namespace {

Feature F(const char* name, bool available, const char* reason) {
  return Feature{"s", name, available, reason};
}

const Feature& Get(const std::vector<Feature>& list, const std::string& name) {
  for (const Feature& f : list) {
    if (f.name == name) return f;
  }
  FAIL("feature not found: " << name);
  static Feature none;
  return none;
}

bool RealUffdWorks() {
  RealOs os;
  absl::StatusOr<int> fd = os.Userfaultfd(O_CLOEXEC | O_NONBLOCK);
  if (!fd.ok()) return false;
  (void)os.Close(*fd);
  return true;
}

bool RealIoUringWorks() {
  RealOs os;
  io_uring_params p = {};
  absl::StatusOr<int> fd = os.IoUringSetup(2, &p);
  if (!fd.ok()) return false;
  (void)os.Close(*fd);
  return true;
}

TEST_CASE("DeriveDirtyBackends: everything present") {
  std::vector<Feature> features = {
      F(feature::kPagemapScan, true, "a"), F(feature::kPagemapScanWp, true, "b"),
      F(feature::kUffdWpAsync, true, "c"), F(feature::kUffdWpUnpopulated, true, "d"),
      F(feature::kSoftDirty, true, "e"),   F(feature::kUffdWp, true, "f"),
  };
  std::vector<Feature> want = {
      {"dirty tracking backends", "pagemap-scan", true,
       "has pagemap_scan + pagemap_scan_wp + uffd_wp_async + uffd_wp_unpopulated (derived from "
       "the feature probes)"},
      {"dirty tracking backends", "soft-dirty", true,
       "has soft_dirty (derived from the feature probes)"},
      {"dirty tracking backends", "uffd-wp", true, "has uffd_wp (derived from the feature probes)"},
      {"dirty tracking backends", "mprotect", true,
       "mprotect + SIGSEGV works on every kernel (the agent must own SIGSEGV)"},
      {"dirty tracking backends", "full", true,
       "every page counts as dirty every round (stop-and-copy only)"},
  };
  CHECK(DeriveDirtyBackends(features) == want);
}

TEST_CASE("DeriveDirtyBackends: each missing need is named with its own reason") {
  std::vector<Feature> features = {
      F(feature::kPagemapScan, true, "a"),
      F(feature::kUffdWpAsync, false, "UFFDIO_API does not report it"),
      F(feature::kUffdWpUnpopulated, true, "d"),
      F(feature::kSoftDirty, false, "bit 55 stayed 0"),
  };
  std::vector<Feature> got = DeriveDirtyBackends(features);
  REQUIRE(got.size() == 5);
  CHECK(got[0].name == "pagemap-scan");
  CHECK_FALSE(got[0].available);
  CHECK(got[0].reason ==
        "missing pagemap_scan_wp (not probed); uffd_wp_async (UFFDIO_API does not report it)");
  CHECK_FALSE(got[1].available);
  CHECK(got[1].reason == "missing soft_dirty (bit 55 stayed 0)");
  CHECK_FALSE(got[2].available);
  CHECK(got[2].reason == "missing uffd_wp (not probed)");
  CHECK(got[3].available);
  CHECK(got[4].available);
}

TEST_CASE("KernelCaps::Find and Available look in features, then backends") {
  KernelCaps caps;
  caps.features = {F("x", true, "r1"), F("y", false, "r2")};
  caps.dirty_backends = {F("full", true, "r3")};
  REQUIRE(caps.Find("y") != nullptr);
  CHECK(caps.Find("y")->reason == "r2");
  CHECK(caps.Find("full")->reason == "r3");
  CHECK(caps.Find("z") == nullptr);
  CHECK(caps.Available("x"));
  CHECK_FALSE(caps.Available("y"));
  CHECK_FALSE(caps.Available("z"));
}

TEST_CASE("no userfaultfd at all: every uffd feature and backend says why") {
  RealOs real;
  FakeOs os(&real);
  os.FailCall(OsCall::kUserfaultfd, ENOSYS);
  os.FailPath("/dev/userfaultfd", ENOENT);
  KernelCaps caps = ProbeKernelCaps(os);

  const std::string enosys = "userfaultfd(2): ENOSYS (Function not implemented)";
  CHECK(Get(caps.features, "userfaultfd") == Feature{"userfaultfd", "userfaultfd", false, enosys});
  CHECK(Get(caps.features, "dev_userfaultfd") ==
        Feature{"userfaultfd", "dev_userfaultfd", false,
                "open /dev/userfaultfd: ENOENT (No such file or directory)"});
  for (const char* bit : {feature::kUffdWp, feature::kUffdWpAsync, feature::kUffdWpUnpopulated,
                          feature::kUffdWpHugetlbfsShmem, feature::kUffdMinorShmem,
                          feature::kUffdMinorHugetlbfs, feature::kUffdMove}) {
    CAPTURE(bit);
    CHECK_FALSE(Get(caps.features, bit).available);
    CHECK(Get(caps.features, bit).reason == "no userfaultfd: " + enosys);
  }
  const Feature& wp = Get(caps.features, "pagemap_scan_wp");
  CHECK_FALSE(wp.available);
  if (Get(caps.features, "pagemap_scan").available) {
    CHECK(wp.reason == enosys + "; open /dev/userfaultfd: ENOENT (No such file or directory)");
  }

  CHECK_FALSE(caps.Available(feature::kBackendPagemapScan));
  CHECK(absl::StrContains(caps.Find(feature::kBackendPagemapScan)->reason,
                          "uffd_wp_async (no userfaultfd: " + enosys + ")"));
  CHECK(*caps.Find(feature::kBackendUffdWp) ==
        Feature{"dirty tracking backends", "uffd-wp", false,
                "missing uffd_wp (no userfaultfd: " + enosys + ")"});
  CHECK(caps.Available(feature::kBackendMprotect));
  CHECK(caps.Available(feature::kBackendFull));
  CHECK(os.open_fds() == 0);
  CHECK(os.live_mappings() == 0);
}

TEST_CASE("without the syscall, /dev/userfaultfd serves the feature bits and the WP cycle") {
  RealOs real;
  absl::StatusOr<int> dev = real.Open("/dev/userfaultfd", O_RDWR, 0);
  if (!dev.ok() || !RealUffdWorks()) {
    MESSAGE("/dev/userfaultfd or userfaultfd unavailable here: skipped");
    if (dev.ok()) (void)real.Close(*dev);
    return;
  }
  (void)real.Close(*dev);
  FakeOs os(&real);
  os.FailCall(OsCall::kUserfaultfd, EPERM);
  KernelCaps caps = ProbeKernelCaps(os);
  CHECK(Get(caps.features, "userfaultfd").reason ==
        "userfaultfd(2): EPERM (Operation not permitted)");
  CHECK(caps.Available(feature::kDevUserfaultfd));
  CHECK(caps.Available(feature::kUffdWp));
  CHECK(Get(caps.features, "uffd_wp_async").available ==
        Get(caps.features, "uffd_wp_unpopulated").available);
  if (caps.Available(feature::kPagemapScan) && caps.Available(feature::kUffdWpAsync)) {
    CHECK(caps.Available(feature::kPagemapScanWp));
    CHECK(caps.Available(feature::kBackendPagemapScan));
  }
  CHECK(os.open_fds() == 0);
  CHECK(os.live_mappings() == 0);
}

TEST_CASE("userfaultfd falls back to UFFD_USER_MODE_ONLY on EPERM") {
  if (!RealUffdWorks()) {
    MESSAGE("userfaultfd unavailable on this kernel: skipped");
    return;
  }
  RealOs real;
  FakeOs os(&real);
  os.FailUserfaultfdFlags(O_CLOEXEC | O_NONBLOCK, EPERM);
  std::vector<Feature> out;
  probes::ProbeUserfaultfd(os, &out);
  REQUIRE(!out.empty());
  CHECK(out[0].available);
  CHECK(absl::EndsWith(out[0].reason,
                       "(only with UFFD_USER_MODE_ONLY: "
                       "vm.unprivileged_userfaultfd=0, no CAP_SYS_PTRACE)"));
  CHECK(os.open_fds() == 0);
}

TEST_CASE("a uffd feature bit the kernel does not report is unavailable with the bit named") {
  if (!RealUffdWorks()) {
    MESSAGE("userfaultfd unavailable on this kernel: skipped");
    return;
  }
  RealOs real;
  FakeOs os(&real);
  os.SetIoctlHook(UFFDIO_API, [](void* arg) {
    static_cast<uffdio_api*>(arg)->features &= ~static_cast<uint64_t>(UFFD_FEATURE_WP_ASYNC);
  });
  std::vector<Feature> out;
  probes::ProbeUserfaultfd(os, &out);
  CHECK(Get(out, "uffd_wp_async") ==
        Feature{"userfaultfd", "uffd_wp_async", false,
                "UFFDIO_API does not report UFFD_FEATURE_WP_ASYNC (Linux 6.7+ and its config)"});
  CHECK(os.open_fds() == 0);
}

TEST_CASE("PAGEMAP_SCAN refused by the kernel") {
  RealOs real;
  FakeOs os(&real);
  os.FailIoctl(PAGEMAP_SCAN, ENOTTY);
  std::vector<Feature> out;
  probes::ProbePagemapScan(os, &out);
  const std::string why = "PAGEMAP_SCAN: ENOTTY (Inappropriate ioctl for device): needs Linux 6.7";
  std::vector<Feature> want = {
      {"dirty tracking primitives", "pagemap_scan", false, why},
      {"dirty tracking primitives", "pagemap_scan_wp", false, "needs pagemap_scan: " + why},
  };
  CHECK(out == want);
  CHECK(os.open_fds() == 0);
  CHECK(os.live_mappings() == 0);
}

// Rewrites the pagemap entries the soft-dirty probe reads: `before` for the first read (after
// clear_refs), `after` for the second (after the write).
void HookPagemap(FakeOs& os, uint64_t before, uint64_t after) {
  auto reads = std::make_shared<int>(0);
  os.SetPreadHook([=](const std::string& path, uint64_t, void* buf, size_t n) {
    if (path != "/proc/self/pagemap" || n != 8) return;
    uint64_t v = (*reads)++ == 0 ? before : after;
    std::memcpy(buf, &v, 8);
  });
}

constexpr uint64_t kPresent = uint64_t{1} << 63;
constexpr uint64_t kSoftDirty = uint64_t{1} << 55;

TEST_CASE("soft-dirty is judged by behaviour") {
  RealOs real;
  SUBCASE("bit 55 0 after clear_refs and 1 after a write: available") {
    FakeOs os(&real);
    HookPagemap(os, kPresent, kPresent | kSoftDirty);
    std::vector<Feature> out;
    probes::ProbeSoftDirty(os, &out);
    REQUIRE(out.size() == 1);
    CHECK(out[0] ==
          Feature{"dirty tracking primitives", "soft_dirty", true,
                  "after clear_refs \"4\" pagemap bit 55 was 0, after one write it was 1"});
    REQUIRE(os.writes().size() == 1);
    CHECK(os.writes()[0] == std::make_pair(std::string("/proc/self/clear_refs"), std::string("4")));
    CHECK(os.open_fds() == 0);
    CHECK(os.live_mappings() == 0);
  }
  SUBCASE("bit 55 stays 0: the machine this was written on") {
    FakeOs os(&real);
    HookPagemap(os, kPresent, kPresent);
    std::vector<Feature> out;
    probes::ProbeSoftDirty(os, &out);
    REQUIRE(out.size() == 1);
    CHECK_FALSE(out[0].available);
    CHECK(out[0].reason ==
          "kernel accepts clear_refs but pagemap bit 55 stayed 0 after a write: "
          "CONFIG_MEM_SOFT_DIRTY off");
  }
  SUBCASE("bit 55 never cleared") {
    FakeOs os(&real);
    HookPagemap(os, kPresent | kSoftDirty, kPresent | kSoftDirty);
    std::vector<Feature> out;
    probes::ProbeSoftDirty(os, &out);
    CHECK(out[0].reason ==
          "pagemap bit 55 was still set right after clear_refs: the reset has no effect");
  }
  SUBCASE("present bit clear") {
    FakeOs os(&real);
    HookPagemap(os, 0, kSoftDirty);
    std::vector<Feature> out;
    probes::ProbeSoftDirty(os, &out);
    CHECK(out[0].reason ==
          "pagemap entry 0x0080000000000000 has present bit 63 clear after a write: pagemap is "
          "not readable here");
  }
  SUBCASE("clear_refs refused") {
    FakeOs os(&real);
    os.FailPath("/proc/self/clear_refs", EACCES);
    std::vector<Feature> out;
    probes::ProbeSoftDirty(os, &out);
    CHECK(out[0].reason == "write \"4\" to /proc/self/clear_refs: EACCES (Permission denied)");
    CHECK(os.open_fds() == 0);
    CHECK(os.live_mappings() == 0);
  }
  SUBCASE("pagemap unreadable") {
    FakeOs os(&real);
    os.FailCall(OsCall::kPread, EIO);
    std::vector<Feature> out;
    probes::ProbeSoftDirty(os, &out);
    CHECK(out[0].reason == "read /proc/self/pagemap: EIO (Input/output error)");
    CHECK(os.open_fds() == 0);
  }
}

TEST_CASE("io_uring disabled by sysctl") {
  RealOs real;
  FakeOs os(&real);
  os.FailCall(OsCall::kIoUringSetup, EPERM);
  os.SetFile("/proc/sys/kernel/io_uring_disabled", "2\n");
  std::vector<Feature> out;
  probes::ProbeIoUring(os, &out);
  const std::string why =
      "io_uring_setup: EPERM (Operation not permitted) (kernel.io_uring_disabled = 2)";
  REQUIRE(out.size() == 11);
  CHECK(out[0] == Feature{"io_uring", "io_uring", false, why});
  for (size_t i = 1; i < out.size(); ++i) {
    CHECK_FALSE(out[i].available);
    CHECK(out[i].reason == "no io_uring: " + why);
  }
  CHECK(out[9].name == "io_uring_op_send_zc");
}

TEST_CASE("an opcode the ring does not support is reported per opcode") {
  if (!RealIoUringWorks()) {
    MESSAGE("io_uring unavailable on this kernel: skipped");
    return;
  }
  RealOs real;
  FakeOs os(&real);
  os.SetIoUringRegisterHook(IORING_REGISTER_PROBE, [](void* arg) {
    static_cast<io_uring_probe*>(arg)->ops[IORING_OP_SEND_ZC].flags = 0;
  });
  std::vector<Feature> out;
  probes::ProbeIoUring(os, &out);
  const Feature& zc = Get(out, "io_uring_op_send_zc");
  CHECK_FALSE(zc.available);
  CHECK(absl::StartsWith(zc.reason,
                         "IORING_REGISTER_PROBE: IORING_OP_SEND_ZC (47) not supported (last_op "));
  CHECK(os.open_fds() == 0);

  FakeOs failing(&real);
  failing.FailCall(OsCall::kIoUringRegister, EINVAL);
  out.clear();
  probes::ProbeIoUring(failing, &out);
  CHECK(out[0].available);
  CHECK(Get(out, "io_uring_op_readv").reason == "IORING_REGISTER_PROBE: EINVAL (Invalid argument)");
  CHECK(failing.open_fds() == 0);
}

TEST_CASE("clone3 set_tid: each errno has its meaning") {
  RealOs real;
  struct Case {
    int err;
    bool available;
    std::string reason;
  };
  const std::string pid = std::to_string(getpid());
  const Case cases[] = {
      {EEXIST, true,
       "clone3 took set_tid and refused pid " + pid +
           " as taken (EEXIST): threads can get their old ids where those are free"},
      {EPERM, false,
       "clone3 with set_tid: EPERM (Operation not permitted): needs CAP_CHECKPOINT_RESTORE or "
       "CAP_SYS_ADMIN over the pid namespace"},
      {E2BIG, false,
       "clone3 with set_tid: E2BIG (Argument list too long): kernel's clone_args has no set_tid "
       "(Linux < 5.5)"},
      {ENOSYS, false, "clone3: ENOSYS (Function not implemented): Linux < 5.3"},
      {EINVAL, false, "clone3 with set_tid: EINVAL (Invalid argument)"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.err);
    FakeOs os(&real);
    os.FailCall(OsCall::kClone3, c.err);
    std::vector<Feature> out;
    probes::ProbeProcessControl(os, &out);
    CHECK(Get(out, "clone3_set_tid") ==
          Feature{"process control", "clone3_set_tid", c.available, c.reason});
    CHECK(os.unreaped_children() == 0);
  }
}

TEST_CASE("pidfd_open, process_vm_readv and PR_SET_MM_MAP failures") {
  RealOs real;
  FakeOs os(&real);
  os.FailCall(OsCall::kPidfdOpen, ENOSYS);
  os.FailCall(OsCall::kProcessVmReadv, EPERM);
  os.FailPrctl(PR_SET_MM, EINVAL);
  std::vector<Feature> out;
  probes::ProbeProcessControl(os, &out);
  CHECK(Get(out, "pidfd_open").reason == "pidfd_open(self): ENOSYS (Function not implemented)");
  CHECK(Get(out, "process_vm_readv").reason ==
        "process_vm_readv(self): EPERM (Operation not permitted)");
  CHECK(Get(out, "prctl_set_mm_map").reason ==
        "prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE): EINVAL (Invalid argument): "
        "CONFIG_CHECKPOINT_RESTORE off?");
  for (const Feature& f : out) {
    if (f.name != "clone3_set_tid") CHECK_FALSE(f.available);
  }
  CHECK(os.open_fds() == 0);
}

TEST_CASE("capabilities come from the effective set") {
  RealOs real;
  FakeOs os(&real);
  os.SetCapabilities(uint64_t{1} << 21);
  std::vector<Feature> out;
  probes::ProbeCapabilities(os, &out);
  REQUIRE(out.size() == 4);
  CHECK(out[0] == Feature{"capabilities", "cap_sys_admin", true,
                          "CAP_SYS_ADMIN (21) in the effective set 0x200000; used for clone3 "
                          "set_tid and PR_SET_MM_EXE_FILE before CAP_CHECKPOINT_RESTORE existed"});
  CHECK_FALSE(out[1].available);
  CHECK(out[1].name == "cap_checkpoint_restore");
  CHECK_FALSE(out[2].available);
  CHECK(absl::StartsWith(out[2].reason, "CAP_SYS_RESOURCE (24) not in the effective set 0x200000"));
  CHECK_FALSE(out[3].available);

  FakeOs failing(&real);
  failing.FailCall(OsCall::kEffectiveCapabilities, EPERM);
  out.clear();
  probes::ProbeCapabilities(failing, &out);
  for (const Feature& f : out) CHECK(f.reason == "capget: EPERM (Operation not permitted)");
}

TEST_CASE("THP mode is the bracketed word") {
  RealOs real;
  const std::string path = "/sys/kernel/mm/transparent_hugepage/enabled";
  struct Case {
    const char* text;
    const char* mode;
    bool available;
    const char* reason;
  };
  const Case cases[] = {
      {"[always] madvise never\n", "always", true, "mode always ([always] madvise never)"},
      {"always [madvise] never\n", "madvise", true,
       "mode madvise (always [madvise] never): only regions that ask for it"},
      {"always madvise [never]\n", "never", false, "mode never (always madvise [never])"},
      {"garbage\n", "", false,
       "no [mode] in /sys/kernel/mm/transparent_hugepage/enabled: 'garbage'"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text);
    FakeOs os(&real);
    os.SetFile(path, c.text);
    KernelCaps caps;
    probes::ProbeMemory(os, &caps);
    CHECK(caps.thp_mode == c.mode);
    REQUIRE(caps.features.size() == 1);
    CHECK(caps.features[0] == Feature{"memory", "transparent_hugepages", c.available, c.reason});
  }
  FakeOs os(&real);
  os.FailPath(path, ENOENT);
  KernelCaps caps;
  probes::ProbeMemory(os, &caps);
  CHECK(caps.thp_mode.empty());
  CHECK(caps.features[0].reason ==
        "read /sys/kernel/mm/transparent_hugepage/enabled: ENOENT (No such file or directory)");
}

TEST_CASE("whatever call fails, the probe completes and leaves nothing behind") {
  RealOs real;
  FakeOs baseline(&real);
  KernelCaps all = ProbeKernelCaps(baseline);
  CHECK(baseline.open_fds() == 0);
  CHECK(baseline.live_mappings() == 0);
  CHECK(baseline.unreaped_children() == 0);
  CHECK(all.page_size == real.PageSize());
  CHECK(all.dirty_backends.size() == 5);

  for (int i = 0; i < static_cast<int>(OsCall::kCount); ++i) {
    for (int err : {EIO, EPERM, ENOSYS}) {
      CAPTURE(i);
      CAPTURE(err);
      FakeOs os(&real);
      os.FailCall(static_cast<OsCall>(i), err);
      KernelCaps caps = ProbeKernelCaps(os);
      CHECK(caps.features.size() == all.features.size());
      CHECK(caps.dirty_backends.size() == 5);
      CHECK(os.open_fds() == 0);
      CHECK(os.unreaped_children() == 0);
      // A failed munmap leaves the mapping by definition; everything else must be unmapped.
      if (static_cast<OsCall>(i) != OsCall::kMunmap) CHECK(os.live_mappings() == 0);
    }
  }
}

TEST_CASE("kernel release comes from /proc/sys/kernel/osrelease") {
  RealOs real;
  FakeOs os(&real);
  os.SetFile("/proc/sys/kernel/osrelease", "9.9.9-fake\n");
  CHECK(ProbeKernelCaps(os).kernel_release == "9.9.9-fake");
  FakeOs failing(&real);
  failing.FailPath("/proc/sys/kernel/osrelease", EACCES);
  CHECK(ProbeKernelCaps(failing).kernel_release.empty());
}

}  // namespace
}  // namespace procmig
