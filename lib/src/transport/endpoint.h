// Endpoint: where a stream goes or comes from, parsed from what a user types, and the socket and
// file plumbing that turns one into a connected descriptor.
//
//   HOST:PORT       TCP (HOST a name, an IPv4 address, or "[v6]"); "[::1]:7000"
//   unix:/path      UNIX stream socket; "unix:@name" is the abstract namespace
//   file:/path      a recorded stream; also any text containing '/' that is not one of the above
//
// Sockets: TCP_NODELAY is set on every TCP socket (batches are already large; small control
// records must not wait for Nagle), and SocketOptions can ask for larger kernel buffers. Errors
// name the step and the address: "connect 127.0.0.1:7000: ECONNREFUSED (Connection refused)".
// All functions are thread-safe (no shared state).
#ifndef PROCMIG_TRANSPORT_ENDPOINT_H_
#define PROCMIG_TRANSPORT_ENDPOINT_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "transport/unique_fd.h"

namespace procmig {

struct Endpoint {
  enum class Kind { kTcp, kUnix, kFile };
  Kind kind = Kind::kTcp;
  std::string host;   // kTcp: without brackets
  uint16_t port = 0;  // kTcp; 0 in Listen means "any free port"
  std::string path;   // kUnix (leading '@' = abstract) and kFile

  // InvalidArgument with the reason for anything unparsable.
  static absl::StatusOr<Endpoint> Parse(std::string_view text);
  // The canonical text form; Parse(ToString()) round-trips.
  std::string ToString() const;
};

struct SocketOptions {
  int send_buffer_bytes = 0;  // SO_SNDBUF when > 0
  int recv_buffer_bytes = 0;  // SO_RCVBUF when > 0
  int backlog = 64;
};

// A listening socket for kTcp or kUnix (a stale UNIX socket file at the path is replaced).
absl::StatusOr<UniqueFd> Listen(const Endpoint& endpoint, const SocketOptions& options = {});
// The address a listening or connected socket is bound to (for port 0 listens).
absl::StatusOr<Endpoint> LocalEndpoint(int fd);
// Waits up to timeout_ms (-1: forever) for a connection. DeadlineExceeded on timeout.
absl::StatusOr<UniqueFd> Accept(int listen_fd, const SocketOptions& options = {},
                                int timeout_ms = -1);
// Connects to kTcp (every resolved address in turn) or kUnix.
absl::StatusOr<UniqueFd> Connect(const Endpoint& endpoint, const SocketOptions& options = {});
// A kFile endpoint opened for writing a recorded stream (created or truncated, mode 0600) or for
// reading one.
absl::StatusOr<UniqueFd> OpenForWrite(const Endpoint& endpoint);
absl::StatusOr<UniqueFd> OpenForRead(const Endpoint& endpoint);

}  // namespace procmig

#endif  // PROCMIG_TRANSPORT_ENDPOINT_H_
