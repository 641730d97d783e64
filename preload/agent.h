// The in-process agent's internals (preload/): the process's one agent singleton and the pieces
// it is built from. Only lib/include/procmig/*.h is included from lib/.
//
// Threads: the constructor (program's main thread, before main) initialises everything; the agent
// thread then owns the control server and the migration; the interposers run on any application
// thread and only read the immutable parts (park signal, real functions) plus their own tables.
#ifndef PROCMIG_PRELOAD_AGENT_H_
#define PROCMIG_PRELOAD_AGENT_H_

#include <pthread.h>
#include <signal.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <span>

#include "procmig/source.h"

namespace procmig::preload {

// glibc's functions that the interposers wrap (resolved with dlsym(RTLD_NEXT) once).
struct RealFunctions {
  int (*sigaction)(int, const struct sigaction*, struct sigaction*) = nullptr;
  sighandler_t (*signal)(int, sighandler_t) = nullptr;
  int (*sigprocmask)(int, const sigset_t*, sigset_t*) = nullptr;
  int (*pthread_sigmask)(int, const sigset_t*, sigset_t*) = nullptr;
};
const RealFunctions& Real();

// The park signal (SIGRTMIN+4 or PROCMIG_PARK_SIGNAL); 0 until the agent is set up.
int ParkSignal();
void SetParkSignal(int sig);

// Logging to the agent's own file; never the program's stdout/stderr. Outside park windows only.
void Log(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void SetLogFd(int fd);
int LogFd();

// ParkFreezer: parks application threads with the park signal (see park_freezer.cc).
class ParkFreezer : public SourceFreezer {
 public:
  // Memory for slots and contexts comes from one private mapping made here.
  static ParkFreezer* Create(pid_t agent_tid);
  // Installs the park signal's handler (the real sigaction). False on failure.
  bool InstallHandler();

  absl::Status Park(int timeout_ms, std::span<const pid_t> exempt) override;
  void Unpark() override;
  void SetThrottle(uint32_t percent) override;
  std::span<const ThreadParkContext> ParkedThreads() const override;
  absl::Status RunFinalPhase(absl::FunctionRef<absl::Status()> body, bool leave_running,
                             int timeout_ms, absl::FunctionRef<void()> cancel) override;

  void SetAgentTid(pid_t tid);
  // Throttling: called periodically by the agent thread; naps every application thread for the
  // throttle share of the time since the previous call.
  void Tick();
  // The agent's own memory (excluded from RAM blocks).
  uintptr_t arena_begin() const;
  uintptr_t arena_end() const;
};

// ---- Starting the agent, and starting it again in a restored copy (agent.cc, agent_restart.cc)
//
// The agent thread is never migrated and the agent's own mappings come back as zero-filled
// memory, so a restored process has no agent until it starts one. A "sentinel" thread, started
// with the agent, blocks every signal but the park signal and sleeps on a futex word in the
// library's .bss; it is parked and migrated like any application thread. Every thread a restorer
// resumes passes through OnResumedAfterRestore (in the park handler), which wakes the sentinel;
// the sentinel, an ordinary thread again, forgets the old agent's objects (never destroys them)
// and calls StartAgent(true).

// Starts the agent: the control socket (stale socket file replaced), the log, the freezer's
// arena, the park handler and the agent thread. `restart`: in a restored copy, after the old
// agent's state was forgotten (its fds are not ours: never closed). False (logged) on failure.
bool StartAgent(bool restart);
// The socket and log name for this process: "<pid>" in the initial PID namespace, else
// "<pid>.pidns-<inode of /proc/self/ns/pid>" (a restored process keeps its old pid in a new
// namespace; the name must not collide with a host process's). `out` gets "" on failure.
void AgentKey(char* out, size_t cap);
// Starts the sentinel thread (once, from the constructor). False when it could not be started:
// the agent works, but a restored copy of this process will have no agent.
bool StartSentinel();
// Park: the number of threads the last successful Park parked (what a restorer resumes). Raw
// syscalls only.
void NoteParkedThreads(uint32_t n);
// In the park handler of every thread a restorer resumed: async-signal-safe, raw syscalls only.
// `restorer`: the restorer's argument block (what procmig_park_save returned), whose mapping the
// sentinel unmaps once every thread has left it.
void OnResumedAfterRestore(uint64_t restorer);
// The agent thread's pthread, its glibc-tid word and its stack (for the sentinel to reap it in a
// restored copy); set by agent.cc.
struct AgentThreadInfo {
  pthread_t thread{};
  bool joinable = false;
  uintptr_t tid_address = 0;  // glibc's thread descriptor's tid (PR_GET_TID_ADDRESS)
  uintptr_t stack = 0;        // our mapping for its stack
  size_t stack_bytes = 0;
  uintptr_t migrated_from =
      0;  // [migrated_from, stack + stack_bytes) is migrated (descriptor, TLS)
};
AgentThreadInfo& CurrentAgentThread();
// Restarts so far in this process's history (0 in a process that was never restored).
uint32_t AgentRestarts();

}  // namespace procmig::preload

#endif  // PROCMIG_PRELOAD_AGENT_H_
