// ScanWindow against real memory and real faults: the exact count of leading zero pages, the
// exact pages an in-place copy lands, a read of memory that is gone ending the scan or the copy
// (not the process), and the program's own SIGSEGV action still doing what it did for faults of
// other threads while a window is open (handler called with its siginfo, SA_RESETHAND honoured,
// the default action killing the process), and put back exactly when the window closes, also in
// the child of a fork made while one was open.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

#include "base/crc32c.h"
#include "codec/zero_page.h"
#include "os/fault_guard.h"

namespace procmig {
namespace {

size_t PageSize() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

uint8_t* MapPages(size_t pages) {
  void* p =
      mmap(nullptr, pages * PageSize(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(p != MAP_FAILED);
  return static_cast<uint8_t*>(p);
}

TEST_CASE("leading zero pages are counted in place, up to the first byte of data") {
  const size_t ps = PageSize();
  uint8_t* p = MapPages(16);
  std::memset(p, 0, 16 * ps);  // touched: real pages of zeros
  p[5 * ps + ps - 1] = 1;      // the last byte of page 5
  p[9 * ps] = 3;
  ScanWindow w;
  REQUIRE(w.open());
  const auto a = reinterpret_cast<uintptr_t>(p);
  CHECK(w.LeadingZeroPages(a, 16, ps, IsZeroPage) == 5u);
  CHECK(w.LeadingZeroPages(a, 4, ps, IsZeroPage) == 4u);
  CHECK(w.LeadingZeroPages(a + 5 * ps, 11, ps, IsZeroPage) == 0u);
  CHECK(w.LeadingZeroPages(a + 6 * ps, 10, ps, IsZeroPage) == 3u);
  CHECK(w.LeadingZeroPages(a + 10 * ps, 6, ps, IsZeroPage) == 6u);
  CHECK(w.LeadingZeroPages(a, 0, ps, IsZeroPage) == 0u);
  munmap(p, 16 * ps);
}

TEST_CASE("a scan into memory that is gone or unreadable reports the fault and goes on") {
  const size_t ps = PageSize();
  uint8_t* p = MapPages(8);
  std::memset(p, 0, 8 * ps);
  REQUIRE(mprotect(p + 3 * ps, ps, PROT_NONE) == 0);
  REQUIRE(munmap(p + 6 * ps, 2 * ps) == 0);
  const auto a = reinterpret_cast<uintptr_t>(p);
  const uint64_t before = ScanWindow::recovered_faults();
  {
    ScanWindow w;
    REQUIRE(w.open());
    CHECK_FALSE(w.LeadingZeroPages(a, 8, ps, IsZeroPage).has_value());
    CHECK(w.LeadingZeroPages(a, 3, ps, IsZeroPage) == 3u);  // the window still works after a fault
    CHECK_FALSE(w.LeadingZeroPages(a + 4 * ps, 4, ps, IsZeroPage).has_value());
    CHECK(w.LeadingZeroPages(a + 4 * ps, 2, ps, IsZeroPage) == 2u);
  }
  CHECK(ScanWindow::recovered_faults() == before + 2);
  munmap(p, 6 * ps);
}

TEST_CASE("pages are copied in place until the end or the first page that faults") {
  const size_t ps = PageSize();
  uint8_t* p = MapPages(8);
  for (size_t i = 0; i < 8 * ps; ++i) p[i] = static_cast<uint8_t>(i * 7 + i / ps);
  REQUIRE(mprotect(p + 5 * ps, ps, PROT_NONE) == 0);
  const auto a = reinterpret_cast<uintptr_t>(p);
  std::vector<uint8_t> out(8 * ps, 0xee);
  const uint64_t before = ScanWindow::recovered_faults();
  {
    ScanWindow w;
    REQUIRE(w.open());
    bool faulted = true;
    CHECK(w.CopyPages(a, 5, ps, out.data(), &faulted) == 5u);
    CHECK_FALSE(faulted);
    CHECK(std::memcmp(out.data(), p, 5 * ps) == 0);
    std::fill(out.begin(), out.end(), 0xee);
    // From page 2: pages 2, 3 and 4 land, page 5 faults; nothing past them is written.
    CHECK(w.CopyPages(a + 2 * ps, 6, ps, out.data(), &faulted) == 3u);
    CHECK(faulted);
    CHECK(std::memcmp(out.data(), p + 2 * ps, 3 * ps) == 0);
    CHECK(std::all_of(out.begin() + 4 * ps, out.end(), [](uint8_t b) { return b == 0xee; }));
    // The window works on after the fault.
    CHECK(w.CopyPages(a + 6 * ps, 2, ps, out.data(), &faulted) == 2u);
    CHECK_FALSE(faulted);
    CHECK(std::memcmp(out.data(), p + 6 * ps, 2 * ps) == 0);
    CHECK(w.CopyPages(a, 0, ps, out.data(), &faulted) == 0u);
    CHECK_FALSE(faulted);
    // With crcs: those of the pages copied whole, nothing written past them.
    std::fill(out.begin(), out.end(), 0xee);
    std::vector<uint32_t> crcs(6, 0xdeadbeef);
    CHECK(w.CopyPages(a + 2 * ps, 6, ps, out.data(), &faulted, crcs.data()) == 3u);
    CHECK(faulted);
    CHECK(std::memcmp(out.data(), p + 2 * ps, 3 * ps) == 0);
    for (size_t k = 0; k < 3; ++k) CHECK(crcs[k] == crc32c::Value(p + (2 + k) * ps, ps));
    CHECK(std::all_of(crcs.begin() + 3, crcs.end(), [](uint32_t c) { return c == 0xdeadbeef; }));
    CHECK(std::all_of(out.begin() + 3 * ps, out.end(), [](uint8_t b) { return b == 0xee; }));
  }
  CHECK(ScanWindow::recovered_faults() == before + 2);
  ScanWindow a1;
  REQUIRE(a1.open());
  ScanWindow closed;  // a second window never opens: it copies nothing and says so
  bool faulted = false;
  CHECK(closed.CopyPages(a, 1, ps, out.data(), &faulted) == 0u);
  CHECK(faulted);
  munmap(p, 8 * ps);
}

TEST_CASE("a zero bitmap marks exactly the all-zero pages, up to the first page that faults") {
  const size_t ps = PageSize();
  uint8_t* p = MapPages(70);
  std::memset(p, 0, 70 * ps);
  for (size_t k : {1, 2, 5, 63, 64, 66}) p[k * ps + (k * 37) % ps] = static_cast<uint8_t>(k);
  const auto a = reinterpret_cast<uintptr_t>(p);
  ScanWindow w;
  REQUIRE(w.open());
  std::vector<uint64_t> bits(2, ~uint64_t{0});
  bool faulted = true;
  CHECK(w.ZeroBitmap(a, 68, ps, IsZeroPage, bits.data(), &faulted) == 68u);
  CHECK_FALSE(faulted);
  for (size_t k = 0; k < 128; ++k) {
    const bool want = k < 68 && k != 1 && k != 2 && k != 5 && k != 63 && k != 64 && k != 66;
    CHECK_MESSAGE(((bits[k / 64] >> (k % 64)) & 1) == (want ? 1u : 0u), "page ", k);
  }
  REQUIRE(mprotect(p + 66 * ps, ps, PROT_NONE) == 0);
  const uint64_t before = ScanWindow::recovered_faults();
  CHECK(w.ZeroBitmap(a + 60 * ps, 10, ps, IsZeroPage, bits.data(), &faulted) == 6u);
  CHECK(faulted);
  CHECK(bits[0] == 0b100111u);  // bit i: page 60 + i; 60, 61, 62 and 65 are zero, 63 and 64 not
  CHECK(ScanWindow::recovered_faults() == before + 1);
  munmap(p, 70 * ps);
}

TEST_CASE("one window per thread, and at most kMaxOpen at once") {
  ScanWindow a;
  REQUIRE(a.open());
  ScanWindow b;  // the same thread
  CHECK_FALSE(b.open());
  CHECK_FALSE(b.LeadingZeroPages(0, 1, PageSize(), IsZeroPage).has_value());
  static_assert(ScanWindow::kMaxOpen == 2);
  std::atomic<int> stage{0};
  bool second_open = false, third_open = true;
  std::thread second([&] {
    ScanWindow w;
    second_open = w.open();
    stage.store(1);
    while (stage.load() != 2) usleep(1000);
  });
  while (stage.load() != 1) usleep(1000);
  std::thread third([&] { third_open = ScanWindow().open(); });
  third.join();
  stage.store(2);
  second.join();
  CHECK(second_open);
  CHECK_FALSE(third_open);
  std::thread again([&] { third_open = ScanWindow().open(); });  // the second's slot is free
  again.join();
  CHECK(third_open);
}

// Two threads scan at once (the sender and its bulk-stage helper), each into memory that faults:
// each fault goes back to the window of the thread that took it. The window's handler stays in
// until the last window closes, then the program's action is back.
TEST_CASE("two threads' windows: each recovers its own faults; the last to close puts back") {
  const size_t ps = PageSize();
  uint8_t* p = MapPages(4);
  std::memset(p, 0, 4 * ps);
  REQUIRE(mprotect(p + 2 * ps, 2 * ps, PROT_NONE) == 0);
  const auto a = reinterpret_cast<uintptr_t>(p);
  struct sigaction prog = {};
  prog.sa_handler = SIG_IGN;
  struct sigaction saved;
  REQUIRE(sigaction(SIGSEGV, &prog, &saved) == 0);
  const uint64_t before = ScanWindow::recovered_faults();
  std::atomic<int> stage{0};
  std::optional<uint64_t> helper_full, helper_part;
  std::thread helper([&] {
    ScanWindow w;
    REQUIRE(w.open());
    stage.store(1);
    while (stage.load() != 2) usleep(1000);
    for (int i = 0; i < 200; ++i) helper_full = w.LeadingZeroPages(a, 4, ps, IsZeroPage);
    helper_part = w.LeadingZeroPages(a, 2, ps, IsZeroPage);
    stage.store(3);
    while (stage.load() != 4) usleep(1000);
  });
  std::optional<uint64_t> mine_full, mine_part;
  {
    while (stage.load() != 1) usleep(1000);
    ScanWindow w;
    REQUIRE(w.open());
    stage.store(2);  // both fault at once, 200 times each
    for (int i = 0; i < 200; ++i) mine_full = w.LeadingZeroPages(a + ps, 3, ps, IsZeroPage);
    mine_part = w.LeadingZeroPages(a + ps, 1, ps, IsZeroPage);
    while (stage.load() != 3) usleep(1000);
  }
  // This thread's window is closed, the helper's still open: its handler is still in.
  struct sigaction now;
  REQUIRE(sigaction(SIGSEGV, nullptr, &now) == 0);
  CHECK((now.sa_flags & SA_SIGINFO) != 0);
  CHECK(reinterpret_cast<uintptr_t>(now.sa_handler) != reinterpret_cast<uintptr_t>(SIG_IGN));
  stage.store(4);
  helper.join();
  REQUIRE(sigaction(SIGSEGV, nullptr, &now) == 0);
  CHECK(reinterpret_cast<uintptr_t>(now.sa_handler) == reinterpret_cast<uintptr_t>(SIG_IGN));
  CHECK_FALSE(helper_full.has_value());
  CHECK_FALSE(mine_full.has_value());
  CHECK(helper_part == 2u);
  CHECK(mine_part == 1u);
  CHECK(ScanWindow::recovered_faults() == before + 400);
  sigaction(SIGSEGV, &saved, nullptr);
  munmap(p, 4 * ps);
}

std::atomic<int> g_calls{0};
std::atomic<void*> g_addr{nullptr};
uint8_t* g_fix = nullptr;

void ProgramHandler(int sig, siginfo_t* info, void*) {
  g_calls.fetch_add(1);
  g_addr.store(info->si_addr);
  CHECK(sig == SIGSEGV);
  mprotect(g_fix, PageSize(), PROT_READ | PROT_WRITE);  // the faulting read then succeeds
}

// Makes page p unreadable and installs ProgramHandler for SIGSEGV with SA_SIGINFO | `flags`,
// SIGUSR2 in its mask; returns the action it replaced.
struct sigaction ArmProgramHandler(uint8_t* p, int flags) {
  REQUIRE(mprotect(p, PageSize(), PROT_NONE) == 0);
  g_fix = p;
  g_calls = 0;
  struct sigaction prog = {};
  prog.sa_sigaction = &ProgramHandler;
  prog.sa_flags = SA_SIGINFO | flags;
  sigemptyset(&prog.sa_mask);
  sigaddset(&prog.sa_mask, SIGUSR2);
  struct sigaction saved;
  REQUIRE(sigaction(SIGSEGV, &prog, &saved) == 0);
  return saved;
}

TEST_CASE("a program thread's fault while a window is open reaches the program's handler") {
  const size_t ps = PageSize();
  uint8_t* p = MapPages(1);
  p[100] = 42;
  const struct sigaction saved = ArmProgramHandler(p, SA_RESTART);
  int value = 0;
  {
    ScanWindow w;
    REQUIRE(w.open());
    std::thread t([&] { value = *static_cast<volatile uint8_t*>(p + 100); });
    t.join();
  }
  CHECK(value == 42);
  CHECK(g_calls.load() == 1);
  CHECK(g_addr.load() == p + 100);
  struct sigaction now;
  REQUIRE(sigaction(SIGSEGV, nullptr, &now) == 0);
  CHECK(reinterpret_cast<uintptr_t>(now.sa_sigaction) ==
        reinterpret_cast<uintptr_t>(&ProgramHandler));
  constexpr int kRestorer = 0x04000000;  // SA_RESTORER: libc adds it, not the program
  CHECK((now.sa_flags & ~kRestorer) == (SA_SIGINFO | SA_RESTART));
  CHECK(sigismember(&now.sa_mask, SIGUSR2) == 1);
  sigaction(SIGSEGV, &saved, nullptr);
  munmap(p, ps);
}

TEST_CASE("SA_RESETHAND: the program's handler runs once and the default action is back") {
  const size_t ps = PageSize();
  uint8_t* p = MapPages(1);
  const struct sigaction saved = ArmProgramHandler(p, SA_RESETHAND);
  {
    ScanWindow w;
    REQUIRE(w.open());
    std::thread t([&] { (void)*static_cast<volatile uint8_t*>(p); });
    t.join();
  }
  CHECK(g_calls.load() == 1);
  struct sigaction now;
  REQUIRE(sigaction(SIGSEGV, nullptr, &now) == 0);
  CHECK(reinterpret_cast<uintptr_t>(now.sa_handler) == reinterpret_cast<uintptr_t>(SIG_DFL));
  sigaction(SIGSEGV, &saved, nullptr);
  munmap(p, ps);
}

// In a child: a window open in one thread, a fault in another, SIGSEGV at its default action.
int FaultInChild(bool kill_instead) {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    signal(SIGSEGV, SIG_DFL);
    uint8_t* p = static_cast<uint8_t*>(
        mmap(nullptr, PageSize(), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    ScanWindow w;
    if (!w.open()) _exit(3);
    std::thread t([&] {
      if (kill_instead) {
        raise(SIGSEGV);  // a signal sent, not a fault: it must be sent again
      } else {
        (void)*static_cast<volatile uint8_t*>(p);
      }
    });
    t.join();
    _exit(0);  // not reached when the default action killed the process
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  return status;
}

TEST_CASE("the default action of SIGSEGV still kills the process while a window is open") {
  int status = FaultInChild(false);
  CHECK(WIFSIGNALED(status));
  if (WIFSIGNALED(status)) CHECK(WTERMSIG(status) == SIGSEGV);
  status = FaultInChild(true);
  CHECK(WIFSIGNALED(status));
  if (WIFSIGNALED(status)) CHECK(WTERMSIG(status) == SIGSEGV);
}

// Two threads taking turns could keep a window open all the time: while a program thread waits
// in sigaction, no new window opens, so it gets through as soon as the open one closes.
TEST_CASE("no window opens while the program waits to change SIGSEGV's action") {
  std::atomic<int> stage{0};
  std::thread holder([&] {
    ScanWindow w;
    REQUIRE(w.open());
    stage.store(1);
    while (stage.load() != 2) usleep(1000);
  });
  while (stage.load() != 1) usleep(1000);
  std::atomic<bool> done{false};
  std::thread program([&] {
    struct sigaction now;
    REQUIRE(ProgramSigaction(SIGSEGV, nullptr, &now) == 0);
    done.store(true);
  });
  for (int i = 0; i < 10000 && ScanWindow::program_waiting() == 0; ++i) usleep(1000);
  REQUIRE(ScanWindow::program_waiting() == 1);
  CHECK_FALSE(done.load());
  bool opened = true;
  std::thread other([&] { opened = ScanWindow().open(); });
  other.join();
  CHECK_FALSE(opened);
  stage.store(2);
  holder.join();
  program.join();
  CHECK(done.load());
  std::thread after([&] { opened = ScanWindow().open(); });
  after.join();
  CHECK(opened);
}

TEST_CASE("the program's sigaction for SIGSEGV goes through and its action survives windows") {
  struct sigaction prog = {};
  prog.sa_handler = SIG_IGN;
  struct sigaction old;
  REQUIRE(ProgramSigaction(SIGSEGV, &prog, &old) == 0);
  { ScanWindow w; }
  struct sigaction now;
  REQUIRE(ProgramSigaction(SIGSEGV, nullptr, &now) == 0);
  CHECK(reinterpret_cast<uintptr_t>(now.sa_handler) == reinterpret_cast<uintptr_t>(SIG_IGN));
  REQUIRE(ProgramSigaction(SIGSEGV, &old, nullptr) == 0);
}

TEST_CASE("a fork while another thread holds a window open: the child has it closed") {
  ScanWindow::InstallForkHandler();
  struct sigaction prog = {};
  prog.sa_handler = SIG_IGN;
  struct sigaction saved;
  REQUIRE(sigaction(SIGBUS, &prog, &saved) == 0);
  std::atomic<int> stage{0};
  std::thread holder([&] {
    ScanWindow w;
    stage.store(w.open() ? 1 : 2);
    while (stage.load() != 3) usleep(1000);
  });
  while (stage.load() == 0) usleep(1000);
  REQUIRE(stage.load() == 1);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    alarm(10);  // an open window would make the sigaction below wait forever
    struct sigaction now;
    if (ProgramSigaction(SIGBUS, nullptr, &now) != 0) _exit(2);
    // The program's action is back, not the window's handler.
    if (now.sa_handler != SIG_IGN) _exit(3);
    ScanWindow w;  // and windows open again
    _exit(w.open() ? 0 : 4);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  stage.store(3);
  holder.join();
  CHECK(WIFEXITED(status));
  if (WIFEXITED(status)) CHECK(WEXITSTATUS(status) == 0);
  sigaction(SIGBUS, &saved, nullptr);
}

}  // namespace
}  // namespace procmig
