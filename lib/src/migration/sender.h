// Sender: the source side of one live migration, as an explicit state machine
//
//   setup -> bulk -> iterate -> stop_and_copy -> done
//   (any state but done) -> failed
//
// Setup reads the layout, builds the RAM blocks (RamBlockRegistry), checks the process for
// resources that cannot migrate (the caller's hook; refused before anything is frozen), starts
// the tracker and announces the blocks. Bulk sends every page once (iteration 0). Iterate syncs
// the tracker, follows layout changes (block remove/resize/add records; a new or resized block is
// sent in full), sends the dirty pages from live memory, and asks the ConvergencePolicy whether
// the rest fits the downtime limit and how much to throttle the program (Freezer::SetThrottle).
// Stop-and-copy first brings the blocks up to date with the layout until a last read finds it
// unchanged, then parks every application thread and checks that the layout still is the one
// sent. A stop that cannot park every thread or finds the layout changed is abandoned: the
// program runs on, the ConvergencePolicy throttles it one step more, and the sender iterates
// again, or, once the policy forces the stop (iteration budget spent, or several stops
// abandoned), retries the stop at once; after max_park_attempts abandoned stops in total the
// migration fails. A stop that holds makes the final tracker sync, then runs the final phase
// (Freezer::RunFinalPhase: beside the parked program, or in a frozen copy of it when
// leave_running): the last dirty pages, the final iteration marker, the process state with a
// digest of every block, end of stream, and the receiver's ack on the reverse stream. When it
// overruns final_timeout_ms the final channels are aborted, which ends it with an error. On success
// the original stays parked (migration: the caller exits the process) unless leave_running; on any
// failure it is unparked and runs on.
//
// Channels: one or several connections (PageSender's multi-channel rules: records on channel 0,
// a page always on the same channel, iteration markers on all as a barrier); the ack comes back
// on channel 0. Compression (zlib) and XBZRLE are the PageSender's.
//
// Timing: downtime_ms runs from the first park of the final stop to the end of stream written
// (what the program pauses for until the destination has everything); the wait for the ack is
// ack_wait_ms, apart (the final phase reports both through a shared page).
//
// Up-front restore check (config restore_check): at setup, the identity of every file the
// process maps (ELF build-id, else crc32c of the mapped range; FileIdentityCache) is computed,
// the restore_check record goes out right after the preamble, and the sender waits for the
// receiver's verdict before announcing any block: a refusal fails setup (the program never
// stopped) with the receiver's reason. Files first mapped later are identified when an
// iteration first sees them; the final capture (PrepareStop) only looks identities up, and a
// miss is recorded as "unknown" (the receiver then checks size and mtime only, with a warning).
//
// Nothing is allocated between Park() and Unpark(): buffers, the reverse-stream reader and the
// process-state encoding space are prepared before parking.
//
// Threads: Run() on one thread (the agent thread); Cancel() and stats() from any thread.
#ifndef PROCMIG_MIGRATION_SENDER_H_
#define PROCMIG_MIGRATION_SENDER_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "dirty/dirty_tracker.h"
#include "migration/convergence_policy.h"
#include "migration/freezer.h"
#include "migration/layout_source.h"
#include "migration/page_sender.h"
#include "migration/process_capture.h"
#include "migration/process_state.h"
#include "os/file_identity.h"
#include "ram/ram_block_registry.h"
#include "transport/channel.h"
#include "wire/record_codec.h"

namespace procmig {

enum class SenderState : uint8_t { kSetup, kBulk, kIterate, kStopAndCopy, kDone, kFailed };
const char* SenderStateName(SenderState s);

class BulkPrescan;

struct SenderStats {
  SenderState state = SenderState::kSetup;
  uint64_t iteration = 0;
  uint64_t total_bytes = 0;
  uint64_t remaining_bytes = 0;
  PageSenderCounters pages;
  uint64_t dirty_pages_rate = 0;
  uint64_t throughput_bps = 0;
  uint64_t expected_downtime_ms = 0;
  // First park of the final (successful) stop to the end of stream written: the pause the
  // program sees until the destination holds everything.
  uint64_t downtime_ms = 0;
  uint64_t ack_wait_ms = 0;  // end of stream written to the receiver's ack (still parked)
  uint64_t setup_ms = 0;
  uint64_t total_ms = 0;
  uint32_t throttle_percent = 0;
  uint32_t park_failures = 0;
  // Breakdown of the last stop, in µs: park, layout check + final sync, final phase (send + ack),
  // and within it: starting its task (synced to the task running) and the send (to end of
  // stream).
  uint64_t park_us = 0, sync_us = 0, copy_us = 0, spawn_us = 0, final_send_us = 0;
  uint32_t abandoned_stops = 0;  // stops that went back to iterating (park or layout), in total
  uint64_t final_pages = 0;
};

struct SenderConfig {
  ConvergenceConfig convergence;
  PageSenderConfig pages;      // preamble (page size, session id), xbzrle, bandwidth
  bool leave_running = false;  // unpark right after the frozen copy exists
  int park_timeout_ms = 2000;
  int final_timeout_ms = 60000;  // final phase: sending the rest and waiting for the ack
  // Stops abandoned in total (a thread did not park, or the layout changed) before the migration
  // fails; after ConvergenceConfig::force_after_abandoned of them the stop is retried in place.
  int max_park_attempts = 12;
  std::vector<AddressRange> excluded;  // the agent's own memory
  // The agent's own descriptors (its control socket and connection, its log). The sender adds
  // its channels' and its tracker's, and leaves them all out of every captured process state:
  // a restored copy starts a new agent with new ones.
  std::vector<int> own_fds;
  // List what the process holds that cannot migrate (empty = fine). Called with every captured
  // process state (setup, and the last before each stop), before anything is frozen.
  std::function<std::vector<std::string>(const ProcessStateRecord&)> check_unsupported;
  // Called at most every progress_interval_ms outside park windows (allocation allowed).
  std::function<void(const SenderStats&)> progress;
  uint64_t progress_interval_ms = 500;
  // Fills the process state except threads, sigactions and digests (allocates; before parking).
  std::function<absl::Status(std::span<const MemoryRegion>, ProcessStateRecord*)> capture;
  // Send the restore_check record at setup and wait for the receiver's verdict (needs capture
  // and a receiver that answers it: procmig's own).
  bool restore_check = false;
  // Full sends of a private anonymous block (the bulk stage, blocks added later) send the pages
  // mincore shows untouched as zero runs without reading them, on machines with no swap
  // (os/resident_pages.h).
  bool unread_zeros = true;
  // In the final phase, once every page is sent and before the end of stream: read every block
  // again and fail the migration (the program runs on) if a page is not what was last sent of
  // it, a write the tracker missed. Costs a read of all memory while the program is paused.
  bool verify_final = false;
  // Memory verify_final does not check: the agent's own, which travels but which the agent
  // writes itself during the final phase.
  std::vector<AddressRange> unchecked;
};

class Sender {
 public:
  // `main`: forward stream out, reverse stream (acks) in. `final_channel`: the same connection as
  // a channel that works in a forked copy (POSIX, over a dup of main's descriptor); may be `main`
  // when the freezer does not fork. None of the pointers is owned; all outlive the Sender.
  Sender(SenderConfig config, Channel* main, Channel* final_channel, DirtyTracker* tracker,
         Freezer* freezer, LayoutSource* layout);
  // N channels (PageSender's multi-channel rules): `main[0]` also carries the reverse stream;
  // `final[i]` is main[i]'s connection as a channel that works in the forked copy.
  Sender(SenderConfig config, std::vector<Channel*> main, std::vector<Channel*> final,
         DirtyTracker* tracker, Freezer* freezer, LayoutSource* layout);
  ~Sender();

  // Runs the whole migration. OK = done (threads still parked unless leave_running, see above).
  absl::Status Run();
  void Cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  SenderStats stats() const;
  SenderState state() const { return state_; }
  const std::string& last_stop_failure() const { return last_stop_failure_; }
  // The sender's own threads (compression workers), which a freezer must not park; valid while
  // Run() runs. Called from the Run() thread (the freezer's Park), no allocation.
  std::span<const pid_t> OwnThreads() const {
    return pages_ ? pages_->OwnThreads() : std::span<const pid_t>();
  }
  // Where each sent block ended up (for tests and the agent's log).
  std::span<const RamBlock> blocks() const { return registry_.blocks(); }

 private:
  absl::Status TransitionTo(SenderState next);
  absl::Status Setup();
  absl::Status Bulk();
  // Every page of block b (`live`: PageSender::SendPages'); with `unread_ok` the untouched ones of
  // an anonymous block unread (the block's id then goes into *unread).
  absl::Status SendWholeBlock(const RamBlock& b, bool live, bool unread_ok,
                              std::vector<uint32_t>* unread);
  // Pages [first, first + count) of block b, as SendWholeBlock (*skipped set when some went
  // unread).
  absl::Status SendStretch(const RamBlock& b, uint64_t first, uint64_t count, bool live,
                           bool unread_ok, bool* skipped);
  bool UnreadZerosAllowed() const;
  // Block b's pages, chunk by chunk as `prescan` (its span `span`) classified them.
  absl::Status SendPrescanned(const RamBlock& b, BulkPrescan& prescan, size_t span,
                              std::vector<uint32_t>* unread);
  // Queues the blocks in `unread` for another full send if swap appeared meanwhile.
  void RequeueIfSwapAppeared(std::span<const uint32_t> unread);
  // One iteration; *converged set when the policy says stop.
  absl::Status Iterate(bool* converged);
  absl::Status StopAndCopy();
  // Applies the layout, sends new/resized blocks and captures the process state until a read
  // finds the captured layout and a raw re-read right after it agrees (*stable), at most
  // kPrepareRounds rounds.
  absl::Status PrepareStop(size_t n_blocks_cap, bool* stable);
  // One park and, when it holds, the final phase. *done on success; OK without *done when the
  // stop was abandoned (last_stop_failure_ says why; *park_failed when a thread did not park).
  absl::Status TryStop(bool* done, bool* park_failed);
  static constexpr int kPrepareRounds = 16;
  // Re-reads the layout and sends block records; blocks that need a full send are queued.
  absl::Status ApplyLayout(bool allow_tracker_changes);
  absl::Status SendQueuedFull(bool live);
  // The pages of `set`; with `unread_ok`, runs of at least kMinUnreadRun pages as SendStretch
  // (one mincore call more per run; 16 is a round guess, not measured: shorter runs are read).
  absl::Status SendDirty(const DirtySet& set, bool live, bool unread_ok, uint64_t* pages,
                         bool* skipped);
  static constexpr uint64_t kMinUnreadRun = 16;
  // The frozen copy's work.
  absl::Status FinalPhase();
  absl::Status WaitForAck();
  // Setup: the restore_check record and the receiver's verdict.
  absl::Status SendRestoreCheck();
  absl::Status AwaitCheckVerdict();
  // Fills state_record_'s file identities: computed (and cached) when `compute`, else looked up
  // (a miss is kUnknown).
  void IdentifyFiles(bool compute);
  // Computes the identities of file mappings in `regions` not seen before (iterations only).
  void WarmIdentities(std::span<const MemoryRegion> regions);
  // Reads one reverse record into reverse_buf_ (header + payload, crc checked).
  absl::Status ReadReverseRecord(Channel* ch, wire::RecordHeader* h);
  // config_.capture of the program's part of `regions`, then config_.check_unsupported
  // (FailedPrecondition naming `step` and every reason).
  absl::Status CaptureProgram(std::span<const MemoryRegion> regions, const char* step);
  // What state_bytes_ must hold for the final encoding (threads, digests, pipe data to come).
  size_t StateBytesNeeded(size_t n_blocks_cap) const;
  void ComputeDigestsInto();
  // Keeps the PageSender's crc tables of `blocks` (agent memory) out of the RAM blocks.
  void ExcludeCrcTables(std::span<const RamBlock> blocks);
  // config_.verify_final's check (DataLoss naming the first page that differs).
  absl::Status VerifyFinal();
  absl::Status AfterFlush();
  void Publish(bool force);
  uint64_t Now() const;

  // Immutable after construction.
  const SenderConfig config_;
  const std::vector<Channel*> main_;
  const std::vector<Channel*> final_;
  Channel* const final_channel_;  // final_[0]: the reverse stream in the frozen copy
  DirtyTracker* const tracker_;
  // The tracker started unprotected (StartUnprotected): the bulk stage protects every block.
  bool protect_in_bulk_ = false;
  Freezer* const freezer_;
  LayoutSource* const layout_;

  // Owned by the Run() thread.
  SenderState state_ = SenderState::kSetup;
  RamBlockRegistry registry_;
  ConvergencePolicy policy_;
  std::unique_ptr<PageSender> pages_;
  std::vector<uint32_t> full_send_;  // ids of blocks to send in full at the next pass
  const DirtySet* final_set_ = nullptr;
  bool final_unread_ok_ = false;  // UnreadZerosAllowed(), asked before the park
  ProcessStateRecord state_record_;
  std::string state_bytes_;
  FileIdentityCache identities_;
  // File mappings identified already: (path, inode, offset, length).
  absl::flat_hash_set<std::tuple<std::string, uint64_t, uint64_t, uint64_t>> seen_files_;
  std::string check_bytes_;
  bool reverse_preamble_read_ = false;  // the verdict's reader took the reverse preamble
  std::vector<uint8_t> reverse_buf_;
  // Written by the final phase's task (a forked copy with leave_running), read by the agent
  // thread after it: one shared page mapped at setup. CLOCK_MONOTONIC is the same clock in both.
  struct FinalTimes {
    uint64_t copy_start_ns;     // FinalPhase() entered in that task
    uint64_t end_of_stream_ns;  // end of stream handed to the channel
    uint64_t ack_ns;            // the receiver's ack read
  };
  FinalTimes* final_times_ = nullptr;
  uint64_t start_ns_ = 0, park_ns_ = 0, last_progress_ns_ = 0, iteration_ = 0;
  uint64_t last_sync_ns_ = 0, last_sync_bytes_ = 0;  // the previous tracker sync
  uint32_t layout_fingerprint_ = 0;
  std::vector<MemoryRegion> last_regions_;  // the layout ApplyLayout applied last
  std::string last_stop_failure_;  // why the last stop went back to iterating (for the log)
  bool parked_ = false;            // between Park() and Unpark(): no allocation, no progress
  std::atomic<bool> cancelled_{false};

  mutable std::mutex stats_mu_;
  SenderStats stats_ ABSL_GUARDED_BY(stats_mu_);
  SenderStats local_;  // owned by the Run() thread, published into stats_
};

}  // namespace procmig

#endif  // PROCMIG_MIGRATION_SENDER_H_
