#include "codec/raw.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace procmig::raw {

absl::StatusOr<size_t> Encode(const uint8_t* page, size_t page_size, uint8_t* out, size_t out_cap) {
  if (out_cap < page_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("raw encode: output buffer of ", out_cap, " bytes < page size ", page_size));
  }
  std::memcpy(out, page, page_size);
  return page_size;
}

absl::Status Decode(const uint8_t* payload, size_t len, uint8_t* page, size_t page_size) {
  if (len != page_size) {
    return absl::DataLossError(
        absl::StrCat("raw decode: payload of ", len, " bytes, expected page size ", page_size));
  }
  std::memcpy(page, payload, page_size);
  return absl::OkStatus();
}

}  // namespace procmig::raw
