// Restorer: rebuilds a migrated process from its process-state record and its blocks (held in
// this process at temporary addresses) and starts it.
//
// CheckRestorable() refuses, with every reason listed, what cannot work here: CPU features the
// source used that this CPU lacks, a different vDSO, file mappings whose file is missing or
// changed (size, mtime, and the build-id or crc32c the source recorded). A live receiver runs
// CheckRestorableUpFront() on the restore_check record before any memory arrives; the files it
// verified are then only stat'ed again at the end of the stream (same dev, inode, size, mtime
// as verified), which keeps the check at the end cheap; other files get the full check.
// StartRestoredProcess() calls CheckRestorable, then plans (restore_plan.h), maps the
// blob with its arguments, and creates the process:
//   - in a new PID (and mount, for its own /proc) namespace, by default: a minimal init (pid 1,
//     sharing our memory, raw system calls only) creates the process with clone3 set_tid = its old
//     pid, so the old pid and tids are free even on the same host; init exits with the process's
//     exit status (128+signal when killed);
//   - or in our namespace with new ids (glibc's cached tids patched through each thread's tid
//     address; a warning says so).
// The new process is a copy of this one that jumps into the blob: it unmaps everything else,
// rebuilds the layout and threads, and reports on a pipe. Start returns once every thread of the
// program is running, or with the blob's failure (step, index, errno) after the half-built
// process is gone. The temporary block mappings in this process may be unmapped afterwards.
//
// Threads: call from any thread; the caller's rseq registration is handled. Nothing global.
#ifndef PROCMIG_RESTORE_RESTORE_PROCESS_H_
#define PROCMIG_RESTORE_RESTORE_PROCESS_H_

#include <sys/types.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "migration/process_state.h"
#include "migration/restore_check.h"
#include "os/file_identity.h"
#include "os/memory_region.h"
#include "restore/restore_plan.h"

namespace procmig {

// A file the up-front check found identical to the source's: the source's entry and the file's
// stamp here when it was checked.
struct VerifiedFile {
  FileCheck source;
  FileStamp here;
};
using VerifiedFiles = std::vector<VerifiedFile>;

struct RestoreProcessOptions {
  bool pid_namespace = true;  // false: our namespace, new ids
  int start_timeout_ms = 30'000;
  // Descriptors of ours (above 2) that become the process's fd 0, 1, 2; -1: as recorded.
  // Only read: the caller keeps them and may close them once Start returns.
  int stdio_fds[3] = {-1, -1, -1};
  // Files verified up front (CheckRestorableUpFront); null: every file gets the full check.
  const VerifiedFiles* verified = nullptr;
  // File mappings made ahead at their final addresses (restore/file_premaps.h): kept where the
  // record's layout still has them.
  std::span<const PremappedFile> premapped;
  // This process's layout read earlier (CheckRestorableUpFront), so the restore need not read
  // /proc/self/maps again while the program is paused (over a millisecond with a few hundred
  // VMAs): the blocks' and premaps' ranges are added to it, and the restorer's span is reserved
  // with MAP_FIXED_NOREPLACE, so a mapping made since that lies in the way sends the restore
  // back to a fresh read. Empty: read now.
  std::span<const MemoryRegion> layout;
};

struct RestoredProcess {
  pid_t child = -1;     // our child to wait for: the namespace's init, or the process itself
  pid_t host_pid = -1;  // the restored process's pid in our namespace (-1 if unknown)
  uint32_t pid = 0;     // its pid as it sees it
  uint32_t threads = 0;
  bool pid_namespace = false;
  uint64_t start_ns = 0;       // StartRestoredProcess: entry to "every thread running"
  uint64_t clone_ns = 0;       // of which: entry to the process (or its init) created
  uint64_t blob_entry_ns = 0;  // entry to the blob's first instruction in the new process
  // CLOCK_MONOTONIC when the report "running" arrived, and the earliest park of a thread in the
  // record (the source's clock: comparable on the same host only): the program's whole pause.
  uint64_t running_at_ns = 0;
  // Where the blob's time went (ns): descriptors, unmap, memory ops, process state, thread
  // clones, threads ready.
  uint64_t blob_phase_ns[6] = {};
  std::string slowest_op;  // the memory op that took longest ("" without ops), and how long
  uint64_t slowest_op_ns = 0;
  uint64_t first_park_ns = 0;
  std::vector<std::string> warnings;
};

// FailedPrecondition listing every reason the record cannot be restored on this host, e.g.
// "cannot restore pid 42 here: /usr/lib/libfoo.so: build-id 3a4f.. here, 9c1e.. at the source".
// `verified` (may be null): files checked up front, re-checked by stat only. `warnings` (may be
// null) receives what was not checked fully (a file whose identity the source did not record).
absl::Status CheckRestorable(const ProcessStateRecord& state,
                             const VerifiedFiles* verified = nullptr,
                             std::vector<std::string>* warnings = nullptr);
// The same checks on the restore_check record, before any memory is sent. On success
// `*verified` lists the files whose identity was checked and matched.
// `layout` (may be null) receives this process's layout as read for the check.
absl::Status CheckRestorableUpFront(const RestoreCheckRecord& check, VerifiedFiles* verified,
                                    std::vector<MemoryRegion>* layout = nullptr);

absl::StatusOr<RestoredProcess> StartRestoredProcess(const ProcessStateRecord& state,
                                                     std::span<const PlacedBlock> blocks,
                                                     const RestoreProcessOptions& options);

// Waits for the restored process and returns its exit status as a shell reports it (the code, or
// 128 + the signal that killed it). Meanwhile SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM,
// SIGTERM and SIGWINCH sent to this process by another (kill, sigqueue) are passed on to the
// restored process (host_pid), through pidfds; those the kernel sends to our process group (a
// terminal's ^C) reach it directly. Without pidfds (Linux 5.3-) nothing is passed on.
absl::StatusOr<int> WaitRestoredProcess(const RestoredProcess& p);

}  // namespace procmig

#endif  // PROCMIG_RESTORE_RESTORE_PROCESS_H_
