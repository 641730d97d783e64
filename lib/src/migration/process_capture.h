// Process-state capture: fills a ProcessStateRecord from the running process (the calling one).
//
// CaptureProcessBasics() reads what allocates (VMAs with file identity, fds classified, cwd, exe,
// mm fields, CPU features, vDSO identity): call it before parking. CaptureSigactions() and
// ComputeDigests() make only raw system calls / read memory and write into vectors sized in
// advance, so they run while every application thread is parked (or in the frozen copy).
// FindUnsupported() lists what cannot migrate (sockets, pipes to other processes, timers, the
// program's own io_uring/userfaultfd/timerfd/signalfd/... anon inodes, an epoll instance watching
// what is not the record's, deleted files, child processes), ignoring the agent's own
// descriptors;
// FindUnsupportedMemory() what its VMAs hold that cannot (shared memory no file holds:
// anonymous, SysV, memfd or deleted). Eventfds and
// epoll instances migrate. All functions act on the calling process; any thread.
#ifndef PROCMIG_MIGRATION_PROCESS_CAPTURE_H_
#define PROCMIG_MIGRATION_PROCESS_CAPTURE_H_

#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "migration/process_state.h"
#include "os/memory_region.h"
#include "ram/ram_block.h"

namespace procmig {

absl::Status CaptureProcessBasics(std::span<const MemoryRegion> regions,
                                  std::span<const RamBlock> blocks, ProcessStateRecord* out);
// This CPU's features as a sender records them (cpuid leaves 1 and 7, xcr0, hwcaps).
CpuFeatures CaptureCpuFeatures();
// Sizes out->sigactions to 64 entries first if needed (allocates only then).
void CaptureSigactions(ProcessStateRecord* out);
// Re-reads the offset of every regular file and directory in out->fds (lseek SEEK_CUR, raw
// system calls, no allocation): the offsets CaptureProcessBasics read before the park are stale
// if the program wrote since. Call it with the threads parked (the frozen copy shares the open
// file descriptions, so it sees the program's offsets).
void RefreshFdOffsets(ProcessStateRecord* out);
// Reads the unread bytes of every pipe the process holds both ends of into the record that
// carries them (HoldsPipeData), without taking them out of the pipe (tee(2) into a pipe of its
// own). Raw system calls only and no allocation: CaptureProcessBasics reserved pipe_size bytes for
// each; call it with the threads parked. False when the kernel refused (*failed_errno) or a pipe
// held more than its reserve (*failed_errno 0), naming the descriptor in *failed_fd; also false
// (*failed_errno 0, *failed_cause set) when descriptors are in flight on a socketpair
// (SCM_RIGHTS): bytes restored without them would be a silent loss.
bool RefreshPipeData(ProcessStateRecord* out, int* failed_fd, int* failed_errno,
                     const char** failed_cause = nullptr);
// Re-reads every eventfd's counter and every epoll instance's watched descriptors from fdinfo
// (raw system calls, no allocation: the items go into the capacity CaptureProcessBasics reserved).
// Call it with the threads parked. False when the kernel refused (*failed_errno) or an epoll
// instance watches more than its reserve (*failed_errno 0), naming the descriptor.
bool RefreshEventFds(ProcessStateRecord* out, int* failed_fd, int* failed_errno);
// Sets every record's dup_of: the lowest fd of the same kind and inode that names the same open
// file description (kcmp(2) KCMP_FILE on this process), else -1; n log n kcmp calls. A
// descriptor closed since the records were read is left unlinked. Where kcmp is refused (a kernel
// without CONFIG_KCMP) every dup_of stays -1 and false is returned. Part of CaptureProcessBasics
// (so of the sender's last capture before the park, like the descriptor table itself); allocates.
bool LinkSharedDescriptions(ProcessStateRecord* out);
// RefreshFdOffsets, RefreshPipeData and RefreshEventFds, for the sender's park: false with
// what failed (err 0 and no cause: more than the capture reserved), allocation-free like them.
struct FdRefreshFailure {
  int fd = -1;
  int err = 0;
  const char* cause = nullptr;  // set when neither errno nor the reserve says it
  const char* what = "";
};
bool RefreshParkedFds(ProcessStateRecord* out, FdRefreshFailure* why);
// The bytes RefreshPipeData and RefreshEventFds may add to the encoded record (the capacity
// CaptureProcessBasics reserved for pipe data and epoll items).
size_t RefreshGrowthBytes(const ProcessStateRecord& r);
// One digest per block from its memory as it is now (crc32c of the content), in `blocks` order;
// out->digests must already hold blocks.size() entries.
void ComputeDigests(std::span<const RamBlock> blocks, ProcessStateRecord* out);
// Shared memory whose content no file holds (MAP_SHARED|MAP_ANONYMOUS, SysV, memfd, a deleted
// file): not RAM blocks, so a restored copy would find it empty. One reason per VMA of `r`.
std::vector<std::string> FindUnsupportedMemory(const ProcessStateRecord& r);

// Removes the records of descriptors `fds` (the agent's own) from r.fds; a record that shared an
// open file with one of them (dup_of) is no longer linked to it.
void DropDescriptors(std::span<const int> fds, ProcessStateRecord* r);
// Human-readable reasons, one per resource; `ignored_fds` are the agent's own.
std::vector<std::string> FindUnsupported(const ProcessStateRecord& r,
                                         std::span<const int> ignored_fds);

}  // namespace procmig

#endif  // PROCMIG_MIGRATION_PROCESS_CAPTURE_H_
