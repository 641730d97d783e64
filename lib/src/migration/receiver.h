// Receiver: the destination side of one migration session, as an explicit state machine.
//
//   kAwaitingPreamble -> kReceiving -> kEnded -> kAcked
//          \________________\___________\______-> kFailed
//
// The caller (ReceiveSession) reads every channel of the session on its own thread and hands each
// chunk to Feed(index, bytes). The receiver parses each channel with a StreamReader (main channel
// 0 in "main" mode, the others "pages only"), decodes every page (zero, raw, xbzrle against the
// page it holds, zlib) straight into the block's memory (BlockMemory), checks each decoded page's
// crc32c (DataLoss naming channel, block and page), applies zero runs (a range made zero: only
// pages that may hold data are written), and applies block add/remove/resize from the main
// channel.
//
// Multi-channel order (QEMU multifd's sync, per iteration): an iteration record on a channel is a
// barrier: the channel waits until every channel has reached the same iteration record, so all
// pages of iteration k are applied before any page of iteration k+1 and a page sent twice can
// never be applied out of order. A page run on a secondary channel whose block (or grown range)
// the main channel has not announced yet waits for the main channel; once the main channel has
// passed the same iteration record, such a run is DataLoss. A sender therefore has to send each
// block record before the runs that use it, and an iteration record on EVERY channel before any
// page of the next iteration. Torn pages (a live run's page whose crc did not hold) are tracked
// here across channels, not by each channel's reader (ReaderOptions::track_torn off): a page torn
// on one channel may be resent on another; Finish() fails if one never was.
//
// Reverse direction (channel 0, written by the receiver): a reverse preamble (the forward one's
// session, page size, features and channel count) and ack(kPreambleAccepted, 0) as soon as the
// main channel's preamble is accepted; ack(kRestoreChecked, 1 checked / 0 not) when a
// restore_check record passed ReceiverOptions::check_restore; after Finish() and the image is
// stored: ack(kEndOfStream,
// iterations) then end_of_stream, then the write side is shut down. On failure: error(code,
// message) then end_of_stream(aborted). The sender should close its channels after reading the
// final ack; the receiver reads them to EOF.
//
// Raw page data straight into the block (a live receive, Feed with its `source` channel): a page
// run whose payload has not been read yet (the large ones: up to 1024 pages) comes from the
// channel's reader as a split run once its header and descriptors are checked (StreamReader's
// split page runs), and its long stretches of raw pages are read from the channel straight into
// their pages in the block, each page's crc checked there right after the kernel's copy, instead
// of being read into the caller's buffer, assembled in the reader and copied again. The rest of
// such a run (short raw stretches, xbzrle and zlib pages) is read into a per-channel staging
// buffer and placed from there. A checkpoint receive (block files) keeps the buffered path.
// A torn raw page of such a run has already overwritten the page: its nonzero bit is set and its
// crc entry is that of the bytes it now holds, until it is resent (Finish fails if it never is).
//
// Threads: Feed() is called concurrently for different channels, never concurrently for one.
// Locking: `mu_` guards the state, the barrier and the torn-page set; `blocks_mu_` (shared for
// page writes, exclusive for block add/remove/resize) guards the block map; each ChannelState is
// owned by its channel's thread; `reverse_mu_` serializes the reverse stream.
#ifndef PROCMIG_MIGRATION_RECEIVER_H_
#define PROCMIG_MIGRATION_RECEIVER_H_

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "migration/block_memory.h"
#include "migration/block_populator.h"
#include "migration/image_manifest.h"
#include "transport/channel.h"
#include "transport/unique_fd.h"
#include "wire/stream_reader.h"
#include "wire/stream_writer.h"

namespace procmig {

class ZlibDecompressor;

// One block's final content, as handed to a DigestVerifier.
struct ReceivedBlockView {
  uint32_t id = 0;
  uint64_t start = 0;
  uint64_t length = 0;
  std::span<const uint8_t> bytes;
  uint32_t crc32c = 0;  // of `bytes`
};

// What the sender stated about one block's final content, and whether it matched.
struct BlockDigestCheck {
  uint32_t block_id = 0;
  DigestState state = DigestState::kNone;
  std::string sent;  // "ALG:HEX"
};

// Parses the per-block digests out of the process_state payload (its format belongs to the
// source side) and compares them with the received blocks. DataLoss when the record is malformed
// or names a block that was not received.
using DigestVerifier = std::function<absl::StatusOr<std::vector<BlockDigestCheck>>(
    std::span<const uint8_t> process_state, std::span<const ReceivedBlockView> blocks)>;

struct ReceiverOptions {
  // Fault in block memory on a background thread ahead of the data, so the bulk stage does not
  // pay a page fault per page: while data streams through a block, the next 64 MiB of it are
  // queued (Receiver::PopulateAhead). Memory that only ever receives zero pages is never touched
  // (populating it at the block's announcement cost a 1 GiB zero block as much CPU as the rest of
  // its receive).
  bool populate = true;
  // Empty: digests are not checked (every block reports DigestState::kNone).
  DigestVerifier verify_digests;
  // Called with the restore_check payload when it arrives (before any block): true = checked
  // for a restore here, false = accepted unchecked; an error refuses the session (the sender
  // gets it as an error record, before it sends any memory). Empty: accepted unchecked.
  std::function<absl::StatusOr<bool>(std::span<const uint8_t> restore_check)> check_restore;
  // Live restore: file mappings the caller made ahead at their final addresses
  // (restore/file_premaps.h). `premapped(start, length)` says whether one covers that range; a
  // block the restorer would copy into its file mapping (RestorerCopiesBlock) that lies in one
  // gets every applied page written there too (BlockMemory::mirror), through /proc/self/mem,
  // which writes read-only private mappings as a debugger does. `premap_stale(start, length)`:
  // such a block was removed or resized, so the mapping holds bytes no block vouches for any
  // more and must not be kept. Either empty: no mirroring.
  std::function<bool(uint64_t start, uint64_t length)> premapped;
  std::function<void(uint64_t start, uint64_t length)> premap_stale;
  // Checkpoint receive: each block goes straight to the file this returns for it
  // (ImageWriter::CreateBlockFile: the block's file in the image being written) as its pages
  // arrive, with no copy in memory (BlockMemory::CreateUnmapped, FileRunWriter); a write error
  // (a full file system) fails the session. `block_file_removed` is told when a block goes.
  // Empty: blocks are received into memory.
  std::function<absl::StatusOr<UniqueFd>(const std::array<uint8_t, 16>& session_id,
                                         uint32_t block_id)>
      block_file;
  std::function<void(uint32_t block_id)> block_file_removed;
};

class Receiver {
 public:
  enum class State { kAwaitingPreamble, kReceiving, kEnded, kAcked, kFailed };
  static const char* StateName(State s);

  // `reverse` (usually channel 0 of the group; may be null in tests) carries acks and errors.
  Receiver(size_t channel_count, ReceiverOptions options, Channel* reverse);
  ~Receiver();
  Receiver(const Receiver&) = delete;
  Receiver& operator=(const Receiver&) = delete;

  // Feeds bytes read from channel `index`. Returns true for exactly one call over the session:
  // the one after which every channel has read its end_of_stream; that caller then runs
  // Finish(), stores the image and calls Ack(). Errors are sticky and returned by every later
  // call (the first error wins).
  // With `source` (the channel the bytes were read from), the rest of a page run cut by the end
  // of `bytes` is read from it directly (see above); without, it is placed as later Feeds bring
  // it.
  absl::StatusOr<bool> Feed(size_t index, std::span<const uint8_t> bytes,
                            Channel* source = nullptr);
  // How many bytes to read for the next Feed of channel `index`, at most `max`: fewer right
  // after page data was read from the channel directly, so that the next run's header arrives
  // with little of its payload, which then goes straight into the block too.
  size_t NextReadSize(size_t index, size_t max) const;
  // Channel `index` reached EOF (`why` OK) or failed. Before its end_of_stream this fails the
  // session (DataLoss for a truncated stream, Unavailable for a broken connection).
  void ChannelClosed(size_t index, const absl::Status& why);
  // After Feed returned true: checks torn pages were resent and the channels agree, computes
  // each block's crc32c, verifies the sender's digests, and describes the image. -> kEnded.
  absl::StatusOr<ImageManifest> Finish();
  // Tells the sender the image is safe. -> kAcked.
  absl::Status Ack();
  // Fails the session with `s` (the first failure wins and is returned), wakes every waiting
  // channel thread, and tells the sender why when the reverse stream exists.
  absl::Status Fail(absl::Status s);

  State state() const;
  // After a failure: waits until the error record was written to the sender (or could not be),
  // so the caller may abort the channels without cutting it off.
  void AwaitFailureReported();
  // The block memories in manifest order (valid after Finish()).
  std::vector<const BlockMemory*> BlockMemories() const;
  std::span<const uint8_t> process_state() const { return process_state_; }
  // Waits until the background population has done everything queued so far (none: returns).
  void WaitForPopulationForTest();
  uint64_t session_bytes() const;

 private:
  struct BlockEntry {
    uint32_t id = 0;
    uint32_t flags = 0;
    uint64_t start = 0;
    std::string name;
    std::unique_ptr<BlockMemory> memory;
    bool mirrored = false;  // its pages went to a premapped file mapping at some point
    UniqueFd file;          // ReceiverOptions::block_file's, the block's length; memory unmapped
    bool direct = false;    // `file` is open with O_DIRECT
    // One flag per 2 MiB piece of the block: data landed in it, or it was queued for
    // population. Set by the channel threads (PopulateAhead); reallocated by a resize.
    std::unique_ptr<std::atomic<uint8_t>[]> pieces;
    uint64_t piece_count = 0;
  };
  struct ChannelState;

  absl::Status TransitionTo(State next) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Apply(size_t index, ChannelState& c, const wire::Record& r, bool* completed,
                     Channel* source);
  absl::Status ApplyPreamble(size_t index, const wire::Preamble& p);
  absl::Status ApplyBlockAdd(const wire::BlockAdd& b);
  absl::Status ApplyBlockRemove(const wire::BlockRemove& b);
  absl::Status ApplyBlockResize(const wire::BlockResize& r);
  absl::Status ApplyRun(size_t index, ChannelState& c, const wire::PageRun& run);
  absl::Status ApplyPage(size_t index, ChannelState& c, BlockEntry& b, uint64_t page,
                         const wire::PageEntry& e);
  // The live block that holds every page of `run`, or DataLoss. Needs blocks_mu_ (shared).
  absl::StatusOr<BlockEntry*> RunBlock(const wire::PageRun& run);
  // A split run (the reader's split page runs): its zero pages, then its payload.
  absl::Status StartSplitRun(size_t index, ChannelState& c, const wire::PageRun& run,
                             Channel* source);
  // Places what can be placed of the open split run's payload: the fed bytes, then, with a
  // source, the rest read from it.
  absl::Status PlaceSplitRun(size_t index, ChannelState& c, Channel* source);
  // Raw pages of the segment: `fed` bytes copied, or (fed empty) read from `source` in place.
  absl::Status PlaceRaw(ChannelState& c, const wire::PayloadSegment& seg,
                        std::span<const uint8_t> fed, Channel* source);
  // An xbzrle or zlib page of the segment from `fed`, decoded once all of it is there.
  absl::Status PlaceEncoded(size_t index, ChannelState& c, const wire::PayloadSegment& seg,
                            std::span<const uint8_t> fed);
  // The next `n` payload bytes from `source` into the channel's staging buffer, fed to the reader.
  absl::Status StagePayload(ChannelState& c, size_t n, Channel* source);
  // What every page that arrived whole (not torn) costs after its bytes and crc are in place:
  // the mirror write, the count, and its leaving the torn set.
  void PageApplied(ChannelState& c, BlockEntry& b, uint64_t page);
  // Bookkeeping of a raw page whose bytes are in the block and whose crc the reader checked.
  void RawPagePlaced(ChannelState& c, BlockEntry& b, uint64_t page, const wire::PageEntry& e,
                     bool torn);
  // Waits for the channel's block-file writes in flight (a checkpoint receive).
  absl::Status DrainFileWrites(ChannelState& c);
  // The channel's file writer, pointed at block `b`'s file (a checkpoint receive).
  absl::Status StartFileRun(ChannelState& c, const BlockEntry& b);
  // Pages [first, first + count) of a secondary channel's run (`what`: "page run", "zero run").
  absl::Status WaitForBlock(size_t index, ChannelState& c, uint32_t block_id, uint64_t first_page,
                            uint64_t count, const char* what);
  absl::Status ApplyZeroRun(size_t index, ChannelState& c, const wire::ZeroRun& run);
  absl::Status Barrier(size_t index, uint64_t iteration);
  absl::Status SendReverse(const std::function<absl::Status(wire::StreamWriter&)>& add);
  void NoteTorn(uint32_t block, uint64_t page, bool torn);
  // Starts mirroring a new block when options_.premapped covers it (main channel thread).
  void StartMirror(BlockEntry& e);
  // The block's premapped mapping no longer matches it (removed, resized).
  void StopMirror(BlockEntry& e);
  // Copies the applied page to the block's mirror; a failed write drops the mirror.
  void MirrorPage(BlockMemory& m, uint64_t page);
  absl::Status FailedStatus() const;
  void StopPopulate();
  // Called with a page that is about to receive data: when the piece before it also holds data
  // (the data streams through the block), queues the next 64 MiB not queued yet. A lone page
  // (a sparse block, a dirty page of a later iteration) queues nothing: its write faults in its
  // own piece, and guessing its neighbours would fault in memory that may only receive zeros.
  void PopulateAhead(BlockEntry& b, uint64_t page);
  // The populator's step: faults in one piece of a block, under the block lock (shared).
  bool PopulateStep(uint32_t block_id, uint64_t first_page, uint64_t count);

  // Immutable after construction.
  const size_t channel_count_;
  const ReceiverOptions options_;
  Channel* const reverse_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  State state_ ABSL_GUARDED_BY(mu_) = State::kAwaitingPreamble;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  std::optional<wire::Preamble> preamble_ ABSL_GUARDED_BY(mu_);  // the first one seen
  std::vector<uint64_t> arrived_ ABSL_GUARDED_BY(mu_);  // per channel: iteration records read
  std::vector<bool> ended_ ABSL_GUARDED_BY(mu_);
  size_t ended_count_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t table_version_ ABSL_GUARDED_BY(mu_) = 0;  // bumped by block add/resize
  absl::flat_hash_set<std::pair<uint32_t, uint64_t>> torn_ ABSL_GUARDED_BY(mu_);
  std::atomic<size_t> torn_count_{0};  // torn_.size(), readable without mu_
  std::atomic<bool> failed_{false};
  bool failure_reported_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<uint32_t> page_size_{0};  // set by the first preamble
  std::chrono::steady_clock::time_point started_ ABSL_GUARDED_BY(mu_);

  mutable std::shared_mutex blocks_mu_;
  std::map<uint32_t, BlockEntry> blocks_ ABSL_GUARDED_BY(blocks_mu_);

  // /proc/self/mem, opened by the main channel's thread for the first mirrored block (before any
  // page of it is applied), then only written with pwrite.
  UniqueFd self_mem_;

  // Owned by channel 0's thread until the session completes.
  std::vector<uint8_t> process_state_;

  std::vector<std::unique_ptr<ChannelState>> channels_;  // each owned by its channel's thread

  std::mutex reverse_mu_;
  std::unique_ptr<wire::StreamWriter> reverse_writer_ ABSL_GUARDED_BY(reverse_mu_);

  // Background population of announced blocks; created at the first preamble (it needs the page
  // size), null when options_.populate is off. Destroyed first (declared last).
  std::unique_ptr<BlockPopulator> populator_;  // set under mu_
};

}  // namespace procmig

#endif  // PROCMIG_MIGRATION_RECEIVER_H_
