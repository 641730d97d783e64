#include "migration/page_sender.h"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <utility>

#include "base/crc32c.h"
#include "base/status_macros.h"
#include "codec/xbzrle.h"
#include "codec/zero_page.h"
#include "os/fault_guard.h"

namespace procmig {

namespace {

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

void SleepNs(uint64_t ns) {
  timespec ts{static_cast<time_t>(ns / 1'000'000'000ull), static_cast<long>(ns % 1'000'000'000ull)};
  while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR) {
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<PageSender>> PageSender::Create(const PageSenderConfig& config,
                                                               Channel* channel) {
  Channel* one[] = {channel};
  return Create(config, one);
}

absl::StatusOr<std::unique_ptr<PageSender>> PageSender::Create(const PageSenderConfig& config,
                                                               std::span<Channel* const> channels) {
  if (channels.empty() || channels.size() > wire::kMaxChannels) {
    return absl::InvalidArgumentError("page sender: channel count outside 1..kMaxChannels");
  }
  for (Channel* c : channels) {
    if (c == nullptr) return absl::InvalidArgumentError("page sender: no channel");
  }
  wire::Preamble pre = config.preamble;
  pre.channel_count = static_cast<uint16_t>(channels.size());
  if (channels.size() > 1) pre.features |= wire::kFeatureMultiChannel;
  if (config.xbzrle) pre.features |= wire::kFeatureXbzrle;
  if (config.compress_level < 0 || config.compress_level > 9) {
    return absl::InvalidArgumentError("page sender: compress level must be 0..9");
  }
  if (config.compress_level > 0) pre.features |= wire::kFeatureZlib;
  if (config.zero_runs) pre.features |= wire::kFeatureZeroRun;
  std::vector<std::unique_ptr<wire::StreamWriter>> writers;
  wire::WriterOptions wo;
  wo.banks = config.flush_threads ? 2 : 1;
  for (size_t i = 0; i < channels.size(); ++i) {
    wire::Preamble p = pre;
    p.channel_index = static_cast<uint16_t>(i);
    ASSIGN_OR_RETURN(std::unique_ptr<wire::StreamWriter> w, wire::StreamWriter::Create(p, wo));
    writers.push_back(std::move(w));
  }
  PageSenderConfig c = config;
  c.preamble = pre;
  std::unique_ptr<PageSender> s(new PageSender(c, channels, std::move(writers)));
  s->entries_ = std::make_unique<wire::PageEntry[]>(wire::kMaxPagesPerRun);
  if (config.xbzrle) {
    PageCacheConfig pc;
    pc.capacity_bytes = config.xbzrle_cache_bytes;
    pc.page_size = pre.page_size;
    RETURN_IF_ERROR(pc.Validate());
    ASSIGN_OR_RETURN(s->cache_, PageCache::Create(pc));
  }
  if (config.compress_level > 0) {
    CompressPoolConfig pc;
    pc.threads = std::max(1, config.compress_threads);
    pc.level = config.compress_level;
    pc.max_job_bytes = pre.page_size;
    ASSIGN_OR_RETURN(s->pool_, CompressPool::Create(pc));
    ASSIGN_OR_RETURN(s->inline_z_, ZlibCompressor::Create(config.compress_level));
    s->z_scratch_size_ = ZlibCompressor::MaxCompressedSize(pre.page_size);
    s->z_scratch_.reset(new uint8_t[s->z_scratch_size_]);
    s->z_index_.reset(new uint32_t[wire::kMaxPagesPerRun]);
  }
  // A batch's worth of staged pages plus one run of pages, their deltas and zlib streams.
  const size_t run_bytes = static_cast<size_t>(wire::kMaxPagesPerRun) * pre.page_size;
  s->stage_size_ = config.flush_bytes + 4 * run_bytes;
  s->stage_.reset(new uint8_t[s->stage_halves() * s->stage_size_]);
  s->stage_base_ = s->stage_.get();
  if (s->pool_) {
    auto tids = s->pool_->worker_tids();
    s->own_tids_.assign(tids.begin(), tids.end());
  }
  // Last: nothing fails after the threads start but their own start.
  if (config.flush_threads) {
    for (Channel* c : channels) {
      ASSIGN_OR_RETURN(std::unique_ptr<BatchFlusher> f, BatchFlusher::Start(c));
      s->own_tids_.push_back(f->tid());
      s->flushers_.push_back(std::move(f));
    }
  }
  return s;
}

PageSender::PageSender(const PageSenderConfig& config, std::span<Channel* const> channels,
                       std::vector<std::unique_ptr<wire::StreamWriter>> writers)
    : config_(config),
      page_size_(config.preamble.page_size),
      zero_crc_(wire::ZeroPageCrc(config.preamble.page_size)),
      channels_(channels.begin(), channels.end()),
      writers_(std::move(writers)),
      limiter_(config.max_bandwidth) {
  min_read_pages_ = std::max<uint64_t>(1, kMinReadBytes / page_size_);
  max_read_pages_ =
      std::clamp<uint64_t>(kMaxReadBytes / page_size_, min_read_pages_, wire::kMaxPagesPerRun);
  read_pages_ = min_read_pages_;
  copy_crcs_ = std::make_unique<uint32_t[]>(max_read_pages_);
}

absl::Status PageSender::NewTable(uint32_t id, size_t pages) {
  DropTable(id);
  // Its own mapping, so the sender can exclude it from the RAM blocks (it changes at every send).
  size_t bytes = (pages * sizeof(uint32_t) + 4095) & ~size_t{4095};
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return ErrnoStatus("map the page-crc table of a block", errno);
  tables_[id] = CrcTable{static_cast<uint32_t*>(p), pages, bytes};
  return absl::OkStatus();
}

PageSender::~PageSender() {
  for (const auto& [id, t] : tables_) munmap(t.crcs, t.bytes);
}

void PageSender::DropTable(uint32_t id) {
  auto it = tables_.find(id);
  if (it == tables_.end()) return;
  const auto b = reinterpret_cast<uintptr_t>(it->second.crcs);
  dropped_tables_.push_back({b, b + it->second.bytes});
  munmap(it->second.crcs, it->second.bytes);
  tables_.erase(it);
}

uint32_t PageSender::BlockDigest(uint32_t id) const {
  auto it = tables_.find(id);
  if (it == tables_.end()) return 0;
  return crc32c::Concatenate(it->second.crcs, it->second.pages, page_size_);
}

std::pair<uintptr_t, uintptr_t> PageSender::CrcTableRange(uint32_t id) const {
  auto it = tables_.find(id);
  if (it == tables_.end()) return {0, 0};
  auto b = reinterpret_cast<uintptr_t>(it->second.crcs);
  return {b, b + it->second.bytes};
}

absl::Status PageSender::Flush() { return FlushBatch(/*keep_stage=*/false); }

absl::Status PageSender::Quiesce() {
  absl::Status s = WaitFlushers();
  flushers_.clear();  // joins
  // The compressing threads end too (their pages are compressed on the sender thread from here
  // on, as in the final phase): no copy of the process made after this lists them either.
  pool_.reset();
  own_tids_.clear();
  return s;
}

size_t PageSender::BatchBytes() const {
  size_t n = 0;
  for (const auto& w : writers_) n += w->batch_bytes();
  return n;
}

absl::Status PageSender::WaitFlushers() {
  absl::Status first;
  for (auto& f : flushers_) {
    absl::Status s = f->Wait();
    if (first.ok()) first = std::move(s);
  }
  return first;
}

absl::Status PageSender::FlushBatch(bool keep_stage) {
  // With flush threads, the batches handed over last time used the writers' other banks and the
  // other half of the staging area, which are about to be filled again.
  RETURN_IF_ERROR(WaitFlushers());
  // Channel 0 first: its block records reach the receiver before the runs on other channels that
  // need them (handed to the flush threads, they may not: the receiver then waits for the block,
  // Receiver::WaitForBlock).
  size_t bytes = 0;
  for (size_t i = 0; i < writers_.size(); ++i) {
    const size_t n = writers_[i]->batch_bytes();
    if (n == 0) continue;
    if (flushers_.empty()) {
      // A batch may exceed IOV_MAX only in theory (the writer caps it); write it in one call.
      auto batch = writers_[i]->batch();
      RETURN_IF_ERROR(channels_[i]->WriteV(batch.data(), batch.size()));
      writers_[i]->ClearBatch();
    } else {
      flushers_[i]->Post(writers_[i]->TakeBatch());
    }
    counters_.bytes_out += n;
    bytes += n;
  }
  if (!flushers_.empty() && keep_stage) {
    // The pages of the record that did not fit are in this half: it stays, and is free again
    // once these batches are written.
    RETURN_IF_ERROR(WaitFlushers());
  } else if (!flushers_.empty()) {
    stage_base_ = stage_base_ == stage_.get() ? stage_.get() + stage_size_ : stage_.get();
  }
  if (bytes > 0 && rate_limited_ && !limiter_.unlimited()) {
    uint64_t wait = limiter_.Consume(bytes, NowNs());
    if (wait > 0) SleepNs(wait);
  }
  // A flush made to find room for a record whose pages are already staged keeps them.
  if (!keep_stage) stage_used_ = 0;
  if (after_flush_) return after_flush_();
  return absl::OkStatus();
}

template <typename F>
absl::Status PageSender::AddWithRoom(F&& add) {
  absl::Status s = add();
  if (absl::IsResourceExhausted(s)) {
    RETURN_IF_ERROR(FlushBatch(/*keep_stage=*/true));
    s = add();
  }
  return s;
}

absl::Status PageSender::AddBlock(const RamBlock& b) {
  wire::BlockAdd a;
  a.block_id = b.id;
  wire::BlockKind kind = wire::BlockKind::kAnonymous;
  switch (KindOf(b)) {
    case RamBlockKind::kHeap:
      kind = wire::BlockKind::kHeap;
      break;
    case RamBlockKind::kStack:
      kind = wire::BlockKind::kStack;
      break;
    case RamBlockKind::kFilePrivate:
      kind = wire::BlockKind::kFilePrivate;
      break;
    case RamBlockKind::kAnonymous:
      break;
  }
  a.flags = wire::MakeBlockFlags(static_cast<uint32_t>(b.prot) & wire::kBlockProtMask, kind);
  a.start = b.start;
  a.length = b.length;
  a.page_count = b.page_count();
  // The wire allows 255 readable bytes; long or odd names are cut (the VMA list keeps the path).
  std::string_view name = b.name;
  if (name.size() > wire::kMaxBlockName) name = name.substr(name.size() - wire::kMaxBlockName);
  if (name.empty() || !wire::IsReadableText(name)) name = "block";
  a.name = name;
  RETURN_IF_ERROR(NewTable(b.id, b.page_count()));
  return AddWithRoom([&] { return writers_[0]->AddBlockAdd(a); });
}

absl::Status PageSender::RemoveBlock(uint32_t id) {
  // Runs of this block may still be on their way on another channel in this iteration.
  RETURN_IF_ERROR(BarrierIfSpread());
  if (cache_) cache_->EraseBlock(id);
  DropTable(id);
  return AddWithRoom([&] { return writers_[0]->AddBlockRemove(wire::BlockRemove{id}); });
}

absl::Status PageSender::ResizeBlock(const RamBlock& b) {
  RETURN_IF_ERROR(BarrierIfSpread());  // (a shrink would cut off runs still on their way)
  if (cache_) cache_->EraseBlock(b.id);
  // The whole block is sent again after a resize, so the old crcs need not be kept.
  RETURN_IF_ERROR(NewTable(b.id, b.page_count()));
  wire::BlockResize r{b.id, b.length, b.page_count()};
  return AddWithRoom([&] { return writers_[0]->AddBlockResize(r); });
}

absl::Status PageSender::SendPages(const RamBlock& b, uint64_t first, uint64_t count, bool live) {
  return SendPages(b.id, b.start, first, count, live);
}

absl::Status PageSender::SendPages(uint32_t id, uintptr_t start, uint64_t first, uint64_t count,
                                   bool live) {
  while (count > 0) {
    // Runs never cross a 1024-page chunk: a chunk's pages all travel on one channel.
    const uint64_t chunk_end = (first / wire::kMaxPagesPerRun + 1) * wire::kMaxPagesPerRun;
    uint64_t n = std::min<uint64_t>(count, chunk_end - first);
    // XBZRLE deltas and zlib streams lie apart in the staging area: one iovec each, and a batch
    // holds at most 1024 (a full run of them could never fit). Half runs always do.
    if (cache_ || inline_z_) n = std::min<uint64_t>(n, wire::kMaxPagesPerRun / 2);
    RETURN_IF_ERROR(SendRun(id, start, first, n, live, ChannelOf(id, first)));
    first += n;
    count -= n;
  }
  return absl::OkStatus();
}

absl::Status PageSender::SendScanned(uint32_t id, uintptr_t start, uint64_t first, uint64_t count,
                                     const uint64_t* zero, uint64_t zero_first) {
  scanned_ = zero;
  scanned_base_ = start + zero_first * page_size_;
  absl::Status s = SendPages(id, start, first, count, /*live=*/true);
  scanned_ = nullptr;
  return s;
}

uint64_t PageSender::ScannedRun(uintptr_t addr, uint64_t max, bool zero) const {
  const uint64_t bit = (addr - scanned_base_) / page_size_;
  uint64_t n = 0;
  while (n < max) {
    const uint64_t b = bit + n;
    const uint64_t word = zero ? scanned_[b / 64] : ~scanned_[b / 64];
    if (b % 64 == 0 && word == ~uint64_t{0} && n + 64 <= max) {
      n += 64;  // a whole word of them
      continue;
    }
    if (((word >> (b % 64)) & 1) == 0) break;
    ++n;
  }
  return n;
}

absl::Status PageSender::SendUnpopulated(uint32_t id, uintptr_t start, uint64_t first,
                                         uint64_t count) {
  if (!config_.zero_runs) return SendPages(id, start, first, count, /*live=*/true);
  auto table = tables_.find(id);
  uint32_t* crcs = table == tables_.end() ? nullptr : table->second.crcs;
  const size_t table_pages = table == tables_.end() ? 0 : table->second.pages;
  while (count > 0) {
    // One record per 1024-page chunk, on the chunk's channel (as EmitRun's zero runs).
    const uint64_t chunk_end = (first / wire::kMaxPagesPerRun + 1) * wire::kMaxPagesPerRun;
    const uint64_t n = std::min<uint64_t>(count, chunk_end - first);
    const size_t channel = ChannelOf(id, first);
    wire::StreamWriter* w = writers_[channel].get();
    const wire::ZeroRun z{id, static_cast<uint32_t>(n), first};
    RETURN_IF_ERROR(AddWithRoom([&] { return w->AddZeroRun(z); }));
    if (channel != 0) spread_ = true;
    for (uint64_t p = first; p < first + n; ++p)
      NoteZero(id, p, p < table_pages ? &crcs[p] : nullptr);
    counters_.zero_run_pages += n;
    counters_.unread_zero_pages += n;
    counters_.pages += n;
    iter_pages_ += n;
    first += n;
    count -= n;
    if (BatchBytes() >= config_.flush_bytes) RETURN_IF_ERROR(Flush());
  }
  return absl::OkStatus();
}

void PageSender::NoteZero(uint32_t id, uint64_t page, uint32_t* crc_slot) {
  if (crc_slot != nullptr) *crc_slot = zero_crc_;
  ++counters_.zero_pages;
  ++iter_zero_;
  // The receiver now holds zeros: keep a cached copy honest.
  if (cache_) {
    if (uint8_t* old = cache_->Lookup(id, page, iter_gen_)) std::memset(old, 0, page_size_);
  }
}

absl::StatusOr<uint8_t*> PageSender::Stage() {
  if (stage_used_ + page_size_ > stage_size_) {
    return absl::InternalError("page sender: staging area overrun");
  }
  uint8_t* p = stage_base_ + stage_used_;
  stage_used_ += page_size_;
  return p;
}

size_t PageSender::ReadStaged(uintptr_t addr, uint64_t count, uint8_t* out) {
  iovec local{out, count * page_size_};
  iovec remote{reinterpret_cast<void*>(addr), count * page_size_};
  // getpid() each time: the final phase runs in a task of its own (a frozen copy made by a raw
  // fork reads its own memory, not its parent's).
  ssize_t n = process_vm_readv(static_cast<pid_t>(syscall(SYS_getpid)), &local, 1, &remote, 1, 0);
  if (n < 0) return 0;
  return static_cast<size_t>(n) / page_size_;
}

uint64_t PageSender::CountUnsentChanges(uint32_t id, uintptr_t start, uint64_t pages,
                                        std::span<const AddressRange> skip, uint64_t* first) {
  auto skipped = [&](uintptr_t a) {
    for (const AddressRange& r : skip) {
      if (a + page_size_ > r.start && a < r.end) return true;
    }
    return false;
  };
  auto table = tables_.find(id);
  const uint32_t* crcs = table == tables_.end() ? nullptr : table->second.crcs;
  const uint64_t known = table == tables_.end() ? 0 : table->second.pages;
  const uint64_t per_read = std::max<uint64_t>(1, stage_size_ / page_size_);
  uint64_t changed = 0;
  for (uint64_t p = 0; p < pages;) {
    const uint64_t n = std::min(per_read, pages - p);
    const uint64_t got = ReadStaged(start + p * page_size_, n, stage_base_);
    for (uint64_t i = 0; i < n; ++i) {
      if (skipped(start + (p + i) * page_size_)) continue;
      const bool same = i < got && p + i < known &&
                        crc32c::Value(stage_base_ + i * page_size_, page_size_) == crcs[p + i];
      if (!same && changed++ == 0) *first = p + i;
    }
    p += n;
  }
  return changed;
}

uint64_t PageSender::StageRun(uintptr_t addr, uint64_t count, bool live) {
  // Pages are read a slice at a time and only the non-zero ones keep their place in the staging
  // area; the next slice is read over the zero ones. A stretch of zero pages is thus read into
  // the same 512 KiB again and again, which stays in the cache (1 MiB L2 here), instead of
  // streaming through megabytes of cold staging memory that would only be thrown away. Reads
  // grow to a whole run while no zero page shows up, so random content costs no extra syscalls
  // after the first few slices.
  //
  // While the program runs, memory is read in place under a ScanWindow (os/fault_guard.h: a
  // fault there, from memory the program unmapped meanwhile, ends the in-place read instead of
  // the program, and process_vm_readv then says how much is left): stretches of zero pages are
  // looked for at the speed of reading memory, and the pages with data copied and checksummed in
  // one pass (crc32c::CopyValue: 57 ms per GiB here, against 68 for memcpy and then the crc, and
  // about three times as fast as process_vm_readv, which pins each page). A page seen all zero in
  // place is as good as one seen in a copy: the tracker re-protected it before, so a write since
  // re-dirties it. The frozen copy of the final phase reads with process_vm_readv only: it is
  // what the destination resumes, and its memory (the agent's .bss included) must not hold a
  // window that was open when it was read.
  uint8_t* const base = stage_base_ + stage_used_;
  uint8_t* keep = base;  // where the next non-zero page goes
  uint64_t done = 0;
  std::optional<ScanWindow> window;
  if (live && count >= kMinInPlacePages) window.emplace();
  bool in_place = window.has_value() && window->open();
  while (done < count) {
    if (in_place) {
      const uintptr_t at = addr + done * page_size_;
      const std::optional<uint64_t> zeros =
          scanned_ != nullptr ? ScannedRun(at, count - done, true)
                              : window->LeadingZeroPages(at, count - done, page_size_, IsZeroPage);
      if (!zeros.has_value()) {
        in_place = false;  // the copy below finds out how much of the memory is left
      } else if (*zeros > 0) {
        for (uint64_t k = done; k < done + *zeros; ++k) {
          entries_[k] = wire::PageEntry{};
          entries_[k].encoding = wire::PageEncoding::kZero;
        }
        done += *zeros;
        read_pages_ = min_read_pages_;
        if (done == count) break;
      }
    }
    uint64_t n = std::min<uint64_t>(read_pages_, count - done);
    // Scanned: copy up to the next page the scan found zero (there is one at most n pages on).
    if (in_place && scanned_ != nullptr) {
      n = std::max<uint64_t>(1, ScannedRun(addr + done * page_size_, n, false));
    }
    size_t got = 0;
    if (in_place) {
      bool faulted = false;
      got = window->CopyPages(addr + done * page_size_, n, page_size_, keep, &faulted,
                              copy_crcs_.get());
      if (faulted) in_place = false;  // the copy below finds out how much of the memory is left
    }
    const size_t fused = got;  // pages whose crc the in-place copy computed as it copied
    if (got < n)
      got += ReadStaged(addr + (done + got) * page_size_, n - got, keep + got * page_size_);
    bool zero_seen = false;
    uint8_t* next = keep;
    for (size_t k = 0; k < got; ++k) {
      const uint8_t* p = keep + k * page_size_;
      wire::PageEntry& e = entries_[done + k];
      e = wire::PageEntry{};
      if (IsZeroPage(p, page_size_)) {
        e.encoding = wire::PageEncoding::kZero;
        zero_seen = true;
        continue;
      }
      // The page's one crc (the crc table, the wire descriptor, XBZRLE and zlib pages all use
      // it): the in-place copy's own, or computed while the slice is still in the cache.
      e.page_crc = k < fused ? copy_crcs_[k] : crc32c::Value(p, page_size_);
      e.crc_known = true;
      if (p != next) std::memcpy(next, p, page_size_);  // next <= p - page_size: no overlap
      e.encoding = wire::PageEncoding::kRaw;
      e.data = {next, page_size_};
      next += page_size_;
    }
    keep = next;
    done += got;
    read_pages_ =
        zero_seen ? min_read_pages_ : std::min<uint64_t>(2 * read_pages_, max_read_pages_);
    if (got < n) break;  // the memory went away
  }
  stage_used_ += static_cast<size_t>(keep - base);
  return done;
}

absl::Status PageSender::SendRun(uint32_t id, uintptr_t start, uint64_t first, uint64_t count,
                                 bool live, size_t channel) {
  // Memory is copied into the staging area (StageRun: in place under a fault guard, or with
  // process_vm_readv): a region the program unmaps meanwhile (free() of a large chunk does so
  // behind any interposer) gives a short read instead of a SIGSEGV in the agent thread, and the
  // copy cannot change before it is sent (the agent's own heap pages do change, also in the
  // final phase), so the run is not "live" on the wire and its crcs always hold. `live` says
  // whether the program may be running.
  auto table = tables_.find(id);
  uint32_t* crcs = table == tables_.end() ? nullptr : table->second.crcs;
  const size_t table_pages = table == tables_.end() ? 0 : table->second.pages;
  const size_t need = count + (cache_ ? 2 * count : 0) + (inline_z_ ? count : 0);
  if (stage_used_ + need * page_size_ > stage_size_) RETURN_IF_ERROR(Flush());
  const uint64_t got = StageRun(start + first * page_size_, count, live);
  if (got < count) {
    ++read_faults_;
    fault_block_ = id;
    if (got == 0) return absl::OkStatus();
    count = got;
  }
  const uint64_t generation = iter_gen_;
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t page = first + i;
    wire::PageEntry& e = entries_[i];  // classified by StageRun
    uint32_t* slot = page < table_pages ? &crcs[page] : nullptr;
    if (e.encoding == wire::PageEncoding::kZero) {
      // A zero page needs no crc on the wire: it was read from a copy made after the tracker
      // re-protected it, so a write since then has re-dirtied it and it is sent again later.
      NoteZero(id, page, slot);
      continue;
    }
    const uint8_t* mem = e.data.data();
    ++counters_.normal_pages;
    if (slot != nullptr) *slot = e.page_crc;  // (StageRun's)
    if (!cache_) continue;
    uint8_t* old = cache_->Lookup(id, page, generation);
    if (old == nullptr) {
      ++counters_.xbzrle_cache_misses;
      cache_->Insert(id, page, mem, generation);
      continue;
    }
    ASSIGN_OR_RETURN(uint8_t * delta, Stage());
    std::optional<size_t> n = xbzrle::Encode(old, mem, page_size_, delta, page_size_ / 2);
    std::memcpy(old, mem, page_size_);
    if (n.has_value() && *n > 0) {
      e.encoding = wire::PageEncoding::kXbzrle;
      e.data = {delta, *n};  // e.page_crc: the page's, as the receiver checks after decoding
      --counters_.normal_pages;
      ++counters_.xbzrle_pages;
      counters_.xbzrle_bytes += *n;
    } else if (!n.has_value()) {
      ++counters_.xbzrle_overflows;
    }
    // An unchanged page (delta 0) is still sent raw: the tracker said it was written.
  }
  if (inline_z_) RETURN_IF_ERROR(CompressRun(count, live, channel));
  RETURN_IF_ERROR(EmitRun(id, first, count, channel));
  if (channel != 0) spread_ = true;
  counters_.pages += count;
  iter_pages_ += count;
  const size_t batch = BatchBytes();
  if (batch >= config_.flush_bytes || (starved_ && batch >= kEagerFlushBytes)) {
    RETURN_IF_ERROR(Flush());
  }
  return absl::OkStatus();
}

absl::Status PageSender::EmitRun(uint32_t id, uint64_t first, uint64_t count, size_t channel) {
  wire::StreamWriter* w = writers_[channel].get();
  auto page_run = [&](uint64_t from, uint64_t to) -> absl::Status {
    if (from == to) return absl::OkStatus();
    std::span<const wire::PageEntry> run(entries_.get() + from, to - from);
    return AddWithRoom([&] { return w->AddPageRun(id, first + from, run, false); });
  };
  if (!config_.zero_runs) return page_run(0, count);
  // A zero page inside a page_run costs its 12-byte descriptor. A zero_run record costs 28 bytes
  // (12 header + 16 payload) whatever its length, and one in the middle of the run also splits
  // it, which costs another 28 (the second page_run's header). So a stretch of k zero pages
  // becomes a zero_run when 12k > 28 at either end of the run (k >= 3) and when 12k > 56 inside
  // it (k >= 5); shorter stretches stay inline, where they also cost the receiver no extra
  // record. Zero pages with nothing else left to send (i == pending, j == count) always go as
  // a zero_run: inline they would need a page_run of their own, 28 + 12k bytes. Zero runs never
  // cross the 1024-page chunk (SendPages), so every page still travels on its chunk's channel; one
  // 28-byte record per all-zero 4 MiB chunk is 0.0007% of it.
  constexpr uint64_t kRecordCost = wire::kRecordHeaderSize + wire::kZeroRunSize;
  uint64_t pending = 0;  // first entry not sent yet
  uint64_t i = 0;
  while (i < count) {
    if (entries_[i].encoding != wire::PageEncoding::kZero) {
      ++i;
      continue;
    }
    uint64_t j = i;
    while (j < count && entries_[j].encoding == wire::PageEncoding::kZero) ++j;
    const bool alone = i == pending && j == count;
    const bool edge = i == pending || j == count;  // no page_run would be split around it
    const uint64_t inline_cost = (j - i) * wire::kPageDescriptorSize;
    if (alone || inline_cost > (edge ? kRecordCost : 2 * kRecordCost)) {
      RETURN_IF_ERROR(page_run(pending, i));
      wire::ZeroRun z{id, static_cast<uint32_t>(j - i), first + i};
      RETURN_IF_ERROR(AddWithRoom([&] { return w->AddZeroRun(z); }));
      counters_.zero_run_pages += j - i;
      pending = j;
    }
    i = j;
  }
  return page_run(pending, count);
}

absl::Status PageSender::UseZlib(wire::PageEntry& e, const uint8_t* z, size_t size) {
  if (size >= page_size_) return absl::OkStatus();  // incompressible: stays raw
  ASSIGN_OR_RETURN(uint8_t * slot, Stage());
  std::memcpy(slot, z, size);
  // e.page_crc is the raw page's (StageRun), as the receiver checks after inflating.
  e.encoding = wire::PageEncoding::kZlib;
  e.data = {slot, size};
  --counters_.normal_pages;
  ++counters_.compressed_pages;
  counters_.compressed_bytes += size;
  return absl::OkStatus();
}

absl::StatusOr<bool> PageSender::LinkStarved(size_t channel) {
  if (!config_.compress_adaptive || (rate_limited_ && !limiter_.unlimited())) return false;
  const std::optional<Channel::SendQueue> q = channels_[channel]->PendingSend();
  if (!q.has_value() || q->unsent >= q->buffer / 4) return false;
  // The link runs low. What the batch holds goes out first (the staged pages of this run stay);
  // only when that is little has the compressor fallen behind the link.
  if (BatchBytes() >= kEagerFlushBytes) {
    RETURN_IF_ERROR(FlushBatch(/*keep_stage=*/true));
    return false;
  }
  return true;
}

absl::Status PageSender::CompressRun(uint64_t count, bool live, size_t channel) {
  // The pages are staged copies: they cannot change while the workers read them.
  uint32_t n = 0;
  for (uint64_t i = 0; i < count; ++i) {
    if (entries_[i].encoding == wire::PageEncoding::kRaw) z_index_[n++] = static_cast<uint32_t>(i);
  }
  starved_ = false;
  // Pages z_index_[limit, n) stay raw: the link asked for them before the compressor got there.
  uint32_t limit = n;
  auto starve_from = [&](uint32_t k) {
    counters_.compress_skipped_pages += limit - k;
    limit = k;
    starved_ = true;
  };
  if (!live || !pool_) {
    // The final phase (its own task; the workers may not run in a frozen copy), or after
    // Quiesce(): compress here, with no allocation.
    for (uint32_t k = 0; k < limit; ++k) {
      ASSIGN_OR_RETURN(const bool starved, LinkStarved(channel));
      if (starved) {
        starve_from(k);
        break;
      }
      wire::PageEntry& e = entries_[z_index_[k]];
      ASSIGN_OR_RETURN(size_t size, inline_z_->Compress(e.data.data(), e.data.size(),
                                                        z_scratch_.get(), z_scratch_size_));
      RETURN_IF_ERROR(UseZlib(e, z_scratch_.get(), size));
    }
    return absl::OkStatus();
  }
  uint32_t submitted = 0;
  for (uint32_t collected = 0; collected < limit; ++collected) {
    while (submitted < limit && !pool_->Full()) {
      ASSIGN_OR_RETURN(const bool starved, LinkStarved(channel));
      if (starved) {
        starve_from(submitted);
        break;
      }
      const wire::PageEntry& e = entries_[z_index_[submitted]];
      RETURN_IF_ERROR(pool_->Submit(e.data.data(), e.data.size()).status());
      ++submitted;
    }
    if (collected == limit) break;
    ASSIGN_OR_RETURN(CompressPool::Result r, pool_->Collect());
    RETURN_IF_ERROR(UseZlib(entries_[z_index_[collected]], r.data, r.size));
  }
  return absl::OkStatus();
}

absl::Status PageSender::AddMarkers(const wire::IterationMarker& m) {
  for (auto& w : writers_) {
    wire::StreamWriter* writer = w.get();
    RETURN_IF_ERROR(AddWithRoom([&] { return writer->AddIteration(m); }));
  }
  ++wire_iteration_;
  spread_ = false;
  // With several channels the markers are a barrier at the receiver: nothing of the next
  // iteration may sit behind a marker in a batch while another channel's marker is unsent.
  if (writers_.size() > 1) RETURN_IF_ERROR(Flush());
  return absl::OkStatus();
}

absl::Status PageSender::BarrierIfSpread() {
  if (!spread_) return absl::OkStatus();
  wire::IterationMarker m;
  m.iteration = wire_iteration_;
  return AddMarkers(m);
}

absl::Status PageSender::EndIteration(uint64_t iteration, uint64_t dirty_pages,
                                      uint64_t duration_ns, bool final) {
  (void)iteration;  // the wire numbers markers itself (barriers are markers too)
  wire::IterationMarker m;
  m.iteration = wire_iteration_;
  m.pages_sent = iter_pages_;
  m.zero_pages = iter_zero_;
  m.bytes_sent = counters_.bytes_out + BatchBytes() - iter_bytes_start_;
  m.dirty_pages = dirty_pages;
  m.duration_ns = duration_ns;
  m.final = final;
  RETURN_IF_ERROR(AddMarkers(m));
  iter_pages_ = iter_zero_ = 0;
  iter_bytes_start_ = counters_.bytes_out + BatchBytes();
  ++iter_gen_;
  return absl::OkStatus();
}

absl::Status PageSender::AddProcessState(std::span<const uint8_t> state) {
  return AddWithRoom([&] { return writers_[0]->AddProcessState(state); });
}

absl::Status PageSender::AddRestoreCheck(std::span<const uint8_t> check) {
  return AddWithRoom([&] { return writers_[0]->AddRestoreCheck(check); });
}

absl::Status PageSender::AddEndOfStream(bool aborted) {
  for (auto& w : writers_) {
    wire::StreamWriter* writer = w.get();
    if (writer->ended()) continue;
    RETURN_IF_ERROR(AddWithRoom([&] { return writer->AddEndOfStream(aborted); }));
  }
  return absl::OkStatus();
}

}  // namespace procmig
