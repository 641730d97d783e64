// PageSender: turns "send these pages of this block" into stream records and batches for a
// channel: zero-page detection, raw pages straight from memory, XBZRLE deltas against a page
// cache, block records, iteration markers, process state and end of stream, with the token
// bucket applied at every flush.
//
// Everything is allocated by Create(): the stream writer's fixed buffers, the page-entry array of
// one run, the XBZRLE staging area and page cache. Send*/Add*/Flush never allocate (error paths
// aside), so the sender can use it while every application thread is parked and in the frozen
// copy after a raw fork. Pages are copied into the staging area with process_vm_readv (safe
// against a concurrent munmap) and referenced by the batch until Flush(); a live run looks for
// zero pages in place first, under a fault guard (os/fault_guard.h).
//
// Threads: one owner (the sender thread), plus, with flush_threads, one thread per channel that
// only writes the batches it is handed (BatchFlusher). The channel can be switched between
// flushes once those are stopped (the frozen copy writes on a POSIX channel of its own).
#ifndef PROCMIG_MIGRATION_PAGE_SENDER_H_
#define PROCMIG_MIGRATION_PAGE_SENDER_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "codec/compress_pool.h"
#include "codec/page_cache.h"
#include "codec/zlib_codec.h"
#include "migration/batch_flusher.h"
#include "migration/rate_limiter.h"
#include "ram/ram_block.h"
#include "ram/ram_block_registry.h"
#include "transport/channel.h"
#include "wire/stream_writer.h"
#include "wire/wire_format.h"

namespace procmig {

struct PageSenderConfig {
  wire::Preamble preamble;          // page_size, session id, features (xbzrle bit set if used)
  uint64_t flush_bytes = 8u << 20;  // flush a batch once it holds this many bytes
  bool xbzrle = false;
  size_t xbzrle_cache_bytes = 64u << 20;
  uint64_t max_bandwidth = 0;  // bytes/s, 0 = unlimited
  // zlib level 1..9 for pages sent neither as zero nor as XBZRLE; 0 = no compression. Live runs
  // are compressed on compress_threads workers (CompressPool); the frozen copy, where those
  // threads do not exist, compresses on its own thread with a compressor made at Create().
  int compress_level = 0;
  int compress_threads = 1;
  // Compression while the link is busy only: before a page is compressed, the run's channel is
  // asked how much it still has to send (Channel::PendingSend). When that is under a quarter of
  // its send buffer, what the batch holds is written at once, and if the batch held little, the
  // compressor is behind the link: the rest of the run goes raw (and is written as soon as 64 KiB
  // gather) instead of leaving the link idle. So compression costs no time where the link is
  // faster than the compressor (loopback; the final phase's single compressing thread) and takes
  // every page where the link is the slower (QEMU's compress-wait-thread=off, judged by the link
  // rather than by the threads). Off, or under max_bandwidth (the token bucket is the link then),
  // or on a channel that cannot say: every page is compressed.
  bool compress_adaptive = true;
  // Stretches of zero pages go out as zero_run records (wire feature bit 3, which a receiver
  // older than the record refuses); off: every zero page is a 12-byte page_run descriptor.
  bool zero_runs = true;
  // One thread per channel writes the batches (BatchFlusher), so the sender thread stages the
  // next batch while the last one is copied into the sockets, and several channels are written
  // at once. The staging area and the stream writers' buffers are doubled for it. The caller
  // stops the threads with Quiesce() before it parks the program.
  bool flush_threads = false;
};

struct PageSenderCounters {
  uint64_t bytes_out = 0;  // bytes handed to the channel
  uint64_t normal_pages = 0;
  uint64_t zero_pages = 0;         // all zero pages, inline descriptors and zero runs alike
  uint64_t zero_run_pages = 0;     // of which sent in zero_run records
  uint64_t unread_zero_pages = 0;  // of those, sent unread (SendUnpopulated: never touched)
  uint64_t xbzrle_pages = 0;
  uint64_t xbzrle_bytes = 0;
  uint64_t xbzrle_cache_misses = 0;
  uint64_t xbzrle_overflows = 0;
  uint64_t compressed_pages = 0;        // sent as zlib
  uint64_t compressed_bytes = 0;        // their zlib streams' bytes
  uint64_t compress_skipped_pages = 0;  // sent raw: the link would have waited for the compressor
  uint64_t pages = 0;                   // all pages sent, any encoding
};

class PageSender {
 public:
  static absl::StatusOr<std::unique_ptr<PageSender>> Create(const PageSenderConfig& config,
                                                            Channel* channel);
  // One stream per channel (channel i carries the stream whose preamble says index i of N).
  // Channel 0 carries every record; the others page runs, iteration markers and end of stream.
  // A page always travels on the same channel (chosen by block and 1024-page chunk), so two
  // sends of one page within an iteration keep their order; block records precede the runs
  // that use them (channel 0 is written first at every flush); every iteration marker goes on
  // every channel and is flushed at once (the receiver's barrier); a block removal or resize
  // after pages went out on other channels in the same iteration first adds such a barrier.
  static absl::StatusOr<std::unique_ptr<PageSender>> Create(const PageSenderConfig& config,
                                                            std::span<Channel* const> channels);
  PageSender(const PageSender&) = delete;
  PageSender& operator=(const PageSender&) = delete;
  ~PageSender();  // unmaps the crc tables

  // Only without flush threads (after Quiesce()).
  void set_channel(Channel* channel) { channels_[0] = channel; }
  // As many as at Create() (the frozen copy writes on POSIX channels of its own). Only without
  // flush threads (after Quiesce()).
  void set_channels(std::span<Channel* const> channels) {
    for (size_t i = 0; i < channels_.size() && i < channels.size(); ++i) channels_[i] = channels[i];
  }
  size_t channel_count() const { return channels_.size(); }
  // Called after every flush (e.g. cancellation, progress); an error stops the sending.
  void set_after_flush(std::function<absl::Status()> hook) { after_flush_ = std::move(hook); }
  void set_rate_limited(bool on) { rate_limited_ = on; }

  absl::Status AddBlock(const RamBlock& block);
  absl::Status RemoveBlock(uint32_t id);
  absl::Status ResizeBlock(const RamBlock& block);
  // Pages [first, first + count) of `block`. `live`: the program may be writing them.
  absl::Status SendPages(const RamBlock& block, uint64_t first, uint64_t count, bool live);
  absl::Status SendPages(uint32_t id, uintptr_t start, uint64_t first, uint64_t count, bool live);
  // As SendPages (live), for pages a scan made after the tracker protected them already found
  // all zero or not (BulkPrescan): bit (p - zero_first) of `zero` is set for a zero page p. Zero
  // pages are not read again; the others are copied as SendPages does (and still checked).
  absl::Status SendScanned(uint32_t id, uintptr_t start, uint64_t first, uint64_t count,
                           const uint64_t* zero, uint64_t zero_first);
  // Pages [first, first + count) of block `id` as zero_run records, without reading them: the
  // caller knows they hold no memory (untouched anonymous pages read as zeros). Reads them like
  // SendPages when zero runs are off.
  absl::Status SendUnpopulated(uint32_t id, uintptr_t start, uint64_t first, uint64_t count);
  // Marks the end of an iteration with this stream's figures for it (pages, bytes, duration).
  absl::Status EndIteration(uint64_t iteration, uint64_t dirty_pages, uint64_t duration_ns,
                            bool final);
  absl::Status AddProcessState(std::span<const uint8_t> state);
  // Channel 0, first record after the preamble (wire restore_check).
  absl::Status AddRestoreCheck(std::span<const uint8_t> check);
  absl::Status AddEndOfStream(bool aborted);
  // Sends the batch: written before it returns, or, with flush threads, handed to them (a
  // write error then shows at the next Flush() or Quiesce()).
  absl::Status Flush();
  // Waits for the batches on their way and stops the flush threads and the compressing threads
  // (if any): from here on every Flush() writes on the calling thread (what the batch holds now,
  // too), and pages are compressed there. Called before the program
  // is parked: the threads end while none of the program's threads is stopped (a join with them
  // parked could wait on a glibc lock one of them holds), so no process copied after that lists
  // them (a restored copy would hold the descriptors of threads that do not exist). Returns the
  // first write error of the batches on their way. Idempotent.
  absl::Status Quiesce();
  // With the program frozen and everything sent (after a Flush, whose staging area it reuses):
  // the pages of block `id` (`pages` of them at `start`) whose content is not what the crc
  // table says was last sent, a write the tracker missed. Returns their count and the first in
  // *first. Reads with process_vm_readv; a page it cannot read counts as changed.
  // Pages that overlap a `skip` range are not checked.
  uint64_t CountUnsentChanges(uint32_t id, uintptr_t start, uint64_t pages,
                              std::span<const AddressRange> skip, uint64_t* first);

  const PageSenderCounters& counters() const { return counters_; }
  // Live runs that could not be read whole (the memory went away), and the last such block: the
  // sender re-reads the layout and sends that block again in full if it still exists.
  uint64_t read_faults() const { return read_faults_; }
  uint32_t TakeFaultBlock() { return std::exchange(fault_block_, 0); }
  uint32_t page_size() const { return page_size_; }
  // Threads of the page sender's own (the compression workers, the flush threads): never to be
  // parked.
  std::span<const pid_t> OwnThreads() const { return own_tids_; }
  // The crc32c of the block's content as the receiver holds it, built from the crc of each page
  // as last sent (never by re-reading memory, which the agent's own heap changes). 0 for unknown
  // ids.
  uint32_t BlockDigest(uint32_t id) const;
  // The block's page-crc table [start, end): agent memory, to be excluded from the blocks.
  std::pair<uintptr_t, uintptr_t> CrcTableRange(uint32_t id) const;
  // The ranges of the tables unmapped since the last call (blocks removed or resized), for the
  // caller to stop excluding.
  std::vector<std::pair<uintptr_t, uintptr_t>> TakeDroppedTables() {
    return std::exchange(dropped_tables_, {});
  }
  // The staging area [start, end): the agent's own memory, never a RAM block.
  std::pair<uintptr_t, uintptr_t> staging_range() const {
    auto b = reinterpret_cast<uintptr_t>(stage_.get());
    return {b, b + stage_halves() * stage_size_};
  }
  // The XBZRLE page cache's memory ({0, 0} without XBZRLE): like the staging area, it changes
  // with every page sent and must not be migrated itself.
  std::pair<uintptr_t, uintptr_t> cache_range() const {
    return cache_ ? cache_->memory_range() : std::pair<uintptr_t, uintptr_t>{0, 0};
  }

 private:
  PageSender(const PageSenderConfig& config, std::span<Channel* const> channels,
             std::vector<std::unique_ptr<wire::StreamWriter>> writers);
  // The channel a page of `block` travels on.
  size_t ChannelOf(uint32_t block, uint64_t page) const {
    return (block + page / wire::kMaxPagesPerRun) % writers_.size();
  }
  size_t BatchBytes() const;
  // Iteration markers on every channel, flushed (the receiver's barrier).
  absl::Status AddMarkers(const wire::IterationMarker& m);
  // A barrier when pages went out on channels other than 0 since the last marker.
  absl::Status BarrierIfSpread();
  absl::Status FlushBatch(bool keep_stage);
  // Waits for every flush thread's batch; the first error.
  absl::Status WaitFlushers();
  // Retries `add` once after a flush when the batch is full.
  template <typename F>
  absl::Status AddWithRoom(F&& add);
  absl::Status SendRun(uint32_t id, uintptr_t start, uint64_t first, uint64_t count, bool live,
                       size_t channel);
  // Sends entries_[0, count) (pages first.. of block id) as page runs, with the stretches of
  // zero pages that are cheaper as zero_run records sent as those.
  absl::Status EmitRun(uint32_t id, uint64_t first, uint64_t count, size_t channel);
  // Page `page` of block `id` goes as zeros: its crc (in `crc_slot`, when the block has a crc
  // table), the zero-page counters, and a cached XBZRLE copy, now zeros too.
  void NoteZero(uint32_t id, uint64_t page, uint32_t* crc_slot);
  // One page of the staging area (the caller made room).
  absl::StatusOr<uint8_t*> Stage();
  // Reads `count` pages at addr into the staging area and classifies them into entries_:
  // kZero (no data), or kRaw with data pointing at the staged copy. Only non-zero pages take
  // staging space. Returns the pages read (fewer when the memory went away). `live`: the program
  // runs; zero pages are then looked for in place first (see the .cc).
  uint64_t StageRun(uintptr_t addr, uint64_t count, bool live);
  // process_vm_readv of `count` pages at addr into out; returns the pages read.
  size_t ReadStaged(uintptr_t addr, uint64_t count, uint8_t* out);
  // Replaces the raw pages of entries_[0, count) by zlib streams where that is smaller, as far
  // as the link lets it (LinkStarved).
  absl::Status CompressRun(uint64_t count, bool live, size_t channel);
  // compress_adaptive: true when `channel` is about to run dry and the batch has too little for
  // it (the next pages go raw); a batch with enough in it is written first (keeping the stage).
  absl::StatusOr<bool> LinkStarved(size_t channel);
  // Makes entry e a zlib page of `size` bytes at `z` (copied into the staging area) when that
  // is smaller than a raw page.
  absl::Status UseZlib(wire::PageEntry& e, const uint8_t* z, size_t size);

  const PageSenderConfig config_;
  const uint32_t page_size_;
  const uint32_t zero_crc_;
  std::vector<Channel*> channels_;
  std::vector<std::unique_ptr<wire::StreamWriter>> writers_;  // [0] carries the records
  uint64_t wire_iteration_ = 0;                 // the next marker's number (barriers count too)
  bool spread_ = false;                         // pages on channels > 0 since the last marker
  std::unique_ptr<wire::PageEntry[]> entries_;  // kMaxPagesPerRun
  // Page copies, deltas and zlib streams of one batch; with flush threads two halves, one
  // being written while the other fills.
  std::unique_ptr<uint8_t[]> stage_;
  size_t stage_halves() const { return config_.flush_threads ? 2 : 1; }
  size_t stage_size_ = 0;          // of one half
  uint8_t* stage_base_ = nullptr;  // the half being filled
  size_t stage_used_ = 0;          // of stage_base_
  // One per channel, or none. Declared after the writers and the staging area: destroyed first,
  // each waiting for the batch it writes from them.
  std::vector<std::unique_ptr<BatchFlusher>> flushers_;
  std::vector<pid_t> own_tids_;
  // Pages per process_vm_readv in StageRun: 512 KiB worth (half the 1 MiB L2 of the reference
  // machine; 128 KiB measured no faster) after a slice with a zero page, doubling up to 1 MiB
  // while there is none: the slice's crcs are computed right after the read, from the cache (an
  // in-place copy computes them as it copies).
  static constexpr size_t kMinReadBytes = 512u << 10;
  // Runs shorter than this are copied without the in-place look: its window (six sigaction
  // calls) cost 8-10 us here, the copy and check of zero pages 5.6-7.0 us for 16 pages, 8.2-9.1
  // for 32 and 12-18 for 64, where the look took 10-13 us (3 runs of 20000 each).
  static constexpr uint64_t kMinInPlacePages = 64;
  static constexpr size_t kMaxReadBytes = 1u << 20;
  uint64_t min_read_pages_ = 1;
  uint64_t max_read_pages_ = 1;
  uint64_t read_pages_ = 1;
  std::unique_ptr<uint32_t[]> copy_crcs_;  // max_read_pages_: the crcs of one in-place copy
  // SendScanned's bitmap while it runs (else null): bit i for the page at scanned_base_ + i pages.
  const uint64_t* scanned_ = nullptr;
  uintptr_t scanned_base_ = 0;
  // Of the pages from addr (at most max), how many lead whose scanned bit is `zero`.
  uint64_t ScannedRun(uintptr_t addr, uint64_t max, bool zero) const;
  std::unique_ptr<PageCache> cache_;
  std::unique_ptr<CompressPool> pool_;        // live runs, until Quiesce()
  std::unique_ptr<ZlibCompressor> inline_z_;  // the frozen copy
  std::unique_ptr<uint8_t[]> z_scratch_;      // inline_z_'s output
  size_t z_scratch_size_ = 0;
  std::unique_ptr<uint32_t[]> z_index_;  // entries of a run handed to the pool
  // A batch this big is written as soon as the link runs low (LinkStarved, after a starved run).
  static constexpr size_t kEagerFlushBytes = 64u << 10;
  bool starved_ = false;  // the last run's compression stopped for the link
  RateLimiter limiter_;
  bool rate_limited_ = true;
  std::function<absl::Status()> after_flush_;
  struct CrcTable {
    uint32_t* crcs = nullptr;
    size_t pages = 0;
    size_t bytes = 0;  // of the mapping
  };
  absl::Status NewTable(uint32_t id, size_t pages);
  void DropTable(uint32_t id);
  std::unordered_map<uint32_t, CrcTable> tables_;
  std::vector<std::pair<uintptr_t, uintptr_t>> dropped_tables_;  // TakeDroppedTables()
  PageSenderCounters counters_;
  uint64_t read_faults_ = 0;
  uint32_t fault_block_ = 0;
  uint64_t iter_pages_ = 0, iter_zero_ = 0, iter_bytes_start_ = 0, iter_gen_ = 0;
};

}  // namespace procmig

#endif  // PROCMIG_MIGRATION_PAGE_SENDER_H_
