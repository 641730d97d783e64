// RateLimiter: a token bucket for the sender's --max-bandwidth.
//
// Tokens are bytes; the bucket refills at `bytes_per_second` and holds at most `burst` bytes, so
// after an idle moment the sender may go at most one burst ahead of the rate. Time is passed in
// by the caller (nanoseconds on any monotonic clock), which keeps the class pure and testable;
// the sender sleeps for DelayNanos() itself. A rate of 0 means unlimited. One thread (the sender).
#ifndef PROCMIG_MIGRATION_RATE_LIMITER_H_
#define PROCMIG_MIGRATION_RATE_LIMITER_H_

#include <cstdint>

namespace procmig {

class RateLimiter {
 public:
  // burst_bytes 0 = a tenth of a second at the rate (at least 64 KiB).
  explicit RateLimiter(uint64_t bytes_per_second, uint64_t burst_bytes = 0);

  bool unlimited() const { return rate_ == 0; }
  // Takes `bytes` tokens at time now_ns (the balance may go negative: a large batch is never
  // refused, it only delays the next one). Returns how long to wait before sending more.
  uint64_t Consume(uint64_t bytes, uint64_t now_ns);
  // How long to wait at now_ns before the balance is positive again (0 = send now).
  uint64_t DelayNanos(uint64_t now_ns);

 private:
  void Refill(uint64_t now_ns);

  const uint64_t rate_;
  const int64_t burst_;
  int64_t tokens_;
  uint64_t last_ns_ = 0;
  bool started_ = false;
};

}  // namespace procmig

#endif  // PROCMIG_MIGRATION_RATE_LIMITER_H_
