// The shared tracker scenarios (tracker_scenarios.h) against the pagemap-scan backend. Exits 77
// with the probe's reason where the running kernel cannot support it.
#include "dirty/pagemap_scan_tracker.h"

#include <doctest/doctest.h>

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
