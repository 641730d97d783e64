#include "os/kernel_caps.h"

#include <initializer_list>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "os/kernel_probes.h"

namespace procmig {
namespace {

const Feature* FindIn(const std::vector<Feature>& list, absl::string_view name) {
  for (const Feature& f : list) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

// A backend available when every feature in `needs` is; the reason lists what it rests on, or
// each missing feature with that feature's own reason.
Feature Derived(const std::vector<Feature>& features, absl::string_view backend,
                std::initializer_list<absl::string_view> needs) {
  std::vector<std::string> missing;
  for (absl::string_view need : needs) {
    const Feature* f = FindIn(features, need);
    if (f == nullptr) {
      missing.push_back(absl::StrCat(need, " (not probed)"));
    } else if (!f->available) {
      missing.push_back(absl::StrCat(need, " (", f->reason, ")"));
    }
  }
  Feature b{probes::kSectionBackends, std::string(backend), missing.empty(), ""};
  if (missing.empty()) {
    b.reason =
        absl::StrCat("has ", absl::StrJoin(needs, " + "), " (derived from the feature probes)");
  } else {
    b.reason = absl::StrCat("missing ", absl::StrJoin(missing, "; "));
  }
  return b;
}

}  // namespace

const Feature* KernelCaps::Find(std::string_view name) const {
  const Feature* f = FindIn(features, absl::string_view(name.data(), name.size()));
  return f != nullptr ? f : FindIn(dirty_backends, absl::string_view(name.data(), name.size()));
}

bool KernelCaps::Available(std::string_view name) const {
  const Feature* f = Find(name);
  return f != nullptr && f->available;
}

std::vector<Feature> DeriveDirtyBackends(const std::vector<Feature>& features) {
  std::vector<Feature> backends;
  backends.push_back(Derived(features, feature::kBackendPagemapScan,
                             {feature::kPagemapScan, feature::kPagemapScanWp, feature::kUffdWpAsync,
                              feature::kUffdWpUnpopulated}));
  backends.push_back(Derived(features, feature::kBackendSoftDirty, {feature::kSoftDirty}));
  backends.push_back(Derived(features, feature::kBackendUffdWp, {feature::kUffdWp}));
  backends.push_back(Feature{probes::kSectionBackends, feature::kBackendMprotect, true,
                             "mprotect + SIGSEGV works on every kernel (the agent must own "
                             "SIGSEGV)"});
  backends.push_back(Feature{probes::kSectionBackends, feature::kBackendFull, true,
                             "every page counts as dirty every round (stop-and-copy only)"});
  return backends;
}

KernelCaps ProbeKernelCaps(Os& os) {
  KernelCaps caps;
  absl::StatusOr<std::string> release = os.ReadFile("/proc/sys/kernel/osrelease");
  if (release.ok()) caps.kernel_release = std::string(absl::StripAsciiWhitespace(*release));
  caps.page_size = os.PageSize();

  probes::ProbeUserfaultfd(os, &caps.features);
  probes::ProbePagemapScan(os, &caps.features);
  probes::ProbeSoftDirty(os, &caps.features);
  probes::ProbeIoUring(os, &caps.features);
  probes::ProbeProcessControl(os, &caps.features);
  probes::ProbeCapabilities(os, &caps.features);
  probes::ProbeMemory(os, &caps);
  caps.dirty_backends = DeriveDirtyBackends(caps.features);
  return caps;
}

}  // namespace procmig
