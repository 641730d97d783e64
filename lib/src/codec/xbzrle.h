// XBZRLE: XOR-based zero-run-length delta of a page against its previous contents, with QEMU's
// format (migration/xbzrle.c). For pages smaller than 16 KiB (every run length fits QEMU's
// two-byte ULEB128) the output is byte for byte what QEMU's encoder writes.
//
//   delta  = empty                      ; the page is unchanged
//          | pair+
//   pair   = zrun nzrun
//   zrun   = uleb128                    ; bytes equal to the old page; 0 only in the first pair
//   nzrun  = uleb128 byte{length}       ; length >= 1; the new bytes verbatim
//
// The trailing run of unchanged bytes is never written. A ULEB128 length must be minimal (no
// redundant 0x80 continuation bytes) and at most as long as the encoding of the page size.
//
// Pure functions; the previous contents (the page cache on the sender, the page itself on the
// receiver) are passed in by the caller. Any thread. Page size is any value >= 1.
#ifndef PROCMIG_CODEC_XBZRLE_H_
#define PROCMIG_CODEC_XBZRLE_H_

#include <cstddef>
#include <cstdint>
#include <optional>

#include "absl/status/status.h"

namespace procmig::xbzrle {

// Encodes the delta from `old_page` to `new_page` into `out`.
// Returns the delta's length: 0 when the pages are identical (nothing needs sending), or
// std::nullopt when the delta would exceed out_cap bytes ("does not fit": send the page another
// way). Stops scanning as soon as it knows the delta will not fit. Passing out_cap < page_size
// is how a caller says "only if it beats raw". `out` may be written to even on nullopt.
std::optional<size_t> Encode(const uint8_t* old_page, const uint8_t* new_page, size_t page_size,
                             uint8_t* out, size_t out_cap);

// Applies a delta to `page`, which holds the old contents on entry and the new ones on success.
// Every malformed delta is rejected with DataLoss naming the fault and its offset: a truncated
// or overlong length, a zero-length run where the format forbids it, a run past the page end,
// literal bytes missing, or bytes left after the page is complete.
//
// On error the page is unchanged: the delta is validated in a first pass that reads only the
// lengths (cheap: it skips over the literal bytes), and applied in a second pass. That avoids a
// scratch page and makes the decoder safe to run straight into a live mapping.
absl::Status Decode(const uint8_t* delta, size_t len, uint8_t* page, size_t page_size);

// Upper bound on a delta's length for this page size (every byte changed, one run). A buffer of
// this size never yields "does not fit".
size_t MaxEncodedSize(size_t page_size);

}  // namespace procmig::xbzrle

#endif  // PROCMIG_CODEC_XBZRLE_H_
