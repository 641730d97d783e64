#include "os/fault_guard.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include "base/crc32c.h"

namespace procmig {

// The open windows' threads: a fault of one of them while it is reading (armed) goes back there.
struct ScanWindow::Reader {
  std::atomic<pid_t> tid{0};  // 0: free
  std::atomic<bool> armed{false};
  sigjmp_buf jump;
};

namespace {

constexpr int kSignals[] = {SIGSEGV, SIGBUS};

using SigactionFn = int (*)(int, const struct sigaction*, struct sigaction*);
std::atomic<SigactionFn> g_real{nullptr};
// -n: n windows are open; n >= 0: n program threads are inside ProgramSigaction.
std::atomic<int> g_users{0};
// Opening and closing windows (agent threads only, never a signal handler): a spin lock, so
// that a fork's child can simply clear it.
std::atomic_flag g_open_lock = ATOMIC_FLAG_INIT;
// Program threads waiting in ProgramSigaction for the open windows to close.
std::atomic<int> g_program_waiting{0};
std::atomic<uint64_t> g_recovered{0};
std::atomic<unsigned> g_installed{0};  // bit Slot(sig): the window's handler is in for sig
using Reader = ScanWindow::Reader;
Reader g_readers[ScanWindow::kMaxOpen];
// The program's actions while a window is open (written before the handler goes in).
struct sigaction g_saved[2];

int Slot(int sig) { return sig == SIGSEGV ? 0 : 1; }

pid_t Tid() { return static_cast<pid_t>(syscall(SYS_gettid)); }

// libc's sigaction, never an interposer's (the agent's sigaction comes back here): resolved
// when a window first opens, before its handler can need it.
int RealSigaction(int sig, const struct sigaction* act, struct sigaction* old) {
  SigactionFn fn = g_real.load(std::memory_order_acquire);
  if (fn == nullptr) {
    fn = reinterpret_cast<SigactionFn>(dlsym(RTLD_NEXT, "sigaction"));
    if (fn == nullptr) {
      errno = ENOSYS;
      return -1;
    }
    g_real.store(fn, std::memory_order_release);
  }
  return fn(sig, act, old);
}

// A fault of a program thread while a window is open: what the program's own action would do.
void Forward(int sig, siginfo_t* info, void* uc) {
  struct sigaction prog = g_saved[Slot(sig)];
  if (prog.sa_handler == SIG_DFL || prog.sa_handler == SIG_IGN) {
    // Back to the program's action, then the signal again: a fault repeats by itself when the
    // handler returns (an ignored synchronous fault is fatal too: the kernel forces the default);
    // a signal sent with kill is sent again, with its siginfo.
    RealSigaction(sig, &prog, nullptr);
    if (info != nullptr && info->si_code <= 0 && prog.sa_handler == SIG_DFL) {
      if (syscall(SYS_rt_tgsigqueueinfo, getpid(), Tid(), sig, info) != 0) {
        syscall(SYS_tgkill, getpid(), Tid(), sig);
      }
    }
    return;
  }
  if ((prog.sa_flags & SA_RESETHAND) != 0) {
    struct sigaction dfl = {};
    dfl.sa_handler = SIG_DFL;
    g_saved[Slot(sig)] = dfl;
    RealSigaction(sig, &dfl, nullptr);
  }
  if ((prog.sa_flags & SA_SIGINFO) != 0) {
    prog.sa_sigaction(sig, info, uc);
  } else {
    prog.sa_handler(sig);
  }
}

// The reader slot of the calling thread, or null.
Reader* ReaderOf(pid_t tid) {
  for (Reader& r : g_readers) {
    if (r.tid.load(std::memory_order_acquire) == tid) return &r;
  }
  return nullptr;
}

void OnFault(int sig, siginfo_t* info, void* uc) {
  const int saved_errno = errno;
  Reader* r = ReaderOf(Tid());
  if (r != nullptr && r->armed.load(std::memory_order_acquire)) {
    r->armed.store(false, std::memory_order_release);
    g_recovered.fetch_add(1, std::memory_order_relaxed);
    siglongjmp(r->jump, 1);
  }
  Forward(sig, info, uc);
  errno = saved_errno;
}

class OpenLock {
 public:
  OpenLock() {
    while (g_open_lock.test_and_set(std::memory_order_acquire)) sched_yield();
  }
  ~OpenLock() { g_open_lock.clear(std::memory_order_release); }
};

// Puts the program's actions back where a window's handler went in.
void PutBackActions() {
  for (int sig : kSignals) {
    if ((g_installed.load(std::memory_order_acquire) & (1u << Slot(sig))) != 0) {
      RealSigaction(sig, &g_saved[Slot(sig)], nullptr);
    }
  }
  g_installed.store(0, std::memory_order_release);
}

}  // namespace

int ProgramSigaction(int sig, const struct sigaction* act, struct sigaction* old) {
  if ((sig != SIGSEGV && sig != SIGBUS) || ReaderOf(Tid()) != nullptr) {
    return RealSigaction(sig, act, old);
  }
  int users = g_users.load(std::memory_order_acquire);
  bool waiting = false;
  for (;;) {
    if (users >= 0 && g_users.compare_exchange_weak(users, users + 1, std::memory_order_acq_rel)) {
      break;
    }
    if (users < 0) {
      // A window is open: it closes within one run of the sender. No new one opens meanwhile,
      // so two threads taking turns cannot keep this call waiting.
      if (!waiting) g_program_waiting.fetch_add(1, std::memory_order_acq_rel);
      waiting = true;
      sched_yield();
      users = g_users.load(std::memory_order_acquire);
    }
  }
  if (waiting) g_program_waiting.fetch_sub(1, std::memory_order_acq_rel);
  const int r = RealSigaction(sig, act, old);
  const int saved_errno = errno;
  g_users.fetch_sub(1, std::memory_order_acq_rel);
  errno = saved_errno;
  return r;
}

ScanWindow::ScanWindow() {
  const pid_t me = Tid();
  OpenLock lock;
  if (ReaderOf(me) != nullptr) return;  // one window per thread
  if (g_program_waiting.load(std::memory_order_acquire) > 0) return;
  int users = g_users.load(std::memory_order_acquire);
  if (users > 0 || users <= -kMaxOpen) return;
  if (users == 0) {
    // The first window: no program thread may be in sigaction while the handler goes in.
    if (!g_users.compare_exchange_strong(users, -1, std::memory_order_acq_rel)) return;
    int installed = 0;
    for (int sig : kSignals) {
      struct sigaction& prog = g_saved[Slot(sig)];
      if (RealSigaction(sig, nullptr, &prog) != 0) break;
      struct sigaction mine = {};
      mine.sa_sigaction = &OnFault;
      mine.sa_mask = prog.sa_mask;
      mine.sa_flags = SA_SIGINFO | (prog.sa_flags & (SA_ONSTACK | SA_NODEFER | SA_RESTART));
      if (RealSigaction(sig, &mine, nullptr) != 0) break;
      g_installed.fetch_or(1u << Slot(sig), std::memory_order_acq_rel);
      ++installed;
    }
    if (installed != 2) {
      PutBackActions();
      g_users.store(0, std::memory_order_release);
      return;
    }
  } else {
    // Another thread's window is open (users < 0), so the handler is in and no program thread
    // can enter sigaction (it waits for users >= 0).
    g_users.fetch_sub(1, std::memory_order_acq_rel);
  }
  for (Reader& r : g_readers) {
    pid_t free_slot = 0;
    if (r.tid.compare_exchange_strong(free_slot, me, std::memory_order_acq_rel)) {
      reader_ = &r;
      break;
    }
  }
  open_ = true;  // (a free slot exists: fewer than kMaxOpen windows were open)
}

ScanWindow::~ScanWindow() {
  if (open_) Close(reader_);
}

void ScanWindow::Close(Reader* r) {
  OpenLock lock;
  r->armed.store(false, std::memory_order_release);
  r->tid.store(0, std::memory_order_release);
  if (g_users.load(std::memory_order_acquire) == -1) {
    PutBackActions();  // the last window
    g_users.store(0, std::memory_order_release);
  } else {
    g_users.fetch_add(1, std::memory_order_acq_rel);
  }
}

void ScanWindow::InstallForkHandler() {
  static std::atomic<bool> done{false};
  if (done.exchange(true)) return;
  // The child has only the forking thread: a window the parent's scanning threads had open would
  // stay open there for good (the program's handlers not put back, its sigaction for SIGSEGV
  // waiting forever). Only glibc's fork runs atfork handlers; a raw clone child that does not
  // exec keeps the windows (the agent's own frozen copy never has one open: see the sender).
  pthread_atfork(nullptr, nullptr, [] {
    if (g_users.load(std::memory_order_acquire) < 0) PutBackActions();
    for (Reader& r : g_readers) {
      r.armed.store(false, std::memory_order_relaxed);
      r.tid.store(0, std::memory_order_relaxed);
    }
    g_users.store(0, std::memory_order_release);
    g_program_waiting.store(0, std::memory_order_release);
    g_open_lock.clear(std::memory_order_release);
  });
}

uint64_t ScanWindow::recovered_faults() { return g_recovered.load(std::memory_order_relaxed); }

int ScanWindow::program_waiting() { return g_program_waiting.load(std::memory_order_acquire); }

namespace {

// The guarded read behind LeadingZeroPages, ZeroBitmap and CopyPages: step(k) for the pages k =
// 0, 1, ... until it returns false or `pages` are done, armed in the calling thread's slot `r`,
// so that a fault in a step comes back here. Returns the pages done (a page counts once its step
// returned true); *faulted says whether a fault ended it. Only `done` changes between the
// sigsetjmp and a fault, so only it is volatile.
template <typename Step>
uint64_t Guarded(ScanWindow::Reader* r, uint64_t pages, bool* faulted, Step&& step) {
  *faulted = false;
  volatile uint64_t done = 0;
  if (sigsetjmp(r->jump, 1) != 0) {  // a fault (OnFault disarmed the slot)
    *faulted = true;
    return done;
  }
  r->armed.store(true, std::memory_order_release);
  std::atomic_signal_fence(std::memory_order_seq_cst);  // no load moves above the arming
  while (done < pages) {
    const uint64_t k = done;
    if (!step(k)) break;
    std::atomic_signal_fence(std::memory_order_seq_cst);  // the page is done before it counts
    done = k + 1;
  }
  std::atomic_signal_fence(std::memory_order_seq_cst);
  r->armed.store(false, std::memory_order_release);
  return done;
}

}  // namespace

std::optional<uint64_t> ScanWindow::LeadingZeroPages(uintptr_t addr, uint64_t pages,
                                                     size_t page_size, ZeroTest is_zero) {
  if (!open_) return std::nullopt;
  bool faulted = false;
  const uint64_t n = Guarded(reader_, pages, &faulted, [&](uint64_t k) {
    return is_zero(reinterpret_cast<const uint8_t*>(addr + k * page_size), page_size);
  });
  if (faulted) return std::nullopt;
  return n;
}

uint64_t ScanWindow::ZeroBitmap(uintptr_t addr, uint64_t pages, size_t page_size, ZeroTest is_zero,
                                uint64_t* zero, bool* faulted) {
  std::memset(zero, 0, (pages + 63) / 64 * sizeof(uint64_t));
  *faulted = !open_;
  if (!open_) return 0;
  return Guarded(reader_, pages, faulted, [&](uint64_t k) {
    if (is_zero(reinterpret_cast<const uint8_t*>(addr + k * page_size), page_size)) {
      zero[k / 64] |= uint64_t{1} << (k % 64);
    }
    return true;
  });
}

uint64_t ScanWindow::CopyPages(uintptr_t addr, uint64_t pages, size_t page_size, uint8_t* out,
                               bool* faulted, uint32_t* crcs) {
  *faulted = !open_;
  if (!open_) return 0;
  return Guarded(reader_, pages, faulted, [&](uint64_t k) {
    const auto* from = reinterpret_cast<const void*>(addr + k * page_size);
    if (crcs != nullptr) {
      crcs[k] = crc32c::CopyValue(out + k * page_size, from, page_size);
    } else {
      std::memcpy(out + k * page_size, from, page_size);
    }
    return true;
  });
}

}  // namespace procmig
