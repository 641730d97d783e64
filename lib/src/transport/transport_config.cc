#include "transport/transport_config.h"

#include "absl/strings/str_cat.h"

namespace procmig {

std::string_view TransportKindName(TransportKind kind) {
  switch (kind) {
    case TransportKind::kAuto:
      return "auto";
    case TransportKind::kIoUring:
      return "io_uring";
    case TransportKind::kPosix:
      return "posix";
  }
  return "unknown";
}

absl::StatusOr<TransportKind> ParseTransportKind(std::string_view name) {
  for (TransportKind k : {TransportKind::kAuto, TransportKind::kIoUring, TransportKind::kPosix}) {
    if (name == TransportKindName(k)) return k;
  }
  return absl::InvalidArgumentError(absl::StrCat("parse transport kind \"", std::string(name),
                                                 "\": expected auto, io_uring or posix"));
}

absl::Status TransportConfig::Validate() const {
  if (queue_depth < 2 || queue_depth > 4096 || (queue_depth & (queue_depth - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("transport config: queue_depth ", queue_depth,
                                                   " is not a power of two in [2, 4096]"));
  }
  if (max_chunk_bytes < 4096 || max_chunk_bytes > (1u << 30)) {
    return absl::InvalidArgumentError(absl::StrCat("transport config: max_chunk_bytes ",
                                                   max_chunk_bytes, " is outside [4096, 1 GiB]"));
  }
  if (io_uring_setup_errno_for_test < 0) {
    return absl::InvalidArgumentError("transport config: io_uring_setup_errno_for_test < 0");
  }
  return absl::OkStatus();
}

}  // namespace procmig
