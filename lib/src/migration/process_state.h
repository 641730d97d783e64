// ProcessState: the process-state record a sender puts at the end of a stream (wire record type
// process_state), and its encoder and decoder.
//
// It holds what the restorer needs besides memory: every VMA (file mappings by path, offset and
// identity), each parked thread's context (the registers its park handler saved, TLS base, tid
// address, robust list, rseq area, signal mask, sigaltstack, and the address of the signal frame
// whose rt_sigreturn restores every other register), all sigactions, the mm fields, fds
// classified, cwd, CPU features, the vDSO's identity, and a digest of each block's final content.
//
// Encoding, version 4 (little-endian, field by field, never a memcpy of a struct; version 1 had
// no file identity in vma, version 2 no pipe fields in fd, version 3 no dup_of in fd; versions 2
// and 3 are still decoded, with dup_of -1):
//   record   := magic:u32 ("PMPS" = 0x53504d50) version:u16 reserved:u16 body
//   body     := pid:u32 page_size:u32 cwd:str exe:str mm cpu vdso
//               u32 n vma[n] u32 n thread[n] u32 n sigaction[n] u32 n fd[n] u32 n digest[n]
//   str      := len:u32 bytes[len]      (len <= kMaxPath)
//   mm       := 12 x u64 (MmFields order)        cpu := 6 x u32, 2 x u64 (CpuFeatures order)
//   vdso     := vdso_start vdso_end vvar_start vvar_end:u64 crc:u32
//   vma      := start end offset inode size mtime_ns:u64 dev_major dev_minor:u32 prot:u8
//               shared:u8 kind:u8 deleted:u8 block_id:u32 path:str id_kind:u8 id_len:u8
//               id[id_len]   (FileIdKind: 0 none, 1 unknown: id_len 0; 2 build-id: 1..64;
//                             3 crc32c of the mapped range of the file: 4, little-endian)
//   thread   := tid:u32 reserved:u32 then 21 x u64 (ThreadContext order after tid) rseq_size:u32
//               altstack_flags:u32
//   sigaction:= signo:u32 flags:u32 handler restorer mask:u64
//   fd       := fd:u32 kind:u8 reserved[3] flags:u32 mode:u32 offset dev inode:u64 path:str
//               pipe_size:u32 unread:len:u32 bytes[len]   (len <= kMaxPipeData; pipe_size 0
//               but for a pipe the process holds both ends of, unread empty but for such a
//               pipe or socketpair, see FdRecord)
//               eventfd_count:u64 eventfd_semaphore:u32 n:u32 epoll_item[n]   (0 but for an
//               eventfd, resp. n <= kMaxEpollItems for an epoll instance) socket_peer:u64
//               (0 but for a socket) dup_of:u32   (0xffffffff for -1; since version 4)
//   epoll_item := tfd:u32 events:u32 data:u64 inode:u64
//   digest   := block_id:u32 reserved:u32 length:u64 crc32c:u32   (see BlockDigest)
// Every count is bounded (kMax*) before anything is allocated; unknown enum values, non-zero
// reserved fields and trailing bytes are DataLoss.
//
// Threads: plain values and pure functions. Encode() into a string whose capacity the caller
// reserved with EncodedSize() does not allocate (the sender encodes while threads are parked).
#ifndef PROCMIG_MIGRATION_PROCESS_STATE_H_
#define PROCMIG_MIGRATION_PROCESS_STATE_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/coding.h"
#include "os/file_identity.h"

namespace procmig {

inline constexpr uint32_t kProcessStateMagic = 0x53504d50;  // "PMPS"
inline constexpr uint16_t kProcessStateVersion = 4;
inline constexpr size_t kMaxPath = 4096;
inline constexpr size_t kMaxVmas = 1 << 20;
inline constexpr size_t kMaxThreads = 1 << 16;
inline constexpr size_t kMaxSigactions = 64;
inline constexpr size_t kMaxFds = 1 << 20;
inline constexpr size_t kMaxDigests = 1 << 20;
inline constexpr size_t kMaxPipeData = 1 << 20;  // Linux's default /proc/sys/fs/pipe-max-size
inline constexpr size_t kMaxEpollItems = 1 << 16;

// Saved by the park handler (x86-64). rip/rsp/callee-saved registers are the handler's resume
// point; `ucontext` is the kernel's signal frame (on the thread's stack, in a RAM block), so
// resuming at the park point and returning from the handler restores every register.
struct ThreadContext {
  uint32_t tid = 0;
  uint64_t rbx = 0, rbp = 0, r12 = 0, r13 = 0, r14 = 0, r15 = 0, rsp = 0, rip = 0;
  uint64_t fs_base = 0, gs_base = 0;
  uint64_t tid_address = 0;  // PR_GET_TID_ADDRESS (clear_child_tid)
  uint64_t robust_list = 0, robust_list_len = 0;
  uint64_t rseq_area = 0;  // 0 = not registered
  uint64_t sigmask = 0;    // the mask the thread had when the park signal arrived
  uint64_t altstack_sp = 0, altstack_size = 0;
  uint64_t ucontext = 0, siginfo = 0;
  uint64_t park_time_ns = 0;
  uint64_t reserved = 0;
  uint32_t rseq_size = 0;
  uint32_t altstack_flags = 0;
  bool operator==(const ThreadContext&) const = default;
};

enum class VmaKind : uint8_t { kAnonymous = 0, kHeap = 1, kStack = 2, kFile = 3, kSpecial = 4 };
inline constexpr uint8_t kMaxVmaKind = 4;

struct VmaRecord {
  uint64_t start = 0, end = 0, offset = 0, inode = 0;
  uint64_t file_size = 0, mtime_ns = 0;  // file identity (0 when not a file)
  uint32_t dev_major = 0, dev_minor = 0;
  uint8_t prot = 0;  // PROT_READ | PROT_WRITE | PROT_EXEC
  bool shared = false;
  VmaKind kind = VmaKind::kAnonymous;
  bool deleted = false;
  uint32_t block_id = 0;  // the RAM block sent for it, 0 = none (read-only file, special)
  std::string path;       // file path or [name]
  // What the file is (build-id, or crc32c of [offset, offset + end - start) of the file); see
  // os/file_identity.h. kNone when not a file or not recorded.
  FileIdentity id;
  bool operator==(const VmaRecord&) const = default;
};

struct SigactionRecord {
  uint32_t signo = 0;
  uint32_t flags = 0;
  uint64_t handler = 0, restorer = 0, mask = 0;
  bool operator==(const SigactionRecord&) const = default;
};

enum class FdKind : uint8_t {
  kRegular = 0,
  kDirectory = 1,
  kTty = 2,
  kPipe = 3,  // pipe or FIFO
  kSocket = 4,
  kOther = 5,    // char/block devices, anon inodes (timerfd, io_uring, userfaultfd, ...)
  kEventfd = 6,  // anon_inode:[eventfd]
  kEpoll = 7,    // anon_inode:[eventpoll]
};
inline constexpr uint8_t kMaxFdKind = 7;
const char* FdKindName(FdKind kind);

struct FdRecord {
  uint32_t fd = 0;
  FdKind kind = FdKind::kOther;
  uint32_t flags = 0;  // open flags from fdinfo
  uint32_t mode = 0;   // st_mode
  uint64_t offset = 0, dev = 0, inode = 0;
  std::string path;  // readlink of /proc/self/fd/N ("pipe:[123]", "/dev/pts/0", ...)
  // A pipe whose read and write ends are both the process's own (a self-pipe; IsOwnPipe): its
  // capacity (F_GETPIPE_SZ) on every end. `unread`: the bytes queued for reading when the
  // process stopped, on the first read end of each such pipe (HoldsPipeData; the other ends
  // empty) and on both ends of a socketpair the process holds whole (IsOwnSocketPair). 0 and
  // empty for anything else.
  uint32_t pipe_size = 0;
  std::string unread;
  // A connected AF_UNIX SOCK_STREAM socket: its peer's inode (sock_diag); 0 for anything else.
  uint64_t socket_peer = 0;
  // An eventfd: its counter and EFD_SEMAPHORE (fdinfo), as when the process stopped.
  uint64_t eventfd_count = 0;
  bool eventfd_semaphore = false;
  // An epoll instance: what it watches (fdinfo "tfd: events: data: ... ino:"), as when the
  // process stopped. The restorer adds each again for descriptor `tfd` once every descriptor is
  // in place.
  struct EpollItem {
    uint32_t tfd = 0;
    uint32_t events = 0;
    uint64_t data = 0;
    uint64_t inode = 0;  // of the watched file, for a check against the record's fd `tfd`
    bool operator==(const EpollItem&) const = default;
  };
  std::vector<EpollItem> epoll_items;
  // The lowest fd that shares this one's open file description (dup, dup2, fork: one offset,
  // one set of status flags, one eventfd counter), compared with kcmp(2); -1 when none does
  // (or the kernel could not tell). Always below `fd`, and a record of the same kind and inode.
  int32_t dup_of = -1;
  bool operator==(const FdRecord&) const = default;
};

// /proc/self/stat fields 26..28 and 45..51, plus the current brk.
struct MmFields {
  uint64_t start_code = 0, end_code = 0, start_data = 0, end_data = 0, start_brk = 0, brk = 0,
           start_stack = 0, arg_start = 0, arg_end = 0, env_start = 0, env_end = 0, auxv = 0;
  bool operator==(const MmFields&) const = default;
};

struct CpuFeatures {
  uint32_t leaf1_ecx = 0, leaf1_edx = 0, leaf7_ebx = 0, leaf7_ecx = 0, leaf7_edx = 0, xcr0_low = 0;
  uint64_t hwcap = 0, hwcap2 = 0;
  bool operator==(const CpuFeatures&) const = default;
};

struct VdsoIdentity {
  uint64_t vdso_start = 0, vdso_end = 0, vvar_start = 0, vvar_end = 0;
  uint32_t crc = 0;  // crc32c of the vDSO's bytes
  bool operator==(const VdsoIdentity&) const = default;
};

// `cpu vdso` as both the process state and the restore_check record encode them (the grammar
// above): kCpuVdsoSize bytes. The reader's ok() says whether they were all there.
inline constexpr size_t kCpuVdsoSize = 6 * 4 + 2 * 8 + 4 * 8 + 4;
void EncodeCpuVdso(const CpuFeatures& cpu, const VdsoIdentity& vdso, ByteWriter& w);
void DecodeCpuVdso(ByteReader& rd, CpuFeatures* cpu, VdsoIdentity* vdso);

// The digest of a block's final content as the receiver must hold it: crc32c of all its bytes in
// address order. The sender builds it from the crc of each page as last sent (combining page
// crcs), never by re-reading memory, so pages the agent itself writes after the final sync (its
// heap) still match what was sent.
struct BlockDigest {
  uint32_t block_id = 0;
  uint64_t length = 0;
  uint32_t crc32c = 0;
  bool operator==(const BlockDigest&) const = default;
};

struct ProcessStateRecord {
  uint32_t pid = 0;
  uint32_t page_size = 4096;
  std::string cwd, exe;
  MmFields mm;
  CpuFeatures cpu;
  VdsoIdentity vdso;
  std::vector<VmaRecord> vmas;
  std::vector<ThreadContext> threads;
  std::vector<SigactionRecord> sigactions;
  std::vector<FdRecord> fds;
  std::vector<BlockDigest> digests;
  bool operator==(const ProcessStateRecord&) const = default;
};

// Anonymous pipes ("pipe:[N]") whose read and write ends the record both holds are the
// process's own (a self-pipe: xz -T, event loops): a restorer rebuilds them, unread bytes and all.
// A pipe with only one end here leads to another process. (O_RDWR counts as both ends.)
bool IsOwnPipe(const ProcessStateRecord& r, const FdRecord& f);
// The record that carries an own pipe's unread bytes: its first read end (in record order).
bool HoldsPipeData(const ProcessStateRecord& r, const FdRecord& f);
// A connected UNIX stream socket whose peer the record also holds (a socketpair kept whole:
// python's asyncio self-pipe, libevent's signal pair): rebuilt with both ends' queued bytes.
bool IsOwnSocketPair(const ProcessStateRecord& r, const FdRecord& f);

// The kind's id length rule (see the encoding above).
bool ValidFileIdentity(const FileIdentity& id);

// The exact encoded size of `r`.
size_t EncodedSize(const ProcessStateRecord& r);
// Appends the encoding to *out. InvalidArgument when a count or string exceeds its bound.
absl::Status EncodeProcessState(const ProcessStateRecord& r, std::string* out);
// DataLoss naming the field for anything but a valid version-2 or version-3 record.
absl::StatusOr<ProcessStateRecord> DecodeProcessState(std::span<const uint8_t> in);

// A short human-readable summary (for `procmig inspect`): counts, pid, cwd, threads, fds.
std::string SummarizeProcessState(const ProcessStateRecord& r);

}  // namespace procmig

#endif  // PROCMIG_MIGRATION_PROCESS_STATE_H_
