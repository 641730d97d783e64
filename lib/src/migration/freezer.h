// Freezer: the seam through which the sender stops and restarts the program's threads.
//
// The preload agent implements it with its park signal (every application thread waits on a futex
// inside a signal handler); tests implement it with fakes. Park() either parks every application
// thread within the timeout or parks none (it unparks those that did and fails), so a failed stop
// leaves the program running. SetThrottle() asks the implementation to park the threads for a
// share of each period (auto-converge). RunFinalPhase() runs the final phase while every thread
// is parked: with leave_running in a frozen copy of the process (a raw fork), whose memory stays
// as it was while the original's threads are unparked at once; otherwise beside the parked
// program, sharing its memory (nothing there changes: copying the page tables of a fork would
// only lengthen the pause, by some 25 ms per GiB of 4 KiB pages). Either way `body` runs in a
// task of its own that reports its status and exits, so a crash there does not take the program
// down, and the caller waits for the report. A fake may run `body` inline.
//
// Threads: every method is called by the one thread that drives the sender (the agent thread),
// which is never parked. Between Park() and Unpark() no method may allocate.
#ifndef PROCMIG_MIGRATION_FREEZER_H_
#define PROCMIG_MIGRATION_FREEZER_H_

#include <cstdint>
#include <span>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "migration/process_state.h"

namespace procmig {

class Freezer {
 public:
  virtual ~Freezer() = default;

  // Parks every application thread or none. DeadlineExceeded when one did not park in time
  // (every thread then runs again). Allocates nothing.
  virtual absl::Status Park(int timeout_ms) = 0;
  virtual void Unpark() = 0;
  // Share of each period (0..99 %) the application threads spend parked; 0 stops throttling.
  virtual void SetThrottle(uint32_t percent) = 0;
  // While parked: the context each parked thread saved. Valid until Unpark().
  virtual std::span<const ThreadContext> ParkedThreads() const = 0;
  // While parked: runs `body` (see above) and returns its status. With leave_running the
  // original's threads are unparked as soon as the frozen copy exists. On return the task that
  // ran `body` is gone. When its report has not come within timeout_ms, `cancel` is called (from
  // the waiting thread, while `body` still runs: it must make `body` fail soon, e.g. by aborting
  // its channels); a task that still does not report is killed. On failure the threads are
  // unparked before the status is built.
  virtual absl::Status RunFinalPhase(absl::FunctionRef<absl::Status()> body, bool leave_running,
                                     int timeout_ms, absl::FunctionRef<void()> cancel) = 0;
};

}  // namespace procmig

#endif  // PROCMIG_MIGRATION_FREEZER_H_
