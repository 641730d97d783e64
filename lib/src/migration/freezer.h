// Freezer: the seam through which the sender stops and restarts the program's threads.
//
// The preload agent implements it with its park signal (every application thread waits on a futex
// inside a signal handler); tests implement it with fakes. Park() either parks every application
// thread within the timeout or parks none (it unparks those that did and fails), so a failed stop
// leaves the program running. SetThrottle() asks the implementation to park the threads for a
// share of each period (auto-converge). RunInFrozenCopy() runs the final phase in a frozen copy
// of the process (a raw fork while every thread is parked): the copy runs `body`, reports its
// status, and exits; the original waits for the report (and unparks first when leave_running).
// A fake may run `body` inline.
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
  // While parked: runs `body` in a frozen copy of the process and returns its status. With
  // leave_running the original's threads are unparked as soon as the copy exists. On return the
  // copy is gone. timeout_ms bounds the wait for the copy's report.
  virtual absl::Status RunInFrozenCopy(absl::FunctionRef<absl::Status()> body, bool leave_running,
                                       int timeout_ms) = 0;
};

}  // namespace procmig

#endif  // PROCMIG_MIGRATION_FREEZER_H_
