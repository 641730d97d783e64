// CRC-32C (Castagnoli), as used by iSCSI, ext4 and the procmig wire format.
//
// Extend() uses the SSE4.2 crc32 instruction when the CPU has it (checked once, at first use, and
// cached in a function-local constant: no mutable global state) and a table-driven portable
// version otherwise. Both give identical results; tests check them against published vectors.
#ifndef PROCMIG_BASE_CRC32C_H_
#define PROCMIG_BASE_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace procmig::crc32c {

// Returns the crc32c of concat(A, data[0,n-1]) where init_crc is the crc32c of A.
uint32_t Extend(uint32_t init_crc, const void* data, size_t n);

inline uint32_t Value(const void* data, size_t n) { return Extend(0, data, n); }

// The portable implementation, exposed so tests can compare it with the hardware path.
uint32_t ExtendPortable(uint32_t init_crc, const void* data, size_t n);

// True when Extend() uses the SSE4.2 instruction.
bool HardwareAccelerated();

}  // namespace procmig::crc32c

#endif  // PROCMIG_BASE_CRC32C_H_
