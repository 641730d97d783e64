#include "migration/process_capture.h"

#include <cpuid.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/sockios.h>
#include <linux/unix_diag.h>
#include <signal.h>
#include <sys/auxv.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string_view>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "base/crc32c.h"
#include "base/safe_format.h"

namespace procmig {

namespace {

std::string ReadLink(const std::string& path) {
  char buf[kMaxPath + 1];
  ssize_t n = readlink(path.c_str(), buf, kMaxPath);
  return n < 0 ? std::string() : std::string(buf, static_cast<size_t>(n));
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

VmaKind KindOf(RegionKind k) {
  switch (k) {
    case RegionKind::kAnonymous:
      return VmaKind::kAnonymous;
    case RegionKind::kHeap:
      return VmaKind::kHeap;
    case RegionKind::kStack:
      return VmaKind::kStack;
    case RegionKind::kFile:
      return VmaKind::kFile;
    case RegionKind::kSpecial:
      return VmaKind::kSpecial;
  }
  return VmaKind::kSpecial;
}

void CaptureMm(MmFields* mm) {
  std::string stat = ReadText("/proc/self/stat");
  size_t close = stat.rfind(')');
  if (close == std::string::npos) return;
  // Fields after "pid (comm)" start at field 3.
  std::vector<std::string> f = absl::StrSplit(stat.substr(close + 2), ' ');
  auto field = [&](size_t n) -> uint64_t {
    uint64_t v = 0;
    if (n >= 3 && n - 3 < f.size()) (void)absl::SimpleAtoi(f[n - 3], &v);
    return v;
  };
  mm->start_code = field(26);
  mm->end_code = field(27);
  mm->start_stack = field(28);
  mm->start_data = field(45);
  mm->end_data = field(46);
  mm->start_brk = field(47);
  mm->arg_start = field(48);
  mm->arg_end = field(49);
  mm->env_start = field(50);
  mm->env_end = field(51);
  mm->brk = static_cast<uint64_t>(syscall(SYS_brk, 0));
}

void CaptureCpuInto(CpuFeatures* c) {
  unsigned a = 0, b = 0, cx = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &cx, &d)) {
    c->leaf1_ecx = cx;
    c->leaf1_edx = d;
    if (cx & (1u << 27)) {  // OSXSAVE: xgetbv is allowed
      uint32_t lo, hi;
      __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
      c->xcr0_low = lo;
    }
  }
  if (__get_cpuid_count(7, 0, &a, &b, &cx, &d)) {
    c->leaf7_ebx = b;
    c->leaf7_ecx = cx;
    c->leaf7_edx = d;
  }
  c->hwcap = getauxval(AT_HWCAP);
  c->hwcap2 = getauxval(AT_HWCAP2);
}

// The number after `key` in `line` (spaces skipped), in `base`; false when the key is missing or
// no digit follows. No allocation (used while the program is parked).
bool FieldAfter(std::string_view line, std::string_view key, int base, uint64_t* v) {
  const size_t at = line.find(key);
  if (at == std::string_view::npos) return false;
  size_t i = at + key.size();
  while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
  uint64_t x = 0;
  bool any = false;
  for (; i < line.size(); ++i) {
    const char c = line[i];
    int d = -1;
    if (c >= '0' && c <= '9') d = c - '0';
    if (base == 16 && c >= 'a' && c <= 'f') d = c - 'a' + 10;
    if (d < 0) break;
    x = x * static_cast<uint64_t>(base) + static_cast<uint64_t>(d);
    any = true;
  }
  *v = x;
  return any;
}

// One /proc/self/fdinfo line of an eventfd or epoll record ("eventfd-count: <hex>",
// "eventfd-semaphore: 0|1", "tfd: N events: <hex> data: <hex> pos:P ino:<hex> sdev:<hex>").
// `bounded`: epoll items only within the vector's capacity (false once it is full).
bool ApplyFdinfoLine(std::string_view line, FdRecord* r, bool bounded) {
  uint64_t v = 0;
  if (r->kind == FdKind::kEventfd) {
    if (line.starts_with("eventfd-count:") && FieldAfter(line, "eventfd-count:", 16, &v)) {
      r->eventfd_count = v;
    } else if (line.starts_with("eventfd-semaphore:") &&
               FieldAfter(line, "eventfd-semaphore:", 10, &v)) {
      r->eventfd_semaphore = v != 0;
    }
  } else if (r->kind == FdKind::kEpoll && line.starts_with("tfd:")) {
    FdRecord::EpollItem e;
    uint64_t tfd = 0, events = 0;
    if (!FieldAfter(line, "tfd:", 10, &tfd) || !FieldAfter(line, "events:", 16, &events) ||
        !FieldAfter(line, "data:", 16, &e.data)) {
      return true;  // not an item line after all
    }
    (void)FieldAfter(line, "ino:", 16, &e.inode);
    e.tfd = static_cast<uint32_t>(tfd);
    e.events = static_cast<uint32_t>(events);
    if (bounded && r->epoll_items.size() == r->epoll_items.capacity()) return false;
    r->epoll_items.push_back(e);
  }
  return true;
}

// The inode of the peer of the connected AF_UNIX socket with inode `ino`, from sock_diag
// (UNIX_DIAG_PEER); 0 when it has none or the kernel will not say.
uint64_t UnixPeerInode(uint64_t ino) {
  const int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (nl < 0) return 0;
  struct {
    nlmsghdr nlh;
    unix_diag_req req;
  } msg{};
  msg.nlh.nlmsg_len = sizeof msg;
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nlh.nlmsg_flags = NLM_F_REQUEST;
  msg.req.sdiag_family = AF_UNIX;
  msg.req.udiag_states = ~0u;
  msg.req.udiag_ino = static_cast<uint32_t>(ino);
  msg.req.udiag_show = UDIAG_SHOW_PEER;
  msg.req.udiag_cookie[0] = msg.req.udiag_cookie[1] = ~0u;  // INET_DIAG_NOCOOKIE: no check
  uint64_t peer = 0;
  if (send(nl, &msg, sizeof msg, 0) == static_cast<ssize_t>(sizeof msg)) {
    alignas(nlmsghdr) char buf[8192];
    const ssize_t n = recv(nl, buf, sizeof buf, 0);
    const size_t total = n > 0 ? static_cast<size_t>(n) : 0;
    for (size_t off = 0; off + sizeof(nlmsghdr) <= total;
         off += NLMSG_ALIGN(reinterpret_cast<const nlmsghdr*>(buf + off)->nlmsg_len)) {
      auto* h = reinterpret_cast<nlmsghdr*>(buf + off);
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof(unix_diag_msg)) || off + h->nlmsg_len > total ||
          h->nlmsg_type != SOCK_DIAG_BY_FAMILY) {
        break;
      }
      auto* d = static_cast<unix_diag_msg*>(NLMSG_DATA(h));
      if (d->udiag_ino != static_cast<uint32_t>(ino)) continue;
      int len = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof *d));
      for (auto* a = reinterpret_cast<rtattr*>(d + 1); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
        if (a->rta_type == UNIX_DIAG_PEER && RTA_PAYLOAD(a) >= sizeof(uint32_t)) {
          uint32_t p = 0;
          std::memcpy(&p, RTA_DATA(a), sizeof p);
          peer = p;
        }
      }
      break;
    }
  }
  close(nl);
  return peer;
}

bool IsTtyDevice(dev_t rdev) {
  unsigned maj = major(rdev);
  return maj == 4 || maj == 5 || (maj >= 136 && maj <= 143);
}

void CaptureFds(std::vector<FdRecord>* out) {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return;
  const int self = dirfd(dir);
  while (dirent* e = readdir(dir)) {
    int fd = 0;
    if (!absl::SimpleAtoi(std::string(e->d_name), &fd) || fd == self) continue;
    FdRecord r;
    r.fd = static_cast<uint32_t>(fd);
    r.path = ReadLink(absl::StrCat("/proc/self/fd/", fd));
    const bool eventfd = r.path == "anon_inode:[eventfd]";
    const bool epoll = r.path == "anon_inode:[eventpoll]";
    struct stat st;
    if (fstat(fd, &st) == 0) {
      r.mode = st.st_mode;
      r.dev = st.st_dev;
      r.inode = st.st_ino;
      if (S_ISREG(st.st_mode)) {
        r.kind = FdKind::kRegular;
      } else if (S_ISDIR(st.st_mode)) {
        r.kind = FdKind::kDirectory;
      } else if (S_ISCHR(st.st_mode) && IsTtyDevice(st.st_rdev)) {
        r.kind = FdKind::kTty;
      } else if (S_ISFIFO(st.st_mode)) {
        r.kind = FdKind::kPipe;
      } else if (S_ISSOCK(st.st_mode)) {
        r.kind = FdKind::kSocket;
        int domain = 0, type = 0;
        socklen_t len = sizeof domain;
        if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain == AF_UNIX &&
            (len = sizeof type, getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0) &&
            type == SOCK_STREAM) {
          r.socket_peer = UnixPeerInode(st.st_ino);
        }
      }
    }
    if (eventfd) r.kind = FdKind::kEventfd;
    if (epoll) r.kind = FdKind::kEpoll;
    std::string info = ReadText(absl::StrCat("/proc/self/fdinfo/", fd));
    for (const std::string& line : std::vector<std::string>(absl::StrSplit(info, '\n'))) {
      // "pos:\t123" and "flags:\t0100002" (octal).
      if (line.rfind("pos:", 0) == 0) {
        r.offset = std::strtoull(line.c_str() + 4, nullptr, 10);
      } else if (line.rfind("flags:", 0) == 0) {
        r.flags = static_cast<uint32_t>(std::strtoul(line.c_str() + 6, nullptr, 8));
      } else {
        (void)ApplyFdinfoLine(line, &r, /*bounded=*/false);
      }
    }
    // Room for what the instance may watch by the time the program is parked.
    if (epoll) r.epoll_items.reserve(2 * r.epoll_items.size() + 64);
    out->push_back(std::move(r));
  }
  closedir(dir);
  std::sort(out->begin(), out->end(),
            [](const FdRecord& a, const FdRecord& b) { return a.fd < b.fd; });
}

// The pipes and socketpairs the process holds both ends of: a pipe's capacity, and room for the
// unread bytes on the records that carry them (filled while parked, RefreshPipeData).
void ReserveQueuedBytes(ProcessStateRecord* out) {
  for (FdRecord& f : out->fds) {
    if (IsOwnSocketPair(*out, f)) {
      // What the peer may queue here by the time the program is parked: its send buffer.
      int sndbuf = 0;
      socklen_t len = sizeof sndbuf;
      for (const FdRecord& g : out->fds) {
        if (g.kind == FdKind::kSocket && g.inode == f.socket_peer) {
          (void)getsockopt(static_cast<int>(g.fd), SOL_SOCKET, SO_SNDBUF, &sndbuf, &len);
          break;
        }
      }
      int queued = 0;
      (void)ioctl(static_cast<int>(f.fd), SIOCINQ, &queued);
      f.unread.reserve(std::min<size_t>(kMaxPipeData,
                                        static_cast<size_t>(std::max({sndbuf, queued, 0})) + 4096));
      continue;
    }
    if (!IsOwnPipe(*out, f)) continue;
    const int size = fcntl(static_cast<int>(f.fd), F_GETPIPE_SZ);
    f.pipe_size = size > 0 ? static_cast<uint32_t>(size) : 0;
    if (HoldsPipeData(*out, f)) {
      f.unread.reserve(std::min<size_t>(f.pipe_size, kMaxPipeData));
    }
  }
}

}  // namespace

absl::Status CaptureProcessBasics(std::span<const MemoryRegion> regions,
                                  std::span<const RamBlock> blocks, ProcessStateRecord* out) {
  out->pid = static_cast<uint32_t>(getpid());
  out->page_size = static_cast<uint32_t>(sysconf(_SC_PAGESIZE));
  out->cwd = ReadLink("/proc/self/cwd");
  out->exe = ReadLink("/proc/self/exe");
  CaptureMm(&out->mm);
  CaptureCpuInto(&out->cpu);
  out->vmas.clear();
  for (const MemoryRegion& m : regions) {
    VmaRecord v;
    v.start = m.start;
    v.end = m.end;
    v.offset = m.offset;
    v.inode = m.inode;
    v.dev_major = m.dev_major;
    v.dev_minor = m.dev_minor;
    v.prot = static_cast<uint8_t>((m.readable ? PROT_READ : 0) | (m.writable ? PROT_WRITE : 0) |
                                  (m.executable ? PROT_EXEC : 0));
    v.shared = m.shared;
    v.kind = KindOf(m.kind);
    v.deleted = m.deleted;
    v.path = m.path.substr(0, kMaxPath);
    if (m.kind == RegionKind::kFile && !m.path.empty() && m.path[0] == '/') {
      struct stat st;
      if (stat(m.path.c_str(), &st) == 0 && st.st_ino == m.inode) {
        v.file_size = static_cast<uint64_t>(st.st_size);
        v.mtime_ns = static_cast<uint64_t>(st.st_mtim.tv_sec) * 1'000'000'000ull +
                     static_cast<uint64_t>(st.st_mtim.tv_nsec);
      }
    }
    for (const RamBlock& b : blocks) {
      if (b.start >= m.start && b.start < m.end) {
        v.block_id = b.id;
        break;
      }
    }
    if (m.path == "[vdso]") {
      out->vdso.vdso_start = m.start;
      out->vdso.vdso_end = m.end;
      out->vdso.crc = crc32c::Value(reinterpret_cast<const void*>(m.start), m.size());
    } else if (m.path == "[vvar]") {
      out->vdso.vvar_start = m.start;
      out->vdso.vvar_end = m.end;
    }
    out->vmas.push_back(std::move(v));
  }
  out->fds.clear();
  CaptureFds(&out->fds);
  (void)LinkSharedDescriptions(out);
  ReserveQueuedBytes(out);
  return absl::OkStatus();
}

CpuFeatures CaptureCpuFeatures() {
  CpuFeatures c;
  CaptureCpuInto(&c);
  return c;
}

void CaptureSigactions(ProcessStateRecord* out) {
  // The kernel's struct sigaction for rt_sigaction(2) on x86-64.
  struct KernelSigaction {
    uint64_t handler;
    uint64_t flags;
    uint64_t restorer;
    uint64_t mask;
  };
  if (out->sigactions.size() != kMaxSigactions) out->sigactions.resize(kMaxSigactions);
  size_t n = 0;
  for (int sig = 1; sig <= 64; ++sig) {
    KernelSigaction k{};
    if (syscall(SYS_rt_sigaction, sig, nullptr, &k, 8) != 0) continue;
    SigactionRecord& s = out->sigactions[n++];
    s.signo = static_cast<uint32_t>(sig);
    s.flags = static_cast<uint32_t>(k.flags);
    s.handler = k.handler;
    s.restorer = k.restorer;
    s.mask = k.mask;
  }
  // Shrinking never allocates.
  out->sigactions.resize(n);
}

void RefreshFdOffsets(ProcessStateRecord* out) {
  for (FdRecord& f : out->fds) {
    if (f.kind != FdKind::kRegular && f.kind != FdKind::kDirectory) continue;
    long off = syscall(SYS_lseek, static_cast<int>(f.fd), 0L, SEEK_CUR);
    if (off >= 0) f.offset = static_cast<uint64_t>(off);
  }
}

// True when the control data of a peek carried descriptors (SCM_RIGHTS, or more than fitted:
// MSG_CTRUNC). The peek installed them here: they are closed again. No allocation.
bool PeekedDescriptors(msghdr& mh) {
  bool any = (mh.msg_flags & MSG_CTRUNC) != 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    any = true;
    const size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      syscall(SYS_close, fd);
    }
  }
  return any;
}

bool RefreshPipeData(ProcessStateRecord* out, int* failed_fd, int* failed_errno,
                     const char** failed_cause) {
  int helper[2] = {-1, -1};
  bool ok = true;
  *failed_errno = 0;
  auto fail = [&](const FdRecord& f, int err) {
    *failed_fd = static_cast<int>(f.fd);
    *failed_errno = err;
    ok = false;
  };
  for (FdRecord& f : out->fds) {
    if (IsOwnSocketPair(*out, f)) {
      // The bytes queued for this end, peeked (nothing taken out), all of them (SIOCINQ), with
      // room for the control data that tells descriptors in flight (SCM_RIGHTS): those cannot
      // be carried over, and the bytes alone would arrive without them.
      f.unread.resize(f.unread.capacity());  // within the reserve: no allocation
      alignas(cmsghdr) char control[CMSG_SPACE(16 * sizeof(int))];
      iovec iov{f.unread.data(), f.unread.size()};
      msghdr mh{};
      mh.msg_iov = &iov;
      mh.msg_iovlen = 1;
      mh.msg_control = control;
      mh.msg_controllen = sizeof control;
      const long n = syscall(SYS_recvmsg, static_cast<int>(f.fd), &mh,
                             MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
      if (n >= 0 && PeekedDescriptors(mh)) {
        f.unread.clear();
        fail(f, 0);
        if (failed_cause != nullptr) *failed_cause = "descriptors in flight (SCM_RIGHTS)";
        break;
      }
      int queued = 0;
      if ((n < 0 && errno != EAGAIN) ||
          syscall(SYS_ioctl, static_cast<int>(f.fd), SIOCINQ, &queued) != 0) {
        f.unread.clear();
        fail(f, errno);
        break;
      }
      f.unread.resize(n < 0 ? 0 : static_cast<size_t>(n));
      if (static_cast<size_t>(queued) != f.unread.size()) {
        f.unread.clear();
        fail(f, 0);
        break;
      }
      continue;
    }
    if (f.pipe_size == 0 || !HoldsPipeData(*out, f)) continue;
    f.unread.clear();
    const size_t cap = f.unread.capacity();
    if (helper[0] < 0) {
      if (syscall(SYS_pipe2, helper, O_CLOEXEC | O_NONBLOCK) != 0) {
        fail(f, errno);
        return false;
      }
      // As large as any pipe may be made without privilege, so one tee takes a whole pipe.
      (void)syscall(SYS_fcntl, helper[1], F_SETPIPE_SZ, static_cast<long>(kMaxPipeData));
    }
    // tee(2) copies what the pipe holds without consuming it: the program, resumed on a failed
    // migration, finds its bytes still there. An empty pipe is EAGAIN.
    const long n = syscall(SYS_tee, static_cast<int>(f.fd), helper[1], cap, SPLICE_F_NONBLOCK);
    if (n < 0 && errno != EAGAIN) {
      fail(f, errno);
      break;
    }
    // A pipe the program made larger since the capture holds more than there is room for.
    int unread = 0;
    if (syscall(SYS_ioctl, static_cast<int>(f.fd), FIONREAD, &unread) != 0) {
      fail(f, errno);
      break;
    }
    if (unread > (n < 0 ? 0 : n)) {
      fail(f, 0);
      break;
    }
    if (n <= 0) continue;
    f.unread.resize(static_cast<size_t>(n));  // within the reserved capacity: no allocation
    size_t got = 0;
    while (got < static_cast<size_t>(n)) {
      const long r = syscall(SYS_read, helper[0], f.unread.data() + got, n - got);
      if (r <= 0) break;
      got += static_cast<size_t>(r);
    }
    if (got != static_cast<size_t>(n)) {
      f.unread.clear();
      fail(f, errno);
      break;
    }
  }
  if (helper[0] >= 0) {
    syscall(SYS_close, helper[0]);
    syscall(SYS_close, helper[1]);
  }
  return ok;
}

bool RefreshEventFds(ProcessStateRecord* out, int* failed_fd, int* failed_errno) {
  *failed_errno = 0;
  for (FdRecord& f : out->fds) {
    if (f.kind != FdKind::kEventfd && f.kind != FdKind::kEpoll) continue;
    *failed_fd = static_cast<int>(f.fd);
    char path[48];
    path[SafeFormat(path, sizeof path - 1, nullptr, "/proc/self/fdinfo/%u", f.fd)] = '\0';
    const long fd = syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      *failed_errno = errno;
      return false;
    }
    f.eventfd_count = 0;
    f.eventfd_semaphore = false;
    f.epoll_items.clear();  // keeps the capacity
    char buf[4096];
    size_t have = 0;  // bytes in buf, the start of an unfinished line
    bool ok = true;
    for (;;) {
      const long r = syscall(SYS_read, fd, buf + have, sizeof buf - have);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) {
        *failed_errno = errno;
        ok = false;
        break;
      }
      have += static_cast<size_t>(r);
      size_t start = 0;
      for (size_t i = 0; i < have; ++i) {
        if (buf[i] != '\n') continue;
        if (!ApplyFdinfoLine(std::string_view(buf + start, i - start), &f, /*bounded=*/true)) {
          ok = false;
          break;
        }
        start = i + 1;
      }
      if (!ok || r == 0) break;
      std::memmove(buf, buf + start, have - start);
      have -= start;
      if (have == sizeof buf) {  // a line longer than the buffer: not fdinfo as we know it
        ok = false;
        break;
      }
    }
    syscall(SYS_close, fd);
    if (!ok) return false;
  }
  return true;
}

bool LinkSharedDescriptions(ProcessStateRecord* out) {
  std::vector<FdRecord>& fds = out->fds;
  for (FdRecord& f : fds) f.dup_of = -1;
  // Only records of one kind and inode can share a description: sort those together, in fd
  // order within each group.
  std::vector<size_t> order(fds.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const FdRecord &x = fds[a], &y = fds[b];
    return std::tie(x.kind, x.dev, x.inode, x.fd) < std::tie(y.kind, y.dev, y.inode, y.fd);
  });
  const long pid = syscall(SYS_getpid);
  // kcmp orders open file descriptions (0 same, 1 less, 2 greater): each group's first
  // descriptor of every description, kept in that order, is found by a binary search, so a
  // program with hundreds of eventfds (one anonymous inode) costs n log n calls, not n^2.
  std::vector<uint32_t> firsts;
  for (size_t b = 0; b < order.size();) {
    size_t e = b + 1;
    while (e < order.size() && fds[order[e]].kind == fds[order[b]].kind &&
           fds[order[e]].dev == fds[order[b]].dev && fds[order[e]].inode == fds[order[b]].inode) {
      ++e;
    }
    firsts.clear();
    for (size_t k = b; k < e; ++k) {
      FdRecord& f = fds[order[k]];
      size_t lo = 0, hi = firsts.size();
      bool placed = false;  // linked to a first, or gone: not a first itself
      while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        const long r = syscall(SYS_kcmp, pid, pid, KCMP_FILE, static_cast<long>(firsts[mid]),
                               static_cast<long>(f.fd));
        if (r == 0) f.dup_of = static_cast<int32_t>(firsts[mid]);
        placed = r == 0 || (r < 0 && errno == EBADF);  // EBADF: closed since, a stale record
        if (placed) break;
        if (r != 1 && r != 2) {  // ENOSYS (no CONFIG_KCMP), EPERM, no order
          for (FdRecord& g : fds) g.dup_of = -1;
          return false;
        }
        if (r == 1) {
          lo = mid + 1;  // firsts[mid] orders before f's description
        } else {
          hi = mid;
        }
      }
      if (!placed) firsts.insert(firsts.begin() + static_cast<ptrdiff_t>(lo), f.fd);
    }
    b = e;
  }
  return true;
}

bool RefreshParkedFds(ProcessStateRecord* out, FdRefreshFailure* why) {
  RefreshFdOffsets(out);
  if (!RefreshPipeData(out, &why->fd, &why->err, &why->cause)) {
    why->what = "the unread bytes of the program's own pipe or socketpair";
    return false;
  }
  if (!RefreshEventFds(out, &why->fd, &why->err)) {
    why->what = "the state of the program's eventfd or epoll instance";
    return false;
  }
  return true;
}

size_t RefreshGrowthBytes(const ProcessStateRecord& r) {
  size_t n = 0;
  for (const FdRecord& f : r.fds) {
    n += f.unread.capacity() + f.epoll_items.capacity() * sizeof(FdRecord::EpollItem);
  }
  return n;
}

void ComputeDigests(std::span<const RamBlock> blocks, ProcessStateRecord* out) {
  for (size_t i = 0; i < blocks.size() && i < out->digests.size(); ++i) {
    BlockDigest& d = out->digests[i];
    d.block_id = blocks[i].id;
    d.length = blocks[i].length;
    d.crc32c = crc32c::Value(reinterpret_cast<const void*>(blocks[i].start), blocks[i].length);
  }
}

std::vector<std::string> FindUnsupportedMemory(const ProcessStateRecord& r) {
  std::vector<std::string> out;
  // Shared memory that no file holds: its pages are not RAM blocks (only private memory is), so
  // a restored copy would find it empty. (A shared mapping of a file that exists is mapped from
  // the file again.)
  for (const VmaRecord& v : r.vmas) {
    if (v.shared && (v.deleted || v.path.empty() || v.path.rfind("[anon_shmem:", 0) == 0)) {
      out.push_back(absl::StrFormat(
          "shared memory 0x%x-0x%x (%s%s): only private memory and shared mappings of existing "
          "files migrate",
          v.start, v.end, v.path.empty() ? "anonymous" : v.path, v.deleted ? ", deleted" : ""));
    }
  }
  return out;
}

void DropDescriptors(std::span<const int> fds, ProcessStateRecord* r) {
  auto dropped = [&](int64_t fd) { return std::find(fds.begin(), fds.end(), fd) != fds.end(); };
  std::erase_if(r->fds, [&](const FdRecord& f) { return dropped(f.fd); });
  for (FdRecord& f : r->fds) {
    if (f.dup_of >= 0 && dropped(f.dup_of)) f.dup_of = -1;
  }
}

std::vector<std::string> FindUnsupported(const ProcessStateRecord& r,
                                         std::span<const int> ignored_fds) {
  std::vector<std::string> out;
  for (const FdRecord& f : r.fds) {
    if (std::find(ignored_fds.begin(), ignored_fds.end(), static_cast<int>(f.fd)) !=
        ignored_fds.end()) {
      continue;
    }
    if (f.kind == FdKind::kSocket && !IsOwnSocketPair(r, f)) {
      out.push_back(absl::StrCat("fd ", f.fd, ": socket (", f.path, ")"));
    } else if (f.kind == FdKind::kPipe && f.fd > 2 && !IsOwnPipe(r, f)) {
      // stdio pipes are the usual way a program is run (a shell pipeline, a test runner); the
      // restorer reconnects them to its own stdio. Pipes the process holds both ends of are
      // rebuilt. Other pipes lead to other processes.
      out.push_back(absl::StrCat("fd ", f.fd, ": pipe to another process (", f.path, ")"));
    } else if (f.kind == FdKind::kRegular && absl::EndsWith(f.path, " (deleted)")) {
      // An unlinked file (tmpfile(), memfd, a rotated-away log) has no path to reopen it by.
      out.push_back(absl::StrCat("fd ", f.fd, ": ", f.path,
                                 ": a deleted file cannot be opened again at the destination"));
    } else if (f.kind == FdKind::kOther && f.path.rfind("anon_inode:", 0) == 0) {
      out.push_back(absl::StrCat("fd ", f.fd, ": ", f.path));
    } else if (f.kind == FdKind::kEpoll) {
      // What it watches must come back at the same number: a descriptor the record has, the
      // same file (a watched descriptor closed since leaves its item on the file behind).
      for (const FdRecord::EpollItem& e : f.epoll_items) {
        const FdRecord* t = nullptr;
        for (const FdRecord& g : r.fds) {
          if (g.fd == e.tfd) t = &g;
        }
        if (t == nullptr || t->inode != e.inode) {
          out.push_back(absl::StrCat("fd ", f.fd, ": epoll watching fd ", e.tfd,
                                     ", which is no longer open as the file it watched"));
          break;
        }
      }
    }
  }
  std::string timers = ReadText("/proc/self/timers");
  if (!timers.empty()) out.push_back("POSIX timers (/proc/self/timers is not empty)");
  DIR* dir = opendir("/proc/self/task");
  if (dir != nullptr) {
    while (dirent* e = readdir(dir)) {
      if (e->d_name[0] == '.') continue;
      std::string children = ReadText(absl::StrCat("/proc/self/task/", e->d_name, "/children"));
      if (children.find_first_not_of(" \n") != std::string::npos) {
        out.push_back(
            absl::StrCat("child processes of thread ", std::string(e->d_name), ": ", children));
      }
    }
    closedir(dir);
  }
  return out;
}

}  // namespace procmig
