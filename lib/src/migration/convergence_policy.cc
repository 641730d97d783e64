#include "migration/convergence_policy.h"

#include <algorithm>

namespace procmig {

void ConvergencePolicy::ThrottleStep() {
  throttle_ = throttle_ == 0
                  ? std::min(config_.throttle_initial, config_.throttle_max)
                  : std::min(config_.throttle_max, throttle_ + config_.throttle_increment);
}

ConvergenceDecision ConvergencePolicy::Update(const IterationFigures& f, uint64_t remaining_bytes) {
  ConvergenceDecision d;
  // A period too short to time (or that sent nothing) keeps the previous estimate.
  if (f.duration_ns > 0 && f.bytes_sent > 0) {
    bandwidth_ = static_cast<uint64_t>(static_cast<unsigned __int128>(f.bytes_sent) *
                                       1'000'000'000ull / f.duration_ns);
  }
  d.bandwidth_bps = bandwidth_;
  if (bandwidth_ > 0) {
    d.expected_downtime_ms = static_cast<uint64_t>(
        (static_cast<unsigned __int128>(remaining_bytes) * 1000 + bandwidth_ - 1) / bandwidth_);
  } else {
    d.expected_downtime_ms = remaining_bytes == 0 ? 0 : UINT64_MAX;
  }
  if (f.iteration >= config_.max_iterations) forcing_ = true;
  const bool fits = remaining_bytes == 0 ||
                    (bandwidth_ > 0 && d.expected_downtime_ms <= config_.downtime_limit_ms);
  const uint64_t goal = std::min(config_.downtime_goal_ms, config_.downtime_limit_ms);
  const bool converging = previous_remaining_ && remaining_bytes <= *previous_remaining_ / 2;
  previous_remaining_ = remaining_bytes;
  if (fits && !(converging && d.expected_downtime_ms > goal)) {
    d.stop = true;
  } else if (f.iteration >= config_.max_iterations) {
    d.stop = true;
    d.iteration_budget = true;
  }
  if (forcing_) d.stop = d.forced = true;
  // Auto-converge looks at iterations after the bulk stage only: bulk sends everything once and
  // says nothing about the program's write rate. It runs even when this iteration stops: a stop
  // can fail, and the next iteration must not find the program unthrottled.
  if (config_.auto_converge && f.iteration > 0) {
    if (f.bytes_dirtied > f.bytes_sent / 2) {
      if (++dirty_high_count_ >= 2) {
        dirty_high_count_ = 0;
        ThrottleStep();
      }
    } else {
      dirty_high_count_ = 0;
    }
  }
  d.throttle_percent = throttle_;
  return d;
}

uint32_t ConvergencePolicy::StopAbandoned() {
  ++abandoned_;
  if (abandoned_ >= config_.force_after_abandoned) forcing_ = true;
  if (config_.auto_converge) ThrottleStep();
  return throttle_;
}

}  // namespace procmig
