// Scenarios run against every dirty-tracking backend by its test file (one binary per backend,
// so a backend missing on the running kernel skips with exit 77 and the others still run).
//
// Each scenario maps its own regions, writes to them with a ground truth the test keeps, syncs,
// and fails on any written page the tracker did not report. False positives are allowed: they are
// counted and printed. Everything lives in /proc, /sys and anonymous memory, so the binaries run
// unchanged inside the VM of tests/unit/dirty/run_soft_dirty_vm.sh.
#ifndef PROCMIG_TESTS_UNIT_DIRTY_TRACKER_SCENARIOS_H_
#define PROCMIG_TESTS_UNIT_DIRTY_TRACKER_SCENARIOS_H_

#include "dirty/dirty_tracker.h"

namespace procmig::testing {

// Exits 77 with the probe's reason if `kind` fails its probe on this kernel; prints the reason
// it passed otherwise (once per process).
void RequireBackend(TrackerKind kind);

// Random writes over several blocks, including pages never touched before tracking began, and
// rounds without writes.
void RunRandomWrites(TrackerKind kind);
// Pages dropped with MADV_DONTNEED and written again.
void RunDontneedRewrite(TrackerKind kind);
// Read-only blocks made writable, written and read-only again between syncs (a JIT's W^X).
void RunWriteXorExecute(TrackerKind kind);
// Pages dropped with MADV_DONTNEED and not written again, announced with MarkDiscarded.
void RunMarkDiscarded(TrackerKind kind);
// A region grown with mremap (removed and added again under the same id).
void RunMremapGrow(TrackerKind kind);
// A region backed by transparent huge pages (MADV_HUGEPAGE).
void RunTransparentHugePages(TrackerKind kind);
// Writer threads running while Sync runs.
void RunConcurrentWriters(TrackerKind kind);
// A system call (read from a pipe) writing into tracked memory, with Prepare/FinishKernelWrite.
void RunKernelWrite(TrackerKind kind);
// Add/Remove bookkeeping: removed blocks are no longer reported, bad ids and overlaps fail.
void RunBlockBookkeeping(TrackerKind kind);
// SyncFinal reports exactly what was written; pages it did not re-arm come back at the next
// Sync (never lost), and a Sync after that with no writes reports nothing.
void RunFinalSync(TrackerKind kind);

}  // namespace procmig::testing

#endif  // PROCMIG_TESTS_UNIT_DIRTY_TRACKER_SCENARIOS_H_
