#include "transport/group_handshake.h"

#include <doctest/doctest.h>

namespace procmig {
namespace {

TEST_CASE("handshake encodes to the documented 24 bytes and decodes back") {
  GroupHandshake h;
  h.session_id = 0x1122334455667788ull;
  h.channel_index = 2;
  h.channel_count = 3;
  auto b = h.Encode();
  const uint8_t want[24] = {0x50, 0x4d, 0x4d, 0x43, 1, 0, 0, 0, 0x88, 0x77, 0x66, 0x55,
                            0x44, 0x33, 0x22, 0x11, 2, 0, 3, 0, 0,    0,    0,    0};
  for (size_t i = 0; i < 24; ++i) CHECK(b[i] == want[i]);
  auto d = GroupHandshake::Decode(b);
  REQUIRE(d.ok());
  CHECK(d->session_id == h.session_id);
  CHECK(d->channel_index == 2);
  CHECK(d->channel_count == 3);
}

TEST_CASE("every malformed handshake is DataLoss naming the field") {
  GroupHandshake h;
  h.channel_count = 2;
  auto good = h.Encode();
  struct Case {
    size_t offset;
    uint8_t value;
    const char* message;
  } cases[] = {
      {0, 0x51, "group handshake: bad magic 0x434d4d51"},
      {4, 2, "group handshake: unsupported version 2"},
      {6, 1, "group handshake: reserved fields are not zero"},
      {23, 1, "group handshake: reserved fields are not zero"},
      {18, 0, "group handshake: channel count 0 outside [1, 64]"},
      {18, 65, "group handshake: channel count 65 outside [1, 64]"},
      {16, 2, "group handshake: channel index 2 >= count 2"},
  };
  for (const Case& c : cases) {
    auto b = good;
    b[c.offset] = c.value;
    auto d = GroupHandshake::Decode(b);
    CHECK(d.status().code() == absl::StatusCode::kDataLoss);
    CHECK(d.status().message() == c.message);
  }
  auto shorter = GroupHandshake::Decode(std::span<const uint8_t>(good.data(), 23));
  CHECK(shorter.status().message() == "group handshake: 23 bytes, need 24");
}

}  // namespace
}  // namespace procmig
