// procmig's public API: decoding a recorded migration stream (`procmig inspect`).
#ifndef PROCMIG_INSPECT_H_
#define PROCMIG_INSPECT_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace procmig {

struct InspectReport {
  // Readable summary: the preamble, the blocks, pages per encoding, iterations with their
  // statistics, and whether the stream ended cleanly. For a corrupt stream it covers everything
  // read before the bad record.
  std::string text;
  // OK, or DataLoss naming the byte offset of the bad record and the check that failed.
  absl::Status stream_status;
};

// Reads the recorded stream at `path`. Fails only when the file cannot be opened or read.
absl::StatusOr<InspectReport> InspectStream(const std::string& path);

}  // namespace procmig

#endif  // PROCMIG_INSPECT_H_
