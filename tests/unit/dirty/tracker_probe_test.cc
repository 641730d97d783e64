// Probes of every backend on the running kernel, and the automatic choice. Prints each probe and
// the choice (the VM run of run_soft_dirty_vm.sh reads them); PROCMIG_EXPECT_AUTO_TRACKER, when
// set, names the backend the automatic choice must be (soft-dirty under Linux 6.1).
#include "dirty/tracker_probe.h"

#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace procmig {
namespace {

std::string Name(TrackerKind k) { return std::string(TrackerKindName(k)); }

TEST_CASE("every backend is probed, best first, with a reason") {
  std::vector<TrackerProbeResult> probes = ProbeAllTrackers(TrackerConfig{});
  REQUIRE(probes.size() == 5);
  const TrackerKind order[] = {TrackerKind::kPagemapScan, TrackerKind::kSoftDirty,
                               TrackerKind::kUffdWp, TrackerKind::kMprotect, TrackerKind::kFull};
  for (size_t i = 0; i < probes.size(); ++i) {
    CHECK(probes[i].kind == order[i]);
    CHECK(!probes[i].reason.empty());
    std::printf("probe %-12s %-11s %s\n", Name(probes[i].kind).c_str(),
                probes[i].available ? "ok" : "unavailable", probes[i].reason.c_str());
  }
  std::fflush(stdout);
  CHECK(probes[4].available);  // full needs nothing
}

TEST_CASE("the automatic choice is the best backend whose probe passed") {
  std::vector<TrackerProbeResult> probes = ProbeAllTrackers(TrackerConfig{});
  TrackerKind best = TrackerKind::kFull;
  for (const TrackerProbeResult& r : probes) {
    if (r.available) {
      best = r.kind;
      break;
    }
  }
  std::vector<TrackerProbeResult> seen;
  absl::StatusOr<std::unique_ptr<DirtyTracker>> chosen = SelectTracker(TrackerConfig{}, &seen);
  REQUIRE(chosen.ok());
  std::printf("auto choice: %s (best passing probe: %s)\n", Name((*chosen)->kind()).c_str(),
              Name(best).c_str());
  std::fflush(stdout);
  CHECK((*chosen)->kind() == best);
  // It stopped probing at the first pass.
  REQUIRE(!seen.empty());
  CHECK(seen.back().kind == best);
  CHECK(seen.back().available);
  if (const char* want = std::getenv("PROCMIG_EXPECT_AUTO_TRACKER"); want != nullptr) {
    CHECK(Name((*chosen)->kind()) == want);
  }
}

TEST_CASE("a forced backend is used if its probe passes and refused with the reason if not") {
  for (TrackerKind k : kAllTrackerKinds) {
    TrackerProbeResult r = ProbeTracker(k, TrackerConfig{});
    TrackerConfig config;
    config.forced = k;
    absl::StatusOr<std::unique_ptr<DirtyTracker>> t = SelectTracker(config);
    if (r.available) {
      REQUIRE(t.ok());
      CHECK((*t)->kind() == k);
    } else {
      CHECK(t.status().code() == absl::StatusCode::kFailedPrecondition);
      CHECK(std::string(t.status().message()).find(Name(k)) != std::string::npos);
      CHECK(std::string(t.status().message()).find(r.reason) != std::string::npos);
    }
  }
}

TEST_CASE("for a whole program only the backends that can track one pass (the agent's case)") {
  TrackerConfig whole;
  whole.whole_process = true;
  std::vector<TrackerProbeResult> probes = ProbeAllTrackers(whole);
  REQUIRE(probes.size() == 5);
  CHECK_FALSE(probes[2].available);  // uffd-wp
  CHECK(probes[2].reason.find("not safe for a whole program: synchronous userfaultfd") == 0);
  CHECK_FALSE(probes[3].available);  // mprotect
  CHECK(probes[4].available);
  whole.forced = TrackerKind::kUffdWp;
  absl::StatusOr<std::unique_ptr<DirtyTracker>> t = SelectTracker(whole);
  CHECK(t.status().message() ==
        "select dirty tracker: forced backend uffd-wp failed its probe: " + probes[2].reason);
  // The automatic choice never lands on either.
  whole.forced.reset();
  absl::StatusOr<std::unique_ptr<DirtyTracker>> chosen = SelectTracker(whole);
  REQUIRE(chosen.ok());
  CHECK((*chosen)->kind() != TrackerKind::kUffdWp);
  CHECK((*chosen)->kind() != TrackerKind::kMprotect);
}

TEST_CASE("probes leave nothing behind") {
  // Twice in a row gives the same answers (fds, handlers and mappings were released), and the
  // mprotect probe does not keep the process-wide SIGSEGV slot.
  std::vector<TrackerProbeResult> a = ProbeAllTrackers(TrackerConfig{});
  std::vector<TrackerProbeResult> b = ProbeAllTrackers(TrackerConfig{});
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) CHECK(a[i].available == b[i].available);
}

}  // namespace
}  // namespace procmig
