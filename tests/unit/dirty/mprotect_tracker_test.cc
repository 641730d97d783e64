// The shared tracker scenarios (tracker_scenarios.h) against the mprotect backend. Exits 77
// with the probe's reason where the running kernel cannot support it.
#include "dirty/mprotect_tracker.h"

#include <doctest/doctest.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>

#include "unit/dirty/tracker_scenarios.h"

namespace procmig::testing {
namespace {

constexpr TrackerKind kKind = TrackerKind::kMprotect;

TEST_CASE("mprotect tracker: random writes over several blocks") {
  RequireBackend(kKind);
  RunRandomWrites(kKind);
}

TEST_CASE("mprotect tracker: MADV_DONTNEED then written again") {
  RequireBackend(kKind);
  RunDontneedRewrite(kKind);
}

TEST_CASE("mprotect tracker: discarded pages announced with MarkDiscarded") {
  RequireBackend(kKind);
  RunMarkDiscarded(kKind);
}

TEST_CASE("mprotect tracker: region grown with mremap") {
  RequireBackend(kKind);
  RunMremapGrow(kKind);
}

TEST_CASE("mprotect tracker: THP-backed region") {
  RequireBackend(kKind);
  RunTransparentHugePages(kKind);
}

TEST_CASE("mprotect tracker: writer threads during Sync") {
  RequireBackend(kKind);
  RunConcurrentWriters(kKind);
}

TEST_CASE("mprotect tracker: kernel writes into tracked memory") {
  RequireBackend(kKind);
  RunKernelWrite(kKind);
}

TEST_CASE("mprotect tracker: add and remove blocks") {
  RequireBackend(kKind);
  RunBlockBookkeeping(kKind);
}

TEST_CASE("mprotect tracker: the final sync, then a failed stop") {
  RequireBackend(kKind);
  RunFinalSync(kKind);
}

}  // namespace
}  // namespace procmig::testing

// Backend-specific behaviour: the process-wide SIGSEGV handler.
namespace procmig::testing {
namespace {

std::atomic<int> g_program_faults{0};
void* g_program_page = nullptr;

// The program's own handler: counts the fault and makes its page writable so the write retries.
void ProgramHandler(int, siginfo_t* info, void*) {
  if (info->si_addr == g_program_page) {
    g_program_faults.fetch_add(1);
    mprotect(g_program_page, static_cast<size_t>(sysconf(_SC_PAGESIZE)), PROT_READ | PROT_WRITE);
  }
}

TEST_CASE("mprotect tracker: faults outside tracked pages reach the program's handler") {
  RequireBackend(kKind);
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  struct sigaction program {};
  program.sa_sigaction = ProgramHandler;
  program.sa_flags = SA_SIGINFO;
  struct sigaction saved {};
  REQUIRE(sigaction(SIGSEGV, &program, &saved) == 0);

  void* tracked =
      mmap(nullptr, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  g_program_page = mmap(nullptr, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(tracked != MAP_FAILED);
  REQUIRE(g_program_page != MAP_FAILED);
  RamBlock block;
  block.id = 1;
  block.start = reinterpret_cast<uintptr_t>(tracked);
  block.length = 4 * page;
  block.page_size = page;
  block.prot = PROT_READ | PROT_WRITE;
  MprotectTracker tracker;
  REQUIRE(tracker.Start({&block, 1}).ok());

  // One tracker per process.
  MprotectTracker second;
  CHECK(second.Start({&block, 1}).code() == absl::StatusCode::kFailedPrecondition);

  static_cast<volatile char*>(tracked)[page] = 1;      // ours: recorded, no chaining
  static_cast<volatile char*>(g_program_page)[0] = 1;  // the program's: chained
  CHECK(g_program_faults.load() == 1);
  absl::StatusOr<const DirtySet*> set = tracker.Sync();
  REQUIRE(set.ok());
  CHECK((*set)->DirtyPageCount() == 1);
  CHECK((*set)->Find(1)->pages.Test(1));
  CHECK(tracker.stats().faults == 1);

  REQUIRE(tracker.Stop().ok());
  // Stop gave the program its handler back, and the slot is free again.
  struct sigaction now {};
  REQUIRE(sigaction(SIGSEGV, nullptr, &now) == 0);
  const bool handler_restored = now.sa_sigaction == ProgramHandler;
  CHECK(handler_restored);
  CHECK(second.Start({&block, 1}).ok());
  CHECK(second.Stop().ok());
  sigaction(SIGSEGV, &saved, nullptr);
  munmap(tracked, 4 * page);
  munmap(g_program_page, page);
}

}  // namespace
}  // namespace procmig::testing
