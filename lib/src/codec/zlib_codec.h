// zlib page codec: one zlib stream (RFC 1950: header, deflate data, Adler-32) per page or run of
// pages, as QEMU's multi-threaded compression sends them.
//
// ZlibCompressor and ZlibDecompressor live together because this pair of files is the only
// includer of <zlib.h> (STYLE.md: one includer per third-party header); the header keeps zlib
// out of sight behind a pointer to the stream state. Each object owns one z_stream, set up at
// Create() and reset (deflateReset/inflateReset) between calls; zlib keeps its buffers across
// resets (the inflate window is allocated at the first stream that needs it), so steady-state
// use does not allocate. An object is used by one thread at a time (each compress-pool worker owns
// a compressor; the receiver owns a decompressor); different objects are independent.
#ifndef PROCMIG_CODEC_ZLIB_CODEC_H_
#define PROCMIG_CODEC_ZLIB_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace procmig {

class ZlibCompressor {
 public:
  // InvalidArgument unless 0 <= level <= 9 (0 stores, 1 fastest, 9 smallest).
  static absl::StatusOr<std::unique_ptr<ZlibCompressor>> Create(int level);
  ~ZlibCompressor();

  ZlibCompressor(const ZlibCompressor&) = delete;
  ZlibCompressor& operator=(const ZlibCompressor&) = delete;

  // Largest stream Compress() can produce for `len` input bytes (zlib's compressBound).
  static size_t MaxCompressedSize(size_t len);

  // Compresses [in, in+len) into one complete zlib stream at `out`; returns its length.
  // InvalidArgument when out_cap < MaxCompressedSize(len) (so compression itself cannot run out
  // of room); Internal if zlib fails anyway.
  absl::StatusOr<size_t> Compress(const uint8_t* in, size_t len, uint8_t* out, size_t out_cap);

  int level() const { return level_; }

 private:
  struct Stream;
  ZlibCompressor(int level, std::unique_ptr<Stream> stream);
  const int level_;
  const std::unique_ptr<Stream> stream_;
};

class ZlibDecompressor {
 public:
  static absl::StatusOr<std::unique_ptr<ZlibDecompressor>> Create();
  ~ZlibDecompressor();

  ZlibDecompressor(const ZlibDecompressor&) = delete;
  ZlibDecompressor& operator=(const ZlibDecompressor&) = delete;

  // Inflates exactly one zlib stream from [in, in+len) into `out`, writing at most out_cap
  // bytes; returns the decompressed length. DataLoss, naming the cause, when the stream is
  // corrupt (bad header, bad data, checksum mismatch, preset dictionary), truncated, would
  // decompress to more than out_cap bytes (checked as it inflates: a "zip bomb" costs at most
  // out_cap bytes of work), or is followed by trailing bytes. On error `out` may hold garbage.
  absl::StatusOr<size_t> Decompress(const uint8_t* in, size_t len, uint8_t* out, size_t out_cap);

  // As Decompress, and DataLoss unless the result is exactly `expected` bytes (the length the
  // record declared, e.g. its page count times the page size).
  absl::Status DecompressExact(const uint8_t* in, size_t len, uint8_t* out, size_t expected);

 private:
  struct Stream;
  explicit ZlibDecompressor(std::unique_ptr<Stream> stream);
  const std::unique_ptr<Stream> stream_;
};

}  // namespace procmig

#endif  // PROCMIG_CODEC_ZLIB_CODEC_H_
