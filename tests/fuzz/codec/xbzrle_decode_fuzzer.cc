// Feeds arbitrary bytes to xbzrle::Decode as a delta. Invariants: no out-of-bounds access (ASan),
// every error is DataLoss, and a rejected delta leaves the page exactly as it was.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "codec/xbzrle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  // The first two bytes pick the page size (1 .. 16384), so small pages make run-past-end cases
  // easy to reach and large ones exercise two-byte lengths.
  const size_t page_size = 1 + ((size_t{data[0]} << 8 | data[1]) % 16384);
  std::vector<uint8_t> page(page_size);
  for (size_t i = 0; i < page_size; ++i) page[i] = static_cast<uint8_t>(i * 31 + 7);
  const std::vector<uint8_t> before = page;
  // An exact-size copy, so ASan sees any read past the delta.
  std::vector<uint8_t> delta(data + 2, data + size);
  absl::Status s = procmig::xbzrle::Decode(delta.data(), delta.size(), page.data(), page_size);
  if (!s.ok()) {
    if (s.code() != absl::StatusCode::kDataLoss) std::abort();
    if (page != before) std::abort();
  }
  return 0;
}
