#include "transport/transport_config.h"

#include <doctest/doctest.h>

namespace procmig {
namespace {

TEST_CASE("defaults are valid and bad values name the field") {
  TransportConfig c;
  CHECK(c.Validate().ok());
  c.queue_depth = 48;
  CHECK(c.Validate().code() == absl::StatusCode::kInvalidArgument);
  CHECK(c.Validate().message() ==
        "transport config: queue_depth 48 is not a power of two in [2, 4096]");
  c.queue_depth = 8192;
  CHECK_FALSE(c.Validate().ok());
  c.queue_depth = 2;
  CHECK(c.Validate().ok());
  c.max_chunk_bytes = 100;
  CHECK(c.Validate().message() == "transport config: max_chunk_bytes 100 is outside [4096, 1 GiB]");
}

TEST_CASE("transport kinds round-trip through their names") {
  for (TransportKind k : {TransportKind::kAuto, TransportKind::kIoUring, TransportKind::kPosix}) {
    auto parsed = ParseTransportKind(TransportKindName(k));
    REQUIRE(parsed.ok());
    CHECK(*parsed == k);
  }
  auto bad = ParseTransportKind("uring");
  CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace procmig
