#include "base/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace procmig::crc32c {
namespace {

constexpr uint32_t kPoly = 0x82f63b78;  // reflected Castagnoli polynomial

constexpr std::array<uint32_t, 256> MakeTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kTable = MakeTable();

// ---- Shifting a CRC register past zero bytes (used to join interleaved streams) ----
//
// A raw CRC register (no pre/post inversion) is linear: reg(A||B) = shift_|B|(reg(A)) ^ reg(B),
// where reg(B) starts from zero and shift_n multiplies by x^(8n) modulo P. Polynomials here are
// bit-reflected, as in the table above: bit 31 is x^0.

// a * b modulo P.
constexpr uint32_t MulModP(uint32_t a, uint32_t b) {
  uint32_t product = 0;
  for (uint32_t m = 1u << 31; m != 0; m >>= 1) {
    if (a & m) product ^= b;
    b = (b & 1) ? (b >> 1) ^ kPoly : b >> 1;
  }
  return product;
}

// x^(8 * n_bytes) modulo P, by repeated squaring.
constexpr uint32_t XPowBytes(uint64_t n_bytes) {
  uint32_t result = 1u << 31;  // x^0
  uint32_t square = 1u << 23;  // x^8
  for (uint64_t n = n_bytes; n != 0; n >>= 1) {
    if (n & 1) result = MulModP(square, result);
    square = MulModP(square, square);
  }
  return result;
}

// x^n_bits modulo P (the folding constants below need exponents that are not whole bytes).
constexpr uint32_t XPowBits(uint64_t n_bits) {
  uint32_t result = 1u << 31;  // x^0
  uint32_t square = 1u << 30;  // x^1
  for (uint64_t n = n_bits; n != 0; n >>= 1) {
    if (n & 1) result = MulModP(square, result);
    square = MulModP(square, square);
  }
  return result;
}
static_assert(XPowBits(8 * 4096) == XPowBytes(4096) && XPowBits(31) == 1u);

// shift_n as four byte-indexed tables, so applying it costs four lookups.
using ShiftTable = std::array<std::array<uint32_t, 256>, 4>;
constexpr ShiftTable MakeShiftTable(uint64_t n_bytes) {
  const uint32_t xn = XPowBytes(n_bytes);
  ShiftTable t{};
  for (uint32_t k = 0; k < 4; ++k) {
    for (uint32_t b = 0; b < 256; ++b) t[k][b] = MulModP(xn, b << (8 * k));
  }
  return t;
}

inline uint32_t Shift(const ShiftTable& t, uint32_t reg) {
  return t[0][reg & 0xff] ^ t[1][(reg >> 8) & 0xff] ^ t[2][(reg >> 16) & 0xff] ^ t[3][reg >> 24];
}

#if defined(__x86_64__)

// The crc32 instruction has a latency of 3 cycles and a throughput of one per cycle, so three
// independent streams keep it busy. Buffers are cut into 3 stripes of kLong bytes while they last,
// then of kShort bytes; the stripes' registers are joined with the shift tables above (QEMU and
// Linux do the same with pclmul; the table join costs ~12 lookups per 3 stripes).
constexpr size_t kLong = 8192;
constexpr size_t kShort = 256;
constexpr ShiftTable kShiftLong = MakeShiftTable(kLong);
constexpr ShiftTable kShiftShort = MakeShiftTable(kShort);

inline uint64_t Load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Runs whole stripes of `stripe` bytes (a multiple of 8) while 3 of them remain.
__attribute__((target("sse4.2"))) inline uint32_t Stripes3(uint32_t reg, const uint8_t*& p,
                                                           size_t& n, size_t stripe,
                                                           const ShiftTable& shift) {
  while (n >= 3 * stripe) {
    uint64_t c0 = reg, c1 = 0, c2 = 0;
    const uint8_t* end = p + stripe;
    do {
      c0 = _mm_crc32_u64(c0, Load64(p));
      c1 = _mm_crc32_u64(c1, Load64(p + stripe));
      c2 = _mm_crc32_u64(c2, Load64(p + 2 * stripe));
      p += 8;
    } while (p < end);
    reg = Shift(shift, static_cast<uint32_t>(c0)) ^ static_cast<uint32_t>(c1);
    reg = Shift(shift, reg) ^ static_cast<uint32_t>(c2);
    p += 2 * stripe;
    n -= 3 * stripe;
  }
  return reg;
}

__attribute__((target("sse4.2"))) uint32_t ExtendSse42(uint32_t init_crc, const void* data,
                                                       size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t reg = ~init_crc;
  // Align to 8 so the word loads below never straddle a cache line.
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
    reg = _mm_crc32_u8(reg, *p++);
    --n;
  }
  reg = Stripes3(reg, p, n, kLong, kShiftLong);
  reg = Stripes3(reg, p, n, kShort, kShiftShort);
  uint64_t c = reg;
  for (; n >= 8; n -= 8, p += 8) c = _mm_crc32_u64(c, Load64(p));
  reg = static_cast<uint32_t>(c);
  for (; n > 0; --n) reg = _mm_crc32_u8(reg, *p++);
  return ~reg;
}

// ---- Folding with carry-less multiplication (VPCLMULQDQ on 256- or 512-bit vectors) ----
//
// Bit order. As everywhere in this file, polynomials are reflected: a 16-byte chunk loaded
// little-endian into a 128-bit lane has in bit m (byte m / 8, bit m % 8) the coefficient of
// x^(127 - m), so the chunk's first bit in stream order is its highest power, as the crc32
// instruction reads it. A 64-bit quadword has x^(63 - k) in bit k, a CRC register x^(31 - k).
//
// What is computed. With the initial register XORed into the message's first 32 bits, the final
// register of a message M is M * x^32 mod P, so only M mod P matters: M may be rewritten into any
// congruent polynomial of the same length.
//
// Folding. A 128-bit chunk X whose end lies f bits before the end of a later chunk Y contributes
// X * x^f to the message at Y's place. Write X = L x^64 + H, L its low quadword (its first 8
// bytes) and H its high one:
//   X x^f = L x^(f + 64) + H x^f = L (x^(f + 64) mod P) + H (x^f mod P)   (mod P),
// two products of a 64-bit polynomial by one of degree < 32, each < 96 bits: XORed into Y, they
// replace X. So a vector of accumulators, each lane holding a chunk, steps forward through the
// buffer: fold every lane by the distance to the next block's chunk in the same place and XOR
// that chunk in. At the end the accumulators are folded onto the last one, then its lanes onto
// its last lane, then any remaining whole chunks are folded in one at a time. The last 128 bits
// X then go through two crc32 instructions from register 0, which compute exactly X * x^32 mod P,
// the register (no Barrett reduction needed), and the crc32 instruction takes the < 16 bytes left.
//
// The constants. PCLMULQDQ multiplies bit strings without carries: bit k of a times bit l of b
// lands in bit k + l. With a a quadword L (bit k: x^(63 - k)) and b a CRC-register-like R in the
// low 32 bits (bit l: x^(31 - l)), bit k + l of the 128-bit product stands for x^(127 - k - l)
// = x^(63 - k) * x^(31 - l) * x^33: the lane holds L * R * x^33 (< 128 bits: no overflow). So
// the constant for "times x^e" is R = x^(e - 33) mod P; all of them are computed at compile time.
constexpr uint64_t ClmulConst(uint64_t e) { return XPowBits(e - 33); }

// The constant pair folding a 128-bit lane forward by f bits, laid out as PCLMULQDQ's selectors
// 0x00 (low quadwords) and 0x11 (high quadwords) pick them from a 128-bit lane.
struct FoldConsts {
  uint64_t lo;  // multiplies L: x^(f + 64)
  uint64_t hi;  // multiplies H: x^f
};
constexpr FoldConsts FoldBy(uint64_t f_bits) {
  return {ClmulConst(f_bits + 64), ClmulConst(f_bits)};
}

// Every constant vector of a variant with kAccs accumulators of kLanes 128-bit lanes.
template <int kAccs, int kLanes>
struct ClmulConsts {
  using Vec = std::array<uint64_t, 2 * kLanes>;  // a pair per lane, loaded as one vector
  // Every lane forward by a block (kAccs vectors).
  Vec block;
  // Accumulator a onto the last one: forward by kAccs - 1 - a vectors.
  Vec acc[kAccs - 1];
  // Every lane forward by one vector.
  Vec vec;
  // Lane l onto the last lane: forward by kLanes - 1 - l lanes (the last lane's pair is zero).
  Vec lanes;
};
template <int kAccs, int kLanes>
constexpr ClmulConsts<kAccs, kLanes> MakeClmulConsts() {
  constexpr uint64_t kVecBits = 128 * kLanes;
  using Consts = ClmulConsts<kAccs, kLanes>;
  auto repeat = [](FoldConsts k) {
    typename Consts::Vec v{};
    for (int l = 0; l < kLanes; ++l) {
      v[2 * l] = k.lo;
      v[2 * l + 1] = k.hi;
    }
    return v;
  };
  Consts c{};
  c.block = repeat(FoldBy(kAccs * kVecBits));
  for (int a = 0; a + 1 < kAccs; ++a) c.acc[a] = repeat(FoldBy((kAccs - 1 - a) * kVecBits));
  c.vec = repeat(FoldBy(kVecBits));
  for (int l = 0; l + 1 < kLanes; ++l) {
    const FoldConsts k = FoldBy(128 * static_cast<uint64_t>(kLanes - 1 - l));
    c.lanes[2 * l] = k.lo;
    c.lanes[2 * l + 1] = k.hi;
  }
  return c;
}

// Word by word, then the last n < 8 bytes in at most three steps; on the raw register.
inline __attribute__((target("sse4.2"))) uint32_t CrcShort(uint32_t reg, const uint8_t* p,
                                                           size_t n) {
  uint64_t c = reg;
  for (; n >= 8; n -= 8, p += 8) c = _mm_crc32_u64(c, Load64(p));
  reg = static_cast<uint32_t>(c);
  if (n & 4) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    reg = _mm_crc32_u32(reg, v);
    p += 4;
  }
  if (n & 2) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    reg = _mm_crc32_u16(reg, v);
    p += 2;
  }
  if (n & 1) reg = _mm_crc32_u8(reg, *p);
  return reg;
}

// Takes the folded 128 bits `x` (standing for everything before p), folds the remaining whole
// 16-byte chunks in one at a time, and finishes with the crc32 instruction: the crc of x's 16
// bytes from register 0 is x * x^32 mod P, the register after everything folded; the last n % 16
// bytes continue from it. Returns the final crc (inverted).
inline __attribute__((target("pclmul,sse4.2"))) uint32_t FinishClmul(__m128i x, const uint8_t* p,
                                                                     size_t n) {
  constexpr FoldConsts kF = FoldBy(128);
  const __m128i k = _mm_set_epi64x(static_cast<long long>(kF.hi), static_cast<long long>(kF.lo));
  for (; n >= 16; p += 16, n -= 16) {
    const __m128i folded =
        _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11));
    x = _mm_xor_si128(folded, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  uint64_t c = _mm_crc32_u64(0, static_cast<uint64_t>(_mm_cvtsi128_si64(x)));
  c = _mm_crc32_u64(c, static_cast<uint64_t>(_mm_extract_epi64(x, 1)));
  return ~CrcShort(static_cast<uint32_t>(c), p, n);
}

// Below this many bytes the folding variants hand the buffer to ExtendSse42: one stream of crc32
// instructions, 8 bytes per 3 cycles, is about as fast there (measured: 64-112 bytes are a tie
// for independent calls and 30% slower folded when each call waits on the previous one's crc).
constexpr size_t kClmulMin = 128;

// Copying while folding (CopyExtend): the source and destination pointers step together.
template <bool kCopy>
inline void Advance(const uint8_t*& p, uint8_t*& d, size_t& n, size_t by) {
  p += by;
  if constexpr (kCopy) d += by;
  n -= by;
}

// The last n < 64 bytes: copied first and checksummed from the copy, so that the crc is the
// copy's. Returns where the crc reads them.
template <bool kCopy>
inline const uint8_t* CopyTail(const uint8_t* p, uint8_t* d, size_t n) {
  if constexpr (!kCopy) return p;
  std::memcpy(d, p, n);
  return d;
}

// Below kClmulMin: copied first, then the copy checksummed.
template <bool kCopy>
inline uint32_t SmallCopyExtend(uint32_t init_crc, const void* data, size_t n, void* dst) {
  if constexpr (!kCopy) return ExtendSse42(init_crc, data, n);
  std::memcpy(dst, data, n);
  return ExtendSse42(init_crc, dst, n);
}

// The 512-bit variant (AVX-512F and VPCLMULQDQ): kAccs accumulators of 64 bytes (4 lanes).
__attribute__((target("avx512f,vpclmulqdq"))) inline __m512i Load512(const void* p) {
  return _mm512_loadu_si512(p);
}
// x's lanes folded by the distance of the constant pairs in k, XORed with y.
__attribute__((target("avx512f,vpclmulqdq"))) inline __m512i Fold512(__m512i x, __m512i k,
                                                                     __m512i y) {
  return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00),
                                   _mm512_clmulepi64_epi128(x, k, 0x11), y, 0x96);  // a^b^c
}

// The vector at p + off, also stored at d + off when copying (kCopy): the value folded is the
// value written, so a copy's crc holds for the copy even if the source changes meanwhile.
template <bool kCopy>
__attribute__((target("avx512f,vpclmulqdq"))) inline __m512i Take512(const uint8_t* p, uint8_t* d,
                                                                     size_t off) {
  const __m512i v = Load512(p + off);
  if constexpr (kCopy) _mm512_storeu_si512(d + off, v);
  return v;
}

// Four accumulators (256-byte blocks): two were 8% slower on a page here, six and eight no faster.
// With kCopy, the n bytes are also copied to `dst` and the crc is that of the copy.
template <int kAccs, bool kCopy>
__attribute__((target("avx512f,vpclmulqdq,pclmul,sse4.2"))) uint32_t ExtendClmul512(
    uint32_t init_crc, const void* data, size_t n, void* dst) {
  static_assert(kClmulMin >= 64);
  if (n < kClmulMin) return SmallCopyExtend<kCopy>(init_crc, data, n, dst);
  constexpr size_t kBlock = 64 * kAccs;
  static constexpr auto kK = MakeClmulConsts<kAccs, 4>();
  const auto* p = static_cast<const uint8_t*>(data);
  auto* d = static_cast<uint8_t*>(dst);
  const __m512i init = _mm512_zextsi128_si512(_mm_cvtsi32_si128(static_cast<int>(~init_crc)));
  __m512i x;
  if (n >= kBlock) {
    __m512i acc[kAccs];
#pragma GCC unroll 16
    for (int a = 0; a < kAccs; ++a) acc[a] = Take512<kCopy>(p, d, 64 * a);
    acc[0] = _mm512_xor_si512(acc[0], init);
    Advance<kCopy>(p, d, n, kBlock);
    const __m512i k_block = Load512(kK.block.data());
    for (; n >= kBlock; Advance<kCopy>(p, d, n, kBlock)) {
#pragma GCC unroll 16
      for (int a = 0; a < kAccs; ++a) {
        acc[a] = Fold512(acc[a], k_block, Take512<kCopy>(p, d, 64 * a));
      }
    }
    x = acc[kAccs - 1];
#pragma GCC unroll 16
    for (int a = 0; a + 1 < kAccs; ++a) x = Fold512(acc[a], Load512(kK.acc[a].data()), x);
  } else {
    x = _mm512_xor_si512(Take512<kCopy>(p, d, 0), init);
    Advance<kCopy>(p, d, n, 64);
  }
  const __m512i k_vec = Load512(kK.vec.data());
  for (; n >= 64; Advance<kCopy>(p, d, n, 64)) x = Fold512(x, k_vec, Take512<kCopy>(p, d, 0));
  // Lanes 0-2 onto lane 3 (whose constants are zero), then the four lanes XORed together. (The
  // zero-masking forms of the extracts, keeping every element, because GCC 12 builds the plain
  // ones and the 512-to-256 cast on _mm*_undefined_*(), which -Wmaybe-uninitialized flags: GCC
  // bug 105593.)
  const __m512i lanes = Fold512(x, Load512(kK.lanes.data()), _mm512_setzero_si512());
  const __m256i y = _mm256_xor_si256(_mm512_maskz_extracti64x4_epi64(0xf, lanes, 0),
                                     _mm512_maskz_extracti64x4_epi64(0xf, lanes, 1));
  __m128i z = _mm_xor_si128(_mm256_castsi256_si128(y), _mm256_extracti128_si256(y, 1));
  z = _mm_xor_si128(z, _mm512_maskz_extracti32x4_epi32(0xf, x, 3));
  return FinishClmul(z, CopyTail<kCopy>(p, d, n), n);
}

// The 256-bit variant (AVX2 and VPCLMULQDQ, no AVX-512): the same with 32-byte accumulators.
__attribute__((target("avx2,vpclmulqdq"))) inline __m256i Load256(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}
__attribute__((target("avx2,vpclmulqdq"))) inline __m256i Fold256(__m256i x, __m256i k, __m256i y) {
  return _mm256_xor_si256(
      _mm256_xor_si256(_mm256_clmulepi64_epi128(x, k, 0x00), _mm256_clmulepi64_epi128(x, k, 0x11)),
      y);
}

template <bool kCopy>
__attribute__((target("avx2,vpclmulqdq"))) inline __m256i Take256(const uint8_t* p, uint8_t* d,
                                                                  size_t off) {
  const __m256i v = Load256(p + off);
  if constexpr (kCopy) _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + off), v);
  return v;
}

// Four accumulators (128-byte blocks): eight were no faster here. kCopy: as ExtendClmul512's.
template <int kAccs, bool kCopy>
__attribute__((target("avx2,vpclmulqdq,pclmul,sse4.2"))) uint32_t ExtendClmul256(uint32_t init_crc,
                                                                                 const void* data,
                                                                                 size_t n,
                                                                                 void* dst) {
  static_assert(kClmulMin >= 32);
  if (n < kClmulMin) return SmallCopyExtend<kCopy>(init_crc, data, n, dst);
  constexpr size_t kBlock = 32 * kAccs;
  static constexpr auto kK = MakeClmulConsts<kAccs, 2>();
  const auto* p = static_cast<const uint8_t*>(data);
  auto* d = static_cast<uint8_t*>(dst);
  const __m256i init = _mm256_set_epi32(0, 0, 0, 0, 0, 0, 0, static_cast<int>(~init_crc));
  __m256i x;
  if (n >= kBlock) {
    __m256i acc[kAccs];
#pragma GCC unroll 16
    for (int a = 0; a < kAccs; ++a) acc[a] = Take256<kCopy>(p, d, 32 * a);
    acc[0] = _mm256_xor_si256(acc[0], init);
    Advance<kCopy>(p, d, n, kBlock);
    const __m256i k_block = Load256(kK.block.data());
    for (; n >= kBlock; Advance<kCopy>(p, d, n, kBlock)) {
#pragma GCC unroll 16
      for (int a = 0; a < kAccs; ++a) {
        acc[a] = Fold256(acc[a], k_block, Take256<kCopy>(p, d, 32 * a));
      }
    }
    x = acc[kAccs - 1];
#pragma GCC unroll 16
    for (int a = 0; a + 1 < kAccs; ++a) x = Fold256(acc[a], Load256(kK.acc[a].data()), x);
  } else {
    x = _mm256_xor_si256(Take256<kCopy>(p, d, 0), init);
    Advance<kCopy>(p, d, n, 32);
  }
  const __m256i k_vec = Load256(kK.vec.data());
  for (; n >= 32; Advance<kCopy>(p, d, n, 32)) x = Fold256(x, k_vec, Take256<kCopy>(p, d, 0));
  // Lane 0 onto lane 1 (whose constants are zero).
  const __m256i lanes = Fold256(x, Load256(kK.lanes.data()), _mm256_setzero_si256());
  const __m128i z = _mm_xor_si128(_mm256_castsi256_si128(lanes), _mm256_extracti128_si256(x, 1));
  return FinishClmul(z, CopyTail<kCopy>(p, d, n), n);
}

// Bit i set when this CPU runs Impl i. __builtin_cpu_supports reports AVX and AVX-512 features
// only when the OS saves their registers (XCR0), so these are safe to run when set.
unsigned DetectSupported() {
  __builtin_cpu_init();
  unsigned mask = 1u << static_cast<int>(Impl::kPortable);
  if (!__builtin_cpu_supports("sse4.2")) return mask;
  mask |= 1u << static_cast<int>(Impl::kSse42);
  if (!__builtin_cpu_supports("pclmul") || !__builtin_cpu_supports("vpclmulqdq")) return mask;
  if (__builtin_cpu_supports("avx2")) mask |= 1u << static_cast<int>(Impl::kClmul256);
  if (__builtin_cpu_supports("avx512f")) mask |= 1u << static_cast<int>(Impl::kClmul512);
  return mask;
}

#endif  // __x86_64__

}  // namespace

uint32_t ExtendPortable(uint32_t init_crc, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~init_crc;
  for (size_t i = 0; i < n; ++i) c = kTable[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return ~c;
}

uint32_t Concatenate(const uint32_t* crcs, size_t n, uint64_t piece_len) {
  // crc(A || B) = x^(8|B|) * crc(A) xor crc(B) (the pre/post inversions cancel); the constant
  // x^(8 * piece_len) is Combine applied to "1" (0x80000000 reflected).
  // The multiplication by that constant is linear in crc: four table lookups instead of a 32-step
  // loop (a 1 GiB block's digest is 262144 of them, inside the migration's pause). Pages get a
  // table built at compile time; other lengths build theirs here (1024 multiplications).
  static constexpr ShiftTable kPageShift = MakeShiftTable(4096);
  ShiftTable built;
  const ShiftTable* t = &kPageShift;
  if (piece_len != 4096) {
    built = MakeShiftTable(piece_len);
    t = &built;
  }
  // Four quarters at once (each step waits on the previous one's lookups), then joined.
  const size_t q = n / 4;
  uint32_t c[4] = {0, 0, 0, 0};
  for (size_t i = 0; i < q; ++i) {
    c[0] = Shift(*t, c[0]) ^ crcs[i];
    c[1] = Shift(*t, c[1]) ^ crcs[q + i];
    c[2] = Shift(*t, c[2]) ^ crcs[2 * q + i];
    c[3] = Shift(*t, c[3]) ^ crcs[3 * q + i];
  }
  for (size_t i = 4 * q; i < n; ++i) c[3] = Shift(*t, c[3]) ^ crcs[i];
  if (q == 0) return c[3];
  const uint64_t quarter = q * piece_len;
  uint32_t crc = Combine(Combine(c[0], c[1], quarter), c[2], quarter);
  return Combine(crc, c[3], (n - 3 * q) * piece_len);
}

uint32_t Combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b) {
  // With pre/post inversion the inversions cancel: crc(A||B) = shift(crc(A)) ^ crc(B).
  return MulModP(XPowBytes(len_b), crc_a) ^ crc_b;
}

namespace {

// What this CPU runs and what Extend() picks: decided once, at first use, and kept in a
// function-local constant rather than a mutable global (STYLE.md).
struct CpuChoice {
  unsigned supported;  // bit i: Impl i runs here
  Impl chosen;         // the fastest of them (measured on Zen 5: 512-bit, 256-bit, crc32, table)
};

CpuChoice Choose() {
#if defined(__x86_64__)
  const unsigned supported = DetectSupported();
#else
  const unsigned supported = 1u << static_cast<int>(Impl::kPortable);
#endif
  for (Impl impl : {Impl::kClmul512, Impl::kClmul256, Impl::kSse42}) {
    if (supported & (1u << static_cast<int>(impl))) return {supported, impl};
  }
  return {supported, Impl::kPortable};
}

const CpuChoice& Cpu() {
  static const CpuChoice kCpu = Choose();
  return kCpu;
}

// `impl` must run on this CPU.
uint32_t Run(Impl impl, uint32_t init_crc, const void* data, size_t n) {
  switch (impl) {
#if defined(__x86_64__)
    case Impl::kClmul512:
      return ExtendClmul512<4, false>(init_crc, data, n, nullptr);
    case Impl::kClmul256:
      return ExtendClmul256<4, false>(init_crc, data, n, nullptr);
    case Impl::kSse42:
      return ExtendSse42(init_crc, data, n);
#endif
    default:
      return ExtendPortable(init_crc, data, n);
  }
}

// The folding variants copy as they fold; the others copy, then checksum the copy.
uint32_t RunCopy(Impl impl, uint32_t init_crc, void* dst, const void* src, size_t n) {
  switch (impl) {
#if defined(__x86_64__)
    case Impl::kClmul512:
      return ExtendClmul512<4, true>(init_crc, src, n, dst);
    case Impl::kClmul256:
      return ExtendClmul256<4, true>(init_crc, src, n, dst);
#endif
    default:
      std::memcpy(dst, src, n);
      return Run(impl, init_crc, dst, n);
  }
}

}  // namespace

bool Supported(Impl impl) { return (Cpu().supported & (1u << static_cast<int>(impl))) != 0; }

Impl ChosenImpl() { return Cpu().chosen; }

const char* ImplName(Impl impl) {
  switch (impl) {
    case Impl::kPortable:
      return "portable";
    case Impl::kSse42:
      return "sse4.2";
    case Impl::kClmul256:
      return "vpclmul-256";
    case Impl::kClmul512:
      return "vpclmul-512";
  }
  return "?";
}

bool HardwareAccelerated() { return ChosenImpl() != Impl::kPortable; }

uint32_t ExtendWith(Impl impl, uint32_t init_crc, const void* data, size_t n) {
  return Run(Supported(impl) ? impl : Impl::kPortable, init_crc, data, n);
}

uint32_t Extend(uint32_t init_crc, const void* data, size_t n) {
  return Run(ChosenImpl(), init_crc, data, n);
}

uint32_t CopyExtendWith(Impl impl, uint32_t init_crc, void* dst, const void* src, size_t n) {
  return RunCopy(Supported(impl) ? impl : Impl::kPortable, init_crc, dst, src, n);
}

uint32_t CopyExtend(uint32_t init_crc, void* dst, const void* src, size_t n) {
  return RunCopy(ChosenImpl(), init_crc, dst, src, n);
}

}  // namespace procmig::crc32c
