#include "migration/rate_limiter.h"

#include <doctest/doctest.h>

namespace procmig {
namespace {

TEST_CASE("unlimited never waits") {
  RateLimiter r(0);
  CHECK(r.unlimited());
  CHECK(r.Consume(1ull << 40, 0) == 0);
}

TEST_CASE("a burst goes at once, then the rate holds") {
  RateLimiter r(1'000'000, 100'000);  // 1 MB/s, 100 KB burst
  CHECK(r.Consume(100'000, 0) == 0);
  // 100 KB more = 0.1 s of debt.
  uint64_t wait = r.Consume(100'000, 0);
  CHECK(wait >= 100'000'000);
  CHECK(wait <= 100'000'001);
  // After the wait the balance is back to zero: no delay.
  CHECK(r.DelayNanos(100'000'001) == 0);
  // Tokens never exceed the burst however long the idle time.
  CHECK(r.Consume(100'000, 10'000'000'000ull) == 0);
  CHECK(r.Consume(1, 10'000'000'000ull) > 0);
}

TEST_CASE("time going backwards adds nothing") {
  RateLimiter r(1000, 1000);
  CHECK(r.Consume(2000, 5'000'000'000ull) > 0);
  uint64_t before = r.DelayNanos(5'000'000'000ull);
  CHECK(r.DelayNanos(1'000'000'000ull) == before);
}

}  // namespace
}  // namespace procmig
