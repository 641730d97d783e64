#include "migration/digest_verifier.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "migration/process_state.h"

namespace procmig {

absl::StatusOr<std::vector<BlockDigestCheck>> VerifyBlockDigests(
    std::span<const uint8_t> process_state, std::span<const ReceivedBlockView> blocks) {
  std::vector<BlockDigestCheck> out;
  if (process_state.empty()) return out;
  absl::StatusOr<ProcessStateRecord> r = DecodeProcessState(process_state);
  if (!r.ok()) {
    return absl::DataLossError(absl::StrCat("decode process state: ", r.status().message()));
  }
  for (const BlockDigest& d : r->digests) {
    const ReceivedBlockView* b = nullptr;
    for (const ReceivedBlockView& v : blocks) {
      if (v.id == d.block_id) b = &v;
    }
    if (b == nullptr) {
      return absl::DataLossError(absl::StrCat("the process state has a digest for block ",
                                              d.block_id, ", which was not received"));
    }
    BlockDigestCheck c;
    c.block_id = d.block_id;
    c.sent = absl::StrFormat("crc32c:%08x/%d", d.crc32c, d.length);
    c.state = (d.length == b->length && d.crc32c == b->crc32c) ? DigestState::kOk
                                                               : DigestState::kMismatch;
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace procmig
