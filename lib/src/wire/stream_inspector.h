// StreamInspector: reads a whole recorded stream with StreamReader and summarizes it, for
// `procmig inspect FILE` and for tests.
//
// A corrupt stream is not an error of the inspection: the summary holds everything read up to
// the bad record and `error` holds the reader's DataLoss (with the record's offset and the
// failed check); only an unreadable file or fd is a failed StatusOr. The inspector allocates
// freely (it never runs inside a parked program). Stateless; any thread.
#ifndef PROCMIG_WIRE_STREAM_INSPECTOR_H_
#define PROCMIG_WIRE_STREAM_INSPECTOR_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "wire/wire_format.h"

namespace procmig::wire {

struct StreamSummary {
  struct Block {
    uint32_t id = 0;
    std::string name;
    uint32_t flags = 0;
    uint64_t start = 0;
    uint64_t length = 0;
    uint64_t page_count = 0;
    uint64_t pages_received = 0;  // pages in page and zero runs for this block (with resends)
    uint64_t added_at = 0;        // stream offset of the block_add
    bool removed = false;
    uint64_t resizes = 0;
  };
  struct Iteration {
    IterationMarker marker;
    uint64_t offset = 0;
  };

  std::optional<Preamble> preamble;
  uint64_t bytes = 0;    // bytes of complete records (up to the error, if any)
  uint64_t records = 0;  // records including end_of_stream; the preamble is not one
  std::array<uint64_t, kNumRecordTypeSlots> records_per_type{};
  std::vector<Block> blocks;  // in order of addition, removed ones included
  std::array<uint64_t, kNumEncodingSlots> pages_per_encoding{};
  std::array<uint64_t, kNumEncodingSlots> bytes_per_encoding{};  // encoded bytes
  uint64_t zero_run_pages = 0;  // pages named by zero_run records (not in pages_per_encoding)
  uint64_t torn_pages = 0;
  std::vector<Iteration> iterations;
  uint64_t process_state_bytes = 0;
  uint64_t restore_check_bytes = 0;
  std::vector<Ack> acks;
  std::vector<std::pair<uint32_t, std::string>> errors;  // error records: code, message
  bool end_of_stream = false;
  bool aborted = false;
  absl::Status error;  // OK, or why reading stopped (DataLoss with the offset)
};

class StreamInspector {
 public:
  // Reads up to EOF. Errors: the open/read failure (not a corruption).
  static absl::StatusOr<StreamSummary> InspectFile(const std::string& path);
  static absl::StatusOr<StreamSummary> InspectFd(int fd);
  // A stream held in memory, fed in pieces of `chunk` bytes.
  static StreamSummary InspectBytes(std::span<const uint8_t> bytes, size_t chunk = 1 << 16);

  // A readable, multi-line rendering; ends with "OK: ..." or "CORRUPT: <error>".
  static std::string Render(const StreamSummary& summary);
};

}  // namespace procmig::wire

#endif  // PROCMIG_WIRE_STREAM_INSPECTOR_H_
