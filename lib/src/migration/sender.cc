#include "migration/sender.h"

#include <sys/mman.h>

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/coding.h"
#include "base/status_macros.h"
#include "wire/record_codec.h"

namespace procmig {

namespace {

// Allowed transitions: row = from, bit = to.
constexpr uint32_t Bit(SenderState s) { return 1u << static_cast<uint32_t>(s); }
constexpr uint32_t kAllowed[] = {
    /* kSetup */ Bit(SenderState::kBulk) | Bit(SenderState::kFailed),
    /* kBulk */ Bit(SenderState::kIterate) | Bit(SenderState::kStopAndCopy) |
        Bit(SenderState::kFailed),
    /* kIterate */ Bit(SenderState::kStopAndCopy) | Bit(SenderState::kFailed),
    /* kStopAndCopy */ Bit(SenderState::kIterate) | Bit(SenderState::kDone) |
        Bit(SenderState::kFailed),
    /* kDone */ 0,
    /* kFailed */ 0,
};

}  // namespace

const char* SenderStateName(SenderState s) {
  switch (s) {
    case SenderState::kSetup:
      return "setup";
    case SenderState::kBulk:
      return "bulk";
    case SenderState::kIterate:
      return "iterate";
    case SenderState::kStopAndCopy:
      return "stop-and-copy";
    case SenderState::kDone:
      return "done";
    case SenderState::kFailed:
      return "failed";
  }
  return "unknown";
}

Sender::Sender(SenderConfig config, Channel* main, Channel* final_channel, DirtyTracker* tracker,
               Freezer* freezer, LayoutSource* layout)
    : config_(std::move(config)),
      main_(main),
      final_channel_(final_channel),
      tracker_(tracker),
      freezer_(freezer),
      layout_(layout),
      registry_(config_.pages.preamble.page_size, config_.excluded),
      policy_(config_.convergence) {}

Sender::~Sender() = default;

uint64_t Sender::Now() const {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

absl::Status Sender::TransitionTo(SenderState next) {
  if ((kAllowed[static_cast<size_t>(state_)] & Bit(next)) == 0) {
    return absl::InternalError(absl::StrCat("sender: illegal transition ", SenderStateName(state_),
                                            " -> ", SenderStateName(next)));
  }
  state_ = next;
  local_.state = next;
  return absl::OkStatus();
}

SenderStats Sender::stats() const {
  std::lock_guard<std::mutex> l(stats_mu_);
  return stats_;
}

void Sender::Publish(bool force) {
  uint64_t now = Now();
  local_.total_ms = (now - start_ns_) / 1'000'000;
  if (pages_) local_.pages = pages_->counters();
  local_.iteration = iteration_;
  local_.total_bytes = registry_.total_bytes();
  {
    std::lock_guard<std::mutex> l(stats_mu_);
    stats_ = local_;
  }
  if (config_.progress && !parked_ &&
      (force || now - last_progress_ns_ >= config_.progress_interval_ms * 1'000'000ull)) {
    last_progress_ns_ = now;
    config_.progress(local_);
  }
}

absl::Status Sender::AfterFlush() {
  // In the park window (and in the frozen copy) nothing may allocate: no progress, and
  // cancellation is no longer possible (the final phase either completes or fails).
  if (parked_) return absl::OkStatus();
  if (cancelled_.load(std::memory_order_relaxed)) {
    return absl::CancelledError("sender: cancelled by the user");
  }
  Publish(false);
  return absl::OkStatus();
}

absl::Status Sender::Run() {
  start_ns_ = Now();
  absl::Status s = Setup();
  if (s.ok()) s = Bulk();
  bool converged = false;
  while (s.ok() && state_ != SenderState::kDone) {
    if (!converged) {
      s = Iterate(&converged);
      continue;
    }
    s = StopAndCopy();
    // A stop that could not park or saw the layout change goes back to iterating.
    if (s.ok() && state_ == SenderState::kIterate) converged = false;
  }
  if (s.ok()) {
    local_.throttle_percent = 0;
    if (config_.leave_running) (void)tracker_->Stop();
    Publish(true);
    return s;
  }
  freezer_->SetThrottle(0);
  local_.throttle_percent = 0;
  // Best effort: tell the receiver to discard what it has.
  // (Not when setup refused the process: then nothing was sent and the peer sees plain EOF.)
  if (pages_ && state_ != SenderState::kSetup && pages_->AddEndOfStream(/*aborted=*/true).ok()) {
    (void)pages_->Flush();
  }
  (void)tracker_->Stop();
  if (state_ != SenderState::kFailed) (void)TransitionTo(SenderState::kFailed);
  Publish(true);
  return s;
}

absl::Status Sender::Setup() {
  ASSIGN_OR_RETURN(pages_, PageSender::Create(config_.pages, main_));
  pages_->set_after_flush([this] { return AfterFlush(); });
  // The staging area changes at every batch: sending it would only slow convergence.
  auto [stage_begin, stage_end] = pages_->staging_range();
  registry_.AddExcluded({stage_begin, stage_end});
  ASSIGN_OR_RETURN(Layout layout, layout_->Read());
  layout_fingerprint_ = layout.fingerprint;
  (void)registry_.Update(layout.regions);
  if (config_.capture) {
    RETURN_IF_ERROR(config_.capture(layout.regions, &state_record_));
    if (config_.check_unsupported) {
      std::vector<std::string> why = config_.check_unsupported(state_record_);
      if (!why.empty()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "setup: the process holds what cannot be migrated yet: ", absl::StrJoin(why, "; ")));
      }
    }
  }
  RETURN_IF_ERROR(tracker_->Start(TrackedOf(registry_.blocks())));
  for (const RamBlock& b : registry_.blocks()) RETURN_IF_ERROR(pages_->AddBlock(b));
  ExcludeCrcTables();
  RETURN_IF_ERROR(pages_->Flush());
  local_.setup_ms = (Now() - start_ns_) / 1'000'000;
  Publish(true);
  return absl::OkStatus();
}

std::vector<RamBlock> Sender::TrackedOf(std::span<const RamBlock> blocks) {
  std::vector<RamBlock> out;
  for (const RamBlock& b : blocks) {
    if (b.prot & PROT_WRITE) {
      out.push_back(b);
    } else {
      read_only_.insert(b.id);
    }
  }
  return out;
}

std::vector<uint32_t> Sender::TrackedIds(std::span<const uint32_t> ids) {
  std::vector<uint32_t> out;
  for (uint32_t id : ids) {
    if (read_only_.erase(id) == 0) out.push_back(id);
  }
  return out;
}

absl::Status Sender::Bulk() {
  RETURN_IF_ERROR(TransitionTo(SenderState::kBulk));
  const uint64_t t0 = Now();
  const uint64_t bytes0 = pages_->counters().bytes_out;
  for (const RamBlock& b : registry_.blocks()) {
    RETURN_IF_ERROR(pages_->SendPages(b, 0, b.page_count(), /*live=*/true));
    if (uint32_t id = pages_->TakeFaultBlock()) full_send_.push_back(id);
    Publish(false);
  }
  RETURN_IF_ERROR(pages_->EndIteration(0, 0, Now() - t0, false));
  RETURN_IF_ERROR(pages_->Flush());
  IterationFigures f{0, pages_->counters().bytes_out - bytes0, 0, Now() - t0};
  ConvergenceDecision d = policy_.Update(f, registry_.total_bytes());
  local_.throughput_bps = d.bandwidth_bps;
  Publish(true);
  return absl::OkStatus();
}

absl::Status Sender::ApplyLayout(bool allow_tracker_changes) {
  ASSIGN_OR_RETURN(Layout layout, layout_->Read());
  layout_fingerprint_ = layout.fingerprint;
  RegistryDiff diff = registry_.Update(layout.regions);
  (void)allow_tracker_changes;
  // Removals first (the wire requires it before space is reused), then resizes, then adds.
  if (!diff.removed.empty()) {
    RETURN_IF_ERROR(tracker_->RemoveBlocks(TrackedIds(diff.removed)));
    for (uint32_t id : diff.removed) {
      RETURN_IF_ERROR(pages_->RemoveBlock(id));
      full_send_.erase(std::remove(full_send_.begin(), full_send_.end(), id), full_send_.end());
    }
  }
  if (!diff.resized.empty()) {
    std::vector<uint32_t> ids;
    for (const RamBlock& b : diff.resized) ids.push_back(b.id);
    // The tracker forgets a block's earlier writes when it is re-added, so the whole block is
    // sent again (also what a grown block needs for its new part).
    RETURN_IF_ERROR(tracker_->RemoveBlocks(TrackedIds(ids)));
    RETURN_IF_ERROR(tracker_->AddBlocks(TrackedOf(diff.resized)));
    for (const RamBlock& b : diff.resized) {
      RETURN_IF_ERROR(pages_->ResizeBlock(b));
      full_send_.push_back(b.id);
    }
  }
  if (!diff.added.empty()) {
    RETURN_IF_ERROR(tracker_->AddBlocks(TrackedOf(diff.added)));
    for (const RamBlock& b : diff.added) {
      RETURN_IF_ERROR(pages_->AddBlock(b));
      full_send_.push_back(b.id);
    }
  }
  if (!diff.resized.empty() || !diff.added.empty()) ExcludeCrcTables();
  std::sort(full_send_.begin(), full_send_.end());
  full_send_.erase(std::unique(full_send_.begin(), full_send_.end()), full_send_.end());
  return absl::OkStatus();
}

absl::Status Sender::SendQueuedFull(bool live) {
  std::vector<uint32_t> queue;
  queue.swap(full_send_);
  for (uint32_t id : queue) {
    const RamBlock* b = registry_.Find(id);
    if (b == nullptr) continue;
    RETURN_IF_ERROR(pages_->SendPages(*b, 0, b->page_count(), live));
    if (uint32_t f = pages_->TakeFaultBlock()) full_send_.push_back(f);
  }
  return absl::OkStatus();
}

absl::Status Sender::SendDirty(const DirtySet& set, bool live, uint64_t* pages) {
  *pages = 0;
  absl::Status status;
  for (const DirtyBlock& b : set.blocks()) {
    b.pages.ForEachRun([&](size_t first, size_t count) {
      *pages += count;
      status = pages_->SendPages(b.id, b.start, first, count, live);
      if (live) {
        if (uint32_t f = pages_->TakeFaultBlock()) full_send_.push_back(f);
      }
      return status.ok();
    });
    RETURN_IF_ERROR(status);
  }
  return absl::OkStatus();
}

absl::Status Sender::Iterate(bool* converged) {
  if (state_ != SenderState::kIterate) RETURN_IF_ERROR(TransitionTo(SenderState::kIterate));
  ++iteration_;
  const uint64_t t0 = Now();
  const uint64_t bytes0 = pages_->counters().bytes_out;
  RETURN_IF_ERROR(ApplyLayout(true));
  ASSIGN_OR_RETURN(const DirtySet* set, tracker_->Sync());
  uint64_t dirty = 0;
  RETURN_IF_ERROR(SendQueuedFull(true));
  RETURN_IF_ERROR(SendDirty(*set, true, &dirty));
  const uint64_t dur = Now() - t0;
  RETURN_IF_ERROR(pages_->EndIteration(iteration_, dirty, dur, false));
  RETURN_IF_ERROR(pages_->Flush());
  const uint64_t ps = config_.pages.preamble.page_size;
  IterationFigures f{iteration_, pages_->counters().bytes_out - bytes0, dirty * ps, Now() - t0};
  ConvergenceDecision d = policy_.Update(f, dirty * ps);
  freezer_->SetThrottle(d.throttle_percent);
  local_.throttle_percent = d.throttle_percent;
  local_.remaining_bytes = dirty * ps;
  local_.expected_downtime_ms = d.expected_downtime_ms;
  local_.throughput_bps = d.bandwidth_bps;
  local_.dirty_pages_rate = f.duration_ns == 0 ? 0 : dirty * 1'000'000'000ull / f.duration_ns;
  *converged = d.stop;
  Publish(true);
  return absl::OkStatus();
}

absl::Status Sender::StopAndCopy() {
  if (state_ != SenderState::kStopAndCopy) RETURN_IF_ERROR(TransitionTo(SenderState::kStopAndCopy));
  // Everything the final phase needs is allocated now, before the layout is read for the last
  // time (an allocation may itself map memory and change the layout).
  const size_t n_blocks_cap = registry_.blocks().size() + 256;
  state_record_.threads.reserve(kMaxThreads / 64);
  state_record_.digests.reserve(n_blocks_cap);
  if (state_record_.sigactions.size() != kMaxSigactions)
    state_record_.sigactions.resize(kMaxSigactions);
  reverse_buf_.resize(wire::kRecordHeaderSize + wire::kErrorFixedSize + wire::kMaxErrorMessage);
  state_bytes_.reserve(EncodedSize(state_record_) + 4 * 4096 + (kMaxThreads / 64) * 256 +
                       n_blocks_cap * 32 + (1u << 20));
  RETURN_IF_ERROR(ApplyLayout(true));
  // New or resized blocks are sent now, live (the tracker already follows them), not in the
  // frozen copy where every byte counts against the pause.
  RETURN_IF_ERROR(SendQueuedFull(true));
  RETURN_IF_ERROR(pages_->Flush());
  // Re-capture against the final layout (VMAs, fds); the static parts do not change.
  if (config_.capture) {
    ASSIGN_OR_RETURN(Layout layout, layout_->Read());
    RETURN_IF_ERROR(config_.capture(layout.regions, &state_record_));
  }
  state_record_.digests.resize(std::min(registry_.blocks().size(), n_blocks_cap));
  Publish(true);
  freezer_->SetThrottle(0);
  // The layout the fingerprint is checked against: read last, after every allocation above (an
  // allocation may map memory). If it differs from the blocks sent, iterate once more.
  {
    ASSIGN_OR_RETURN(Layout last, layout_->Read());
    if (last.fingerprint != layout_fingerprint_) {
      last_stop_failure_ = "the memory layout changed while preparing the stop";
      return TransitionTo(SenderState::kIterate);
    }
  }
  park_ns_ = Now();
  absl::Status parked = freezer_->Park(config_.park_timeout_ms);
  if (!parked.ok()) {
    last_stop_failure_ = std::string(parked.message());
    ++local_.park_failures;
    if (static_cast<int>(local_.park_failures) >= config_.max_park_attempts) {
      return absl::DeadlineExceededError(
          absl::StrCat("stop-and-copy: could not park every thread after ", local_.park_failures,
                       " attempts: ", parked.message()));
    }
    return TransitionTo(SenderState::kIterate);
  }
  // ---- Parked: no allocation from here until Unpark().
  parked_ = true;
  const uint64_t parked_at = Now();
  local_.park_us = (parked_at - park_ns_) / 1000;
  if (layout_->Fingerprint() != layout_fingerprint_) {
    freezer_->Unpark();
    parked_ = false;
    last_stop_failure_ = "the memory layout changed while parking";
    ++local_.park_failures;  // counted as a failed stop; the layout is re-read next iteration
    if (static_cast<int>(local_.park_failures) >= config_.max_park_attempts) {
      return absl::AbortedError("stop-and-copy: the memory layout kept changing while parking");
    }
    return TransitionTo(SenderState::kIterate);
  }
  absl::StatusOr<const DirtySet*> set = tracker_->Sync();
  if (!set.ok()) {
    freezer_->Unpark();
    parked_ = false;
    return set.status();
  }
  final_set_ = *set;
  std::span<const ThreadContext> threads = freezer_->ParkedThreads();
  if (threads.size() > state_record_.threads.capacity()) {
    freezer_->Unpark();
    parked_ = false;
    return absl::ResourceExhaustedError("stop-and-copy: too many threads");
  }
  state_record_.threads.assign(threads.begin(), threads.end());
  CaptureSigactionsInto();
  pages_->set_channel(final_channel_);
  pages_->set_rate_limited(false);
  const uint64_t synced_at = Now();
  local_.sync_us = (synced_at - parked_at) / 1000;
  local_.final_pages = final_set_->DirtyPageCount();
  absl::Status s = freezer_->RunInFrozenCopy([this] { return FinalPhase(); }, config_.leave_running,
                                             config_.final_timeout_ms);
  local_.downtime_ms = (Now() - park_ns_) / 1'000'000;
  local_.copy_us = (Now() - synced_at) / 1000;
  if (!s.ok()) {
    if (!config_.leave_running) freezer_->Unpark();
    parked_ = false;
    return s;
  }
  // A migration leaves the threads parked for the caller to end the process: still no
  // allocation (no progress callback) from here on.
  parked_ = !config_.leave_running;
  // Success: a migration keeps the original parked for the caller to end it.
  return TransitionTo(SenderState::kDone);
}

absl::Status Sender::FinalPhase() {
  uint64_t dirty = 0;
  const uint64_t t0 = Now();
  RETURN_IF_ERROR(SendQueuedFull(false));
  RETURN_IF_ERROR(SendDirty(*final_set_, false, &dirty));
  RETURN_IF_ERROR(pages_->EndIteration(iteration_ + 1, dirty, Now() - t0, /*final=*/true));
  ComputeDigestsInto();
  state_bytes_.clear();
  RETURN_IF_ERROR(EncodeProcessState(state_record_, &state_bytes_));
  RETURN_IF_ERROR(pages_->AddProcessState(
      {reinterpret_cast<const uint8_t*>(state_bytes_.data()), state_bytes_.size()}));
  RETURN_IF_ERROR(pages_->AddEndOfStream(false));
  RETURN_IF_ERROR(pages_->Flush());
  return WaitForAck();
}

absl::Status Sender::WaitForAck() {
  // The reverse stream: a preamble, then acks (preamble accepted, iterations applied, end of
  // stream verified) or an error. Read unit by unit into a fixed buffer; no allocation.
  uint8_t* buf = reverse_buf_.data();
  RETURN_IF_ERROR(final_channel_->ReadExact(buf, wire::kPreambleSize));
  if (!std::equal(wire::kMagic.begin(), wire::kMagic.end(), buf)) {
    return absl::DataLossError("wait for ack: the reverse stream does not start with the magic");
  }
  for (;;) {
    RETURN_IF_ERROR(final_channel_->ReadExact(buf, wire::kRecordHeaderSize));
    wire::RecordHeader h = wire::DecodeRecordHeader(buf);
    if (h.length > reverse_buf_.size() - wire::kRecordHeaderSize) {
      return absl::DataLossError("wait for ack: oversized reverse record");
    }
    uint8_t* payload = buf + wire::kRecordHeaderSize;
    RETURN_IF_ERROR(final_channel_->ReadExact(payload, h.length));
    if (wire::RecordCrc(buf, {payload, h.length}) != h.crc) {
      return absl::DataLossError("wait for ack: reverse record crc mismatch");
    }
    if (h.type == static_cast<uint8_t>(wire::RecordType::kAck)) {
      wire::Ack a;
      if (wire::DecodeAck({payload, h.length}, &a) != nullptr) {
        return absl::DataLossError("wait for ack: malformed ack");
      }
      if (a.kind == wire::AckKind::kEndOfStream || a.kind == wire::AckKind::kResumed) {
        return absl::OkStatus();
      }
    } else if (h.type == static_cast<uint8_t>(wire::RecordType::kError)) {
      return absl::UnavailableError("wait for ack: the receiver reported an error");
    } else if (h.type == static_cast<uint8_t>(wire::RecordType::kEndOfStream)) {
      return absl::UnavailableError("wait for ack: the receiver ended its stream without an ack");
    } else {
      return absl::DataLossError("wait for ack: unexpected record on the reverse stream");
    }
  }
}

void Sender::CaptureSigactionsInto() { CaptureSigactions(&state_record_); }

void Sender::ComputeDigestsInto() {
  std::span<const RamBlock> blocks = registry_.blocks();
  for (size_t i = 0; i < blocks.size() && i < state_record_.digests.size(); ++i) {
    BlockDigest& d = state_record_.digests[i];
    d.block_id = blocks[i].id;
    d.length = blocks[i].length;
    d.crc32c = pages_->BlockDigest(blocks[i].id);
  }
}

void Sender::ExcludeCrcTables() {
  for (const RamBlock& b : registry_.blocks()) {
    auto [begin, end] = pages_->CrcTableRange(b.id);
    if (end > begin) registry_.AddExcluded({begin, end});
  }
}

}  // namespace procmig
