#include "codec/xbzrle.h"

#include <bit>
#include <cstring>

#include "absl/strings/str_cat.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace procmig::xbzrle {
namespace {

// The word-at-a-time scans below find the first differing byte with a count of trailing zeros,
// which is only the first byte in memory order on a little-endian machine.
static_assert(std::endian::native == std::endian::little);

inline uint64_t Load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// Returns the first index >= i where a and b differ, or n.
inline size_t SkipEqual(const uint8_t* a, const uint8_t* b, size_t i, size_t n) {
#if defined(__SSE2__)
  // Unchanged bytes dominate a sparse delta: 32 bytes per step with SSE2 (x86-64 baseline).
  while (i + 32 <= n) {
    __m128i e0 = _mm_cmpeq_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i)),
                                _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i)));
    __m128i e1 = _mm_cmpeq_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i + 16)),
                                _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i + 16)));
    uint32_t eq = static_cast<uint32_t>(_mm_movemask_epi8(e0)) |
                  (static_cast<uint32_t>(_mm_movemask_epi8(e1)) << 16);
    if (eq != 0xffffffffu) return i + std::countr_one(eq);
    i += 32;
  }
#endif
  while (i + 8 <= n) {
    uint64_t x = Load64(a + i) ^ Load64(b + i);
    if (x != 0) return i + (std::countr_zero(x) >> 3);
    i += 8;
  }
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

// Returns the first index >= i where a and b are equal, or n.
inline size_t SkipChanged(const uint8_t* a, const uint8_t* b, size_t i, size_t n) {
  constexpr uint64_t kLow = 0x0101010101010101ull;
  constexpr uint64_t kHigh = 0x8080808080808080ull;
  while (i + 8 <= n) {
    uint64_t x = Load64(a + i) ^ Load64(b + i);
    // Classic "has a zero byte": may flag bytes above a true zero byte, but never below one, so
    // the lowest flagged byte is exactly the first equal byte.
    uint64_t z = (x - kLow) & ~x & kHigh;
    if (z != 0) return i + (std::countr_zero(z) >> 3);
    i += 8;
  }
  while (i < n && a[i] != b[i]) ++i;
  return i;
}

inline size_t UlebSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

inline size_t PutUleb(uint8_t* p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = static_cast<uint8_t>(v | 0x80);
    v >>= 7;
  }
  p[n++] = static_cast<uint8_t>(v);
  return n;
}

// Reads one run length at delta[pos]. `what` names the run for the error message.
absl::Status ReadLength(const uint8_t* delta, size_t len, size_t* pos, size_t max_bytes,
                        const char* what, uint64_t* value) {
  const size_t start = *pos;
  uint64_t v = 0;
  for (size_t k = 0;; ++k) {
    if (start + k >= len) {
      return absl::DataLossError(
          absl::StrCat("xbzrle decode: truncated ", what, " length at offset ", start));
    }
    if (k == max_bytes) {
      return absl::DataLossError(absl::StrCat("xbzrle decode: overlong ", what,
                                              " length at offset ", start, " (more than ",
                                              max_bytes, " bytes)"));
    }
    const uint8_t b = delta[start + k];
    v |= static_cast<uint64_t>(b & 0x7f) << (7 * k);
    if ((b & 0x80) == 0) {
      // A final 0x00 after continuation bytes adds nothing: a non-minimal encoding, which an
      // honest encoder never writes. Rejecting it keeps every page's delta unique.
      if (k > 0 && b == 0) {
        return absl::DataLossError(absl::StrCat("xbzrle decode: overlong ", what,
                                                " length at offset ", start,
                                                " (non-minimal encoding)"));
      }
      *pos = start + k + 1;
      *value = v;
      return absl::OkStatus();
    }
  }
}

// One pass over the delta. The validating pass (kApply = false) reads only lengths; the applying
// pass runs only on a delta the first pass accepted, so it cannot fail half-way.
template <bool kApply>
absl::Status Walk(const uint8_t* delta, size_t len, uint8_t* page, size_t page_size) {
  const size_t max_bytes = UlebSize(page_size);
  size_t pos = 0;
  size_t d = 0;
  while (pos < len) {
    if (d == page_size) {
      return absl::DataLossError(absl::StrCat("xbzrle decode: ", len - pos,
                                              " trailing bytes at offset ", pos,
                                              " after the page is complete"));
    }
    const size_t zrun_at = pos;
    uint64_t zrun = 0;
    if (absl::Status s = ReadLength(delta, len, &pos, max_bytes, "unchanged-run", &zrun); !s.ok()) {
      return s;
    }
    if (zrun == 0 && zrun_at != 0) {
      return absl::DataLossError(absl::StrCat("xbzrle decode: empty unchanged run at offset ",
                                              zrun_at, " (only the first run may be empty)"));
    }
    if (zrun > page_size - d) {
      return absl::DataLossError(absl::StrCat("xbzrle decode: unchanged run of ", zrun,
                                              " bytes at offset ", zrun_at, " starts at page byte ",
                                              d, " and passes the page end ", page_size));
    }
    d += zrun;

    const size_t nzrun_at = pos;
    uint64_t nzrun = 0;
    if (absl::Status s = ReadLength(delta, len, &pos, max_bytes, "changed-run", &nzrun); !s.ok()) {
      return s;
    }
    if (nzrun == 0) {
      return absl::DataLossError(
          absl::StrCat("xbzrle decode: empty changed run at offset ", nzrun_at));
    }
    if (nzrun > page_size - d) {
      return absl::DataLossError(
          absl::StrCat("xbzrle decode: changed run of ", nzrun, " bytes at offset ", nzrun_at,
                       " starts at page byte ", d, " and passes the page end ", page_size));
    }
    if (nzrun > len - pos) {
      return absl::DataLossError(absl::StrCat("xbzrle decode: changed run of ", nzrun,
                                              " bytes at offset ", nzrun_at, " is truncated: only ",
                                              len - pos, " bytes of delta left"));
    }
    if constexpr (kApply) std::memcpy(page + d, delta + pos, nzrun);
    d += nzrun;
    pos += nzrun;
  }
  return absl::OkStatus();
}

}  // namespace

std::optional<size_t> Encode(const uint8_t* old_page, const uint8_t* new_page, size_t page_size,
                             uint8_t* out, size_t out_cap) {
  size_t d = 0;
  size_t i = 0;
  while (true) {
    const size_t zrun_start = i;
    i = SkipEqual(old_page, new_page, i, page_size);
    // The last unchanged run is implied by the page size and never written; for an identical
    // page that leaves an empty delta.
    if (i == page_size) return d;
    const size_t zrun = i - zrun_start;
    // A pair needs its zrun length, one byte of changed-run length and one literal at least:
    // give up before scanning the changed run when even that does not fit.
    if (UlebSize(zrun) + 2 > out_cap - d) return std::nullopt;

    const size_t nzrun_start = i;
    i = SkipChanged(old_page, new_page, i, page_size);
    const size_t nzrun = i - nzrun_start;
    if (UlebSize(zrun) + UlebSize(nzrun) + nzrun > out_cap - d) return std::nullopt;
    d += PutUleb(out + d, zrun);
    d += PutUleb(out + d, nzrun);
    std::memcpy(out + d, new_page + nzrun_start, nzrun);
    d += nzrun;
  }
}

absl::Status Decode(const uint8_t* delta, size_t len, uint8_t* page, size_t page_size) {
  if (absl::Status s = Walk<false>(delta, len, page, page_size); !s.ok()) return s;
  return Walk<true>(delta, len, page, page_size);
}

size_t MaxEncodedSize(size_t page_size) {
  // Worst case is alternating unchanged/changed bytes: 3 delta bytes per 2 page bytes, plus the
  // first pair's empty unchanged run.
  return page_size + page_size / 2 + 2;
}

}  // namespace procmig::xbzrle
