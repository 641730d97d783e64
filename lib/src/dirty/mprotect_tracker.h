// MprotectTracker: the `mprotect` backend, which works on every kernel and architecture.
//
// Tracked blocks are made read-only. The first write to a page raises SIGSEGV (SEGV_ACCERR); the
// tracker's handler records the page in the live DirtySet and gives the page its write
// permission back, and the write is retried. Sync, under the tracker's lock, harvests the live set
// and makes every block read-only again; the handler records and unprotects under the same lock,
// so no page is left writable with its mark already harvested. If splitting a VMA for one page
// fails (ENOMEM: vm.max_map_count), the handler unprotects and records the surrounding 2 MiB
// (then the whole block): false positives, never a lost write.
//
// Faults it does not own (another address, another si_code, no active tracker) go to the
// SIGSEGV action that was installed when Start ran: its handler is called, or for SIG_DFL/SIG_IGN
// that action is reinstated and the fault retried, so a real crash still crashes. The agent's
// sigaction interposer (next issue) must keep the program from replacing this handler while a
// tracker is active, and route the program's own SIGSEGV handler through the saved action.
//
// Kernel writes: a system call writing into a read-only page fails with EFAULT rather than
// faulting. The agent's interposers of read/pread/readv/recv/recvmsg/... call
// PrepareKernelWrite(buf, len) before the real call and FinishKernelWrite after it. Between the
// two the range is "pinned": marked dirty, writable, and left writable (and marked again) by every
// Sync, so a write the kernel makes at any point of the call is reported. Residual risk: a system
// call that writes user memory without an interposer (e.g. io_uring completions, or a syscall
// made with syscall(2) directly) gets EFAULT; the agent refuses io_uring programs already.
//
// Process-wide state: a signal handler must find its tracker without an argument, so this class
// keeps the single documented exception to "no global mutable state in lib/": an atomic pointer
// to the active tracker, its spinlock, and the saved SIGSEGV action (mprotect_tracker.cc). One
// mprotect tracker per process: Start fails with FailedPrecondition while another is active.
//
// Layout races: with a LayoutGate, Start/AddBlocks/RemoveBlocks/Sync protect blocks under its
// lock; a block that cannot be protected because part of it was unmapped (ENOMEM) is reported
// wholly dirty until it can be again or is removed, and so is a block that one of the program's
// interposed calls touched since the last Sync (an mprotect to read-write, say, lets writes
// bypass the fault handler until Sync protects the block again). The tracker's own mprotect calls
// are raw system calls, so they never go through (nor wait at) the agent's mprotect interposer.
// Without the gate (glibc's own mmap/munmap, e.g. malloc freeing a large chunk and mapping the
// next one at the same address) a mapping unmapped and mapped again with the same extent between
// two Syncs looks unchanged: it is writable, and what is written to it before the next Sync
// protects it is not reported. The uffd backends see it (the new mapping is not registered).
// This backend changes protections page by page, which splits the program's mappings by design: a
// program that mremaps a tracked mapping as a whole may get EFAULT. Prefer the uffd backends.
//
// Threads: see dirty_tracker.h. The SIGSEGV handler runs on any application thread with every
// signal blocked (so a parking signal waits until it has released the lock); Sync takes the same
// lock and makes mprotect calls only. Neither allocates while holding it.
#ifndef PROCMIG_DIRTY_MPROTECT_TRACKER_H_
#define PROCMIG_DIRTY_MPROTECT_TRACKER_H_

#include <signal.h>

#include <atomic>
#include <vector>

#include "dirty/dirty_tracker.h"
#include "dirty/maps_snapshot.h"

namespace procmig {

class MprotectTracker final : public DirtyTracker {
 public:
  // Ranges that may be pinned at once by PrepareKernelWrite.
  static constexpr size_t kMaxPinned = 128;

  explicit MprotectTracker(LayoutGate* gate = nullptr)
      : gate_(gate), epoch_(gate == nullptr ? 0 : gate->seq()) {}
  ~MprotectTracker() override;

  TrackerKind kind() const override { return TrackerKind::kMprotect; }
  absl::Status Start(std::span<const RamBlock> blocks) override;
  absl::Status AddBlocks(std::span<const RamBlock> blocks) override;
  absl::Status RemoveBlocks(std::span<const uint32_t> ids) override;
  absl::StatusOr<const DirtySet*> Sync() override;
  absl::Status Stop() override;
  // OK path allocation-free and async-signal-safe; ResourceExhausted when kMaxPinned ranges are
  // pinned already (the call may then fail with EFAULT).
  absl::Status PrepareKernelWrite(uintptr_t addr, size_t len) override;
  void FinishKernelWrite(uintptr_t addr, size_t len) override;
  // Async-signal-safe here.
  void MarkDiscarded(uintptr_t addr, size_t len) override;
  TrackerStats stats() const override;
  LayoutGate* layout_gate() const override { return gate_; }

  // Called by the process-wide SIGSEGV handler, with the lock held: true if the fault was in a
  // tracked page and has been recorded and resolved.
  bool HandleFaultLocked(uintptr_t addr);

 private:
  struct Pinned {
    uintptr_t start = 0;
    size_t len = 0;
  };
  // Unprotects the pages of [start, start + len) that are tracked and marks them in live_.
  // Returns false if an mprotect failed. Lock held.
  bool UnprotectAndMarkLocked(uintptr_t start, size_t len);
  // Gives [start, start + len) protection `prot` back, mapping by mapping if it has holes.
  void Restore(uintptr_t start, size_t len, int prot);
  // Publishes a new block list (built by the caller) under the lock.
  void SwapBlocks(std::vector<RamBlock>& blocks, std::vector<int>& prots, DirtySet& live);

  LayoutGate* const gate_;  // not owned; may be null
  uint64_t epoch_ = 0;      // gate seq at the end of the last Sync (or construction)
  bool started_ = false;
  size_t page_size_ = 0;

  // Guarded by the process-wide spinlock (mprotect_tracker.cc), read by the signal handler.
  std::vector<int> prots_;  // original protection of live_.blocks()[i]
  DirtySet live_;
  Pinned pinned_[kMaxPinned];

  // Owned by the controlling thread.
  std::vector<RamBlock> blocks_;  // sorted by start, same order as live_.blocks()
  // Per block: could not be write-protected (partly unmapped since the layout was read), so
  // reported wholly dirty; 2 while Sync is running and it failed again.
  std::vector<uint8_t> unprotected_;
  MapsSnapshot maps_;  // for Restore
  DirtySet result_;
  TrackerStats stats_;
  std::atomic<uint64_t> faults_{0};
};

}  // namespace procmig

#endif  // PROCMIG_DIRTY_MPROTECT_TRACKER_H_
