#include "base/crc32c.h"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace procmig {
namespace {

// Bit-at-a-time reference, independent of both implementations' tables.
uint32_t BitwiseCrc32c(const uint8_t* p, size_t n) {
  uint32_t c = 0xffffffff;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82f63b78 & (0u - (c & 1)));
  }
  return ~c;
}

TEST_CASE("crc32c matches the published vectors (RFC 3720 B.4 and the check value)") {
  uint8_t buf[32];
  std::memset(buf, 0x00, sizeof buf);
  CHECK(crc32c::Value(buf, 32) == 0x8A9136AAu);
  CHECK(crc32c::ExtendPortable(0, buf, 32) == 0x8A9136AAu);
  std::memset(buf, 0xff, sizeof buf);
  CHECK(crc32c::Value(buf, 32) == 0x62A8AB43u);
  CHECK(crc32c::ExtendPortable(0, buf, 32) == 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) buf[i] = static_cast<uint8_t>(i);
  CHECK(crc32c::Value(buf, 32) == 0x46DD794Eu);
  CHECK(crc32c::ExtendPortable(0, buf, 32) == 0x46DD794Eu);
  for (int i = 0; i < 32; ++i) buf[i] = static_cast<uint8_t>(31 - i);
  CHECK(crc32c::Value(buf, 32) == 0x113FDB5Cu);
  CHECK(crc32c::ExtendPortable(0, buf, 32) == 0x113FDB5Cu);
  CHECK(crc32c::Value("123456789", 9) == 0xE3069283u);
  CHECK(crc32c::ExtendPortable(0, "123456789", 9) == 0xE3069283u);
  CHECK(crc32c::Value("", 0) == 0u);
  CHECK(crc32c::Extend(0x12345678u, "", 0) == 0x12345678u);
}

TEST_CASE("the hardware path is used on this CPU when it has SSE4.2") {
  // The CI machines have SSE4.2; if this fails on an old CPU, the portable path is what runs and
  // the equality tests below still hold.
#if defined(__x86_64__)
  CHECK(crc32c::HardwareAccelerated() == static_cast<bool>(__builtin_cpu_supports("sse4.2")));
#else
  CHECK_FALSE(crc32c::HardwareAccelerated());
#endif
}

std::vector<uint8_t> RandomBytes(std::mt19937_64& rng, size_t n) {
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

TEST_CASE("hardware == portable == bitwise on random lengths and alignments") {
  std::mt19937_64 rng(42);
  auto data = RandomBytes(rng, 3 * 8192 * 2 + 4096);
  // Every length up to 1100 (covers the 3 x 256 stripe threshold and all tails) at every
  // alignment mod 8, then random long lengths that exercise the 3 x 8192 stripes.
  for (size_t len = 0; len <= 1100; ++len) {
    for (size_t off = 0; off < 8; ++off) {
      const uint8_t* p = data.data() + off;
      uint32_t want = crc32c::ExtendPortable(0, p, len);
      if (crc32c::Extend(0, p, len) != want) {
        FAIL("len ", len, " off ", off);
      }
    }
  }
  for (int i = 0; i < 200; ++i) {
    size_t off = rng() % 64;
    size_t len = rng() % (data.size() - off);
    const uint8_t* p = data.data() + off;
    uint32_t want = BitwiseCrc32c(p, len);
    REQUIRE(crc32c::ExtendPortable(0, p, len) == want);
    REQUIRE(crc32c::Value(p, len) == want);
  }
  // Exactly at and around the stripe sizes.
  for (size_t len : {size_t{767}, size_t{768}, size_t{769}, size_t{3 * 8192 - 1}, size_t{3 * 8192},
                     size_t{3 * 8192 + 1}, size_t{6 * 8192}, size_t{6 * 8192 + 3 * 256 + 7}}) {
    CHECK(crc32c::Value(data.data() + 1, len) == BitwiseCrc32c(data.data() + 1, len));
  }
}

// ---- Each implementation against references ----

using crc32c::Impl;

// The hardware implementations, and Extend() (which runs on any CPU), each checked against the
// references below, which are themselves checked against ExtendPortable.
struct Candidate {
  std::string_view name;
  Impl impl;
  bool dispatch;
};
constexpr Candidate kCandidates[] = {{"Extend()", Impl::kPortable, true},
                                     {"sse4.2", Impl::kSse42, false},
                                     {"vpclmul-256", Impl::kClmul256, false},
                                     {"vpclmul-512", Impl::kClmul512, false}};

// The candidates this CPU runs; says which it skips.
std::vector<Candidate> Runnable() {
  std::vector<Candidate> out;
  for (const Candidate& c : kCandidates) {
    if (c.dispatch || crc32c::Supported(c.impl)) {
      out.push_back(c);
    } else {
      MESSAGE(std::string(c.name), " is not supported on this CPU: not tested here");
    }
  }
  return out;
}

uint32_t Run(const Candidate& c, uint32_t init, const uint8_t* p, size_t n) {
  return c.dispatch ? crc32c::Extend(init, p, n) : crc32c::ExtendWith(c.impl, init, p, n);
}

// One step of the bitwise reference on the raw (inverted) register.
uint32_t BitwiseStep(uint32_t reg, uint8_t byte) {
  reg ^= byte;
  for (int k = 0; k < 8; ++k) reg = (reg >> 1) ^ (0x82f63b78 & (0u - (reg & 1)));
  return reg;
}

// crc32c(init, p[0, len)) for every len in [0, max_len], from a single bitwise pass; checked on
// the way against ExtendPortable extended one byte at a time.
std::vector<uint32_t> PrefixCrcs(uint32_t init, const uint8_t* p, size_t max_len) {
  std::vector<uint32_t> out(max_len + 1);
  uint32_t reg = ~init;
  uint32_t portable = init;
  size_t mismatches = 0;
  for (size_t len = 0;; ++len) {
    out[len] = ~reg;
    mismatches += portable != out[len];
    if (len == max_len) break;
    reg = BitwiseStep(reg, p[len]);
    portable = crc32c::ExtendPortable(portable, p + len, 1);
  }
  REQUIRE(mismatches == 0);
  return out;
}

TEST_CASE("the implementations this CPU runs, and the one Extend() uses") {
  for (const Candidate& c : kCandidates) {
    if (!c.dispatch) {
      MESSAGE(std::string(c.name), std::string(crc32c::Supported(c.impl) ? ": " : ": not "),
              "supported");
    }
  }
  MESSAGE("Extend() uses ", std::string(crc32c::ImplName(crc32c::ChosenImpl())));
  CHECK(crc32c::Supported(Impl::kPortable));
  CHECK(crc32c::Supported(crc32c::ChosenImpl()));
  // The chosen one is the last supported one in the enum's order (the fastest).
  for (Impl i : {Impl::kSse42, Impl::kClmul256, Impl::kClmul512}) {
    if (crc32c::Supported(i)) CHECK(static_cast<int>(crc32c::ChosenImpl()) >= static_cast<int>(i));
  }
  CHECK(std::string_view(crc32c::ImplName(Impl::kClmul512)) == "vpclmul-512");
#if defined(__x86_64__)
  CHECK(crc32c::Supported(Impl::kSse42) == static_cast<bool>(__builtin_cpu_supports("sse4.2")));
  // Folding needs the crc32 instruction too (short inputs and the final reduction).
  if (crc32c::Supported(Impl::kClmul256) || crc32c::Supported(Impl::kClmul512)) {
    CHECK(crc32c::Supported(Impl::kSse42));
    CHECK(__builtin_cpu_supports("vpclmulqdq"));
  }
  if (crc32c::Supported(Impl::kClmul512)) CHECK(__builtin_cpu_supports("avx512f"));
#endif
}

TEST_CASE("every implementation == bitwise == portable, lengths 0..4200 at start offsets 0..63") {
  // Random data and, per offset, a random initial crc whose results for all lengths come from one
  // bitwise pass; each call also runs with a second random initial crc, whose expected result
  // follows from the first: the crc is affine in the initial one, and changing it by d changes the
  // result by d shifted past the data (d * x^(8 len) mod P, which Combine computes).
  constexpr size_t kMaxLen = 4200;
  std::mt19937_64 rng(2024);
  auto data = RandomBytes(rng, kMaxLen + 64);
  std::vector<uint32_t> inits;
  std::vector<std::vector<uint32_t>> refs;
  for (size_t off = 0; off < 64; ++off) {
    inits.push_back(static_cast<uint32_t>(rng()));
    refs.push_back(PrefixCrcs(inits.back(), data.data() + off, kMaxLen));
  }
  for (const Candidate& c : Runnable()) {
    size_t failures = 0;
    for (size_t off = 0; off < 64; ++off) {
      const uint8_t* p = data.data() + off;
      for (size_t len = 0; len <= kMaxLen; ++len) {
        const uint32_t got = Run(c, inits[off], p, len);
        const uint32_t init2 = static_cast<uint32_t>(rng());
        const uint32_t want2 = refs[off][len] ^ crc32c::Combine(init2 ^ inits[off], 0, len);
        const uint32_t got2 = Run(c, init2, p, len);
        if ((got != refs[off][len] || got2 != want2) && ++failures <= 10) {
          FAIL_CHECK(std::string(c.name), ": len ", len, " offset ", off, " got ", got, " want ",
                     refs[off][len], "; init ", init2, " got ", got2, " want ", want2);
        }
      }
    }
    CHECK(failures == 0);
  }
  // The Combine-derived expectation itself, on the portable path.
  for (size_t len : {size_t{0}, size_t{1}, size_t{127}, size_t{4096}}) {
    CHECK(crc32c::ExtendPortable(0x1234567u, data.data(), len) ==
          (refs[0][len] ^ crc32c::Combine(0x1234567u ^ inits[0], 0, len)));
  }
}

TEST_CASE("every implementation == bitwise around block boundaries up to 70000 bytes") {
  // The folding loops step by 256 (512-bit), 128 (256-bit), 64, 32 and 16 bytes: lengths one
  // below, at and above multiples of 64 and 256, at a few start offsets.
  constexpr size_t kMaxLen = 70000;
  std::mt19937_64 rng(77);
  auto data = RandomBytes(rng, kMaxLen + 64);
  std::vector<size_t> lengths;
  for (size_t base = 64; base + 256 <= kMaxLen; base += 64) {
    for (size_t d : {base - 1, base, base + 1, base + 15, base + 16, base + 17}) {
      if (base % 256 == 0 || d == base + 1) lengths.push_back(d);
    }
  }
  lengths.push_back(kMaxLen);
  const auto runnable = Runnable();
  for (size_t off : {size_t{0}, size_t{1}, size_t{8}, size_t{33}, size_t{63}}) {
    const uint32_t init = static_cast<uint32_t>(rng());
    const auto refs = PrefixCrcs(init, data.data() + off, kMaxLen);
    for (const Candidate& c : runnable) {
      size_t failures = 0;
      for (size_t len : lengths) {
        const uint32_t got = Run(c, init, data.data() + off, len);
        if (got != refs[len] && ++failures <= 10) {
          FAIL_CHECK(std::string(c.name), ": len ", len, " offset ", off, " got ", got, " want ",
                     refs[len]);
        }
      }
      CHECK(failures == 0);
    }
  }
}

uint32_t RunCopy(const Candidate& c, uint32_t init, uint8_t* dst, const uint8_t* src, size_t n) {
  return c.dispatch ? crc32c::CopyExtend(init, dst, src, n)
                    : crc32c::CopyExtendWith(c.impl, init, dst, src, n);
}

TEST_CASE("CopyExtend copies exactly and returns the copy's crc, lengths 0..4200, any alignment") {
  // The crc against one bitwise pass per source offset; the destination at another offset, with
  // guard bytes on both sides that must stay as they were.
  constexpr size_t kMaxLen = 4200, kGuard = 64;
  std::mt19937_64 rng(99);
  auto data = RandomBytes(rng, kMaxLen + 64);
  std::vector<uint8_t> out(kGuard + 64 + kMaxLen + kGuard);
  for (const Candidate& c : Runnable()) {
    size_t failures = 0;
    for (size_t off = 0; off < 64; off += off < 16 ? 1 : 7) {
      const uint32_t init = static_cast<uint32_t>(rng());
      const auto refs = PrefixCrcs(init, data.data() + off, kMaxLen);
      const size_t dst_off = kGuard + (off * 37) % 64;
      for (size_t len = 0; len <= kMaxLen; ++len) {
        std::memset(out.data(), 0xa5, out.size());
        const uint32_t got = RunCopy(c, init, out.data() + dst_off, data.data() + off, len);
        const bool copied = std::memcmp(out.data() + dst_off, data.data() + off, len) == 0;
        bool guards = true;
        for (size_t i = 0; i < out.size(); ++i) {
          if (i < dst_off || i >= dst_off + len) guards = guards && out[i] == 0xa5;
        }
        if ((got != refs[len] || !copied || !guards) && ++failures <= 10) {
          FAIL_CHECK(std::string(c.name), ": len ", len, " offset ", off, " to ", dst_off, " got ",
                     got, " want ", refs[len], copied ? "" : "; copy differs",
                     guards ? "" : "; wrote outside the destination");
        }
      }
    }
    CHECK(failures == 0);
  }
}

TEST_CASE("CopyExtend's crc is that of the bytes it wrote while another thread rewrites them") {
  // The agent copies pages the program may be writing: the crc must describe the copy, whatever
  // mix of old and new bytes it caught. A writer rewrites random bytes of the source the whole
  // time; every copy's crc must equal the crc of the copy. Copies go on for at least 200 ms and
  // until 1000 of them differed from the one before (else nothing changed under them and the
  // test proved nothing): a fixed number of copies took 10 ms, during which a loaded machine
  // (parallel ctest) did not always run the writer at all.
  constexpr size_t kPage = 4096;
  constexpr size_t kChanged = 1000;
  std::vector<uint8_t> src(kPage), dst(kPage);
  std::mt19937_64 seed(3);
  for (uint8_t& b : src) b = static_cast<uint8_t>(seed());
  for (const Candidate& c : Runnable()) {
    std::atomic<bool> stop{false};
    std::thread writer([&] {
      std::mt19937_64 rng(11);
      while (!stop.load(std::memory_order_relaxed)) {
        const uint64_t r = rng();
        std::atomic_ref<uint8_t>(src[r % kPage])
            .store(static_cast<uint8_t>(r >> 32), std::memory_order_relaxed);
      }
    });
    size_t failures = 0, changed = 0, copies = 0;
    uint32_t last = 0;
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
      const auto elapsed = std::chrono::steady_clock::now() - start;
      if (elapsed > std::chrono::seconds(10) ||
          (elapsed > std::chrono::milliseconds(200) && changed >= kChanged)) {
        break;
      }
      const uint32_t got = RunCopy(c, 0, dst.data(), src.data(), kPage);
      const uint32_t want = crc32c::ExtendPortable(0, dst.data(), kPage);
      if (got != want && ++failures <= 5) {
        FAIL_CHECK(std::string(c.name), ": copy ", copies, " crc ", got, " but the copy's is ",
                   want);
      }
      changed += copies > 0 && want != last;
      last = want;
      ++copies;
    }
    stop.store(true);
    writer.join();
    CHECK(failures == 0);
    MESSAGE(std::string(c.name), ": ", changed, " of ", copies,
            " copies differed from the one before");
    CHECK(changed >= kChanged);
  }
}

TEST_CASE("every implementation == portable, 4096-byte pages at every start offset") {
  constexpr size_t kPage = 4096;
  std::mt19937_64 rng(5);
  // Page-aligned storage: the pages of a migrated process start on a page.
  std::unique_ptr<uint8_t, decltype(&std::free)> buf(
      static_cast<uint8_t*>(std::aligned_alloc(kPage, 3 * kPage)), &std::free);
  REQUIRE(buf != nullptr);
  uint8_t* const base = buf.get();
  for (size_t i = 0; i < 3 * kPage; ++i) base[i] = static_cast<uint8_t>(rng());
  const auto runnable = Runnable();
  for (const Candidate& c : runnable) {
    size_t failures = 0;
    for (size_t off = 0; off < 2 * kPage; off += off < 128 ? 1 : 61) {
      const uint32_t init = off % 3 == 0 ? 0 : static_cast<uint32_t>(rng());
      const uint32_t want = crc32c::ExtendPortable(init, base + off, kPage);
      const uint32_t got = Run(c, init, base + off, kPage);
      if (got != want && ++failures <= 10) {
        FAIL_CHECK(std::string(c.name), ": page at offset ", off, " got ", got, " want ", want);
      }
    }
    CHECK(failures == 0);
    // Pages of one repeated byte (zero pages are the commonest).
    for (int fill : {0x00, 0xff, 0x5a}) {
      std::memset(base + kPage, fill, kPage);
      CHECK(Run(c, 0, base + kPage, kPage) == BitwiseCrc32c(base + kPage, kPage));
    }
  }
}

TEST_CASE("Extend over any split equals one pass, with any initial crc") {
  std::mt19937_64 rng(7);
  auto data = RandomBytes(rng, 70000);
  for (int i = 0; i < 300; ++i) {
    size_t len = rng() % data.size();
    size_t cut1 = len == 0 ? 0 : rng() % (len + 1);
    size_t cut2 = cut1 + (len == cut1 ? 0 : rng() % (len - cut1 + 1));
    uint32_t whole = crc32c::Value(data.data(), len);
    uint32_t c = crc32c::Extend(0, data.data(), cut1);
    c = crc32c::Extend(c, data.data() + cut1, cut2 - cut1);
    c = crc32c::Extend(c, data.data() + cut2, len - cut2);
    REQUIRE(c == whole);
    uint32_t p = crc32c::ExtendPortable(0, data.data(), cut1);
    p = crc32c::ExtendPortable(p, data.data() + cut1, len - cut1);
    REQUIRE(p == whole);
  }
}

TEST_CASE("Combine joins independently computed checksums") {
  std::mt19937_64 rng(99);
  auto data = RandomBytes(rng, 20000);
  for (size_t cut : {size_t{0}, size_t{1}, size_t{4096}, size_t{12345}, size_t{20000}}) {
    uint32_t a = crc32c::Value(data.data(), cut);
    uint32_t b = crc32c::Value(data.data() + cut, data.size() - cut);
    CHECK(crc32c::Combine(a, b, data.size() - cut) == crc32c::Value(data.data(), data.size()));
  }
  // Combining with an empty B is the identity.
  CHECK(crc32c::Combine(0xdeadbeef, 0, 0) == 0xdeadbeef);
}

TEST_CASE("a single flipped bit changes the checksum") {
  std::mt19937_64 rng(3);
  auto data = RandomBytes(rng, 4096);
  uint32_t base = crc32c::Value(data.data(), data.size());
  for (size_t bit = 0; bit < data.size() * 8; bit += 97) {
    data[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    REQUIRE(crc32c::Value(data.data(), data.size()) != base);
    data[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
  }
}

TEST_CASE("Concatenate joins equal-sized pieces' crcs into the crc of the whole") {
  std::vector<uint8_t> buf(4096 * 37);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<uint8_t>(i * 2654435761u >> 13);
  std::vector<uint32_t> crcs;
  for (size_t p = 0; p < 37; ++p) crcs.push_back(crc32c::Value(buf.data() + p * 4096, 4096));
  CHECK(crc32c::Concatenate(crcs.data(), crcs.size(), 4096) ==
        crc32c::Value(buf.data(), buf.size()));
  CHECK(crc32c::Concatenate(crcs.data(), 1, 4096) == crcs[0]);
  // Every prefix: pieces split into four quarters plus a tail of every length.
  for (size_t k = 0; k <= crcs.size(); ++k) {
    CAPTURE(k);
    CHECK(crc32c::Concatenate(crcs.data(), k, 4096) == crc32c::Value(buf.data(), k * 4096));
  }
  CHECK(crc32c::Concatenate(crcs.data(), 0, 4096) == 0);
  crcs[5] ^= 1;
  CHECK(crc32c::Concatenate(crcs.data(), crcs.size(), 4096) !=
        crc32c::Value(buf.data(), buf.size()));
  // Another piece length takes the table built at run time.
  std::vector<uint32_t> odd;
  for (size_t p = 0; p < 37 * 4; ++p) odd.push_back(crc32c::Value(buf.data() + p * 1024, 1024));
  CHECK(crc32c::Concatenate(odd.data(), odd.size(), 1024) == crc32c::Value(buf.data(), buf.size()));
  CHECK(crc32c::Concatenate(odd.data(), 3, 1024) == crc32c::Value(buf.data(), 3 * 1024));
}

}  // namespace
}  // namespace procmig
