// RETURN_IF_ERROR / ASSIGN_OR_RETURN: the two macros every fallible call in procmig goes through.
//
// Status codes have fixed meanings across the project (STYLE.md): DataLoss = corrupt stream,
// Unavailable = peer or transport gone, FailedPrecondition = kernel feature missing,
// InvalidArgument = bad input or config, Internal = a bug. Messages start with the step that
// failed, e.g. "register uffd range 0x7f..: EPERM".
#ifndef PROCMIG_BASE_STATUS_MACROS_H_
#define PROCMIG_BASE_STATUS_MACROS_H_

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define PROCMIG_CONCAT_INNER_(a, b) a##b
#define PROCMIG_CONCAT_(a, b) PROCMIG_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    ::absl::Status procmig_status_ = (expr);       \
    if (!procmig_status_.ok()) return procmig_status_; \
  } while (0)

#define ASSIGN_OR_RETURN(lhs, expr) \
  PROCMIG_ASSIGN_OR_RETURN_IMPL_(PROCMIG_CONCAT_(procmig_statusor_, __LINE__), lhs, expr)

#define PROCMIG_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.ok()) return std::move(tmp).status();       \
  lhs = std::move(tmp).value()

namespace procmig {

// Builds the status for a failed system call: "<step>: <ERRNO NAME> (<strerror>)". The code is
// chosen from errno: ENOSYS/EOPNOTSUPP/EPERM/EACCES mean a missing feature or permission
// (FailedPrecondition); peer loss (EPIPE, ECONNRESET, ...) is Unavailable; EINVAL/EBADF/ENOENT
// are InvalidArgument; the rest Internal. A probe that reads EINVAL as "feature missing", or a
// caller with a better code (e.g. ResourceExhausted for ENOMEM), uses the overload with a code.
absl::Status ErrnoStatus(std::string_view step, int err);
absl::Status ErrnoStatus(absl::StatusCode code, std::string_view step, int err);

// "EPERM", "ENOENT", ...; the number itself for unknown values.
std::string ErrnoName(int err);

}  // namespace procmig

#endif  // PROCMIG_BASE_STATUS_MACROS_H_
