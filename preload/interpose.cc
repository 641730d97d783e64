// Signal interposers: the program may neither block nor replace the park signal, and sees its
// own settings for it reported back faithfully (its handler, its mask bit), as if it had them.
// Its actions for SIGSEGV and SIGBUS wait while the sender scans memory in place under its own
// handler for them (lib/src/os/fault_guard.h), so that scan never puts back a stale action.
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "lib/src/os/fault_guard.h"
#include "preload/agent.h"

namespace procmig::preload {
namespace {

RealFunctions g_real;
std::atomic<bool> g_resolved{false};
// The program's view of the park signal's disposition, and (per thread) whether it blocked it.
struct sigaction g_user_action;
thread_local bool t_user_blocked = false;

void Resolve() {
  if (g_resolved.load(std::memory_order_acquire)) return;
  g_real.sigaction = reinterpret_cast<decltype(g_real.sigaction)>(dlsym(RTLD_NEXT, "sigaction"));
  g_real.signal = reinterpret_cast<decltype(g_real.signal)>(dlsym(RTLD_NEXT, "signal"));
  g_real.sigprocmask =
      reinterpret_cast<decltype(g_real.sigprocmask)>(dlsym(RTLD_NEXT, "sigprocmask"));
  g_real.pthread_sigmask =
      reinterpret_cast<decltype(g_real.pthread_sigmask)>(dlsym(RTLD_NEXT, "pthread_sigmask"));
  g_resolved.store(true, std::memory_order_release);
}

// Filters a mask change for the park signal; records what the program asked for.
int Mask(int (*real)(int, const sigset_t*, sigset_t*), int how, const sigset_t* set,
         sigset_t* old) {
  const int sig = ParkSignal();
  if (sig == 0) return real(how, set, old);
  sigset_t filtered;
  const sigset_t* use = set;
  bool want_blocked = t_user_blocked;
  if (set != nullptr) {
    filtered = *set;
    const bool has = sigismember(set, sig) == 1;
    if (how == SIG_BLOCK && has) want_blocked = true;
    if (how == SIG_UNBLOCK && has) want_blocked = false;
    if (how == SIG_SETMASK) want_blocked = has;
    sigdelset(&filtered, sig);
    use = &filtered;
  }
  const bool was_blocked = t_user_blocked;
  int r = real(how, use, old);
  if (r != 0) return r;
  t_user_blocked = want_blocked;
  if (old != nullptr) {
    if (was_blocked) {
      sigaddset(old, sig);
    } else {
      sigdelset(old, sig);
    }
  }
  return 0;
}

}  // namespace

const RealFunctions& Real() {
  Resolve();
  return g_real;
}

}  // namespace procmig::preload

using procmig::preload::Real;

extern "C" __attribute__((visibility("default"))) int sigaction(int sig,
                                                                const struct sigaction* act,
                                                                struct sigaction* old) {
  using namespace procmig::preload;
  if (sig != 0 && sig == ParkSignal()) {
    if (old != nullptr) *old = g_user_action;
    if (act != nullptr) g_user_action = *act;
    return 0;
  }
  if (sig == SIGSEGV || sig == SIGBUS) {
    return procmig::ProgramSigaction(sig, act, old);
  }
  return Real().sigaction(sig, act, old);
}

extern "C" __attribute__((visibility("default"))) sighandler_t signal(int sig,
                                                                      sighandler_t handler) {
  using namespace procmig::preload;
  if (sig != 0 && sig == ParkSignal()) {
    sighandler_t prev = g_user_action.sa_handler;
    memset(&g_user_action, 0, sizeof g_user_action);
    g_user_action.sa_handler = handler;
    g_user_action.sa_flags = SA_RESTART;
    return prev;
  }
  if (sig == SIGSEGV || sig == SIGBUS) {
    // What glibc's signal() does (BSD semantics), through the same wait as sigaction.
    struct sigaction act = {};
    act.sa_handler = handler;
    sigemptyset(&act.sa_mask);
    sigaddset(&act.sa_mask, sig);
    act.sa_flags = SA_RESTART;
    struct sigaction old = {};
    if (procmig::ProgramSigaction(sig, &act, &old) != 0) return SIG_ERR;
    return old.sa_handler;
  }
  return Real().signal(sig, handler);
}

extern "C" __attribute__((visibility("default"))) int sigprocmask(int how, const sigset_t* set,
                                                                  sigset_t* old) {
  return procmig::preload::Mask(Real().sigprocmask, how, set, old);
}

extern "C" __attribute__((visibility("default"))) int pthread_sigmask(int how, const sigset_t* set,
                                                                      sigset_t* old) {
  return procmig::preload::Mask(Real().pthread_sigmask, how, set, old);
}
