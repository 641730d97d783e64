#include "base/status_macros.h"

namespace procmig {

std::string ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  if (name == nullptr) return absl::StrCat("errno ", err);
  return name;
}

absl::Status ErrnoStatus(absl::StatusCode code, std::string_view step, int err) {
  const char* desc = strerrordesc_np(err);
  std::string msg(step);
  absl::StrAppend(&msg, ": ", ErrnoName(err), " (", desc != nullptr ? desc : "unknown", ")");
  return absl::Status(code, msg);
}

absl::Status ErrnoStatus(std::string_view step, int err) {
  absl::StatusCode code = absl::StatusCode::kInternal;
  switch (err) {
    case ENOSYS:
    case EOPNOTSUPP:
    case EPERM:
    case EACCES:
      code = absl::StatusCode::kFailedPrecondition;
      break;
    case EPIPE:
    case ECONNRESET:
    case ECONNREFUSED:
    case ECONNABORTED:
    case ENOTCONN:
    case ETIMEDOUT:
    case EHOSTUNREACH:
    case ENETUNREACH:
      code = absl::StatusCode::kUnavailable;
      break;
    case EINVAL:
    case EBADF:
    case ENOENT:
      code = absl::StatusCode::kInvalidArgument;
      break;
    default:
      break;
  }
  return ErrnoStatus(code, step, err);
}

}  // namespace procmig
