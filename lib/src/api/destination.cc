#include "procmig/destination.h"

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "migration/digest_verifier.h"
#include "migration/image_inspect.h"
#include "migration/image_store.h"
#include "migration/image_writer.h"
#include "migration/receive_session.h"
#include "migration/restore_check.h"
#include "os/descriptor_table.h"
#include "restore/file_premaps.h"
#include "restore_internal.h"
#include "transport/channel_group_receiver.h"
#include "transport/endpoint.h"
#include "transport/transport_config.h"
#include "wire/wire_format.h"

namespace procmig {
namespace {

// OK when `dir` is absent or an empty directory.
absl::Status CheckFreshTarget(const std::string& dir) {
  struct stat st;
  if (stat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return ErrnoStatus(absl::StrCat("check store directory ", dir), errno);
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("store ", dir, ": exists and is not a directory"));
  }
  if (IsImageDirectory(dir)) {
    return absl::InvalidArgumentError(
        absl::StrCat("store ", dir, ": already holds an image (choose a new directory)"));
  }
  return absl::OkStatus();  // ImageWriter::Begin refuses a non-empty directory itself
}

absl::Status EnsureDir(const std::string& dir) {
  if (mkdir(dir.c_str(), 0700) == 0 || errno == EEXIST) return absl::OkStatus();
  return ErrnoStatus(absl::StrCat("create store directory ", dir), errno);
}

ReceiveReport MakeReport(const ImageManifest& m, const std::string& dir) {
  ReceiveReport r;
  r.session_id = SessionIdHex(m.session_id);
  r.image_dir = dir;
  r.channels = m.channels;
  r.iterations = m.iterations;
  r.pages = m.stats.pages;
  r.zero_pages = m.stats.zero_pages;
  r.raw_pages = m.stats.raw_pages;
  r.xbzrle_pages = m.stats.xbzrle_pages;
  r.zlib_pages = m.stats.zlib_pages;
  r.torn_pages = m.stats.torn_pages;
  r.bytes = m.stats.bytes;
  r.duration_ms = m.stats.duration_ms;
  r.process_state_bytes = m.process_state_length;
  for (const ImageBlock& b : m.blocks) {
    r.blocks.push_back(
        {b.id, b.name, b.start, b.length, b.stored_pages, b.crc32c, DigestStateName(b.digest)});
  }
  return r;
}

// Best effort: the soft limit on open files up to the hard one.
void RaiseOpenFileLimit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &r);
  }
}

}  // namespace

absl::Status ReceiveOptions::Validate() const {
  if (listen.empty()) return absl::InvalidArgumentError("--listen ADDR:PORT is required");
  RETURN_IF_ERROR(Endpoint::Parse(listen).status());
  if (Endpoint::Parse(listen)->kind == Endpoint::Kind::kFile) {
    return absl::InvalidArgumentError(
        absl::StrCat("--listen ", listen, " is a file, not a socket address"));
  }
  if (channels < 0 || channels > wire::kMaxChannels) {
    return absl::InvalidArgumentError(
        absl::StrCat("--channels ", channels, " is not in [1, ", wire::kMaxChannels, "]"));
  }
  RETURN_IF_ERROR(ParseTransportKind(transport).status());
  if (!store_dir.empty()) {
    for (int fd : restore.stdio_fds) {
      if (fd >= 0) {
        return absl::InvalidArgumentError(
            "--stdin, --stdout and --stderr go with a live restore, not with --store");
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ReceiveReport> RunReceiver(
    const ReceiveOptions& options, const std::function<void(const ReceiveEvent&)>& on_event) {
  RETURN_IF_ERROR(options.Validate());
  const bool live = options.store_dir.empty();
  if (live) {
    // Fail before a sender streams anything if this host cannot restore at all.
  } else {
    if (options.once) {
      RETURN_IF_ERROR(CheckFreshTarget(options.store_dir));
    } else {
      RETURN_IF_ERROR(EnsureDir(options.store_dir));
      // A receiver killed mid-session left its image's temporary directory; the sender's retry
      // is a new session, which would never meet it.
      ImageWriter::RemoveStaleSessionTemps(options.store_dir);
    }
    // A stored session keeps every block's file open while it streams (two descriptors each):
    // a program with a thousand writable mappings would pass the usual soft limit of 1024.
    RaiseOpenFileLimit();
  }
  // While this process has one thread: a live restore's descriptors (its report pipe, the
  // rebuilt ones) and a stored session's block files then need no table growth, which with the
  // session's threads running waits for an RCU grace period (os/descriptor_table.h).
  (void)ReserveDescriptorSlots(1024);
  ASSIGN_OR_RETURN(Endpoint ep, Endpoint::Parse(options.listen));
  ASSIGN_OR_RETURN(UniqueFd listener, Listen(ep));
  ASSIGN_OR_RETURN(Endpoint bound, LocalEndpoint(listener.get()));
  ReceiveEvent listening;
  listening.address = bound.ToString();
  if (on_event) on_event(listening);

  TransportConfig config;
  ASSIGN_OR_RETURN(config.kind, ParseTransportKind(options.transport));
  ReceiveSessionOptions so;
  so.receiver.populate = options.populate;
  so.receiver.verify_digests = VerifyBlockDigests;
  so.sync = options.sync;
  so.image_dir = [&](const std::array<uint8_t, 16>& id) {
    return options.once ? options.store_dir
                        : absl::StrCat(options.store_dir, "/", SessionIdHex(id));
  };
  std::optional<RestoreResult> restored;  // set by deliver, per session
  VerifiedFiles verified;                 // set by check_restore, per session
  std::vector<MemoryRegion> layout;       // our maps as check_restore read them, per session
  // The files' mappings, made at their final addresses as soon as the check passed, so the
  // restorer keeps them instead of mapping them while the program is paused; per session.
  FilePremaps premaps;
  if (live) {
    // Before any memory arrives: refuse what cannot be restored here (the source runs on).
    so.receiver.check_restore = [&](std::span<const uint8_t> payload) -> absl::StatusOr<bool> {
      absl::StatusOr<RestoreCheckRecord> check = DecodeRestoreCheck(payload);
      if (!check.ok()) return check.status();
      absl::Status s = CheckRestorableUpFront(*check, &verified, &layout);
      if (!s.ok()) return absl::Status(s.code(), absl::StrCat("restore: ", s.message()));
      premaps.Add(PremapsOf(*check));
      return true;
    };
    // The library pages that arrive go straight into those mappings (FilePremaps::kept()).
    so.receiver.premapped = [&](uint64_t start, uint64_t length) {
      return premaps.Covers(start, length);
    };
    so.receiver.premap_stale = [&](uint64_t start, uint64_t length) {
      premaps.MarkStale(start, length);
    };
    so.deliver = [&](const ImageManifest& m, std::span<const BlockMemory* const> memory,
                     std::span<const uint8_t> process_state) -> absl::Status {
      std::vector<BlockLocation> where;
      for (const BlockMemory* mem : memory) {
        where.push_back({reinterpret_cast<uint64_t>(mem->bytes().data()), mem->mirror() != 0,
                         mem->grows_down()});
      }
      const std::vector<PremappedFile> kept = premaps.kept();
      absl::StatusOr<ProcessStateRecord> state = DecodeStateForRestore(process_state);
      if (!state.ok()) {
        premaps.Clear();
        return absl::Status(state.status().code(),
                            absl::StrCat("restore: ", state.status().message()));
      }
      absl::StatusOr<RestoreResult> r = StartRestore(*state, m.blocks, where, options.restore,
                                                     /*live=*/true, {&verified, kept, layout});
      premaps.Clear();  // the restored process has its own; ours only take address space
      if (!r.ok()) {
        return absl::Status(r.status().code(), absl::StrCat("restore: ", r.status().message()));
      }
      restored = *std::move(r);
      return absl::OkStatus();
    };
  }
  for (;;) {
    absl::StatusOr<ReceiveReport> outcome;
    restored.reset();
    verified.clear();
    layout.clear();
    premaps.Clear();
    if (live && !options.once) {
      // Serving sessions: reap the restored processes (or their inits) that ended meanwhile.
      while (waitpid(-1, nullptr, WNOHANG) > 0) {
      }
    }
    absl::StatusOr<std::unique_ptr<ChannelGroupReceiver>> group =
        ChannelGroupReceiver::Accept(listener.get(), config, options.accept_timeout_ms);
    if (!group.ok()) {
      outcome = absl::Status(
          group.status().code(),
          absl::StrCat("accept a sender on ", listening.address, ": ", group.status().message()));
    } else if (options.channels > 0 && (*group)->size() != static_cast<size_t>(options.channels)) {
      outcome = absl::InvalidArgumentError(absl::StrCat(
          "the sender opened ", (*group)->size(), " channels, --channels says ", options.channels));
    } else {
      absl::StatusOr<ReceiveSessionResult> r = RunReceiveSession(**group, so);
      if (r.ok()) {
        outcome = MakeReport(r->manifest, r->image_dir);
        outcome->finish_us = r->finish_us;
        outcome->commit_us = r->commit_us;
        outcome->restored = restored;
      } else {
        outcome = r.status();
      }
    }
    if (group.ok()) (void)(*group)->Close();
    if (options.once) return outcome;
    ReceiveEvent e;
    if (outcome.ok()) {
      e.kind = ReceiveEvent::Kind::kSessionStored;
      e.report = *outcome;
    } else {
      e.kind = ReceiveEvent::Kind::kSessionFailed;
      e.error = outcome.status();
      // A broken listening socket ends the service; a bad session does not.
      if (!group.ok() && !absl::IsDeadlineExceeded(group.status())) return outcome.status();
    }
    if (on_event) on_event(e);
  }
}

std::string RenderReceiveReport(const ReceiveReport& r) {
  std::string t;
  if (r.restored.has_value()) {
    absl::StrAppend(&t, "session ", r.session_id, " ", RenderRestoreResult(*r.restored), "\n");
  } else {
    absl::StrAppendFormat(&t, "session %s stored in %s (checks %.1f ms, commit %.1f ms)\n",
                          r.session_id, r.image_dir, r.finish_us / 1000.0, r.commit_us / 1000.0);
  }
  absl::StrAppend(&t, "  ", r.channels, " channel(s), ", r.iterations, " iteration(s), ", r.bytes,
                  " bytes in ", r.duration_ms, " ms\n");
  absl::StrAppend(&t, "  pages ", r.pages, ": zero ", r.zero_pages, ", raw ", r.raw_pages,
                  ", xbzrle ", r.xbzrle_pages, ", zlib ", r.zlib_pages, ", torn ", r.torn_pages,
                  "; process state ", r.process_state_bytes, " bytes\n");
  if (r.restored.has_value()) {
    size_t ok = 0;
    uint64_t bytes = 0;
    for (const ReceiveBlockReport& b : r.blocks) {
      ok += b.digest == "ok";
      bytes += b.length;
    }
    absl::StrAppend(&t, "  ", r.blocks.size(), " blocks (", bytes, " bytes), ", ok,
                    " with their digest checked\n");
    return t;
  }
  for (const ReceiveBlockReport& b : r.blocks) {
    absl::StrAppendFormat(&t, "  block %-4d 0x%016x %12d bytes, %8d pages stored, digest %-8s %s\n",
                          b.id, b.start, b.length, b.stored_pages, b.digest, b.name);
  }
  return t;
}

bool IsImageDirectory(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode) &&
         stat(absl::StrCat(path, "/", kManifestFile).c_str(), &st) == 0;
}

absl::StatusOr<ImageInspectReport> InspectImage(const std::string& dir) {
  ASSIGN_OR_RETURN(ImageInspection i, InspectImageDir(dir));
  return ImageInspectReport{std::move(i.text), std::move(i.verify_status)};
}

}  // namespace procmig
