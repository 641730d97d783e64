// RestorePlan: turns a process-state record, the received blocks (held at temporary addresses in
// this process) and this process's own layout into the restorer blob's argument block
// (restorer_abi.h): which ranges survive the great unmap, where blocks in the way are staged,
// the ordered memory operations that rebuild the old layout, mm fields, sigactions, files, cwd and
// the threads with their stacks. Pure: no system calls, so every geometric case is unit-tested.
//
// Mapping rules, per VMA of the record (sorted, disjoint):
//   [vsyscall]                       left alone (fixed by the kernel)
//   [vdso] [vvar] [vvar_vclock]      the destination's own mappings, moved (together, keeping
//                                    their relative offsets) to the old addresses; the sizes and
//                                    offsets must match the record's (a different kernel: refused)
//   one block covering all of it     the block is moved into place (mremap) and given its prot
//   [stack] (grows down)             its one block moved into place when that block's mapping
//                                    grows down too, else mapped MAP_GROWSDOWN, the block copied in
//   otherwise                        mapped from its file (private or shared) or anonymous, then
//                                    blocks inside it moved over their parts, then its prot; a
//                                    file mapping premapped exactly so is kept as it is, and
//                                    a block mirrored into it is left there (no copy)
// A block whose temporary range lies where the old layout has anything is first moved to a
// staging range free in both layouts; so are the destination's vDSO mappings.
#ifndef PROCMIG_RESTORE_RESTORE_PLAN_H_
#define PROCMIG_RESTORE_RESTORE_PLAN_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "migration/process_state.h"
#include "os/memory_region.h"
#include "restore/restorer_abi.h"

namespace procmig {

// A received block: its final place and where its bytes are now.
struct PlacedBlock {
  uint32_t id = 0;
  uint64_t start = 0, length = 0;  // final
  uint64_t temp = 0;               // current address of its bytes (page aligned, read-write)
  // Its bytes are also at `start`, in the caller's premapped mapping of its file (PremappedFile,
  // written page by page as they arrived): where that mapping is kept, nothing is copied.
  bool mirrored = false;
  // Its temporary mapping is MAP_GROWSDOWN: a [stack] block covering its VMA is moved into place
  // (keeping that flag) rather than copied into a fresh grows-down mapping.
  bool grows_down = false;
};

// A file mapping the caller made ahead, at its final address (where that range was free here),
// as a VMA of an earlier look at the layout described it: the plan keeps it where the record's
// VMA is exactly that (range, file, offset, protection, sharing) instead of mapping the file
// again in the blob, and lets the blob unmap it otherwise.
struct PremappedFile {
  uint64_t start = 0, end = 0, offset = 0;
  uint8_t prot = 0;
  bool shared = false;
  std::string path;
};

struct RestorePlanInput {
  const ProcessStateRecord* state = nullptr;
  std::span<const PlacedBlock> blocks;
  std::span<const MemoryRegion> current;     // this process's /proc/self/maps
  std::span<const PremappedFile> premapped;  // among `current`
  size_t code_bytes = 0;                     // the blob's code
  int report_fd = -1;                        // must be above every restored descriptor
  bool set_tid = true;                       // threads get their old ids (else patched)
  uint64_t self_rseq = 0;                    // this thread's rseq area, dropped by the blob
  uint32_t self_rseq_len = 0;
  // Redirected stdio: stdio_fds[i] >= 0 is a descriptor of this process (above 2, not the report
  // descriptor) that becomes the restored process's fd i, replacing whatever the record has there
  // (a file reopened at its offset, or our own fd i); -1: as the record says.
  int stdio_fds[3] = {-1, -1, -1};
  // Descriptors the caller rebuilt (RebuiltHere: the pipes the process held both ends of,
  // eventfds, epoll instances): {the record's fd, a descriptor of this process above every
  // restored one and not the report descriptor}. One with no entry here is left out (noted).
  std::span<const std::pair<int, int>> rebuilt_fds;
};

struct RestorePlan {
  uint64_t region_start = 0;  // where the blob's mapping goes: code, then args, then stacks
  uint64_t region_bytes = 0;
  // The span from region_start that must be free here: the region, then the staging ranges.
  uint64_t reserve_bytes = 0;
  uint64_t args_offset = 0;        // of the Args block within the region
  uint64_t main_stack_top = 0;     // absolute
  std::vector<uint8_t> args;       // the Args block with its arrays and strings
  std::vector<std::string> notes;  // what was left out and why (fds not restored, ...)
  // The ranges of this process the blob keeps (sorted, merged): everything else is unmapped
  // first thing in the new process, so it need not even be copied into it.
  std::vector<std::pair<uint64_t, uint64_t>> keep;
  // What each item the blob may report a failure for is, for the message: ops (by index),
  // reopened descriptors (by index), threads (by index).
  std::vector<std::string> op_what, fd_what, thread_what, epoll_what;
  // The restored descriptors' numbers (the report descriptor must be above them all).
  int max_fd = 2;
};

inline constexpr uint64_t kBlobStackBytes = 64 << 10;
inline constexpr uint64_t kRestoreTaskTop = 0x7ffffffff000ull;

// Whether the caller rebuilds this descriptor (RestorePlanInput::rebuilt_fds): an own pipe or
// socketpair, an eventfd or an epoll instance.
bool RebuiltHere(const ProcessStateRecord& state, const FdRecord& f);

// The largest descriptor the plan restores (so the caller can place its report pipe above it).
int MaxRestoredFd(const ProcessStateRecord& state);

// FailedPrecondition naming the VMA or mapping that cannot be placed; InvalidArgument for a record
// that contradicts itself (overlapping VMAs, a block outside every VMA, no main thread).
absl::StatusOr<RestorePlan> BuildRestorePlan(const RestorePlanInput& in);

// "unmap", "memory op", ... for messages.
const char* RestoreStepName(uint32_t step);
// "memory op 12 (map /usr/lib/libc.so.6 at 7f..-7f..)", "fd 3 (/tmp/out.txt)", ...: what item
// `index` of `step` was.
std::string DescribeRestoreItem(const RestorePlan& plan, uint32_t step, uint32_t index);

}  // namespace procmig

#endif  // PROCMIG_RESTORE_RESTORE_PLAN_H_
