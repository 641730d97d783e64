// Probes of io_uring, process control (clone3 set_tid, pidfd_open, process_vm_readv,
// PR_SET_MM_MAP), capabilities and THP. io_uring is probed with the raw syscalls and
// <linux/io_uring.h>: liburing has exactly one includer, the transport module (STYLE.md).
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/io_uring.h>
#include <signal.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "os/kernel_compat.h"
#include "os/kernel_probes.h"

namespace procmig::probes {
namespace {

void Add(std::vector<Feature>* out, absl::string_view section, absl::string_view name,
         bool available, std::string reason) {
  out->push_back(Feature{std::string(section), std::string(name), available, std::move(reason)});
}

struct UringOp {
  const char* name;
  int op;
  const char* macro;
};

constexpr UringOp kUringOps[] = {
    {feature::kIoUringReadv, IORING_OP_READV, "IORING_OP_READV"},
    {feature::kIoUringWritev, IORING_OP_WRITEV, "IORING_OP_WRITEV"},
    {feature::kIoUringSendmsg, IORING_OP_SENDMSG, "IORING_OP_SENDMSG"},
    {feature::kIoUringRecvmsg, IORING_OP_RECVMSG, "IORING_OP_RECVMSG"},
    {feature::kIoUringRead, IORING_OP_READ, "IORING_OP_READ"},
    {feature::kIoUringWrite, IORING_OP_WRITE, "IORING_OP_WRITE"},
    {feature::kIoUringSend, IORING_OP_SEND, "IORING_OP_SEND"},
    {feature::kIoUringRecv, IORING_OP_RECV, "IORING_OP_RECV"},
    {feature::kIoUringSendZc, IORING_OP_SEND_ZC, "IORING_OP_SEND_ZC"},
    {feature::kIoUringSendmsgZc, IORING_OP_SENDMSG_ZC, "IORING_OP_SENDMSG_ZC"},
};

// The probe buffer holds the header and one slot per possible opcode (last_op is a u8).
constexpr unsigned kProbeOps = 256;

struct Cap {
  const char* name;
  int cap;
  const char* macro;
  const char* used_for;
};

constexpr Cap kCaps[] = {
    {feature::kCapSysAdmin, CAP_SYS_ADMIN, "CAP_SYS_ADMIN",
     "clone3 set_tid and PR_SET_MM_EXE_FILE before CAP_CHECKPOINT_RESTORE existed"},
    {feature::kCapCheckpointRestore, CAP_CHECKPOINT_RESTORE, "CAP_CHECKPOINT_RESTORE",
     "clone3 set_tid to the old thread ids, /proc/PID/map_files"},
    {feature::kCapSysResource, CAP_SYS_RESOURCE, "CAP_SYS_RESOURCE",
     "single PR_SET_MM_* fields (PR_SET_MM_MAP does not need it) and raising hard rlimits"},
    {feature::kCapSysPtrace, CAP_SYS_PTRACE, "CAP_SYS_PTRACE",
     "process_vm_readv and pidfd_getfd on processes of other users, kernel-mode uffd faults"},
};

void ProbeClone3SetTid(Os& os, std::vector<Feature>* out) {
  // Ask for a child whose pid is our own: that pid is certainly taken. A kernel that knows
  // set_tid and lets us use it refuses with EEXIST before creating anything; without the
  // capability it says EPERM, before 5.5 (no set_tid in clone_args) E2BIG, before 5.3 ENOSYS.
  // If some kernel created a child anyway, Os::Clone3 makes it exit at once and we reap it.
  // The refusal comes from alloc_pid, after copy_mm: the probe costs a fork's page-table copy.
  pid_t self = os.GetPid();
  pid_t set_tid[1] = {self};
  clone_args args = {};
  args.exit_signal = SIGCHLD;
  args.set_tid = reinterpret_cast<uintptr_t>(set_tid);
  args.set_tid_size = 1;
  absl::StatusOr<pid_t> child = os.Clone3(&args, CLONE_ARGS_SIZE_VER2);
  auto add = [&](bool ok, std::string reason) {
    Add(out, kSectionProcess, feature::kClone3SetTid, ok, std::move(reason));
  };
  if (child.ok()) {
    (void)os.WaitPid(*child, 0);
    return add(false,
               absl::StrCat("clone3 with set_tid = own pid ", self, " created child ", *child,
                            " instead of failing: set_tid "
                            "is ignored here"));
  }
  switch (OsErrno(child.status())) {
    case EEXIST:
      return add(true, absl::StrCat("clone3 took set_tid and refused pid ", self,
                                    " as taken (EEXIST): threads can get their old ids where "
                                    "those are free"));
    case EPERM:
      return add(false, absl::StrCat(Failed("clone3 with set_tid", child.status()),
                                     ": needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN over the "
                                     "pid namespace"));
    case E2BIG:
      return add(false, absl::StrCat(Failed("clone3 with set_tid", child.status()),
                                     ": kernel's clone_args has no set_tid (Linux < 5.5)"));
    case ENOSYS:
      return add(false, absl::StrCat(Failed("clone3", child.status()), ": Linux < 5.3"));
    default:
      return add(false, Failed("clone3 with set_tid", child.status()));
  }
}

void ProbePidfdOpen(Os& os, std::vector<Feature>* out) {
  absl::StatusOr<int> fd = os.PidfdOpen(os.GetPid(), 0);
  if (!fd.ok()) {
    Add(out, kSectionProcess, feature::kPidfdOpen, false, Failed("pidfd_open(self)", fd.status()));
    return;
  }
  (void)os.Close(*fd);
  Add(out, kSectionProcess, feature::kPidfdOpen, true, "pidfd_open(self) returned a pidfd");
}

void ProbeProcessVmReadv(Os& os, std::vector<Feature>* out) {
  // Read a known pattern out of our own address space through the cross-process path.
  static constexpr char kPattern[] = "procmig process_vm_readv probe";
  char dst[sizeof(kPattern)] = {};
  struct iovec local = {dst, sizeof(dst)};
  struct iovec remote = {const_cast<char*>(kPattern), sizeof(kPattern)};
  absl::StatusOr<size_t> n = os.ProcessVmReadv(os.GetPid(), &local, 1, &remote, 1);
  if (!n.ok()) {
    Add(out, kSectionProcess, feature::kProcessVmReadv, false,
        Failed("process_vm_readv(self)", n.status()));
  } else if (*n != sizeof(kPattern) || std::memcmp(dst, kPattern, sizeof(kPattern)) != 0) {
    Add(out, kSectionProcess, feature::kProcessVmReadv, false,
        absl::StrCat("process_vm_readv(self) returned ", *n, " bytes that differ from the source"));
  } else {
    Add(out, kSectionProcess, feature::kProcessVmReadv, true,
        absl::StrCat("read ", *n, " known bytes back from this process"));
  }
}

void ProbeSetMmMap(Os& os, std::vector<Feature>* out) {
  // PR_SET_MM_MAP_SIZE only reports the struct size the kernel expects: it changes nothing, and
  // it fails with EINVAL where CONFIG_CHECKPOINT_RESTORE is off (no PR_SET_MM_MAP at all).
  unsigned int size = 0;
  absl::StatusOr<long> r =
      os.Prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE, reinterpret_cast<uintptr_t>(&size), 0, 0);
  if (!r.ok()) {
    std::string why = Failed("prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE)", r.status());
    if (OsErrno(r.status()) == EINVAL) absl::StrAppend(&why, ": CONFIG_CHECKPOINT_RESTORE off?");
    Add(out, kSectionProcess, feature::kPrctlSetMmMap, false, why);
  } else if (size != sizeof(struct prctl_mm_map)) {
    Add(out, kSectionProcess, feature::kPrctlSetMmMap, false,
        absl::StrCat("kernel expects a ", size, "-byte prctl_mm_map, procmig was built with ",
                     sizeof(struct prctl_mm_map)));
  } else {
    Add(out, kSectionProcess, feature::kPrctlSetMmMap, true,
        absl::StrCat("PR_SET_MM_MAP_SIZE = ", size, " = sizeof(struct prctl_mm_map)"));
  }
}

}  // namespace

std::string Failed(absl::string_view step, const absl::Status& status) {
  int err = OsErrno(status);
  if (err == 0) return absl::StrCat(step, ": ", status.message());
  const char* desc = strerrordesc_np(err);
  return absl::StrCat(step, ": ", ErrnoName(err), " (", desc != nullptr ? desc : "?", ")");
}

void ProbeIoUring(Os& os, std::vector<Feature>* out) {
  io_uring_params params;
  std::memset(&params, 0, sizeof(params));
  absl::StatusOr<int> ring = os.IoUringSetup(4, &params);
  if (!ring.ok()) {
    std::string why = Failed("io_uring_setup", ring.status());
    absl::StatusOr<std::string> disabled = os.ReadFile("/proc/sys/kernel/io_uring_disabled");
    if (disabled.ok()) {
      absl::StrAppend(&why, " (kernel.io_uring_disabled = ", absl::StripAsciiWhitespace(*disabled),
                      ")");
    }
    Add(out, kSectionIoUring, feature::kIoUring, false, why);
    for (const UringOp& op : kUringOps) {
      Add(out, kSectionIoUring, op.name, false, absl::StrCat("no io_uring: ", why));
    }
    return;
  }
  ScopedFd ring_fd(os, *ring);
  Add(out, kSectionIoUring, feature::kIoUring, true,
      absl::StrFormat("io_uring_setup(4): %u SQ entries, features 0x%x", params.sq_entries,
                      params.features));

  const size_t bytes = sizeof(io_uring_probe) + kProbeOps * sizeof(io_uring_probe_op);
  auto storage = std::make_unique<uint64_t[]>((bytes + 7) / 8);  // zeroed, 8-byte aligned
  auto* probe = reinterpret_cast<io_uring_probe*>(storage.get());
  absl::Status s =
      os.IoUringRegister(ring_fd.get(), IORING_REGISTER_PROBE, probe, kProbeOps).status();
  for (const UringOp& op : kUringOps) {
    if (!s.ok()) {
      Add(out, kSectionIoUring, op.name, false, Failed("IORING_REGISTER_PROBE", s));
    } else if (op.op <= probe->last_op && (probe->ops[op.op].flags & IO_URING_OP_SUPPORTED) != 0) {
      Add(out, kSectionIoUring, op.name, true,
          absl::StrCat("IORING_REGISTER_PROBE: ", op.macro, " (", op.op, ") supported"));
    } else {
      Add(out, kSectionIoUring, op.name, false,
          absl::StrCat("IORING_REGISTER_PROBE: ", op.macro, " (", op.op,
                       ") not supported (last_op ", probe->last_op, ")"));
    }
  }
}

void ProbeProcessControl(Os& os, std::vector<Feature>* out) {
  ProbeClone3SetTid(os, out);
  ProbePidfdOpen(os, out);
  ProbeProcessVmReadv(os, out);
  ProbeSetMmMap(os, out);
}

void ProbeCapabilities(Os& os, std::vector<Feature>* out) {
  absl::StatusOr<uint64_t> eff = os.EffectiveCapabilities();
  for (const Cap& c : kCaps) {
    if (!eff.ok()) {
      Add(out, kSectionCapabilities, c.name, false, Failed("capget", eff.status()));
      continue;
    }
    bool held = (*eff >> c.cap) & 1;
    Add(out, kSectionCapabilities, c.name, held,
        absl::StrFormat("%s (%d) %s the effective set 0x%x; used for %s", c.macro, c.cap,
                        held ? "in" : "not in", *eff, c.used_for));
  }
}

void ProbeMemory(Os& os, KernelCaps* caps) {
  constexpr char kThpEnabled[] = "/sys/kernel/mm/transparent_hugepage/enabled";
  absl::StatusOr<std::string> thp = os.ReadFile(kThpEnabled);
  if (!thp.ok()) {
    caps->thp_mode.clear();
    caps->features.push_back(Feature{kSectionMemory, feature::kTransparentHugepages, false,
                                     Failed(absl::StrCat("read ", kThpEnabled), thp.status())});
    return;
  }
  // The file lists every mode with the current one in brackets: "always [madvise] never".
  absl::string_view text = absl::StripAsciiWhitespace(*thp);
  std::string mode;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (word.size() > 2 && word.front() == '[' && word.back() == ']') {
      mode = std::string(word.substr(1, word.size() - 2));
    }
  }
  caps->thp_mode = mode;
  bool usable = mode == "always" || mode == "madvise";
  caps->features.push_back(Feature{
      kSectionMemory, feature::kTransparentHugepages, usable,
      mode.empty() ? absl::StrCat("no [mode] in ", kThpEnabled, ": '", text, "'")
                   : absl::StrCat("mode ", mode, " (", text, ")",
                                  mode == "madvise" ? ": only regions that ask for it" : "")});
}

}  // namespace procmig::probes
