// The restore step shared by `procmig restore DIR` (RestoreImage) and the live restore of
// `procmig receive` (RunReceiver): decode the process state, refuse blocks whose stored digest did
// not match, start the process from the blocks where they are now, and report it.
#ifndef PROCMIG_API_RESTORE_INTERNAL_H_
#define PROCMIG_API_RESTORE_INTERNAL_H_

#include <cstdint>
#include <span>

#include "absl/status/statusor.h"
#include "migration/image_manifest.h"
#include "procmig/restore.h"
#include "restore/restore_process.h"

namespace procmig {

// Where one block's bytes are in this process; `mirrored`: also at its final address, in a
// premapped mapping of its file (PlacedBlock::mirrored); `grows_down`: mapped MAP_GROWSDOWN.
struct BlockLocation {
  uint64_t address = 0;
  bool mirrored = false;
  bool grows_down = false;
};

// What was done ahead of the restore, while the stream arrived or the image was read.
struct RestorePrepared {
  const VerifiedFiles* verified = nullptr;  // files checked up front (null: all get the full check)
  std::span<const PremappedFile> premapped;  // file mappings made at their final addresses
  std::span<const MemoryRegion> layout;      // our maps as read up front (empty: read anew)
};

// The process-state record of an image or a stream; DataLoss "process state: ..." when malformed.
absl::StatusOr<ProcessStateRecord> DecodeStateForRestore(std::span<const uint8_t> process_state);

// `where[i]` is where blocks[i]'s bytes are in this process. `live`: the source parked the
// threads just now on this host, so the whole pause is reported too.
absl::StatusOr<RestoreResult> StartRestore(const ProcessStateRecord& state,
                                           std::span<const ImageBlock> blocks,
                                           std::span<const BlockLocation> where,
                                           const RestoreOptions& options, bool live,
                                           const RestorePrepared& prepared = {});

}  // namespace procmig

#endif  // PROCMIG_API_RESTORE_INTERNAL_H_
