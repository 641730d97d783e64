// Encoding: which codec produced a page's bytes, as the codec module sees it.
//
// These values are an in-memory choice made by the sender and handed to the receiver's decoder
// dispatch; they are deliberately NOT the numbers on the wire. The wire module owns its own
// encoding numbers (wire/ is versioned and retired numbers are never reused), and migration/
// maps between the two, so codec/ stays independent of wire/. Plain data: any thread may use it.
#ifndef PROCMIG_CODEC_ENCODING_H_
#define PROCMIG_CODEC_ENCODING_H_

#include <cstdint>
#include <string_view>

namespace procmig {

enum class Encoding : uint8_t {
  kZero,    // the page is all zero bytes; no payload
  kRaw,     // the page's bytes verbatim (raw.h)
  kXbzrle,  // a delta against the previous contents the receiver holds (xbzrle.h)
  kZlib,    // a zlib stream of one page or a run of pages (zlib_codec.h)
};

// "zero", "raw", "xbzrle", "zlib"; "unknown" for a value outside the enum.
constexpr std::string_view EncodingName(Encoding e) {
  switch (e) {
    case Encoding::kZero:
      return "zero";
    case Encoding::kRaw:
      return "raw";
    case Encoding::kXbzrle:
      return "xbzrle";
    case Encoding::kZlib:
      return "zlib";
  }
  return "unknown";
}

}  // namespace procmig

#endif  // PROCMIG_CODEC_ENCODING_H_
