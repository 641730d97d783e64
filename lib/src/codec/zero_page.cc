#include "codec/zero_page.h"

#include <immintrin.h>

#include <cstring>

namespace procmig {
namespace {

// Checks the few bytes the vector loops leave over, a word at a time then byte by byte.
bool TailIsZero(const uint8_t* p, size_t len) {
  uint64_t acc = 0;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    acc |= w;
  }
  for (; i < len; ++i) acc |= p[i];
  return acc == 0;
}

using ZeroFn = bool (*)(const uint8_t*, size_t);

struct Impl {
  ZeroFn fn;
  std::string_view name;
};

Impl ChooseImpl() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) return {&IsZeroPageAvx2, "avx2"};
  // SSE2 is part of the x86-64 baseline, so it is always there.
  return {&IsZeroPageSse2, "sse2"};
}

const Impl& SelectedImpl() {
  static const Impl impl = ChooseImpl();
  return impl;
}

}  // namespace

bool IsZeroPagePortable(const uint8_t* p, size_t len) { return TailIsZero(p, len); }

bool IsZeroPageSse2(const uint8_t* p, size_t len) {
  const __m128i zero = _mm_setzero_si128();
  size_t i = 0;
  // Four vectors OR-ed together per test: one compare per 64 bytes keeps the loop load-bound.
  for (; i + 64 <= len; i += 64) {
    const auto* v = reinterpret_cast<const __m128i*>(p + i);
    __m128i o = _mm_or_si128(_mm_or_si128(_mm_loadu_si128(v), _mm_loadu_si128(v + 1)),
                             _mm_or_si128(_mm_loadu_si128(v + 2), _mm_loadu_si128(v + 3)));
    if (_mm_movemask_epi8(_mm_cmpeq_epi8(o, zero)) != 0xffff) return false;
  }
  for (; i + 16 <= len; i += 16) {
    __m128i o = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
    if (_mm_movemask_epi8(_mm_cmpeq_epi8(o, zero)) != 0xffff) return false;
  }
  return TailIsZero(p + i, len - i);
}

__attribute__((target("avx2"))) bool IsZeroPageAvx2(const uint8_t* p, size_t len) {
  size_t i = 0;
  for (; i + 128 <= len; i += 128) {
    const auto* v = reinterpret_cast<const __m256i*>(p + i);
    __m256i o =
        _mm256_or_si256(_mm256_or_si256(_mm256_loadu_si256(v), _mm256_loadu_si256(v + 1)),
                        _mm256_or_si256(_mm256_loadu_si256(v + 2), _mm256_loadu_si256(v + 3)));
    if (!_mm256_testz_si256(o, o)) return false;
  }
  for (; i + 32 <= len; i += 32) {
    __m256i o = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i));
    if (!_mm256_testz_si256(o, o)) return false;
  }
  return TailIsZero(p + i, len - i);
}

bool IsZeroPage(const uint8_t* p, size_t len) {
  // Most non-zero pages have a non-zero word at the start: answer those without a call.
  if (len >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    if (w != 0) return false;
  }
  return SelectedImpl().fn(p, len);
}

std::string_view ZeroPageImplName() { return SelectedImpl().name; }

}  // namespace procmig
