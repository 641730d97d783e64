#include "restore/restore_plan.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"

namespace procmig {

namespace abi = restore_abi;

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kHuge = 2ull << 20;
constexpr uint64_t kLowest = 1ull << 32;  // staging and the blob stay above 4 GiB

uint64_t RoundUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

bool Overlaps(uint64_t a0, uint64_t a1, uint64_t b0, uint64_t b1) { return a0 < b1 && b0 < a1; }

bool IsVdsoName(const std::string& p) {
  return p == "[vdso]" || p == "[vvar]" || p == "[vvar_vclock]";
}

// The written pages of a small private file mapping (a library's .data and RELRO segment, a
// program's modified private mapping) are copied into a fresh private mapping of the file, so
// /proc/PID/maps still names the file; larger ones are moved in (no copy) and show anonymous.
constexpr uint64_t kCopyIntoFileMax = 8ull << 20;
bool CopiedIntoFile(const VmaRecord& v) {
  return v.kind == VmaKind::kFile && !v.shared && !v.deleted && !v.path.empty() &&
         v.path[0] == '/' && v.end - v.start <= kCopyIntoFileMax;
}

// Block memory at its temporary address is always read-write (restore_plan.h).
constexpr uint32_t kTempProt = PROT_READ | PROT_WRITE;
uint32_t MoveFlags(uint32_t src_prot, uint32_t dst_prot) {
  return src_prot == dst_prot ? abi::kMoveKeepsProt : 0;
}

const PremappedFile* FindPremapped(std::span<const PremappedFile> premapped, const VmaRecord& v) {
  for (const PremappedFile& p : premapped) {
    if (p.start == v.start && p.end == v.end && p.offset == v.offset && p.prot == v.prot &&
        p.shared == v.shared && p.path == v.path) {
      return &p;
    }
  }
  return nullptr;
}

struct Interval {
  uint64_t start, end;
};

// The highest gap of `bytes` (plus a guard page each side) between kLowest and the task top that
// overlaps none of `used`.
absl::StatusOr<uint64_t> FindGap(std::vector<Interval> used, uint64_t bytes) {
  std::sort(used.begin(), used.end(),
            [](const Interval& a, const Interval& b) { return a.start < b.start; });
  uint64_t ceiling = kRestoreTaskTop - 64 * kHuge;
  // Walk downwards: candidate = just below the next used start.
  for (size_t i = used.size() + 1; i-- > 0;) {
    uint64_t hi = i == used.size() ? ceiling : std::min(used[i].start, ceiling);
    uint64_t lo = i == 0 ? kLowest : std::max(used[i - 1].end, kLowest);
    if (hi <= lo) continue;
    if (hi - lo < bytes + 2 * kHuge) continue;
    uint64_t start = (hi - kHuge - bytes) & ~(kHuge - 1);
    if (start >= lo + kPage) return start;
  }
  return absl::ResourceExhaustedError(absl::StrCat("restore plan: no free range of ", bytes,
                                                   " bytes in both the old and the new layout"));
}

// Builds the Args block: a header followed by arrays and strings addressed by offset.
class ArgsBuilder {
 public:
  ArgsBuilder() { buf_.resize(RoundUp(sizeof(abi::Args), 64)); }
  template <typename T>
  uint64_t AddArray(std::span<const T> items) {
    uint64_t off = Align(alignof(T) < 16 ? 16 : alignof(T));
    buf_.resize(off + items.size_bytes());
    if (!items.empty()) std::memcpy(buf_.data() + off, items.data(), items.size_bytes());
    return off;
  }
  uint64_t AddString(const std::string& s) {
    uint64_t off = buf_.size();
    buf_.insert(buf_.end(), s.begin(), s.end());
    buf_.push_back(0);
    return off;
  }
  std::vector<uint8_t> Take() {
    Align(16);
    return std::move(buf_);
  }

 private:
  uint64_t Align(uint64_t a) {
    buf_.resize(RoundUp(buf_.size(), a));
    return buf_.size();
  }
  std::vector<uint8_t> buf_;
};

// A character device with no state of its own worth carrying (/dev/null, /dev/urandom, ...):
// opened again by path, like a regular file, rather than dropped.
bool IsStatelessDevice(const FdRecord& f) {
  static constexpr std::string_view kDevices[] = {"/dev/null", "/dev/zero", "/dev/full",
                                                  "/dev/random", "/dev/urandom"};
  return f.kind == FdKind::kOther && S_ISCHR(f.mode) &&
         std::find(std::begin(kDevices), std::end(kDevices), f.path) != std::end(kDevices);
}

}  // namespace

const char* RestoreStepName(uint32_t step) {
  switch (step) {
    case abi::kStepRseq:
      return "drop the receiver's rseq";
    case abi::kStepFds:
      return "redirect stdio and close the receiver's descriptors";
    case abi::kStepUnmap:
      return "unmap the receiver";
    case abi::kStepMemory:
      return "memory op";
    case abi::kStepMm:
      return "PR_SET_MM_MAP";
    case abi::kStepSigactions:
      return "rt_sigaction";
    case abi::kStepFiles:
      return "reopen a file descriptor";
    case abi::kStepCwd:
      return "chdir";
    case abi::kStepThreads:
      return "clone3 a thread";
    case abi::kStepThreadState:
      return "per-thread state";
    case abi::kStepPid:
      return "clone3 the process with its old pid";
    case abi::kStepEpoll:
      return "epoll_ctl";
    default:
      return "restorer";
  }
}

std::string DescribeRestoreItem(const RestorePlan& plan, uint32_t step, uint32_t index) {
  auto pick = [&](const std::vector<std::string>& v) {
    return index < v.size() ? absl::StrCat(" (", v[index], ")") : std::string();
  };
  switch (step) {
    case abi::kStepMemory:
      return absl::StrCat("op ", index, pick(plan.op_what));
    case abi::kStepFds:
    case abi::kStepFiles:
      return absl::StrCat("descriptor ", index, pick(plan.fd_what));
    case abi::kStepThreads:
    case abi::kStepThreadState:
      return absl::StrCat("thread ", index, pick(plan.thread_what));
    case abi::kStepSigactions:
      return absl::StrCat("signal ", index);
    case abi::kStepEpoll:
      return absl::StrCat("epoll item ", index, pick(plan.epoll_what));
    default:
      return absl::StrCat("item ", index);
  }
}

bool RebuiltHere(const ProcessStateRecord& state, const FdRecord& f) {
  return f.kind == FdKind::kEventfd || f.kind == FdKind::kEpoll || IsOwnPipe(state, f) ||
         IsOwnSocketPair(state, f);
}

int MaxRestoredFd(const ProcessStateRecord& state) {
  int m = 2;
  for (const FdRecord& f : state.fds) m = std::max(m, static_cast<int>(f.fd));
  return m;
}

absl::StatusOr<RestorePlan> BuildRestorePlan(const RestorePlanInput& in) {
  if (in.state == nullptr) return absl::InvalidArgumentError("restore plan: no process state");
  const ProcessStateRecord& st = *in.state;
  if (st.page_size != kPage) {
    return absl::FailedPreconditionError(
        absl::StrCat("restore plan: the image has ", st.page_size, "-byte pages, this host 4096"));
  }
  RestorePlan plan;
  // Target VMAs, sorted, checked disjoint.
  std::vector<const VmaRecord*> vmas;
  for (const VmaRecord& v : st.vmas) {
    if (v.start >= kRestoreTaskTop) continue;  // [vsyscall]
    if (v.start % kPage != 0 || v.end % kPage != 0 || v.end <= v.start) {
      return absl::InvalidArgumentError(
          absl::StrFormat("restore plan: VMA %x-%x is not page aligned", v.start, v.end));
    }
    vmas.push_back(&v);
  }
  std::sort(vmas.begin(), vmas.end(),
            [](const VmaRecord* a, const VmaRecord* b) { return a->start < b->start; });
  for (size_t i = 1; i < vmas.size(); ++i) {
    if (vmas[i]->start < vmas[i - 1]->end) {
      return absl::InvalidArgumentError(
          absl::StrFormat("restore plan: VMAs %x-%x and %x-%x overlap", vmas[i - 1]->start,
                          vmas[i - 1]->end, vmas[i]->start, vmas[i]->end));
    }
  }
  // Blocks, each inside one VMA.
  std::vector<std::vector<const PlacedBlock*>> inside(vmas.size());
  for (const PlacedBlock& b : in.blocks) {
    if (b.length == 0) continue;
    if (b.start % kPage != 0 || b.length % kPage != 0 || b.temp % kPage != 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("restore plan: block %u is not page aligned", b.id));
    }
    auto it = std::upper_bound(vmas.begin(), vmas.end(), b.start,
                               [](uint64_t a, const VmaRecord* v) { return a < v->start; });
    if (it == vmas.begin() || b.start + b.length > (*(it - 1))->end) {
      return absl::InvalidArgumentError(
          absl::StrFormat("restore plan: block %u (%x-%x) lies outside every VMA of the record",
                          b.id, b.start, b.start + b.length));
    }
    inside[static_cast<size_t>(it - vmas.begin() - 1)].push_back(&b);
  }
  // vDSO mappings: ours and the record's, same names, sizes and relative offsets.
  std::vector<const MemoryRegion*> cur_special;
  for (const MemoryRegion& r : in.current) {
    if (IsVdsoName(r.path)) cur_special.push_back(&r);
  }
  std::vector<const VmaRecord*> old_special;
  for (const VmaRecord* v : vmas) {
    if (IsVdsoName(v->path)) old_special.push_back(v);
  }
  if (old_special.size() != cur_special.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "restore plan: the image has ", old_special.size(), " vDSO mappings, this kernel ",
        cur_special.size(), ": a different kernel's vDSO cannot be moved into place"));
  }
  for (size_t i = 0; i < old_special.size(); ++i) {
    const VmaRecord& o = *old_special[i];
    const MemoryRegion& c = *cur_special[i];
    if (o.path != c.path || o.end - o.start != c.end - c.start ||
        o.start - old_special[0]->start != c.start - cur_special[0]->start) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "restore plan: vDSO layout differs: the image has %s of %u bytes at +%x, this kernel "
          "%s of %u bytes at +%x",
          o.path, o.end - o.start, o.start - old_special[0]->start, c.path, c.end - c.start,
          c.start - cur_special[0]->start));
    }
  }
  // Threads: the main thread (tid == pid) first.
  std::vector<const ThreadContext*> threads;
  for (const ThreadContext& t : st.threads) {
    if (t.tid == st.pid) threads.insert(threads.begin(), &t);
  }
  if (threads.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "restore plan: the record has no context for the main thread (tid ", st.pid, ")"));
  }
  for (const ThreadContext& t : st.threads) {
    if (t.tid != st.pid) threads.push_back(&t);
  }
  for (const ThreadContext* t : threads) {
    if (t->rip == 0 || t->rsp == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("restore plan: thread ", t->tid, " has no park context"));
    }
  }

  // Sizes: the region holds code, args, then one stack per thread (the main thread's included).
  const uint64_t code_bytes = RoundUp(in.code_bytes, kPage);
  std::vector<Interval> used;
  for (const VmaRecord* v : vmas) used.push_back({v->start, v->end});
  for (const MemoryRegion& r : in.current) {
    if (r.start < kRestoreTaskTop) used.push_back({r.start, r.end});
  }

  // Premapped file mappings kept as they are, and the blocks already in them (mirrored): those
  // need no op, and their temporary copies are left to the great unmap.
  std::vector<bool> vma_premapped(vmas.size(), false);
  std::vector<const PlacedBlock*> in_file;
  for (size_t vi = 0; vi < vmas.size(); ++vi) {
    const VmaRecord& v = *vmas[vi];
    if (v.kind != VmaKind::kFile || v.deleted || v.path.empty() || v.path[0] != '/' ||
        FindPremapped(in.premapped, v) == nullptr) {
      continue;
    }
    vma_premapped[vi] = true;
    for (const PlacedBlock* b : inside[vi]) {
      if (b->mirrored) in_file.push_back(b);
    }
  }
  auto is_in_file = [&](const PlacedBlock* b) {
    return std::find(in_file.begin(), in_file.end(), b) != in_file.end();
  };
  // Which temporary block ranges are in the old layout's way.
  std::vector<const PlacedBlock*> staged;
  // A block that is already where it belongs, alone in its VMA (not the [stack], which is mapped
  // anew and copied, nor a file mapping copied into its file), stays put: only its protection
  // is set.
  std::vector<const PlacedBlock*> in_place;
  for (size_t vi = 0; vi < vmas.size(); ++vi) {
    const auto& bs = inside[vi];
    if (bs.size() == 1 && bs[0]->temp == bs[0]->start && bs[0]->start == vmas[vi]->start &&
        bs[0]->length == vmas[vi]->end - vmas[vi]->start && vmas[vi]->kind != VmaKind::kStack &&
        !CopiedIntoFile(*vmas[vi])) {
      in_place.push_back(bs[0]);
    }
  }
  for (const PlacedBlock& b : in.blocks) {
    if (b.length == 0) continue;
    if (std::find(in_place.begin(), in_place.end(), &b) != in_place.end()) continue;
    if (is_in_file(&b)) continue;
    for (const VmaRecord* v : vmas) {
      if (Overlaps(b.temp, b.temp + b.length, v->start, v->end)) {
        staged.push_back(&b);
        break;
      }
    }
  }
  uint64_t staging_bytes = 0;
  for (const PlacedBlock* b : staged) staging_bytes += RoundUp(b->length, kHuge);
  uint64_t special_span = 0;
  if (!cur_special.empty()) special_span = cur_special.back()->end - cur_special.front()->start;
  staging_bytes += RoundUp(special_span, kHuge);

  ArgsBuilder ab;
  abi::Args header;
  header.report_fd = in.report_fd;
  header.flags = (in.set_tid ? abi::kArgSetTid : abi::kArgPatchTid) | abi::kArgSetExe;
  header.self_rseq = in.self_rseq;
  header.self_rseq_len = in.self_rseq_len;
  header.rseq_sig = 0x53053053;  // glibc's RSEQ_SIG on x86

  // Threads (stack tops patched once the region is placed).
  std::vector<abi::Thread> ath;
  for (const ThreadContext* t : threads) {
    abi::Thread a;
    a.rbx = t->rbx;
    a.rbp = t->rbp;
    a.r12 = t->r12;
    a.r13 = t->r13;
    a.r14 = t->r14;
    a.r15 = t->r15;
    a.rsp = t->rsp;
    a.rip = t->rip;
    a.fs_base = t->fs_base;
    a.gs_base = t->gs_base;
    a.tid_address = t->tid_address;
    a.robust_list = t->robust_list;
    a.robust_list_len = t->robust_list_len;
    a.rseq_area = t->rseq_area;
    // The kernel takes no registration shorter than the original 32-byte struct rseq.
    a.rseq_size = t->rseq_area != 0 ? std::max<uint32_t>(t->rseq_size, 32) : 0;
    a.altstack_sp = t->altstack_sp;
    a.altstack_size = t->altstack_size;
    a.altstack_flags = t->altstack_flags;
    a.tid = t->tid;
    ath.push_back(a);
  }
  const uint64_t stacks_bytes = kBlobStackBytes * ath.size();

  // Strings and ops need the region address (staging follows the region), so estimate the args
  // size generously first: ops <= 4 per VMA + blocks + specials, strings <= paths.
  uint64_t string_bytes = st.cwd.size() + st.exe.size() + 2;
  for (const VmaRecord* v : vmas) string_bytes += v->path.size() + 1;
  uint64_t epoll_items = 0;
  for (const FdRecord& f : st.fds) {
    string_bytes += f.path.size() + 1;
    epoll_items += f.epoll_items.size();
  }
  const uint64_t ops_cap = 4 * vmas.size() + 2 * in.blocks.size() + 2 * cur_special.size() + 8;
  const uint64_t args_cap = RoundUp(
      sizeof(abi::Args) + 64 + ops_cap * sizeof(abi::Op) +
          (in.blocks.size() + cur_special.size() + in.premapped.size() + 4) * sizeof(abi::Range) +
          64 * sizeof(abi::Sigaction) + (st.fds.size() + 3) * sizeof(abi::Fd) +
          ath.size() * sizeof(abi::Thread) + epoll_items * sizeof(abi::EpollItem) + string_bytes +
          16 * 8,
      kPage);
  const uint64_t region_bytes = code_bytes + args_cap + stacks_bytes;
  absl::StatusOr<uint64_t> gap = FindGap(used, RoundUp(region_bytes, kHuge) + staging_bytes);
  if (!gap.ok()) return gap.status();
  plan.region_start = *gap;
  plan.region_bytes = region_bytes;
  plan.reserve_bytes = RoundUp(region_bytes, kHuge) + staging_bytes;
  plan.args_offset = code_bytes;
  uint64_t staging_next = plan.region_start + RoundUp(region_bytes, kHuge);
  const uint64_t stacks_start = plan.region_start + code_bytes + args_cap;
  for (size_t i = 0; i < ath.size(); ++i) {
    ath[i].stack_top = stacks_start + (i + 1) * kBlobStackBytes;
  }
  plan.main_stack_top = ath[0].stack_top;

  std::vector<abi::Op> ops;
  // One copy of each path, so the blob sees consecutive maps of one file as such.
  std::map<std::string, uint64_t> paths;
  auto path_of = [&](const std::string& s) {
    auto [it, added] = paths.try_emplace(s, 0);
    if (added) it->second = ab.AddString(s);
    return it->second;
  };
  // 1. Blocks in the way go to staging.
  std::vector<uint64_t> src_of(in.blocks.size());
  for (size_t i = 0; i < in.blocks.size(); ++i) src_of[i] = in.blocks[i].temp;
  for (const PlacedBlock* b : staged) {
    abi::Op op;
    op.kind = abi::kOpMove;
    op.prot = kTempProt;
    op.flags = abi::kMoveKeepsProt;
    op.src = b->temp;
    op.dst = staging_next;
    op.len = b->length;
    src_of[static_cast<size_t>(b - in.blocks.data())] = staging_next;
    staging_next += RoundUp(b->length, kHuge);
    ops.push_back(op);
  }
  // 2. Our vDSO mappings: to staging (together), then to the old addresses.
  if (!cur_special.empty()) {
    const uint64_t base = staging_next;
    auto move = [&](const MemoryRegion& c, uint64_t from, uint64_t to) {
      abi::Op op;
      op.kind = abi::kOpMove;
      op.prot = (c.readable ? PROT_READ : 0) | (c.executable ? PROT_EXEC : 0);
      op.flags = abi::kMoveKeepsProt;  // the kernel's own mappings keep theirs
      op.src = from;
      op.dst = to;
      op.len = c.end - c.start;
      ops.push_back(op);
    };
    const uint64_t first = cur_special[0]->start;
    for (const MemoryRegion* c : cur_special) move(*c, c->start, base + (c->start - first));
    for (size_t i = 0; i < cur_special.size(); ++i) {
      move(*cur_special[i], base + (cur_special[i]->start - first), old_special[i]->start);
    }
    staging_next += RoundUp(special_span, kHuge);
  }
  // 3. Every other VMA.
  std::vector<abi::Range> premaps_kept;
  for (size_t vi = 0; vi < vmas.size(); ++vi) {
    const VmaRecord& v = *vmas[vi];
    if (IsVdsoName(v.path)) continue;
    std::vector<const PlacedBlock*> bs;  // the blocks to bring in
    for (const PlacedBlock* b : inside[vi]) {
      if (!is_in_file(b)) bs.push_back(b);
    }
    const uint64_t len = v.end - v.start;
    auto src = [&](const PlacedBlock* b) {
      return src_of[static_cast<size_t>(b - in.blocks.data())];
    };
    if (bs.size() == 1 && bs[0]->start == v.start && bs[0]->length == len &&
        (v.kind != VmaKind::kStack || bs[0]->grows_down) && !CopiedIntoFile(v)) {
      abi::Op op;
      op.kind = src(bs[0]) == v.start ? abi::kOpProtect : abi::kOpMove;
      op.prot = v.prot;
      op.flags = op.kind == abi::kOpMove ? MoveFlags(kTempProt, v.prot) : 0;
      op.src = src(bs[0]);
      op.dst = v.start;
      op.len = len;
      op.vma_index = vi;
      if (op.kind == abi::kOpMove || v.prot != kTempProt) ops.push_back(op);
      continue;
    }
    // Shared anonymous memory shows as "/dev/zero (deleted)": recreated empty (its content is
    // not migrated; the sender refuses programs that share memory with others).
    const bool shared_anon = v.path == "/dev/zero" && v.deleted;
    const bool file =
        v.kind == VmaKind::kFile && !v.path.empty() && v.path[0] == '/' && !shared_anon;
    if (file && v.deleted && bs.size() != 1) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "restore plan: %x-%x maps %s, which was deleted on the source", v.start, v.end, v.path));
    }
    abi::Op base;
    base.dst = v.start;
    base.len = len;
    base.vma_index = vi;
    base.prot = v.prot | (bs.empty() ? 0 : PROT_WRITE);
    if (vma_premapped[vi]) {
      // Already there: made writable for the blocks copied or moved in, if it is not.
      premaps_kept.push_back({v.start, v.end});
      base.kind = abi::kOpProtect;
      if (base.prot != v.prot) ops.push_back(base);
    } else if (file && !v.deleted) {
      base.kind = abi::kOpMapFile;
      base.flags = v.shared ? MAP_SHARED : MAP_PRIVATE;
      base.open_flags = (v.shared && (v.prot & PROT_WRITE)) ? O_RDWR : O_RDONLY;
      base.offset = v.offset;
      base.path = path_of(v.path);
    } else {
      base.kind = abi::kOpMapAnon;
      base.flags = (v.shared ? MAP_SHARED : MAP_PRIVATE) | MAP_NORESERVE |
                   (v.kind == VmaKind::kStack ? MAP_GROWSDOWN : 0);
    }
    if (base.kind != abi::kOpProtect) ops.push_back(base);
    for (const PlacedBlock* b : bs) {
      abi::Op op;
      op.kind = v.kind == VmaKind::kStack || CopiedIntoFile(v) ? abi::kOpCopy : abi::kOpMove;
      op.prot = base.prot;
      if (op.kind == abi::kOpMove) op.flags = MoveFlags(kTempProt, base.prot);
      op.src = src(b);
      op.dst = b->start;
      op.len = b->length;
      op.vma_index = vi;
      ops.push_back(op);
    }
    if (base.prot != v.prot) {
      abi::Op op;
      op.kind = abi::kOpProtect;
      op.prot = v.prot;
      op.dst = v.start;
      op.len = len;
      op.vma_index = vi;
      ops.push_back(op);
    }
  }
  if (ops.size() > ops_cap) return absl::InternalError("restore plan: op estimate exceeded");
  for (const abi::Op& op : ops) {
    const char* verb = op.kind == abi::kOpMove      ? "move"
                       : op.kind == abi::kOpMapAnon ? "map anonymous"
                       : op.kind == abi::kOpMapFile ? "map file"
                       : op.kind == abi::kOpCopy    ? "copy"
                                                    : "protect";
    std::string what = absl::StrFormat("%s %x-%x", verb, op.dst, op.dst + op.len);
    if (op.kind == abi::kOpMove || op.kind == abi::kOpCopy) {
      absl::StrAppendFormat(&what, " from %x", op.src);
    }
    // The VMA the op serves (staging ops of a file VMA name it too).
    const VmaRecord* served = nullptr;
    for (const VmaRecord* v : vmas) {
      if (op.dst >= v->start && op.dst < v->end) served = v;
    }
    if (served == nullptr && (op.kind == abi::kOpMapFile || op.kind == abi::kOpCopy) &&
        op.vma_index < vmas.size()) {
      served = vmas[op.vma_index];
    }
    if (served != nullptr && !served->path.empty()) absl::StrAppend(&what, " ", served->path);
    plan.op_what.push_back(std::move(what));
  }
  for (const abi::Thread& t : ath) plan.thread_what.push_back(absl::StrCat("tid ", t.tid));

  // Ranges the blob keeps: itself, the blocks' current ranges, our vDSO mappings.
  std::vector<abi::Range> keep;
  keep.push_back({plan.region_start, plan.region_start + region_bytes});
  for (const PlacedBlock& b : in.blocks) {
    if (b.length != 0 && !is_in_file(&b)) keep.push_back({b.temp, b.temp + b.length});
  }
  for (const MemoryRegion* c : cur_special) keep.push_back({c->start, c->end});
  keep.insert(keep.end(), premaps_kept.begin(), premaps_kept.end());
  std::sort(keep.begin(), keep.end(),
            [](const abi::Range& a, const abi::Range& b) { return a.start < b.start; });
  std::vector<abi::Range> merged;
  for (const abi::Range& r : keep) {
    if (!merged.empty() && r.start <= merged.back().end) {
      merged.back().end = std::max(merged.back().end, r.end);
    } else {
      merged.push_back(r);
    }
  }

  // Sigactions.
  std::vector<abi::Sigaction> sa(64);
  uint64_t sa_set = 0;
  for (const SigactionRecord& s : st.sigactions) {
    if (s.signo < 1 || s.signo > 64) continue;
    sa[s.signo - 1] = {s.handler, s.flags, s.restorer, s.mask};
    sa_set |= 1ull << (s.signo - 1);
  }
  // Descriptors: redirected stdio comes from the receiver's descriptors whatever the record has
  // there; regular files, directories and stateless devices (/dev/null, ...) are reopened; stdio
  // that is a tty, pipe or socket is the receiver's own; everything else is reported as not
  // restored.
  std::vector<abi::Fd> fds;
  bool redirected[3] = {false, false, false};
  for (int i = 0; i < 3; ++i) {
    const int from = in.stdio_fds[i];
    if (from < 0) continue;
    if (from <= 2 || from == in.report_fd) {
      return absl::InvalidArgumentError(
          absl::StrCat("restore plan: fd ", i, " redirected from descriptor ", from,
                       ", which must be above 2 and not the report descriptor ", in.report_fd));
    }
    abi::Fd a;
    a.fd = i;
    a.from_fd = from;
    plan.fd_what.push_back(absl::StrCat("fd ", i, " from the receiver's fd ", from));
    fds.push_back(a);
    redirected[i] = true;
  }
  std::vector<uint32_t> rebuilt;  // record fds set up from the caller's descriptors
  const int max_restored = MaxRestoredFd(st);
  // The restorer reports through in.report_fd, which every restored descriptor must stay below.
  auto below_report = [&](const FdRecord& f) {
    if (static_cast<int>(f.fd) < in.report_fd) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("restore plan: the report descriptor ",
                                                   in.report_fd, " is not above fd ", f.fd));
  };
  for (const FdRecord& f : st.fds) {
    if (f.fd <= 2 && redirected[f.fd]) continue;
    // A dup of a descriptor set up above shares its description again, whatever it is: one
    // offset (`cmd >log 2>&1` keeps writing one stream), one eventfd counter, one epoll
    // instance. Were that one redirected, this one is set up on its own.
    if (f.dup_of >= 0 && !(f.dup_of <= 2 && redirected[f.dup_of])) {
      auto first =
          std::find_if(fds.begin(), fds.end(), [&](const abi::Fd& o) { return o.fd == f.dup_of; });
      if (first != fds.end()) {
        RETURN_IF_ERROR(below_report(f));
        abi::Fd a;
        a.fd = static_cast<int32_t>(f.fd);
        a.open_flags = f.flags;
        a.same_as = f.dup_of;
        plan.fd_what.push_back(absl::StrCat("fd ", f.fd, " sharing fd ", f.dup_of, "'s file"));
        fds.push_back(a);
        plan.max_fd = std::max(plan.max_fd, static_cast<int>(f.fd));
        continue;
      }
    }
    if (RebuiltHere(st, f)) {
      int from = -1;
      for (const auto& [fd, ours] : in.rebuilt_fds) {
        if (fd == static_cast<int>(f.fd)) from = ours;
      }
      if (from >= 0) {
        if (from <= max_restored || from == in.report_fd) {
          return absl::InvalidArgumentError(absl::StrCat(
              "restore plan: fd ", f.fd, " comes from descriptor ", from,
              ", which must be above every restored descriptor and not the report descriptor"));
        }
        abi::Fd a;
        a.fd = static_cast<int32_t>(f.fd);
        a.from_fd = from;
        a.open_flags = f.flags & O_CLOEXEC;  // dup3's only flag
        plan.fd_what.push_back(absl::StrCat("fd ", f.fd, " (the process's own ", f.path, ")"));
        rebuilt.push_back(f.fd);
        fds.push_back(a);
        plan.max_fd = std::max(plan.max_fd, static_cast<int>(f.fd));
        continue;
      }
    }
    const bool reopen =
        ((f.kind == FdKind::kRegular || f.kind == FdKind::kDirectory) && !f.path.empty() &&
         f.path[0] == '/' && f.path.find(" (deleted)") == std::string::npos) ||
        IsStatelessDevice(f);
    if (!reopen) {
      if (f.fd > 2) {
        plan.notes.push_back(
            absl::StrCat("fd ", f.fd, " (", FdKindName(f.kind), " ", f.path, ") is not restored"));
      }
      continue;
    }
    RETURN_IF_ERROR(below_report(f));
    abi::Fd a;
    a.fd = static_cast<int32_t>(f.fd);
    a.open_flags = f.flags;
    a.offset = f.offset;
    // The process's own /proc entries are its own again wherever it runs now.
    std::string path = f.path;
    const std::string own = absl::StrCat("/proc/", st.pid, "/");
    if (path.starts_with(own)) path = "/proc/self/" + path.substr(own.size());
    a.path = path_of(path);
    plan.fd_what.push_back(absl::StrCat("fd ", f.fd, " ", path));
    fds.push_back(a);
    plan.max_fd = std::max(plan.max_fd, static_cast<int>(f.fd));
  }

  // What each rebuilt epoll instance watched, for descriptors the process will have.
  std::vector<abi::EpollItem> epoll;
  auto present = [&](uint32_t fd) {
    if (fd <= 2) return true;
    for (const abi::Fd& a : fds) {
      if (a.fd == static_cast<int32_t>(fd)) return true;
    }
    return false;
  };
  for (const FdRecord& f : st.fds) {
    // (A dup of one is that same instance, not in `rebuilt`: its items are added once.)
    if (f.kind != FdKind::kEpoll ||
        std::find(rebuilt.begin(), rebuilt.end(), f.fd) == rebuilt.end()) {
      continue;
    }
    for (const FdRecord::EpollItem& e : f.epoll_items) {
      if (!present(e.tfd)) {
        plan.notes.push_back(absl::StrCat("epoll fd ", f.fd, " watched fd ", e.tfd,
                                          ", which is not restored: dropped from it"));
        continue;
      }
      abi::EpollItem a;
      a.epfd = static_cast<int32_t>(f.fd);
      a.tfd = static_cast<int32_t>(e.tfd);
      a.events = e.events;
      a.data = e.data;
      epoll.push_back(a);
      plan.epoll_what.push_back(absl::StrCat("epoll fd ", f.fd, " watching fd ", e.tfd));
    }
  }

  header.mm = {st.mm.start_code,
               st.mm.end_code,
               st.mm.start_data,
               st.mm.end_data,
               st.mm.start_brk,
               st.mm.brk,
               st.mm.start_stack,
               st.mm.arg_start,
               st.mm.arg_end,
               st.mm.env_start,
               st.mm.env_end,
               0,
               0,
               0xffffffffu};
  header.exe_path = st.exe.empty() ? 0 : path_of(st.exe);
  {
    // The kernel's task name is the executable's base name, 15 bytes at most.
    std::string base = st.exe.substr(st.exe.find_last_of('/') + 1);
    if (base.size() > 15) base.resize(15);
    std::memcpy(header.comm, base.data(), base.size());
  }
  header.cwd = st.cwd.empty() ? 0 : path_of(st.cwd);
  for (const abi::Range& r : merged) plan.keep.push_back({r.start, r.end});
  header.keep = ab.AddArray<abi::Range>(merged);
  header.nkeep = static_cast<uint32_t>(merged.size());
  header.ops = ab.AddArray<abi::Op>(ops);
  header.nops = static_cast<uint32_t>(ops.size());
  header.sigactions = ab.AddArray<abi::Sigaction>(sa);
  header.sigaction_set = sa_set;
  header.fds = ab.AddArray<abi::Fd>(fds);
  header.epoll_items = ab.AddArray<abi::EpollItem>(epoll);
  header.nepoll_items = static_cast<uint32_t>(epoll.size());
  header.nfds = static_cast<uint32_t>(fds.size());
  header.region_start = plan.region_start;
  header.region_bytes = plan.region_bytes;
  header.threads = ab.AddArray<abi::Thread>(ath);
  header.nthreads = static_cast<uint32_t>(ath.size());
  plan.args = ab.Take();
  if (plan.args.size() > args_cap)
    return absl::InternalError("restore plan: args estimate exceeded");
  header.size = plan.args.size();
  std::memcpy(plan.args.data(), &header, sizeof header);
  return plan;
}

}  // namespace procmig
