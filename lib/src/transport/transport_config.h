// TransportConfig: how channels move bytes, fixed when a channel is opened.
//
// An immutable value, validated once by Validate() (OpenChannel calls it) and copied into each
// channel. `kind` picks the implementation: kAuto tries io_uring and falls back to POSIX
// readv/writev with a stated reason; the PROCMIG_TRANSPORT environment variable
// (io_uring|posix|auto) is consulted only when `kind` is kAuto and `read_environment` is set,
// so an explicit choice in code always wins over the environment.
#ifndef PROCMIG_TRANSPORT_TRANSPORT_CONFIG_H_
#define PROCMIG_TRANSPORT_TRANSPORT_CONFIG_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace procmig {

enum class TransportKind { kAuto, kIoUring, kPosix };

// "auto", "io_uring", "posix".
std::string_view TransportKindName(TransportKind kind);
// Inverse of TransportKindName; InvalidArgument for anything else.
absl::StatusOr<TransportKind> ParseTransportKind(std::string_view name);

struct TransportConfig {
  TransportKind kind = TransportKind::kAuto;
  // Consult PROCMIG_TRANSPORT when kind is kAuto.
  bool read_environment = true;

  // io_uring: entries in each ring (one ring per direction). Power of two in [2, 4096].
  uint32_t queue_depth = 64;
  // io_uring: a write batch is cut into SQEs of at most this many bytes (and at most IOV_MAX
  // iovecs), linked with IOSQE_IO_LINK so the kernel keeps their order. Min 4096.
  size_t max_chunk_bytes = 1u << 20;
  // io_uring: ask the kernel to retry short socket sends itself (MSG_WAITALL). Off exercises the
  // channel's own resubmission of remainders.
  bool send_waitall = true;
  // io_uring, sockets only: IORING_OP_SENDMSG_ZC. Falls back to plain sendmsg, with the reason
  // recorded, where the kernel or the socket refuses it.
  bool send_zerocopy = false;

  // Test hook: when non-zero, io_uring setup behaves as if io_uring_setup failed with this errno
  // (e.g. EPERM as under Docker's default seccomp profile).
  int io_uring_setup_errno_for_test = 0;

  absl::Status Validate() const;
};

}  // namespace procmig

#endif  // PROCMIG_TRANSPORT_TRANSPORT_CONFIG_H_
