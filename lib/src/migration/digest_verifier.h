// VerifyBlockDigests: the DigestVerifier the destination uses in production. It decodes the
// process_state record (process_state.h, the source side's format) and compares each block
// digest it carries (block id, length, crc32c of the final content) with the received block.
//
// A stream without a process_state record has no digests: every block reports kNone. A record
// that does not decode, or a digest naming a block that is not live at the end, is DataLoss; a
// length or crc32c difference is reported as kMismatch (the Receiver turns it into DataLoss
// naming the block). Pure; any thread.
#ifndef PROCMIG_MIGRATION_DIGEST_VERIFIER_H_
#define PROCMIG_MIGRATION_DIGEST_VERIFIER_H_

#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "migration/receiver.h"

namespace procmig {

absl::StatusOr<std::vector<BlockDigestCheck>> VerifyBlockDigests(
    std::span<const uint8_t> process_state, std::span<const ReceivedBlockView> blocks);

}  // namespace procmig

#endif  // PROCMIG_MIGRATION_DIGEST_VERIFIER_H_
