// Memory-layout interposers: mmap, mmap64, munmap, mremap, mprotect and madvise, so that the
// program's layout changes and the dirty tracker's registration and scans of the same ranges
// never interleave (procmig/layout_gate.h), and so that pages the program discards with
// madvise(MADV_DONTNEED/FREE/REMOVE) reach the tracker (sent as zero afterwards).
//
// Each call opens a change on the process's one LayoutGate around the real call (glibc's, found
// with dlsym(RTLD_NEXT); a raw system call if that fails), waiting while the tracker holds the
// gate. While a tracker is attached the park signal is blocked from the moment the change is open
// until it is closed (with raw rt_sigprocmask), so no thread is ever parked inside one; while it
// waits for the gate, a thread can be parked as usual. A call made while the calling thread holds
// the gate (the tracker's own) or from a signal handler that interrupted an open change passes
// straight through. glibc's internal calls (malloc) bypass the interposers; the tracker copes.
//
// Threads: any; no allocation, no lock but the gate.
#ifndef PROCMIG_PRELOAD_MEMORY_INTERPOSE_H_
#define PROCMIG_PRELOAD_MEMORY_INTERPOSE_H_

#include "procmig/layout_gate.h"
#include "procmig/source.h"

namespace procmig::preload {

// The process's gate (constant-initialized: valid before any constructor runs).
LayoutGate& Gate();

// For a restored copy of the process: its gate (migrated with the library's data) still names
// the source's tracker as the receiver of discards, an object whose descriptors are gone. The
// restarted agent calls this before serving; the next migration's tracker attaches anew.
void ForgetTracker();

// A SourceFreezer that parks with the gate locked: no layout change can begin while the threads
// are being parked (a thread that tries waits, unmasked, and is parked there), so a program that
// maps and unmaps all the time cannot make every stop fail the sender's "layout unchanged since
// it was read" check during the park itself (measured: parks of several ms against a change
// every 3 ms). Everything else is forwarded. Agent thread only, like the freezer it wraps.
class GatedFreezer final : public SourceFreezer {
 public:
  GatedFreezer(SourceFreezer* inner, LayoutGate* gate) : inner_(inner), gate_(gate) {}
  absl::Status Park(int timeout_ms, std::span<const pid_t> exempt) override;
  void Unpark() override { inner_->Unpark(); }
  void SetThrottle(uint32_t percent) override { inner_->SetThrottle(percent); }
  std::span<const ThreadParkContext> ParkedThreads() const override {
    return inner_->ParkedThreads();
  }
  absl::Status RunFinalPhase(absl::FunctionRef<absl::Status()> body, bool leave_running,
                             int timeout_ms, absl::FunctionRef<void()> cancel) override {
    return inner_->RunFinalPhase(body, leave_running, timeout_ms, cancel);
  }

 private:
  SourceFreezer* const inner_;
  LayoutGate* const gate_;
};

}  // namespace procmig::preload

#endif  // PROCMIG_PRELOAD_MEMORY_INTERPOSE_H_
