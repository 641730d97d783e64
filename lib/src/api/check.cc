#include "procmig/check.h"

#include "dirty/tracker_probe.h"
#include "os/kernel_caps.h"
#include "os/real_os.h"

namespace procmig {

absl::StatusOr<std::string> RunCheck(CheckFormat format) {
  RealOs os;
  KernelCaps caps = ProbeKernelCaps(os);
  // Each backend is judged by its own behavioural probe (start it, write one page, sync, expect
  // exactly that page), not by the features it is derived from.
  caps.dirty_backends.clear();
  for (const TrackerProbeResult& r : ProbeAllTrackers(TrackerConfig{})) {
    caps.dirty_backends.push_back(Feature{
        "dirty tracking backends", std::string(TrackerKindName(r.kind)), r.available, r.reason});
  }
  return format == CheckFormat::kJson ? ToJson(caps) : ToTable(caps);
}

}  // namespace procmig
