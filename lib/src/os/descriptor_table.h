// The size of this process's descriptor table, and growing it ahead of need.
//
// The kernel grows a process's table when a descriptor past its end is made (the first at 64,
// then at every power of two), and when more than one thread shares the table it first waits for
// an RCU grace period (expand_fdtable in fs/file.c), milliseconds on an idle VM: a live
// receiver, multi-threaded by then, spent 14.3 ms of a 16 ms restore duplicating its report
// pipe above 64 (perf trace). Grown once while the process has one thread, the table keeps its
// size (it never shrinks), and the descriptors made later fit without that wait.
#ifndef PROCMIG_OS_DESCRIPTOR_TABLE_H_
#define PROCMIG_OS_DESCRIPTOR_TABLE_H_

namespace procmig {

// Slots in this process's descriptor table (FDSize in /proc/self/status); -1 when unknown.
int DescriptorTableSize();

// Best effort: grows the table to at least `slots` slots, capped by the soft RLIMIT_NOFILE (a
// descriptor is made at the last slot and closed again). Call it while the process has one
// thread. Returns the table's size after it (-1 when unknown).
int ReserveDescriptorSlots(int slots);

}  // namespace procmig

#endif  // PROCMIG_OS_DESCRIPTOR_TABLE_H_
