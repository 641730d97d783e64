// The restorer blob: freestanding code (no libc, no globals, no data outside its own section)
// that a forked copy of the receiver jumps into to become the migrated process.
//
// The code lives in the section "procmig_blob" of whatever binary links this module; the planner
// copies that section, the Args block and the stacks into one fresh mapping placed where neither
// the old nor the new layout has anything, and calls BlobEntry there. The blob then, with raw
// system calls only: drops the receiver thread's rseq registration and descriptors, unmaps every
// range but the ones it keeps (itself, the received blocks, the kernel's [vdso]/[vvar*]), runs
// the memory ops (blocks moved into place, files mapped, the vDSO moved back to its old address),
// sets the mm fields (PR_SET_MM_MAP), sigactions, regular-file descriptors and cwd, creates every
// other thread with clone3, and when every thread has set its own state (tid address, robust
// list, rseq, altstack, TLS) reports "running" on report_fd and lets them all jump into their
// park contexts. Any failure before that is reported on report_fd (step, index, errno) and the
// process exits: no thread of the program has run.
#ifndef PROCMIG_RESTORE_RESTORER_BLOB_H_
#define PROCMIG_RESTORE_RESTORER_BLOB_H_

#include <cstddef>
#include <cstdint>
#include <span>

namespace procmig::restore_blob {

// The blob's code as linked into this binary.
std::span<const uint8_t> Code();
// Offset of the entry point within Code(). Entry: (Args* args /*rdi*/, stack_top /*rsi*/);
// never returns.
size_t EntryOffset();
// Offset of the blob's clone3 within Code(): (clone_args, size) -> the child's id, or -errno.
// The child starts on clone_args' stack, pops a function and its two arguments from it and calls
// the function: so a child can start inside a copy of the blob without any other code of ours.
size_t Clone3Offset();

}  // namespace procmig::restore_blob

#endif  // PROCMIG_RESTORE_RESTORER_BLOB_H_
