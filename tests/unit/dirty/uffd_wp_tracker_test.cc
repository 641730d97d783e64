// The shared tracker scenarios (tracker_scenarios.h) against the uffd-wp backend. Exits 77
// with the probe's reason where the running kernel cannot support it.
#include "dirty/uffd_wp_tracker.h"

#include <doctest/doctest.h>

#include "unit/dirty/tracker_scenarios.h"

namespace procmig::testing {
namespace {

constexpr TrackerKind kKind = TrackerKind::kUffdWp;

TEST_CASE("uffd_wp tracker: random writes over several blocks") {
  RequireBackend(kKind);
  RunRandomWrites(kKind);
}

TEST_CASE("uffd_wp tracker: MADV_DONTNEED then written again") {
  RequireBackend(kKind);
  RunDontneedRewrite(kKind);
}

TEST_CASE("uffd_wp tracker: discarded pages announced with MarkDiscarded") {
  RequireBackend(kKind);
  RunMarkDiscarded(kKind);
}

TEST_CASE("uffd_wp tracker: region grown with mremap") {
  RequireBackend(kKind);
  RunMremapGrow(kKind);
}

TEST_CASE("uffd_wp tracker: THP-backed region") {
  RequireBackend(kKind);
  RunTransparentHugePages(kKind);
}

TEST_CASE("uffd_wp tracker: writer threads during Sync") {
  RequireBackend(kKind);
  RunConcurrentWriters(kKind);
}

TEST_CASE("uffd_wp tracker: kernel writes into tracked memory") {
  RequireBackend(kKind);
  RunKernelWrite(kKind);
}

TEST_CASE("uffd_wp tracker: add and remove blocks") {
  RequireBackend(kKind);
  RunBlockBookkeeping(kKind);
}

TEST_CASE("uffd_wp tracker: the final sync, then a failed stop") {
  RequireBackend(kKind);
  RunFinalSync(kKind);
}

}  // namespace
}  // namespace procmig::testing
