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
// premapped mapping of its file (PlacedBlock::mirrored).
struct BlockLocation {
  uint64_t address = 0;
  bool mirrored = false;
};

// `where[i]` is where blocks[i]'s bytes are in this process. `live`: the source parked the
// threads just now on this host, so the whole pause is reported too. `verified`: the files a
// live receiver checked up front (null: all get the full check). `premapped`: file mappings it
// made ahead at their final addresses.
absl::StatusOr<RestoreResult> StartRestore(std::span<const uint8_t> process_state,
                                           std::span<const ImageBlock> blocks,
                                           std::span<const BlockLocation> where,
                                           const RestoreOptions& options, bool live,
                                           const VerifiedFiles* verified = nullptr,
                                           std::span<const PremappedFile> premapped = {});

}  // namespace procmig

#endif  // PROCMIG_API_RESTORE_INTERNAL_H_
