#include "os/os.h"

#include <doctest/doctest.h>

#include <cerrno>
#include <string>

namespace procmig {
namespace {

TEST_CASE("OsError carries the errno and the ErrnoStatus code and message") {
  absl::Status s = OsError("open /proc/self/pagemap", EACCES);
  CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(std::string(s.message()) == "open /proc/self/pagemap: EACCES (Permission denied)");
  CHECK(OsErrno(s) == EACCES);

  absl::Status n = OsError("userfaultfd", ENOSYS);
  CHECK(n.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(OsErrno(n) == ENOSYS);

  absl::Status io = OsError("pread fd 3 at 0x0", EIO);
  CHECK(io.code() == absl::StatusCode::kInternal);
  CHECK(OsErrno(io) == EIO);
}

TEST_CASE("OsErrno is 0 for statuses that do not come from an Os call") {
  CHECK(OsErrno(absl::OkStatus()) == 0);
  CHECK(OsErrno(absl::InternalError("EPERM in the text is not an errno")) == 0);
}

}  // namespace
}  // namespace procmig
