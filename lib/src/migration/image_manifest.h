// ImageManifest: what a stored checkpoint image holds, and its on-disk text form (MANIFEST).
//
// A checkpoint image is a directory:
//   MANIFEST             this text, written last (an image without it is not an image)
//   block-<id>.bin       one file per RAM block: its memory at the end of the stream, `length`
//                        bytes; pages never holding data are holes (a sparse file)
//   process-state.bin    the process_state record's payload, byte for byte as the sender sent it
//
// MANIFEST grammar (version 1; one item per line, fields separated by one space, values never
// contain spaces: names are percent-encoded; numbers are decimal unless written 0x...):
//   "procmig-image 1"
//   "page_size" N
//   "session" HEX32                      the stream's 16-byte session id
//   "channels" N
//   "iterations" N                       iteration records on the main channel (final included)
//   "process_state" LENGTH "crc32c=0x" HEX8
//   "stats" key=value ...                (keys: see ReceiveStats, in this order)
//   "block" ID "start=0x" HEX "length=" N "flags=0x" HEX "stored_pages=" N "crc32c=0x" HEX8
//           "digest=" (none | ok | mismatch) "sent=" (- | ALG ":" HEX) "name=" PCT
//   "end"
// crc32c is of the block's full content (`length` bytes, holes read as zeros). Unknown line
// keywords, missing lines and a version other than 1 are DataLoss when parsing. Pure value
// code; any thread.
#ifndef PROCMIG_MIGRATION_IMAGE_MANIFEST_H_
#define PROCMIG_MIGRATION_IMAGE_MANIFEST_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace procmig {

inline constexpr uint32_t kImageVersion = 1;
inline constexpr char kManifestFile[] = "MANIFEST";
inline constexpr char kProcessStateFile[] = "process-state.bin";
inline constexpr size_t kMaxManifestBytes = 32u << 20;

// Counted by the receiver over all channels.
struct ReceiveStats {
  uint64_t pages = 0;  // page entries applied (torn ones excluded)
  uint64_t zero_pages = 0;
  uint64_t raw_pages = 0;
  uint64_t xbzrle_pages = 0;
  uint64_t zlib_pages = 0;
  uint64_t torn_pages = 0;
  uint64_t bytes = 0;  // stream bytes read, preambles included
  uint64_t duration_ms = 0;
  bool operator==(const ReceiveStats&) const = default;
};

enum class DigestState : uint8_t { kNone, kOk, kMismatch };
const char* DigestStateName(DigestState s);

struct ImageBlock {
  uint32_t id = 0;
  uint32_t flags = 0;  // wire block flags: prot bits and kind
  uint64_t start = 0;
  uint64_t length = 0;
  uint64_t stored_pages = 0;  // pages written to the file (the rest are holes)
  uint32_t crc32c = 0;
  DigestState digest = DigestState::kNone;
  std::string sent_digest;  // "ALG:HEX" as the sender stated it, empty if none
  std::string name;
  bool operator==(const ImageBlock&) const = default;

  std::string FileName() const;  // BlockFileName(id)
};

// The file in an image directory that holds block `id`: "block-<id>.bin".
std::string BlockFileName(uint32_t id);

struct ImageManifest {
  uint32_t page_size = 4096;
  std::array<uint8_t, 16> session_id{};
  uint32_t channels = 1;
  uint64_t iterations = 0;
  uint64_t process_state_length = 0;
  uint32_t process_state_crc32c = 0;
  ReceiveStats stats;
  std::vector<ImageBlock> blocks;
  bool operator==(const ImageManifest&) const = default;
};

std::string EncodeManifest(const ImageManifest& m);
absl::StatusOr<ImageManifest> ParseManifest(std::string_view text);

// Lower-case hex of the session id (the directory name `procmig receive` gives a session).
std::string SessionIdHex(const std::array<uint8_t, 16>& id);
// Its inverse: 32 hex digits (either case) into `out`; false otherwise.
bool ParseSessionIdHex(absl::string_view hex, std::array<uint8_t, 16>* out);

}  // namespace procmig

#endif  // PROCMIG_MIGRATION_IMAGE_MANIFEST_H_
