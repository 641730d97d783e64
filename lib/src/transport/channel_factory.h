// OpenChannel: the one place that decides which Channel implementation carries a descriptor.
//
// kAuto (the default) tries io_uring and falls back to POSIX readv/writev when the kernel or a
// seccomp filter refuses it, and says so: the result carries the chosen kind and a one-line
// reason ("io_uring_setup (queue depth 64) for ...: EPERM (Operation not permitted); using POSIX
// readv/writev") for logs and `procmig check`. With kind kAuto and read_environment set,
// PROCMIG_TRANSPORT=io_uring|posix|auto overrides the automatic choice; an explicit kIoUring
// fails instead of falling back. Thread-safe (reads the environment, keeps no state).
#ifndef PROCMIG_TRANSPORT_CHANNEL_FACTORY_H_
#define PROCMIG_TRANSPORT_CHANNEL_FACTORY_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "transport/channel.h"
#include "transport/transport_config.h"
#include "transport/unique_fd.h"

namespace procmig {

inline constexpr char kTransportEnvVar[] = "PROCMIG_TRANSPORT";

struct OpenedChannel {
  std::unique_ptr<Channel> channel;
  TransportKind kind = TransportKind::kPosix;  // never kAuto
  std::string reason;                          // why this kind
};

// Takes ownership of `fd`. `name` identifies the channel in errors ("tcp 127.0.0.1:7000").
absl::StatusOr<OpenedChannel> OpenChannel(UniqueFd fd, const TransportConfig& config,
                                          std::string name);

}  // namespace procmig

#endif  // PROCMIG_TRANSPORT_CHANNEL_FACTORY_H_
