#include "dirty/mprotect_tracker.h"

#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "dirty/block_list.h"

namespace procmig {
namespace {

// The single exception to "no global mutable state in lib/" (see the header): what the SIGSEGV
// handler needs to find the active tracker. `locked` is a spinlock because the handler can take
// nothing else; it is held only for a few mprotect calls.
struct SegvState {
  std::atomic<MprotectTracker*> active{nullptr};
  std::atomic<bool> locked{false};
  struct sigaction previous {};  // the SIGSEGV action before Start; guarded by `locked`
};
SegvState g_segv;

void Lock() {
  while (g_segv.locked.exchange(true, std::memory_order_acquire)) {
    while (g_segv.locked.load(std::memory_order_relaxed)) sched_yield();
  }
}
void Unlock() { g_segv.locked.store(false, std::memory_order_release); }

constexpr size_t kFallbackChunk = size_t{2} << 20;
constexpr size_t kMapsBufferBytes = 256u << 10;

// mprotect as a raw system call: in the agent, mprotect() is the layout interposer, which may
// wait for the layout gate; the tracker's own protection changes (from the SIGSEGV handler, with
// the spinlock held) must never wait, and are not the program's layout changes.
int Protect(uintptr_t addr, size_t len, int prot) {
  return static_cast<int>(syscall(SYS_mprotect, addr, len, prot));
}

// Hands a fault that is not ours to the action that was installed before Start.
void Chain(int sig, siginfo_t* info, void* ctx, const struct sigaction& prev) {
  if ((prev.sa_flags & SA_SIGINFO) != 0) {
    if (prev.sa_sigaction != nullptr) prev.sa_sigaction(sig, info, ctx);
    return;
  }
  if (prev.sa_handler == SIG_DFL || prev.sa_handler == SIG_IGN) {
    // Reinstate it and return: the faulting instruction runs again and the kernel applies it.
    sigaction(SIGSEGV, &prev, nullptr);
    return;
  }
  prev.sa_handler(sig);
}

// The address of this thread's last protection fault that no tracked block explained (see below).
__attribute__((tls_model("initial-exec"))) thread_local uintptr_t t_retried = 0;

void SegvHandler(int sig, siginfo_t* info, void* ctx) {
  const int saved_errno = errno;
  Lock();
  MprotectTracker* t = g_segv.active.load(std::memory_order_relaxed);
  const bool handled = t != nullptr && info->si_code == SEGV_ACCERR &&
                       t->HandleFaultLocked(reinterpret_cast<uintptr_t>(info->si_addr));
  const struct sigaction prev = g_segv.previous;
  Unlock();
  // No active tracker: Stop ran between the fault and the lock and restored the protections;
  // the retried access either succeeds or faults again into whatever handler is installed now.
  // Likewise RemoveBlocks gives a block its protection back and then forgets it: a fault taken
  // before the first and handled after the second finds no block, yet the access now succeeds.
  // So an unknown protection fault is retried once (per thread and address) before it is
  // chained: a real one faults again at the same address.
  const auto addr = reinterpret_cast<uintptr_t>(info->si_addr);
  if (handled) {
    t_retried = 0;
  } else if (t != nullptr) {
    if (info->si_code == SEGV_ACCERR && t_retried != addr) {
      t_retried = addr;
    } else {
      t_retried = 0;
      Chain(sig, info, ctx, prev);
    }
  }
  errno = saved_errno;
}

}  // namespace

MprotectTracker::~MprotectTracker() { (void)Stop(); }

absl::Status MprotectTracker::Start(std::span<const RamBlock> blocks) {
  if (started_) return absl::FailedPreconditionError("start mprotect tracker: already started");
  RETURN_IF_ERROR(RequireWritable(blocks));  // its own protections would clash with the program's
  ASSIGN_OR_RETURN(std::vector<RamBlock> sorted, BlocksWithAdded({}, blocks));
  page_size_ = BasePageSize();
  DirtySet live(sorted);
  std::vector<int> prots;
  for (const RamBlock& b : sorted) prots.push_back(b.prot);

  struct sigaction sa {};
  sa.sa_sigaction = SegvHandler;
  sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
  sigfillset(&sa.sa_mask);
  Lock();
  if (g_segv.active.load(std::memory_order_relaxed) != nullptr) {
    Unlock();
    return absl::FailedPreconditionError(
        "start mprotect tracker: another mprotect tracker is active in this process (its "
        "SIGSEGV handler is process-wide: one per process)");
  }
  struct sigaction previous {};
  if (sigaction(SIGSEGV, &sa, &previous) != 0) {
    int err = errno;
    Unlock();
    return ErrnoStatus("start mprotect tracker: install SIGSEGV handler", err);
  }
  g_segv.previous = previous;
  std::swap(live_, live);
  std::swap(prots_, prots);
  for (Pinned& p : pinned_) p = Pinned{};
  g_segv.active.store(this, std::memory_order_relaxed);
  Unlock();

  blocks_ = std::move(sorted);
  unprotected_.assign(blocks_.size(), 0);
  maps_.Reserve(kMapsBufferBytes);
  result_ = DirtySet(blocks_);
  started_ = true;
  int err = 0;
  const RamBlock* failed = nullptr;
  {
    LayoutGateLock hold(gate_);
    if (gate_ != nullptr) gate_->Attach(&DiscardToTracker, this);
    for (size_t i = 0; i < blocks_.size() && failed == nullptr; ++i) {
      const RamBlock& b = blocks_[i];
      if (Protect(b.start, b.length, b.prot & ~PROT_WRITE) == 0) continue;
      if (errno == ENOMEM) {  // partly unmapped since the layout was read: reported whole
        unprotected_[i] = 1;
        ++stats_.stale_blocks;
        continue;
      }
      err = errno;
      failed = &b;
    }
  }
  if (failed != nullptr) {
    std::string what = absl::StrFormat("start mprotect tracker: protect block %u (%s) 0x%x+0x%x",
                                       failed->id, failed->name, failed->start, failed->length);
    (void)Stop();
    return ErrnoStatus(what, err);
  }
  return absl::OkStatus();
}

void MprotectTracker::Restore(uintptr_t start, size_t len, int prot) {
  if (Protect(start, len, prot) == 0 || errno != ENOMEM) return;
  // A hole in the range (part of it unmapped since): mprotect stops at the hole, so the mappings
  // after it would stay read-only and untracked, and the program's next write there would crash.
  // One call per mapping instead (the maps buffer is allocated at Start).
  if (!maps_.Read()) return;
  maps_.ForEachMappingIn(start, start + len,
                         [prot](uintptr_t lo, uintptr_t hi) { (void)Protect(lo, hi - lo, prot); });
}

void MprotectTracker::SwapBlocks(std::vector<RamBlock>& blocks, std::vector<int>& prots,
                                 DirtySet& live) {
  Lock();
  live.HarvestFrom(live_);
  std::swap(live_, live);
  std::swap(prots_, prots);
  Unlock();
  blocks_.swap(blocks);
}

absl::Status MprotectTracker::AddBlocks(std::span<const RamBlock> blocks) {
  if (!started_)
    return absl::FailedPreconditionError("add blocks to mprotect tracker: not started");
  RETURN_IF_ERROR(RequireWritable(blocks));
  ASSIGN_OR_RETURN(std::vector<RamBlock> next, BlocksWithAdded(blocks_, blocks));
  DirtySet live(next);
  DirtySet result(next);
  std::vector<int> prots;
  for (const RamBlock& b : next) prots.push_back(b.prot);
  std::vector<uint8_t> unprotected(next.size(), 0);
  for (size_t i = 0, j = 0; i < next.size(); ++i) {
    while (j < blocks_.size() && blocks_[j].start < next[i].start) ++j;
    if (j < blocks_.size() && blocks_[j].id == next[i].id) unprotected[i] = unprotected_[j];
  }
  SwapBlocks(next, prots, live);  // publish first: a fault in a new block must find it
  unprotected_.swap(unprotected);
  result_ = std::move(result);
  int err = 0;
  const RamBlock* failed = nullptr;
  {
    LayoutGateLock hold(gate_);
    for (size_t i = 0; i < blocks.size() && failed == nullptr; ++i) {
      const RamBlock& b = blocks[i];
      if (Protect(b.start, b.length, b.prot & ~PROT_WRITE) == 0) continue;
      if (errno == ENOMEM) {  // partly unmapped since the layout was read: reported whole
        const RamBlock* in = FindBlockHolding(blocks_, b.start);
        if (in != nullptr) unprotected_[static_cast<size_t>(in - blocks_.data())] = 1;
        ++stats_.stale_blocks;
        continue;
      }
      err = errno;
      failed = &b;
    }
  }
  if (failed != nullptr) {
    std::string what = absl::StrFormat("add block %u (%s) to mprotect tracker: protect 0x%x+0x%x",
                                       failed->id, failed->name, failed->start, failed->length);
    std::vector<uint32_t> ids;
    for (const RamBlock& a : blocks) ids.push_back(a.id);
    (void)RemoveBlocks(ids);  // takes the gate itself
    return ErrnoStatus(what, err);
  }
  return absl::OkStatus();
}

absl::Status MprotectTracker::RemoveBlocks(std::span<const uint32_t> ids) {
  if (!started_)
    return absl::FailedPreconditionError("remove blocks from mprotect tracker: not started");
  ASSIGN_OR_RETURN(std::vector<RamBlock> gone, BlocksById(blocks_, ids));
  ASSIGN_OR_RETURN(std::vector<RamBlock> next, BlocksWithRemoved(blocks_, ids));
  // Give the pages back their protection before the handler stops knowing them. A block that is
  // already unmapped makes mprotect fail with ENOMEM: nothing to restore then.
  {
    LayoutGateLock hold(gate_);
    for (const RamBlock& b : gone) Restore(b.start, b.length, b.prot);
  }
  DirtySet live(next);
  DirtySet result(next);
  std::vector<int> prots;
  for (const RamBlock& b : next) prots.push_back(b.prot);
  std::vector<uint8_t> unprotected;
  for (size_t i = 0, j = 0; i < next.size(); ++i) {
    while (blocks_[j].id != next[i].id) ++j;
    unprotected.push_back(unprotected_[j]);
  }
  SwapBlocks(next, prots, live);
  unprotected_.swap(unprotected);
  result_ = std::move(result);
  return absl::OkStatus();
}

bool MprotectTracker::UnprotectAndMarkLocked(uintptr_t start, size_t len) {
  const uintptr_t end = start + len;
  std::span<DirtyBlock> blocks = live_.mutable_blocks();
  for (size_t i = 0; i < blocks.size(); ++i) {
    DirtyBlock& b = blocks[i];
    if (b.end() <= start || b.start >= end) continue;
    uintptr_t lo = std::max(start, b.start);
    uintptr_t hi = std::min(end, b.end());
    lo = b.start + (lo - b.start) / page_size_ * page_size_;
    hi = b.start + (hi - b.start + page_size_ - 1) / page_size_ * page_size_;
    const int prot = prots_[i];
    if (Protect(lo, hi - lo, prot) != 0) {
      if (errno != ENOMEM) return false;
      // Too many VMAs to split off this range: widen to an aligned 2 MiB chunk, then the block.
      lo = std::max(b.start, lo & ~(kFallbackChunk - 1));
      hi = std::min(b.end(), (hi + kFallbackChunk - 1) & ~(kFallbackChunk - 1));
      if (Protect(lo, hi - lo, prot) != 0) {
        lo = b.start;
        hi = b.end();
        if (Protect(lo, hi - lo, prot) != 0) return false;
      }
    }
    b.pages.SetRange((lo - b.start) / page_size_, (hi - lo) / page_size_);
  }
  return true;
}

bool MprotectTracker::HandleFaultLocked(uintptr_t addr) {
  if (live_.IndexOf(addr) < 0) return false;
  if (!UnprotectAndMarkLocked(addr & ~(uintptr_t{page_size_} - 1), page_size_)) return false;
  faults_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

absl::StatusOr<const DirtySet*> MprotectTracker::Sync() {
  if (!started_) return absl::FailedPreconditionError("sync mprotect tracker: not started");
  int err = 0;
  const RamBlock* failed = nullptr;
  result_.ClearAll();
  LayoutGateLock hold(gate_);
  Lock();
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const RamBlock& b = blocks_[i];
    if (Protect(b.start, b.length, prots_[i] & ~PROT_WRITE) != 0) {
      if (errno == ENOMEM) {  // partly unmapped: reported whole until the caller removes it
        if (unprotected_[i] == 0) ++stats_.stale_blocks;
        unprotected_[i] = 2;
        continue;
      }
      err = errno;
      failed = &b;
      break;
    }
  }
  result_.HarvestFrom(live_);
  for (size_t i = 0; i < blocks_.size(); ++i) {
    // The program changed the mapping or its protection (e.g. mprotect to read-write) since the
    // last Sync: writes there may have bypassed the fault handler.
    if (gate_ != nullptr && gate_->ChangedSince(epoch_, blocks_[i].start, blocks_[i].end())) {
      result_.mutable_blocks()[i].pages.SetAll();
    }
    if (unprotected_[i] == 0) continue;
    result_.mutable_blocks()[i].pages.SetAll();
    // 2: its protection failed this round, so it stays flagged; 1: protected again, this was the
    // one catch-up report of what was written while it was not.
    unprotected_[i] = unprotected_[i] == 2 ? 1 : 0;
  }
  // Ranges inside a system call stay writable and dirty for the next round too.
  bool pinned_ok = true;
  for (const Pinned& p : pinned_) {
    if (p.len != 0) pinned_ok &= UnprotectAndMarkLocked(p.start, p.len);
  }
  Unlock();
  if (failed != nullptr) {
    return ErrnoStatus(absl::StrFormat("sync mprotect tracker: protect block %u (%s) 0x%x+0x%x",
                                       failed->id, failed->name, failed->start, failed->length),
                       err);
  }
  if (!pinned_ok) return absl::InternalError("sync mprotect tracker: unprotect a pinned range");
  if (gate_ != nullptr) epoch_ = gate_->seq();
  ++stats_.syncs;
  return &result_;
}

absl::Status MprotectTracker::PrepareKernelWrite(uintptr_t addr, size_t len) {
  if (len == 0 || !started_) return absl::OkStatus();
  Lock();
  Pinned* slot = nullptr;
  for (Pinned& p : pinned_) {
    if (p.len == 0) {
      slot = &p;
      break;
    }
  }
  bool ok = false;
  if (slot != nullptr) {
    *slot = Pinned{addr, len};
    ok = UnprotectAndMarkLocked(addr, len);
  }
  Unlock();
  if (slot == nullptr) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "prepare kernel write 0x%x+0x%x: %u ranges already pinned", addr, len, kMaxPinned));
  }
  if (!ok) return ErrnoStatus(absl::StrFormat("prepare kernel write 0x%x+0x%x", addr, len), errno);
  return absl::OkStatus();
}

void MprotectTracker::FinishKernelWrite(uintptr_t addr, size_t len) {
  if (len == 0 || !started_) return;
  Lock();
  for (Pinned& p : pinned_) {
    if (p.start == addr && p.len == len) {
      p = Pinned{};  // stays writable and marked until the next Sync re-protects it
      break;
    }
  }
  Unlock();
}

void MprotectTracker::MarkDiscarded(uintptr_t addr, size_t len) {
  if (len == 0 || !started_) return;
  Lock();
  live_.MarkRange(addr, len);
  Unlock();
}

absl::Status MprotectTracker::Stop() {
  if (!started_) return absl::OkStatus();
  started_ = false;
  LayoutGateLock hold(gate_);
  if (gate_ != nullptr) gate_->Detach();
  DirtySet live;
  std::vector<int> prots;
  Lock();
  for (size_t i = 0; i < blocks_.size(); ++i)
    Restore(blocks_[i].start, blocks_[i].length, prots_[i]);
  for (Pinned& p : pinned_) p = Pinned{};
  sigaction(SIGSEGV, &g_segv.previous, nullptr);
  g_segv.active.store(nullptr, std::memory_order_relaxed);
  std::swap(live_, live);
  std::swap(prots_, prots);
  Unlock();
  blocks_.clear();
  unprotected_.clear();
  result_ = DirtySet();
  return absl::OkStatus();
}

TrackerStats MprotectTracker::stats() const {
  TrackerStats s = stats_;
  s.faults = faults_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace procmig
