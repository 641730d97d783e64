#include "codec/encoding.h"

#include <doctest/doctest.h>

namespace procmig {
namespace {

TEST_CASE("encoding names are stable and out-of-range values are 'unknown'") {
  CHECK(EncodingName(Encoding::kZero) == "zero");
  CHECK(EncodingName(Encoding::kRaw) == "raw");
  CHECK(EncodingName(Encoding::kXbzrle) == "xbzrle");
  CHECK(EncodingName(Encoding::kZlib) == "zlib");
  CHECK(EncodingName(static_cast<Encoding>(200)) == "unknown");
  static_assert(EncodingName(Encoding::kZlib) == "zlib");  // usable at compile time
}

}  // namespace
}  // namespace procmig
