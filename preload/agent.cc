// The agent's constructor: picks the park signal, opens the log and the control socket, installs
// the park handler and starts the one agent thread. Any failure leaves the program untouched
// (logged when the log could be opened) and the interposers inert.
//
// Control socket path: PROCMIG_CONTROL if set; otherwise the first usable directory of
// $XDG_RUNTIME_DIR/procmig, /run/procmig (root only), /tmp/procmig-<uid>, created mode 0700,
// holding <key>.sock (mode 0600), where <key> is the pid, or in a PID namespace other than the
// initial one "<pid>.pidns-<namespace inode>" (AgentKey; `procmig` resolves a host pid to it
// through /proc/PID/status NSpid and /proc/PID/ns/pid). Log: PROCMIG_LOG, else <key>.log next
// to the socket. The same start runs again in a restored copy of the process (agent_restart.cc).
#include "preload/agent.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>

#include "lib/src/base/crc32c.h"
#include "lib/src/os/fault_guard.h"
#include "preload/agent_heap.h"
#include "preload/control_server.h"

namespace procmig::preload {
namespace {

std::atomic<int> g_park_signal{0};
int g_log_fd = -1;
AgentContext g_ctx;  // the process's one agent (DESIGN.md: the preload owns the only singleton)
AgentThreadInfo g_agent_thread;
char g_log_path[300] = "";  // the log file's path, kept for a restored copy (see StartAgent)

// The inode of the initial PID namespace (PROC_PID_INIT_INO in the kernel's proc_ns.h).
constexpr unsigned long long kInitPidNsInode = 0xEFFFFFFCull;
constexpr size_t kAgentStackBytes = 2u << 20;

bool UsableDir(const char* dir) {
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) return false;
  struct stat st;
  return stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == getuid() &&
         access(dir, W_OK | X_OK) == 0;
}

// Fills dir (without trailing slash); false when no directory is usable.
bool RuntimeDir(char* dir, size_t cap) {
  const char* xdg = getenv("XDG_RUNTIME_DIR");
  if (xdg != nullptr && xdg[0] == '/') {
    snprintf(dir, cap, "%s/procmig", xdg);
    if (UsableDir(dir)) return true;
  }
  if (getuid() == 0) {
    snprintf(dir, cap, "/run/procmig");
    if (UsableDir(dir)) return true;
  }
  snprintf(dir, cap, "/tmp/procmig-%u", static_cast<unsigned>(getuid()));
  return UsableDir(dir);
}

void* AgentThread(void*) {
  MarkAgentThread();  // from here on its allocations come from the agent heap (agent_heap.h)
  // Every signal stays blocked but the faults: with the mprotect tracker a write of the agent's
  // to a tracked page (its own TLS at the top of this stack, the agent heap) is a SIGSEGV the
  // tracker's handler resolves; blocked, the kernel would kill the whole program instead.
  sigset_t faults;
  sigemptyset(&faults);
  sigaddset(&faults, SIGSEGV);
  sigaddset(&faults, SIGBUS);
  Real().pthread_sigmask(SIG_UNBLOCK, &faults, nullptr);
  g_ctx.agent_tid = static_cast<pid_t>(syscall(SYS_gettid));
  g_ctx.freezer->SetAgentTid(g_ctx.agent_tid);
  // glibc keeps the descriptor and static TLS of a thread at the top of the stack it is given.
  // That top, down to this frame, is migrated: glibc's thread list runs through the descriptor,
  // and a restored copy must find it whole (the sentinel then joins this thread there). The rest
  // of the stack, where the agent works while the program is parked, is excluded.
  AgentThreadInfo& t = g_agent_thread;
  uintptr_t tid_address = 0;
  if (syscall(SYS_prctl, PR_GET_TID_ADDRESS, &tid_address, 0, 0, 0) != 0) tid_address = 0;
  t.tid_address = tid_address;
  const uintptr_t self = reinterpret_cast<uintptr_t>(pthread_self());
  const uintptr_t frame =
      reinterpret_cast<uintptr_t>(__builtin_frame_address(0)) & ~uintptr_t{4095};
  const uintptr_t end = t.stack + t.stack_bytes;
  if (t.stack != 0 && frame > t.stack && self >= frame && self < end) {
    t.migrated_from = frame;
    g_ctx.stack_size = frame - t.stack;
  }
  Log("agent thread %d serving %s (park signal %d, restart %u; the program's malloc from %s)",
      g_ctx.agent_tid, g_ctx.socket_path, ParkSignal(), AgentRestarts(), ProgramAllocatorFile());
  ServeControl(&g_ctx);
  return nullptr;
}

int ParseParkSignal() {
  const char* env = getenv("PROCMIG_PARK_SIGNAL");
  int sig = SIGRTMIN + 4;
  if (env != nullptr && env[0] != '\0') {
    char* end = nullptr;
    long v = strtol(env, &end, 10);
    if (*end != '\0' || v < SIGRTMIN || v > SIGRTMAX) return -1;
    sig = static_cast<int>(v);
  }
  return sig;
}

__attribute__((constructor)) void AgentInit() {
  (void)Real();  // resolve the real signal functions before anything else
  // Before main, while malloc is still ours to use: a fork of the program's must not inherit an
  // open in-place scan window (lib/src/os/fault_guard.h).
  ScanWindow::InstallForkHandler();
  // The crc's choice of implementation is made at its first use, under a static-init guard: make
  // it here, so that no first use falls while threads are parked or in the frozen copy.
  (void)crc32c::HardwareAccelerated();
  if (!StartAgent(false)) return;
  if (!StartSentinel()) Log("a restored copy of this process will have no agent");
}

}  // namespace

void AgentKey(char* out, size_t cap) {
  const int pid = getpid();
  struct stat st;
  if (stat("/proc/self/ns/pid", &st) == 0 &&
      static_cast<unsigned long long>(st.st_ino) != kInitPidNsInode) {
    snprintf(out, cap, "%d.pidns-%llu", pid, static_cast<unsigned long long>(st.st_ino));
  } else {
    snprintf(out, cap, "%d", pid);
  }
}

AgentThreadInfo& CurrentAgentThread() { return g_agent_thread; }

bool StartAgent(bool restart) {
  if (restart) {
    // The old agent's fds, arena and thread are gone or not ours: forget them, close nothing
    // (the numbers may be the program's now; no restorer reopened any of them).
    g_ctx = AgentContext{};
    g_agent_thread = AgentThreadInfo{};
    g_log_fd = -1;
  }
  char key[64];
  AgentKey(key, sizeof key);
  char dir[200] = "";
  const char* control = getenv("PROCMIG_CONTROL");
  if (control != nullptr && control[0] != '\0') {
    snprintf(g_ctx.socket_path, sizeof g_ctx.socket_path, "%s", control);
    snprintf(dir, sizeof dir, "%s", control);
    char* slash = strrchr(dir, '/');
    if (slash != nullptr) *slash = '\0';
  } else if (RuntimeDir(dir, sizeof dir)) {
    snprintf(g_ctx.socket_path, sizeof g_ctx.socket_path, "%s/%s.sock", dir, key);
  }
  const char* log = getenv("PROCMIG_LOG");
  char log_path[300];
  if (log != nullptr && log[0] != '\0') {
    snprintf(log_path, sizeof log_path, "%s", log);
  } else {
    snprintf(log_path, sizeof log_path, "%s/%s.log", dir[0] ? dir : "/tmp", key);
  }
  g_log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  snprintf(g_log_path, sizeof g_log_path, "%s", log_path);
  if (g_ctx.socket_path[0] == '\0') {
    Log("no usable runtime directory for the control socket; agent disabled");
    return false;
  }
  const int sig = ParseParkSignal();
  if (sig < 0) {
    Log("PROCMIG_PARK_SIGNAL must be a real-time signal number in [%d, %d]; agent disabled",
        SIGRTMIN, SIGRTMAX);
    return false;
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (strlen(g_ctx.socket_path) >= sizeof addr.sun_path) {
    Log("control socket path too long: %s; agent disabled", g_ctx.socket_path);
    return false;
  }
  strcpy(addr.sun_path, g_ctx.socket_path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    Log("control socket: %s; agent disabled", strerror(errno));
    return false;
  }
  unlink(g_ctx.socket_path);  // a stale one: an earlier run's, or on the same host the source's
  mode_t old_umask = umask(0177);  // the socket is created 0600
  int b = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  umask(old_umask);
  if (b != 0 || listen(fd, 8) != 0) {
    Log("bind/listen %s: %s; agent disabled", g_ctx.socket_path, strerror(errno));
    close(fd);
    return false;
  }
  g_ctx.listen_fd = fd;
  g_ctx.log_fd = g_log_fd;
  g_ctx.freezer = ParkFreezer::Create(0);
  if (g_ctx.freezer == nullptr) {
    Log("park arena: %s; agent disabled", strerror(errno));
    close(fd);
    unlink(g_ctx.socket_path);
    return false;
  }
  SetParkSignal(sig);
  if (!g_ctx.freezer->InstallHandler()) {
    Log("install park handler for signal %d: %s; agent disabled", sig, strerror(errno));
    SetParkSignal(0);
    close(fd);
    unlink(g_ctx.socket_path);
    return false;
  }
  // The agent thread's stack is our own mapping; all but its top (AgentThread) is excluded from
  // the RAM blocks until the thread says how much of it glibc took.
  AgentThreadInfo& t = g_agent_thread;
  g_ctx.stack_size = kAgentStackBytes;
  void* stack = mmap(nullptr, kAgentStackBytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  if (stack != MAP_FAILED) {
    g_ctx.stack = reinterpret_cast<uintptr_t>(stack);
    t.stack = g_ctx.stack;
    t.stack_bytes = kAgentStackBytes;
    pthread_attr_setstack(&attr, stack, kAgentStackBytes);
  }
  // Joinable: in a restored copy the sentinel joins it, which unlinks its descriptor from glibc.
  // The agent thread starts with every signal blocked (the park signal included): it never runs
  // the program's handlers and is never parked.
  sigset_t all, prev;
  sigfillset(&all);
  Real().pthread_sigmask(SIG_SETMASK, &all, &prev);
  pthread_t thread;
  int err = pthread_create(&thread, &attr, AgentThread, nullptr);
  Real().pthread_sigmask(SIG_SETMASK, &prev, nullptr);
  pthread_attr_destroy(&attr);
  if (err != 0) {
    Log("start agent thread: %s; agent disabled", strerror(err));
    SetParkSignal(0);
    close(fd);
    unlink(g_ctx.socket_path);
    return false;
  }
  t.thread = thread;
  t.joinable = true;
  return true;
}

int ParkSignal() { return g_park_signal.load(std::memory_order_relaxed); }
void SetParkSignal(int sig) { g_park_signal.store(sig, std::memory_order_relaxed); }
int LogFd() { return g_log_fd; }
void SetLogFd(int fd) { g_log_fd = fd; }

void Log(const char* fmt, ...) {
  if (g_log_fd < 0) return;
  char line[1024];
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int n = snprintf(line, sizeof line, "%lld.%06ld procmig[%d] ", static_cast<long long>(ts.tv_sec),
                   ts.tv_nsec / 1000, getpid());
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
  va_end(ap);
  size_t len = static_cast<size_t>(n) + (m < 0 ? 0 : std::min<size_t>(m, sizeof line - n - 2));
  line[len++] = '\n';
  (void)!write(g_log_fd, line, len);
}

}  // namespace procmig::preload
