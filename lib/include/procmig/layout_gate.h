// LayoutGate: keeps the program's memory-layout changes and the dirty tracker's work on its
// ranges from interleaving.
//
// The tracker learns the layout from /proc/self/maps some time before it registers, arms or scans
// a block; a program thread that munmaps, mremaps or maps over the range in between makes the
// kernel refuse the tracker (UFFDIO_REGISTER: EINVAL, PAGEMAP_SCAN: EPERM), and a registration of
// a range that no longer matches the program's mappings would split them (its next mremap of the
// whole mapping then fails with EFAULT). The agent's interposers of mmap, munmap, mremap,
// mprotect and madvise open a *change* around the real call; the tracker *locks* the gate while it
// registers, write-protects or scans. A change and a lock exclude each other; changes run
// concurrently with one another. Every change logs the ranges it touched with a sequence number,
// so the tracker can tell, under the lock, whether a block's range was touched since a given
// moment (then it checks the block against /proc/self/maps before arming it).
//
// System calls that glibc makes itself (malloc's mmap/munmap) do not go through the interposers;
// the tracker tolerates those (see the pagemap-scan backend).
//
// Parking: a thread holding a change open must not be parked (the tracker's final sync, with
// every thread parked, would wait for it forever), so while a tracker is attached the
// interposers block the park signal from TryBeginChange to EndChange, and wait for an unlocked
// gate (WaitUntilOpen) with it unblocked. (Attach happens under the lock, which first waits for
// the changes opened before it, unmasked, to close.) The tracker never parks threads while it
// holds the lock; the agent may hold it *while* parking (GatedFreezer), since a thread waiting
// at the gate can be parked there.
//
// Threads: changes from any thread (and from signal handlers; the interposers do not nest
// changes); Lock/Unlock from one tracker thread at a time. No allocation, no libc lock: futexes
// and atomics only. Constant-initialized, so it works before any constructor has run.
#ifndef PROCMIG_LAYOUT_GATE_H_
#define PROCMIG_LAYOUT_GATE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace procmig {

class LayoutGate {
 public:
  // Receives the ranges the program discarded (madvise MADV_DONTNEED/FREE/REMOVE).
  using DiscardFn = void (*)(void* ctx, uintptr_t addr, size_t len);
  // Changes remembered; older ones count as touching every range.
  static constexpr size_t kLogSize = 256;

  constexpr LayoutGate() = default;
  LayoutGate(const LayoutGate&) = delete;
  LayoutGate& operator=(const LayoutGate&) = delete;

  // ---- Program side (the interposers) ----
  // Opens a change, or returns false when the gate is locked (then WaitUntilOpen and retry).
  bool TryBeginChange();
  void WaitUntilOpen();
  // Closes the change, logging the (up to two) ranges it touched; empty ranges are ignored.
  void EndChange(uintptr_t lo1, uintptr_t hi1, uintptr_t lo2 = 0, uintptr_t hi2 = 0);
  // While a change is open: hands a discarded range to the attached tracker, if any.
  void NoteDiscard(uintptr_t addr, size_t len);
  // True when the calling thread holds the lock: its own calls must pass straight through.
  bool HeldByCaller() const;
  // True while a tracker is attached: only then must changes block the park signal.
  bool tracking() const { return fn_.load(std::memory_order_acquire) != nullptr; }

  // ---- Tracker side ----
  // Waits until no change is open and keeps new ones out until Unlock. Reentrant for the holding
  // thread (each Lock needs its Unlock), so a caller may hold the gate across a stop preparation
  // and the park while the freezer and the tracker lock it again inside.
  void Lock();
  void Unlock();
  // The number of changes so far (a moment to compare against later). Any time.
  uint64_t seq() const { return seq_.load(std::memory_order_acquire); }
  // Under Lock: whether a change after `since` touched [lo, hi) (or is no longer remembered).
  bool ChangedSince(uint64_t since, uintptr_t lo, uintptr_t hi) const;
  // Under Lock: calls fn(ctx, a, b) with each part [a, b) of [lo, hi) that a change after `since`
  // touched. False when some of those changes are no longer remembered (then nothing is called:
  // count all of [lo, hi) as touched).
  using RangeFn = void (*)(void* ctx, uintptr_t lo, uintptr_t hi);
  bool ChangesSince(uint64_t since, uintptr_t lo, uintptr_t hi, RangeFn fn, void* ctx) const;
  // Under Lock: the tracker that receives discards (one at a time), and its removal.
  void Attach(DiscardFn fn, void* ctx);
  void Detach();

  // Counters for tests and the agent's log.
  uint64_t waits() const { return waits_.load(std::memory_order_relaxed); }

 private:
  struct Entry {
    std::atomic<uint64_t> seq{0};
    std::atomic<uintptr_t> lo1{0}, hi1{0}, lo2{0}, hi2{0};
  };

  std::atomic<uint32_t> locked_{0};  // futex word: 1 while the tracker holds the gate
  std::atomic<uint32_t> active_{0};  // futex word: open changes
  std::atomic<uintptr_t> owner_{0};  // pthread_self() of the lock holder
  std::atomic<uint32_t> depth_{0};   // the holder's nested Locks; only the holder touches it
  std::atomic<uint64_t> seq_{0};
  std::atomic<uint64_t> waits_{0};
  std::atomic<DiscardFn> fn_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  Entry log_[kLogSize];
};

// Holds a gate's lock for a scope; a null gate does nothing.
class LayoutGateLock {
 public:
  explicit LayoutGateLock(LayoutGate* gate) : gate_(gate) {
    if (gate_ != nullptr) gate_->Lock();
  }
  ~LayoutGateLock() {
    if (gate_ != nullptr) gate_->Unlock();
  }
  LayoutGateLock(const LayoutGateLock&) = delete;
  LayoutGateLock& operator=(const LayoutGateLock&) = delete;

 private:
  LayoutGate* const gate_;
};

}  // namespace procmig

#endif  // PROCMIG_LAYOUT_GATE_H_
