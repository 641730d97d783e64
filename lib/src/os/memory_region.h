// MemoryRegion: one line of /proc/PID/maps as a value (what MapsParser produces).
//
// A plain copyable struct with no ownership and no locking; the ram module turns the writable
// private ones (IsRamBlockCandidate) into RAM blocks, the restorer uses the rest to rebuild the
// layout. `path` is kept exactly as the kernel printed it (minus the " (deleted)" suffix): the
// kernel escapes only '\n' (as "\012") in paths, so a name that literally contains "\012" cannot
// be told apart; callers that need the real file open /proc/PID/map_files/<start>-<end>.
#ifndef PROCMIG_OS_MEMORY_REGION_H_
#define PROCMIG_OS_MEMORY_REGION_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace procmig {

enum class RegionKind {
  kAnonymous,  // no path: private or shared anonymous memory, thread stacks, malloc arenas
  kHeap,       // [heap] (brk area)
  kStack,      // [stack] (the main thread's stack)
  kFile,       // a path (possibly deleted): files, memfd, SysV shm, anon_inode mappings
  kSpecial,    // any other [name]: [vdso], [vvar], [vvar_vclock], [vsyscall], [uprobes],
               // [anon:name] (PR_SET_VMA_ANON_NAME), [stack:tid] (kernels before 4.5), ...
};

std::string_view RegionKindName(RegionKind kind);

struct MemoryRegion {
  uint64_t start = 0;
  uint64_t end = 0;  // exclusive
  bool readable = false;
  bool writable = false;
  bool executable = false;
  bool shared = false;  // 's' in the perms column; false means private ('p')
  uint64_t offset = 0;
  uint32_t dev_major = 0;
  uint32_t dev_minor = 0;
  uint64_t inode = 0;
  std::string path;      // as printed, without " (deleted)"; empty for anonymous memory
  bool deleted = false;  // the kernel appended " (deleted)": the file was unlinked
  RegionKind kind = RegionKind::kAnonymous;
  // A read-only private file mapping some of whose pages are private copies (written before it
  // was made read-only: the relocated GOT of a RELRO segment), or a read-only private anonymous
  // mapping with present pages (a restored process's RELRO segments are anonymous). Not in maps:
  // set by whoever read the pagemap (LayoutSource).
  bool private_copies = false;

  uint64_t size() const { return end - start; }

  // True for memory whose contents only this process holds and may change: writable private
  // mappings of anonymous memory, heap, stacks, files (the written pages of a private file
  // mapping live nowhere else) and the user-named [anon:*] / [stack:*] areas. Kernel-provided
  // special mappings ([vdso], [vvar], [vsyscall], [uprobes], unknown [names]) are never
  // candidates, nor is anything shared (its contents live in a file or another process). A
  // read-only private file or anonymous mapping is one only when it holds private copies
  // (private_copies).
  bool IsRamBlockCandidate() const;

  // The maps-like line for messages and logs, e.g.
  // "7f12a000-7f12c000 rw-p 00000000 00:00 0 [heap]".
  std::string ToString() const;

  bool operator==(const MemoryRegion&) const = default;
};

}  // namespace procmig

#endif  // PROCMIG_OS_MEMORY_REGION_H_
