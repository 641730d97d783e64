#include "migration/process_state.h"

#include <fcntl.h>

#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/coding.h"

namespace procmig {

namespace {

constexpr size_t kHeaderSize = 8;
constexpr size_t kMmSize = 12 * 8;
constexpr size_t kVmaFixed = 6 * 8 + 2 * 4 + 4 + 4;  // + path
constexpr size_t kThreadSize = 8 + 21 * 8 + 8;
constexpr size_t kSigactionSize = 8 + 3 * 8;
constexpr size_t kFdFixed = 4 + 4 + 4 + 4 + 3 * 8 + 4;  // + path, unread, then:
constexpr size_t kFdV3Tail = 8 + 4 + 4 + 8;             // + epoll items
constexpr size_t kFdV4Tail = 4;                         // dup_of
constexpr size_t kEpollItemSize = 4 + 4 + 8 + 8;
constexpr size_t kDigestSize = 8 + 8 + 4;

size_t StrSize(const std::string& s) { return 4 + s.size(); }

// The u64 fields of a ThreadContext after tid, in wire order.
template <typename T, typename F>
void ForThreadWords(T& t, F&& f) {
  f(t.rbx), f(t.rbp), f(t.r12), f(t.r13), f(t.r14), f(t.r15), f(t.rsp), f(t.rip);
  f(t.fs_base), f(t.gs_base), f(t.tid_address), f(t.robust_list), f(t.robust_list_len);
  f(t.rseq_area), f(t.sigmask), f(t.altstack_sp), f(t.altstack_size), f(t.ucontext);
  f(t.siginfo), f(t.park_time_ns), f(t.reserved);
}
template <typename T, typename F>
void ForMmWords(T& m, F&& f) {
  f(m.start_code), f(m.end_code), f(m.start_data), f(m.end_data), f(m.start_brk), f(m.brk);
  f(m.start_stack), f(m.arg_start), f(m.arg_end), f(m.env_start), f(m.env_end), f(m.auxv);
}

bool IsAnonymousPipe(const FdRecord& f) {
  return f.kind == FdKind::kPipe && f.path.rfind("pipe:[", 0) == 0;
}
bool ReadEnd(const FdRecord& f) { return (f.flags & O_ACCMODE) != O_WRONLY; }
bool WriteEnd(const FdRecord& f) { return (f.flags & O_ACCMODE) != O_RDONLY; }

}  // namespace

bool IsOwnPipe(const ProcessStateRecord& r, const FdRecord& f) {
  if (!IsAnonymousPipe(f)) return false;
  bool read = false, write = false;
  for (const FdRecord& g : r.fds) {
    if (!IsAnonymousPipe(g) || g.dev != f.dev || g.inode != f.inode) continue;
    read |= ReadEnd(g);
    write |= WriteEnd(g);
  }
  return read && write;
}

bool IsOwnSocketPair(const ProcessStateRecord& r, const FdRecord& f) {
  if (f.kind != FdKind::kSocket || f.socket_peer == 0) return false;
  for (const FdRecord& g : r.fds) {
    if (g.kind == FdKind::kSocket && g.inode == f.socket_peer && g.socket_peer == f.inode) {
      return true;
    }
  }
  return false;
}

bool HoldsPipeData(const ProcessStateRecord& r, const FdRecord& f) {
  if (!ReadEnd(f) || !IsOwnPipe(r, f)) return false;
  for (const FdRecord& g : r.fds) {
    if (&g == &f) return true;
    if (IsAnonymousPipe(g) && g.dev == f.dev && g.inode == f.inode && ReadEnd(g)) return false;
  }
  return false;
}

bool ValidFileIdentity(const FileIdentity& id) {
  switch (id.kind) {
    case FileIdKind::kNone:
    case FileIdKind::kUnknown:
      return id.id.empty();
    case FileIdKind::kBuildId:
      return !id.id.empty() && id.id.size() <= kMaxFileId;
    case FileIdKind::kCrc32c:
      return id.id.size() == 4;
  }
  return false;
}

namespace {

absl::Status Bad(const char* field) {
  return absl::DataLossError(absl::StrCat("decode process state: bad ", field));
}

}  // namespace

const char* FdKindName(FdKind kind) {
  switch (kind) {
    case FdKind::kRegular:
      return "file";
    case FdKind::kDirectory:
      return "dir";
    case FdKind::kTty:
      return "tty";
    case FdKind::kPipe:
      return "pipe";
    case FdKind::kSocket:
      return "socket";
    case FdKind::kOther:
      return "other";
    case FdKind::kEventfd:
      return "eventfd";
    case FdKind::kEpoll:
      return "epoll";
  }
  return "unknown";
}

void EncodeCpuVdso(const CpuFeatures& c, const VdsoIdentity& vdso, ByteWriter& w) {
  for (uint32_t v : {c.leaf1_ecx, c.leaf1_edx, c.leaf7_ebx, c.leaf7_ecx, c.leaf7_edx, c.xcr0_low}) {
    w.U32(v);
  }
  w.U64(c.hwcap);
  w.U64(c.hwcap2);
  for (uint64_t v : {vdso.vdso_start, vdso.vdso_end, vdso.vvar_start, vdso.vvar_end}) w.U64(v);
  w.U32(vdso.crc);
}

void DecodeCpuVdso(ByteReader& rd, CpuFeatures* c, VdsoIdentity* vdso) {
  for (uint32_t* v :
       {&c->leaf1_ecx, &c->leaf1_edx, &c->leaf7_ebx, &c->leaf7_ecx, &c->leaf7_edx, &c->xcr0_low}) {
    *v = rd.U32();
  }
  c->hwcap = rd.U64();
  c->hwcap2 = rd.U64();
  for (uint64_t* v : {&vdso->vdso_start, &vdso->vdso_end, &vdso->vvar_start, &vdso->vvar_end}) {
    *v = rd.U64();
  }
  vdso->crc = rd.U32();
}

size_t EncodedSize(const ProcessStateRecord& r) {
  size_t n = kHeaderSize + 8 + StrSize(r.cwd) + StrSize(r.exe) + kMmSize + kCpuVdsoSize;
  n += 4;
  for (const VmaRecord& v : r.vmas) n += kVmaFixed + StrSize(v.path) + 2 + v.id.id.size();
  n += 4 + r.threads.size() * kThreadSize;
  n += 4 + r.sigactions.size() * kSigactionSize;
  n += 4;
  for (const FdRecord& f : r.fds) {
    n += kFdFixed + StrSize(f.path) + StrSize(f.unread) + kFdV3Tail + kFdV4Tail +
         f.epoll_items.size() * kEpollItemSize;
  }
  n += 4 + r.digests.size() * kDigestSize;
  return n;
}

absl::Status EncodeProcessState(const ProcessStateRecord& r, std::string* out) {
  // Checks first, so a failure never leaves half a record behind. Returns a static-message
  // status: no allocation beyond absl's own for the error path.
  if (r.cwd.size() > kMaxPath || r.exe.size() > kMaxPath) {
    return absl::InvalidArgumentError("encode process state: cwd or exe path too long");
  }
  if (r.vmas.size() > kMaxVmas || r.threads.size() > kMaxThreads ||
      r.sigactions.size() > kMaxSigactions || r.fds.size() > kMaxFds ||
      r.digests.size() > kMaxDigests) {
    return absl::InvalidArgumentError("encode process state: too many entries");
  }
  for (const VmaRecord& v : r.vmas) {
    if (v.path.size() > kMaxPath)
      return absl::InvalidArgumentError("encode process state: vma path too long");
    if (!ValidFileIdentity(v.id))
      return absl::InvalidArgumentError("encode process state: bad vma file identity");
  }
  for (const FdRecord& f : r.fds) {
    if (f.path.size() > kMaxPath)
      return absl::InvalidArgumentError("encode process state: fd path too long");
    if (f.unread.size() > kMaxPipeData)
      return absl::InvalidArgumentError("encode process state: pipe data too long");
    if (f.epoll_items.size() > kMaxEpollItems)
      return absl::InvalidArgumentError("encode process state: too many epoll items");
  }
  ByteWriter w(out);
  w.U32(kProcessStateMagic);
  w.U16(kProcessStateVersion);
  w.U16(0);
  w.U32(r.pid);
  w.U32(r.page_size);
  w.String(r.cwd);
  w.String(r.exe);
  ForMmWords(r.mm, [&](uint64_t v) { w.U64(v); });
  EncodeCpuVdso(r.cpu, r.vdso, w);
  w.U32(static_cast<uint32_t>(r.vmas.size()));
  for (const VmaRecord& v : r.vmas) {
    for (uint64_t x : {v.start, v.end, v.offset, v.inode, v.file_size, v.mtime_ns}) w.U64(x);
    w.U32(v.dev_major);
    w.U32(v.dev_minor);
    w.U8(v.prot);
    w.U8(v.shared ? 1 : 0);
    w.U8(static_cast<uint8_t>(v.kind));
    w.U8(v.deleted ? 1 : 0);
    w.U32(v.block_id);
    w.String(v.path);
    w.U8(static_cast<uint8_t>(v.id.kind));
    w.U8(static_cast<uint8_t>(v.id.id.size()));
    for (char c : v.id.id) w.U8(static_cast<uint8_t>(c));
  }
  w.U32(static_cast<uint32_t>(r.threads.size()));
  for (const ThreadContext& t : r.threads) {
    w.U32(t.tid);
    w.U32(0);
    ForThreadWords(t, [&](uint64_t v) { w.U64(v); });
    w.U32(t.rseq_size);
    w.U32(t.altstack_flags);
  }
  w.U32(static_cast<uint32_t>(r.sigactions.size()));
  for (const SigactionRecord& s : r.sigactions) {
    w.U32(s.signo);
    w.U32(s.flags);
    w.U64(s.handler);
    w.U64(s.restorer);
    w.U64(s.mask);
  }
  w.U32(static_cast<uint32_t>(r.fds.size()));
  for (const FdRecord& f : r.fds) {
    w.U32(f.fd);
    w.U8(static_cast<uint8_t>(f.kind));
    w.U8(0);
    w.U16(0);
    w.U32(f.flags);
    w.U32(f.mode);
    w.U64(f.offset);
    w.U64(f.dev);
    w.U64(f.inode);
    w.String(f.path);
    w.U32(f.pipe_size);
    w.String(f.unread);
    w.U64(f.eventfd_count);
    w.U32(f.eventfd_semaphore ? 1 : 0);
    w.U32(static_cast<uint32_t>(f.epoll_items.size()));
    for (const FdRecord::EpollItem& e : f.epoll_items) {
      w.U32(e.tfd);
      w.U32(e.events);
      w.U64(e.data);
      w.U64(e.inode);
    }
    w.U64(f.socket_peer);
    w.U32(static_cast<uint32_t>(f.dup_of));
  }
  w.U32(static_cast<uint32_t>(r.digests.size()));
  for (const BlockDigest& d : r.digests) {
    w.U32(d.block_id);
    w.U32(0);
    w.U64(d.length);
    w.U32(d.crc32c);
  }
  return absl::OkStatus();
}

absl::StatusOr<ProcessStateRecord> DecodeProcessState(std::span<const uint8_t> in) {
  ByteReader rd(in);
  ProcessStateRecord r;
  if (rd.U32() != kProcessStateMagic || !rd.ok()) return Bad("magic");
  uint16_t version = rd.U16();
  if (!rd.ok() || version < 2 || version > kProcessStateVersion) {
    return absl::DataLossError(
        absl::StrCat("decode process state: unknown version ", version, " (know 2 to 4)"));
  }
  if (rd.U16() != 0) return Bad("header reserved field");
  r.pid = rd.U32();
  r.page_size = rd.U32();
  auto str = [&](std::string* s) {
    std::string_view v = rd.String(kMaxPath);
    s->assign(v.data(), v.size());
    return rd.ok();
  };
  if (!str(&r.cwd)) return Bad("cwd");
  if (!str(&r.exe)) return Bad("exe");
  ForMmWords(r.mm, [&](uint64_t& v) { v = rd.U64(); });
  DecodeCpuVdso(rd, &r.cpu, &r.vdso);
  if (!rd.ok()) return Bad("fixed fields (truncated)");

  // Each count is checked against its bound and against the bytes left, so a lying count cannot
  // make the decoder allocate more than the input could describe.
  auto count = [&](size_t max, size_t min_each, const char* what) -> absl::StatusOr<size_t> {
    uint32_t n = rd.U32();
    if (!rd.ok()) return Bad(what);
    if (n > max || static_cast<uint64_t>(n) * min_each > rd.remaining()) {
      return absl::DataLossError(absl::StrCat("decode process state: ", what, " count ", n,
                                              " exceeds its bound or the bytes left"));
    }
    return static_cast<size_t>(n);
  };
  absl::StatusOr<size_t> n = count(kMaxVmas, kVmaFixed + 4 + 2, "vma");
  if (!n.ok()) return n.status();
  r.vmas.resize(*n);
  for (VmaRecord& v : r.vmas) {
    for (uint64_t* x : {&v.start, &v.end, &v.offset, &v.inode, &v.file_size, &v.mtime_ns}) {
      *x = rd.U64();
    }
    v.dev_major = rd.U32();
    v.dev_minor = rd.U32();
    v.prot = rd.U8();
    uint8_t shared = rd.U8(), kind = rd.U8(), deleted = rd.U8();
    v.block_id = rd.U32();
    if (!rd.ok() || (v.prot & ~7u) != 0 || shared > 1 || kind > kMaxVmaKind || deleted > 1 ||
        v.end <= v.start) {
      return Bad("vma");
    }
    v.shared = shared;
    v.kind = static_cast<VmaKind>(kind);
    v.deleted = deleted;
    if (!str(&v.path)) return Bad("vma path");
    uint8_t id_kind = rd.U8(), id_len = rd.U8();
    if (!rd.ok() || id_kind > kMaxFileIdKind || id_len > rd.remaining()) return Bad("vma identity");
    v.id.kind = static_cast<FileIdKind>(id_kind);
    for (uint8_t i = 0; i < id_len; ++i) v.id.id.push_back(static_cast<char>(rd.U8()));
    if (!ValidFileIdentity(v.id)) return Bad("vma identity");
  }
  n = count(kMaxThreads, kThreadSize, "thread");
  if (!n.ok()) return n.status();
  r.threads.resize(*n);
  for (ThreadContext& t : r.threads) {
    t.tid = rd.U32();
    if (rd.U32() != 0) return Bad("thread reserved field");
    ForThreadWords(t, [&](uint64_t& v) { v = rd.U64(); });
    t.rseq_size = rd.U32();
    t.altstack_flags = rd.U32();
    if (!rd.ok() || t.reserved != 0 || t.tid == 0) return Bad("thread");
  }
  n = count(kMaxSigactions, kSigactionSize, "sigaction");
  if (!n.ok()) return n.status();
  r.sigactions.resize(*n);
  for (SigactionRecord& s : r.sigactions) {
    s.signo = rd.U32();
    s.flags = rd.U32();
    s.handler = rd.U64();
    s.restorer = rd.U64();
    s.mask = rd.U64();
    if (!rd.ok() || s.signo == 0 || s.signo > 64) return Bad("sigaction");
  }
  n = count(kMaxFds,
            version < 3   ? kFdFixed
            : version < 4 ? kFdFixed + 4 + kFdV3Tail
                          : kFdFixed + 4 + kFdV3Tail + kFdV4Tail,
            "fd");
  if (!n.ok()) return n.status();
  r.fds.resize(*n);
  for (FdRecord& f : r.fds) {
    f.fd = rd.U32();
    uint8_t kind = rd.U8();
    uint8_t r8 = rd.U8();
    uint16_t r16 = rd.U16();
    f.flags = rd.U32();
    f.mode = rd.U32();
    f.offset = rd.U64();
    f.dev = rd.U64();
    f.inode = rd.U64();
    if (!rd.ok() || kind > kMaxFdKind || r8 != 0 || r16 != 0) return Bad("fd");
    f.kind = static_cast<FdKind>(kind);
    if (!str(&f.path)) return Bad("fd path");
    if (version >= 3) {
      f.pipe_size = rd.U32();
      std::string_view data = rd.String(kMaxPipeData);
      if (!rd.ok()) return Bad("fd unread bytes");
      f.unread.assign(data.data(), data.size());
      if ((f.kind != FdKind::kPipe && f.pipe_size != 0) ||
          (f.kind != FdKind::kPipe && f.kind != FdKind::kSocket && !f.unread.empty())) {
        return Bad("fd pipe fields on a descriptor that is no pipe");
      }
      f.eventfd_count = rd.U64();
      const uint32_t semaphore = rd.U32();
      const uint32_t items = rd.U32();
      if (!rd.ok() || semaphore > 1) return Bad("fd eventfd fields");
      f.eventfd_semaphore = semaphore != 0;
      if (f.kind != FdKind::kEventfd && (f.eventfd_count != 0 || f.eventfd_semaphore)) {
        return Bad("fd eventfd fields on a descriptor that is no eventfd");
      }
      if (items > kMaxEpollItems ||
          static_cast<uint64_t>(items) * kEpollItemSize > rd.remaining()) {
        return Bad("fd epoll item count");
      }
      if (f.kind != FdKind::kEpoll && items != 0) {
        return Bad("fd epoll items on a descriptor that is no epoll instance");
      }
      f.epoll_items.resize(items);
      for (FdRecord::EpollItem& e : f.epoll_items) {
        e.tfd = rd.U32();
        e.events = rd.U32();
        e.data = rd.U64();
        e.inode = rd.U64();
      }
      if (!rd.ok()) return Bad("fd epoll items");
      f.socket_peer = rd.U64();
      if (!rd.ok()) return Bad("fd socket peer");
      if (f.kind != FdKind::kSocket && f.socket_peer != 0) {
        return Bad("fd socket peer on a descriptor that is no socket");
      }
    }
    if (version >= 4) {
      f.dup_of = static_cast<int32_t>(rd.U32());
      if (!rd.ok() || f.dup_of < -1 || (f.dup_of >= 0 && static_cast<uint32_t>(f.dup_of) >= f.fd)) {
        return Bad("fd dup_of");
      }
    }
  }
  // A dup_of names the first record of its file description: same kind and inode, not itself a
  // dup (the restorer opens or makes that one and duplicates it).
  {
    absl::flat_hash_map<uint32_t, const FdRecord*> by_fd;
    for (const FdRecord& f : r.fds) by_fd.emplace(f.fd, &f);
    for (const FdRecord& f : r.fds) {
      if (f.dup_of < 0) continue;
      auto it = by_fd.find(static_cast<uint32_t>(f.dup_of));
      if (it == by_fd.end() || it->second->kind != f.kind || it->second->inode != f.inode ||
          it->second->dup_of != -1) {
        return Bad("fd dup_of: not the first descriptor of the same file");
      }
    }
  }
  n = count(kMaxDigests, kDigestSize, "digest");
  if (!n.ok()) return n.status();
  r.digests.resize(*n);
  for (BlockDigest& d : r.digests) {
    d.block_id = rd.U32();
    if (rd.U32() != 0) return Bad("digest reserved field");
    d.length = rd.U64();
    d.crc32c = rd.U32();
    if (!rd.ok() || d.block_id == 0) return Bad("digest");
  }
  if (!rd.AtEnd()) {
    return absl::DataLossError(absl::StrCat("decode process state: ", rd.remaining(),
                                            " trailing bytes after the last field"));
  }
  return r;
}

std::string SummarizeProcessState(const ProcessStateRecord& r) {
  std::string s = absl::StrFormat(
      "process state: pid %u, page size %u, cwd %s, exe %s\n"
      "  %zu vmas, %zu threads, %zu sigactions, %zu fds, %zu block digests\n"
      "  brk 0x%x..0x%x, vdso 0x%x..0x%x (crc 0x%08x)\n",
      r.pid, r.page_size, r.cwd, r.exe, r.vmas.size(), r.threads.size(), r.sigactions.size(),
      r.fds.size(), r.digests.size(), r.mm.start_brk, r.mm.brk, r.vdso.vdso_start, r.vdso.vdso_end,
      r.vdso.crc);
  for (const ThreadContext& t : r.threads) {
    absl::StrAppendFormat(&s, "  thread %u: rip 0x%x rsp 0x%x fs 0x%x\n", t.tid, t.rip, t.rsp,
                          t.fs_base);
  }
  for (const FdRecord& f : r.fds) {
    absl::StrAppendFormat(&s, "  fd %u: %s %s", f.fd, FdKindName(f.kind), f.path);
    if (f.pipe_size != 0) {
      absl::StrAppendFormat(&s, " (own pipe, %u bytes, %zu unread)", f.pipe_size, f.unread.size());
    }
    if (f.kind == FdKind::kEventfd) {
      absl::StrAppendFormat(&s, " (count %u%s)", f.eventfd_count,
                            f.eventfd_semaphore ? ", semaphore" : "");
    }
    if (f.kind == FdKind::kEpoll) absl::StrAppendFormat(&s, " (%zu watched)", f.epoll_items.size());
    if (f.dup_of >= 0) absl::StrAppendFormat(&s, " (shared with fd %d)", f.dup_of);
    s += "\n";
  }
  return s;
}

}  // namespace procmig
