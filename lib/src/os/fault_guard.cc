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
namespace {

constexpr int kSignals[] = {SIGSEGV, SIGBUS};

using SigactionFn = int (*)(int, const struct sigaction*, struct sigaction*);
std::atomic<SigactionFn> g_real{nullptr};
// -1: a window is open; n >= 0: n program threads are inside ProgramSigaction.
std::atomic<int> g_users{0};
std::atomic<pid_t> g_owner{0};     // the open window's thread
std::atomic<bool> g_armed{false};  // its LeadingZeroPages is reading
std::atomic<uint64_t> g_recovered{0};
std::atomic<unsigned> g_installed{0};  // bit Slot(sig): the window's handler is in for sig
sigjmp_buf g_jump;
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

void OnFault(int sig, siginfo_t* info, void* uc) {
  const int saved_errno = errno;
  if (g_armed.load(std::memory_order_acquire) && g_owner.load(std::memory_order_acquire) == Tid()) {
    g_armed.store(false, std::memory_order_release);
    g_recovered.fetch_add(1, std::memory_order_relaxed);
    siglongjmp(g_jump, 1);
  }
  Forward(sig, info, uc);
  errno = saved_errno;
}

}  // namespace

int ProgramSigaction(int sig, const struct sigaction* act, struct sigaction* old) {
  if ((sig != SIGSEGV && sig != SIGBUS) || g_owner.load(std::memory_order_acquire) == Tid()) {
    return RealSigaction(sig, act, old);
  }
  int users = g_users.load(std::memory_order_acquire);
  for (;;) {
    if (users >= 0 && g_users.compare_exchange_weak(users, users + 1, std::memory_order_acq_rel)) {
      break;
    }
    if (users < 0) {
      sched_yield();  // a window is open: it closes within one run of the sender
      users = g_users.load(std::memory_order_acquire);
    }
  }
  const int r = RealSigaction(sig, act, old);
  const int saved_errno = errno;
  g_users.fetch_sub(1, std::memory_order_acq_rel);
  errno = saved_errno;
  return r;
}

ScanWindow::ScanWindow() {
  int expected = 0;
  if (!g_users.compare_exchange_strong(expected, -1, std::memory_order_acq_rel)) return;
  g_owner.store(Tid(), std::memory_order_release);
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
  open_ = installed == 2;
  if (open_) return;
  Close();
}

ScanWindow::~ScanWindow() {
  if (open_) Close();
}

void ScanWindow::Close() {
  for (int sig : kSignals) {
    if ((g_installed.load(std::memory_order_acquire) & (1u << Slot(sig))) != 0) {
      RealSigaction(sig, &g_saved[Slot(sig)], nullptr);
    }
  }
  g_installed.store(0, std::memory_order_release);
  g_armed.store(false, std::memory_order_release);
  g_owner.store(0, std::memory_order_release);
  g_users.store(0, std::memory_order_release);
}

void ScanWindow::InstallForkHandler() {
  static std::atomic<bool> done{false};
  if (done.exchange(true)) return;
  // The child has only the forking thread: a window the parent's scanning thread had open would
  // stay open there for good (the program's handlers not put back, its sigaction for SIGSEGV
  // waiting forever). Only glibc's fork runs atfork handlers; a raw clone child that does not
  // exec keeps the window (the agent's own frozen copy never has one open: see the sender).
  pthread_atfork(nullptr, nullptr, [] {
    if (g_users.load(std::memory_order_acquire) < 0) {
      Close();
    } else {
      g_users.store(0, std::memory_order_release);
    }
  });
}

uint64_t ScanWindow::recovered_faults() { return g_recovered.load(std::memory_order_relaxed); }

std::optional<uint64_t> ScanWindow::LeadingZeroPages(uintptr_t addr, uint64_t pages,
                                                     size_t page_size, ZeroTest is_zero) {
  if (!open_) return std::nullopt;
  // Volatile: what the code after sigsetjmp reads must not live in registers it restores.
  volatile uintptr_t a = addr;
  volatile uint64_t count = pages;
  volatile size_t ps = page_size;
  volatile ZeroTest test = is_zero;
  if (sigsetjmp(g_jump, 1) != 0) return std::nullopt;  // faulted (OnFault disarmed)
  g_armed.store(true, std::memory_order_release);
  std::atomic_signal_fence(std::memory_order_seq_cst);  // no load moves above the arming
  uint64_t n = 0;
  while (n < count && test(reinterpret_cast<const uint8_t*>(a + n * ps), ps)) ++n;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  g_armed.store(false, std::memory_order_release);
  return n;
}

uint64_t ScanWindow::CopyPages(uintptr_t addr, uint64_t pages, size_t page_size, uint8_t* out,
                               bool* faulted, uint32_t* crcs) {
  *faulted = !open_;
  if (!open_) return 0;
  // Volatile, as in LeadingZeroPages; `done` also tells, after a fault, how far the copy got.
  volatile uintptr_t a = addr;
  volatile uint64_t count = pages;
  volatile size_t ps = page_size;
  uint8_t* volatile to = out;
  uint32_t* volatile crc_out = crcs;
  volatile uint64_t done = 0;
  if (sigsetjmp(g_jump, 1) != 0) {
    *faulted = true;
    return done;
  }
  g_armed.store(true, std::memory_order_release);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  while (done < count) {
    const uint64_t k = done;
    const auto* from = reinterpret_cast<const void*>(a + k * ps);
    if (crc_out != nullptr) {
      crc_out[k] = crc32c::CopyValue(to + k * ps, from, ps);
    } else {
      std::memcpy(to + k * ps, from, ps);
    }
    std::atomic_signal_fence(std::memory_order_seq_cst);  // the page is copied before it counts
    done = k + 1;
  }
  std::atomic_signal_fence(std::memory_order_seq_cst);
  g_armed.store(false, std::memory_order_release);
  return done;
}

}  // namespace procmig
