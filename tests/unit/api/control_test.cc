#include "procmig/control.h"

#include <doctest/doctest.h>

#include <string>

namespace procmig {
namespace {

TEST_CASE("a MIGRATE request round-trips every option, including awkward target strings") {
  ControlMessage m;
  m.verb = ControlVerb::kMigrate;
  m.options.mode = MigrationMode::kCheckpoint;
  m.options.target = "/tmp/dir with space=and%percent\nnewline";
  m.options.leave_running = true;
  m.options.max_bandwidth = 100'000'000;
  m.options.downtime_limit_ms = 20;
  m.options.max_iterations = 7;
  m.options.xbzrle = true;
  m.options.xbzrle_cache_bytes = 1 << 24;
  m.options.compress_level = 6;
  m.options.compress_threads = 3;
  m.options.channels = 2;
  m.options.tracker = "uffd-wp";
  m.options.transport = "posix";
  m.options.auto_converge = false;
  m.options.final_timeout_ms = 1500;
  std::string line = EncodeControl(m);
  CHECK(line.ends_with("\n"));
  CHECK(line.find('\n') == line.size() - 1);
  CHECK(line.find("target=/tmp/dir%20with%20space%3Dand%25percent%0Anewline ") !=
        std::string::npos);
  auto back = DecodeControl(line);
  REQUIRE(back.ok());
  CHECK(back->verb == ControlVerb::kMigrate);
  CHECK(back->options == m.options);
  CHECK(back->options.Validate().ok());
}

TEST_CASE("STATS and DONE round-trip every figure; ERROR carries its status") {
  ControlMessage m;
  m.verb = ControlVerb::kDone;
  m.stats.phase = MigrationPhase::kStopAndCopy;
  uint64_t v = 1;
  for (uint64_t* f :
       {&m.stats.iteration,         &m.stats.total_bytes,      &m.stats.remaining_bytes,
        &m.stats.transferred_bytes, &m.stats.normal_pages,     &m.stats.zero_pages,
        &m.stats.xbzrle_bytes,      &m.stats.xbzrle_pages,     &m.stats.xbzrle_cache_misses,
        &m.stats.xbzrle_overflows,  &m.stats.compressed_pages, &m.stats.compressed_bytes,
        &m.stats.dirty_pages_rate,  &m.stats.throughput_bps,   &m.stats.expected_downtime_ms,
        &m.stats.downtime_ms,       &m.stats.ack_wait_ms,      &m.stats.park_us,
        &m.stats.sync_us,           &m.stats.spawn_us,         &m.stats.final_send_us,
        &m.stats.final_pages,       &m.stats.setup_ms,         &m.stats.total_ms}) {
    *f = v;
    v = v * 31 + 7;
  }
  m.stats.throttle_percent = 40;
  auto back = DecodeControl(EncodeControl(m));
  REQUIRE(back.ok());
  CHECK(back->verb == ControlVerb::kDone);
  CHECK(back->stats == m.stats);
  CHECK(StatsToJson(m.stats).starts_with("{\"phase\": \"stop-and-copy\", \"iteration\": 1, "));
  CHECK(StatsToJson(m.stats).ends_with(", \"throttle_percent\": 40}"));
  // The allocation-free DONE line is the same line, and refuses a buffer it does not fit.
  char fixed[1024];
  const size_t n = EncodeDoneNoAlloc(m.stats, fixed, sizeof fixed);
  CHECK(std::string(fixed, n) == EncodeControl(m));
  CHECK(EncodeDoneNoAlloc(m.stats, fixed, n - 1) == 0);

  ControlMessage e = ErrorReply(absl::UnavailableError("connect 127.0.0.1:7000: ECONNREFUSED"));
  auto eb = DecodeControl(EncodeControl(e));
  REQUIRE(eb.ok());
  CHECK(eb->ToStatus() == absl::UnavailableError("connect 127.0.0.1:7000: ECONNREFUSED"));
}

TEST_CASE("malformed lines are rejected with the bad token named") {
  auto check = [](std::string_view line, std::string_view needle) {
    auto r = DecodeControl(line);
    CHECK_MESSAGE(!r.ok(), line);
    if (!r.ok()) {
      CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
      CHECK_MESSAGE(std::string(r.status().message()).find(needle) != std::string::npos,
                    r.status().message());
    }
  };
  check("", "empty token");
  check("FLY", "unknown verb FLY");
  check("MIGRATE  target=x", "empty token");
  check("MIGRATE target", "has no '='");
  check("MIGRATE colour=blue", "unknown option key colour");
  check("MIGRATE channels=two", "channels=two is not a number");
  check("MIGRATE channels=99999999999", "not a number in range");
  check("MIGRATE xbzrle=yes", "xbzrle=yes is not 0 or 1");
  check("MIGRATE target=%4", "bad percent escape");
  check("MIGRATE mode=teleport", "unknown mode teleport");
  check("STATS phase=warp", "unknown phase warp");
  check("STATUS now=1", "STATUS takes no arguments");
  check(std::string(kMaxControlLine + 1, 'A'), "over the limit");
}

TEST_CASE("options are validated once, with the reason") {
  MigrationOptions o;
  CHECK(o.Validate().message() ==
        "migration options: no target (HOST:PORT, unix:/path or a directory)");
  o.target = "127.0.0.1:7000";
  CHECK(o.Validate().ok());
  o.leave_running = true;
  CHECK(o.Validate().message() == "migration options: leave_running is only for a checkpoint");
  o.leave_running = false;
  o.channels = 0;
  CHECK(o.Validate().message() == "migration options: channels must be 1..16");
  o.channels = 2;
  o.tracker = "magic";
  CHECK(o.Validate().message().find("unknown tracker 'magic'") != std::string::npos);
  o.tracker = "auto";
  o.compress_level = 10;
  CHECK(!o.Validate().ok());
}

}  // namespace
}  // namespace procmig
