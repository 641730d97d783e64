// ReceiveSession: one whole session on the destination: read every channel of an accepted group
// into a Receiver, and when the stream is complete, verify it, store the image and ack.
//
// Run() starts one reader thread per channel (each calls Receiver::Feed with what it reads). The
// image is built in the directory `image_dir(session_id)` chooses by an ImageWriter, made at the
// first block (so a non-empty directory is refused before memory is sent): the blocks are written
// to their files there as their pages arrive (ReceiverOptions::block_file). The thread whose Feed
// completes the stream runs Finish(), commits the image and only then acks, so the sender is told
// "safe" only about an image that is on disk. Any failure (a corrupt page, a truncated channel, a
// digest mismatch, a store error) fails the receiver, which tells the sender, and aborts every
// channel so no thread stays blocked; Run returns the first error and no image is left behind. With
// `deliver` set the completed session goes there instead of to an image (live restore). Run blocks
// until every reader thread has finished (the sender closes after the ack).
#ifndef PROCMIG_MIGRATION_RECEIVE_SESSION_H_
#define PROCMIG_MIGRATION_RECEIVE_SESSION_H_

#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "migration/image_manifest.h"
#include "migration/receiver.h"
#include "transport/channel_group_receiver.h"

namespace procmig {

struct ReceiveSessionOptions {
  ReceiverOptions receiver;
  // Where the image of the session goes; called once, when the stream is complete.
  std::function<std::string(const std::array<uint8_t, 16>& session_id)> image_dir;
  // When set, the completed session is handed here instead of being stored (live restore): the
  // blocks (memory[i] holds manifest.blocks[i]) and the process-state payload. The ack follows
  // only when it returns OK; its error fails the session and goes to the sender.
  std::function<absl::Status(const ImageManifest& manifest,
                             std::span<const BlockMemory* const> memory,
                             std::span<const uint8_t> process_state)>
      deliver;
  bool sync = true;  // fsync the image before acking
  size_t chunk_bytes = 1u << 20;
};

struct ReceiveSessionResult {
  ImageManifest manifest;
  std::string image_dir;
  // Stored sessions: Finish() (checks, digests) and the image's commit (the small files, the
  // sync of what write-behind had not written yet, the rename), before the ack.
  uint64_t finish_us = 0;
  uint64_t commit_us = 0;
};

absl::StatusOr<ReceiveSessionResult> RunReceiveSession(ChannelGroupReceiver& group,
                                                       const ReceiveSessionOptions& options);

}  // namespace procmig

#endif  // PROCMIG_MIGRATION_RECEIVE_SESSION_H_
