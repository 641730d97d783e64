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

TEST_CASE("a fit above the goal waits while iterations still halve the rest") {
  ConvergencePolicy p({.downtime_limit_ms = 300, .max_iterations = 30, .auto_converge = false});
  // The bulk stage: 1000 MB in 10 s = 100 MB/s.
  ConvergenceDecision d = p.Update({0, 1'000'000'000, 0, 10 * kSec}, 1'000'000'000);
  CHECK_FALSE(d.stop);
  // 16 MB left = 160 ms: fits the limit, but the rest more than halved and 160 > 20 ms.
  d = p.Update({1, 100'000'000, 16'000'000, kSec}, 16'000'000);
  CHECK(d.expected_downtime_ms == 160);
  CHECK_FALSE(d.stop);
  // 8 MB = 80 ms: halved again, still above the goal: once more.
  d = p.Update({2, 100'000'000, 8'000'000, kSec}, 8'000'000);
  CHECK_FALSE(d.stop);
  // 5 MB = 50 ms: no longer halving: stop at this fit.
  d = p.Update({3, 100'000'000, 5'000'000, kSec}, 5'000'000);
  CHECK(d.expected_downtime_ms == 50);
  CHECK(d.stop);
  CHECK_FALSE(d.forced);
  // Halving all the way down: the stop comes once the goal is met.
  ConvergencePolicy q({.downtime_limit_ms = 300, .max_iterations = 30, .auto_converge = false});
  q.Update({0, 1'000'000'000, 0, 10 * kSec}, 1'000'000'000);
  CHECK_FALSE(q.Update({1, 100'000'000, 4'000'000, kSec}, 4'000'000).stop);  // 40 ms
  d = q.Update({2, 100'000'000, 2'000'000, kSec}, 2'000'000);                // 20 ms
  CHECK(d.expected_downtime_ms == 20);
  CHECK(d.stop);
  // A limit below the goal is the goal.
  ConvergencePolicy r({.downtime_limit_ms = 10, .max_iterations = 30, .auto_converge = false});
  r.Update({0, 1'000'000'000, 0, 10 * kSec}, 1'000'000'000);
  d = r.Update({1, 100'000'000, 1'000'000, kSec}, 1'000'000);  // 10 ms, halved: fits the goal
  CHECK(d.stop);
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

TEST_CASE("the iteration budget forces the stop, and every later decision stays forced") {
  ConvergencePolicy p({.downtime_limit_ms = 1, .max_iterations = 3, .auto_converge = false});
  ConvergenceDecision d = p.Update({2, 1000, 1000, kSec}, 1'000'000);
  CHECK_FALSE(d.stop);
  CHECK_FALSE(d.forced);
  CHECK_FALSE(p.forcing());
  d = p.Update({3, 1000, 1000, kSec}, 1'000'000);
  CHECK(d.stop);
  CHECK(d.iteration_budget);
  CHECK(d.forced);
  CHECK(p.forcing());
  // The forced stop was abandoned anyway (a thread did not park): still forced, never "iterate".
  CHECK(p.StopAbandoned() == 0);  // auto-converge off: no throttle
  d = p.Update({4, 1000, 1000, kSec}, 1'000'000);
  CHECK(d.stop);
  CHECK(d.forced);
  CHECK(d.iteration_budget);
}

TEST_CASE("a stop that fits the limit is not forced until stops were abandoned") {
  // 12.5 MB/s (100 Mbit/s), 1.25 MB left = 100 ms: fits 300 ms.
  ConvergencePolicy p({.downtime_limit_ms = 300, .max_iterations = 30, .auto_converge = true});
  ConvergenceDecision d = p.Update({1, 12'500'000, 1'250'000, kSec}, 1'250'000);
  CHECK(d.stop);
  CHECK_FALSE(d.forced);
  CHECK_FALSE(d.iteration_budget);
  CHECK(d.expected_downtime_ms == 100);
  CHECK(d.throttle_percent == 0);
}

TEST_CASE("abandoned stops throttle one step each and force the stop after three") {
  // The netns heap_churn failure: every iteration fits the limit, every stop is abandoned (the
  // program changed its layout), the old policy neither throttled nor ever forced the stop.
  ConvergencePolicy p({.downtime_limit_ms = 300, .max_iterations = 30, .auto_converge = true});
  const IterationFigures fits{1, 12'500'000, 1'250'000, kSec};  // dirtied 1/10 of sent: low
  ConvergenceDecision d = p.Update(fits, 1'250'000);
  CHECK(d.stop);
  CHECK_FALSE(d.forced);
  CHECK(p.StopAbandoned() == 20);
  CHECK(p.abandoned_stops() == 1);
  CHECK_FALSE(p.forcing());
  d = p.Update({2, 12'500'000, 1'250'000, kSec}, 1'250'000);
  CHECK(d.stop);
  CHECK_FALSE(d.forced);
  CHECK(d.throttle_percent == 20);  // kept: the low dirty rate does not lower it
  CHECK(p.StopAbandoned() == 30);
  CHECK_FALSE(p.forcing());
  d = p.Update({3, 12'500'000, 1'250'000, kSec}, 1'250'000);
  CHECK_FALSE(d.forced);
  CHECK(p.StopAbandoned() == 40);
  CHECK(p.forcing());
  d = p.Update({4, 12'500'000, 1'250'000, kSec}, 1'250'000);
  CHECK(d.stop);
  CHECK(d.forced);
  CHECK_FALSE(d.iteration_budget);
  CHECK(d.throttle_percent == 40);
  // The cap holds for abandoned stops too.
  for (int i = 0; i < 10; ++i) p.StopAbandoned();
  CHECK(p.throttle_percent() == 99);
}

TEST_CASE("auto-converge also counts an iteration that decides to stop") {
  ConvergencePolicy p({.downtime_limit_ms = 300, .max_iterations = 30, .auto_converge = true});
  // Dirtied 0.8 of sent (10 MB/s written over a 12.5 MB/s link): high, but 400 ms left.
  ConvergenceDecision d = p.Update({1, 12'500'000, 10'000'000, kSec}, 5'000'000);
  CHECK_FALSE(d.stop);
  CHECK(d.throttle_percent == 0);
  // Second high period in a row; this one fits the limit (and did not halve the rest), and still
  // throttles (the stop may be abandoned, and the program must not run on unthrottled).
  d = p.Update({2, 12'500'000, 10'000'000, kSec}, 3'000'000);
  CHECK(d.stop);
  CHECK(d.expected_downtime_ms == 240);
  CHECK(d.throttle_percent == 20);
}

TEST_CASE("auto-converge off: abandoned stops still force, never throttle") {
  ConvergencePolicy p({.downtime_limit_ms = 300,
                       .max_iterations = 30,
                       .auto_converge = false,
                       .force_after_abandoned = 2});
  CHECK(p.StopAbandoned() == 0);
  CHECK_FALSE(p.forcing());
  CHECK(p.StopAbandoned() == 0);
  CHECK(p.forcing());
  ConvergenceDecision d = p.Update({1, 1000, 1000, kSec}, 1'000'000'000);
  CHECK(d.stop);
  CHECK(d.forced);
  CHECK(d.throttle_percent == 0);
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
