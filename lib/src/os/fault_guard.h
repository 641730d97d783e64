// Reading the program's memory in place from the agent's sender thread, although any other
// thread may unmap or protect it at any moment (glibc's free() munmaps a large chunk behind every
// interposer): a fault there must end the read, not the program.
//
// A ScanWindow installs its own SIGSEGV and SIGBUS handler while it is open and puts the
// program's actions back when it closes. A fault of the window's thread inside
// LeadingZeroPages() returns to it (siglongjmp) and the scan reports the fault; the caller then
// copies the memory with process_vm_readv, which says how much of it is still there. A fault of
// any other thread is the program's, handled as its own action says: its handler is called on
// the same signal frame, under the mask and flags it asked for (SA_RESETHAND included); for the
// default action or SIG_IGN the action is put back and the fault happens again (a signal sent
// with kill is sent again), so the kernel does what it would have done. Up to kMaxOpen windows
// are open at once, each on a thread of its own (the sender's and its bulk-stage helper's): the
// first to open installs the handler, the last to close puts the program's actions back. A
// window opens only when its thread has none open, fewer than kMaxOpen are, and the program is
// not changing (or waiting to change) one of the two actions at that moment; it never waits for
// the program. The
// program's sigaction()/signal() calls for SIGSEGV and SIGBUS go through ProgramSigaction (the
// agent's interposers), which waits until no window is open, so a window never puts back an
// action the program has since replaced.
//
// In place, a stretch of zero pages is checked at memory speed (34 ms per GiB on the reference
// VM, against 123-152 ms to copy it with process_vm_readv and check the copy), and pages with
// data are copied at memcpy's speed (28 ms per GiB there, against 87 ms with process_vm_readv,
// which pins every page it reads).
//
// Threads: a window is used by the thread that opened it.
// In a sanitizer build is_zero's reads are instrumented like any: scan only memory the caller
// could read (the tests scan mappings of their own, never an instrumented heap).
#ifndef PROCMIG_OS_FAULT_GUARD_H_
#define PROCMIG_OS_FAULT_GUARD_H_

#include <signal.h>

#include <cstddef>
#include <cstdint>
#include <optional>

namespace procmig {

// For the agent's interposers: the program's sigaction for SIGSEGV or SIGBUS, made once no
// window is open. Other signals go straight through.
int ProgramSigaction(int sig, const struct sigaction* act, struct sigaction* old);

class ScanWindow {
 public:
  static constexpr int kMaxOpen = 2;

  ScanWindow();
  ~ScanWindow();
  ScanWindow(const ScanWindow&) = delete;
  ScanWindow& operator=(const ScanWindow&) = delete;

  // False when the window could not open (this thread has one open, kMaxOpen are, the program
  // is changing an action, or installing the handler failed): LeadingZeroPages then always says
  // nullopt.
  bool open() const { return open_; }

  // The number of leading pages of [addr, addr + pages * page_size) that `is_zero` (the codec's
  // IsZeroPage) finds all zero, read in place; nullopt when the read faulted (the memory went
  // away or lost its read permission under the scan) or the window is not open.
  using ZeroTest = bool (*)(const uint8_t* p, size_t len);
  std::optional<uint64_t> LeadingZeroPages(uintptr_t addr, uint64_t pages, size_t page_size,
                                           ZeroTest is_zero);

  // Sets bit i of `zero` (bits [0, pages) cleared first) when page i of [addr, addr + pages *
  // page_size) is all zero, read in place, until the end or a fault. Returns the pages looked
  // at whole; *faulted says whether a fault stopped the scan (a closed window scans none and
  // says faulted). One call for any mix of pages, where LeadingZeroPages needs one per page
  // with data (and each call saves the signal mask: a system call).
  uint64_t ZeroBitmap(uintptr_t addr, uint64_t pages, size_t page_size, ZeroTest is_zero,
                      uint64_t* zero, bool* faulted);

  // Copies whole pages of [addr, addr + pages * page_size) to `out` in place, in order, until
  // the end or a fault. Returns the pages copied whole; *faulted says whether a fault stopped
  // the copy (the page it hit and those after it are not copied; a closed window copies none
  // and says faulted). Like process_vm_readv, a page is copied as it is at that moment: the
  // caller's tracker must have re-protected it before, so a write during the copy re-dirties it.
  // With `crcs`, crcs[k] is set to the crc32c of the copy of page k (crc32c::CopyValue: copied
  // and checksummed in one read of the source) for every page copied whole.
  uint64_t CopyPages(uintptr_t addr, uint64_t pages, size_t page_size, uint8_t* out, bool* faulted,
                     uint32_t* crcs = nullptr);

  // Faults recovered since the process started (tests, the agent's log).
  static uint64_t recovered_faults();
  // Program threads waiting in ProgramSigaction for the open windows to close (tests).
  static int program_waiting();

  // A thread's slot while its window is open (defined in fault_guard.cc).
  struct Reader;

  // Registers (once) a fork handler that closes, in the child of a fork(), a window another
  // thread of the parent had open at that moment. Call where malloc may still be used (the
  // agent's constructor): pthread_atfork allocates.
  static void InstallForkHandler();

 private:
  // Frees the window's reader slot; the last window puts back the program's actions.
  static void Close(Reader* reader);

  bool open_ = false;
  Reader* reader_ = nullptr;  // its thread's slot
};

}  // namespace procmig

#endif  // PROCMIG_OS_FAULT_GUARD_H_
