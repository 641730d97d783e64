#include "base/safe_format.h"

#include <doctest/doctest.h>
#include <malloc.h>
#include <time.h>

#include <climits>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>

// Formats the compiler would reject are what some tests are about.
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wunknown-warning-option"
#pragma clang diagnostic ignored "-Wformat-invalid-specifier"
#endif
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
#pragma GCC diagnostic ignored "-Wformat"
#pragma GCC diagnostic ignored "-Wformat-extra-args"
#pragma GCC diagnostic ignored "-Wformat-zero-length"

namespace procmig {
namespace {

template <typename... Args>
std::string F(const char* fmt, Args... args) {
  char buf[512];
  bool truncated = true;
  size_t n = SafeFormat(buf, sizeof buf, &truncated, fmt, args...);
  REQUIRE_FALSE(truncated);
  return std::string(buf, n);
}

template <typename... Args>
std::string Libc(const char* fmt, Args... args) {
  char buf[512];
  int n = std::snprintf(buf, sizeof buf, fmt, args...);
  REQUIRE(n >= 0);
  return std::string(buf, static_cast<size_t>(n));
}

TEST_CASE("every supported conversion, exact bytes") {
  CHECK(F("plain text") == "plain text");
  CHECK(F("%s|%s", "abc", "") == "abc|");
  CHECK(F("%d %d %d", 0, -1, INT_MIN) == "0 -1 -2147483648");
  CHECK(F("%i", 42) == "42");
  CHECK(F("%u", 4294967295u) == "4294967295");
  CHECK(F("%ld %ld", LONG_MAX, LONG_MIN) == "9223372036854775807 -9223372036854775808");
  CHECK(F("%lu", ULONG_MAX) == "18446744073709551615");
  CHECK(F("%lld %llu", -5LL, 18446744073709551615ULL) == "-5 18446744073709551615");
  CHECK(F("%zu %zd", size_t{123}, static_cast<ssize_t>(-7)) == "123 -7");
  CHECK(F("%x %X", 0xdeadbeefu, 0xdeadbeefu) == "deadbeef DEADBEEF");
  CHECK(F("%lx", 0x7fff12345678ul) == "7fff12345678");
  CHECK(F("%llx", 0xffffffffffffffffull) == "ffffffffffffffff");
  CHECK(F("%zx", size_t{4096}) == "1000");
  CHECK(F("%p", reinterpret_cast<void*>(0x7f0012345000)) == "0x7f0012345000");
  CHECK(F("%p", static_cast<void*>(nullptr)) == "0x0");
  CHECK(F("%c%c", 'o', 'k') == "ok");
  CHECK(F("100%%") == "100%");
  CHECK(F("%hhd %hhu %hd %hu", 300, 300, 70000, 70000) == "44 44 4464 4464");
  CHECK(F("%jd %td", intmax_t{-9}, ptrdiff_t{-10}) == "-9 -10");
  CHECK(F("%s", static_cast<const char*>(nullptr)) == "(null)");
}

TEST_CASE("flags, width and precision") {
  CHECK(F("[%5d]", 42) == "[   42]");
  CHECK(F("[%-5d]", 42) == "[42   ]");
  CHECK(F("[%05d]", -42) == "[-0042]");
  CHECK(F("[%08x]", 0xbeefu) == "[0000beef]");
  CHECK(F("[%+d %+d]", 5, -5) == "[+5 -5]");
  CHECK(F("[% d]", 5) == "[ 5]");
  CHECK(F("[%#x %#X %#x]", 255u, 255u, 0u) == "[0xff 0XFF 0]");
  CHECK(F("[%.3d]", 7) == "[007]");
  CHECK(F("[%.0d]", 0) == "[]");
  CHECK(F("[%8.3d]", -7) == "[    -007]");
  CHECK(F("[%08.3d]", 7) == "[     007]");  // precision disables zero padding
  CHECK(F("[%.3s]", "abcdef") == "[abc]");
  CHECK(F("[%6s|%-6s]", "ab", "ab") == "[    ab|ab    ]");
  CHECK(F("[%*d|%-*d]", 4, 1, 4, 2) == "[   1|2   ]");
  CHECK(F("[%*d]", -4, 1) == "[1   ]");  // negative '*' width means left-justify
  CHECK(F("[%.*s]", 2, "xyz") == "[xy]");
  CHECK(F("[%.*s]", -1, "xyz") == "[xyz]");  // negative '*' precision is ignored
  CHECK(F("[%18p]", reinterpret_cast<void*>(0x1000)) == "[            0x1000]");
  CHECK(F("[%3c]", 'z') == "[  z]");
  // %.*s must not read past the given length: the buffer below has no terminator.
  const char unterminated[3] = {'a', 'b', 'c'};
  CHECK(F("%.*s", 3, unterminated) == "abc");
}

TEST_CASE("matches snprintf on random integer conversions") {
  std::mt19937_64 rng(11);
  const char* fmts[] = {"%d",   "%5d",  "%-7d", "%07d", "%+d",   "% d",  "%.4d",   "%10.6d",
                        "%u",   "%x",   "%#x",  "%X",   "%08x",  "%-9x", "%#010x", "%ld",
                        "%lu",  "%lx",  "%lld", "%llu", "%llx",  "%zu",  "%zx",    "%+.0d",
                        "%hhd", "%hhx", "%hd",  "%hu",  "%-+8d", "%.0u", "%#.5x",  "%12lu"};
  for (int i = 0; i < 4000; ++i) {
    const char* fmt = fmts[rng() % std::size(fmts)];
    uint64_t v = rng() >> (rng() % 64);
    if (rng() % 7 == 0) v = 0;
    std::string f(fmt);
    CAPTURE(f);
    CAPTURE(v);
    if (f.find("ll") != std::string::npos || f.find('l') != std::string::npos ||
        f.find('z') != std::string::npos) {
      REQUIRE(F(fmt, v) == Libc(fmt, v));
    } else {
      REQUIRE(F(fmt, static_cast<int>(v)) == Libc(fmt, static_cast<int>(v)));
    }
  }
}

TEST_CASE("truncation stops at the buffer and says so") {
  char buf[8];
  bool truncated = false;
  CHECK(SafeFormat(buf, sizeof buf, &truncated, "%s", "1234567") == 7);
  CHECK_FALSE(truncated);
  CHECK(SafeFormat(buf, sizeof buf, &truncated, "%s", "12345678") == 8);
  CHECK_FALSE(truncated);
  CHECK(SafeFormat(buf, sizeof buf, &truncated, "%s", "123456789") == 8);
  CHECK(truncated);
  CHECK(std::string(buf, 8) == "12345678");
  CHECK(SafeFormat(buf, sizeof buf, &truncated, "%d-%d", 12345, 67890) == 8);
  CHECK(std::string(buf, 8) == "12345-67");
  CHECK(truncated);
  // A huge width fills the buffer and stops.
  CHECK(SafeFormat(buf, sizeof buf, &truncated, "%*d", INT_MAX, 1) == 8);
  CHECK(std::string(buf, 8) == "        ");
  CHECK(truncated);
  CHECK(SafeFormat(buf, 0, &truncated, "x") == 0);
  CHECK(truncated);
  CHECK(SafeFormat(buf, 0, nullptr, "") == 0);
}

TEST_CASE("unsupported conversions are marked and keep later arguments aligned") {
  CHECK(F("a=%f b=%d", 1.5, 7) == "a=%? b=7");
  CHECK(F("%Lg|%s", static_cast<long double>(2.0), "ok") == "%?|ok");
  // An unknown conversion stops argument reading and copies the rest verbatim.
  CHECK(F("x %q y %d", 5) == "x %? y %d");
  CHECK(F("end %") == "end %?");
}

TEST_CASE("formatting never calls malloc") {
  char buf[256];
  struct mallinfo2 before = mallinfo2();
  size_t total = 0;
  for (int i = 0; i < 10000; ++i) {
    total += SafeFormat(buf, sizeof buf, nullptr, "%s %d %lu %p %x %.*s", "abc", i,
                        static_cast<unsigned long>(i) * 3, static_cast<void*>(buf), i, 2, "xyz");
  }
  struct mallinfo2 after = mallinfo2();
  CHECK(after.uordblks == before.uordblks);
  CHECK(total > 10000 * 20);
}

TEST_CASE("UTC timestamps match gmtime_r") {
  char out[kUtcTimestampLength];
  FormatUtcTimestamp(timespec{0, 0}, out);
  CHECK(std::string(out, sizeof out) == "1970-01-01T00:00:00.000000Z");
  FormatUtcTimestamp(timespec{951782400, 123456789}, out);  // leap day 2000
  CHECK(std::string(out, sizeof out) == "2000-02-29T00:00:00.123456Z");
  FormatUtcTimestamp(timespec{-1, 999999000}, out);
  CHECK(std::string(out, sizeof out) == "1969-12-31T23:59:59.999999Z");
  FormatUtcTimestamp(timespec{INT64_MAX, 0}, out);
  CHECK(std::string(out, sizeof out) == "9999-12-31T23:59:59.999999Z");
  FormatUtcTimestamp(timespec{INT64_MIN, 0}, out);
  CHECK(std::string(out, sizeof out) == "0000-01-01T00:00:00.000000Z");

  std::mt19937_64 rng(5);
  for (int i = 0; i < 20000; ++i) {
    // 1900..2400, both sides of the epoch, century and leap-year rules.
    int64_t sec = static_cast<int64_t>(rng() % (int64_t{15778800000})) - int64_t{2208988800};
    long nsec = static_cast<long>(rng() % 1000000000);
    FormatUtcTimestamp(timespec{sec, nsec}, out);
    time_t t = sec;
    struct tm tm;
    REQUIRE(gmtime_r(&t, &tm) != nullptr);
    char want[64];
    std::snprintf(want, sizeof want, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, nsec / 1000);
    REQUIRE(std::string(out, sizeof out) == want);
  }
}

}  // namespace
}  // namespace procmig
