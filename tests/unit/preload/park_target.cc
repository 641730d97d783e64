// A small multi-threaded program run under LD_PRELOAD=libprocmig_preload.so by preload_test.cc.
// Threads: one blocked in read(0) until the driver writes "go", one sleeping in nanosleep loops,
// one waiting on a futex, one that blocks every signal (the park signal included, as far as it
// can tell), and main counting. After "go" every thread reports, and main prints PASS or FAIL.
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>

static std::atomic<int> g_futex{0};
static std::atomic<bool> g_go{false};
static std::atomic<int> g_failures{0};
static char g_line[16];

static void Fail(const char* what) {
  fprintf(stderr, "FAIL: %s (errno %d)\n", what, errno);
  g_failures++;
}

static void* Reader(void*) {
  ssize_t n = read(0, g_line, sizeof g_line - 1);  // SA_RESTART: never EINTR
  if (n != 3 || memcmp(g_line, "go\n", 3) != 0) Fail("read(0) did not return \"go\\n\"");
  g_go = true;
  return nullptr;
}

static void* Sleeper(void*) {
  while (!g_go) {
    timespec req{0, 20'000'000}, rem;
    while (nanosleep(&req, &rem) != 0) {
      if (errno != EINTR) {
        Fail("nanosleep");
        return nullptr;
      }
      req = rem;  // Linux never restarts nanosleep after a handler: continue with the rest
    }
  }
  return nullptr;
}

static void* Waiter(void*) {
  while (g_futex.load() == 0) {
    long r = syscall(SYS_futex, &g_futex, FUTEX_WAIT_PRIVATE, 0, nullptr, nullptr, 0);
    if (r != 0 && errno != EAGAIN && errno != EINTR) Fail("futex wait");
  }
  return nullptr;
}

static void* Blocker(void*) {
  sigset_t all, now;
  sigfillset(&all);
  if (pthread_sigmask(SIG_SETMASK, &all, nullptr) != 0) Fail("pthread_sigmask");
  pthread_sigmask(SIG_SETMASK, nullptr, &now);
  // The program's own view is kept: it believes the park signal is blocked.
  if (sigismember(&now, SIGRTMIN + 4) != 1) Fail("mask view lost the park signal");
  volatile unsigned long spins = 0;
  while (!g_go) spins = spins + 1;
  return nullptr;
}

int main() {
  // Replacing the park signal's handler is accepted and reported back, but has no effect.
  struct sigaction sa {
  }, back{};
  sa.sa_handler = SIG_IGN;
  if (sigaction(SIGRTMIN + 4, &sa, nullptr) != 0) Fail("sigaction set");
  if (sigaction(SIGRTMIN + 4, nullptr, &back) != 0 || back.sa_handler != SIG_IGN) {
    Fail("sigaction view");
  }
  pthread_t t[4];
  pthread_create(&t[0], nullptr, Reader, nullptr);
  pthread_create(&t[1], nullptr, Sleeper, nullptr);
  pthread_create(&t[2], nullptr, Waiter, nullptr);
  pthread_create(&t[3], nullptr, Blocker, nullptr);
  printf("ready\n");
  fflush(stdout);
  unsigned long counter = 0;
  while (!g_go) {
    ++counter;
    timespec ts{0, 1'000'000};
    nanosleep(&ts, nullptr);
  }
  g_futex = 1;
  syscall(SYS_futex, &g_futex, FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
  for (pthread_t& x : t) pthread_join(x, nullptr);
  printf(g_failures == 0 ? "PASS %lu\n" : "FAIL\n", counter);
  return g_failures == 0 ? 0 : 1;
}
