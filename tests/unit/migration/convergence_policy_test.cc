#include "migration/convergence_policy.h"

#include <doctest/doctest.h>

namespace procmig {
namespace {

constexpr uint64_t kSec = 1'000'000'000;

TEST_CASE("stops when the remaining bytes fit the downtime limit at the measured bandwidth") {
  ConvergencePolicy p({.downtime_limit_ms = 300, .max_iterations = 30, .auto_converge = false});
  // 100 MB in 1 s = 100 MB/s; 40 MB left = 400 ms > 300 ms.
  ConvergenceDecision d = p.Update({1, 100'000'000, 40'000'000, kSec}, 40'000'000);
  CHECK(d.bandwidth_bps == 100'000'000);
  CHECK(d.expected_downtime_ms == 400);
  CHECK_FALSE(d.stop);
  // 30 MB left = exactly 300 ms: fits.
  d = p.Update({2, 100'000'000, 30'000'000, kSec}, 30'000'000);
  CHECK(d.expected_downtime_ms == 300);
  CHECK(d.stop);
  CHECK_FALSE(d.iteration_budget);
}

TEST_CASE("nothing left stops even without a bandwidth measurement") {
  ConvergencePolicy p({});
  ConvergenceDecision d = p.Update({1, 0, 0, 0}, 0);
  CHECK(d.stop);
  CHECK(d.expected_downtime_ms == 0);
  ConvergencePolicy q({});
  d = q.Update({1, 0, 0, 0}, 4096);
  CHECK_FALSE(d.stop);
  CHECK(d.expected_downtime_ms == UINT64_MAX);
}

TEST_CASE("the iteration budget forces the stop") {
  ConvergencePolicy p({.downtime_limit_ms = 1, .max_iterations = 3, .auto_converge = false});
  CHECK_FALSE(p.Update({2, 1000, 1000, kSec}, 1'000'000).stop);
  ConvergenceDecision d = p.Update({3, 1000, 1000, kSec}, 1'000'000);
  CHECK(d.stop);
  CHECK(d.iteration_budget);
}

TEST_CASE("auto-converge: twice in a row dirtied > half sent, 20% then +10% up to 99%") {
  ConvergencePolicy p({.downtime_limit_ms = 1, .max_iterations = 1000, .auto_converge = true});
  // Bulk (iteration 0) never counts.
  CHECK(p.Update({0, 1000, 900, kSec}, 1'000'000).throttle_percent == 0);
  CHECK(p.Update({1, 1000, 501, kSec}, 1'000'000).throttle_percent == 0);
  CHECK(p.Update({2, 1000, 501, kSec}, 1'000'000).throttle_percent == 20);
  // Exactly half is not "more than half": the streak restarts.
  CHECK(p.Update({3, 1000, 500, kSec}, 1'000'000).throttle_percent == 20);
  CHECK(p.Update({4, 1000, 900, kSec}, 1'000'000).throttle_percent == 20);
  CHECK(p.Update({5, 1000, 900, kSec}, 1'000'000).throttle_percent == 30);
  uint32_t last = 30;
  for (uint64_t i = 6; i < 40; ++i)
    last = p.Update({i, 1000, 900, kSec}, 1'000'000).throttle_percent;
  CHECK(last == 99);
}

TEST_CASE("auto-converge off never throttles") {
  ConvergencePolicy p({.downtime_limit_ms = 1, .max_iterations = 1000, .auto_converge = false});
  for (uint64_t i = 1; i < 10; ++i)
    CHECK(p.Update({i, 1000, 1000, kSec}, 1'000'000).throttle_percent == 0);
}

}  // namespace
}  // namespace procmig
