// MigrationSource: the source side of one migration, as the in-process agent (preload/) drives it.
//
// The agent supplies a SourceFreezer (its thread parking), the memory it owns (excluded from the
// RAM blocks), its own descriptors (not reported as unsupported resources) and a progress
// callback; MigrationSource connects to the target (a ChannelGroup handshake, then the stream on
// the transport the options ask for, plus a POSIX channel over a dup of the same socket for the
// frozen copy), picks the tracker, and runs the sender state machine (setup, bulk, iterate,
// stop-and-copy). Run() returns OK when the receiver acked the end of the stream; the program's
// threads are then still parked unless leave_running, and the caller ends the process.
//
// Threads: Create() and Run() on the agent thread; Cancel() and stats() from any thread. The
// progress callback runs on the Run() thread, never while threads are parked.
#ifndef PROCMIG_SOURCE_H_
#define PROCMIG_SOURCE_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "procmig/control.h"
#include "procmig/layout_gate.h"

namespace procmig {

// What a parked thread's signal handler saved (x86-64); see the process-state record.
struct ThreadParkContext {
  uint32_t tid = 0;
  uint64_t rbx = 0, rbp = 0, r12 = 0, r13 = 0, r14 = 0, r15 = 0, rsp = 0, rip = 0;
  uint64_t fs_base = 0, gs_base = 0;
  uint64_t tid_address = 0;
  uint64_t robust_list = 0, robust_list_len = 0;
  uint64_t rseq_area = 0;
  uint64_t sigmask = 0;
  uint64_t altstack_sp = 0, altstack_size = 0;
  uint64_t ucontext = 0, siginfo = 0;
  uint64_t park_time_ns = 0;
  uint32_t rseq_size = 0;
  uint32_t altstack_flags = 0;
};

class SourceFreezer {
 public:
  virtual ~SourceFreezer() = default;
  // Parks every application thread but `exempt` (and the caller) within the timeout, or none.
  virtual absl::Status Park(int timeout_ms, std::span<const pid_t> exempt) = 0;
  // Idempotent.
  virtual void Unpark() = 0;
  virtual void SetThrottle(uint32_t percent) = 0;
  virtual std::span<const ThreadParkContext> ParkedThreads() const = 0;
  // While parked: runs the final phase `body` in a task of its own (a frozen copy made by a raw
  // fork when leave_running, then unparking at once; else one sharing the parked program's
  // memory) and returns its status; calls `cancel` when no report came within timeout_ms, and
  // kills the task if it still does not report. On failure the implementation unparks before
  // building the status.
  virtual absl::Status RunFinalPhase(absl::FunctionRef<absl::Status()> body, bool leave_running,
                                     int timeout_ms, absl::FunctionRef<void()> cancel) = 0;
};

struct SourceSetup {
  MigrationOptions options;                               // validated by Create()
  SourceFreezer* freezer = nullptr;                       // not owned
  std::vector<std::pair<uintptr_t, uintptr_t>> excluded;  // [start, end) of agent memory
  // Agent memory that travels (its library's data, its heap's small objects) but that the agent
  // itself writes while the program is parked: --verify does not check it.
  std::vector<std::pair<uintptr_t, uintptr_t>> unchecked;
  std::vector<int> own_fds;           // the agent's descriptors
  LayoutGate* layout_gate = nullptr;  // not owned: the agent's mmap/munmap/... interposers
  std::function<void(const MigrationStats&)> progress;
  std::function<void(const std::string&)> log;  // notes (fallbacks, clamped options)
  int park_timeout_ms = 2000;
  uint64_t progress_interval_ms = 100;
};

class MigrationSource {
 public:
  static absl::StatusOr<std::unique_ptr<MigrationSource>> Create(SourceSetup setup);
  virtual ~MigrationSource() = default;

  virtual absl::Status Run() = 0;
  virtual void Cancel() = 0;
  virtual MigrationStats stats() const = 0;
};

}  // namespace procmig

#endif  // PROCMIG_SOURCE_H_
