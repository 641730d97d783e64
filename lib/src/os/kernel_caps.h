// KernelCaps: what the running kernel offers procmig, found by trying it, and why.
//
// ProbeKernelCaps(os) runs one small probe per feature (userfaultfd and each of its feature
// bits, PAGEMAP_SCAN with a real scan, soft-dirty by behaviour, io_uring and its opcodes,
// clone3 set_tid, pidfd_open, process_vm_readv, PR_SET_MM_MAP, capabilities, THP) and records
// each as {section, name, available, reason}: the reason names what was verified, or the step
// and errno that failed. It never fails as a whole and never crashes on a missing feature. The
// probes leave nothing behind: every fd is closed, every mapping unmapped, every child reaped.
// The one process-wide side effect is the soft-dirty probe's write of "4" to
// /proc/self/clear_refs, which resets the soft-dirty bits of the whole process; run the probe
// before starting a soft-dirty tracker, not while one is running.
// Cost: about 8 ms in a small process on the development machine, most of it the clone3 probe,
// which the kernel refuses only after copying the caller's page tables as fork does (alloc_pid
// runs after copy_mm); in a very large process prefer probing from a small one (`procmig check`).
//
// The "dirty tracking backends" entries are derived from the feature probes
// (DeriveDirtyBackends); the dirty module will replace them with its trackers' own behavioural
// probes. `procmig check` prints ToTable() or ToJson().
//
// Threads: the probes run on the calling thread; a KernelCaps is a plain value.
#ifndef PROCMIG_OS_KERNEL_CAPS_H_
#define PROCMIG_OS_KERNEL_CAPS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "os/os.h"

namespace procmig {

struct Feature {
  std::string section;  // groups rows in ToTable, e.g. "userfaultfd"
  std::string name;     // stable key, one of the feature:: constants below
  bool available = false;
  std::string reason;  // why: what was verified, or which step failed with which errno

  bool operator==(const Feature&) const = default;
};

struct KernelCaps {
  std::string kernel_release;  // /proc/sys/kernel/osrelease; empty when unreadable
  uint64_t page_size = 0;
  std::string thp_mode;           // "always", "madvise", "never"; empty when the kernel has no THP
  std::vector<Feature> features;  // in probe order
  std::vector<Feature> dirty_backends;  // best first (DESIGN.md order)

  // Looks `name` up in features, then dirty_backends; nullptr when absent.
  const Feature* Find(std::string_view name) const;
  // Find(name) != nullptr && available.
  bool Available(std::string_view name) const;
};

KernelCaps ProbeKernelCaps(Os& os);

// The five dirty-tracking backends, best first, each available or not according to the
// features it needs (pagemap-scan: pagemap_scan, pagemap_scan_wp, uffd_wp_async,
// uffd_wp_unpopulated; soft-dirty: soft_dirty; uffd-wp: uffd_wp; mprotect and full: always).
std::vector<Feature> DeriveDirtyBackends(const std::vector<Feature>& features);

// Pretty-printed JSON object {kernel_release, page_size, thp_mode, features:[...],
// dirty_backends:[...]}, strings escaped per RFC 8259. Ends with a newline.
std::string ToJson(const KernelCaps& caps);

// Human-readable report: a header line, then one aligned row per feature under its section
// title, then the dirty tracking backends. Ends with a newline.
std::string ToTable(const KernelCaps& caps);

// Feature names (Feature::name), so that other modules look features up without typos.
namespace feature {
inline constexpr char kUserfaultfd[] = "userfaultfd";
inline constexpr char kDevUserfaultfd[] = "dev_userfaultfd";
inline constexpr char kUffdWp[] = "uffd_wp";
inline constexpr char kUffdWpAsync[] = "uffd_wp_async";
inline constexpr char kUffdWpUnpopulated[] = "uffd_wp_unpopulated";
inline constexpr char kUffdWpHugetlbfsShmem[] = "uffd_wp_hugetlbfs_shmem";
inline constexpr char kUffdMinorShmem[] = "uffd_minor_shmem";
inline constexpr char kUffdMinorHugetlbfs[] = "uffd_minor_hugetlbfs";
inline constexpr char kUffdMove[] = "uffd_move";
inline constexpr char kPagemapScan[] = "pagemap_scan";
inline constexpr char kPagemapScanWp[] = "pagemap_scan_wp";
inline constexpr char kSoftDirty[] = "soft_dirty";
inline constexpr char kIoUring[] = "io_uring";
inline constexpr char kIoUringReadv[] = "io_uring_op_readv";
inline constexpr char kIoUringWritev[] = "io_uring_op_writev";
inline constexpr char kIoUringSendmsg[] = "io_uring_op_sendmsg";
inline constexpr char kIoUringRecvmsg[] = "io_uring_op_recvmsg";
inline constexpr char kIoUringRead[] = "io_uring_op_read";
inline constexpr char kIoUringWrite[] = "io_uring_op_write";
inline constexpr char kIoUringSend[] = "io_uring_op_send";
inline constexpr char kIoUringRecv[] = "io_uring_op_recv";
inline constexpr char kIoUringSendZc[] = "io_uring_op_send_zc";
inline constexpr char kIoUringSendmsgZc[] = "io_uring_op_sendmsg_zc";
inline constexpr char kClone3SetTid[] = "clone3_set_tid";
inline constexpr char kPidfdOpen[] = "pidfd_open";
inline constexpr char kProcessVmReadv[] = "process_vm_readv";
inline constexpr char kPrctlSetMmMap[] = "prctl_set_mm_map";
inline constexpr char kCapSysAdmin[] = "cap_sys_admin";
inline constexpr char kCapCheckpointRestore[] = "cap_checkpoint_restore";
inline constexpr char kCapSysResource[] = "cap_sys_resource";
inline constexpr char kCapSysPtrace[] = "cap_sys_ptrace";
inline constexpr char kTransparentHugepages[] = "transparent_hugepages";

// Dirty-tracking backends (KernelCaps::dirty_backends), best first.
inline constexpr char kBackendPagemapScan[] = "pagemap-scan";
inline constexpr char kBackendSoftDirty[] = "soft-dirty";
inline constexpr char kBackendUffdWp[] = "uffd-wp";
inline constexpr char kBackendMprotect[] = "mprotect";
inline constexpr char kBackendFull[] = "full";
}  // namespace feature

}  // namespace procmig

#endif  // PROCMIG_OS_KERNEL_CAPS_H_
