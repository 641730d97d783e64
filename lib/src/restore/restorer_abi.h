// The restorer blob's argument block: what the planner (restore_plan.cc, ordinary C++) hands the
// freestanding blob (restorer_blob.cc) that turns a forked copy of the receiver into the
// migrated process.
//
// Plain fixed-size structs and offsets only: the blob runs after everything else in the address
// space is gone, so the block is self-contained (arrays and strings are addressed by byte offsets
// from the block's start) and lives, with the blob's code and stacks, in one mapping placed where
// neither the old nor the new layout has anything. x86-64 only.
#ifndef PROCMIG_RESTORE_RESTORER_ABI_H_
#define PROCMIG_RESTORE_RESTORER_ABI_H_

#include <cstdint>

namespace procmig::restore_abi {

inline constexpr uint64_t kArgsMagic = 0x50524f434d524553ull;  // "SERMCORP"

// One memory operation; executed in array order.
enum OpKind : uint32_t {
  kOpMove = 1,     // mremap [src, src+len) to dst (MAYMOVE|FIXED), then mprotect(dst, prot)
                   // unless flags has kMoveKeepsProt (src already has prot)
  kOpMapAnon = 2,  // mmap(dst, len, prot, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED|flags)
  kOpMapFile = 3,  // open(path, open_flags); mmap(dst, len, prot, MAP_FIXED|flags, fd, offset)
  kOpCopy = 4,     // copy len bytes from src to dst (dst writable), then munmap(src, len)
  kOpProtect = 5,  // mprotect(dst, len, prot)
  kOpName = 6,     // PR_SET_VMA_ANON_NAME on (dst, len) with the string at path (best effort)
};

inline constexpr uint32_t kMoveKeepsProt = 1;

// kOpMapFile ops in a row naming the same path (the same string offset) and open flags share one
// open() of the file.
struct Op {
  uint32_t kind = 0;
  uint32_t prot = 0;
  uint32_t flags = 0;       // extra mmap flags (MAP_SHARED / MAP_PRIVATE, MAP_GROWSDOWN, ...)
  uint32_t open_flags = 0;  // kOpMapFile
  uint64_t src = 0, dst = 0, len = 0, offset = 0;
  uint64_t path = 0;       // offset of a NUL-terminated string in the block, 0 = none
  uint64_t vma_index = 0;  // for error reports: which VMA of the record this op serves
};

struct Range {
  uint64_t start = 0, end = 0;
};

// The saved park context of one thread plus what the blob needs to start it.
struct Thread {
  uint64_t rbx = 0, rbp = 0, r12 = 0, r13 = 0, r14 = 0, r15 = 0, rsp = 0, rip = 0;
  uint64_t fs_base = 0, gs_base = 0;
  uint64_t tid_address = 0;
  uint64_t robust_list = 0, robust_list_len = 0;
  uint64_t rseq_area = 0;
  uint64_t altstack_sp = 0, altstack_size = 0;
  uint32_t altstack_flags = 0, rseq_size = 0;
  uint32_t tid = 0;        // the old id, wanted through set_tid
  uint32_t new_tid = 0;    // filled in by the blob
  uint64_t stack_top = 0;  // the blob stack this thread starts on (16-aligned)
};

struct Sigaction {  // the kernel's layout for rt_sigaction(2)
  uint64_t handler = 0, flags = 0, restorer = 0, mask = 0;
};

// One descriptor of the restored process: either a file reopened by path at its offset, or
// (from_fd >= 0) a descriptor the blob inherited from the receiver, dup3'd onto fd before the
// receiver's descriptors are closed (stdio redirected by the receiver's options: fd is 0, 1 or
// 2, from_fd above 2 and not the report descriptor, so the close that follows drops it), or
// (same_as >= 0) a dup3 of the descriptor an earlier entry set up: the two share one open file
// description (offset, status flags, eventfd counter, epoll items), as they did in the process.
struct Fd {
  int32_t fd = 0;
  uint32_t open_flags = 0;
  uint64_t offset = 0;
  uint64_t path = 0;
  int32_t from_fd = -1;
  int32_t same_as = -1;
};

// The kernel's struct prctl_mm_map (PR_SET_MM_MAP).
struct MmMap {
  uint64_t start_code, end_code, start_data, end_data, start_brk, brk, start_stack;
  uint64_t arg_start, arg_end, env_start, env_end;
  uint64_t auxv;
  uint32_t auxv_size;
  uint32_t exe_fd;
};

// Steps, as reported on failure (and by name in the planner's message).
enum Step : uint32_t {
  kStepNone = 0,
  kStepRseq = 1,
  kStepFds = 2,
  kStepUnmap = 3,
  kStepMemory = 4,
  kStepMm = 5,
  kStepSigactions = 6,
  kStepFiles = 7,
  kStepCwd = 8,
  kStepThreads = 9,
  kStepThreadState = 10,
  kStepPid = 11,  // the namespace init could not create the process with its old pid
  kStepEpoll = 12,
};

// One descriptor an epoll instance watches, added again once every descriptor is in place.
struct EpollItem {
  int32_t epfd = -1;
  int32_t tfd = -1;
  uint32_t events = 0;
  uint32_t pad = 0;
  uint64_t data = 0;
};

// What the blob writes to report_fd: one message, then the descriptor is closed.
struct Report {
  uint32_t kind = 0;  // kReportRunning or kReportFailed
  uint32_t step = 0;
  int32_t err = 0;     // errno (positive) of the failed system call
  uint32_t index = 0;  // op, fd, thread or signal index within the step
  uint64_t value = 0;  // running: number of threads started
  // CLOCK_MONOTONIC at the blob's entry and after each phase: descriptors closed, unmapped,
  // memory ops, process state (mm, sigactions, files, cwd), threads cloned, all threads ready.
  uint64_t phase_ns[7] = {};
  // The memory op that took longest, and how long (ns).
  uint32_t slowest_op = 0, pad = 0;
  uint64_t slowest_op_ns = 0;
};
inline constexpr uint32_t kReportRunning = 1;
inline constexpr uint32_t kReportFailed = 2;

struct Args {
  uint64_t magic = kArgsMagic;
  uint64_t size = 0;  // bytes of the whole block (args + arrays + strings)
  int32_t report_fd = -1;
  uint32_t flags = 0;  // kArg*
  // The forked receiver thread's own rseq registration, dropped first (the kernel would keep
  // writing to it after its memory is gone).
  uint64_t self_rseq = 0;
  uint32_t self_rseq_len = 0, rseq_sig = 0;
  uint64_t keep = 0;  // Range[nkeep]: everything else is unmapped
  uint32_t nkeep = 0, nops = 0;
  uint64_t ops = 0;  // Op[nops]
  MmMap mm{};
  uint64_t exe_path = 0;
  uint64_t sigactions = 0;     // Sigaction[64], index = signo - 1
  uint64_t sigaction_set = 0;  // bit (signo-1): restore this one
  uint64_t fds = 0;            // Fd[nfds]
  uint32_t nfds = 0, nthreads = 0;
  uint64_t cwd = 0;
  char comm[16] = {};    // the task name (PR_SET_NAME), inherited by every thread created after
  uint64_t threads = 0;  // Thread[nthreads]; threads[0] is the main thread (tid == pid)
  // Synchronisation between the blob's threads (futex words).
  uint32_t go = 0;      // 0 while threads must wait; 1: jump into the park contexts; 2: die
  uint32_t ready = 0;   // threads that finished their per-thread state and wait for go
  uint32_t failed = 0;  // a thread's per-thread step failed
  uint32_t fail_err = 0, fail_index = 0, fail_step = 0;
  uint64_t phase_ns[7] = {};                 // filled by the blob, copied into its report
  uint32_t slowest_op = 0, slowest_pad = 0;  // likewise
  uint64_t slowest_op_ns = 0;
  // The blob's whole mapping (code, this block, stacks). Each thread resumes with the address of
  // this block as procmig_park_save's second return value, so the restored agent can check the
  // magic and unmap the mapping once every thread has left it.
  uint64_t region_start = 0, region_bytes = 0;
  uint64_t epoll_items = 0;  // EpollItem[nepoll_items]
  uint32_t nepoll_items = 0, epoll_pad = 0;
};

inline constexpr uint32_t kArgSetTid = 1;    // create threads with their old ids (set_tid)
inline constexpr uint32_t kArgPatchTid = 2;  // write new tids through each tid_address
inline constexpr uint32_t kArgSetExe = 4;    // pass exe_fd to PR_SET_MM_MAP

}  // namespace procmig::restore_abi

#endif  // PROCMIG_RESTORE_RESTORER_ABI_H_
