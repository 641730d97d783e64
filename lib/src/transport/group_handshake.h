// GroupHandshake: the first bytes of every connection of a ChannelGroup, so the receiver can tell
// which connections belong to one session and where each sits in it (QEMU multifd does the same
// with its MultiFDInit_t packet).
//
// Grammar (24 bytes, little-endian, sent once by the connecting side, before any data):
//   handshake := magic:u32 version:u16 reserved:u16 session_id:u64
//                channel_index:u16 channel_count:u16 reserved:u32
//   magic         = 0x434d4d50 ("PMMC" in memory order)
//   version       = 1
//   session_id    = chosen by the sender, the same on every connection of the group
//   channel_index < channel_count, 1 <= channel_count <= kMaxChannels
//   reserved      = 0 (anything else is rejected, so the fields can gain meaning later)
// After the handshake a connection carries whole batches; batches are independent, so the
// receiver may process the channels in any order. Pure value code; thread-safe.
#ifndef PROCMIG_TRANSPORT_GROUP_HANDSHAKE_H_
#define PROCMIG_TRANSPORT_GROUP_HANDSHAKE_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "absl/status/statusor.h"

namespace procmig {

struct GroupHandshake {
  static constexpr uint32_t kMagic = 0x434d4d50;
  static constexpr uint16_t kVersion = 1;
  static constexpr size_t kSize = 24;
  static constexpr uint16_t kMaxChannels = 64;

  uint64_t session_id = 0;
  uint16_t channel_index = 0;
  uint16_t channel_count = 1;

  std::array<uint8_t, kSize> Encode() const;
  // DataLoss naming the bad field for anything but a valid handshake.
  static absl::StatusOr<GroupHandshake> Decode(std::span<const uint8_t> bytes);
};

}  // namespace procmig

#endif  // PROCMIG_TRANSPORT_GROUP_HANDSHAKE_H_
