// ImageInspect: a readable summary of a stored checkpoint image (`procmig inspect DIR`).
//
// Reads MANIFEST, then every block file and the process-state file, and checks each against the
// manifest's sizes and crc32c, reading in bounded chunks (a 1 GiB block never needs 1 GiB of
// buffer). The summary lists the session, the stats, and per block its range, kind, protection,
// pages stored versus holes, and the digest check the receiver recorded. Stateless; any thread.
#ifndef PROCMIG_MIGRATION_IMAGE_INSPECT_H_
#define PROCMIG_MIGRATION_IMAGE_INSPECT_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace procmig {

struct ImageInspection {
  std::string text;
  // OK, or DataLoss naming the first file that does not match the manifest.
  absl::Status verify_status;
};

// Fails only when DIR has no readable, well-formed MANIFEST.
absl::StatusOr<ImageInspection> InspectImageDir(const std::string& dir);

}  // namespace procmig

#endif  // PROCMIG_MIGRATION_IMAGE_INSPECT_H_
