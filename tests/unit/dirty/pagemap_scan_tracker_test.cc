// The shared tracker scenarios (tracker_scenarios.h) against the pagemap-scan backend. Exits 77
// with the probe's reason where the running kernel cannot support it.
#include "dirty/pagemap_scan_tracker.h"

#include <doctest/doctest.h>

#include <thread>

#include "unit/dirty/scenario_support.h"
#include "unit/dirty/tracker_scenarios.h"

namespace procmig::testing {
namespace {

constexpr TrackerKind kKind = TrackerKind::kPagemapScan;

// Start write-protects with a PAGEMAP_SCAN walk (ProtectByScan), UFFDIO_WRITEPROTECT only where
// that is refused; both paths run here (the second as a kernel that refuses the scan would).
// Exact: a page left unprotected would be reported written at the first sync, a false positive
// the shared scenarios only count.
void RunExactAfterStart(bool protect_by_scan) {
  const size_t pages = 1536;  // several page tables' worth, across a 2 MiB boundary
  Region r(pages * Page());
  // Pages 0..1023 touched before tracking, 1024.. never (they read as zero, unmapped).
  for (size_t p = 0; p < 1024; ++p) r.base()[p * Page()] = static_cast<char>(p | 1);
  Truth t(MakeBlock(30, r.base(), r.len()));
  PagemapScanTracker tracker(nullptr, protect_by_scan);
  REQUIRE_OK(tracker.Start({&t.block, 1}));
  const DirtySet& first = SyncOk(tracker);
  const DirtyBlock* db = first.Find(30);
  REQUIRE(db != nullptr);
  CHECK(db->pages.Count() == 0);
  for (size_t p : {0, 1, 511, 512, 1023, 1024, 1535}) t.Write(p);
  const DirtySet& second = SyncOk(tracker);
  db = second.Find(30);
  REQUIRE(db != nullptr);
  CHECK(db->pages.Count() == 7);
  for (size_t p : {0, 1, 511, 512, 1023, 1024, 1535}) CHECK(db->pages.Test(p));
  REQUIRE_OK(tracker.Stop());
}

TEST_CASE("pagemap_scan tracker: after Start, exactly the pages written since are reported") {
  RequireBackend(kKind);
  RunExactAfterStart(/*protect_by_scan=*/true);
}

TEST_CASE("pagemap_scan tracker: the same with UFFDIO_WRITEPROTECT (the scan refused)") {
  RequireBackend(kKind);
  RunExactAfterStart(/*protect_by_scan=*/false);
}

// StartUnprotected leaves protecting to ProtectRange, which two threads call at once (the bulk
// stage's helper and the sender). Exact: the protected ranges report the pages written since;
// the present pages of the range never protected are all reported at the first sync (and
// re-protected by it); its empty pages are too on Linux 6.18 (an earlier kernel may report them
// only once written: either is safe, so either passes).
void RunUnprotectedStart(bool protect_by_scan) {
  const size_t pages = 2048;
  Region r(pages * Page());
  for (size_t p = 0; p < 1792; ++p) r.base()[p * Page()] = static_cast<char>(p | 1);
  Truth t(MakeBlock(31, r.base(), r.len()));
  PagemapScanTracker tracker(nullptr, protect_by_scan);
  absl::StatusOr<bool> unprotected = tracker.StartUnprotected({&t.block, 1});
  REQUIRE_OK(unprotected.status());
  CHECK(*unprotected);
  const auto a = reinterpret_cast<uintptr_t>(r.base());
  // Pages 0..1535 in 2 MiB pieces, alternately on this thread and another; 1536.. not at all.
  int other_err = -1;
  std::thread other([&] {
    other_err = 0;
    for (size_t p = 512; p < 1536; p += 1024)
      other_err |= tracker.ProtectRange(a + p * Page(), a + (p + 512) * Page(), Page());
  });
  int mine = 0;
  for (size_t p = 0; p < 1536; p += 1024)
    mine |= tracker.ProtectRange(a + p * Page(), a + (p + 512) * Page(), Page());
  other.join();
  CHECK(mine == 0);
  CHECK(other_err == 0);
  for (size_t p : {0, 511, 512, 1535, 1800}) t.Write(p);
  const DirtySet& first = SyncOk(tracker);
  const DirtyBlock* db = first.Find(31);
  REQUIRE(db != nullptr);
  // 0, 511, 512, 1535 written; 1536..1791 present and never protected; 1800 written (it was empty).
  size_t protected_reported = 0;
  for (size_t p = 0; p < 1536; ++p) protected_reported += db->pages.Test(p) ? 1 : 0;
  CHECK(protected_reported == 4);
  for (size_t p : {0, 511, 512, 1535, 1800}) CHECK(db->pages.Test(p));
  for (size_t p = 1536; p < 1792; ++p) REQUIRE(db->pages.Test(p));
  size_t empty_reported = 0;
  for (size_t p = 1792; p < 2048; ++p) empty_reported += db->pages.Test(p) ? 1 : 0;
  MESSAGE("never-protected empty pages reported at the first sync: ", empty_reported, " of 256");
  for (size_t p : {3, 1600, 2047}) t.Write(p);
  const DirtySet& second = SyncOk(tracker);
  db = second.Find(31);
  REQUIRE(db != nullptr);
  CHECK(db->pages.Count() == 3);
  for (size_t p : {3, 1600, 2047}) CHECK(db->pages.Test(p));
  REQUIRE_OK(tracker.Stop());
}

TEST_CASE("pagemap_scan tracker: StartUnprotected, then ranges protected from two threads") {
  RequireBackend(kKind);
  RunUnprotectedStart(/*protect_by_scan=*/true);
}

TEST_CASE("pagemap_scan tracker: StartUnprotected, ranges protected with UFFDIO_WRITEPROTECT") {
  RequireBackend(kKind);
  RunUnprotectedStart(/*protect_by_scan=*/false);
}

TEST_CASE("pagemap_scan tracker: random writes over several blocks") {
  RequireBackend(kKind);
  RunRandomWrites(kKind);
}

TEST_CASE("pagemap_scan tracker: MADV_DONTNEED then written again") {
  RequireBackend(kKind);
  RunDontneedRewrite(kKind);
}

TEST_CASE("pagemap_scan tracker: a read-only block made writable, written, read-only again") {
  RequireBackend(kKind);
  RunWriteXorExecute(kKind);
}

TEST_CASE("pagemap_scan tracker: discarded pages announced with MarkDiscarded") {
  RequireBackend(kKind);
  RunMarkDiscarded(kKind);
}

TEST_CASE("pagemap_scan tracker: region grown with mremap") {
  RequireBackend(kKind);
  RunMremapGrow(kKind);
}

TEST_CASE("pagemap_scan tracker: THP-backed region") {
  RequireBackend(kKind);
  RunTransparentHugePages(kKind);
}

TEST_CASE("pagemap_scan tracker: writer threads during Sync") {
  RequireBackend(kKind);
  RunConcurrentWriters(kKind);
}

TEST_CASE("pagemap_scan tracker: kernel writes into tracked memory") {
  RequireBackend(kKind);
  RunKernelWrite(kKind);
}

TEST_CASE("pagemap_scan tracker: add and remove blocks") {
  RequireBackend(kKind);
  RunBlockBookkeeping(kKind);
}

TEST_CASE("pagemap_scan tracker: the final sync, then a failed stop") {
  RequireBackend(kKind);
  RunFinalSync(kKind);
}

}  // namespace
}  // namespace procmig::testing
