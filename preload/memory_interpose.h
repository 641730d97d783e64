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

namespace procmig::preload {

// The process's gate (constant-initialized: valid before any constructor runs).
LayoutGate& Gate();

}  // namespace procmig::preload

#endif  // PROCMIG_PRELOAD_MEMORY_INTERPOSE_H_
