// Zero-page detection: the cheapest encoding is "this page is all zeros", and the sender asks
// that question of every page it sends, so this must run near memory bandwidth.
//
// IsZeroPage() picks an AVX2 or SSE2 loop once, on first use, from __builtin_cpu_supports, and
// caches the choice in a function-local static const (no mutable global state). It stops at the
// first 128-byte (AVX2) or 64-byte (SSE2) block holding a non-zero byte. Pure; any thread. The
// length is any size (a page size is a runtime parameter), and the pointer needs no alignment.
#ifndef PROCMIG_CODEC_ZERO_PAGE_H_
#define PROCMIG_CODEC_ZERO_PAGE_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace procmig {

// True when all `len` bytes at `p` are zero (also for len == 0).
bool IsZeroPage(const uint8_t* p, size_t len);

// Which implementation IsZeroPage() uses on this CPU: "avx2" or "sse2".
std::string_view ZeroPageImplName();

// The individual implementations, so tests can check each against the others and the benchmark
// can compare them. IsZeroPageAvx2 must only be called when ZeroPageImplName() == "avx2".
bool IsZeroPagePortable(const uint8_t* p, size_t len);
bool IsZeroPageSse2(const uint8_t* p, size_t len);
bool IsZeroPageAvx2(const uint8_t* p, size_t len);

}  // namespace procmig

#endif  // PROCMIG_CODEC_ZERO_PAGE_H_
