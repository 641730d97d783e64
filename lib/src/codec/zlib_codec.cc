#include "codec/zlib_codec.h"

#include <zlib.h>

#include <climits>

#include "absl/strings/str_cat.h"

namespace procmig {

struct ZlibCompressor::Stream {
  z_stream z{};
  ~Stream() { deflateEnd(&z); }
};

struct ZlibDecompressor::Stream {
  z_stream z{};
  ~Stream() { inflateEnd(&z); }
};

namespace {

// zlib's sizes are uInt; a page or a run of pages never comes near that.
constexpr size_t kMaxZlibLen = UINT_MAX;

std::string ZlibMessage(const z_stream& z, int ret) {
  return z.msg != nullptr ? std::string(z.msg) : absl::StrCat("zlib error ", ret);
}

}  // namespace

ZlibCompressor::ZlibCompressor(int level, std::unique_ptr<Stream> stream)
    : level_(level), stream_(std::move(stream)) {}

ZlibCompressor::~ZlibCompressor() = default;

absl::StatusOr<std::unique_ptr<ZlibCompressor>> ZlibCompressor::Create(int level) {
  if (level < 0 || level > 9) {
    return absl::InvalidArgumentError(
        absl::StrCat("zlib compressor create: level ", level, " is outside 0..9"));
  }
  auto stream = std::make_unique<Stream>();
  // The defaults of compress2() (zlib header, 32 KiB window, memLevel 8), so compressBound()
  // is a valid bound for every level.
  int ret = deflateInit2(&stream->z, level, Z_DEFLATED, 15, 8, Z_DEFAULT_STRATEGY);
  if (ret != Z_OK) {
    return absl::InternalError(
        absl::StrCat("zlib compressor create: deflateInit2: ", ZlibMessage(stream->z, ret)));
  }
  return std::unique_ptr<ZlibCompressor>(new ZlibCompressor(level, std::move(stream)));
}

size_t ZlibCompressor::MaxCompressedSize(size_t len) { return compressBound(len); }

absl::StatusOr<size_t> ZlibCompressor::Compress(const uint8_t* in, size_t len, uint8_t* out,
                                                size_t out_cap) {
  if (len > kMaxZlibLen || out_cap < MaxCompressedSize(len)) {
    return absl::InvalidArgumentError(absl::StrCat("zlib compress: ", len, " input bytes need ",
                                                   MaxCompressedSize(len),
                                                   " bytes of output room, have ", out_cap));
  }
  z_stream& z = stream_->z;
  int ret = deflateReset(&z);
  if (ret != Z_OK) {
    return absl::InternalError(absl::StrCat("zlib compress: deflateReset: ", ZlibMessage(z, ret)));
  }
  z.next_in = const_cast<Bytef*>(in);  // zlib's API is not const-correct; it does not write.
  z.avail_in = static_cast<uInt>(len);
  z.next_out = out;
  z.avail_out = static_cast<uInt>(out_cap > kMaxZlibLen ? kMaxZlibLen : out_cap);
  ret = deflate(&z, Z_FINISH);
  if (ret != Z_STREAM_END) {
    return absl::InternalError(absl::StrCat("zlib compress: deflate did not finish with ",
                                            MaxCompressedSize(len),
                                            " bytes of room: ", ZlibMessage(z, ret)));
  }
  return static_cast<size_t>(z.total_out);
}

ZlibDecompressor::ZlibDecompressor(std::unique_ptr<Stream> stream) : stream_(std::move(stream)) {}

ZlibDecompressor::~ZlibDecompressor() = default;

absl::StatusOr<std::unique_ptr<ZlibDecompressor>> ZlibDecompressor::Create() {
  auto stream = std::make_unique<Stream>();
  int ret = inflateInit(&stream->z);
  if (ret != Z_OK) {
    return absl::InternalError(
        absl::StrCat("zlib decompressor create: inflateInit: ", ZlibMessage(stream->z, ret)));
  }
  return std::unique_ptr<ZlibDecompressor>(new ZlibDecompressor(std::move(stream)));
}

absl::StatusOr<size_t> ZlibDecompressor::Decompress(const uint8_t* in, size_t len, uint8_t* out,
                                                    size_t out_cap) {
  if (len > kMaxZlibLen) {
    return absl::DataLossError(
        absl::StrCat("zlib decompress: compressed input of ", len, " bytes is implausibly long"));
  }
  if (out_cap > kMaxZlibLen) out_cap = kMaxZlibLen;
  z_stream& z = stream_->z;
  int ret = inflateReset(&z);
  if (ret != Z_OK) {
    return absl::InternalError(
        absl::StrCat("zlib decompress: inflateReset: ", ZlibMessage(z, ret)));
  }
  z.next_in = const_cast<Bytef*>(in);
  z.avail_in = static_cast<uInt>(len);
  // zlib refuses a null output pointer even with no room (Z_STREAM_ERROR), and a zero bound
  // legitimately comes with one: point it at a byte it is not allowed to write.
  uint8_t no_room;
  z.next_out = out != nullptr ? out : &no_room;
  z.avail_out = static_cast<uInt>(out != nullptr ? out_cap : 0);
  ret = inflate(&z, Z_FINISH);
  if (ret != Z_STREAM_END && z.avail_out == 0 && (ret == Z_OK || ret == Z_BUF_ERROR)) {
    // The bound is used up with the stream unfinished: either it holds more data than allowed,
    // or the input is cut short right here. One more byte of room tells the two apart.
    uint8_t extra;
    z.next_out = &extra;
    z.avail_out = 1;
    ret = inflate(&z, Z_NO_FLUSH);
    if (z.avail_out == 0) {
      return absl::DataLossError(absl::StrCat(
          "zlib decompress: stream decompresses to more than the bound of ", out_cap, " bytes"));
    }
  }
  switch (ret) {
    case Z_STREAM_END:
      break;
    case Z_NEED_DICT:
      return absl::DataLossError("zlib decompress: stream needs a preset dictionary");
    case Z_DATA_ERROR:
      return absl::DataLossError(
          absl::StrCat("zlib decompress: corrupt stream: ", ZlibMessage(z, ret)));
    case Z_MEM_ERROR:
      return absl::ResourceExhaustedError("zlib decompress: out of memory");
    case Z_OK:
    case Z_BUF_ERROR:
      return absl::DataLossError(
          absl::StrCat("zlib decompress: truncated stream: input ended after ", len,
                       " bytes without the end of the zlib stream"));
    default:
      return absl::InternalError(absl::StrCat("zlib decompress: inflate: ", ZlibMessage(z, ret)));
  }
  if (z.avail_in != 0) {
    return absl::DataLossError(absl::StrCat("zlib decompress: ", z.avail_in,
                                            " trailing bytes after the end of the zlib stream"));
  }
  return static_cast<size_t>(z.total_out);
}

absl::Status ZlibDecompressor::DecompressExact(const uint8_t* in, size_t len, uint8_t* out,
                                               size_t expected) {
  absl::StatusOr<size_t> got = Decompress(in, len, out, expected);
  if (!got.ok()) return got.status();
  if (*got != expected) {
    return absl::DataLossError(absl::StrCat("zlib decompress: stream holds ", *got,
                                            " bytes, the record declared ", expected));
  }
  return absl::OkStatus();
}

}  // namespace procmig
