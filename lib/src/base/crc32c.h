// CRC-32C (Castagnoli), as used by iSCSI, ext4 and the procmig wire format.
//
// Extend() picks the fastest implementation this CPU runs (checked once, at first use, and cached
// in a function-local constant: no mutable global state): carry-less-multiply folding on 512-bit
// or 256-bit vectors (VPCLMULQDQ) for buffers of 128 bytes and more, the SSE4.2 crc32 instruction
// (three interleaved streams from 768 bytes) below that or without VPCLMULQDQ, and a table-driven
// portable version without SSE4.2. All give identical results; tests check them against each
// other, a bitwise reference and published vectors. Every function is pure and callable from any
// thread, and none allocates or locks, so the agent may checksum pages while application threads
// are parked (call HardwareAccelerated() once before parking: the first call initialises the
// function-local constant, which takes a guard).
#ifndef PROCMIG_BASE_CRC32C_H_
#define PROCMIG_BASE_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace procmig::crc32c {

// Returns the crc32c of concat(A, data[0,n-1]) where init_crc is the crc32c of A.
uint32_t Extend(uint32_t init_crc, const void* data, size_t n);

inline uint32_t Value(const void* data, size_t n) { return Extend(0, data, n); }

// Copies n bytes from src to dst (which must not overlap) and returns Extend(init_crc, dst, n):
// the crc of what was written, even if src changes meanwhile (memory another thread may write).
// The folding implementations checksum each vector as they store it, so the copy and the crc
// read the source once; the others copy, then checksum the copy.
uint32_t CopyExtend(uint32_t init_crc, void* dst, const void* src, size_t n);

inline uint32_t CopyValue(void* dst, const void* src, size_t n) {
  return CopyExtend(0, dst, src, n);
}

// Returns the crc32c of concat(A, B) from crc_a = crc32c(A), crc_b = crc32c(B) and len_b = |B|,
// without touching the data (e.g. to join checksums computed by several threads).
uint32_t Combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

// The crc32c of the concatenation of n pieces of `piece_len` bytes each, from their crcs: one
// GF(2) multiplication per piece, no data touched (a block's digest from its page crcs).
uint32_t Concatenate(const uint32_t* crcs, size_t n, uint64_t piece_len);

// The portable implementation, exposed so tests can compare it with the hardware path.
uint32_t ExtendPortable(uint32_t init_crc, const void* data, size_t n);

// True when Extend() uses hardware instructions (SSE4.2, alone or with VPCLMULQDQ).
bool HardwareAccelerated();

// The implementations Extend() chooses from, exposed so tests can check each one and benchmarks
// can time them. Extend() runs the last one in this list that the CPU supports.
enum class Impl {
  kPortable,  // byte table; always supported
  kSse42,     // crc32 instruction, three interleaved streams (SSE4.2)
  kClmul256,  // VPCLMULQDQ folding, four 256-bit accumulators (+ AVX2, SSE4.2); < 128 B: kSse42
  kClmul512,  // the same with four 512-bit accumulators (+ AVX-512F, SSE4.2); < 128 B: kSse42
};

// True when this CPU runs `impl`.
bool Supported(Impl impl);

// The one Extend() uses, and a name for it ("portable", "sse4.2", "vpclmul-256", "vpclmul-512").
Impl ChosenImpl();
const char* ImplName(Impl impl);

// Extend() with the given implementation, or with ExtendPortable when !Supported(impl).
uint32_t ExtendWith(Impl impl, uint32_t init_crc, const void* data, size_t n);

// CopyExtend() the same way.
uint32_t CopyExtendWith(Impl impl, uint32_t init_crc, void* dst, const void* src, size_t n);

}  // namespace procmig::crc32c

#endif  // PROCMIG_BASE_CRC32C_H_
