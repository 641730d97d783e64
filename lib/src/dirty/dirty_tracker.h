// DirtyTracker: reports which pages of the calling process's own RAM blocks were written since
// the previous Sync. The agent runs inside the migrated process, so every backend tracks "self".
//
// Life cycle: Start(blocks) arms tracking; AddBlocks/RemoveBlocks follow regions that come and go
// between syncs (a block that grew with mremap is removed and added again under the same id);
// Sync() returns the pages written since the previous Sync (or since the block was added) and
// re-arms them *before returning*, so a write that happens after Sync, even while the sender is
// reading that page, dirties it again and is reported by the next Sync: sending from live memory
// stays correct. A block's pages written before it was added are not reported; the caller sends a
// new block in full (the bulk stage does so for Start's blocks). Pages that a tracker cannot tell
// apart are reported (false positives are allowed, a missed write never is).
//
// Discards are not writes: a page dropped with MADV_DONTNEED/MADV_FREE (or a punched hole) reads
// as zeros afterwards, yet only pagemap-scan reports it (an empty pte counts as written to
// PAGEMAP_SCAN, unless the kernel also freed the page table, CONFIG_PT_RECLAIM). The agent's
// madvise/fallocate interposers call MarkDiscarded(addr, len) after the real call: the range is
// then reported by the next Sync in every backend.
//
// Layout changes: the program may unmap, move, resize or map over a block at any time, also
// between the layout read that produced the block and the tracker's call. Start/AddBlocks/Sync
// do not fail for that: a block whose range no longer lines up with the process's mappings is
// left unarmed ("stale") and reported wholly dirty at every Sync until it can be armed again or
// the caller removes it; the caller must read the layout again after every Sync and is expected
// to remove or resize such blocks (a stale block may be partly unmapped; read it safely). With a
// LayoutGate (TrackerConfig), changes made through the agent's interposers cannot interleave
// with a registration or a scan; changes glibc makes itself are caught by a retry. Blocks passed
// to Start/AddBlocks must come from a layout read after the previous Sync (or after the tracker
// was made).
//
// Backends, best first (TrackerKind): pagemap-scan, soft-dirty, uffd-wp, mprotect, full; see
// each backend's header for its mechanism, and tracker_probe.h for how one is chosen.
//
// Allocation and threads: Start/AddBlocks/RemoveBlocks/Stop allocate and may be called only from
// one controlling thread (the agent thread) while application threads run. Sync does not
// allocate, take locks an application thread could hold, or use stdio: it may run while every
// application thread is parked. The returned DirtySet belongs to the tracker and is valid until
// the next call of any method but the const ones.
#ifndef PROCMIG_DIRTY_DIRTY_TRACKER_H_
#define PROCMIG_DIRTY_DIRTY_TRACKER_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dirty/dirty_set.h"
#include "dirty/write_quiescer.h"
#include "procmig/layout_gate.h"
#include "ram/ram_block.h"

namespace procmig {

// Best first: the automatic choice takes the first one whose probe passes.
enum class TrackerKind { kPagemapScan, kSoftDirty, kUffdWp, kMprotect, kFull };
inline constexpr TrackerKind kAllTrackerKinds[] = {TrackerKind::kPagemapScan,
                                                   TrackerKind::kSoftDirty, TrackerKind::kUffdWp,
                                                   TrackerKind::kMprotect, TrackerKind::kFull};

// "pagemap-scan", "soft-dirty", "uffd-wp", "mprotect", "full".
std::string_view TrackerKindName(TrackerKind kind);
// The inverse; InvalidArgument naming the valid choices otherwise.
absl::StatusOr<TrackerKind> ParseTrackerKind(std::string_view name);

// Immutable once built; validated by SelectTracker/MakeTracker.
struct TrackerConfig {
  // Use this backend or fail (with its probe's reason); nullopt = the best that passes its probe.
  std::optional<TrackerKind> forced;
  // Not owned; may be null. Used by soft-dirty only (see write_quiescer.h).
  WriteQuiescer* quiescer = nullptr;
  // Not owned; may be null (no interposers: tests, the CLI). The agent's gate: the trackers that
  // register or protect ranges (pagemap-scan, uffd-wp, mprotect) lock it while they do, and every
  // backend receives the program's discards through it (see layout_gate.h).
  LayoutGate* layout_gate = nullptr;
  // The tracker will cover the whole process's writable memory (the agent), not chosen regions.
  // Then mprotect's probe fails: the kernel itself writes every thread's rseq area (in its TLS,
  // i.e. in tracked memory), and a write-protected one kills the thread (SIGSEGV, SI_KERNEL)
  // instead of reaching the tracker's handler; without rseq a program thread was still seen
  // killed on a write fault (tracker_probe.cc). uffd-wp's fails too: it cannot register private
  // file mappings (a program's .data), and its handler thread writes to tracked memory itself.
  // `full` is what remains after them.
  bool whole_process = false;
};

// Counters for benchmarks and `procmig status`; updated without locks by the owner thread, and
// (faults) with relaxed atomics by fault handlers, so a snapshot is approximate while running.
struct TrackerStats {
  uint64_t syncs = 0;
  uint64_t faults = 0;        // write faults handled by the tracker itself (uffd-wp, mprotect)
  uint64_t huge_regions = 0;  // pagemap-scan: reported regions that were huge pages
  uint64_t scan_calls = 0;    // pagemap-scan: PAGEMAP_SCAN ioctls; soft-dirty: pagemap reads
  // Layout races survived: blocks found out of line with the mappings (left stale), arms retried
  // after a refusal, blocks re-armed after a scan found their mapping replaced.
  uint64_t stale_blocks = 0;
  uint64_t arm_retries = 0;
  uint64_t rearms = 0;
};

class DirtyTracker {
 public:
  virtual ~DirtyTracker() = default;

  virtual TrackerKind kind() const = 0;

  // Arms tracking of `blocks` (validated, non-overlapping, writable, base page size). Fails with
  // FailedPrecondition when the kernel lacks what the backend needs.
  virtual absl::Status Start(std::span<const RamBlock> blocks) = 0;
  // Adds blocks (ids not yet tracked) and stops tracking blocks by id (unknown ids: NotFound).
  virtual absl::Status AddBlocks(std::span<const RamBlock> blocks) = 0;
  virtual absl::Status RemoveBlocks(std::span<const uint32_t> ids) = 0;
  // Pages written since the previous Sync, re-armed before returning (see above).
  virtual absl::StatusOr<const DirtySet*> Sync() = 0;
  // The last sync of a migration, with the program parked: the pages written since the previous
  // Sync, where re-arming is left out when it costs (pagemap-scan: write-protecting the written
  // pages again took 15-20 ms for ~700 scattered pages of 1 GiB here, the scan alone 0.9 ms).
  // Pages not re-armed are reported again by a later Sync, so tracking stays correct if the
  // stop fails.
  virtual absl::StatusOr<const DirtySet*> SyncFinal() { return Sync(); }
  // Disarms everything (protections restored, fds closed, threads joined). Idempotent.
  virtual absl::Status Stop() = 0;

  // Start, without write-protecting the pages yet, where the backend can (pagemap-scan): true
  // when it did, and then the caller passes every range to ProtectRange before it reads the range
  // to send it (the bulk stage, which then protects on two threads as it scans). A present page
  // left unprotected is reported written by every Sync until one re-protects it, and an empty
  // one as soon as it is written, so a range missed costs a resend, never a lost write. The
  // other backends Start as usual and return false.
  virtual absl::StatusOr<bool> StartUnprotected(std::span<const RamBlock> blocks);
  // Write-protects [start, end) (inside started blocks of pages of `page_size`) after
  // StartUnprotected said true; does nothing otherwise. Any thread, also two at once. 0 or an
  // errno; after an error the range's pages stay reported written as above.
  virtual int ProtectRange(uintptr_t start, uintptr_t end, size_t page_size);

  // Called by the agent's interposers of read/pread/readv/recv*/... before a system call writes
  // into [addr, addr + len) from the kernel, and FinishKernelWrite after it returns. Only the
  // mprotect backend needs it (the kernel gets EFAULT from a PROT_READ page instead of a fault);
  // for the others it does nothing. Async-signal-safe, no allocation.
  virtual absl::Status PrepareKernelWrite(uintptr_t addr, size_t len);
  virtual void FinishKernelWrite(uintptr_t addr, size_t len);

  // Reports the tracked pages of [addr, addr + len) as dirty at the next Sync: for ranges the
  // program discarded (see above). Any application thread; no allocation; not from a signal
  // handler (uffd-wp takes a mutex).
  virtual void MarkDiscarded(uintptr_t addr, size_t len) = 0;

  // Thread ids of threads the tracker owns (the uffd-wp fault handler). The agent must never park
  // them: an application thread blocked on a write fault waits for one.
  virtual std::span<const pid_t> OwnThreads() const { return {}; }

  // Descriptors the tracker holds open (userfaultfd, pagemap, clear_refs), for the agent to leave
  // out of the migrated process's descriptors.
  virtual std::vector<int> descriptors() const { return {}; }

  virtual TrackerStats stats() const = 0;

  // The gate from TrackerConfig (or null): a caller that needs the layout to stay put across
  // several steps (the sender, from its last layout read to the park) may hold it; the tracker's
  // own Lock inside is reentrant.
  virtual LayoutGate* layout_gate() const { return nullptr; }

 protected:
  // A LayoutGate::DiscardFn forwarding to MarkDiscarded of the tracker `self` points to.
  static void DiscardToTracker(void* self, uintptr_t addr, size_t len);
};

}  // namespace procmig

#endif  // PROCMIG_DIRTY_DIRTY_TRACKER_H_
