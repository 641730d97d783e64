// Behavioural probes of the dirty-tracking backends, and the choice among them.
//
// A backend is "available" only if it proves itself: on a scratch mapping of its own, the probe
// starts the tracker, syncs once (the reset), writes one known page, syncs and expects exactly
// that page, then does it again with another page (so re-arming is proven too). `full` must
// report every page instead. Checking for an interface is not enough: a kernel without
// CONFIG_MEM_SOFT_DIRTY accepts the clear_refs write and then never sets a bit, which would make
// soft-dirty silently report nothing.
//
// Probes leave nothing behind (mapping unmapped, descriptors closed, handlers restored). They
// allocate and start threads: call them before application threads are parked. Any one thread.
#ifndef PROCMIG_DIRTY_TRACKER_PROBE_H_
#define PROCMIG_DIRTY_TRACKER_PROBE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dirty/dirty_tracker.h"

namespace procmig {

struct TrackerProbeResult {
  TrackerKind kind = TrackerKind::kFull;
  bool available = false;
  // Why: what the probe saw when it passed, or the step that failed and its cause.
  std::string reason;
};

// A new, unstarted tracker of this kind (never fails: availability is the probe's business).
std::unique_ptr<DirtyTracker> MakeTracker(TrackerKind kind, const TrackerConfig& config);

// Runs the probe of one backend.
TrackerProbeResult ProbeTracker(TrackerKind kind, const TrackerConfig& config);
// All backends, best first (kAllTrackerKinds order).
std::vector<TrackerProbeResult> ProbeAllTrackers(const TrackerConfig& config);

// The forced backend if its probe passes (FailedPrecondition with its reason otherwise), or the
// best backend whose probe passes. `probes`, if not null, receives the probe results run.
absl::StatusOr<std::unique_ptr<DirtyTracker>> SelectTracker(
    const TrackerConfig& config, std::vector<TrackerProbeResult>* probes = nullptr);

}  // namespace procmig

#endif  // PROCMIG_DIRTY_TRACKER_PROBE_H_
