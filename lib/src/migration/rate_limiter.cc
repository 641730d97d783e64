#include "migration/rate_limiter.h"

#include <algorithm>

namespace procmig {

namespace {
constexpr uint64_t kNanosPerSecond = 1'000'000'000;
}

RateLimiter::RateLimiter(uint64_t bytes_per_second, uint64_t burst_bytes)
    : rate_(bytes_per_second),
      burst_(static_cast<int64_t>(
          burst_bytes != 0 ? burst_bytes : std::max<uint64_t>(bytes_per_second / 10, 64 << 10))),
      tokens_(burst_) {}

void RateLimiter::Refill(uint64_t now_ns) {
  if (!started_) {
    started_ = true;
    last_ns_ = now_ns;
    return;
  }
  if (now_ns <= last_ns_) return;
  // 128-bit product: hours at GB/s would overflow 64 bits.
  unsigned __int128 add =
      static_cast<unsigned __int128>(now_ns - last_ns_) * rate_ / kNanosPerSecond;
  last_ns_ = now_ns;
  int64_t next = tokens_ + static_cast<int64_t>(std::min<unsigned __int128>(add, 1ull << 62));
  tokens_ = std::min(next, burst_);
}

uint64_t RateLimiter::Consume(uint64_t bytes, uint64_t now_ns) {
  if (unlimited()) return 0;
  Refill(now_ns);
  tokens_ -= static_cast<int64_t>(std::min<uint64_t>(bytes, 1ull << 62));
  return DelayNanos(now_ns);
}

uint64_t RateLimiter::DelayNanos(uint64_t now_ns) {
  if (unlimited()) return 0;
  Refill(now_ns);
  if (tokens_ >= 0) return 0;
  return static_cast<uint64_t>(static_cast<unsigned __int128>(-tokens_) * kNanosPerSecond / rate_) +
         1;
}

}  // namespace procmig
