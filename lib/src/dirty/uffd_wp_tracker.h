// UffdWpTracker: the `uffd-wp` backend, synchronous userfaultfd write-protect (Linux 5.7+).
//
// Blocks are registered for write-protect and missing faults and write-protected. A handler
// thread owned by the tracker reads the fault messages, records the page in the live DirtySet and
// resolves the fault: UFFDIO_WRITEPROTECT off for a write-protect fault, UFFDIO_ZEROPAGE for a
// missing one (a page never touched, or dropped with MADV_DONTNEED: kernels before 6.4 cannot
// write-protect empty ptes, and MADV_DONTNEED drops the marker of those that can, so missing
// faults are what catches first writes there; a first *read* is reported too, a false positive).
// Sync, under mu_, write-protects every block again and harvests the live set; the handler marks
// and unprotects under the same mu_, so a page is never left writable with its mark harvested.
//
// Kernel writes (read(2) into a protected page) fault in kernel mode and are handled by the same
// thread, so the descriptor must not be UFFD_USER_MODE_ONLY: Start fails (FailedPrecondition)
// unless the process may open a full userfaultfd.
//
// Parking (next issue): application threads are parked by a real-time signal whose handler waits
// on a futex. A thread blocked on a write fault here sleeps interruptibly, so it can be parked
// mid-fault and the fault is retried after unpark. Neither the handler thread (listed by
// OwnThreads(), which blocks every signal) nor the agent thread is ever parked, and neither
// allocates or takes any lock but mu_ while holding mu_ (AddBlocks/RemoveBlocks build their new
// lists before taking it), so a parked thread holding the malloc lock cannot block them.
//
// A layout change can alter pages without a write fault (a mapping shrunk and grown again in
// place reads zeros where it had data, one moved over a block brings its own): with a LayoutGate,
// Sync reports the parts of armed blocks that a change logged since the last Sync touched.
//
// Layout races are handled as in the pagemap-scan backend (see its header): with a LayoutGate
// the registration, arming and re-protection run under its lock; a block out of line with the
// mappings stays stale (wholly dirty), a refused registration is retried after a look at
// /proc/self/maps, a re-protection refused because part of the range is a new, unregistered
// mapping re-arms the block and reports it wholly dirty, and removed blocks stay registered until
// Stop (their faults are still resolved by the handler). The maps read and the arming happen
// outside mu_: the kernel may write into a write-protected page of ours while reading maps, and
// that fault needs the handler, which needs mu_.
//
// Threads: see dirty_tracker.h; plus the handler thread, started by Start, joined by Stop.
#ifndef PROCMIG_DIRTY_UFFD_WP_TRACKER_H_
#define PROCMIG_DIRTY_UFFD_WP_TRACKER_H_

#include <sys/types.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "dirty/dirty_tracker.h"
#include "dirty/layout_check.h"
#include "dirty/userfault_fd.h"

namespace procmig {

class UffdWpTracker final : public DirtyTracker {
 public:
  explicit UffdWpTracker(LayoutGate* gate = nullptr)
      : gate_(gate), epoch_(gate == nullptr ? 0 : gate->seq()) {}
  ~UffdWpTracker() override;

  TrackerKind kind() const override { return TrackerKind::kUffdWp; }
  std::vector<int> descriptors() const override {
    if (uffd_.fd() < 0) return {};
    return {uffd_.fd()};
  }
  absl::Status Start(std::span<const RamBlock> blocks) override;
  absl::Status AddBlocks(std::span<const RamBlock> blocks) override;
  absl::Status RemoveBlocks(std::span<const uint32_t> ids) override;
  absl::StatusOr<const DirtySet*> Sync() override;
  absl::Status Stop() override;
  std::span<const pid_t> OwnThreads() const override;
  void MarkDiscarded(uintptr_t addr, size_t len) override;
  TrackerStats stats() const override;
  LayoutGate* layout_gate() const override { return gate_; }

 private:
  struct BlockState {
    bool armed = false;
    bool rearm = false;  // Sync: its re-protection was refused
    uint64_t since = 0;  // gate seq before the layout read the block came from
  };
  // As PagemapScanTracker::Arm (the gate locked, mu_ not held).
  absl::Status Arm(const RamBlock& block, BlockState& state, bool check);
  int RegisterAndProtect(const RamBlock& block) const;
  void HandlerLoop();
  // Marks in `out` the parts of `b` that the gate logged a change in since `since` (all of it
  // when the gate no longer remembers). The gate locked.
  void MarkChangedSince(uint64_t since, const RamBlock& b, DirtyBlock& out) const;
  // Records and resolves one fault; called by the handler thread.
  void HandleFault(uintptr_t addr, bool write_protect_fault);

  LayoutGate* const gate_;  // not owned; may be null
  // Immutable between Start and Stop.
  bool started_ = false;
  size_t page_size_ = 0;
  UserfaultFd uffd_;
  int wake_fd_ = -1;  // eventfd: tells the handler thread to exit
  std::thread handler_;
  pid_t handler_tid_ = 0;
  std::atomic<pid_t> handler_tid_published_{0};

  // Held by the handler while it marks and resolves one fault, and by Sync while it re-protects
  // and harvests; never held while allocating.
  std::mutex mu_;
  DirtySet live_ ABSL_GUARDED_BY(mu_);  // marked by the handler, harvested by Sync

  // Owned by the controlling thread (the handler never reads them).
  std::vector<RamBlock> blocks_;   // sorted by start
  std::vector<BlockState> state_;  // parallel to blocks_
  uint64_t epoch_ = 0;             // gate seq at the end of the last Sync (or construction)
  LayoutCheck layout_;             // maps read once per gate hold
  DirtySet result_;
  TrackerStats stats_;
  std::atomic<uint64_t> faults_{0};
};

}  // namespace procmig

#endif  // PROCMIG_DIRTY_UFFD_WP_TRACKER_H_
