#include "base/safe_format.h"

#include <cstdint>

namespace procmig {
namespace {

// Appends to a fixed buffer, remembering whether anything was dropped.
struct Out {
  char* p;
  size_t cap;
  size_t n = 0;
  bool truncated = false;

  void Put(char c) {
    if (n < cap) {
      p[n++] = c;
    } else {
      truncated = true;
    }
  }
  void Put(const char* s, size_t len) {
    for (size_t i = 0; i < len; ++i) Put(s[i]);
  }
  void Repeat(char c, size_t count) {
    // Bounded by the space left, so a huge '*' width costs nothing.
    for (size_t i = 0; i < count && !truncated; ++i) Put(c);
  }
};

struct Spec {
  bool left = false;   // '-'
  bool zero = false;   // '0'
  bool plus = false;   // '+'
  bool space = false;  // ' '
  bool alt = false;    // '#'
  size_t width = 0;
  bool has_precision = false;
  size_t precision = 0;
};

void PutPadded(Out& out, const Spec& spec, const char* s, size_t len) {
  size_t pad = spec.width > len ? spec.width - len : 0;
  if (!spec.left) out.Repeat(' ', pad);
  out.Put(s, len);
  if (spec.left) out.Repeat(' ', pad);
}

// One integer conversion: [spaces][sign][0x][zeros][digits][spaces].
void PutInteger(Out& out, const Spec& spec, uint64_t magnitude, bool negative, bool is_signed,
                unsigned base, bool upper, const char* prefix) {
  const char* digit_chars = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  char digits[24];
  size_t nd = 0;
  // printf prints no digits for a zero value with an explicit precision of 0.
  if (!(magnitude == 0 && spec.has_precision && spec.precision == 0)) {
    do {
      digits[nd++] = digit_chars[magnitude % base];
      magnitude /= base;
    } while (magnitude != 0);
  }
  char sign = 0;
  if (negative) {
    sign = '-';
  } else if (is_signed && spec.plus) {
    sign = '+';
  } else if (is_signed && spec.space) {
    sign = ' ';
  }
  size_t prefix_len = 0;
  while (prefix != nullptr && prefix[prefix_len] != '\0') ++prefix_len;
  size_t zeros = spec.has_precision && spec.precision > nd ? spec.precision - nd : 0;
  size_t body = (sign != 0) + prefix_len + zeros + nd;
  if (spec.zero && !spec.left && !spec.has_precision && spec.width > body) {
    zeros += spec.width - body;
    body = spec.width;
  }
  size_t pad = spec.width > body ? spec.width - body : 0;
  if (!spec.left) out.Repeat(' ', pad);
  if (sign != 0) out.Put(sign);
  out.Put(prefix, prefix_len);
  out.Repeat('0', zeros);
  while (nd > 0) out.Put(digits[--nd]);
  if (spec.left) out.Repeat(' ', pad);
}

enum class Length { kNone, kHH, kH, kL, kLL, kZ, kJ, kT, kBigL };

int64_t SignedArg(Length len, va_list& ap) {
  switch (len) {
    case Length::kHH:
      return static_cast<signed char>(va_arg(ap, int));
    case Length::kH:
      return static_cast<short>(va_arg(ap, int));
    case Length::kL:
      return va_arg(ap, long);
    case Length::kLL:
      return va_arg(ap, long long);
    case Length::kZ:
      return va_arg(ap, ptrdiff_t);  // the signed type of size_t's width
    case Length::kJ:
      return va_arg(ap, intmax_t);
    case Length::kT:
      return va_arg(ap, ptrdiff_t);
    default:
      return va_arg(ap, int);
  }
}

uint64_t UnsignedArg(Length len, va_list& ap) {
  switch (len) {
    case Length::kHH:
      return static_cast<unsigned char>(va_arg(ap, unsigned));
    case Length::kH:
      return static_cast<unsigned short>(va_arg(ap, unsigned));
    case Length::kL:
      return va_arg(ap, unsigned long);
    case Length::kLL:
      return va_arg(ap, unsigned long long);
    case Length::kZ:
      return va_arg(ap, size_t);
    case Length::kJ:
      return va_arg(ap, uintmax_t);
    case Length::kT:
      return static_cast<uint64_t>(va_arg(ap, ptrdiff_t));
    default:
      return va_arg(ap, unsigned);
  }
}

size_t ParseNumber(const char*& f) {
  size_t v = 0;
  while (*f >= '0' && *f <= '9') {
    // Saturate rather than wrap: a silly width just pads to the end of the buffer.
    if (v < 100000) v = v * 10 + static_cast<size_t>(*f - '0');
    ++f;
  }
  return v;
}

}  // namespace

size_t SafeVFormat(char* out_buf, size_t cap, bool* truncated, const char* fmt, va_list ap_in) {
  Out out{out_buf, cap};
  va_list ap;
  va_copy(ap, ap_in);
  for (const char* f = fmt; *f != '\0';) {
    if (*f != '%') {
      out.Put(*f++);
      continue;
    }
    ++f;
    Spec spec;
    for (;; ++f) {
      if (*f == '-') {
        spec.left = true;
      } else if (*f == '0') {
        spec.zero = true;
      } else if (*f == '+') {
        spec.plus = true;
      } else if (*f == ' ') {
        spec.space = true;
      } else if (*f == '#') {
        spec.alt = true;
      } else {
        break;
      }
    }
    if (*f == '*') {
      int64_t w = va_arg(ap, int);
      if (w < 0) {
        spec.left = true;
        w = -w;
      }
      spec.width = static_cast<size_t>(w);
      ++f;
    } else {
      spec.width = ParseNumber(f);
    }
    if (*f == '.') {
      ++f;
      spec.has_precision = true;
      if (*f == '*') {
        int p = va_arg(ap, int);
        spec.has_precision = p >= 0;
        spec.precision = p >= 0 ? static_cast<size_t>(p) : 0;
        ++f;
      } else {
        spec.precision = ParseNumber(f);
      }
    }
    Length len = Length::kNone;
    switch (*f) {
      case 'h':
        ++f;
        len = *f == 'h' ? (++f, Length::kHH) : Length::kH;
        break;
      case 'l':
        ++f;
        len = *f == 'l' ? (++f, Length::kLL) : Length::kL;
        break;
      case 'z':
        ++f;
        len = Length::kZ;
        break;
      case 'j':
        ++f;
        len = Length::kJ;
        break;
      case 't':
        ++f;
        len = Length::kT;
        break;
      case 'L':
        ++f;
        len = Length::kBigL;
        break;
      default:
        break;
    }
    const char c = *f;
    switch (c) {
      case 'd':
      case 'i': {
        int64_t v = SignedArg(len, ap);
        uint64_t mag = v < 0 ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
        PutInteger(out, spec, mag, v < 0, true, 10, false, nullptr);
        break;
      }
      case 'u':
        PutInteger(out, spec, UnsignedArg(len, ap), false, false, 10, false, nullptr);
        break;
      case 'x':
      case 'X': {
        uint64_t v = UnsignedArg(len, ap);
        const char* prefix = spec.alt && v != 0 ? (c == 'x' ? "0x" : "0X") : nullptr;
        PutInteger(out, spec, v, false, false, 16, c == 'X', prefix);
        break;
      }
      case 'p': {
        auto v = reinterpret_cast<uintptr_t>(va_arg(ap, void*));
        PutInteger(out, spec, v, false, false, 16, false, "0x");
        break;
      }
      case 's': {
        const char* s = va_arg(ap, const char*);
        if (s == nullptr) s = "(null)";
        size_t n = 0;
        // Never reads past `precision` bytes: %.*s may point at an unterminated buffer.
        while ((!spec.has_precision || n < spec.precision) && s[n] != '\0') ++n;
        PutPadded(out, spec, s, n);
        break;
      }
      case 'c': {
        char ch = static_cast<char>(va_arg(ap, int));
        PutPadded(out, spec, &ch, 1);
        break;
      }
      case '%':
        out.Put('%');
        break;
      case 'f':
      case 'F':
      case 'e':
      case 'E':
      case 'g':
      case 'G':
      case 'a':
      case 'A':
        // Keep the following arguments aligned, but do not format floats.
        if (len == Length::kBigL) {
          (void)va_arg(ap, long double);
        } else {
          (void)va_arg(ap, double);
        }
        out.Put("%?", 2);
        break;
      default:
        // Unknown conversion: its argument's type is unknown, so stop reading arguments.
        out.Put("%?", 2);
        if (c != '\0') {
          for (const char* rest = f + 1; *rest != '\0'; ++rest) out.Put(*rest);
        }
        va_end(ap);
        if (truncated != nullptr) *truncated = out.truncated;
        return out.n;
    }
    ++f;
  }
  va_end(ap);
  if (truncated != nullptr) *truncated = out.truncated;
  return out.n;
}

size_t SafeFormat(char* out, size_t cap, bool* truncated, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  size_t n = SafeVFormat(out, cap, truncated, fmt, ap);
  va_end(ap);
  return n;
}

void FormatUtcTimestamp(const timespec& ts, char out[kUtcTimestampLength]) {
  constexpr int64_t kMinSec = -62167219200;  // 0000-01-01T00:00:00Z
  constexpr int64_t kMaxSec = 253402300799;  // 9999-12-31T23:59:59Z
  int64_t sec = ts.tv_sec;
  int64_t usec = ts.tv_nsec / 1000;
  if (usec < 0 || usec > 999999) usec = 0;
  if (sec < kMinSec) {
    sec = kMinSec;
    usec = 0;
  } else if (sec > kMaxSec) {
    sec = kMaxSec;
    usec = 999999;
  }
  int64_t days = sec >= 0 ? sec / 86400 : -((-sec + 86399) / 86400);
  int64_t sod = sec - days * 86400;
  // Civil date from days since 1970-01-01 (H. Hinnant's algorithm, proleptic Gregorian).
  int64_t z = days + 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  int64_t doe = z - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153;
  int64_t day = doy - (153 * mp + 2) / 5 + 1;
  int64_t month = mp < 10 ? mp + 3 : mp - 9;
  int64_t year = yoe + era * 400 + (month <= 2);

  auto put = [&out](size_t at, int64_t v, int digits) {
    for (int i = digits - 1; i >= 0; --i) {
      out[at + static_cast<size_t>(i)] = static_cast<char>('0' + v % 10);
      v /= 10;
    }
  };
  put(0, year, 4);
  out[4] = '-';
  put(5, month, 2);
  out[7] = '-';
  put(8, day, 2);
  out[10] = 'T';
  put(11, sod / 3600, 2);
  out[13] = ':';
  put(14, sod / 60 % 60, 2);
  out[16] = ':';
  put(17, sod % 60, 2);
  out[19] = '.';
  put(20, usec, 6);
  out[26] = 'Z';
}

}  // namespace procmig
