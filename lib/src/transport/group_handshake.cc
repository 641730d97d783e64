#include "transport/group_handshake.h"

#include "absl/strings/str_cat.h"
#include "base/coding.h"

namespace procmig {

std::array<uint8_t, GroupHandshake::kSize> GroupHandshake::Encode() const {
  std::array<uint8_t, kSize> out{};
  EncodeFixed32(&out[0], kMagic);
  EncodeFixed16(&out[4], kVersion);
  EncodeFixed16(&out[6], 0);
  EncodeFixed64(&out[8], session_id);
  EncodeFixed16(&out[16], channel_index);
  EncodeFixed16(&out[18], channel_count);
  EncodeFixed32(&out[20], 0);
  return out;
}

absl::StatusOr<GroupHandshake> GroupHandshake::Decode(std::span<const uint8_t> bytes) {
  ByteReader r(bytes);
  uint32_t magic = r.U32();
  uint16_t version = r.U16();
  uint16_t reserved1 = r.U16();
  GroupHandshake h;
  h.session_id = r.U64();
  h.channel_index = r.U16();
  h.channel_count = r.U16();
  uint32_t reserved2 = r.U32();
  if (!r.ok()) {
    return absl::DataLossError(
        absl::StrCat("group handshake: ", bytes.size(), " bytes, need ", kSize));
  }
  if (magic != kMagic) {
    return absl::DataLossError(absl::StrCat("group handshake: bad magic 0x", absl::Hex(magic)));
  }
  if (version != kVersion) {
    return absl::DataLossError(absl::StrCat("group handshake: unsupported version ", version));
  }
  if (reserved1 != 0 || reserved2 != 0) {
    return absl::DataLossError("group handshake: reserved fields are not zero");
  }
  if (h.channel_count == 0 || h.channel_count > kMaxChannels) {
    return absl::DataLossError(absl::StrCat("group handshake: channel count ", h.channel_count,
                                            " outside [1, ", kMaxChannels, "]"));
  }
  if (h.channel_index >= h.channel_count) {
    return absl::DataLossError(absl::StrCat("group handshake: channel index ", h.channel_index,
                                            " >= count ", h.channel_count));
  }
  return h;
}

}  // namespace procmig
