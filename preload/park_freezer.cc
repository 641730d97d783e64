// ParkFreezer: parks application threads in the park signal's handler.
//
// Park: every thread of /proc/self/task but the agent and the exempt ones gets a slot marked
// "requested" and the signal (tgkill). The handler finds its slot, saves its context
// (procmig_park_save, TLS base, tid address, robust list, rseq area, mask, altstack), marks it
// "parked" and waits on a futex for the unpark epoch to change. The handler runs with every
// signal blocked (sa_mask full) and SA_RESTART, so a system call it interrupted restarts after it
// returns. New threads seen on re-enumeration are signalled too; if any thread does not park
// before the deadline every thread is released and the stop fails. Throttling uses the same
// handler in "nap" mode: each thread sleeps for a share of the period.
//
// From the first tgkill until the last thread left the handler nothing here allocates or takes a
// lock: slots live in one private mapping made at Create(), and only raw system calls are used.
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstdio>

#include "preload/agent.h"

// Returns 0 when called; 1 when a restorer resumes the saved context (in the migrated process).
extern "C" __attribute__((returns_twice)) long procmig_park_save(procmig::ThreadParkContext* ctx);
extern "C" {
extern const ptrdiff_t __rseq_offset __attribute__((weak));
extern const unsigned int __rseq_size __attribute__((weak));
}

namespace procmig::preload {
namespace {

static_assert(offsetof(ThreadParkContext, rbx) == 8);
static_assert(offsetof(ThreadParkContext, rsp) == 56);
static_assert(offsetof(ThreadParkContext, rip) == 64);

constexpr int kMaxSlots = 1024;
constexpr size_t kDentsBytes = 64 << 10;
enum SlotState : int { kFree = 0, kRequested = 1, kParked = 2, kGone = 3 };
enum Mode : int { kIdle = 0, kParkMode = 1, kNapMode = 2 };

struct Slot {
  std::atomic<int> tid;
  std::atomic<int> state;
  ThreadParkContext ctx;
};

struct Shared {
  std::atomic<int> mode;
  std::atomic<uint32_t> epoch;  // futex word parked threads wait on
  std::atomic<int> inside;      // threads currently in the handler (parking or napping)
  std::atomic<uint64_t> nap_ns;
  int nslots;
  Slot slots[kMaxSlots];
  ThreadParkContext parked[kMaxSlots];
  int nparked;
  char dents[kDentsBytes];
};

// The agent's one private mapping: a guard page, the final phase helper's stack, then Shared.
constexpr size_t kHelperStackBytes = 1u << 20;
constexpr size_t kGuardBytes = 4096;
Shared* g = nullptr;
void* g_arena = nullptr;
uintptr_t g_arena_size = 0;
pid_t g_agent_tid = 0;
pid_t g_pid = 0;
uint32_t g_throttle = 0;
uint64_t g_last_tick_ns = 0;

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

long Futex(void* addr, int op, uint32_t val, const timespec* ts) {
  return syscall(SYS_futex, addr, op, val, ts, nullptr, 0);
}

void SleepNs(uint64_t ns) {
  timespec ts{static_cast<time_t>(ns / 1'000'000'000ull), static_cast<long>(ns % 1'000'000'000ull)};
  syscall(SYS_nanosleep, &ts, nullptr);
}

Slot* FindSlot(int tid) {
  for (int i = 0; i < g->nslots; ++i) {
    if (g->slots[i].tid.load(std::memory_order_relaxed) == tid) return &g->slots[i];
  }
  return nullptr;
}

void Handler(int, siginfo_t* info, void* uc_void) {
  const int saved_errno = errno;
  g->inside.fetch_add(1, std::memory_order_acq_rel);
  const int mode = g->mode.load(std::memory_order_acquire);
  const int tid = static_cast<int>(syscall(SYS_gettid));
  if (mode == kNapMode) {
    SleepNs(g->nap_ns.load(std::memory_order_relaxed));
  } else if (mode == kParkMode) {
    Slot* s = FindSlot(tid);
    if (s != nullptr && s->state.load(std::memory_order_acquire) == kRequested) {
      const uint32_t epoch = g->epoch.load(std::memory_order_acquire);
      ThreadParkContext& c = s->ctx;
      c = ThreadParkContext{};
      c.tid = static_cast<uint32_t>(tid);
      if (const long restorer = procmig_park_save(&c); restorer != 0) {
        // Resumed by the restorer in the migrated process: the freezer's memory is not ours any
        // more (the agent's own memory is never migrated). Wake the sentinel, which starts the
        // agent again (agent_restart.cc). Returning lets rt_sigreturn restore every register and
        // the signal mask the thread had when the park signal came.
        OnResumedAfterRestore(static_cast<uint64_t>(restorer));
        errno = saved_errno;
        return;
      }
      syscall(SYS_arch_prctl, 0x1003 /* ARCH_GET_FS */, &c.fs_base);
      syscall(SYS_arch_prctl, 0x1004 /* ARCH_GET_GS */, &c.gs_base);
      syscall(SYS_prctl, PR_GET_TID_ADDRESS, &c.tid_address, 0, 0, 0);
      void* head = nullptr;
      size_t len = 0;
      if (syscall(SYS_get_robust_list, 0, &head, &len) == 0) {
        c.robust_list = reinterpret_cast<uint64_t>(head);
        c.robust_list_len = len;
      }
      if (&__rseq_size != nullptr && &__rseq_offset != nullptr && __rseq_size != 0) {
        c.rseq_area = c.fs_base + static_cast<uint64_t>(__rseq_offset);
        c.rseq_size = __rseq_size;
      }
      auto* uc = static_cast<ucontext_t*>(uc_void);
      memcpy(&c.sigmask, &uc->uc_sigmask, sizeof c.sigmask);
      stack_t ss;
      if (syscall(SYS_sigaltstack, nullptr, &ss) == 0) {
        c.altstack_sp = reinterpret_cast<uint64_t>(ss.ss_sp);
        c.altstack_size = ss.ss_size;
        c.altstack_flags = static_cast<uint32_t>(ss.ss_flags);
      }
      c.ucontext = reinterpret_cast<uint64_t>(uc_void);
      c.siginfo = reinterpret_cast<uint64_t>(info);
      c.park_time_ns = NowNs();
      s->state.store(kParked, std::memory_order_release);
      while (g->epoch.load(std::memory_order_acquire) == epoch) {
        Futex(&g->epoch, FUTEX_WAIT_PRIVATE, epoch, nullptr);
      }
      s->state.store(kFree, std::memory_order_release);
    }
  }
  g->inside.fetch_sub(1, std::memory_order_acq_rel);
  errno = saved_errno;
}

struct Dirent64 {
  uint64_t ino;
  int64_t off;
  unsigned short reclen;
  unsigned char type;
  char name[1];
};

// Calls f(tid) for every thread of the process; false if /proc/self/task could not be read.
template <typename F>
bool ForEachThread(F&& f) {
  int fd = static_cast<int>(
      syscall(SYS_openat, AT_FDCWD, "/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd < 0) return false;
  for (;;) {
    long n = syscall(SYS_getdents64, fd, g->dents, kDentsBytes);
    if (n <= 0) break;
    for (long off = 0; off < n;) {
      auto* d = reinterpret_cast<const Dirent64*>(g->dents + off);
      off += d->reclen;
      int tid = 0;
      const char* p = d->name;
      if (*p < '0' || *p > '9') continue;
      while (*p >= '0' && *p <= '9') tid = tid * 10 + (*p++ - '0');
      f(tid);
    }
  }
  syscall(SYS_close, fd);
  return true;
}

bool Exempt(int tid, std::span<const pid_t> exempt) {
  if (tid == g_agent_tid) return true;
  for (pid_t e : exempt) {
    if (e == tid) return true;
  }
  return false;
}

}  // namespace

ParkFreezer* ParkFreezer::Create(pid_t agent_tid) {
  // Again in a restored copy (agent_restart.cc): the old arena was not migrated (the process
  // state leaves out the agent's own mappings), so whatever is mapped at its old address now is
  // not ours to unmap: forget it. The old throttle must not carry over either.
  g = nullptr;
  g_arena = nullptr;
  g_throttle = 0;
  g_arena_size = kGuardBytes + kHelperStackBytes + ((sizeof(Shared) + 4095) & ~size_t{4095});
  void* p = mmap(nullptr, g_arena_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  // The helper's stack overflowing into the guard faults instead of writing below the mapping.
  if (mprotect(p, kGuardBytes, PROT_NONE) != 0) {
    munmap(p, g_arena_size);
    return nullptr;
  }
  g_arena = p;
  g = new (static_cast<char*>(p) + kGuardBytes + kHelperStackBytes) Shared();
  g_agent_tid = agent_tid;
  g_pid = getpid();
  static ParkFreezer freezer;  // the process's one instance (the agent singleton owns it)
  return &freezer;
}

bool ParkFreezer::InstallHandler() {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = Handler;
  sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
  sigfillset(&sa.sa_mask);
  return Real().sigaction(ParkSignal(), &sa, nullptr) == 0;
}

void ParkFreezer::SetAgentTid(pid_t tid) { g_agent_tid = tid; }

uintptr_t ParkFreezer::arena_begin() const { return reinterpret_cast<uintptr_t>(g_arena); }
uintptr_t ParkFreezer::arena_end() const { return arena_begin() + g_arena_size; }

absl::Status ParkFreezer::Park(int timeout_ms, std::span<const pid_t> exempt) {
  Unpark();  // leave nap mode; make sure no thread is still in the handler
  g->nslots = 0;
  g->nparked = 0;
  g->mode.store(kParkMode, std::memory_order_release);
  const uint64_t deadline = NowNs() + static_cast<uint64_t>(timeout_ms) * 1'000'000ull;
  int stuck_tid = 0;
  bool overflow = false;
  for (;;) {
    int added = 0;
    bool ok = ForEachThread([&](int tid) {
      if (Exempt(tid, exempt) || FindSlot(tid) != nullptr) return;
      if (g->nslots >= kMaxSlots) {
        overflow = true;
        return;
      }
      Slot& s = g->slots[g->nslots];
      s.tid.store(tid, std::memory_order_relaxed);
      s.state.store(kRequested, std::memory_order_release);
      ++g->nslots;
      ++added;
      if (syscall(SYS_tgkill, g_pid, tid, ParkSignal()) != 0) {
        s.state.store(kGone, std::memory_order_release);
      }
    });
    if (!ok || overflow) break;
    // Wait for every requested slot.
    bool all = false;
    while (!all && NowNs() < deadline) {
      all = true;
      for (int i = 0; i < g->nslots; ++i) {
        int st = g->slots[i].state.load(std::memory_order_acquire);
        if (st == kRequested) {
          // A thread that exited meanwhile never parks: check it still exists.
          if (syscall(SYS_tgkill, g_pid, g->slots[i].tid.load(), 0) != 0) {
            g->slots[i].state.store(kGone, std::memory_order_release);
            continue;
          }
          all = false;
          stuck_tid = g->slots[i].tid.load();
        }
      }
      if (!all) SleepNs(50'000);
    }
    if (!all) break;
    if (added == 0) {
      // Stable: no thread appeared since the last pass. Collect the contexts.
      for (int i = 0; i < g->nslots; ++i) {
        if (g->slots[i].state.load(std::memory_order_acquire) == kParked) {
          g->parked[g->nparked++] = g->slots[i].ctx;
        }
      }
      NoteParkedThreads(static_cast<uint32_t>(g->nparked));
      return absl::OkStatus();
    }
  }
  Unpark();
  // Threads run again: allocating the message is safe now.
  if (overflow) return absl::ResourceExhaustedError("park: more than 1024 threads");
  char msg[128];
  snprintf(msg, sizeof msg, "park: thread %d did not park within %d ms", stuck_tid, timeout_ms);
  return absl::DeadlineExceededError(msg);
}

void ParkFreezer::Unpark() {
  g->mode.store(kIdle, std::memory_order_release);
  g->epoch.fetch_add(1, std::memory_order_acq_rel);
  Futex(&g->epoch, FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr);
  // Wait (bounded) until every thread left the handler, so the next Park starts clean.
  for (int i = 0; i < 20000 && g->inside.load(std::memory_order_acquire) > 0; ++i) {
    SleepNs(50'000);
  }
  for (int i = 0; i < g->nslots; ++i) g->slots[i].state.store(kFree, std::memory_order_relaxed);
  g->nparked = 0;
}

void ParkFreezer::SetThrottle(uint32_t percent) {
  g_throttle = percent > 99 ? 99 : percent;
  g_last_tick_ns = NowNs();
}

void ParkFreezer::Tick() {
  if (g_throttle == 0) return;
  const uint64_t now = NowNs();
  const uint64_t period = now - g_last_tick_ns;
  g_last_tick_ns = now;
  if (period < 1'000'000) return;
  // Sleep the share of the period the throttle asks for (capped at one second).
  uint64_t nap = period * g_throttle / 100;
  if (nap > 1'000'000'000ull) nap = 1'000'000'000ull;
  g->nap_ns.store(nap, std::memory_order_relaxed);
  g->mode.store(kNapMode, std::memory_order_release);
  ForEachThread([&](int tid) {
    if (tid != g_agent_tid) syscall(SYS_tgkill, g_pid, tid, ParkSignal());
  });
}

std::span<const ThreadParkContext> ParkFreezer::ParkedThreads() const {
  return {g->parked, static_cast<size_t>(g->nparked)};
}

namespace {

// What the task running the final phase needs: the body, and the pipe to report on.
struct FinalTask {
  absl::FunctionRef<absl::Status()>* body;
  int report_fd;
};

// Runs the body and writes its status (code byte, then the message) to the report pipe; returns
// the task's exit status. Raw system calls only: in a frozen copy the other threads' locks stay
// held forever.
int RunAndReport(FinalTask* t) {
  absl::Status s = (*t->body)();
  char out[1 + 255];
  out[0] = static_cast<char>(s.code());
  size_t n = 1;
  if (!s.ok()) {
    absl::string_view m = s.message();
    n += m.size() > 255 ? 255 : m.size();
    memcpy(out + 1, m.data(), n - 1);
  }
  syscall(SYS_write, t->report_fd, out, n);
  return s.ok() ? 0 : 1;
}

// The helper sharing the program's memory: returning ends it (glibc's clone calls exit).
int HelperMain(void* arg) { return RunAndReport(static_cast<FinalTask*>(arg)); }

// Waits up to timeout_ms for the task's report: its length, 0 when the task ended without one,
// -1 when the time ran out. Raw system calls only.
long AwaitReport(int fd, char* buf, size_t cap, int timeout_ms) {
  pollfd pfd{fd, POLLIN, 0};
  for (;;) {
    long r = syscall(SYS_poll, &pfd, 1, timeout_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    long n = syscall(SYS_read, fd, buf, cap);
    return n > 0 ? n : 0;
  }
}

}  // namespace

absl::Status ParkFreezer::RunFinalPhase(absl::FunctionRef<absl::Status()> body, bool leave_running,
                                        int timeout_ms, absl::FunctionRef<void()> cancel) {
  // After `cancel`, how long the task has to notice its aborted channels before it is killed.
  constexpr int kCancelGraceMs = 2000;
  int p[2];
  if (syscall(SYS_pipe2, p, O_CLOEXEC) != 0) {
    int err = errno;
    Unpark();
    return absl::InternalError(std::string("final phase: pipe2 failed: ") + strerror(err));
  }
  FinalTask task{&body, p[1]};
  long pid;
  const char* what;
  if (leave_running) {
    // A frozen copy: a raw clone without CLONE_* flags and exit signal 0, i.e. a fork that runs
    // no atfork handlers and whose end raises no SIGCHLD in the program (nor shows in its
    // wait(-1)). Its memory stays as it was when the original's threads run on.
    what = "frozen copy";
    pid = syscall(SYS_clone, 0, nullptr, nullptr, nullptr, nullptr);
    if (pid == 0) {
      syscall(SYS_close, p[0]);
      syscall(SYS_exit_group, RunAndReport(&task));
    }
  } else {
    // The program stays parked until the end: the memory does not change, so the task shares it
    // (CLONE_VM, on the arena's own stack, again exit signal 0) and nothing is copied. It keeps
    // the agent thread's TLS, which is idle in the wait below meanwhile, and a copy of the
    // descriptor table.
    what = "final phase";
    pid = clone(HelperMain, static_cast<char*>(g_arena) + kGuardBytes + kHelperStackBytes, CLONE_VM,
                &task);
  }
  syscall(SYS_close, p[1]);
  if (pid < 0) {
    int err = errno;
    syscall(SYS_close, p[0]);
    Unpark();
    return absl::InternalError(std::string(what) + ": clone failed: " + strerror(err));
  }
  if (leave_running) Unpark();
  char in[256];
  long n = AwaitReport(p[0], in, sizeof in, timeout_ms);
  bool cancelled = false;
  if (n < 0) {
    // No report in time: break its channels so it fails on its own, then, as a last resort,
    // kill it. (A helper sharing the memory that is killed in the middle of an allocation would
    // leave the agent's malloc arena locked; the program's threads are unparked first all the
    // same.)
    cancelled = true;
    cancel();
    n = AwaitReport(p[0], in, sizeof in, kCancelGraceMs);
    if (n < 0) syscall(SYS_kill, pid, SIGKILL);
  }
  int status = 0;
  while (syscall(SYS_wait4, pid, &status, __WALL, nullptr) < 0 && errno == EINTR) {
  }
  syscall(SYS_close, p[0]);
  if (n >= 1 && in[0] == 0) return absl::OkStatus();
  Unpark();  // before building a status: the message allocates
  std::string prefix = std::string(what) + ": ";
  if (cancelled) {
    prefix += "no report within " + std::to_string(timeout_ms) + " ms, its channels aborted: ";
  }
  if (n <= 0) {
    return absl::DeadlineExceededError(prefix + (n < 0 ? "killed" : "ended without a report"));
  }
  return absl::Status(static_cast<absl::StatusCode>(in[0]),
                      prefix + std::string(in + 1, static_cast<size_t>(n - 1)));
}

}  // namespace procmig::preload
