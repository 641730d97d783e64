// The control protocol between the `procmig` command and the in-process agent.
//
// The agent (preload/) serves a UNIX stream socket (mode 0600, peers checked with SO_PEERCRED);
// the command connects, sends one request line and reads reply lines until a final one. Every
// line is "VERB key=value key=value ...\n" with values percent-encoded (so they hold no space,
// '=', '%' or newline) and at most kMaxControlLine bytes. Unknown keys are errors (a typo must not
// silently become a default).
//
//   request  = "MIGRATE" options | "STATUS" | "CANCEL"
//   reply    = *("STATS" stats) ("DONE" stats | "ERROR" "code=" N "message=" TEXT)
//            | "OK" (for CANCEL) | "STATS" stats (for STATUS: the current figures)
//
// MIGRATE carries MigrationOptions (a checkpoint is a MIGRATE whose target is a directory or
// whose leave_running is set). The agent sends a STATS line at least once a second while it
// works, then DONE or ERROR. The codec below is pure and allocates freely: the agent uses it
// only outside park windows.
#ifndef PROCMIG_CONTROL_H_
#define PROCMIG_CONTROL_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace procmig {

inline constexpr size_t kMaxControlLine = 8192;

enum class MigrationMode : uint8_t {
  kMigrate,     // live migration: the source exits after the receiver's ack
  kCheckpoint,  // a consistent snapshot; the source keeps running if leave_running
};

// What the user asked for (`procmig migrate`/`checkpoint` flags). Validate() once; everything
// downstream may trust it.
struct MigrationOptions {
  MigrationMode mode = MigrationMode::kMigrate;
  std::string target;          // "HOST:PORT", "unix:/path" or a directory (checkpoint)
  bool leave_running = false;  // checkpoint only: resume right after the snapshot fork
  uint64_t max_bandwidth = 0;  // bytes/s; 0 = unlimited
  uint32_t downtime_limit_ms = 300;
  uint32_t max_iterations = 30;
  bool xbzrle = false;
  uint64_t xbzrle_cache_bytes = 64ull << 20;
  int compress_level = 0;  // 0 = off, 1..9 = zlib level
  int compress_threads = 2;
  // Compress every page even where the link then waits for the compressor; by default a page
  // goes raw when the link would otherwise run dry (PageSenderConfig::compress_adaptive).
  bool compress_always = false;
  int channels = 1;
  std::string tracker = "auto";    // auto, pagemap-scan, soft-dirty, uffd-wp, mprotect, full
  std::string transport = "auto";  // auto, io_uring, posix
  bool auto_converge = true;
  // Read all memory again in the final phase and fail (the program runs on) if a page is not
  // what was sent of it: a check of the dirty tracker, paid for in pause time.
  bool verify_final = false;
  // How long the paused program waits for the final phase (the last pages sent and the
  // receiver's ack) before it gives up and runs on.
  uint32_t final_timeout_ms = 60000;

  absl::Status Validate() const;
  bool operator==(const MigrationOptions&) const = default;
};

enum class MigrationPhase : uint8_t {
  kIdle,
  kSetup,
  kBulk,
  kIterate,
  kStopAndCopy,
  kDone,
  kFailed,
  kCancelled
};
std::string_view PhaseName(MigrationPhase p);

// Figures in the spirit of QEMU's query-migrate.
struct MigrationStats {
  MigrationPhase phase = MigrationPhase::kIdle;
  uint64_t iteration = 0;
  uint64_t total_bytes = 0;        // memory registered as RAM blocks
  uint64_t remaining_bytes = 0;    // dirty bytes not yet sent
  uint64_t transferred_bytes = 0;  // bytes on the wire
  uint64_t normal_pages = 0;
  uint64_t zero_pages = 0;
  uint64_t unread_zero_pages = 0;  // of those, never touched: sent as zeros without reading
  uint64_t xbzrle_bytes = 0;
  uint64_t xbzrle_pages = 0;
  uint64_t xbzrle_cache_misses = 0;
  uint64_t xbzrle_overflows = 0;
  uint64_t compressed_pages = 0;        // zlib pages
  uint64_t compressed_bytes = 0;        // their bytes on the wire (after compression)
  uint64_t compress_skipped_pages = 0;  // sent raw: the link would have waited for zlib
  uint64_t dirty_pages_rate = 0;        // pages/s over the last iteration
  uint64_t throughput_bps = 0;          // bytes/s over the last iteration
  uint64_t expected_downtime_ms = 0;
  // Measured (0 until known): first park of the final stop to the end of stream written, i.e.
  // the pause the program sees until the destination has everything.
  uint64_t downtime_ms = 0;
  uint64_t ack_wait_ms = 0;  // end of stream written to the receiver's ack (program still parked)
  // Where the pause went (µs): parking every thread; layout check and final tracker sync;
  // starting the final phase's own task (a fork for checkpoint --leave-running); sending the last
  // pages and the process state (that task running to end of stream). And how many pages that
  // last send carried.
  uint64_t park_us = 0, sync_us = 0, spawn_us = 0, final_send_us = 0, final_pages = 0;
  uint64_t setup_ms = 0;
  uint64_t total_ms = 0;
  uint32_t throttle_percent = 0;  // auto-converge share of each period the program is parked

  bool operator==(const MigrationStats&) const = default;
};

enum class ControlVerb : uint8_t { kMigrate, kStatus, kCancel, kStats, kDone, kError, kOk };

struct ControlMessage {
  ControlVerb verb = ControlVerb::kStatus;
  MigrationOptions options;   // kMigrate
  MigrationStats stats;       // kStats, kDone
  int error_code = 0;         // kError: an absl::StatusCode
  std::string error_message;  // kError

  // The status a kError line stands for.
  absl::Status ToStatus() const;
};

// One line, ending in '\n'.
std::string EncodeControl(const ControlMessage& m);
// The same line as EncodeControl for a kDone message with these stats, written into buf without
// allocating (for a process whose other threads are parked and may hold the malloc lock).
// Returns its length with the '\n', or 0 when it does not fit in `cap`.
size_t EncodeDoneNoAlloc(const MigrationStats& stats, char* buf, size_t cap);
// One line, with or without its '\n'. InvalidArgument naming the bad token.
absl::StatusOr<ControlMessage> DecodeControl(std::string_view line);

// An error reply for `status`.
ControlMessage ErrorReply(const absl::Status& status);

// `procmig migrate --json` output: one JSON object, no newline.
std::string StatsToJson(const MigrationStats& s);

}  // namespace procmig

#endif  // PROCMIG_CONTROL_H_
