#include "migration/sender.h"

#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/coding.h"
#include "base/status_macros.h"
#include "migration/bulk_prescan.h"
#include "migration/restore_check.h"
#include "os/resident_pages.h"
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
    : Sender(std::move(config), std::vector<Channel*>{main}, std::vector<Channel*>{final_channel},
             tracker, freezer, layout) {}

Sender::Sender(SenderConfig config, std::vector<Channel*> main, std::vector<Channel*> final,
               DirtyTracker* tracker, Freezer* freezer, LayoutSource* layout)
    : config_(std::move(config)),
      main_(std::move(main)),
      final_(std::move(final)),
      final_channel_(final_.empty() ? nullptr : final_[0]),
      tracker_(tracker),
      freezer_(freezer),
      layout_(layout),
      registry_(config_.pages.preamble.page_size, config_.excluded),
      policy_(config_.convergence) {}

Sender::~Sender() {
  if (final_times_ != nullptr) munmap(final_times_, sizeof(FinalTimes));
}

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
  // In the park window (and in the final phase's task) nothing may allocate: no progress, and
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
    freezer_->SetThrottle(0);  // no allocation: also fine with the program parked
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
  // Nothing may still be writing when the caller closes the channels.
  if (pages_) (void)pages_->Quiesce();
  (void)tracker_->Stop();
  if (state_ != SenderState::kFailed) (void)TransitionTo(SenderState::kFailed);
  Publish(true);
  return s;
}

absl::Status Sender::Setup() {
  // Mapped before the layout is read (it is shared memory, never a RAM block).
  void* times =
      mmap(nullptr, sizeof(FinalTimes), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (times == MAP_FAILED) return ErrnoStatus("setup: map the final-phase timing page", errno);
  final_times_ = static_cast<FinalTimes*>(times);
  {
    auto b = reinterpret_cast<uintptr_t>(times);
    registry_.AddExcluded({b, b + 4096});
  }
  if (main_.empty() || final_.size() != main_.size()) {
    return absl::InvalidArgumentError("sender: one final channel for each channel needed");
  }
  ASSIGN_OR_RETURN(pages_, PageSender::Create(config_.pages, main_));
  pages_->set_after_flush([this] { return AfterFlush(); });
  // The staging area changes at every batch: sending it would only slow convergence.
  auto [stage_begin, stage_end] = pages_->staging_range();
  registry_.AddExcluded({stage_begin, stage_end});
  // So does the XBZRLE cache (64 MiB by default): migrated, it was dirtied as fast as pages were
  // sent, and the migration never converged.
  if (auto [cache_begin, cache_end] = pages_->cache_range(); cache_end > cache_begin) {
    registry_.AddExcluded({cache_begin, cache_end});
  }
  ASSIGN_OR_RETURN(Layout layout, layout_->Read());
  layout_fingerprint_ = layout.fingerprint;
  (void)registry_.Update(layout.regions);
  if (config_.capture) {
    RETURN_IF_ERROR(CaptureProgram(layout.regions, "setup"));
    if (config_.restore_check) {
      IdentifyFiles(/*compute=*/true);
      for (const VmaRecord& v : state_record_.vmas) {
        seen_files_.insert({v.path, v.inode, v.offset, v.end - v.start});
      }
      RETURN_IF_ERROR(SendRestoreCheck());
    }
  }
  // Protected by the bulk stage where the tracker can leave it to it (two threads, each chunk
  // just before it is read), else now.
  ASSIGN_OR_RETURN(protect_in_bulk_, tracker_->StartUnprotected(registry_.blocks()));
  for (const RamBlock& b : registry_.blocks()) RETURN_IF_ERROR(pages_->AddBlock(b));
  ExcludeCrcTables(registry_.blocks());
  RETURN_IF_ERROR(pages_->Flush());
  last_sync_ns_ = Now();  // the tracker's start is the first sync
  last_sync_bytes_ = pages_->counters().bytes_out;
  local_.setup_ms = (Now() - start_ns_) / 1'000'000;
  Publish(true);
  return absl::OkStatus();
}

absl::Status Sender::Bulk() {
  RETURN_IF_ERROR(TransitionTo(SenderState::kBulk));
  const uint64_t t0 = Now();
  const uint64_t bytes0 = pages_->counters().bytes_out;
  const bool unread_ok = UnreadZerosAllowed();
  std::vector<uint32_t> unread;
  // Blocks of a chunk or more of private anonymous base pages are protected and classified by
  // a BulkPrescan on two threads; the others protected here, just before they are sent.
  std::span<const RamBlock> blocks = registry_.blocks();
  std::vector<size_t> span_of(blocks.size(), SIZE_MAX);
  std::unique_ptr<BulkPrescan> prescan;
  if (protect_in_bulk_ && unread_ok) {
    const size_t base = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    std::vector<BulkPrescan::Span> spans;
    for (size_t i = 0; i < blocks.size(); ++i) {
      const RamBlock& b = blocks[i];
      if (KindOf(b) == RamBlockKind::kFilePrivate || b.page_size != base ||
          b.page_count() < BulkPrescan::kChunkPages) {
        continue;
      }
      span_of[i] = spans.size();
      spans.push_back({b.start, b.page_count()});
    }
    if (!spans.empty()) {
      ASSIGN_OR_RETURN(prescan, BulkPrescan::Start(tracker_, std::move(spans), base));
    }
  }
  for (size_t i = 0; i < blocks.size(); ++i) {
    const RamBlock& b = blocks[i];
    if (span_of[i] != SIZE_MAX) {
      RETURN_IF_ERROR(SendPrescanned(b, *prescan, span_of[i], &unread));
    } else {
      // An error leaves the block's pages reported written at the first sync: resent.
      if (protect_in_bulk_) (void)tracker_->ProtectRange(b.start, b.end(), b.page_size);
      RETURN_IF_ERROR(SendWholeBlock(b, /*live=*/true, unread_ok, &unread));
    }
    if (uint32_t id = pages_->TakeFaultBlock()) full_send_.push_back(id);
    Publish(false);
  }
  prescan.reset();
  protect_in_bulk_ = false;
  RequeueIfSwapAppeared(unread);
  RETURN_IF_ERROR(pages_->EndIteration(0, 0, Now() - t0, false));
  RETURN_IF_ERROR(pages_->Flush());
  IterationFigures f{0, pages_->counters().bytes_out - bytes0, 0, Now() - t0};
  ConvergenceDecision d = policy_.Update(f, registry_.total_bytes());
  local_.throughput_bps = d.bandwidth_bps;
  Publish(true);
  return absl::OkStatus();
}

absl::Status Sender::SendPrescanned(const RamBlock& b, BulkPrescan& prescan, size_t span,
                                    std::vector<uint32_t>* unread) {
  constexpr uint64_t kChunk = BulkPrescan::kChunkPages;
  auto bit = [](const uint64_t* bits, uint64_t i) { return ((bits[i / 64] >> (i % 64)) & 1) != 0; };
  const uint64_t pages = b.page_count();
  bool skipped = false;
  for (uint64_t c = 0; c * kChunk < pages; ++c) {
    const BulkPrescan::Chunk& k = prescan.Await(span, c);
    const uint64_t first = c * kChunk;
    const uint64_t n = std::min(kChunk, pages - first);
    if (!k.classified) {  // the memory went away under the prescan: as without it
      RETURN_IF_ERROR(SendStretch(b, first, n, /*live=*/true, /*unread_ok=*/true, &skipped));
      continue;
    }
    for (uint64_t i = 0; i < n;) {
      const bool resident = bit(k.resident, i);
      uint64_t j = i + 1;
      while (j < n && bit(k.resident, j) == resident) ++j;
      if (resident) {
        RETURN_IF_ERROR(pages_->SendScanned(b.id, b.start, first + i, j - i, k.zero, first));
      } else {
        skipped = true;
        RETURN_IF_ERROR(pages_->SendUnpopulated(b.id, b.start, first + i, j - i));
      }
      i = j;
    }
  }
  if (skipped) unread->push_back(b.id);
  return absl::OkStatus();
}

absl::Status Sender::ApplyLayout(bool allow_tracker_changes) {
  ASSIGN_OR_RETURN(Layout layout, layout_->Read());
  layout_fingerprint_ = layout.fingerprint;
  RegistryDiff diff = registry_.Update(layout.regions);
  last_regions_ = std::move(layout.regions);
  (void)allow_tracker_changes;
  // Removals first (the wire requires it before space is reused), then resizes, then adds.
  if (!diff.removed.empty()) {
    RETURN_IF_ERROR(tracker_->RemoveBlocks(diff.removed));
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
    RETURN_IF_ERROR(tracker_->RemoveBlocks(ids));
    RETURN_IF_ERROR(tracker_->AddBlocks(diff.resized));
    for (const RamBlock& b : diff.resized) {
      RETURN_IF_ERROR(pages_->ResizeBlock(b));
      full_send_.push_back(b.id);
    }
  }
  if (!diff.added.empty()) {
    RETURN_IF_ERROR(tracker_->AddBlocks(diff.added));
    for (const RamBlock& b : diff.added) {
      RETURN_IF_ERROR(pages_->AddBlock(b));
      full_send_.push_back(b.id);
    }
  }
  // Removed and resized blocks' crc tables are unmapped: memory mapped there later is the
  // program's. They leave the exclusions before the new tables (resized and added blocks) join,
  // since a new one may be mapped where an old one was.
  for (const auto& [begin, end] : pages_->TakeDroppedTables()) {
    registry_.RemoveExcluded({begin, end});
  }
  ExcludeCrcTables(diff.resized);
  ExcludeCrcTables(diff.added);
  std::sort(full_send_.begin(), full_send_.end());
  full_send_.erase(std::unique(full_send_.begin(), full_send_.end()), full_send_.end());
  return absl::OkStatus();
}

bool Sender::UnreadZerosAllowed() const { return config_.unread_zeros && !SwapConfigured(); }

void Sender::RequeueIfSwapAppeared(std::span<const uint32_t> unread) {
  // A swap area added while the pass ran: a page swapped out since may have read as untouched.
  if (unread.empty() || !SwapConfigured()) return;
  full_send_.insert(full_send_.end(), unread.begin(), unread.end());
}

absl::Status Sender::SendWholeBlock(const RamBlock& b, bool live, bool unread_ok,
                                    std::vector<uint32_t>* unread) {
  bool skipped = false;
  absl::Status s = SendStretch(b, 0, b.page_count(), live, unread_ok, &skipped);
  if (skipped) unread->push_back(b.id);
  return s;
}

absl::Status Sender::SendStretch(const RamBlock& b, uint64_t first, uint64_t count, bool live,
                                 bool unread_ok, bool* skipped) {
  // Private anonymous memory in base pages: untouched pages go as zero runs, unread. File
  // mappings are not (an untouched page there is the file's, not zeros), nor hugetlb blocks.
  if (!unread_ok || KindOf(b) == RamBlockKind::kFilePrivate ||
      b.page_size != static_cast<size_t>(sysconf(_SC_PAGESIZE))) {
    return pages_->SendPages(b.id, b.start, first, count, live);
  }
  const uintptr_t at = b.start + first * b.page_size;
  absl::Status sent;
  absl::Status s = ForEachResidency(at, count, [&](uint64_t from, uint64_t n, bool resident) {
    if (resident) {
      sent = pages_->SendPages(b.id, b.start, first + from, n, live);
    } else {
      *skipped = true;
      sent = pages_->SendUnpopulated(b.id, b.start, first + from, n);
    }
    return sent;
  });
  if (!sent.ok() || s.ok()) return sent;
  // mincore failed (part of the range went away meanwhile): read it all, as without the check;
  // the read faults and queues the block again.
  return pages_->SendPages(b.id, b.start, first, count, live);
}

absl::Status Sender::SendQueuedFull(bool live) {
  if (full_send_.empty()) return absl::OkStatus();
  std::vector<uint32_t> queue;
  queue.swap(full_send_);
  // In the final phase (not live) every page is read: it must be the content at the stop.
  const bool unread_ok = live && UnreadZerosAllowed();
  std::vector<uint32_t> unread;
  for (uint32_t id : queue) {
    const RamBlock* b = registry_.Find(id);
    if (b == nullptr) continue;
    RETURN_IF_ERROR(SendWholeBlock(*b, live, unread_ok, &unread));
    if (uint32_t f = pages_->TakeFaultBlock()) full_send_.push_back(f);
  }
  RequeueIfSwapAppeared(unread);
  return absl::OkStatus();
}

absl::Status Sender::SendDirty(const DirtySet& set, bool live, bool unread_ok, uint64_t* pages,
                               bool* skipped) {
  *pages = 0;
  absl::Status status;
  for (const DirtyBlock& db : set.blocks()) {
    const RamBlock* b = unread_ok ? registry_.Find(db.id) : nullptr;
    db.pages.ForEachRun([&](size_t first, size_t count) {
      *pages += count;
      // A long run may be memory the program dropped (MADV_DONTNEED, a thread stack glibc
      // trimmed at the thread's exit): the tracker reports it written, and mincore finds it
      // empty, so it goes as zero runs, unread. Short runs are read as they are.
      if (b != nullptr && count >= kMinUnreadRun) {
        status = SendStretch(*b, first, count, live, true, skipped);
      } else {
        status = pages_->SendPages(db.id, db.start, first, count, live);
      }
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
  RETURN_IF_ERROR(ApplyLayout(true));
  if (config_.restore_check) WarmIdentities(last_regions_);
  ASSIGN_OR_RETURN(const DirtySet* set, tracker_->Sync());
  // The period that ends at this sync (QEMU's): what was sent since the previous sync, and what
  // the program dirtied meanwhile (this sync's pages). Auto-converge compares the two.
  const uint64_t sync_ns = Now();
  const uint64_t sync_bytes = pages_->counters().bytes_out;
  const uint64_t ps = config_.pages.preamble.page_size;
  IterationFigures f{iteration_, sync_bytes - last_sync_bytes_, set->DirtyPageCount() * ps,
                     sync_ns - last_sync_ns_};
  last_sync_ns_ = sync_ns;
  last_sync_bytes_ = sync_bytes;
  uint64_t dirty = 0;
  RETURN_IF_ERROR(SendQueuedFull(true));
  bool skipped = false;
  RETURN_IF_ERROR(SendDirty(*set, true, UnreadZerosAllowed(), &dirty, &skipped));
  if (skipped && SwapConfigured()) {
    // A swap area added while the pass ran: what read as dropped may have been swapped out.
    for (const DirtyBlock& db : set->blocks()) full_send_.push_back(db.id);
  }
  RETURN_IF_ERROR(pages_->EndIteration(iteration_, dirty, Now() - sync_ns, false));
  RETURN_IF_ERROR(pages_->Flush());
  // The pages just sent stand for what the next sync will find.
  ConvergenceDecision d = policy_.Update(f, dirty * ps);
  if (d.throttle_percent != local_.throttle_percent) freezer_->SetThrottle(d.throttle_percent);
  local_.throttle_percent = d.throttle_percent;
  local_.remaining_bytes = dirty * ps;
  local_.expected_downtime_ms = d.expected_downtime_ms;
  local_.throughput_bps = d.bandwidth_bps;
  local_.dirty_pages_rate =
      f.duration_ns == 0 ? 0 : f.bytes_dirtied / ps * 1'000'000'000ull / f.duration_ns;
  *converged = d.stop;
  Publish(true);
  return absl::OkStatus();
}

absl::Status Sender::CaptureProgram(std::span<const MemoryRegion> regions, const char* step) {
  // Less the mappings that are all the agent's (its staging buffers, crc tables, arena, shared
  // timing page): a restored copy starts a new agent with its own, so recreating them empty
  // would only leave dead address space behind at every hop. io_uring's rings (the agent's
  // channels' among them) belong to an instance no restorer recreates: mapped again they would
  // be empty shared memory, never a ring.
  std::vector<MemoryRegion> program;
  program.reserve(regions.size());
  for (const MemoryRegion& r : regions) {
    if (registry_.Excludes(r.start, r.end) || r.path == "anon_inode:[io_uring]") continue;
    program.push_back(r);
  }
  RETURN_IF_ERROR(config_.capture(program, &state_record_));
  std::vector<int> own = config_.own_fds;
  for (const std::vector<Channel*>* group : {&main_, &final_}) {
    for (const Channel* c : *group) {
      for (int fd : c->descriptors()) own.push_back(fd);
    }
  }
  for (int fd : tracker_->descriptors()) own.push_back(fd);
  DropDescriptors(own, &state_record_);
  // Checked at every capture: what the program mapped since the last one counts too, and the
  // program is not parked yet, so a refusal leaves it running.
  if (config_.check_unsupported) {
    std::vector<std::string> why = config_.check_unsupported(state_record_);
    if (!why.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          step, ": the process holds what cannot be migrated yet: ", absl::StrJoin(why, "; ")));
    }
  }
  return absl::OkStatus();
}

size_t Sender::StateBytesNeeded(size_t n_blocks_cap) const {
  return EncodedSize(state_record_) + RefreshGrowthBytes(state_record_) + 4 * 4096 +
         (kMaxThreads / 64) * 256 + n_blocks_cap * 32 + (1u << 20);
}

absl::Status Sender::StopAndCopy() {
  if (state_ != SenderState::kStopAndCopy) RETURN_IF_ERROR(TransitionTo(SenderState::kStopAndCopy));
  // The flush threads end before anything is parked, and before the last layout reads (their
  // stacks go back to glibc's cache; no copy of the process may list threads it does not have).
  // What remains to send is small: the sender thread writes it itself from here on, also after
  // an abandoned stop.
  RETURN_IF_ERROR(pages_->Flush());
  RETURN_IF_ERROR(pages_->Quiesce());
  // Everything the final phase needs is allocated now, before the layout is read for the last
  // time (an allocation may itself map memory and change the layout).
  const size_t n_blocks_cap = registry_.blocks().size() + 256;
  state_record_.threads.reserve(kMaxThreads / 64);
  state_record_.digests.reserve(n_blocks_cap);
  if (state_record_.sigactions.size() != kMaxSigactions)
    state_record_.sigactions.resize(kMaxSigactions);
  reverse_buf_.resize(wire::kRecordHeaderSize + wire::kErrorFixedSize + wire::kMaxErrorMessage);
  state_bytes_.reserve(StateBytesNeeded(n_blocks_cap));
  for (;;) {
    // Forcing the stop (after a few abandoned ones): the program's own mmap/munmap/mremap/
    // mprotect/madvise wait at the agent's layout gate from the last layout read through the park,
    // so a program that changes its layout every few milliseconds cannot keep the stop from
    // finding a stable layout. (glibc's internal calls bypass the gate; the gate is reentrant,
    // the freezer takes it again to park.)
    LayoutGateLock hold(policy_.forcing() ? tracker_->layout_gate() : nullptr);
    bool stable = false;
    RETURN_IF_ERROR(PrepareStop(n_blocks_cap, &stable));
    bool park_failed = false;
    if (stable) {
      bool done = false;
      RETURN_IF_ERROR(TryStop(&done, &park_failed));
      if (done) return TransitionTo(SenderState::kDone);
    } else {
      last_stop_failure_ = "the memory layout kept changing while preparing the stop";
    }
    // Abandoned: the program runs on. The policy throttles it harder and, after a few of these,
    // forces the stop (retried here, without iterating in between).
    ++local_.abandoned_stops;
    const uint32_t throttle = policy_.StopAbandoned();
    freezer_->SetThrottle(throttle);
    local_.throttle_percent = throttle;
    if (static_cast<int>(local_.abandoned_stops) >= config_.max_park_attempts) {
      if (park_failed) {
        return absl::DeadlineExceededError(
            absl::StrCat("stop-and-copy: could not park every thread after ",
                         local_.abandoned_stops, " attempts: ", last_stop_failure_));
      }
      return absl::AbortedError(absl::StrCat("stop-and-copy: abandoned ", local_.abandoned_stops,
                                             " times, last because ", last_stop_failure_));
    }
    if (!policy_.forcing()) return TransitionTo(SenderState::kIterate);
  }
}

absl::Status Sender::PrepareStop(size_t n_blocks_cap, bool* stable) {
  *stable = false;
  // No throttling across the park: the freezer's park first waits out a throttle nap, and the
  // threads all leaving it at once is when the program changes its layout (a stop that is
  // abandoned restores the throttle).
  freezer_->SetThrottle(0);
  // Progress now, not between the last layout read and the park.
  Publish(true);
  // A program that maps, grows and unmaps memory all the time (malloc arenas growing a few pages
  // at a time) changes its layout every few milliseconds. Each round reads and applies the
  // layout; when it differs from the one the process state was captured for, the new or resized
  // blocks are sent and the state captured again, and the next round reads once more. The stop
  // goes ahead when a read finds the captured layout and a raw re-read of /proc/self/maps (no
  // allocation, no parse) right after it still matches: that window, and the one up to the
  // park, stay short.
  uint32_t captured = 0;
  bool have_capture = false;
  for (int round = 0; round < kPrepareRounds; ++round) {
    RETURN_IF_ERROR(ApplyLayout(true));
    if (!have_capture || layout_fingerprint_ != captured || !full_send_.empty()) {
      if (!full_send_.empty()) {
        // New or resized blocks are sent now, live (the tracker already follows them), not in
        // the final phase where every byte counts against the pause.
        RETURN_IF_ERROR(SendQueuedFull(true));
        RETURN_IF_ERROR(pages_->Flush());
      }
      // The process state describes exactly the layout the blocks came from (VMAs, fds).
      if (config_.capture) {
        RETURN_IF_ERROR(CaptureProgram(last_regions_, "stop-and-copy"));
        // Room for the unread bytes and epoll items read while parked (RefreshParkedFds).
        state_bytes_.reserve(StateBytesNeeded(n_blocks_cap));
      }
      // The final capture: identities from the cache only (computing one here would hold up the
      // stop; a miss goes to the receiver as "unknown").
      if (config_.restore_check) IdentifyFiles(/*compute=*/false);
      state_record_.digests.resize(std::min(registry_.blocks().size(), n_blocks_cap));
      captured = layout_fingerprint_;
      have_capture = true;
      continue;
    }
    if (layout_->Fingerprint() == layout_fingerprint_) {
      *stable = true;
      return absl::OkStatus();
    }
  }
  return absl::OkStatus();
}

absl::Status Sender::TryStop(bool* done, bool* park_failed) {
  *done = false;
  *park_failed = false;
  final_unread_ok_ = UnreadZerosAllowed();  // (it reads /proc/swaps: not in the pause)
  park_ns_ = Now();
  absl::Status parked = freezer_->Park(config_.park_timeout_ms);
  if (!parked.ok()) {
    last_stop_failure_ = std::string(parked.message());
    ++local_.park_failures;
    *park_failed = true;
    return absl::OkStatus();
  }
  // ---- Parked: no allocation from here until Unpark().
  parked_ = true;
  const uint64_t parked_at = Now();
  local_.park_us = (parked_at - park_ns_) / 1000;
  if (layout_->Fingerprint() != layout_fingerprint_) {
    freezer_->Unpark();
    parked_ = false;
    last_stop_failure_ = "the memory layout changed while parking";
    return absl::OkStatus();  // the layout is re-read by the next attempt
  }
  absl::StatusOr<const DirtySet*> set = tracker_->SyncFinal();
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
  CaptureSigactions(&state_record_);
  FdRefreshFailure why;
  if (!RefreshParkedFds(&state_record_, &why)) {
    freezer_->Unpark();
    parked_ = false;
    return absl::FailedPreconditionError(
        absl::StrCat("stop-and-copy: reading ", why.what, " (fd ", why.fd, "): ",
                     why.cause != nullptr ? why.cause
                     : why.err != 0       ? strerror(why.err)
                                          : "more than the capture made room for"));
  }
  pages_->set_channels(final_);
  pages_->set_rate_limited(false);
  const uint64_t synced_at = Now();
  local_.sync_us = (synced_at - parked_at) / 1000;
  local_.final_pages = final_set_->DirtyPageCount();
  final_times_->copy_start_ns = 0;
  final_times_->end_of_stream_ns = 0;
  final_times_->ack_ns = 0;
  absl::Status s = freezer_->RunFinalPhase([this] { return FinalPhase(); }, config_.leave_running,
                                           config_.final_timeout_ms,
                                           [this] {
                                             for (Channel* c : final_) c->Abort();
                                           });
  const uint64_t returned_at = Now();
  local_.copy_us = (returned_at - synced_at) / 1000;
  {
    // The copy's own clock readings; a copy that never got that far leaves them 0.
    const uint64_t started = final_times_->copy_start_ns;
    const uint64_t eos = final_times_->end_of_stream_ns;
    const uint64_t ack = final_times_->ack_ns;
    local_.spawn_us = started != 0 ? (started - synced_at) / 1000 : 0;
    local_.final_send_us = started != 0 && eos != 0 ? (eos - started) / 1000 : 0;
    local_.downtime_ms = ((eos != 0 ? eos : returned_at) - park_ns_) / 1'000'000;
    local_.ack_wait_ms = eos != 0 ? ((ack != 0 ? ack : returned_at) - eos) / 1'000'000 : 0;
  }
  if (!s.ok()) {
    if (!config_.leave_running) freezer_->Unpark();
    parked_ = false;
    return s;
  }
  // A migration leaves the threads parked for the caller to end the process: still no
  // allocation (no progress callback) from here on.
  parked_ = !config_.leave_running;
  *done = true;
  return absl::OkStatus();
}

absl::Status Sender::FinalPhase() {
  uint64_t dirty = 0;
  const uint64_t t0 = Now();
  final_times_->copy_start_ns = t0;
  RETURN_IF_ERROR(SendQueuedFull(false));
  bool skipped = false;
  RETURN_IF_ERROR(SendDirty(*final_set_, false, final_unread_ok_, &dirty, &skipped));
  if (skipped && SwapConfigured()) {
    // The original resumes and the migration can be tried again.
    return absl::UnavailableError(
        "final phase: a swap area appeared, so pages that read as dropped may have been swapped "
        "out");
  }
  RETURN_IF_ERROR(pages_->EndIteration(iteration_ + 1, dirty, Now() - t0, /*final=*/true));
  if (config_.verify_final) RETURN_IF_ERROR(VerifyFinal());
  ComputeDigestsInto();
  state_bytes_.clear();
  if (EncodedSize(state_record_) > state_bytes_.capacity()) {
    return absl::ResourceExhaustedError("final phase: the process state outgrew its reserve");
  }
  RETURN_IF_ERROR(EncodeProcessState(state_record_, &state_bytes_));
  RETURN_IF_ERROR(pages_->AddProcessState(
      {reinterpret_cast<const uint8_t*>(state_bytes_.data()), state_bytes_.size()}));
  RETURN_IF_ERROR(pages_->AddEndOfStream(false));
  RETURN_IF_ERROR(pages_->Flush());
  final_times_->end_of_stream_ns = Now();
  RETURN_IF_ERROR(WaitForAck());
  final_times_->ack_ns = Now();
  return absl::OkStatus();
}

absl::Status Sender::WaitForAck() {
  // The reverse stream: a preamble, then acks (preamble accepted, iterations applied, end of
  // stream verified) or an error. Read unit by unit into a fixed buffer; no allocation.
  uint8_t* buf = reverse_buf_.data();
  if (!reverse_preamble_read_) {
    RETURN_IF_ERROR(final_channel_->ReadExact(buf, wire::kPreambleSize));
    if (!std::equal(wire::kMagic.begin(), wire::kMagic.end(), buf)) {
      return absl::DataLossError("wait for ack: the reverse stream does not start with the magic");
    }
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

absl::Status Sender::SendRestoreCheck() {
  RestoreCheckRecord check = BuildRestoreCheck(state_record_);
  check_bytes_.clear();
  RETURN_IF_ERROR(EncodeRestoreCheck(check, &check_bytes_));
  RETURN_IF_ERROR(pages_->AddRestoreCheck(
      {reinterpret_cast<const uint8_t*>(check_bytes_.data()), check_bytes_.size()}));
  RETURN_IF_ERROR(pages_->Flush());
  return AwaitCheckVerdict();
}

absl::Status Sender::ReadReverseRecord(Channel* ch, wire::RecordHeader* h) {
  uint8_t* buf = reverse_buf_.data();
  RETURN_IF_ERROR(ch->ReadExact(buf, wire::kRecordHeaderSize));
  *h = wire::DecodeRecordHeader(buf);
  if (h->length > reverse_buf_.size() - wire::kRecordHeaderSize) {
    return absl::DataLossError("oversized reverse record");
  }
  uint8_t* payload = buf + wire::kRecordHeaderSize;
  RETURN_IF_ERROR(ch->ReadExact(payload, h->length));
  if (wire::RecordCrc(buf, {payload, h->length}) != h->crc) {
    return absl::DataLossError("reverse record crc mismatch");
  }
  return absl::OkStatus();
}

absl::Status Sender::AwaitCheckVerdict() {
  // Before anything is parked: allocation is fine, and the receiver's reason is passed on.
  reverse_buf_.resize(wire::kRecordHeaderSize + wire::kErrorFixedSize + wire::kMaxErrorMessage);
  Channel* ch = main_[0];
  uint8_t* buf = reverse_buf_.data();
  auto step = [](const absl::Status& s) {
    return absl::Status(
        s.code(), absl::StrCat("setup: wait for the receiver's restore check: ", s.message()));
  };
  if (absl::Status s = ch->ReadExact(buf, wire::kPreambleSize); !s.ok()) return step(s);
  if (!std::equal(wire::kMagic.begin(), wire::kMagic.end(), buf)) {
    return step(absl::DataLossError("the reverse stream does not start with the magic"));
  }
  reverse_preamble_read_ = true;
  for (;;) {
    wire::RecordHeader h;
    if (absl::Status s = ReadReverseRecord(ch, &h); !s.ok()) return step(s);
    std::span<const uint8_t> payload{buf + wire::kRecordHeaderSize, h.length};
    if (h.type == static_cast<uint8_t>(wire::RecordType::kAck)) {
      wire::Ack a;
      if (h.length != wire::kAckSize || wire::DecodeAck(payload, &a) != nullptr) {
        return step(absl::DataLossError("malformed ack"));
      }
      if (a.kind == wire::AckKind::kRestoreChecked) return absl::OkStatus();
      if (a.kind != wire::AckKind::kPreambleAccepted) {
        return step(absl::DataLossError(
            absl::StrCat("unexpected ack ", wire::AckKindName(a.kind), " before the verdict")));
      }
    } else if (h.type == static_cast<uint8_t>(wire::RecordType::kError)) {
      wire::ErrorRecord e;
      if (wire::DecodeError(payload, &e) != nullptr) {
        return step(absl::DataLossError("malformed error record"));
      }
      return absl::Status(static_cast<absl::StatusCode>(e.code),
                          absl::StrCat("setup: the receiver refused the migration up front: ",
                                       std::string(e.message)));
    } else if (h.type == static_cast<uint8_t>(wire::RecordType::kEndOfStream)) {
      return step(absl::UnavailableError("the receiver ended its stream without a verdict"));
    } else {
      return step(absl::DataLossError("unexpected record on the reverse stream"));
    }
  }
}

void Sender::IdentifyFiles(bool compute) {
  for (VmaRecord& v : state_record_.vmas) {
    if (v.kind != VmaKind::kFile || v.deleted || v.path.empty() || v.path[0] != '/') continue;
    if (v.file_size == 0 && v.mtime_ns == 0) {
      v.id = {FileIdKind::kUnknown, {}};  // the path no longer names the mapped file
      continue;
    }
    FileStamp stamp{makedev(v.dev_major, v.dev_minor), v.inode, v.file_size, v.mtime_ns};
    const uint64_t length = v.end - v.start;
    if (compute) {
      v.id = identities_.Get(v.path, stamp, v.offset, length);
    } else {
      v.id = identities_.Find(stamp, v.offset, length)
                 .value_or(FileIdentity{FileIdKind::kUnknown, {}});
    }
  }
}

void Sender::WarmIdentities(std::span<const MemoryRegion> regions) {
  for (const MemoryRegion& m : regions) {
    if (m.kind != RegionKind::kFile || m.deleted || m.path.empty() || m.path[0] != '/') continue;
    if (!seen_files_.insert({m.path, m.inode, m.offset, m.size()}).second) continue;
    absl::StatusOr<FileStamp> st = StatFile(m.path);
    if (!st.ok() || st->inode != m.inode) continue;
    FileStamp stamp{makedev(m.dev_major, m.dev_minor), m.inode, st->size, st->mtime_ns};
    (void)identities_.Get(m.path, stamp, m.offset, m.size());
  }
}

void Sender::ComputeDigestsInto() {
  std::span<const RamBlock> blocks = registry_.blocks();
  for (size_t i = 0; i < blocks.size() && i < state_record_.digests.size(); ++i) {
    BlockDigest& d = state_record_.digests[i];
    d.block_id = blocks[i].id;
    d.length = blocks[i].length;
    d.crc32c = pages_->BlockDigest(blocks[i].id);
  }
}

absl::Status Sender::VerifyFinal() {
  RETURN_IF_ERROR(pages_->Flush());  // its staging area is the scratch space
  uint64_t changed = 0, first = 0;
  const RamBlock* at = nullptr;
  for (const RamBlock& b : registry_.blocks()) {
    uint64_t f = 0;
    const uint64_t n =
        pages_->CountUnsentChanges(b.id, b.start, b.page_count(), config_.unchecked, &f);
    if (n != 0 && at == nullptr) {
      at = &b;
      first = f;
    }
    changed += n;
  }
  if (at == nullptr) return absl::OkStatus();
  return absl::DataLossError(
      absl::StrFormat("verify: %d page(s) are not what was sent of them, a write the %s tracker "
                      "did not report (the first: block %d (%s) page %d, at 0x%x)",
                      changed, TrackerKindName(tracker_->kind()), at->id, at->name, first,
                      at->start + first * at->page_size));
}

void Sender::ExcludeCrcTables(std::span<const RamBlock> blocks) {
  for (const RamBlock& b : blocks) {
    auto [begin, end] = pages_->CrcTableRange(b.id);
    if (end > begin) registry_.AddExcluded({begin, end});
  }
}

}  // namespace procmig
