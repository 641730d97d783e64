// The shared tracker scenarios (tracker_scenarios.h) against the soft-dirty backend. Exits 77
// with the probe's reason where the running kernel cannot support it.
#include "dirty/soft_dirty_tracker.h"

#include <doctest/doctest.h>

#include "unit/dirty/tracker_scenarios.h"

namespace procmig::testing {
namespace {

constexpr TrackerKind kKind = TrackerKind::kSoftDirty;

TEST_CASE("soft_dirty tracker: random writes over several blocks") {
  RequireBackend(kKind);
  RunRandomWrites(kKind);
}

TEST_CASE("soft_dirty tracker: MADV_DONTNEED then written again") {
  RequireBackend(kKind);
  RunDontneedRewrite(kKind);
}

TEST_CASE("soft_dirty tracker: a read-only block made writable, written, read-only again") {
  RequireBackend(kKind);
  RunWriteXorExecute(kKind);
}

TEST_CASE("soft_dirty tracker: discarded pages announced with MarkDiscarded") {
  RequireBackend(kKind);
  RunMarkDiscarded(kKind);
}

TEST_CASE("soft_dirty tracker: region grown with mremap") {
  RequireBackend(kKind);
  RunMremapGrow(kKind);
}

TEST_CASE("soft_dirty tracker: THP-backed region") {
  RequireBackend(kKind);
  RunTransparentHugePages(kKind);
}

TEST_CASE("soft_dirty tracker: writer threads during Sync") {
  RequireBackend(kKind);
  RunConcurrentWriters(kKind);
}

TEST_CASE("soft_dirty tracker: kernel writes into tracked memory") {
  RequireBackend(kKind);
  RunKernelWrite(kKind);
}

TEST_CASE("soft_dirty tracker: add and remove blocks") {
  RequireBackend(kKind);
  RunBlockBookkeeping(kKind);
}

TEST_CASE("soft_dirty tracker: the final sync, then a failed stop") {
  RequireBackend(kKind);
  RunFinalSync(kKind);
}

}  // namespace
}  // namespace procmig::testing
