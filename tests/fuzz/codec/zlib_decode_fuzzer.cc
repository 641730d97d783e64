// Feeds arbitrary bytes to ZlibDecompressor::Decompress. Invariants: no out-of-bounds access
// (ASan), the result never exceeds the bound, every error is DataLoss, and a stream that decodes
// re-encodes and decodes to the same bytes. One decompressor serves every input, as on the
// receiver, so reuse after errors is exercised too.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include "codec/zlib_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::unique_ptr<procmig::ZlibDecompressor> decompressor =
      *procmig::ZlibDecompressor::Create();
  static std::unique_ptr<procmig::ZlibCompressor> compressor = *procmig::ZlibCompressor::Create(1);
  if (size < 1) return 0;
  // Byte 0 picks the bound: 0 .. 16320 bytes in steps of 64.
  const size_t bound = size_t{data[0]} * 64;
  std::vector<uint8_t> in(data + 1, data + size);
  std::vector<uint8_t> out(bound);
  absl::StatusOr<size_t> n = decompressor->Decompress(in.data(), in.size(), out.data(), bound);
  if (!n.ok()) {
    if (n.status().code() != absl::StatusCode::kDataLoss) std::abort();
    return 0;
  }
  if (*n > bound) std::abort();
  out.resize(*n);
  std::vector<uint8_t> z(procmig::ZlibCompressor::MaxCompressedSize(out.size()));
  absl::StatusOr<size_t> zn = compressor->Compress(out.data(), out.size(), z.data(), z.size());
  if (!zn.ok()) std::abort();
  std::vector<uint8_t> back(out.size());
  if (!decompressor->DecompressExact(z.data(), *zn, back.data(), back.size()).ok()) std::abort();
  if (back != out) std::abort();
  return 0;
}
