#include "os/os.h"

#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/types/optional.h"
#include "base/status_macros.h"

namespace procmig {
namespace {

// Type URL of the errno payload; any string works, this one says whose it is.
constexpr char kErrnoPayloadUrl[] = "procmig.os/errno";

}  // namespace

absl::Status OsError(std::string_view step, int err) {
  absl::Status status = ErrnoStatus(step, err);
  status.SetPayload(kErrnoPayloadUrl, absl::Cord(std::to_string(err)));
  return status;
}

int OsErrno(const absl::Status& status) {
  absl::optional<absl::Cord> payload = status.GetPayload(kErrnoPayloadUrl);
  if (!payload.has_value()) return 0;
  int err = 0;
  if (!absl::SimpleAtoi(std::string(*payload), &err)) return 0;
  return err;
}

}  // namespace procmig
