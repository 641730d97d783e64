#include "procmig/inspect.h"

#include "wire/stream_inspector.h"

namespace procmig {

absl::StatusOr<InspectReport> InspectStream(const std::string& path) {
  auto summary = wire::StreamInspector::InspectFile(path);
  if (!summary.ok()) return summary.status();
  return InspectReport{wire::StreamInspector::Render(*summary), summary->error};
}

}  // namespace procmig
