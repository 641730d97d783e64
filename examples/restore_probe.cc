// restore_probe: the process state that must survive a restore, each part with its own check.
//
//   - a SIGHUP handler installed at start (SA_SIGINFO | SA_ONSTACK) that counts deliveries and
//     checks it runs on the main thread's sigaltstack; the harness sends SIGHUPs before and after
//     the migration and compares the count ("hup=N" excludes the check's own raise()).
//   - threads blocked most of the time: in nanosleep (--sleepers), in a condvar wait (--waiters),
//     in a raw FUTEX_WAIT (one), and in read() on stdin when stdin is a pipe or a tty (the harness
//     then writes lines "ping 1", "ping 2", ...; they must arrive in order: "stdin_lines=N");
//   - busy workers (--workers) that step thread-local state and compare it with a shadow;
//   - every thread keeps thread-local values derived from its index and checks them (and its
//     pthread_self() and TLS address) on every wake-up;
//   - a regular file (DIR/probe.data) written through an fd opened at start and a dup of it
//     (even records through the first, odd through the dup: one shared offset, as `cmd >log 2>&1`
//     has), one 32-byte record per check and per SIGHUP (or every --tick-ms with --file-writes
//     tick): both fds' offset and the file's bytes must be exactly records 0..n-1;
//   - a MAP_PRIVATE, writable mapping of DIR/probe.map whose odd pages were rewritten (and page 0
//     keeps being written): the mapping must hold the modified bytes, the file the original ones;
//   - a PROT_NONE reservation and a writable region with PROT_NONE guard pages at both ends: the
//     guards must still fault (probed under a SIGSEGV handler) and /proc/self/maps must say ---p;
//   - two pipes of its own (both ends held): one whose non-blocking read end keeps bytes written
//     at start unread (an event loop's self-pipe), which must still be there, exactly, with
//     O_NONBLOCK; one a thread blocks in read() on, fed a line "wake K" at every wake-up, which
//     must arrive in order, its write end still close-on-exec;
//   - an eventfd (semaphore, non-blocking) holding 7, and a dup of it that must share its
//     counter (1 added through the dup shows through the first), and an epoll instance
//     (close-on-exec) watching the unread pipe (level-triggered, data 0xab) and the eventfd
//     (edge-triggered, data 0xcd): /proc/self/fdinfo must show exactly those, and epoll_wait the
//     ready pipe;
//   - /dev/null open write-only (a daemon's): still /dev/null, still writable;
//   - a UNIX socketpair held whole, bytes queued unread in both directions (an asyncio-style
//     self-pipe): each end must still hold exactly its bytes, the pair still connected.
//
// Protocol of workload_common.h: "READY ..." once set up; SIGUSR2 prints "CHECK PASS ..." or
// "CHECK FAIL <what>" and keeps running; SIGUSR1 checks and exits; SIGTERM exits 0.
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <setjmp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <climits>
#include <cstdint>
#include <string>
#include <vector>

#include "workload_common.h"

namespace procmig::examples {
namespace {

constexpr size_t kRecordBytes = 32;
constexpr size_t kMapPages = 16;
constexpr size_t kReservePages = 16;
constexpr size_t kGuardedPages = 10;  // [0] and [9] are PROT_NONE guards
constexpr size_t kAltStackBytes = 64 << 10;
constexpr int kTlsWords = 32;

enum class Kind { kSleeper, kCondvar, kFutex, kWorker, kStdin, kPipe };

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kSleeper:
      return "nanosleep";
    case Kind::kCondvar:
      return "condvar";
    case Kind::kFutex:
      return "futex";
    case Kind::kWorker:
      return "worker";
    case Kind::kStdin:
      return "stdin-read";
    case Kind::kPipe:
      return "pipe-read";
  }
  return "?";
}

struct Slot {
  Kind kind = Kind::kWorker;
  uint32_t index = 0;
  pthread_t self{};
  const void* tls_addr = nullptr;
  uint64_t shadow_sum = 0;  // written by the thread only: the expected t_sum
  std::atomic<uint64_t> beats{0};
  std::atomic<uint64_t> eintr{0};
  std::atomic<bool> bad{false};
  char why[200] = {};
};

thread_local uint64_t t_vals[kTlsWords];
thread_local uint32_t t_index = UINT32_MAX;
thread_local uint64_t t_sum = 0;
thread_local uint64_t t_steps = 0;

uint64_t TlsValue(uint32_t index, int i) { return Mix64((uint64_t{index} << 32) | unsigned(i)); }

// The TLS array through an opaque pointer: GCC 12 at -O2 folds the loops' strength-reduced
// constants into the R_X86_64_TPOFF32 addend of `t_vals` (the link fails: relocation truncated).
uint64_t* TlsVals() {
  uint64_t* v = t_vals;
  asm("" : "+r"(v));
  return v;
}

void InitTls(Slot* s) {
  t_index = s->index;
  uint64_t* vals = TlsVals();
  for (int i = 0; i < kTlsWords; ++i) vals[i] = TlsValue(s->index, i);
  t_sum = Mix64(s->index);
  s->shadow_sum = t_sum;
  s->tls_addr = &t_vals[0];
  s->self = pthread_self();
}

// Checks this thread's TLS against its slot; false with s->why set on the first difference.
bool CheckTls(Slot* s, char* why, size_t why_len) {
  if (pthread_self() != s->self) {
    snprintf(why, why_len, "thread %u (%s): pthread_self() changed", s->index, KindName(s->kind));
    return false;
  }
  if (static_cast<const void*>(&t_vals[0]) != s->tls_addr) {
    snprintf(why, why_len, "thread %u (%s): TLS moved from %p to %p", s->index, KindName(s->kind),
             s->tls_addr, static_cast<const void*>(&t_vals[0]));
    return false;
  }
  if (t_index != s->index) {
    snprintf(why, why_len, "thread %u (%s): TLS index is %u", s->index, KindName(s->kind), t_index);
    return false;
  }
  const uint64_t* vals = TlsVals();
  for (int i = 0; i < kTlsWords; ++i) {
    if (vals[i] != TlsValue(s->index, i)) {
      snprintf(why, why_len, "thread %u (%s): TLS word %d is %" PRIx64 ", want %" PRIx64, s->index,
               KindName(s->kind), i, vals[i], TlsValue(s->index, i));
      return false;
    }
  }
  if (t_sum != s->shadow_sum) {
    snprintf(why, why_len,
             "thread %u (%s): TLS sum %" PRIx64 " after %" PRIu64 " steps, want %" PRIx64, s->index,
             KindName(s->kind), t_sum, t_steps, s->shadow_sum);
    return false;
  }
  return true;
}

// One wake-up of a thread: check its TLS, step it (and the shadow), count the beat.
void Beat(Slot* s) {
  if (!s->bad.load() && !CheckTls(s, s->why, sizeof(s->why))) s->bad.store(true);
  ++t_steps;
  t_sum = Mix64(t_sum ^ t_steps);
  s->shadow_sum = t_sum;
  s->beats.fetch_add(1);
}

// ---- shared state of the blocked threads ----
pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
uint64_t g_generation = 0;  // guarded by g_mu
std::atomic<uint32_t> g_futex{0};

// The two pipes of the process's own: [0] read end, [1] write end.
int g_unread_pipe[2] = {-1, -1};  // read end O_NONBLOCK; holds kUnread, never drained for long
int g_wake_pipe[2] = {-1, -1};    // write end O_CLOEXEC; a thread blocks in read() on it
uint64_t g_wakes_sent = 0;        // lines "wake K" written (main thread only)
int g_pair[2] = {-1, -1};         // socketpair, non-blocking; kToPair[i] queued for end i
const std::string kToPair[2] = {"queued for the socketpair's end 0\n",
                                std::string(3000, 'q') + " queued for end 1\n"};
int g_devnull = -1;      // /dev/null, write-only: reopened by path
int g_eventfd = -1;      // semaphore, non-blocking, counter kEventCount
int g_eventfd_dup = -1;  // dup(g_eventfd)
int g_epoll = -1;        // watches the unread pipe (0xab) and the eventfd (0xcd, edge-triggered)
constexpr uint64_t kEventCount = 7;
const std::string kUnread("procmig: bytes left unread in a pipe\n\0\xff\x01", 41);

void WakeBlocked() {
  char line[32];
  const int len = snprintf(line, sizeof(line), "wake %" PRIu64 "\n", ++g_wakes_sent);
  if (write(g_wake_pipe[1], line, static_cast<size_t>(len)) != len) {
    FailNow("write to the wake pipe: %s", strerror(errno));
  }
  pthread_mutex_lock(&g_mu);
  ++g_generation;
  pthread_cond_broadcast(&g_cv);
  pthread_mutex_unlock(&g_mu);
  g_futex.fetch_add(1);
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&g_futex), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
          nullptr, 0);
}

void MarkBad(Slot* s, const char* what) {
  snprintf(s->why, sizeof(s->why), "thread %u (%s): %s", s->index, KindName(s->kind), what);
  s->bad.store(true);
}

void SleeperLoop(Slot* s) {
  for (;;) {
    timespec req{0, 400'000'000}, rem{};
    while (nanosleep(&req, &rem) != 0) {
      if (errno != EINTR) return MarkBad(s, strerror(errno));
      s->eintr.fetch_add(1);
      req = rem;
    }
    Beat(s);
  }
}

void CondvarLoop(Slot* s) {
  pthread_mutex_lock(&g_mu);
  uint64_t seen = g_generation;
  for (;;) {
    while (g_generation == seen) pthread_cond_wait(&g_cv, &g_mu);
    seen = g_generation;
    pthread_mutex_unlock(&g_mu);
    Beat(s);
    pthread_mutex_lock(&g_mu);
  }
}

void FutexLoop(Slot* s) {
  uint32_t seen = g_futex.load();
  for (;;) {
    const long r = syscall(SYS_futex, reinterpret_cast<uint32_t*>(&g_futex), FUTEX_WAIT_PRIVATE,
                           seen, nullptr, nullptr, 0);
    if (r != 0) {
      if (errno == EINTR) {
        s->eintr.fetch_add(1);
      } else if (errno != EAGAIN) {
        return MarkBad(s, strerror(errno));
      }
    }
    const uint32_t now = g_futex.load();
    if (now != seen) {
      seen = now;
      Beat(s);
    }
  }
}

void WorkerLoop(Slot* s) {
  for (;;) {
    Beat(s);
    timespec req{0, 2'000'000};
    nanosleep(&req, nullptr);
  }
}

// stdin lines "ping K", K = 1, 2, ... in order.
std::atomic<uint64_t> g_stdin_lines{0};
std::atomic<bool> g_stdin_eof{false};

// Reads lines "<word> K", K = 1, 2, ... in order, from `fd` (blocking), counting them in
// *lines; end of file is the end when `eof` is given (it is set), else a failure. `what` names
// the source in messages.
void LineLoop(Slot* s, int fd, const char* word, const char* what, std::atomic<uint64_t>* lines,
              std::atomic<bool>* eof) {
  char buf[256];
  std::string line;
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) {
        s->eintr.fetch_add(1);
        continue;
      }
      return MarkBad(s, strerror(errno));
    }
    if (n == 0) {
      if (eof == nullptr) return MarkBad(s, "end of file");
      eof->store(true);
      return;
    }
    for (ssize_t i = 0; i < n; ++i) {
      if (buf[i] != '\n') {
        if (line.size() < 64) line += buf[i];
        continue;
      }
      const uint64_t want = lines->load() + 1;
      const std::string expect = std::string(word) + " " + std::to_string(want);
      if (line != expect) {
        char why[160];
        snprintf(why, sizeof(why), "%s line %" PRIu64 " is '%.40s', want '%s'", what, want,
                 line.c_str(), expect.c_str());
        return MarkBad(s, why);
      }
      line.clear();
      lines->store(want);
      Beat(s);
    }
  }
}

void StdinLoop(Slot* s) { LineLoop(s, 0, "ping", "stdin", &g_stdin_lines, &g_stdin_eof); }

// Lines "wake K" from the wake pipe, which never ends.
std::atomic<uint64_t> g_wake_lines{0};
void PipeLoop(Slot* s) { LineLoop(s, g_wake_pipe[0], "wake", "wake pipe", &g_wake_lines, nullptr); }

void* ThreadMain(void* arg) {
  Slot* s = static_cast<Slot*>(arg);
  InitTls(s);
  switch (s->kind) {
    case Kind::kSleeper:
      SleeperLoop(s);
      break;
    case Kind::kCondvar:
      CondvarLoop(s);
      break;
    case Kind::kFutex:
      FutexLoop(s);
      break;
    case Kind::kWorker:
      WorkerLoop(s);
      break;
    case Kind::kStdin:
      StdinLoop(s);
      break;
    case Kind::kPipe:
      PipeLoop(s);
      break;
  }
  return nullptr;
}

// ---- signals ----
uintptr_t g_alt_base = 0;
std::atomic<uint64_t> g_hup_total{0};
std::atomic<uint64_t> g_hup_off_stack{0};
std::atomic<uint64_t> g_hup_self{0};  // raised by the check itself

void OnHup(int, siginfo_t*, void*) {
  volatile char probe = 0;
  const uintptr_t a = reinterpret_cast<uintptr_t>(&probe);
  if (a < g_alt_base || a >= g_alt_base + kAltStackBytes) g_hup_off_stack.fetch_add(1);
  g_hup_total.fetch_add(1);
}

sigjmp_buf g_segv_jmp;
volatile uintptr_t g_segv_addr = 0;

void OnSegv(int, siginfo_t* si, void*) {
  g_segv_addr = reinterpret_cast<uintptr_t>(si->si_addr);
  siglongjmp(g_segv_jmp, 1);
}

// ---- the probe's state ----
struct Probe {
  size_t page = 4096;
  std::string data_path, map_path;
  int data_fd = -1;
  int data_dup_fd = -1;  // dup(data_fd): odd records go through it
  uint64_t records = 0;
  uint8_t* map = nullptr;
  uint64_t ticks = 0;
  uint8_t* reserve = nullptr;
  uint8_t* guarded = nullptr;
  bool stdin_reader = false;
  std::string stdin_note;
  std::vector<Slot*> slots;
};

void Record(uint64_t n, char out[kRecordBytes + 1]) {
  // "rec 0000000012 0123456789abcdef\n" = 4 + 10 + 1 + 16 + 1 bytes
  snprintf(out, kRecordBytes + 1, "rec %010" PRIu64 " %016" PRIx64 "\n",
           static_cast<uint64_t>(n % 10000000000ull), Mix64(n));
}

uint8_t MapFileByte(size_t page_index, size_t off) {
  return static_cast<uint8_t>(0x40 + page_index + (off % 7));
}
uint8_t MapModifiedByte(size_t page_index, size_t off) {
  return static_cast<uint8_t>(Mix64(page_index * 65536 + off));
}

bool WriteAll(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    c += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool ReadFile(const std::string& path, std::string* out) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[65536];
  out->clear();
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      close(fd);
      return false;
    }
    if (n == 0) break;
    out->append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return true;
}

void WriteRecord(Probe& p) {
  char rec[kRecordBytes + 1];
  Record(p.records, rec);
  if (!WriteAll(p.records % 2 == 0 ? p.data_fd : p.data_dup_fd, rec, kRecordBytes)) {
    FailNow("write record %" PRIu64 " to %s: %s", p.records, p.data_path.c_str(), strerror(errno));
  }
  ++p.records;
}

void Tick(Probe& p, bool write_record) {
  if (write_record) WriteRecord(p);
  ++p.ticks;
  memcpy(p.map + 64, &p.ticks, sizeof(p.ticks));
}

// ---- checks; each returns false with `why` set ----
bool CheckThreads(Probe& p, char* why, size_t n) {
  std::vector<uint64_t> before;
  for (Slot* s : p.slots) before.push_back(s->beats.load());
  WakeBlocked();
  const uint64_t deadline = NowNs() + 5'000'000'000ull;
  for (;;) {
    size_t stuck = p.slots.size();
    for (size_t i = 0; i < p.slots.size(); ++i) {
      if (p.slots[i]->kind == Kind::kStdin) continue;  // woken by the harness's lines only
      if (p.slots[i]->beats.load() == before[i]) {
        stuck = i;
        break;
      }
    }
    if (stuck == p.slots.size()) break;
    if (NowNs() > deadline) {
      snprintf(why, n, "thread %u (%s) did not wake up within 5 s (beats %" PRIu64 ")",
               p.slots[stuck]->index, KindName(p.slots[stuck]->kind), before[stuck]);
      return false;
    }
    SleepUntil(NowNs() + 5'000'000);
  }
  for (Slot* s : p.slots) {
    if (s->bad.load()) {
      snprintf(why, n, "%s", s->why);
      return false;
    }
    // glibc sends to the tid it cached in the thread's descriptor: after a restore with new ids
    // that cache must have been patched, or this is ESRCH (or worse, another task).
    const int rc = pthread_kill(s->self, 0);
    if (rc != 0) {
      snprintf(why, n, "pthread_kill(thread %u (%s), 0): %s", s->index, KindName(s->kind),
               strerror(rc));
      return false;
    }
  }
  return true;
}

bool CheckSignals(char* why, size_t n) {
  struct sigaction sa;
  if (sigaction(SIGHUP, nullptr, &sa) != 0 || sa.sa_sigaction != OnHup ||
      (sa.sa_flags & (SA_SIGINFO | SA_ONSTACK)) != (SA_SIGINFO | SA_ONSTACK)) {
    snprintf(why, n, "SIGHUP handler lost (handler %p flags %#x)",
             reinterpret_cast<void*>(sa.sa_sigaction), sa.sa_flags);
    return false;
  }
  stack_t ss;
  if (sigaltstack(nullptr, &ss) != 0 || reinterpret_cast<uintptr_t>(ss.ss_sp) != g_alt_base ||
      ss.ss_size != kAltStackBytes || ss.ss_flags != 0) {
    snprintf(why, n, "sigaltstack is sp %p size %zu flags %d, want %p %zu 0", ss.ss_sp, ss.ss_size,
             ss.ss_flags, reinterpret_cast<void*>(g_alt_base), kAltStackBytes);
    return false;
  }
  const uint64_t total = g_hup_total.load();
  g_hup_self.fetch_add(1);
  raise(SIGHUP);  // delivered to this thread before raise() returns
  if (g_hup_total.load() != total + 1) {
    snprintf(why, n, "raise(SIGHUP) did not run the handler (count %" PRIu64 " -> %" PRIu64 ")",
             total, g_hup_total.load());
    return false;
  }
  if (g_hup_off_stack.load() != 0) {
    snprintf(why, n, "SIGHUP handler ran off the sigaltstack %" PRIu64 " time(s)",
             g_hup_off_stack.load());
    return false;
  }
  return true;
}

bool CheckDataFile(Probe& p, char* why, size_t n) {
  for (int fd : {p.data_fd, p.data_dup_fd}) {
    const off_t pos = lseek(fd, 0, SEEK_CUR);
    if (pos != static_cast<off_t>(p.records * kRecordBytes)) {
      snprintf(why, n, "data fd %d offset %lld, want %" PRIu64 " (%" PRIu64 " records)", fd,
               static_cast<long long>(pos), p.records * kRecordBytes, p.records);
      return false;
    }
  }
  std::string content;
  if (!ReadFile(p.data_path, &content)) {
    snprintf(why, n, "read %s: %s", p.data_path.c_str(), strerror(errno));
    return false;
  }
  if (content.size() != p.records * kRecordBytes) {
    snprintf(why, n, "%s holds %zu bytes, want %" PRIu64, p.data_path.c_str(), content.size(),
             p.records * kRecordBytes);
    return false;
  }
  char rec[kRecordBytes + 1];
  for (uint64_t i = 0; i < p.records; ++i) {
    Record(i, rec);
    if (memcmp(content.data() + i * kRecordBytes, rec, kRecordBytes) != 0) {
      snprintf(why, n, "%s record %" PRIu64 " is '%.31s', want '%.31s'", p.data_path.c_str(), i,
               content.data() + i * kRecordBytes, rec);
      return false;
    }
  }
  return true;
}

std::string PathOf(const std::string& maps, uintptr_t addr);

// Pages of the private file mapping that /proc/self/maps still attributes to the file (a
// restore that moves an anonymous copy over them shows them anonymous: content right, identity
// lost). Reported, not checked: the harness decides (E2E_STRICT_MAPS).
size_t NamedMapPages(const Probe& p) {
  std::string maps;
  char real[PATH_MAX];
  if (!ReadFile("/proc/self/maps", &maps) || realpath(p.map_path.c_str(), real) == nullptr)
    return 0;
  size_t named = 0;
  for (size_t i = 0; i < kMapPages; ++i) {
    if (PathOf(maps, reinterpret_cast<uintptr_t>(p.map + i * p.page)) == real) ++named;
  }
  return named;
}

bool CheckMapping(Probe& p, char* why, size_t n) {
  std::string file;
  if (!ReadFile(p.map_path, &file) || file.size() != kMapPages * p.page) {
    snprintf(why, n, "%s: unreadable or %zu bytes", p.map_path.c_str(), file.size());
    return false;
  }
  for (size_t i = 0; i < kMapPages; ++i) {
    for (size_t off = 0; off < p.page; ++off) {
      const size_t at = i * p.page + off;
      if (static_cast<uint8_t>(file[at]) != MapFileByte(i, off)) {
        snprintf(why, n,
                 "%s changed on disk at page %zu byte %zu (a private mapping wrote through)",
                 p.map_path.c_str(), i, off);
        return false;
      }
      uint8_t want = (i % 2 == 1) ? MapModifiedByte(i, off) : MapFileByte(i, off);
      if (i == 0 && off >= 64 && off < 72) want = reinterpret_cast<uint8_t*>(&p.ticks)[off - 64];
      if (p.map[at] != want) {
        snprintf(why, n, "private mapping of %s page %zu byte %zu is %u, want %u (%s page)",
                 p.map_path.c_str(), i, off, p.map[at], want,
                 i % 2 == 1 ? "modified"
                 : i == 0   ? "ticking"
                            : "unmodified");
        return false;
      }
    }
  }
  return true;
}

// The permissions /proc/self/maps shows for the page at `addr` ("" when unmapped).
std::string PermsOf(const std::string& maps, uintptr_t addr) {
  size_t pos = 0;
  while (pos < maps.size()) {
    size_t eol = maps.find('\n', pos);
    if (eol == std::string::npos) eol = maps.size();
    unsigned long lo = 0, hi = 0;
    char perms[8] = {};
    if (sscanf(maps.c_str() + pos, "%lx-%lx %7s", &lo, &hi, perms) == 3 && addr >= lo &&
        addr < hi) {
      return perms;
    }
    pos = eol + 1;
  }
  return "";
}

// The path /proc/self/maps names for the page at `addr` ("" when anonymous or unmapped).
std::string PathOf(const std::string& maps, uintptr_t addr) {
  size_t pos = 0;
  while (pos < maps.size()) {
    size_t eol = maps.find('\n', pos);
    if (eol == std::string::npos) eol = maps.size();
    unsigned long lo = 0, hi = 0;
    int path_at = 0;
    if (sscanf(maps.c_str() + pos, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &path_at) == 2 &&
        addr >= lo && addr < hi) {
      const size_t from = pos + static_cast<size_t>(path_at);
      return from < eol ? maps.substr(from, eol - from) : "";
    }
    pos = eol + 1;
  }
  return "";
}

// True when touching `addr` faults with SIGSEGV at that address.
bool Faults(volatile uint8_t* addr) {
  struct sigaction sa, old;
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = OnSegv;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &old);
  g_segv_addr = 0;
  bool faulted = false;
  if (sigsetjmp(g_segv_jmp, 1) == 0) {
    (void)*addr;
  } else {
    faulted = g_segv_addr == reinterpret_cast<uintptr_t>(addr);
  }
  sigaction(SIGSEGV, &old, nullptr);
  return faulted;
}

bool CheckGuards(Probe& p, char* why, size_t n) {
  std::string maps;
  if (!ReadFile("/proc/self/maps", &maps)) {
    snprintf(why, n, "read /proc/self/maps: %s", strerror(errno));
    return false;
  }
  struct Want {
    uint8_t* page;
    const char* perms;
    const char* what;
  };
  std::vector<Want> wants;
  for (size_t i = 0; i < kReservePages; ++i)
    wants.push_back({p.reserve + i * p.page, "---p", "reservation"});
  for (size_t i = 0; i < kGuardedPages; ++i) {
    const bool guard = i == 0 || i == kGuardedPages - 1;
    wants.push_back({p.guarded + i * p.page, guard ? "---p" : "rw-p", guard ? "guard" : "guarded"});
  }
  for (const Want& w : wants) {
    const std::string perms = PermsOf(maps, reinterpret_cast<uintptr_t>(w.page));
    if (perms != w.perms) {
      snprintf(why, n, "%s page %p is '%s' in /proc/self/maps, want %s", w.what,
               static_cast<void*>(w.page), perms.c_str(), w.perms);
      return false;
    }
  }
  for (const Want& w : wants) {
    const bool none = strcmp(w.perms, "---p") == 0;
    // Touch the first and last byte of every PROT_NONE page; the others must not fault.
    for (uint8_t* a : {w.page, w.page + p.page - 1}) {
      if (Faults(a) != none) {
        snprintf(why, n, "%s page %p: touching %p %s", w.what, static_cast<void*>(w.page),
                 static_cast<void*>(a), none ? "did not fault" : "faulted");
        return false;
      }
    }
  }
  for (size_t i = 1; i + 1 < kGuardedPages; ++i) {
    const uint8_t* pg = p.guarded + i * p.page;
    for (size_t off = 0; off < p.page; ++off) {
      if (pg[off] != static_cast<uint8_t>(i * 31 + off)) {
        snprintf(why, n, "guarded page %zu byte %zu is %u, want %u", i, off, pg[off],
                 static_cast<uint8_t>(i * 31 + off));
        return false;
      }
    }
  }
  return true;
}

bool CheckMainTls(char* why, size_t n) {
  if (t_index != 0) {
    snprintf(why, n, "main thread TLS index is %u, want 0", t_index);
    return false;
  }
  const uint64_t* vals = TlsVals();
  for (int i = 0; i < kTlsWords; ++i) {
    if (vals[i] != TlsValue(0, i)) {
      snprintf(why, n, "main thread TLS word %d is %" PRIx64, i, vals[i]);
      return false;
    }
  }
  return true;
}

// The unread pipe still holds exactly kUnread (read out and written back), with its flags; the
// wake pipe's write end is still close-on-exec.
bool CheckPipes(char* why, size_t n) {
  const int rfl = fcntl(g_unread_pipe[0], F_GETFL);
  const int wfd = fcntl(g_wake_pipe[1], F_GETFD);
  const int ufd = fcntl(g_unread_pipe[1], F_GETFD);
  if (rfl < 0 || (rfl & O_NONBLOCK) == 0 || wfd < 0 || (wfd & FD_CLOEXEC) == 0 || ufd < 0 ||
      (ufd & FD_CLOEXEC) != 0) {
    snprintf(why, n,
             "pipe flags: unread read end 0%o, wake write end fd flags %d, unread write "
             "end fd flags %d",
             rfl, wfd, ufd);
    return false;
  }
  char buf[256];
  std::string got;
  for (;;) {
    const ssize_t r = read(g_unread_pipe[0], buf, sizeof(buf));
    if (r > 0) {
      got.append(buf, static_cast<size_t>(r));
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno != EAGAIN) {
      snprintf(why, n, "read the unread pipe: %s", strerror(errno));
      return false;
    }
    break;
  }
  if (!WriteAll(g_unread_pipe[1], kUnread.data(), kUnread.size())) {
    snprintf(why, n, "write the unread pipe back: %s", strerror(errno));
    return false;
  }
  if (got != kUnread) {
    snprintf(why, n, "the unread pipe held %zu bytes ('%.40s'), want the %zu written at start",
             got.size(), got.c_str(), kUnread.size());
    return false;
  }
  return true;
}

// Each end of the socketpair holds exactly its bytes (read out, then sent again from the other
// end, so the next check finds them too).
bool CheckPair(char* why, size_t n) {
  for (int end = 0; end < 2; ++end) {
    std::string got;
    char buf[4096];
    for (;;) {
      const ssize_t r = recv(g_pair[end], buf, sizeof(buf), 0);
      if (r > 0) {
        got.append(buf, static_cast<size_t>(r));
        continue;
      }
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 && errno != EAGAIN) {
        snprintf(why, n, "recv on socketpair end %d: %s", end, strerror(errno));
        return false;
      }
      if (r == 0) {
        snprintf(why, n, "socketpair end %d: the peer is gone", end);
        return false;
      }
      break;
    }
    if (!WriteAll(g_pair[1 - end], kToPair[end].data(), kToPair[end].size())) {
      snprintf(why, n, "send to socketpair end %d: %s", end, strerror(errno));
      return false;
    }
    if (got != kToPair[end]) {
      snprintf(why, n, "socketpair end %d held %zu bytes ('%.30s'), want %zu", end, got.size(),
               got.c_str(), kToPair[end].size());
      return false;
    }
  }
  return true;
}

// /dev/null is still /dev/null, write-only, and takes a write.
bool CheckDevNull(char* why, size_t n) {
  char target[64] = {};
  const std::string link = "/proc/self/fd/" + std::to_string(g_devnull);
  const ssize_t len = readlink(link.c_str(), target, sizeof(target) - 1);
  const int fl = fcntl(g_devnull, F_GETFL);
  if (len < 0 || std::string(target) != "/dev/null" || fl < 0 || (fl & O_ACCMODE) != O_WRONLY ||
      write(g_devnull, "x", 1) != 1) {
    snprintf(why, n, "fd %d is '%s' (flags 0%o), want /dev/null write-only and writable: %s",
             g_devnull, target, fl, strerror(errno));
    return false;
  }
  return true;
}

// The eventfd's counter and the epoll instance's items as the kernel shows them.
bool CheckEvents(char* why, size_t n) {
  std::string ev, ep;
  if (!ReadFile("/proc/self/fdinfo/" + std::to_string(g_eventfd), &ev) ||
      !ReadFile("/proc/self/fdinfo/" + std::to_string(g_epoll), &ep)) {
    snprintf(why, n, "read fdinfo of the eventfd or epoll: %s", strerror(errno));
    return false;
  }
  char want[160];
  snprintf(want, sizeof(want), "eventfd-count: %16" PRIx64 "\n", kEventCount);
  if (ev.find(want) == std::string::npos || ev.find("eventfd-semaphore: 1") == std::string::npos) {
    snprintf(why, n, "eventfd fdinfo: %.200s", ev.c_str());
    return false;
  }
  // One counter behind both descriptors: 1 added through the dup shows through the first (and
  // is taken back: a semaphore read takes 1).
  const uint64_t one = 1;
  uint64_t taken = 0;
  std::string ev2;
  snprintf(want, sizeof(want), "eventfd-count: %16" PRIx64 "\n", kEventCount + 1);
  if (!WriteAll(g_eventfd_dup, &one, sizeof one) ||
      !ReadFile("/proc/self/fdinfo/" + std::to_string(g_eventfd), &ev2) ||
      read(g_eventfd, &taken, sizeof taken) != sizeof taken || taken != 1) {
    snprintf(why, n, "eventfd dup: add 1 through fd %d and take it through fd %d: %s",
             g_eventfd_dup, g_eventfd, strerror(errno));
    return false;
  }
  if (ev2.find(want) == std::string::npos) {
    snprintf(why, n, "eventfd fd %d did not see 1 added through its dup fd %d: %.200s", g_eventfd,
             g_eventfd_dup, ev2.c_str());
    return false;
  }
  const int efl = fcntl(g_eventfd, F_GETFL), epfd = fcntl(g_epoll, F_GETFD);
  if (efl < 0 || (efl & O_NONBLOCK) == 0 || epfd < 0 || (epfd & FD_CLOEXEC) == 0) {
    snprintf(why, n, "eventfd flags 0%o, epoll fd flags %d", efl, epfd);
    return false;
  }
  int items = 0;
  for (size_t at = ep.find("tfd:"); at != std::string::npos; at = ep.find("tfd:", at + 1)) {
    int tfd = -1;
    unsigned events = 0;
    unsigned long long data = 0;
    if (sscanf(ep.c_str() + at, "tfd: %d events: %x data: %llx", &tfd, &events, &data) != 3) break;
    const bool pipe_ok = tfd == g_unread_pipe[0] && events == 0x19 && data == 0xab;
    const bool event_ok = tfd == g_eventfd && events == 0x80000019u && data == 0xcd;
    if (!pipe_ok && !event_ok) {
      snprintf(why, n, "epoll item tfd %d events %x data %llx is not one of the two", tfd, events,
               data);
      return false;
    }
    ++items;
  }
  if (items != 2) {
    snprintf(why, n, "epoll watches %d descriptors, want 2: %.200s", items, ep.c_str());
    return false;
  }
  epoll_event got[4];
  const int r = epoll_wait(g_epoll, got, 4, 0);
  bool pipe_ready = false;
  for (int i = 0; i < r; ++i) pipe_ready |= got[i].data.u64 == 0xab;
  if (!pipe_ready) {
    snprintf(why, n, "epoll_wait did not report the unread pipe (%d events)", r);
    return false;
  }
  return true;
}

bool CheckAll(Probe& p, char* detail, size_t n) {
  char why[400];
  if (!CheckMainTls(why, sizeof(why)) || !CheckThreads(p, why, sizeof(why)) ||
      !CheckSignals(why, sizeof(why)) || !CheckDataFile(p, why, sizeof(why)) ||
      !CheckMapping(p, why, sizeof(why)) || !CheckGuards(p, why, sizeof(why)) ||
      !CheckPipes(why, sizeof(why)) || !CheckEvents(why, sizeof(why)) ||
      !CheckDevNull(why, sizeof(why)) || !CheckPair(why, sizeof(why))) {
    snprintf(detail, n, "restore_probe: %s", why);
    return false;
  }
  uint64_t eintr = 0;
  for (Slot* s : p.slots) eintr += s->eintr.load();
  char stdin_part[96];
  if (p.stdin_reader) {
    snprintf(stdin_part, sizeof(stdin_part), "stdin_lines=%" PRIu64 "%s", g_stdin_lines.load(),
             g_stdin_eof.load() ? " stdin_eof=1" : "");
  } else {
    snprintf(stdin_part, sizeof(stdin_part), "stdin_lines=skipped(%s)", p.stdin_note.c_str());
  }
  snprintf(detail, n,
           "restore_probe: threads=%zu hup=%" PRIu64 " records=%" PRIu64
           " map=ok map_named=%zu/%zu guards=ok tls=ok altstack=ok pipes=ok events=ok pair=ok "
           "wakes=%" PRIu64 " %s eintr=%" PRIu64,
           p.slots.size(), g_hup_total.load() - g_hup_self.load(), p.records, NamedMapPages(p),
           kMapPages, g_wakes_sent, stdin_part, eintr);
  return true;
}

// ---- setup ----
void SetUpSignals() {
  void* alt =
      mmap(nullptr, kAltStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (alt == MAP_FAILED) FailNow("mmap sigaltstack: %s", strerror(errno));
  g_alt_base = reinterpret_cast<uintptr_t>(alt);
  stack_t ss{};
  ss.ss_sp = alt;
  ss.ss_size = kAltStackBytes;
  if (sigaltstack(&ss, nullptr) != 0) FailNow("sigaltstack: %s", strerror(errno));
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = OnHup;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGHUP, &sa, nullptr) != 0) FailNow("sigaction SIGHUP: %s", strerror(errno));
}

void SetUpFiles(Probe& p, const char* dir) {
  p.data_path = std::string(dir) + "/probe.data";
  p.map_path = std::string(dir) + "/probe.map";
  p.data_fd = open(p.data_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (p.data_fd < 0) FailNow("open %s: %s", p.data_path.c_str(), strerror(errno));
  p.data_dup_fd = fcntl(p.data_fd, F_DUPFD_CLOEXEC, 0);
  if (p.data_dup_fd < 0) FailNow("dup the data fd: %s", strerror(errno));
  std::string content(kMapPages * p.page, '\0');
  for (size_t i = 0; i < kMapPages; ++i) {
    for (size_t off = 0; off < p.page; ++off) {
      content[i * p.page + off] = static_cast<char>(MapFileByte(i, off));
    }
  }
  const int mfd = open(p.map_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (mfd < 0 || !WriteAll(mfd, content.data(), content.size())) {
    FailNow("write %s: %s", p.map_path.c_str(), strerror(errno));
  }
  void* m = mmap(nullptr, content.size(), PROT_READ | PROT_WRITE, MAP_PRIVATE, mfd, 0);
  if (m == MAP_FAILED) FailNow("mmap %s: %s", p.map_path.c_str(), strerror(errno));
  close(mfd);  // the mapping keeps the file; only the mapping must survive
  p.map = static_cast<uint8_t*>(m);
  for (size_t i = 1; i < kMapPages; i += 2) {
    for (size_t off = 0; off < p.page; ++off) p.map[i * p.page + off] = MapModifiedByte(i, off);
  }
}

void SetUpGuards(Probe& p) {
  void* r = mmap(nullptr, kReservePages * p.page, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (r == MAP_FAILED) FailNow("mmap PROT_NONE reservation: %s", strerror(errno));
  p.reserve = static_cast<uint8_t*>(r);
  void* g = mmap(nullptr, kGuardedPages * p.page, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (g == MAP_FAILED) FailNow("mmap guarded region: %s", strerror(errno));
  p.guarded = static_cast<uint8_t*>(g);
  for (size_t i = 1; i + 1 < kGuardedPages; ++i) {
    for (size_t off = 0; off < p.page; ++off) {
      p.guarded[i * p.page + off] = static_cast<uint8_t>(i * 31 + off);
    }
  }
  if (mprotect(p.guarded, p.page, PROT_NONE) != 0 ||
      mprotect(p.guarded + (kGuardedPages - 1) * p.page, p.page, PROT_NONE) != 0) {
    FailNow("mprotect guard pages: %s", strerror(errno));
  }
}

void SetUpPipes() {
  if (pipe2(g_unread_pipe, 0) != 0 || pipe2(g_wake_pipe, 0) != 0 ||
      fcntl(g_unread_pipe[0], F_SETFL, O_NONBLOCK) != 0 ||
      fcntl(g_wake_pipe[1], F_SETFD, FD_CLOEXEC) != 0) {
    FailNow("set up the pipes: %s", strerror(errno));
  }
  if (!WriteAll(g_unread_pipe[1], kUnread.data(), kUnread.size())) {
    FailNow("write the unread pipe: %s", strerror(errno));
  }
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, g_pair) != 0) {
    FailNow("socketpair: %s", strerror(errno));
  }
  for (int end = 0; end < 2; ++end) {
    if (!WriteAll(g_pair[1 - end], kToPair[end].data(), kToPair[end].size())) {
      FailNow("send to the socketpair: %s", strerror(errno));
    }
  }
  g_eventfd = eventfd(0, EFD_SEMAPHORE | EFD_NONBLOCK);
  g_epoll = epoll_create1(EPOLL_CLOEXEC);
  if (g_eventfd < 0 || g_epoll < 0) FailNow("eventfd/epoll_create1: %s", strerror(errno));
  g_devnull = open("/dev/null", O_WRONLY);
  if (g_devnull < 0) FailNow("open /dev/null: %s", strerror(errno));
  g_eventfd_dup = dup(g_eventfd);
  if (g_eventfd_dup < 0) FailNow("dup the eventfd: %s", strerror(errno));
  if (!WriteAll(g_eventfd, &kEventCount, sizeof(kEventCount))) {
    FailNow("write the eventfd: %s", strerror(errno));
  }
  epoll_event e{};
  e.events = EPOLLIN;
  e.data.u64 = 0xab;
  if (epoll_ctl(g_epoll, EPOLL_CTL_ADD, g_unread_pipe[0], &e) != 0) {
    FailNow("epoll_ctl the pipe: %s", strerror(errno));
  }
  e.events = EPOLLIN | EPOLLET;
  e.data.u64 = 0xcd;
  if (epoll_ctl(g_epoll, EPOLL_CTL_ADD, g_eventfd, &e) != 0) {
    FailNow("epoll_ctl the eventfd: %s", strerror(errno));
  }
}

void StartThreads(Probe& p, uint64_t sleepers, uint64_t waiters, uint64_t workers) {
  struct stat st;
  if (fstat(0, &st) != 0) {
    p.stdin_note = "no-stdin";
  } else if (S_ISFIFO(st.st_mode) || isatty(0)) {
    p.stdin_reader = true;
  } else {
    p.stdin_note = S_ISCHR(st.st_mode) ? "stdin-is-a-device" : "stdin-is-not-a-pipe";
  }
  std::vector<Kind> kinds;
  for (uint64_t i = 0; i < sleepers; ++i) kinds.push_back(Kind::kSleeper);
  for (uint64_t i = 0; i < waiters; ++i) kinds.push_back(Kind::kCondvar);
  kinds.push_back(Kind::kFutex);
  for (uint64_t i = 0; i < workers; ++i) kinds.push_back(Kind::kWorker);
  if (p.stdin_reader) kinds.push_back(Kind::kStdin);
  kinds.push_back(Kind::kPipe);
  // Only the main thread takes SIGHUP (it has the sigaltstack): block it around the creations,
  // so every other thread starts with it blocked.
  sigset_t hup, old;
  sigemptyset(&hup);
  sigaddset(&hup, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &hup, &old);
  for (size_t i = 0; i < kinds.size(); ++i) {
    Slot* s = new Slot;
    s->kind = kinds[i];
    s->index = static_cast<uint32_t>(i + 1);
    p.slots.push_back(s);
    pthread_t t;
    const int rc = pthread_create(&t, nullptr, ThreadMain, s);
    if (rc != 0) FailNow("pthread_create: %s", strerror(rc));
    pthread_detach(t);
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  // Each thread sets its TLS before its first beat; wait until all did.
  for (Slot* s : p.slots) {
    while (s->tls_addr == nullptr) SleepUntil(NowNs() + 1'000'000);
  }
}

int Main(int argc, char** argv) {
  InstallCheckHandlers();
  Probe p;
  p.page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const char* dir = FlagStr(argc, argv, "--dir", ".");
  const uint64_t sleepers = FlagU64(argc, argv, "--sleepers", 2);
  const uint64_t waiters = FlagU64(argc, argv, "--waiters", 2);
  const uint64_t workers = FlagU64(argc, argv, "--workers", 4);
  t_index = 0;
  uint64_t* vals = TlsVals();
  for (int i = 0; i < kTlsWords; ++i) vals[i] = TlsValue(0, i);
  SetUpSignals();
  SetUpFiles(p, dir);
  SetUpGuards(p);
  SetUpPipes();
  StartThreads(p, sleepers, waiters, workers);
  // The data file gets a record per check request and per SIGHUP seen ("--file-writes check",
  // the default: nothing is written while the harness migrates, so the file and the fd offset
  // are exactly comparable), or one every tick ("tick": writes race with the migration's stop).
  const bool tick_writes = strcmp(FlagStr(argc, argv, "--file-writes", "check"), "tick") == 0;
  // One page-0 write per tick (--tick-ms).
  const uint64_t tick_ns = std::max<uint64_t>(FlagU64(argc, argv, "--tick-ms", 20), 1) * 1'000'000;
  WriteRecord(p);
  Say("READY pid=%d threads=%zu stdin=%s file_writes=%s data=%s map=%s map_addr=0x%" PRIxPTR
      " reserve=0x%" PRIxPTR " guarded=0x%" PRIxPTR,
      getpid(), p.slots.size(), p.stdin_reader ? "reader" : p.stdin_note.c_str(),
      tick_writes ? "tick" : "check", p.data_path.c_str(), p.map_path.c_str(),
      reinterpret_cast<uintptr_t>(p.map), reinterpret_cast<uintptr_t>(p.reserve),
      reinterpret_cast<uintptr_t>(p.guarded));
  uint64_t next = NowNs() + tick_ns;
  uint64_t hups_seen = g_hup_total.load();
  char detail[600];
  for (;;) {
    const CheckRequest req = CheckRequested();
    if (req == CheckRequest::kQuit) _exit(0);
    if (req != CheckRequest::kNone) {
      WriteRecord(p);
      const bool ok = CheckAll(p, detail, sizeof(detail));
      ReportCheck(req, ok, detail);
    }
    if (g_hup_total.load() != hups_seen) {
      hups_seen = g_hup_total.load();
      WriteRecord(p);
    }
    SleepUntil(next);
    next += tick_ns;
    if (NowNs() > next + 1'000'000'000ull) next = NowNs() + tick_ns;  // after a long park
    Tick(p, tick_writes);
    if (p.ticks % (1'000'000'000 / tick_ns + 1) == 0) WakeBlocked();  // about once a second
  }
}

}  // namespace
}  // namespace procmig::examples

int main(int argc, char** argv) { return procmig::examples::Main(argc, argv); }
