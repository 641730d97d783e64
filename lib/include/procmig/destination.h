// procmig's public API for the destination side: `procmig receive`, the in-process receiver of
// `procmig checkpoint --to DIR`, and `procmig inspect DIR`.
//
// RunReceiver() listens, accepts one session at a time (all channels of one sender), receives it
// with every page's crc32c checked, verifies the final per-block digests the sender put in the
// process-state record, stores a checkpoint image (lib/src/migration/image_manifest.h has the
// format), and only then acks, so a sender never exits on the word of a receiver that could not
// store its image. A failed session leaves no image behind and the sender is told why.
//
// With `once` the image goes into store_dir itself (which must be absent or empty), and RunReceiver
// returns after the first session, with its report or its error. Without it every session is stored
// in store_dir/<session-id>/ (32 hex digits) and RunReceiver serves sessions until the listening
// socket fails; each outcome is reported through the callback.
//
// The callback runs on the calling thread. Nothing here keeps global state; RunReceiver may run on
// several threads for different listen addresses.
#ifndef PROCMIG_DESTINATION_H_
#define PROCMIG_DESTINATION_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "procmig/restore.h"

namespace procmig {

struct ReceiveOptions {
  std::string listen;     // "ADDR:PORT" (port 0: any free port) or "unix:/path"
  std::string store_dir;  // empty: restore each session live as a running process
  // Live restore: namespace, timeout, redirected stdio (restore.stdio_fds: every session's
  // process gets a copy of the same descriptors; live restore only, not with store_dir).
  RestoreOptions restore;
  bool once = false;
  int channels = 0;                // expected channels per session; 0 = what the sender announces
  std::string transport = "auto";  // auto, io_uring, posix
  bool sync = true;                // fsync the image before acking
  bool populate = true;            // pre-fault block memory as blocks are announced
  int accept_timeout_ms = -1;      // -1: wait forever for a sender

  // InvalidArgument naming the bad field.
  absl::Status Validate() const;
};

struct ReceiveBlockReport {
  uint32_t id = 0;
  std::string name;
  uint64_t start = 0;
  uint64_t length = 0;
  uint64_t stored_pages = 0;  // pages holding data; the rest are holes
  uint32_t crc32c = 0;
  std::string digest;  // "ok", "mismatch" or "none" (the sender sent no digest for it)
};

struct ReceiveReport {
  std::string session_id;  // 32 hex digits
  std::string image_dir;
  uint32_t channels = 0;
  uint64_t iterations = 0;
  uint64_t pages = 0, zero_pages = 0, raw_pages = 0, xbzrle_pages = 0, zlib_pages = 0;
  uint64_t torn_pages = 0;
  uint64_t bytes = 0;        // stream bytes received
  uint64_t duration_ms = 0;  // first preamble to end of stream verified
  // Stored sessions, after the stream and before the ack: the checks and digests (Finish), and
  // the image's commit (what write-behind left to fsync, the small files, the rename).
  uint64_t finish_us = 0, commit_us = 0;
  uint64_t process_state_bytes = 0;
  std::vector<ReceiveBlockReport> blocks;
  std::optional<RestoreResult> restored;  // live restore: the running process
};

struct ReceiveEvent {
  enum class Kind { kListening, kSessionStored, kSessionFailed };  // stored = stored or restored
  Kind kind = Kind::kListening;
  std::string address;   // kListening: the bound address, e.g. "127.0.0.1:41234"
  ReceiveReport report;  // kSessionStored
  absl::Status error;    // kSessionFailed
};

absl::StatusOr<ReceiveReport> RunReceiver(const ReceiveOptions& options,
                                          const std::function<void(const ReceiveEvent&)>& on_event);

// A readable multi-line report: the session, totals, and one line per block with its digest.
std::string RenderReceiveReport(const ReceiveReport& report);

// True when `path` is a directory holding a MANIFEST (a stored image).
bool IsImageDirectory(const std::string& path);

struct ImageInspectReport {
  std::string text;
  absl::Status verify_status;  // OK, or DataLoss naming the first file that does not match
};
// Fails when `dir` holds no readable, well-formed manifest.
absl::StatusOr<ImageInspectReport> InspectImage(const std::string& dir);

}  // namespace procmig

#endif  // PROCMIG_DESTINATION_H_
