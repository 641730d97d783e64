// The individual probes behind ProbeKernelCaps, one function per area. Internal to the os module
// (not for other modules; they read KernelCaps); declared here so that tests can run one probe
// at a time against a fake Os.
//
// Each probe appends Features to `out` in a fixed order and never fails: a failed step becomes
// the reason of an unavailable feature. ScopedFd and ScopedMapping are the probes' cleanup
// helpers (they live here rather than in a header of their own because nothing else should use
// them: real code owns fds and mappings in the objects that use them).
#ifndef PROCMIG_OS_KERNEL_PROBES_H_
#define PROCMIG_OS_KERNEL_PROBES_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "os/kernel_caps.h"
#include "os/os.h"

namespace procmig::probes {

inline constexpr char kSectionUserfaultfd[] = "userfaultfd";
inline constexpr char kSectionDirty[] = "dirty tracking primitives";
inline constexpr char kSectionIoUring[] = "io_uring";
inline constexpr char kSectionProcess[] = "process control";
inline constexpr char kSectionCapabilities[] = "capabilities";
inline constexpr char kSectionMemory[] = "memory";
inline constexpr char kSectionBackends[] = "dirty tracking backends";

// userfaultfd (syscall), dev_userfaultfd, then one entry per uffd feature bit.
void ProbeUserfaultfd(Os& os, std::vector<Feature>* out);
// pagemap_scan (a plain scan) and pagemap_scan_wp (a write-protect/write/scan cycle).
void ProbePagemapScan(Os& os, std::vector<Feature>* out);
// soft_dirty, by behaviour: clear_refs, write, read pagemap bit 55.
void ProbeSoftDirty(Os& os, std::vector<Feature>* out);
// io_uring, then io_uring_op_* for each opcode the transport uses.
void ProbeIoUring(Os& os, std::vector<Feature>* out);
// clone3_set_tid, pidfd_open, process_vm_readv, prctl_set_mm_map.
void ProbeProcessControl(Os& os, std::vector<Feature>* out);
// cap_sys_admin, cap_checkpoint_restore, cap_sys_resource, cap_sys_ptrace.
void ProbeCapabilities(Os& os, std::vector<Feature>* out);
// transparent_hugepages; fills caps->thp_mode.
void ProbeMemory(Os& os, KernelCaps* caps);

// "<step>: EPERM (Operation not permitted)" when `status` carries an errno, else
// "<step>: <message>".
std::string Failed(absl::string_view step, const absl::Status& status);

// Closes the fd (through the Os) when it goes out of scope.
class ScopedFd {
 public:
  ScopedFd(Os& os, int fd) : os_(os), fd_(fd) {}
  ~ScopedFd() {
    if (fd_ >= 0) (void)os_.Close(fd_);
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  int get() const { return fd_; }

 private:
  Os& os_;
  int fd_;
};

// Unmaps the range (through the Os) when it goes out of scope.
class ScopedMapping {
 public:
  ScopedMapping(Os& os, void* addr, size_t length) : os_(os), addr_(addr), length_(length) {}
  ~ScopedMapping() {
    if (addr_ != nullptr) (void)os_.Munmap(addr_, length_);
  }
  ScopedMapping(const ScopedMapping&) = delete;
  ScopedMapping& operator=(const ScopedMapping&) = delete;
  char* get() const { return static_cast<char*>(addr_); }

 private:
  Os& os_;
  void* addr_;
  size_t length_;
};

}  // namespace procmig::probes

#endif  // PROCMIG_OS_KERNEL_PROBES_H_
