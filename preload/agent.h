// The in-process agent's internals (preload/): the process's one agent singleton and the pieces
// it is built from. Only lib/include/procmig/*.h is included from lib/.
//
// Threads: the constructor (program's main thread, before main) initialises everything; the agent
// thread then owns the control server and the migration; the interposers run on any application
// thread and only read the immutable parts (park signal, real functions) plus their own tables.
#ifndef PROCMIG_PRELOAD_AGENT_H_
#define PROCMIG_PRELOAD_AGENT_H_

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
  absl::Status RunInFrozenCopy(absl::FunctionRef<absl::Status()> body, bool leave_running,
                               int timeout_ms) override;

  void SetAgentTid(pid_t tid);
  // Throttling: called periodically by the agent thread; naps every application thread for the
  // throttle share of the time since the previous call.
  void Tick();
  // The agent's own memory (excluded from RAM blocks).
  uintptr_t arena_begin() const;
  uintptr_t arena_end() const;
};

}  // namespace procmig::preload

#endif  // PROCMIG_PRELOAD_AGENT_H_
