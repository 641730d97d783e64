// Shared plumbing of the ZDTM-style workloads in examples/: the ready signal, the check triggers,
// pacing and a small PRNG. Header-only so every workload stays one self-contained binary.
//
// Protocol every workload follows (tests/e2e/ relies on it):
//   - once its state is set up it prints one line "READY key=value ..." to stdout (and, if the
//     environment names a file in WORKLOAD_READY_FILE, writes the same line there);
//   - SIGUSR1, or the file named by WORKLOAD_CHECK_FILE appearing: check the whole state, print
//     "PASS ..." or "FAIL ..." and exit 0 or 1;
//   - SIGUSR2: check the whole state, print "CHECK PASS ..." or "CHECK FAIL ..." and keep running
//     (used after a failed migration, to prove the source was left unharmed);
//   - SIGTERM/SIGINT: exit 0 without checking;
//   - a violation seen by the cheap continuous self-checks prints "FAIL ..." and exits 1 at once.
// The signal handlers only set flags; the workload's main loop polls CheckRequested(). Say() and
// FailNow() may be called from any thread (stdio locks); exits are _exit() after a flush so a
// workload's other threads are never torn down under it by static destructors.
#ifndef PROCMIG_EXAMPLES_WORKLOAD_COMMON_H_
#define PROCMIG_EXAMPLES_WORKLOAD_COMMON_H_

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <initializer_list>

namespace procmig::examples {

enum class CheckRequest { kNone, kCheckAndExit, kCheckAndContinue, kQuit };

namespace internal {
// Written only by signal handlers, read by the main loop: lock-free sig_atomic_t by design.
inline volatile sig_atomic_t g_exit_check = 0;
inline volatile sig_atomic_t g_continue_check = 0;
inline volatile sig_atomic_t g_quit = 0;

inline void OnSignal(int sig) {
  if (sig == SIGUSR1) g_exit_check = 1;
  if (sig == SIGUSR2) g_continue_check = 1;
  if (sig == SIGTERM || sig == SIGINT) g_quit = 1;
}
}  // namespace internal

// Installs the handlers. SA_RESTART so the workload's own blocking calls are not disturbed by
// the harness's signals (the migration agent's park signal is its own business).
inline void InstallCheckHandlers() {
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = internal::OnSignal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGUSR1, SIGUSR2, SIGTERM, SIGINT}) sigaction(sig, &sa, nullptr);
}

// Polled by the main loop; each request is reported once.
inline CheckRequest CheckRequested() {
  if (internal::g_quit) return CheckRequest::kQuit;
  if (internal::g_exit_check) return CheckRequest::kCheckAndExit;
  if (internal::g_continue_check) {
    internal::g_continue_check = 0;
    return CheckRequest::kCheckAndContinue;
  }
  static const char* check_file = getenv("WORKLOAD_CHECK_FILE");
  if (check_file != nullptr && access(check_file, F_OK) == 0) return CheckRequest::kCheckAndExit;
  return CheckRequest::kNone;
}

// Prints one line to stdout (flushed) and, for READY, to WORKLOAD_READY_FILE.
inline void Say(const char* fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  fprintf(stdout, "%s\n", line);
  fflush(stdout);
  if (strncmp(line, "READY", 5) == 0) {
    if (const char* f = getenv("WORKLOAD_READY_FILE")) {
      if (FILE* out = fopen(f, "w")) {
        fprintf(out, "%s\n", line);
        fclose(out);
      }
    }
  }
}

// Reports the outcome of a check and, for kCheckAndExit, exits with 0 (pass) or 1 (fail).
inline void ReportCheck(CheckRequest req, bool ok, const char* detail) {
  if (req == CheckRequest::kCheckAndContinue) {
    Say("CHECK %s %s", ok ? "PASS" : "FAIL", detail);
    return;
  }
  Say("%s %s", ok ? "PASS" : "FAIL", detail);
  _exit(ok ? 0 : 1);
}

// A violation seen while running: nothing more to learn by continuing.
[[noreturn]] inline void FailNow(const char* fmt, ...) {
  char line[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  Say("FAIL %s", line);
  _exit(1);
}

inline uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// Sleeps until `deadline_ns` on CLOCK_MONOTONIC. Absolute, so an interrupted sleep (the agent's
// park signal) simply resumes toward the same instant.
inline void SleepUntil(uint64_t deadline_ns) {
  timespec ts;
  ts.tv_sec = static_cast<time_t>(deadline_ns / 1000000000ull);
  ts.tv_nsec = static_cast<long>(deadline_ns % 1000000000ull);
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) != 0) {
  }
}

// Paces work to `units_per_s` (0 = unpaced): call Tick() after each unit. Sleeps at most every
// millisecond's worth of units so a slow rate does not turn into a busy loop.
class Pacer {
 public:
  explicit Pacer(double units_per_s) : rate_(units_per_s), start_(NowNs()) {}
  void Tick(uint64_t units = 1) {
    if (rate_ <= 0) return;
    done_ += units;
    const uint64_t due = start_ + static_cast<uint64_t>(static_cast<double>(done_) * 1e9 / rate_);
    const uint64_t now = NowNs();
    if (due > now + 1000000) SleepUntil(due);
    // After a long stall (the program was parked) do not burst to catch up.
    if (now > due + 200000000ull) {
      start_ = now;
      done_ = 0;
    }
  }

 private:
  double rate_;
  uint64_t start_;
  uint64_t done_ = 0;
};

// SplitMix64: tiny, fast, good enough to derive contents from (id, generation, index).
inline uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t Next() { return Mix64(s_++); }
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : Next() % n; }

 private:
  uint64_t s_;
};

// "--name=value" or "--name value" as an unsigned number; returns `def` when absent. Exits 2 on
// a malformed value so a typo in a test never becomes a default.
inline uint64_t FlagU64(int argc, char** argv, const char* name, uint64_t def) {
  const size_t n = strlen(name);
  for (int i = 1; i < argc; ++i) {
    const char* v = nullptr;
    if (strncmp(argv[i], name, n) == 0 && argv[i][n] == '=') v = argv[i] + n + 1;
    if (strcmp(argv[i], name) == 0 && i + 1 < argc) v = argv[i + 1];
    if (v == nullptr) continue;
    char* end = nullptr;
    const unsigned long long x = strtoull(v, &end, 0);
    if (end == v || *end != '\0') {
      fprintf(stderr, "bad value for %s: %s\n", name, v);
      exit(2);
    }
    return x;
  }
  return def;
}

inline const char* FlagStr(int argc, char** argv, const char* name, const char* def) {
  const size_t n = strlen(name);
  for (int i = 1; i < argc; ++i) {
    if (strncmp(argv[i], name, n) == 0 && argv[i][n] == '=') return argv[i] + n + 1;
    if (strcmp(argv[i], name) == 0 && i + 1 < argc) return argv[i + 1];
  }
  return def;
}

}  // namespace procmig::examples

#endif  // PROCMIG_EXAMPLES_WORKLOAD_COMMON_H_
