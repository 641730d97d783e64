// procmig's public API for restoring: `procmig restore DIR`, and the live restore that
// `procmig receive` does without --store.
//
// A restored process is rebuilt from its image (memory, threads, sigactions, mm fields, regular
// files, cwd) and resumes where every thread was parked. By default it runs in a new PID
// namespace, with its old pid and tids, under a minimal init that is our child and exits with
// the program's exit status; with pid_namespace = false it runs in ours with new ids. Before
// anything is created, what cannot work here is refused with every reason (CPU features, a
// different vDSO, a mapped file that changed or is missing). A failure part-way leaves no process.
#ifndef PROCMIG_RESTORE_H_
#define PROCMIG_RESTORE_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace procmig {

struct RestoreOptions {
  bool pid_namespace = true;
  int start_timeout_ms = 30'000;
  // Redirected stdio (`--stdin/--stdout/--stderr PATH`): stdio_fds[i] >= 0 is a descriptor of
  // the caller's, above 2 (OpenStdioRedirect makes one), that becomes the restored process's fd
  // i whatever the image has there (a file reopened at its offset, or the restorer's own fd i);
  // -1 keeps that. The process gets its own copy: the caller keeps the descriptor, and may
  // restore any number of processes from it.
  int stdio_fds[3] = {-1, -1, -1};
};

struct RestoreResult {
  pid_t child = -1;      // our child to wait for (the namespace init, or the process)
  pid_t host_pid = -1;   // the restored process in our PID namespace, -1 if unknown
  uint32_t pid = 0;      // its own pid (the old one in a new namespace)
  uint32_t threads = 0;  // threads running
  bool pid_namespace = false;
  double start_ms = 0;  // restore start to every thread running
  double clone_ms = 0;  // of which: until the process (or its namespace init) was created
  double entry_ms = 0;  // of which: until the restorer's first instruction ran
  // The program's whole pause: the first park of a thread at the source to every thread running
  // here (CLOCK_MONOTONIC of both: meaningful on one host only; 0 when unknown).
  double pause_ms = 0;
  // Where the restorer's time went: descriptors, unmap, memory, process state, thread clones,
  // threads ready (ms).
  double phase_ms[6] = {};
  std::string slowest_op;  // the restorer's longest memory op ("" without ops)
  double slowest_op_ms = 0;
  std::vector<std::string> warnings;  // what was not restored, and why
};

// Opens `path` for a redirected stdio descriptor `fd` (0, 1 or 2) of restored processes: fd 0
// O_RDONLY; fd 1 and 2 O_WRONLY|O_CREAT|O_APPEND, mode 0644 (a restored log continues what is
// there). The descriptor returned is close-on-exec and above 2, for RestoreOptions::stdio_fds;
// the caller closes it. On failure "PATH: open: ENOENT (No such file or directory)".
absl::StatusOr<int> OpenStdioRedirect(int fd, const std::string& path);

// Restores the image in `dir` (from `procmig receive --store` or `procmig checkpoint --to`).
// Each call makes an independent process.
absl::StatusOr<RestoreResult> RestoreImage(const std::string& dir, const RestoreOptions& options);

// Waits for a restored process: its exit code, or 128 + the signal that ended it. Signals other
// processes send the caller meanwhile (SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1/2, SIGALRM,
// SIGWINCH) are passed on to the restored process.
absl::StatusOr<int> WaitRestored(const RestoreResult& r);

// One line: "restored pid 1234 (host pid 5678, new PID namespace), 9 threads, in 3.1 ms".
std::string RenderRestoreResult(const RestoreResult& r);

}  // namespace procmig

#endif  // PROCMIG_RESTORE_H_
