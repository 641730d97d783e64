// WriteQuiescer: a seam through which a tracker can stop the program's writers for a moment.
//
// The soft-dirty backend needs it: reading /proc/self/pagemap and resetting the bits by writing
// to /proc/self/clear_refs are two system calls, and a write that lands between them is lost
// (the reset clears its bit before anyone saw it). With a quiescer the tracker calls Pause()
// before the read and Resume() after the reset, so no write can fall into that window. The agent
// implements it with its thread parking (next issue); tests implement it cooperatively. The other
// backends read and re-arm atomically in the kernel or under their own lock and never need it.
//
// Threads: called from the thread running Sync(); the implementation must not pause that thread.
#ifndef PROCMIG_DIRTY_WRITE_QUIESCER_H_
#define PROCMIG_DIRTY_WRITE_QUIESCER_H_

#include "absl/status/status.h"

namespace procmig {

class WriteQuiescer {
 public:
  virtual ~WriteQuiescer() = default;
  // Returns once no application thread can write memory until Resume(). Must not allocate if
  // called while threads are already parked (it is then a no-op for the agent).
  virtual absl::Status Pause() = 0;
  virtual void Resume() = 0;
};

}  // namespace procmig

#endif  // PROCMIG_DIRTY_WRITE_QUIESCER_H_
