// The sentinel thread, and starting the agent again in a restored copy of the process.
//
// Only the program's threads are migrated (each parked in the park handler); the agent thread is
// not, and the agent's own mappings (the freezer's arena, the excluded part of the agent thread's
// stack) come back as zero-filled memory at the same addresses. The library's .bss and the heap
// are migrated like the rest of the program. So a restored process starts without an agent.
//
// The sentinel is an application-like thread started with the agent: every signal blocked but
// the park signal, sleeping on `resumed`, a futex word in .bss. It is parked and migrated like
// the program's threads (its stack is glibc's, not excluded). In the restored copy every resumed
// thread passes through OnResumedAfterRestore in the park handler, which detaches the old
// tracker from the layout gate, drops the log fd (that number is not ours any more), counts
// itself in `resumed` and wakes the sentinel (raw system calls and atomics only). The sentinel
// then runs as an ordinary thread, not in a handler, so malloc and pthread_create are safe:
//   1. it waits (bounded) until every thread the last Park parked has passed the handler;
//   2. it opens the layout gate the old tracker may have held;
//   3. it unmaps the restorer's mapping (its code, argument block and stacks), which every
//      thread has left by then: the block's address came back as procmig_park_save's value;
//   4. StartAgent(true), after dropping the agent heap's large zone (agent_heap.h: it was not
//      migrated): a new log, control socket (stale file replaced), freezer arena (the old
//      one unmapped), park handler and agent thread; the old agent's fds and heap objects are
//      forgotten, never closed or destroyed (the fd numbers may be the program's now; the
//      sender left the agent's descriptors out of the process state, so no restorer reopened
//      any of them);
//   5. it reaps the old agent thread: glibc still lists its descriptor (migrated with the top of
//      its stack, see agent.cc), so it clears the descriptor's tid word, as the kernel would have
//      at the thread's exit, joins it (glibc unlinks and frees it) and unmaps the old stack;
//   6. it sleeps again, ready for the next restore.
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdint>

#include "lib/src/restore/restorer_abi.h"  // the restorer's ABI: its Args block
#include "preload/agent.h"
#include "preload/agent_heap.h"
#include "preload/memory_interpose.h"

namespace procmig::preload {
namespace {

struct RestartState {
  std::atomic<uint32_t> resumed{0};   // futex word: threads a restorer resumed, not yet handled
  std::atomic<uint32_t> expected{0};  // threads the last successful Park parked
  std::atomic<uint32_t> restarts{0};  // restarts in this process's history
  std::atomic<uint64_t> restorer{0};  // the last restorer's argument block (restore_abi::Args)
};
constinit RestartState g_restart;

constexpr size_t kSentinelStackBytes = 256u << 10;
constexpr int kResumeWaitMs = 2000;

long Futex(std::atomic<uint32_t>* word, int op, uint32_t val, const timespec* ts = nullptr) {
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), op, val, ts, nullptr, 0);
}

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// Step 3: the restorer's argument block says where its mapping is; every thread resumed has left
// it (none runs restorer code after its jump into the park handler). Returns what to log once
// the new agent has a log ("" when unmapped).
const char* UnmapRestorer(uint64_t args_address, int* err) {
  *err = 0;
  // The block starts a page of the restorer's mapping; anything else (an older restorer
  // returned 1) is not read.
  unsigned char resident = 0;
  if (args_address == 0 || args_address % 4096 != 0 ||
      mincore(reinterpret_cast<void*>(args_address), 1, &resident) != 0) {
    return "no restorer block came back";
  }
  const auto* a = reinterpret_cast<const restore_abi::Args*>(args_address);
  const uint64_t start = a->region_start, bytes = a->region_bytes;
  if (a->magic != restore_abi::kArgsMagic || start % 4096 != 0 || bytes == 0 ||
      args_address < start || args_address - start >= bytes) {
    return "the restorer's block does not describe its mapping";
  }
  if (munmap(reinterpret_cast<void*>(start), bytes) != 0) {
    *err = errno;
    return "munmap failed";
  }
  return "";
}

// Step 5 (see the top of the file).
void ReapOldAgentThread(const AgentThreadInfo& old) {
  if (old.stack == 0) return;
  const uintptr_t end = old.stack + old.stack_bytes;
  const uintptr_t pd = reinterpret_cast<uintptr_t>(old.thread);
  if (!old.joinable || old.migrated_from == 0 || pd < old.migrated_from || pd >= end ||
      old.tid_address < old.migrated_from || old.tid_address + sizeof(pid_t) > end) {
    Log("restart: the old agent thread's descriptor %#lx was not migrated whole (stack %#lx-%#lx, "
        "migrated from %#lx, tid word %#lx); left as it is",
        static_cast<unsigned long>(pd), static_cast<unsigned long>(old.stack),
        static_cast<unsigned long>(end), static_cast<unsigned long>(old.migrated_from),
        static_cast<unsigned long>(old.tid_address));
    return;
  }
  // The old agent thread does not exist here; glibc waits for the kernel's exit-time clearing of
  // this word before it releases the descriptor.
  reinterpret_cast<std::atomic<pid_t>*>(old.tid_address)->store(0, std::memory_order_release);
  const int err = pthread_join(old.thread, nullptr);
  if (err != 0) {
    Log("restart: join the old agent thread: %s; its stack is left mapped", strerror(err));
    return;
  }
  if (munmap(reinterpret_cast<void*>(old.stack), old.stack_bytes) != 0) {
    Log("restart: unmap the old agent stack %#lx-%#lx: %s", static_cast<unsigned long>(old.stack),
        static_cast<unsigned long>(end), strerror(errno));
  }
}

void Restart() {
  const uint64_t t0 = NowNs();
  const uint32_t expected = g_restart.expected.load(std::memory_order_acquire);
  // 1. Every resumed thread passes OnResumedAfterRestore at once; none may still be there when
  // the new agent starts.
  for (int i = 0; i < kResumeWaitMs; ++i) {
    const uint32_t now = g_restart.resumed.load(std::memory_order_acquire);
    if (now >= expected) break;
    const timespec ms{0, 1'000'000};
    Futex(&g_restart.resumed, FUTEX_WAIT_PRIVATE, now, &ms);  // woken by the next one
  }
  const uint32_t resumed = g_restart.resumed.load(std::memory_order_acquire);
  // 2. The old tracker may have held the gate when memory was copied; every resumed thread has
  // detached it already. No tracker exists here yet.
  Gate().Detach();
  Gate().Unlock();
  // 3. Only when every thread came through: one still on its way may be in restorer code. (Before
  // the new agent serves anyone, so a `procmig status` that answers finds it gone.)
  const uint64_t restorer = g_restart.restorer.exchange(0, std::memory_order_acq_rel);
  int unmap_err = 0;
  const char* unmap_note = resumed >= expected ? UnmapRestorer(restorer, &unmap_err)
                                               : "not every thread came back from it";
  // 4.
  const AgentThreadInfo old = CurrentAgentThread();
  const uint32_t n = g_restart.restarts.fetch_add(1, std::memory_order_acq_rel) + 1;
  g_restart.resumed.store(0, std::memory_order_release);
  TheAgentHeap().ForgetLargeZone();  // never migrated: the new agent thread starts a new one
  if (!StartAgent(true)) return;     // logged; the program runs on without an agent
  if (unmap_note[0] != '\0') {
    Log("restart: the restorer's mapping (block at %#lx) is left mapped: %s%s%s",
        static_cast<unsigned long>(restorer), unmap_note, unmap_err != 0 ? ": " : "",
        unmap_err != 0 ? strerror(unmap_err) : "");
  }
  // 5.
  ReapOldAgentThread(old);
  Log("restart %u: agent started again in %.2f ms (%u of %u parked threads resumed)", n,
      static_cast<double>(NowNs() - t0) / 1e6, resumed, expected);
}

void* SentinelMain(void*) {
  sigset_t mask;
  sigfillset(&mask);
  sigdelset(&mask, ParkSignal());
  Real().pthread_sigmask(SIG_SETMASK, &mask, nullptr);
  for (;;) {
    // Parked here (the futex wait restarts after the handler returns, SA_RESTART); in a restored
    // copy `resumed` is not 0 by then.
    if (g_restart.resumed.load(std::memory_order_acquire) == 0) {
      Futex(&g_restart.resumed, FUTEX_WAIT_PRIVATE, 0);
      continue;
    }
    Restart();
  }
  return nullptr;
}

}  // namespace

bool StartSentinel() {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, kSentinelStackBytes);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  // Created with every signal blocked; it unblocks the park signal itself.
  sigset_t all, prev;
  sigfillset(&all);
  Real().pthread_sigmask(SIG_SETMASK, &all, &prev);
  pthread_t t;
  const int err = pthread_create(&t, &attr, SentinelMain, nullptr);
  Real().pthread_sigmask(SIG_SETMASK, &prev, nullptr);
  pthread_attr_destroy(&attr);
  if (err != 0) {
    Log("start the sentinel thread: %s", strerror(err));
    return false;
  }
  return true;
}

void NoteParkedThreads(uint32_t n) { g_restart.expected.store(n, std::memory_order_release); }

void OnResumedAfterRestore(uint64_t restorer) {
  SetLogFd(-1);
  Gate().Detach();
  g_restart.restorer.store(restorer, std::memory_order_relaxed);  // the same for every thread
  g_restart.resumed.fetch_add(1, std::memory_order_acq_rel);
  Futex(&g_restart.resumed, FUTEX_WAKE_PRIVATE, INT_MAX);
}

uint32_t AgentRestarts() { return g_restart.restarts.load(std::memory_order_acquire); }

}  // namespace procmig::preload
