#include "transport/channel_factory.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "transport/io_uring_channel.h"
#include "transport/posix_channel.h"

namespace procmig {

absl::StatusOr<OpenedChannel> OpenChannel(UniqueFd fd, const TransportConfig& config,
                                          std::string name) {
  RETURN_IF_ERROR(config.Validate());
  TransportKind kind = config.kind;
  std::string why = "chosen by config";
  if (kind == TransportKind::kAuto && config.read_environment) {
    const char* env = std::getenv(kTransportEnvVar);
    if (env != nullptr && env[0] != '\0') {
      absl::StatusOr<TransportKind> parsed = ParseTransportKind(env);
      if (!parsed.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(kTransportEnvVar, "=", env, ": expected auto, io_uring or posix"));
      }
      kind = *parsed;
      why = absl::StrCat("chosen by ", kTransportEnvVar, "=", env);
    }
  }

  OpenedChannel out;
  if (kind == TransportKind::kPosix) {
    ASSIGN_OR_RETURN(out.channel, PosixChannel::Create(std::move(fd), std::move(name)));
    out.kind = TransportKind::kPosix;
    out.reason = absl::StrCat("POSIX readv/writev: ", why);
    return out;
  }

  absl::StatusOr<std::unique_ptr<IoUringChannel>> ring = IoUringChannel::Create(&fd, config, name);
  if (ring.ok()) {
    std::string zc;
    if (config.send_zerocopy) {
      zc = (*ring)->zerocopy_active() ? ", SENDMSG_ZC"
                                      : absl::StrCat("; ", (*ring)->zerocopy_fallback_reason());
    }
    out.reason = absl::StrCat("io_uring (queue depth ", config.queue_depth, zc,
                              "): ", kind == TransportKind::kAuto ? "available" : why);
    out.channel = *std::move(ring);
    out.kind = TransportKind::kIoUring;
    return out;
  }
  if (kind == TransportKind::kIoUring) return ring.status();
  // Auto: anything io_uring setup refused (seccomp EPERM, ENOSYS, memlock ENOMEM) means POSIX.
  ASSIGN_OR_RETURN(out.channel, PosixChannel::Create(std::move(fd), std::move(name)));
  out.kind = TransportKind::kPosix;
  out.reason = absl::StrCat(ring.status().message(), "; using POSIX readv/writev");
  return out;
}

}  // namespace procmig
