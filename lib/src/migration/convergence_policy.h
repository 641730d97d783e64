// ConvergencePolicy: when pre-copy should stop iterating, and how hard to throttle the program.
//
// Pure arithmetic over the figures of each iteration, so it is tested without a clock or a
// process. Stop-and-copy starts when the bytes still dirty, sent at the measured bandwidth, fit
// the downtime limit, or when the iteration budget is spent. Unlike QEMU, a fit above the
// downtime goal (20 ms, or the limit if lower) is not taken while the iterations are still
// converging (this one left at most half of what the previous one did): another iteration costs
// little then and shortens the pause, and as soon as one fails to halve the rest the stop goes
// ahead. Auto-converge follows QEMU
// (migration/ram.c, migration_trigger_throttle / mig_throttle_guest_down): at every iteration
// after the bulk stage, when the bytes dirtied during the period exceed half the bytes sent in it,
// twice in a row, the program is throttled: 20% of each period parked at first, then 10% more at
// every further trigger, capped at 99%. The check runs whether or not the iteration also decided
// to stop (a stop may still fail, and the program must not run unthrottled afterwards).
//
// A stop can be abandoned (a thread did not park in time, or the program changed its memory
// layout while the stop was prepared): the sender reports it with StopAbandoned(). Each abandoned
// stop counts as an auto-converge trigger of its own (the program outran the stop), and once
// `force_after_abandoned` stops were abandoned, or the iteration budget is spent, every further
// decision is a forced stop: the sender retries the stop in place instead of iterating again.
// One thread (the sender).
#ifndef PROCMIG_MIGRATION_CONVERGENCE_POLICY_H_
#define PROCMIG_MIGRATION_CONVERGENCE_POLICY_H_

#include <cstdint>
#include <optional>

namespace procmig {

struct ConvergenceConfig {
  uint64_t downtime_limit_ms = 300;
  uint64_t downtime_goal_ms = 20;  // fits above this wait while iterations still halve the rest
  uint32_t max_iterations = 30;    // after this many iterations (bulk excluded) stop anyway
  bool auto_converge = true;
  uint32_t throttle_initial = 20;
  uint32_t throttle_increment = 10;
  uint32_t throttle_max = 99;
  uint32_t force_after_abandoned = 3;  // abandoned stops after which the stop is forced
};

// What one period measured. For an iteration the period runs from the previous tracker sync
// (the tracker's start for the first) to the sync that began the iteration: the bytes sent in it
// and the bytes the program dirtied in it (found by that sync), as QEMU measures them.
struct IterationFigures {
  uint64_t iteration = 0;      // 0 = the bulk stage
  uint64_t bytes_sent = 0;     // bytes on the wire during the period
  uint64_t bytes_dirtied = 0;  // bytes the tracker reported dirty at the end of the period
  uint64_t duration_ns = 0;
};

struct ConvergenceDecision {
  bool stop = false;              // go to stop-and-copy now
  bool iteration_budget = false;  // stop because max_iterations was reached
  bool forced = false;            // the stop must not go back to iterating (budget, or abandons)
  uint64_t bandwidth_bps = 0;     // bytes/s measured so far (0 before any measurement)
  uint64_t expected_downtime_ms = 0;
  uint32_t throttle_percent = 0;  // share of each period to park the program
};

class ConvergencePolicy {
 public:
  explicit ConvergencePolicy(const ConvergenceConfig& config) : config_(config) {}

  // Records one iteration and decides; remaining_bytes = dirty bytes still to send.
  ConvergenceDecision Update(const IterationFigures& figures, uint64_t remaining_bytes);
  // The stop decided last could not be completed; returns the throttle to apply now.
  uint32_t StopAbandoned();

  uint32_t throttle_percent() const { return throttle_; }
  uint64_t bandwidth_bps() const { return bandwidth_; }
  uint32_t abandoned_stops() const { return abandoned_; }
  // True once every further stop is forced (budget spent or too many abandoned stops).
  bool forcing() const { return forcing_; }

 private:
  void ThrottleStep();

  const ConvergenceConfig config_;
  uint64_t bandwidth_ = 0;
  uint32_t throttle_ = 0;
  int dirty_high_count_ = 0;
  std::optional<uint64_t> previous_remaining_;  // remaining_bytes of the previous Update
  uint32_t abandoned_ = 0;
  bool forcing_ = false;
};

}  // namespace procmig

#endif  // PROCMIG_MIGRATION_CONVERGENCE_POLICY_H_
