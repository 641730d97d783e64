#include "codec/zero_page.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

namespace procmig {
namespace {

using ZeroFn = bool (*)(const uint8_t*, size_t);

std::vector<std::pair<const char*, ZeroFn>> Impls() {
  std::vector<std::pair<const char*, ZeroFn>> v = {
      {"dispatch", &IsZeroPage}, {"portable", &IsZeroPagePortable}, {"sse2", &IsZeroPageSse2}};
  if (__builtin_cpu_supports("avx2")) v.emplace_back("avx2", &IsZeroPageAvx2);
  return v;
}

TEST_CASE("the dispatcher picks AVX2 exactly when the CPU has it") {
  CHECK(ZeroPageImplName() == (__builtin_cpu_supports("avx2") ? "avx2" : "sse2"));
}

TEST_CASE("all-zero buffers of every length and alignment are zero") {
  for (auto [name, fn] : Impls()) {
    CAPTURE(name);
    for (size_t offset = 0; offset < 8; ++offset) {
      for (size_t len : {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{15}, size_t{31},
                         size_t{63}, size_t{64}, size_t{127}, size_t{128}, size_t{129},
                         size_t{4095}, size_t{4096}, size_t{65536}}) {
        // Exact-size heap buffer, so ASan catches any read past the end.
        std::vector<uint8_t> buf(offset + len, 0);
        CHECK(fn(buf.data() + offset, len));
      }
    }
  }
}

TEST_CASE("a single non-zero byte anywhere in a 4 KiB page is found") {
  std::vector<uint8_t> page(4096, 0);
  for (auto [name, fn] : Impls()) {
    CAPTURE(name);
    for (size_t i = 0; i < page.size(); ++i) {
      page[i] = static_cast<uint8_t>(1u << (i % 8));
      if (fn(page.data(), page.size())) {
        FAIL_CHECK("missed the non-zero byte at " << i);
      }
      page[i] = 0;
    }
    CHECK(fn(page.data(), page.size()));
  }
}

TEST_CASE("every position of a non-zero byte in short unaligned buffers is found") {
  for (auto [name, fn] : Impls()) {
    CAPTURE(name);
    for (size_t offset = 0; offset < 4; ++offset) {
      for (size_t len = 1; len <= 300; ++len) {
        std::vector<uint8_t> buf(offset + len, 0);
        for (size_t i = 0; i < len; ++i) {
          buf[offset + i] = 0x80;
          if (fn(buf.data() + offset, len)) FAIL_CHECK("len " << len << " missed byte " << i);
          buf[offset + i] = 0;
        }
      }
    }
  }
}

TEST_CASE("bytes just outside the range do not count") {
  for (auto [name, fn] : Impls()) {
    CAPTURE(name);
    std::vector<uint8_t> buf(4096 + 2, 0);
    buf[0] = 0xff;
    buf[4096 + 1] = 0xff;
    CHECK(fn(buf.data() + 1, 4096));
    CHECK_FALSE(fn(buf.data(), 4096));
    CHECK_FALSE(fn(buf.data() + 2, 4096));
  }
}

}  // namespace
}  // namespace procmig
