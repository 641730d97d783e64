#include "restore/restore_process.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/rseq.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/crc32c.h"
#include "base/status_macros.h"
#include "migration/process_capture.h"
#include "migration/restore_check.h"
#include "os/file_identity.h"
#include "os/maps_parser.h"
#include "restore/restorer_abi.h"
#include "restore/restorer_blob.h"

extern "C" long procmig_blob_clone3(void* clone_args, uint64_t size)
    __attribute__((visibility("hidden")));

namespace procmig {

namespace abi = restore_abi;

namespace {

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// Raw system calls for code that runs in a copy of this process (or in a child sharing its
// memory) where libc's wrappers, which write errno in the caller's TLS, must not be used.
long RawSyscall(long n, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0) {
  register long r10 asm("r10") = d;
  register long r8 asm("r8") = e;
  long ret;
  asm volatile("syscall"
               : "=a"(ret)
               : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
               : "rcx", "r11", "memory");
  return ret;
}

struct CloneArgs {
  uint64_t flags = 0, pidfd = 0, child_tid = 0, parent_tid = 0, exit_signal = 0, stack = 0,
           stack_size = 0, tls = 0, set_tid = 0, set_tid_size = 0, cgroup = 0;
};

using EntryFn = void (*)(abi::Args*, uint64_t);
using Clone3Fn = long (*)(void*, uint64_t);

struct InitArgs {
  Clone3Fn clone3 = nullptr;  // the blob region's copy
  CloneArgs process;          // its stack set: the process starts in the blob
  uint64_t pid = 0;           // the pid to create the process with
  int report_fd = -1;
  uint64_t created_ns = 0;  // CLOCK_MONOTONIC when init's clone3 of the process returned
};

uint64_t RawNowNs() {
  timespec ts{};
  RawSyscall(SYS_clock_gettime, CLOCK_MONOTONIC, reinterpret_cast<long>(&ts));
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

void ReportFailure(int fd, uint32_t step, long err) {
  abi::Report r;
  r.kind = abi::kReportFailed;
  r.step = step;
  r.err = static_cast<int32_t>(-err);
  RawSyscall(SYS_write, fd, reinterpret_cast<long>(&r), sizeof r);
}

// Says on fd 2 (the receiver's stderr, which init keeps) that the restored process was killed by
// a signal: after `receive --detach` nobody else would know. Raw system calls only (init).
void ReportKilled(long pid, int sig, bool core) {
  char buf[128];
  size_t n = 0;
  auto put = [&](const char* s) {
    while (*s != '\0' && n < sizeof buf) buf[n++] = *s++;
  };
  auto num = [&](unsigned long v) {
    char d[24];
    int k = 0;
    do {
      d[k++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    while (k > 0 && n < sizeof buf) buf[n++] = d[--k];
  };
  put("procmig init: the restored process (pid ");
  num(static_cast<unsigned long>(pid));
  put(" in its PID namespace) was killed by signal ");
  num(static_cast<unsigned long>(sig));
  put(core ? " (core dumped)\n" : "\n");
  RawSyscall(SYS_write, 2, reinterpret_cast<long>(buf), static_cast<long>(n));
}

// The new PID namespace's init. Runs on its own stack in our memory (CLONE_VM): raw system calls
// only. Creates the process with its old pid, then reaps until it is gone and exits with its
// status; a death by signal is reported on the stderr it keeps.
[[noreturn]] void InitMain(InitArgs* ia, uint64_t) {
  // Our own /proc, so the program's /proc/self, /proc/self/task, pids all agree with its view.
  RawSyscall(SYS_mount, reinterpret_cast<long>("none"), reinterpret_cast<long>("/"), 0,
             MS_REC | MS_PRIVATE, 0);
  RawSyscall(SYS_mount, reinterpret_cast<long>("proc"), reinterpret_cast<long>("/proc"),
             reinterpret_cast<long>("proc"), MS_NOSUID | MS_NODEV | MS_NOEXEC, 0);
  CloneArgs ca = ia->process;
  uint64_t pid = ia->pid;
  ca.set_tid = reinterpret_cast<uint64_t>(&pid);
  ca.set_tid_size = 1;
  const long child = ia->clone3(&ca, sizeof ca);  // the child starts in the blob
  __atomic_store_n(&ia->created_ns, RawNowNs(), __ATOMIC_RELEASE);
  if (child < 0) {
    ReportFailure(ia->report_fd, abi::kStepPid, child);
    for (;;) RawSyscall(SYS_exit_group, 127);
  }
  RawSyscall(SYS_close_range, 3, ~0u, 0);
  for (;;) {
    int status = 0;
    long r = RawSyscall(SYS_wait4, -1, reinterpret_cast<long>(&status), __WALL, 0);
    if (r == child) {
      if (WIFSIGNALED(status)) ReportKilled(child, WTERMSIG(status), WCOREDUMP(status));
      int code = WIFEXITED(status) ? WEXITSTATUS(status)
                                   : (WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 1);
      for (;;) RawSyscall(SYS_exit_group, code);
    }
    if (r == -ECHILD) {
      for (;;) RawSyscall(SYS_exit_group, 1);
    }
  }
}

// Descriptors of ours the new process inherits and we close once it exists (or on failure).
class OwnedFds {
 public:
  OwnedFds() = default;
  OwnedFds(const OwnedFds&) = delete;
  OwnedFds& operator=(const OwnedFds&) = delete;
  ~OwnedFds() {
    for (int fd : fds_) close(fd);
  }
  void Add(int fd) { fds_.push_back(fd); }

 private:
  std::vector<int> fds_;
};

// A pipe or socketpair rebuilt here: its two new ends and what stands for them in the record.
struct TwoEnds {
  FdKind kind;
  uint64_t dev;
  uint64_t id[2];  // a pipe's inode (twice); a socketpair's two sockets' inodes
  int ends[2];
};

// Which end of `t` the record `g` is: a pipe's read end 0 (O_RDWR counts as one, as in
// IsOwnPipe) or write end 1; a socketpair's socket id[0] or id[1]. -1: not of `t`.
int EndIn(const TwoEnds& t, const FdRecord& g) {
  if (g.kind != t.kind) return -1;
  if (t.kind == FdKind::kPipe) {
    if (g.dev != t.dev || g.inode != t.id[0]) return -1;
    return (g.flags & O_ACCMODE) == O_WRONLY ? 1 : 0;
  }
  return g.inode == t.id[0] ? 0 : g.inode == t.id[1] ? 1 : -1;
}

// A new pipe or socketpair for the own pipe or socketpair `f` belongs to (its ends in `made`),
// with a pipe's capacity, each end's queued bytes (written from the other end; a pipe's are all
// on its first read end, HoldsPipeData) and each end's O_NONBLOCK as its first record had it.
absl::StatusOr<TwoEnds> MakeTwoEnds(const ProcessStateRecord& st, const FdRecord& f,
                                    OwnedFds* made) {
  const bool pipe = f.kind == FdKind::kPipe;
  TwoEnds t{f.kind, f.dev, {f.inode, pipe ? f.inode : f.socket_peer}, {-1, -1}};
  const int r = pipe ? pipe2(t.ends, O_CLOEXEC | O_NONBLOCK)
                     : socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, t.ends);
  if (r != 0) return ErrnoStatus(absl::StatusCode::kInternal, pipe ? "pipe2" : "socketpair", errno);
  made->Add(t.ends[0]);
  made->Add(t.ends[1]);
  if (pipe && f.pipe_size != 0 &&
      fcntl(t.ends[1], F_SETPIPE_SZ, static_cast<int>(f.pipe_size)) < 0) {
    const int err = errno;
    return ErrnoStatus(absl::StatusCode::kInternal,
                       absl::StrCat("set its size to ", f.pipe_size, " bytes"), err);
  }
  bool seen[2] = {false, false};
  for (const FdRecord& g : st.fds) {
    const int end = EndIn(t, g);
    if (end < 0 || seen[end]) continue;
    seen[end] = true;
    for (size_t sent = 0; sent < g.unread.size();) {
      const ssize_t w = write(t.ends[1 - end], g.unread.data() + sent, g.unread.size() - sent);
      if (w <= 0) {
        const int err = w < 0 ? errno : ENOSPC;
        return ErrnoStatus(absl::StatusCode::kInternal,
                           absl::StrCat("queue its ", g.unread.size(), " unread bytes"), err);
      }
      sent += static_cast<size_t>(w);
    }
    if ((g.flags & O_NONBLOCK) == 0 && fcntl(t.ends[end], F_SETFL, 0) != 0) {
      return ErrnoStatus(absl::StatusCode::kInternal, "clear O_NONBLOCK", errno);
    }
  }
  return t;
}

// A new eventfd (its counter, EFD_SEMAPHORE, O_NONBLOCK) or an empty epoll instance for `f`.
absl::StatusOr<int> MakeEventFd(const FdRecord& f) {
  if (f.kind == FdKind::kEpoll) {
    const int fd = epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0) return ErrnoStatus(absl::StatusCode::kInternal, "epoll_create1", errno);
    return fd;
  }
  // eventfd takes a 32-bit initial value: the counter is written instead (it adds).
  const int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK | (f.eventfd_semaphore ? EFD_SEMAPHORE : 0));
  if (fd < 0) return ErrnoStatus(absl::StatusCode::kInternal, "eventfd", errno);
  absl::Status s;
  const uint64_t count = f.eventfd_count;
  if (count != 0 && write(fd, &count, sizeof count) != sizeof count) {
    const int err = errno;
    s = ErrnoStatus(absl::StatusCode::kInternal, absl::StrCat("set its counter to ", count), err);
  } else if ((f.flags & O_NONBLOCK) == 0 && fcntl(fd, F_SETFL, 0) != 0) {
    s = ErrnoStatus(absl::StatusCode::kInternal, "clear O_NONBLOCK", errno);
  }
  if (s.ok()) return fd;
  close(fd);
  return s;
}

// The descriptors made again here rather than reopened (RebuiltHere), each duplicated above
// `above`, where the blob takes it (`out`: {the record's fd, ours}):
//   - the pipes and UNIX stream socketpairs the process held both ends of (MakeTwoEnds);
//   - eventfds and epoll instances, empty (the blob adds what they watched once every
//     descriptor is in place).
// A dup (dup_of) gets nothing here: the blob duplicates the first of its description.
// Errors name the descriptor and the step.
absl::Status RebuildFds(const ProcessStateRecord& st, int above,
                        std::vector<std::pair<int, int>>* out, OwnedFds* owned) {
  std::vector<TwoEnds> made_pairs;
  OwnedFds made;  // the new objects' own descriptors: only their duplicates go on
  for (const FdRecord& f : st.fds) {
    if (!RebuiltHere(st, f) || f.dup_of >= 0) continue;
    auto failed = [&](const absl::Status& s) {
      return absl::Status(s.code(), absl::StrCat("restore: fd ", f.fd, " (the process's own ",
                                                 f.path, "): ", s.message()));
    };
    int from = -1;  // ours, to duplicate above `above`
    if (f.kind == FdKind::kEventfd || f.kind == FdKind::kEpoll) {
      absl::StatusOr<int> fd = MakeEventFd(f);
      if (!fd.ok()) return failed(fd.status());
      made.Add(*fd);
      from = *fd;
    } else {
      const TwoEnds* t = nullptr;
      for (const TwoEnds& q : made_pairs) {
        if (EndIn(q, f) >= 0) t = &q;
      }
      if (t == nullptr) {
        absl::StatusOr<TwoEnds> n = MakeTwoEnds(st, f, &made);
        if (!n.ok()) return failed(n.status());
        made_pairs.push_back(*n);
        t = &made_pairs.back();
      }
      from = t->ends[EndIn(*t, f)];
    }
    const int ours = fcntl(from, F_DUPFD_CLOEXEC, above);
    if (ours < 0) return failed(ErrnoStatus(absl::StatusCode::kInternal, "duplicate it", errno));
    owned->Add(ours);
    out->push_back({static_cast<int>(f.fd), ours});
  }
  return absl::OkStatus();
}

// init shares our memory and returns from the blob region's clone3 wrapper only after its child
// exists, and the child may run through the blob and report before init is scheduled again (seen
// on a loaded 2-CPU machine: init faulted on the instruction after its syscall, in a region
// already unmapped, and its PID namespace died with it, the restored process included). True once
// init has left the blob (it stores created_ns right after the wrapper returns), false if it had
// not within `timeout_ns`.
bool WaitInitLeftBlob(const InitArgs* ia, uint64_t timeout_ns) {
  const uint64_t until = NowNs() + timeout_ns;
  while (__atomic_load_n(&ia->created_ns, __ATOMIC_ACQUIRE) == 0) {
    if (NowNs() >= until) return false;
    timespec nap{0, 20'000};
    nanosleep(&nap, nullptr);
  }
  return true;
}

// MADV_DONTFORK on every VMA of ours outside the ranges the blob keeps (and MADV_DOFORK again
// when done): the new process unmaps them first thing, so copying their page tables into it
// only lengthens the pause. Best effort: a VMA the kernel refuses is simply copied. `also` is
// one more range to copy: the creating thread's rseq area, which the kernel writes in the new
// process (SIGSEGV if it is not there) until the blob unregisters it.
class DontForkOutside {
 public:
  DontForkOutside(std::span<const MemoryRegion> maps,
                  const std::vector<std::pair<uint64_t, uint64_t>>& keep,
                  std::pair<uint64_t, uint64_t> also) {
    for (const MemoryRegion& r : maps) {
      if (r.start >= kRestoreTaskTop || (!r.path.empty() && r.path[0] == '[' &&
                                         r.path != "[heap]" && r.path.rfind("[anon:", 0) != 0)) {
        continue;  // the kernel's own mappings ([vdso], [vvar]...) and the stack stay
      }
      bool kept = false;
      for (const auto& [lo, hi] : keep) kept |= r.start < hi && lo < r.end;
      if (kept || (r.start < also.second && also.first < r.end)) continue;
      if (!runs_.empty() && runs_.back().second == r.start) {
        runs_.back().second = r.end;
      } else {
        runs_.push_back({r.start, r.end});
      }
    }
    Apply(MADV_DONTFORK);
  }
  ~DontForkOutside() { Apply(MADV_DOFORK); }
  DontForkOutside(const DontForkOutside&) = delete;
  DontForkOutside& operator=(const DontForkOutside&) = delete;

 private:
  void Apply(int advice) {
    for (const auto& [lo, hi] : runs_) (void)madvise(reinterpret_cast<void*>(lo), hi - lo, advice);
  }
  std::vector<std::pair<uint64_t, uint64_t>> runs_;
};

std::string CpuMissing(const CpuFeatures& need, const CpuFeatures& have) {
  std::vector<std::string> out;
  auto word = [&](const char* name, uint64_t n, uint64_t h) {
    uint64_t miss = n & ~h;
    for (int b = 0; b < 64; ++b) {
      if (miss & (1ull << b)) out.push_back(absl::StrCat(name, " bit ", b));
    }
  };
  word("cpuid.1.ecx", need.leaf1_ecx & ~(1u << 27), have.leaf1_ecx);  // OSXSAVE is the kernel's
  word("cpuid.1.edx", need.leaf1_edx, have.leaf1_edx);
  word("cpuid.7.ebx", need.leaf7_ebx, have.leaf7_ebx);
  word("cpuid.7.ecx", need.leaf7_ecx, have.leaf7_ecx);
  word("cpuid.7.edx", need.leaf7_edx, have.leaf7_edx);
  word("xcr0", need.xcr0_low, have.xcr0_low);
  word("AT_HWCAP2", need.hwcap2, have.hwcap2);
  return absl::StrJoin(out, ", ");
}

absl::StatusOr<std::vector<MemoryRegion>> OwnMaps() {
  std::ifstream in("/proc/self/maps");
  if (!in) return absl::InternalError("restore: cannot read /proc/self/maps");
  std::stringstream ss;
  ss << in.rdbuf();
  return MapsParser::Parse(ss.str());
}

void CheckCpuAndVdso(const CpuFeatures& cpu, const VdsoIdentity& vdso,
                     std::span<const MemoryRegion> maps, std::vector<std::string>* why) {
  const CpuFeatures here = CaptureCpuFeatures();
  std::string missing = CpuMissing(cpu, here);
  if (!missing.empty()) why->push_back("CPU features the source had are missing here: " + missing);
  // The vDSO: same bytes, or the old code would call into a different one.
  for (const MemoryRegion& r : maps) {
    if (r.path != "[vdso]") continue;
    if (vdso.vdso_end - vdso.vdso_start != r.size()) {
      why->push_back(absl::StrCat("the vDSO differs: ", vdso.vdso_end - vdso.vdso_start,
                                  " bytes on the source, ", r.size(), " here"));
    } else if (crc32c::Value(reinterpret_cast<const void*>(r.start), r.size()) != vdso.crc) {
      why->push_back("the vDSO differs (its crc32c): the source ran another kernel build");
    }
  }
}

std::string MtimeText(uint64_t ns) {
  return absl::StrFormat("%d.%09d", ns / 1'000'000'000ull, ns % 1'000'000'000ull);
}

// The full check of one file against the source's entry: every reason into *why. Returns true
// when the file's identity was checked and matched (*here is its stamp then).
bool CheckFile(const FileCheck& f, std::vector<std::string>* why,
               std::vector<std::string>* warnings, FileStamp* here) {
  absl::StatusOr<FileStamp> st = StatFile(f.path);
  if (!st.ok()) {
    // A mapping whose every page came as a RAM block does not need its file.
    if (f.flags & kFileRequired) why->push_back(std::string(st.status().message()));
    return false;
  }
  *here = *st;
  bool ok = true;
  if (f.size != 0 && st->size != f.size) {
    why->push_back(absl::StrCat(f.path, ": size ", st->size, " here, ", f.size, " at the source"));
    ok = false;
  }
  if (f.mtime_ns != 0 && st->mtime_ns != f.mtime_ns) {
    why->push_back(absl::StrCat(f.path, ": mtime ", MtimeText(st->mtime_ns), " here, ",
                                MtimeText(f.mtime_ns), " at the source"));
    ok = false;
  }
  if (f.id.kind == FileIdKind::kNone) return false;  // not recorded: size and mtime only
  if (f.id.kind == FileIdKind::kUnknown) {
    if (warnings != nullptr) {
      warnings->push_back(absl::StrCat(
          f.path,
          ": not identified at the source (mapped during the stop, or replaced on disk "
          "after it was mapped): its content is not checked"));
    }
    return false;
  }
  if (!ok) return false;  // a different size already says it; no need to read it
  absl::StatusOr<FileIdentity> id = ComputeFileIdentity(f.path, *st, f.offset, f.length);
  if (!id.ok()) {
    why->push_back(
        absl::StrCat(f.path, ": cannot read its identity here: ", id.status().message()));
    return false;
  }
  if (*id == f.id) return true;
  std::string range;
  if (f.id.kind == FileIdKind::kCrc32c || id->kind == FileIdKind::kCrc32c) {
    const uint64_t end = std::min(f.offset + f.length, st->size);
    range = absl::StrCat(" (bytes ", f.offset, "..", std::max(end, f.offset), " of the file)");
  }
  // "build-id 3a4f.. here, 9c1e.. at the source"; the kind twice only when they differ.
  std::string source = DescribeFileIdentity(f.id);
  if (id->kind == f.id.kind) source = source.substr(source.find(' ') + 1);
  why->push_back(absl::StrCat(f.path, ": ", DescribeFileIdentity(*id), " here, ", source,
                              " at the source", range));
  return false;
}

bool SameSourceEntry(const FileCheck& a, const FileCheck& b) {
  return a.path == b.path && a.inode == b.inode && a.size == b.size && a.mtime_ns == b.mtime_ns &&
         a.offset == b.offset && a.length == b.length && a.id == b.id;
}

absl::Status Refusal(uint32_t pid, std::vector<std::string> why) {
  std::sort(why.begin(), why.end());
  why.erase(std::unique(why.begin(), why.end()), why.end());
  if (why.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("cannot restore pid ", pid, " here: ", absl::StrJoin(why, "; ")));
}

// CheckRestorable against our own layout `maps` (read once by the caller).
absl::Status CheckRestorableWith(const ProcessStateRecord& state,
                                 std::span<const MemoryRegion> maps, const VerifiedFiles* verified,
                                 std::vector<std::string>* warnings) {
  std::vector<std::string> why;
  CheckCpuAndVdso(state.cpu, state.vdso, maps, &why);
  // Files that will be mapped from disk must be the ones the source mapped.
  const RestoreCheckRecord files = BuildRestoreCheck(state);
  for (const FileCheck& f : files.files) {
    const VerifiedFile* seen = nullptr;
    if (verified != nullptr) {
      for (const VerifiedFile& v : *verified) {
        if (SameSourceEntry(v.source, f)) {
          seen = &v;
          break;
        }
      }
    }
    if (seen == nullptr) {
      FileStamp here;
      (void)CheckFile(f, &why, warnings, &here);
      continue;
    }
    // Verified up front: the same file must still be there.
    absl::StatusOr<FileStamp> st = StatFile(f.path);
    if (!st.ok()) {
      why.push_back(absl::StrCat(st.status().message(), " (gone since the up-front check)"));
    } else if (*st != seen->here) {
      why.push_back(absl::StrCat(
          f.path, ": changed here since the up-front check (inode ", st->inode, ", size ", st->size,
          ", mtime ", MtimeText(st->mtime_ns), ", ctime ", MtimeText(st->ctime_ns), "; it was ",
          seen->here.inode, ", ", seen->here.size, ", ", MtimeText(seen->here.mtime_ns), ", ",
          MtimeText(seen->here.ctime_ns), ")"));
    }
  }
  if (warnings != nullptr) {
    std::sort(warnings->begin(), warnings->end());
    warnings->erase(std::unique(warnings->begin(), warnings->end()), warnings->end());
  }
  return Refusal(state.pid, std::move(why));
}

}  // namespace

absl::Status CheckRestorable(const ProcessStateRecord& state, const VerifiedFiles* verified,
                             std::vector<std::string>* warnings) {
  ASSIGN_OR_RETURN(std::vector<MemoryRegion> maps, OwnMaps());
  return CheckRestorableWith(state, maps, verified, warnings);
}

absl::Status CheckRestorableUpFront(const RestoreCheckRecord& check, VerifiedFiles* verified,
                                    std::vector<MemoryRegion>* layout) {
  ASSIGN_OR_RETURN(std::vector<MemoryRegion> maps, OwnMaps());
  std::vector<std::string> why;
  CheckCpuAndVdso(check.cpu, check.vdso, maps, &why);
  verified->clear();
  for (const FileCheck& f : check.files) {
    FileStamp here;
    if (CheckFile(f, &why, nullptr, &here)) verified->push_back({f, here});
  }
  if (layout != nullptr) *layout = std::move(maps);
  return Refusal(check.pid, std::move(why));
}

absl::StatusOr<RestoredProcess> StartRestoredProcess(const ProcessStateRecord& state,
                                                     std::span<const PlacedBlock> blocks,
                                                     const RestoreProcessOptions& options) {
  const uint64_t t0 = NowNs();
  // Our layout: the one read up front plus the session's own mappings since (the blocks, the
  // premaps), or a fresh read.
  std::vector<MemoryRegion> maps;
  const bool from_snapshot = !options.layout.empty();
  if (from_snapshot) {
    maps.assign(options.layout.begin(), options.layout.end());
    auto add = [&](uint64_t start, uint64_t end) {
      MemoryRegion r;
      r.start = start;
      r.end = end;
      maps.push_back(r);
    };
    for (const PlacedBlock& b : blocks) add(b.temp, b.temp + b.length);
    for (const PremappedFile& f : options.premapped) add(f.start, f.end);
    std::sort(maps.begin(), maps.end(),
              [](const MemoryRegion& a, const MemoryRegion& b) { return a.start < b.start; });
  } else {
    ASSIGN_OR_RETURN(maps, OwnMaps());
  }
  std::vector<std::string> check_warnings;
  RETURN_IF_ERROR(CheckRestorableWith(state, maps, options.verified, &check_warnings));
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0)
    return ErrnoStatus(absl::StatusCode::kInternal, "restore: pipe2", errno);
  const int report_fd = fcntl(p[1], F_DUPFD_CLOEXEC, std::max(MaxRestoredFd(state) + 1, 64));
  const int dup_err = errno;
  close(p[1]);
  if (report_fd < 0) {
    close(p[0]);
    return ErrnoStatus(absl::StatusCode::kInternal, "restore: dup the report pipe", dup_err);
  }
  auto close_pipe = [&] {
    close(p[0]);
    close(report_fd);
  };
  OwnedFds pipe_ends;
  std::vector<std::pair<int, int>> rebuilt_fds;
  if (absl::Status s = RebuildFds(state, MaxRestoredFd(state) + 1, &rebuilt_fds, &pipe_ends);
      !s.ok()) {
    close_pipe();
    return s;
  }
  RestorePlanInput in;
  in.state = &state;
  in.blocks = blocks;
  in.current = maps;
  in.code_bytes = restore_blob::Code().size();
  in.report_fd = report_fd;
  in.premapped = options.premapped;
  in.set_tid = options.pid_namespace;
  for (int i = 0; i < 3; ++i) in.stdio_fds[i] = options.stdio_fds[i];
  in.rebuilt_fds = rebuilt_fds;
  if (!options.pid_namespace) {
    in.self_rseq = reinterpret_cast<uint64_t>(__builtin_thread_pointer()) +
                   static_cast<uint64_t>(__rseq_offset);
    in.self_rseq_len = __rseq_size;
  }
  absl::StatusOr<RestorePlan> plan = BuildRestorePlan(in);
  if (!plan.ok()) {
    close_pipe();
    return plan.status();
  }
  if (getenv("PROCMIG_RESTORE_DEBUG") != nullptr) {
    // The plan, op by op, for whoever debugs a restore (before anything is created).
    fprintf(stderr, "restore: our layout %s (%zu VMAs)\n",
            from_snapshot ? "as read up front, plus the session's blocks and premaps" : "read now",
            maps.size());
    for (size_t i = 0; i < plan->op_what.size(); ++i) {
      fprintf(stderr, "restore op %zu: %s\n", i, plan->op_what[i].c_str());
    }
  }
  // The region and the staging ranges after it must be free: reserved together, then the
  // staging part given back (the blob moves blocks there in the new process).
  void* region =
      mmap(reinterpret_cast<void*>(plan->region_start), plan->reserve_bytes, PROT_READ | PROT_WRITE,
           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (region == MAP_FAILED || reinterpret_cast<uint64_t>(region) != plan->region_start) {
    int err = errno;
    if (region != MAP_FAILED) munmap(region, plan->reserve_bytes);
    close_pipe();
    if (from_snapshot && err == EEXIST) {
      // Something mapped here since the layout was read: plan again from a fresh read.
      RestoreProcessOptions fresh = options;
      fresh.layout = {};
      return StartRestoredProcess(state, blocks, fresh);
    }
    return ErrnoStatus(absl::StatusCode::kResourceExhausted,
                       absl::StrFormat("restore: map the restorer at %x", plan->region_start), err);
  }
  if (plan->reserve_bytes > plan->region_bytes) {
    munmap(static_cast<uint8_t*>(region) + plan->region_bytes,
           plan->reserve_bytes - plan->region_bytes);
  }
  // The blob's code, arguments and stacks stay mapped in the restored process until its agent
  // unmaps them, once every thread has left (preload/agent_restart.cc). Named
  // "[anon:procmig-restorer]" where the kernel has CONFIG_ANON_VMA_NAME (not this machine's:
  // EINVAL), so its maps say what it is meanwhile.
  prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, plan->region_start, plan->region_bytes,
        "procmig-restorer");
  auto* base = static_cast<uint8_t*>(region);
  std::span<const uint8_t> code = restore_blob::Code();
  std::memcpy(base, code.data(), code.size());
  std::memcpy(base + plan->args_offset, plan->args.data(), plan->args.size());
  auto* args = reinterpret_cast<abi::Args*>(base + plan->args_offset);
  mprotect(base, plan->args_offset, PROT_READ | PROT_EXEC);
  auto entry = reinterpret_cast<EntryFn>(base + restore_blob::EntryOffset());
  auto blob_clone3 = reinterpret_cast<Clone3Fn>(base + restore_blob::Clone3Offset());
  // The process starts inside the blob's clone3, on the main thread's blob stack, where the
  // entry and its arguments wait to be popped: no other code or memory of ours need be in it.
  auto* words = reinterpret_cast<uint64_t*>(plan->main_stack_top) - 4;
  words[0] = reinterpret_cast<uint64_t>(entry);
  words[1] = reinterpret_cast<uint64_t>(args);
  words[2] = plan->main_stack_top;
  CloneArgs process;
  process.exit_signal = SIGCHLD;
  process.stack = plan->main_stack_top - kBlobStackBytes;
  process.stack_size = reinterpret_cast<uint64_t>(words) - process.stack;

  RestoredProcess out;
  out.pid = state.pid;
  out.threads = static_cast<uint32_t>(state.threads.size());
  out.pid_namespace = options.pid_namespace;
  out.warnings = std::move(check_warnings);
  for (const std::string& n : plan->notes) out.warnings.push_back(n);
  long child = -1;
  const InitArgs* init_args = nullptr;  // init writes the process's creation time there
  std::optional<DontForkOutside> dont_fork(
      std::in_place, maps, plan->keep, std::pair{in.self_rseq, in.self_rseq + in.self_rseq_len});
  if (options.pid_namespace) {
    // init's stack and arguments live in our memory for as long as init runs (it shares it).
    constexpr size_t kInitStack = 64 << 10;
    void* stack = mmap(nullptr, kInitStack, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
      int err = errno;
      munmap(region, plan->region_bytes);
      close_pipe();
      return ErrnoStatus(absl::StatusCode::kResourceExhausted, "restore: map init's stack", err);
    }
    auto* ia = static_cast<InitArgs*>(stack);
    init_args = ia;
    ia->clone3 = blob_clone3;
    ia->process = process;
    ia->pid = state.pid;
    ia->report_fd = report_fd;
    auto* top = reinterpret_cast<uint64_t*>(static_cast<uint8_t*>(stack) + kInitStack) - 4;
    top[0] = reinterpret_cast<uint64_t>(&InitMain);
    top[1] = reinterpret_cast<uint64_t>(ia);
    top[2] = 0;
    CloneArgs ca;
    ca.flags = CLONE_VM | CLONE_NEWPID | CLONE_NEWNS;
    ca.exit_signal = SIGCHLD;
    ca.stack = reinterpret_cast<uint64_t>(stack);
    ca.stack_size = kInitStack - 32;
    child = procmig_blob_clone3(&ca, sizeof ca);
  } else {
    out.warnings.push_back(
        "restored in this PID namespace with new thread ids (glibc's cached tids patched); "
        "robust or PI mutexes held across the migration name old owners");
    child = blob_clone3(&process, sizeof process);  // the child starts in the blob
  }
  const uint64_t cloned = NowNs();
  close(report_fd);
  if (child < 0 && options.pid_namespace && child == -EPERM) {
    // Not privileged for a new PID namespace: restore here with new ids, and say so.
    dont_fork.reset();
    munmap(region, plan->region_bytes);
    close(p[0]);
    RestoreProcessOptions here = options;
    here.pid_namespace = false;
    ASSIGN_OR_RETURN(RestoredProcess r, StartRestoredProcess(state, blocks, here));
    r.warnings.insert(r.warnings.begin(),
                      "no permission for a new PID namespace (EPERM): restored in this one");
    return r;
  }
  if (child < 0) {
    munmap(region, plan->region_bytes);
    close(p[0]);
    return ErrnoStatus(absl::StatusCode::kInternal,
                       options.pid_namespace ? "restore: clone3 a new PID namespace"
                                             : "restore: clone3 the process",
                       static_cast<int>(-child));
  }
  out.child = static_cast<pid_t>(child);
  // The blob's one report, or EOF when the process died without one.
  abi::Report rep;
  size_t got = 0;
  const uint64_t deadline = NowNs() + static_cast<uint64_t>(options.start_timeout_ms) * 1'000'000;
  while (got < sizeof rep) {
    const uint64_t now = NowNs();
    if (now >= deadline) break;
    pollfd pfd{p[0], POLLIN, 0};
    int r = poll(&pfd, 1, static_cast<int>((deadline - now) / 1'000'000 + 1));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    ssize_t n = read(p[0], reinterpret_cast<char*>(&rep) + got, sizeof rep - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  close(p[0]);
  // The blob region goes once init is out of it; an init that never comes back keeps it (a leak
  // in this process is better than a fault in init).
  if (init_args == nullptr || WaitInitLeftBlob(init_args, 2'000'000'000ull)) {
    munmap(region, plan->region_bytes);
  }
  if (got == sizeof rep && rep.kind == abi::kReportRunning) {
    out.running_at_ns = NowNs();
    out.start_ns = out.running_at_ns - t0;
    // The process itself (not its init) created: init's clone3 copied our memory, which is
    // most of the cost (page tables of every received block).
    const uint64_t created =
        init_args != nullptr ? __atomic_load_n(&init_args->created_ns, __ATOMIC_ACQUIRE) : 0;
    out.clone_ns = (created > t0 ? created : cloned) - t0;
    if (rep.phase_ns[0] > t0) out.blob_entry_ns = rep.phase_ns[0] - t0;
    if (rep.slowest_op < plan->op_what.size()) {
      out.slowest_op = plan->op_what[rep.slowest_op];
      out.slowest_op_ns = rep.slowest_op_ns;
    }
    for (int i = 0; i < 6; ++i) {
      if (rep.phase_ns[i + 1] >= rep.phase_ns[i]) {
        out.blob_phase_ns[i] = rep.phase_ns[i + 1] - rep.phase_ns[i];
      }
    }
    for (const ThreadContext& t : state.threads) {
      if (t.park_time_ns != 0 && (out.first_park_ns == 0 || t.park_time_ns < out.first_park_ns)) {
        out.first_park_ns = t.park_time_ns;
      }
    }
    out.threads = static_cast<uint32_t>(rep.value);
    out.host_pid = options.pid_namespace ? -1 : out.child;
    if (!options.pid_namespace) out.pid = static_cast<uint32_t>(out.child);  // a new pid here
    if (options.pid_namespace) {
      std::ifstream kids(absl::StrCat("/proc/", out.child, "/task/", out.child, "/children"));
      pid_t h = -1;
      if (kids >> h) out.host_pid = h;
    }
    return out;
  }
  // Failed: make sure nothing is left, then say why.
  kill(out.child, SIGKILL);
  int status = 0;
  waitpid(out.child, &status, 0);
  if (got == sizeof rep && rep.kind == abi::kReportFailed) {
    return absl::InternalError(
        absl::StrFormat("restore: %s failed, %s: %s", RestoreStepName(rep.step),
                        DescribeRestoreItem(*plan, rep.step, rep.index), strerror(rep.err)));
  }
  if (got == 0 && NowNs() >= deadline) {
    return absl::DeadlineExceededError(absl::StrCat(
        "restore: the restored process did not report within ", options.start_timeout_ms, " ms"));
  }
  return absl::InternalError(absl::StrCat("restore: the restorer died without a report (",
                                          WIFSIGNALED(status)
                                              ? absl::StrCat("signal ", WTERMSIG(status))
                                              : absl::StrCat("exit ", WEXITSTATUS(status)),
                                          ")"));
}

namespace {

// While a foreground `procmig restore` or `receive` waits for the process it restored, the
// signals a user or a supervisor sends it are meant for the program (`kill`, `timeout`, systemd's
// stop): they are passed on, as `docker run` does. Job control (SIGTSTP, SIGCONT, ...), SIGCHLD
// and SIGPIPE are not.
constexpr int kForwarded[] = {SIGHUP,  SIGINT,  SIGQUIT, SIGUSR1,
                              SIGUSR2, SIGALRM, SIGTERM, SIGWINCH};

// The write end of the running SignalForwarder's pipe, -1 when none runs. Global because a signal
// handler reads it.
std::atomic<int> g_forward_fd{-1};

void OnForwardedSignal(int sig, siginfo_t* si, void*) {
  // Only what a process sent (kill, sigqueue, tgkill: si_code <= 0). What the kernel sent (a
  // terminal's ^C, hangup or resize, sent to our process group) has reached the restored
  // process itself: it runs in that group.
  if (si == nullptr || si->si_code > 0) return;
  const int saved = errno;
  const int fd = g_forward_fd.load(std::memory_order_relaxed);
  const auto byte = static_cast<unsigned char>(sig);
  if (fd >= 0) (void)!write(fd, &byte, 1);
  errno = saved;
}

// Installs the forwarding handlers for its lifetime (the previous actions are put back after)
// and holds pidfds of the process waited for (`child`: its init, or itself) and of the target.
// Inactive (ok() false) when the kernel has no pidfds or another forwarder runs: the wait then
// passes nothing on.
class SignalForwarder {
 public:
  SignalForwarder(pid_t child, pid_t target) {
    int expected = -1;
    if (target <= 0 || pipe2(pipe_, O_CLOEXEC | O_NONBLOCK) != 0) return;
    child_fd_ = static_cast<int>(syscall(SYS_pidfd_open, child, 0));
    target_fd_ = static_cast<int>(syscall(SYS_pidfd_open, target, 0));
    if (child_fd_ < 0 || target_fd_ < 0 ||
        !g_forward_fd.compare_exchange_strong(expected, pipe_[1])) {
      return;
    }
    struct sigaction sa {};
    sa.sa_sigaction = OnForwardedSignal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < std::size(kForwarded); ++i) sigaction(kForwarded[i], &sa, &old_[i]);
    active_ = true;
  }
  ~SignalForwarder() {
    if (active_) {
      for (size_t i = 0; i < std::size(kForwarded); ++i)
        sigaction(kForwarded[i], &old_[i], nullptr);
      g_forward_fd.store(-1);
      Forward();  // what arrived before the handlers went
    }
    for (int fd : {pipe_[0], pipe_[1], child_fd_, target_fd_}) {
      if (fd >= 0) close(fd);
    }
  }
  SignalForwarder(const SignalForwarder&) = delete;
  SignalForwarder& operator=(const SignalForwarder&) = delete;

  bool ok() const { return active_; }

  // Until the waited-for process has exited (its pidfd is readable), passing signals on.
  void RunUntilExit() {
    for (;;) {
      pollfd fds[2] = {{child_fd_, POLLIN, 0}, {pipe_[0], POLLIN, 0}};
      const int n = poll(fds, 2, -1);
      if (n < 0 && errno != EINTR) return;
      Forward();
      if (n > 0 && (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) return;
    }
  }

 private:
  void Forward() {
    unsigned char sigs[64];
    for (ssize_t n; (n = read(pipe_[0], sigs, sizeof sigs)) > 0;) {
      // A target gone already (exiting) is no error: ESRCH is ignored.
      for (ssize_t i = 0; i < n; ++i)
        syscall(SYS_pidfd_send_signal, target_fd_, sigs[i], nullptr, 0);
    }
  }

  int pipe_[2] = {-1, -1};
  int child_fd_ = -1;
  int target_fd_ = -1;
  bool active_ = false;
  struct sigaction old_[std::size(kForwarded)] = {};
};

}  // namespace

absl::StatusOr<int> WaitRestoredProcess(const RestoredProcess& p) {
  {
    SignalForwarder forwarder(p.child, p.host_pid);
    if (forwarder.ok()) forwarder.RunUntilExit();
  }
  int status = 0;
  for (;;) {
    pid_t r = waitpid(p.child, &status, 0);
    if (r == p.child) break;
    if (r < 0 && errno == EINTR) continue;
    return ErrnoStatus(absl::StatusCode::kInternal, "wait for the restored process", errno);
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace procmig
