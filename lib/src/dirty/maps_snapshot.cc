#include "dirty/maps_snapshot.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace procmig {
namespace {

// Parses "lo-hi" at p (hex); returns the position after hi, or nullptr.
const char* ParseRange(const char* p, const char* end, uintptr_t* lo, uintptr_t* hi) {
  auto hex = [&](uintptr_t* out) {
    uintptr_t v = 0;
    const char* start = p;
    while (p < end) {
      const char c = *p;
      int d;
      if (c >= '0' && c <= '9') {
        d = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        d = c - 'a' + 10;
      } else {
        break;
      }
      v = (v << 4) | static_cast<uintptr_t>(d);
      ++p;
    }
    *out = v;
    return p > start;
  };
  if (!hex(lo) || p >= end || *p != '-') return nullptr;
  ++p;
  if (!hex(hi)) return nullptr;
  return p;
}

}  // namespace

void MapsSnapshot::Reserve(size_t bytes) {
  if (bytes <= cap_) return;
  buf_ = std::make_unique<char[]>(bytes);
  cap_ = bytes;
  len_ = 0;
  valid_ = false;
}

bool MapsSnapshot::Read() {
  valid_ = false;
  truncated_ = false;
  len_ = 0;
  if (cap_ == 0) return false;
  const int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  for (;;) {
    if (len_ == cap_) {
      // Full: one more byte would tell whether there is more; treat a full buffer as truncated.
      truncated_ = true;
      break;
    }
    const ssize_t n = read(fd, buf_.get() + len_, cap_ - len_);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      close(fd);
      return false;
    }
    if (n == 0) break;
    len_ += static_cast<size_t>(n);
  }
  close(fd);
  valid_ = !truncated_;
  return valid_;
}

void MapsSnapshot::SetTextForTest(const char* text, size_t len) {
  Reserve(len + 1);
  std::memcpy(buf_.get(), text, len);
  len_ = len;
  valid_ = true;
  truncated_ = false;
}

size_t MapsSnapshot::ParseLine(size_t at, uintptr_t* lo, uintptr_t* hi) const {
  const char* p = buf_.get() + at;
  const char* const end = buf_.get() + len_;
  const char* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
  const char* line_end = nl == nullptr ? end : nl;
  *lo = *hi = 0;
  if (!valid_ || ParseRange(p, line_end, lo, hi) == nullptr) *lo = *hi = 0;
  return nl == nullptr ? len_ : static_cast<size_t>(nl + 1 - buf_.get());
}

bool MapsSnapshot::CoversExactly(uintptr_t lo, uintptr_t hi) const {
  if (!valid_ || lo >= hi) return false;
  const char* p = buf_.get();
  const char* const end = p + len_;
  uintptr_t at = lo;  // next address that must start a mapping
  bool started = false;
  while (p < end) {
    const char* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
    const char* line_end = nl == nullptr ? end : nl;
    uintptr_t a = 0, b = 0;
    if (ParseRange(p, line_end, &a, &b) != nullptr) {
      if (!started) {
        if (a < lo && lo < b) return false;  // lo falls inside a mapping
        if (a == lo) started = true;
        if (a > lo) return false;  // hole at lo
      }
      if (started) {
        if (a != at) return false;  // hole
        if (b == hi) return true;
        if (b > hi) return false;  // hi falls inside a mapping
        at = b;
      }
    }
    p = nl == nullptr ? end : nl + 1;
  }
  return false;
}

}  // namespace procmig
