#include "base/coding.h"

namespace procmig {

size_t EncodeUleb128(uint8_t* p, size_t cap, uint64_t v) {
  size_t n = 0;
  do {
    if (n == cap) return 0;
    uint8_t b = v & 0x7f;
    v >>= 7;
    if (v != 0) b |= 0x80;
    p[n++] = b;
  } while (v != 0);
  return n;
}

size_t DecodeUleb128(const uint8_t* p, size_t len, uint64_t* v, size_t max_bytes) {
  uint64_t result = 0;
  for (size_t i = 0; i < len && i < max_bytes && i < 10; ++i) {
    uint64_t bits = p[i] & 0x7f;
    // The 10th byte may only contribute the top bit of a uint64.
    if (i == 9 && bits > 1) return 0;
    result |= bits << (7 * i);
    if ((p[i] & 0x80) == 0) {
      *v = result;
      return i + 1;
    }
  }
  return 0;
}

}  // namespace procmig
