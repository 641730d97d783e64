// Derives an (old, new) page pair from the input, encodes, decodes, and asserts the decoded page
// equals the new one; also that the "does not fit" limit is exact.
//
// Input: byte 0 = mode, then the old page, then as many bytes again: the new page itself (mode
// bit 0 set) or an XOR mask over the old page (clear; zero bytes = unchanged, so the fuzzer
// easily makes sparse deltas). Page size = (size - 1) / 2, at most 16 KiB.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <vector>

#include "codec/xbzrle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  const uint8_t mode = data[0];
  const size_t n = std::min<size_t>((size - 1) / 2, 16384);
  std::vector<uint8_t> old_page(data + 1, data + 1 + n);
  std::vector<uint8_t> new_page(data + 1 + n, data + 1 + 2 * n);
  if ((mode & 1) == 0) {
    for (size_t i = 0; i < n; ++i) new_page[i] ^= old_page[i];
  }

  const size_t cap = procmig::xbzrle::MaxEncodedSize(n);
  std::vector<uint8_t> delta(cap);
  std::optional<size_t> len =
      procmig::xbzrle::Encode(old_page.data(), new_page.data(), n, delta.data(), cap);
  if (!len.has_value() || *len > cap) std::abort();
  if ((*len == 0) != (old_page == new_page)) std::abort();

  std::vector<uint8_t> exact(delta.begin(), delta.begin() + static_cast<long>(*len));
  std::vector<uint8_t> page = old_page;
  if (!procmig::xbzrle::Decode(exact.data(), exact.size(), page.data(), n).ok()) std::abort();
  if (page != new_page) std::abort();

  // One byte less room than the delta needs: "does not fit"; exactly the room: the same delta.
  if (*len > 0) {
    std::vector<uint8_t> small(*len);
    if (procmig::xbzrle::Encode(old_page.data(), new_page.data(), n, small.data(), *len - 1))
      std::abort();
    std::vector<uint8_t> fit(*len);
    std::optional<size_t> again =
        procmig::xbzrle::Encode(old_page.data(), new_page.data(), n, fit.data(), *len);
    if (again != len || fit != exact) std::abort();
  }
  return 0;
}
