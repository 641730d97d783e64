#include "transport/posix_channel.h"

#include <doctest/doctest.h>

#include "alloc_counter.h"
#include "channel_contract.h"

namespace procmig {
namespace {

std::unique_ptr<Channel> MakePosix(UniqueFd fd) {
  auto c = PosixChannel::Create(std::move(fd), "posix test");
  REQUIRE(c.ok());
  return *std::move(c);
}

TEST_CASE("posix: the successful data path allocates nothing") {
  testing::CheckNoAllocationOnDataPath(MakePosix,
                                       [](auto&& f) { return testing::AllocationsDuring(f); });
}
TEST_CASE("posix: a pipe carries the stream at the current position") {
  testing::CheckPipe(MakePosix);
}
TEST_CASE("posix: round trip, counters, shutdown") { testing::CheckRoundTrip(MakePosix); }
TEST_CASE("posix: peer disconnect is Unavailable (unix)") {
  testing::CheckPeerDisconnect(MakePosix, false);
}
TEST_CASE("posix: peer disconnect is Unavailable (tcp)") {
  testing::CheckPeerDisconnect(MakePosix, true);
}
TEST_CASE("posix: a TCP socket reports what it holds unsent; others say nothing") {
  testing::CheckPendingSend(MakePosix);
}
TEST_CASE("posix: EINTR storms are absorbed") { testing::CheckEintr(MakePosix); }
TEST_CASE("posix: non-blocking descriptors wait out EAGAIN and short writes") {
  uint64_t resumes = testing::CheckNonBlocking(MakePosix);
  CHECK(resumes > 0);  // 4 MiB through an 8 KiB send buffer cannot go in one writev
}
TEST_CASE("posix: abort wakes a blocked reader") { testing::CheckAbortWakesReader(MakePosix); }
TEST_CASE("posix: file written and read back at the right offsets") {
  testing::CheckFile(MakePosix);
}
TEST_CASE("posix: concurrent writers' batches stay whole") {
  testing::CheckConcurrentWritersDoNotInterleave(MakePosix);
}
TEST_CASE("posix: a closed descriptor is InvalidArgument") {
  auto c = PosixChannel::Create(UniqueFd(), "nothing");
  CHECK(c.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(c.status().message() == "posix channel nothing: EBADF (Bad file descriptor)");
}

}  // namespace
}  // namespace procmig
