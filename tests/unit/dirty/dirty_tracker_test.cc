#include "dirty/dirty_tracker.h"

#include <doctest/doctest.h>

#include <string>

namespace procmig {
namespace {

TEST_CASE("tracker names round-trip and unknown names are refused") {
  const char* names[] = {"pagemap-scan", "soft-dirty", "uffd-wp", "mprotect", "full"};
  size_t i = 0;
  for (TrackerKind k : kAllTrackerKinds) {
    CHECK(TrackerKindName(k) == names[i++]);
    absl::StatusOr<TrackerKind> parsed = ParseTrackerKind(TrackerKindName(k));
    REQUIRE(parsed.ok());
    CHECK(*parsed == k);
  }
  absl::StatusOr<TrackerKind> bad = ParseTrackerKind("softdirty");
  CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(bad.status().message()).find("soft-dirty") != std::string::npos);
}

}  // namespace
}  // namespace procmig
