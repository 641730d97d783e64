#include "base/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
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

bool CpuHasSse42() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("sse4.2");
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

bool HardwareAccelerated() {
#if defined(__x86_64__)
  // Decided once; a function-local constant rather than a mutable global (STYLE.md).
  static const bool kHasSse42 = CpuHasSse42();
  return kHasSse42;
#else
  return false;
#endif
}

uint32_t Extend(uint32_t init_crc, const void* data, size_t n) {
#if defined(__x86_64__)
  if (HardwareAccelerated()) return ExtendSse42(init_crc, data, n);
#endif
  return ExtendPortable(init_crc, data, n);
}

}  // namespace procmig::crc32c
