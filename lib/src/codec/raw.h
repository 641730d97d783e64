// Raw page codec: the page's bytes verbatim.
//
// Trivial on purpose, but it goes through the same checked entry points as the other codecs so the
// receiver's dispatch treats every encoding alike: a payload whose length is not exactly the page
// size is a corrupt stream (DataLoss), never a short or long copy. Pure functions; any thread.
#ifndef PROCMIG_CODEC_RAW_H_
#define PROCMIG_CODEC_RAW_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace procmig::raw {

// Copies the page into `out`. Returns page_size, or InvalidArgument when out_cap < page_size.
absl::StatusOr<size_t> Encode(const uint8_t* page, size_t page_size, uint8_t* out, size_t out_cap);

// Copies a raw payload into `page`. DataLoss (page untouched) unless len == page_size.
absl::Status Decode(const uint8_t* payload, size_t len, uint8_t* page, size_t page_size);

}  // namespace procmig::raw

#endif  // PROCMIG_CODEC_RAW_H_
