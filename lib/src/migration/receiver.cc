#include "migration/receiver.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/crc32c.h"
#include "base/status_macros.h"
#include "codec/xbzrle.h"
#include "codec/zlib_codec.h"
#include "migration/file_run_writer.h"

namespace procmig {
namespace {

// Population ahead of the data: 2 MiB pieces (one huge page at a time), up to 64 MiB ahead of
// the piece that receives data (at the loopback rate, 30-40 ms of stream).
constexpr uint64_t kPopulatePiece = 2u << 20;
constexpr uint64_t kPopulateAheadPieces = (64u << 20) / kPopulatePiece;

// Split page runs (a live receive): raw stretches of at least this many bytes are read from the
// socket straight into the block, at most kDirectReadBytes a read, so each piece's crc is
// computed while the kernel's copy is still in the cache (1 MiB of L2 here). Shorter stretches
// and encoded pages go through the channel's staging buffer (kStageBytes a read): a read per
// short stretch would cost more syscalls than the copy it saves.
constexpr size_t kMinDirectBytes = 64u << 10;
constexpr size_t kDirectReadBytes = 256u << 10;
constexpr size_t kStageBytes = 1u << 20;
// The read after a run's page data came straight from the socket: enough for the next run's
// header and all 1024 descriptors (12,316 bytes) and a little more, so the next run's payload is
// mostly read in place again rather than into the caller's buffer.
constexpr size_t kHeadReadBytes = 16u << 10;

uint64_t PieceCount(uint64_t pages, uint32_t page_size) {
  const uint64_t per = kPopulatePiece / page_size;
  return (pages + per - 1) / per;
}

std::unique_ptr<std::atomic<uint8_t>[]> NewPieces(uint64_t n) {
  return std::unique_ptr<std::atomic<uint8_t>[]>(new std::atomic<uint8_t>[n == 0 ? 1 : n]());
}

absl::Status WithPrefix(const absl::Status& s, absl::string_view prefix) {
  return absl::Status(s.code(), absl::StrCat(prefix, s.message()));
}

// The wire's error record takes readable text of at most kMaxErrorMessage bytes.
std::string ReadableMessage(absl::string_view m) {
  std::string out(m.substr(0, wire::kMaxErrorMessage));
  for (char& ch : out) {
    auto u = static_cast<unsigned char>(ch);
    if (u < 0x20 || u == 0x7f) ch = '?';
  }
  if (out.empty()) out = "failed";
  return out;
}

bool Allowed(Receiver::State from, Receiver::State to) {
  using S = Receiver::State;
  switch (from) {
    case S::kAwaitingPreamble:
      return to == S::kReceiving || to == S::kFailed;
    case S::kReceiving:
      return to == S::kEnded || to == S::kFailed;
    case S::kEnded:
      return to == S::kAcked || to == S::kFailed;
    case S::kAcked:
    case S::kFailed:
      return false;
  }
  return false;
}

}  // namespace

struct Receiver::ChannelState {
  // Torn pages are tracked across channels by the receiver (torn_), not per stream: a page torn
  // on one channel may be resent on another.
  explicit ChannelState(bool split_page_runs)
      : reader(wire::ReaderOptions{.direction = wire::Direction::kForward,
                                   .track_torn = false,
                                   .split_page_runs = split_page_runs}) {}
  wire::StreamReader reader;
  // The open split page run: the reader's record (valid until its next Next()).
  const wire::PageRun* split_run = nullptr;
  std::vector<uint8_t> stage;    // payload read from the channel for the reader (kStageBytes)
  std::vector<uint8_t> encoded;  // an encoded page cut between two pieces, as it arrives
  bool read_direct = false;      // the last Feed read page data from the channel in place
  std::unique_ptr<ZlibDecompressor> zlib;
  std::unique_ptr<FileRunWriter> file_writer;  // made for the first page bound for a file
  uint64_t iterations = 0;                     // iteration records read
  ReceiveStats stats;                          // bytes is kept in `bytes`
  std::atomic<uint64_t> bytes{0};
};

const char* Receiver::StateName(State s) {
  switch (s) {
    case State::kAwaitingPreamble:
      return "awaiting-preamble";
    case State::kReceiving:
      return "receiving";
    case State::kEnded:
      return "ended";
    case State::kAcked:
      return "acked";
    case State::kFailed:
      return "failed";
  }
  return "unknown";
}

Receiver::Receiver(size_t channel_count, ReceiverOptions options, Channel* reverse)
    : channel_count_(channel_count),
      options_(std::move(options)),
      reverse_(reverse),
      arrived_(channel_count, 0),
      ended_(channel_count, false) {
  // A checkpoint receive writes pages to block files from the record (FileRunWriter): buffered.
  const bool split = !options_.block_file;
  for (size_t i = 0; i < channel_count; ++i) {
    channels_.push_back(std::make_unique<ChannelState>(split));
  }
}

Receiver::~Receiver() { StopPopulate(); }

absl::Status Receiver::TransitionTo(State next) {
  if (!Allowed(state_, next)) {
    return absl::InternalError(
        absl::StrCat("receiver: illegal transition ", StateName(state_), " -> ", StateName(next)));
  }
  state_ = next;
  return absl::OkStatus();
}

Receiver::State Receiver::state() const {
  std::lock_guard<std::mutex> l(mu_);
  return state_;
}

absl::Status Receiver::FailedStatus() const {
  std::lock_guard<std::mutex> l(mu_);
  return error_.ok() ? absl::InternalError("receiver: failed without a status") : error_;
}

uint64_t Receiver::session_bytes() const {
  uint64_t n = 0;
  for (const auto& c : channels_) n += c->bytes.load(std::memory_order_relaxed);
  return n;
}

absl::StatusOr<bool> Receiver::Feed(size_t index, std::span<const uint8_t> bytes, Channel* source) {
  if (index >= channel_count_) {
    return Fail(absl::InternalError(absl::StrCat("receiver: no channel ", index)));
  }
  if (failed_.load()) return FailedStatus();
  ChannelState& c = *channels_[index];
  c.bytes.fetch_add(bytes.size(), std::memory_order_relaxed);
  c.read_direct = false;
  absl::Status s = c.reader.Feed(bytes);
  if (s.ok() && c.reader.split_open()) s = PlaceSplitRun(index, c, source);
  bool completed = false;
  while (s.ok()) {
    absl::StatusOr<const wire::Record*> r = c.reader.Next();
    if (!r.ok()) {
      s = r.status();
      break;
    }
    if (*r == nullptr) break;
    s = Apply(index, c, **r, &completed, source);
  }
  if (!s.ok()) return Fail(WithPrefix(s, absl::StrCat("receive channel ", index, ": ")));
  return completed;
}

size_t Receiver::NextReadSize(size_t index, size_t max) const {
  if (index >= channel_count_ || !channels_[index]->read_direct) return max;
  return std::min(max, kHeadReadBytes);
}

absl::Status Receiver::Apply(size_t index, ChannelState& c, const wire::Record& r, bool* completed,
                             Channel* source) {
  using wire::RecordType;
  switch (r.type) {
    case RecordType::kPreamble:
      RETURN_IF_ERROR(ApplyPreamble(index, std::get<wire::Preamble>(r.body)));
      if (std::get<wire::Preamble>(r.body).features & wire::kFeatureZlib) {
        ASSIGN_OR_RETURN(c.zlib, ZlibDecompressor::Create());
      }
      return absl::OkStatus();
    case RecordType::kBlockAdd:
      return ApplyBlockAdd(std::get<wire::BlockAdd>(r.body));
    case RecordType::kBlockRemove:
      RETURN_IF_ERROR(DrainFileWrites(c));
      return ApplyBlockRemove(std::get<wire::BlockRemove>(r.body));
    case RecordType::kBlockResize:
      RETURN_IF_ERROR(DrainFileWrites(c));
      return ApplyBlockResize(std::get<wire::BlockResize>(r.body));
    case RecordType::kPageRun:
      if (r.split) return StartSplitRun(index, c, std::get<wire::PageRun>(r.body), source);
      return ApplyRun(index, c, std::get<wire::PageRun>(r.body));
    case RecordType::kZeroRun:
      return ApplyZeroRun(index, c, std::get<wire::ZeroRun>(r.body));
    case RecordType::kIteration:
      // Every channel's writes are done before the barrier lets channel 0 remove or resize a
      // block file (a write still in flight could extend a shrunk file again).
      RETURN_IF_ERROR(DrainFileWrites(c));
      ++c.iterations;
      return Barrier(index, std::get<wire::IterationMarker>(r.body).iteration);
    case RecordType::kRestoreCheck: {
      bool checked = false;
      if (options_.check_restore) {
        absl::StatusOr<bool> verdict =
            options_.check_restore(std::get<wire::RestoreCheck>(r.body).data);
        // Fail() here, so the sender reads the reason itself, not behind a channel prefix.
        if (!verdict.ok()) return Fail(verdict.status());
        checked = *verdict;
      }
      return SendReverse([checked](wire::StreamWriter& w) {
        return w.AddAck(wire::Ack{wire::AckKind::kRestoreChecked, checked ? 1u : 0u});
      });
    }
    case RecordType::kProcessState: {
      auto data = std::get<wire::ProcessState>(r.body).data;
      process_state_.assign(data.begin(), data.end());
      return absl::OkStatus();
    }
    case RecordType::kEndOfStream: {
      if (std::get<wire::EndOfStream>(r.body).aborted) {
        return absl::UnavailableError("the sender aborted the migration (end_of_stream aborted)");
      }
      RETURN_IF_ERROR(DrainFileWrites(c));  // before the image is checked and synced
      {
        std::lock_guard<std::mutex> l(mu_);
        ended_[index] = true;
        *completed = ++ended_count_ == channel_count_;
      }
      cv_.notify_all();
      return absl::OkStatus();
    }
    default:
      return absl::InternalError(
          absl::StrCat("unexpected ", wire::RecordTypeName(r.type), " record"));
  }
}

absl::Status Receiver::ApplyPreamble(size_t index, const wire::Preamble& p) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (p.channel_index != index || p.channel_count != channel_count_) {
      return absl::DataLossError(absl::StrCat("preamble announces channel ", p.channel_index,
                                              " of ", p.channel_count, ", but arrived as channel ",
                                              index, " of ", channel_count_));
    }
    if (preamble_.has_value()) {
      if (p.session_id != preamble_->session_id || p.page_size != preamble_->page_size ||
          p.features != preamble_->features) {
        return absl::DataLossError(
            "preamble's session, page size or features differ from the other channels'");
      }
    } else {
      preamble_ = p;
      page_size_.store(p.page_size);
      if (options_.populate) {
        // 2 MiB pieces: one huge page at a time.
        populator_ = std::make_unique<BlockPopulator>(
            [this](uint32_t id, uint64_t first, uint64_t n) { return PopulateStep(id, first, n); },
            kPopulatePiece / p.page_size);
      }
      started_ = std::chrono::steady_clock::now();
      RETURN_IF_ERROR(TransitionTo(State::kReceiving));
    }
  }
  if (index != 0 || reverse_ == nullptr) return absl::OkStatus();
  wire::Preamble rp = p;
  rp.direction = wire::Direction::kReverse;
  rp.channel_index = 0;
  {
    std::lock_guard<std::mutex> l(reverse_mu_);
    absl::StatusOr<std::unique_ptr<wire::StreamWriter>> w = wire::StreamWriter::Create(rp);
    if (!w.ok()) return WithPrefix(w.status(), "start reverse stream: ");
    reverse_writer_ = std::move(*w);
  }
  return SendReverse([](wire::StreamWriter& w) {
    return w.AddAck(wire::Ack{wire::AckKind::kPreambleAccepted, 0});
  });
}

absl::Status Receiver::SendReverse(const std::function<absl::Status(wire::StreamWriter&)>& add) {
  std::lock_guard<std::mutex> l(reverse_mu_);
  if (reverse_writer_ == nullptr || reverse_writer_->ended()) return absl::OkStatus();
  if (!add(*reverse_writer_).ok()) return reverse_writer_->DescribeLastError();
  auto batch = reverse_writer_->batch();
  absl::Status s = reverse_->WriteV(batch.data(), batch.size());
  reverse_writer_->ClearBatch();
  if (!s.ok()) return WithPrefix(s, "write to the sender (reverse stream): ");
  return absl::OkStatus();
}

absl::Status Receiver::ApplyBlockAdd(const wire::BlockAdd& b) {
  std::unique_ptr<BlockMemory> mem;
  UniqueFd file;
  bool direct = false;
  if (options_.block_file) {
    std::array<uint8_t, 16> session{};
    {
      std::lock_guard<std::mutex> l(mu_);
      if (preamble_.has_value()) session = preamble_->session_id;
    }
    absl::StatusOr<UniqueFd> f = options_.block_file(session, b.block_id);
    if (!f.ok()) return WithPrefix(f.status(), "store image: ");
    file = std::move(*f);
    if (ftruncate(file.get(), static_cast<off_t>(b.length)) != 0) {
      return ErrnoStatus(absl::StrCat("store image: size block ", b.block_id, "'s file"), errno);
    }
    // O_DIRECT where the file system takes it (FileRunWriter).
    const int flags = fcntl(file.get(), F_GETFL);
    direct = flags >= 0 && fcntl(file.get(), F_SETFL, flags | O_DIRECT) == 0;
    ASSIGN_OR_RETURN(mem, BlockMemory::CreateUnmapped(b.length, page_size_.load()));
  } else {
    // Received at the final address where a restorer moves the block into place (when free
    // here).
    ASSIGN_OR_RETURN(
        mem, BlockMemory::Create(b.length, page_size_.load(), BlockMapHint(b.flags, b.start),
                                 BlockGrowsDown(b.flags)));
  }
  {
    std::unique_lock<std::shared_mutex> l(blocks_mu_);
    BlockEntry& e = blocks_[b.block_id];
    e.id = b.block_id;
    e.flags = b.flags;
    e.start = b.start;
    e.name = std::string(b.name);
    e.memory = std::move(mem);
    e.file = std::move(file);
    e.direct = direct;
    e.piece_count = PieceCount(b.page_count, page_size_.load());
    e.pieces = NewPieces(e.piece_count);
    StartMirror(e);
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    ++table_version_;
  }
  cv_.notify_all();
  // Not populated now: only once data arrives for it (PopulateAhead).
  return absl::OkStatus();
}

absl::Status Receiver::ApplyBlockRemove(const wire::BlockRemove& b) {
  {
    std::unique_lock<std::shared_mutex> l(blocks_mu_);
    auto it = blocks_.find(b.block_id);
    if (it != blocks_.end()) {
      StopMirror(it->second);
      blocks_.erase(it);
      if (options_.block_file_removed) options_.block_file_removed(b.block_id);
    }
  }
  std::lock_guard<std::mutex> l(mu_);
  absl::erase_if(torn_, [&](const auto& k) { return k.first == b.block_id; });
  torn_count_.store(torn_.size());
  return absl::OkStatus();
}

absl::Status Receiver::ApplyBlockResize(const wire::BlockResize& r) {
  uint64_t old_pages = 0;
  {
    std::unique_lock<std::shared_mutex> l(blocks_mu_);
    auto it = blocks_.find(r.block_id);
    if (it == blocks_.end()) {
      return absl::InternalError(absl::StrCat("resize of unknown block ", r.block_id));
    }
    old_pages = it->second.memory->page_count();
    StopMirror(it->second);
    RETURN_IF_ERROR(it->second.memory->Resize(r.new_length));
    // The file follows: a shrink cuts it (a regrown part reads as zero, as in memory).
    if (it->second.file.valid() &&
        ftruncate(it->second.file.get(), static_cast<off_t>(r.new_length)) != 0) {
      return ErrnoStatus(absl::StrCat("store image: resize block ", r.block_id, "'s file"), errno);
    }
    // Pieces wholly below both ends keep their flags; the rest start afresh (a shrink dropped
    // their pages, a grown part was never populated).
    BlockEntry& e = it->second;
    const uint32_t ps = page_size_.load();
    const uint64_t keep = std::min(old_pages, r.new_page_count) / (kPopulatePiece / ps);
    auto pieces = NewPieces(PieceCount(r.new_page_count, ps));
    for (uint64_t i = 0; i < keep && i < e.piece_count; ++i) {
      pieces[i].store(e.pieces[i].load(std::memory_order_relaxed), std::memory_order_relaxed);
    }
    e.pieces = std::move(pieces);
    e.piece_count = PieceCount(r.new_page_count, ps);
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    absl::erase_if(torn_, [&](const auto& k) {
      return k.first == r.block_id && k.second >= r.new_page_count;
    });
    torn_count_.store(torn_.size());
    ++table_version_;
  }
  cv_.notify_all();
  return absl::OkStatus();
}

absl::Status Receiver::WaitForBlock(size_t index, ChannelState& c, uint32_t block_id,
                                    uint64_t first_page, uint64_t count, const char* what) {
  const uint64_t end = first_page + count;
  for (;;) {
    uint64_t version;
    {
      std::lock_guard<std::mutex> l(mu_);
      version = table_version_;
    }
    {
      std::shared_lock<std::shared_mutex> l(blocks_mu_);
      auto it = blocks_.find(block_id);
      if (it != blocks_.end() && end <= it->second.memory->page_count()) return absl::OkStatus();
    }
    std::unique_lock<std::mutex> l(mu_);
    auto main_passed = [&] { return ended_[0] || arrived_[0] > c.iterations; };
    if (failed_.load()) return error_;
    if (main_passed()) {
      return absl::DataLossError(absl::StrCat(what, " for block ", block_id, " pages ", first_page,
                                              "..", end - 1, " in iteration ", c.iterations,
                                              ": the main channel did not announce that range"));
    }
    cv_.wait(l, [&] { return failed_.load() || table_version_ != version || main_passed(); });
    (void)index;
  }
}

absl::Status Receiver::ApplyRun(size_t index, ChannelState& c, const wire::PageRun& run) {
  if (index != 0) {
    RETURN_IF_ERROR(
        WaitForBlock(index, c, run.block_id, run.first_page, run.pages.size(), "page run"));
  }
  std::shared_lock<std::shared_mutex> l(blocks_mu_);
  ASSIGN_OR_RETURN(BlockEntry * block, RunBlock(run));
  BlockEntry& b = *block;
  if (b.file.valid()) RETURN_IF_ERROR(StartFileRun(c, b));
  for (size_t i = 0; i < run.pages.size(); ++i) {
    RETURN_IF_ERROR(ApplyPage(index, c, b, run.first_page + i, run.pages[i]));
  }
  // The raw pages' bits, a stretch at a time (ApplyPage marks the decoded ones itself).
  for (size_t i = 0; i < run.pages.size();) {
    size_t j = i;
    while (j < run.pages.size() && run.pages[j].encoding == wire::PageEncoding::kRaw &&
           !run.pages[j].torn) {
      ++j;
    }
    if (j > i) b.memory->MarkNonZero(run.first_page + i, j - i);
    i = j + 1;
  }
  // The raw pages queued point into the record, which the next Feed replaces.
  return b.file.valid() ? c.file_writer->Flush() : absl::OkStatus();
}

absl::StatusOr<Receiver::BlockEntry*> Receiver::RunBlock(const wire::PageRun& run) {
  auto it = blocks_.find(run.block_id);
  if (it == blocks_.end() || run.first_page + run.pages.size() > it->second.memory->page_count()) {
    return absl::DataLossError(absl::StrCat("page run for block ", run.block_id, " page ",
                                            run.first_page, " lies outside every live block"));
  }
  return &it->second;
}

absl::Status Receiver::StartSplitRun(size_t index, ChannelState& c, const wire::PageRun& run,
                                     Channel* source) {
  if (index != 0) {
    RETURN_IF_ERROR(
        WaitForBlock(index, c, run.block_id, run.first_page, run.pages.size(), "page run"));
  }
  {
    std::shared_lock<std::shared_mutex> l(blocks_mu_);
    ASSIGN_OR_RETURN(BlockEntry * b, RunBlock(run));
    if (b->file.valid()) return absl::InternalError("split page run for a block kept in a file");
    // Zero pages carry no payload: applied now.
    for (size_t i = 0; i < run.pages.size(); ++i) {
      if (run.pages[i].encoding != wire::PageEncoding::kZero) continue;
      RETURN_IF_ERROR(ApplyPage(index, c, *b, run.first_page + i, run.pages[i]));
    }
  }
  c.split_run = &run;
  return PlaceSplitRun(index, c, source);
}

absl::Status Receiver::PlaceSplitRun(size_t index, ChannelState& c, Channel* source) {
  const uint32_t ps = page_size_.load();
  const uint32_t min_direct_pages =
      static_cast<uint32_t>(std::max<size_t>(1, kMinDirectBytes / ps));
  while (std::optional<wire::PayloadSegment> seg = c.reader.NextSegment()) {
    std::span<const uint8_t> fed = c.reader.FedPayload();
    if (fed.empty()) {
      if (source == nullptr) return absl::OkStatus();  // the rest comes with the next Feed
      const size_t before = c.reader.PayloadBytesBefore(min_direct_pages);
      if (before > 0) {
        RETURN_IF_ERROR(StagePayload(c, std::min(before, kStageBytes), source));
        continue;
      }
    }
    if (seg->raw) {
      RETURN_IF_ERROR(PlaceRaw(c, *seg, fed, source));
    } else {
      RETURN_IF_ERROR(PlaceEncoded(index, c, *seg, fed));
    }
  }
  return absl::OkStatus();
}

absl::Status Receiver::StagePayload(ChannelState& c, size_t n, Channel* source) {
  // Not under the block lock: these bytes land in the channel's own buffer.
  if (c.stage.size() < kStageBytes) c.stage.resize(kStageBytes);
  size_t got = 0;
  while (got < n) {
    absl::StatusOr<size_t> r = source->ReadSome(c.stage.data() + got, n - got);
    if (!r.ok()) return WithPrefix(r.status(), "read page run payload: ");
    if (*r == 0) return c.reader.Finish();  // DataLoss: cut in the middle of the run
    got += *r;
  }
  c.bytes.fetch_add(got, std::memory_order_relaxed);
  return c.reader.Feed({c.stage.data(), got});
}

absl::Status Receiver::PlaceRaw(ChannelState& c, const wire::PayloadSegment& seg,
                                std::span<const uint8_t> fed, Channel* source) {
  const wire::PageRun& run = *c.split_run;
  const uint32_t ps = page_size_.load();
  // Fed bytes are copied; else read in place, up to a page boundary.
  const size_t want =
      !fed.empty() ? fed.size() : std::min(seg.remaining(), kDirectReadBytes - seg.placed % ps);
  const uint64_t from = seg.page + seg.placed / ps;  // run index of the first page touched
  // Locking: the bytes go into the block, so the shared block lock is held while they are
  // written, here across a blocking read of at most kDirectReadBytes. Channel 0 may then wait to
  // add, remove or resize a block until the read returns. That cannot deadlock: the bytes waited
  // for are the rest of a record whose header is here, a sender writes a record in one WriteV
  // (Channel's contract) that waits for nothing but this socket, and a failure or abort of the
  // session breaks the read (Channel::Abort). The lock is taken again for every read, and the
  // block looked up again: a resize on channel 0 between two reads may have moved the memory.
  std::shared_lock<std::shared_mutex> l(blocks_mu_);
  ASSIGN_OR_RETURN(BlockEntry * b, RunBlock(run));
  BlockMemory& m = *b->memory;
  const uint64_t touched_end = seg.page + (seg.placed + want + ps - 1) / ps;
  for (uint64_t k = from; k < touched_end; ++k) PopulateAhead(*b, run.first_page + k);
  uint8_t* dst = m.page(run.first_page + seg.page) + seg.placed;
  size_t got = want;
  if (!fed.empty()) {
    std::memcpy(dst, fed.data(), want);
  } else {
    absl::StatusOr<size_t> r = source->ReadSome(dst, want);
    if (!r.ok()) return WithPrefix(r.status(), "read page run payload: ");
    if (*r == 0) return c.reader.Finish();  // DataLoss: cut in the middle of the run
    got = *r;
    c.bytes.fetch_add(got, std::memory_order_relaxed);
    c.read_direct = true;
  }
  // Bytes are in these pages now, whatever their crcs turn out to be: a torn page's bytes must
  // be cleared by a later zero page, and ClearPage clears only pages marked as holding data.
  m.MarkNonZero(run.first_page + from, seg.page + (seg.placed + got + ps - 1) / ps - from);
  RETURN_IF_ERROR(c.reader.ConsumePayload(got));
  // The pages whose last byte just arrived, checked while they are in the cache.
  const uint64_t done = seg.page + (seg.placed + got) / ps;
  for (uint64_t k = from; k < done; ++k) {
    const uint64_t page = run.first_page + k;
    ASSIGN_OR_RETURN(bool torn, c.reader.CheckPage(static_cast<uint32_t>(k), {m.page(page), ps}));
    RawPagePlaced(c, *b, page, run.pages[k], torn);
  }
  return absl::OkStatus();
}

void Receiver::RawPagePlaced(ChannelState& c, BlockEntry& b, uint64_t page,
                             const wire::PageEntry& e, bool torn) {
  BlockMemory& m = *b.memory;
  if (torn) {
    // Unlike the buffered path, which drops a torn page before it reaches memory, its bytes are
    // in the page: its crc entry says what it holds now (its bit is set), so the bookkeeping
    // stays true until it is resent.
    m.SetPageCrc(page, crc32c::Value(m.page(page), m.page_size()));
    ++c.stats.torn_pages;
    NoteTorn(b.id, page, true);
    return;
  }
  m.SetPageCrc(page, e.page_crc);
  ++c.stats.raw_pages;
  PageApplied(c, b, page);
}

absl::Status Receiver::PlaceEncoded(size_t index, ChannelState& c, const wire::PayloadSegment& seg,
                                    std::span<const uint8_t> fed) {
  const wire::PageRun& run = *c.split_run;
  wire::PageEntry e = run.pages[seg.page];
  if (seg.placed == 0 && fed.size() == seg.length) {
    e.data = fed;  // all here: decoded from where it was read
  } else {
    if (c.encoded.size() < seg.length) c.encoded.resize(wire::kMaxPageSize);
    std::memcpy(c.encoded.data() + seg.placed, fed.data(), fed.size());
    e.data = {c.encoded.data(), seg.length};
  }
  if (seg.placed + fed.size() == seg.length) {
    std::shared_lock<std::shared_mutex> l(blocks_mu_);
    ASSIGN_OR_RETURN(BlockEntry * b, RunBlock(run));
    RETURN_IF_ERROR(ApplyPage(index, c, *b, run.first_page + seg.page, e));
  }
  return c.reader.ConsumePayload(fed.size());
}

absl::Status Receiver::DrainFileWrites(ChannelState& c) {
  return c.file_writer != nullptr ? c.file_writer->Drain() : absl::OkStatus();
}

absl::Status Receiver::StartFileRun(ChannelState& c, const BlockEntry& b) {
  if (c.file_writer == nullptr) c.file_writer = std::make_unique<FileRunWriter>(page_size_.load());
  return c.file_writer->Start(b.file.get(), absl::StrCat("block ", b.id, " (", b.name, ")"),
                              b.direct);
}

absl::Status Receiver::ApplyZeroRun(size_t index, ChannelState& c, const wire::ZeroRun& run) {
  if (index != 0) {
    RETURN_IF_ERROR(WaitForBlock(index, c, run.block_id, run.first_page, run.count, "zero run"));
  }
  const uint64_t end = run.first_page + run.count;  // no wrap: checked by the reader
  {
    std::shared_lock<std::shared_mutex> l(blocks_mu_);
    auto it = blocks_.find(run.block_id);
    if (it == blocks_.end() || end > it->second.memory->page_count()) {
      return absl::DataLossError(absl::StrCat("zero run for block ", run.block_id, " pages ",
                                              run.first_page, "..", end - 1,
                                              " lies outside every live block"));
    }
    // ClearPage writes only pages that may hold data (a memset each) and records the zero
    // page's crc; pages never written stay untouched, unpopulated memory.
    // A mirrored block's premapped file page may hold the file's bytes: zeroed there too.
    // A block kept in its file: zeros written where the file may hold data.
    BlockEntry& b = it->second;
    BlockMemory& m = *b.memory;
    if (b.file.valid()) RETURN_IF_ERROR(StartFileRun(c, b));
    for (uint64_t p = run.first_page; p < end; ++p) {
      if (m.ClearPage(p) && b.file.valid()) RETURN_IF_ERROR(c.file_writer->AddZero(p));
      if (m.mirror() != 0) MirrorPage(m, p);
    }
    if (b.file.valid()) RETURN_IF_ERROR(c.file_writer->Flush());
  }
  c.stats.zero_pages += run.count;
  c.stats.pages += run.count;
  if (torn_count_.load(std::memory_order_relaxed) != 0) {
    std::lock_guard<std::mutex> l(mu_);
    absl::erase_if(torn_, [&](const auto& k) {
      return k.first == run.block_id && k.second >= run.first_page && k.second < end;
    });
    torn_count_.store(torn_.size(), std::memory_order_relaxed);
  }
  return absl::OkStatus();
}

absl::Status Receiver::ApplyPage(size_t index, ChannelState& c, BlockEntry& b, uint64_t page,
                                 const wire::PageEntry& e) {
  (void)index;
  BlockMemory& m = *b.memory;
  const uint32_t ps = m.page_size();
  if (e.torn) {
    ++c.stats.torn_pages;
    NoteTorn(b.id, page, true);
    return absl::OkStatus();
  }
  // A block kept in its file (checkpoint receive): pages are queued there, decoded ones in
  // the writer's scratch slots; else they are decoded in place in memory.
  FileRunWriter* to_file = b.file.valid() ? c.file_writer.get() : nullptr;
  if (e.encoding != wire::PageEncoding::kZero && to_file == nullptr) PopulateAhead(b, page);
  uint8_t* dst = to_file != nullptr ? nullptr : m.page(page);
  auto where = [&] { return absl::StrCat("block ", b.id, " (", b.name, ") page ", page, ": "); };
  auto check_crc = [&](const char* how) -> absl::Status {
    uint32_t got = crc32c::Value(dst, ps);
    if (got == e.page_crc) return absl::OkStatus();
    return absl::DataLossError(
        absl::StrFormat("%scrc32c mismatch after %s decode (sent 0x%08x, decoded 0x%08x)", where(),
                        how, e.page_crc, got));
  };
  switch (e.encoding) {
    case wire::PageEncoding::kZero:
      // In a file, only where it may hold data: the rest is a hole already.
      if (m.ClearPage(page) && to_file != nullptr) RETURN_IF_ERROR(to_file->AddZero(page));
      ++c.stats.zero_pages;
      break;
    case wire::PageEncoding::kRaw:
      if (to_file != nullptr) {
        RETURN_IF_ERROR(to_file->Add(page, e.data.data()));
      } else {
        std::memcpy(dst, e.data.data(), ps);
      }
      ++c.stats.raw_pages;  // marked non-zero by ApplyRun, with the rest of its stretch
      break;
    case wire::PageEncoding::kXbzrle: {
      if (to_file != nullptr) {
        ASSIGN_OR_RETURN(dst, to_file->SlotHolding(page));
      }
      absl::Status s = xbzrle::Decode(e.data.data(), e.data.size(), dst, ps);
      if (!s.ok()) return WithPrefix(s, absl::StrCat(where(), "xbzrle: "));
      m.MarkNonZero(page);
      RETURN_IF_ERROR(check_crc("xbzrle"));
      ++c.stats.xbzrle_pages;
      break;
    }
    case wire::PageEncoding::kZlib: {
      if (c.zlib == nullptr) return absl::InternalError("zlib page without a decompressor");
      if (to_file != nullptr) {
        ASSIGN_OR_RETURN(dst, to_file->Slot(page));
      }
      m.MarkNonZero(page);
      absl::Status s = c.zlib->DecompressExact(e.data.data(), e.data.size(), dst, ps);
      if (!s.ok()) return WithPrefix(s, absl::StrCat(where(), "zlib: "));
      RETURN_IF_ERROR(check_crc("zlib"));
      ++c.stats.zlib_pages;
      break;
    }
  }
  // Raw pages were checked against this crc when decoded, xbzrle and zlib ones just above.
  if (e.encoding != wire::PageEncoding::kZero) m.SetPageCrc(page, e.page_crc);
  PageApplied(c, b, page);
  return absl::OkStatus();
}

void Receiver::PageApplied(ChannelState& c, BlockEntry& b, uint64_t page) {
  if (b.memory->mirror() != 0) MirrorPage(*b.memory, page);
  ++c.stats.pages;
  if (torn_count_.load(std::memory_order_relaxed) != 0) NoteTorn(b.id, page, false);
}

void Receiver::StartMirror(BlockEntry& e) {
  if (!options_.premapped || !options_.premap_stale || !RestorerCopiesBlock(e.flags)) return;
  if (!options_.premapped(e.start, e.memory->length())) return;
  if (!self_mem_.valid()) {
    self_mem_ = UniqueFd(open("/proc/self/mem", O_RDWR | O_CLOEXEC));
    if (!self_mem_.valid()) return;  // the restorer copies the block, as without a premap
  }
  e.memory->set_mirror(e.start);
  e.mirrored = true;
}

void Receiver::StopMirror(BlockEntry& e) {
  if (!e.mirrored) return;
  e.memory->DropMirror();
  e.mirrored = false;
  options_.premap_stale(e.start, e.memory->length());
}

void Receiver::MirrorPage(BlockMemory& m, uint64_t page) {
  const uint32_t ps = m.page_size();
  const uint64_t at = m.mirror() + page * ps;
  ssize_t n = pwrite(self_mem_.get(), m.page(page), ps, static_cast<off_t>(at));
  // Failed (a kernel that refuses forced writes through /proc/PID/mem): the restorer copies the
  // whole block over the mapping instead, so the pages written so far do not matter.
  if (n != static_cast<ssize_t>(ps)) m.DropMirror();
}

void Receiver::NoteTorn(uint32_t block, uint64_t page, bool torn) {
  std::lock_guard<std::mutex> l(mu_);
  if (torn) {
    torn_.insert({block, page});
  } else {
    torn_.erase({block, page});
  }
  torn_count_.store(torn_.size(), std::memory_order_relaxed);
}

absl::Status Receiver::Barrier(size_t index, uint64_t iteration) {
  std::unique_lock<std::mutex> l(mu_);
  arrived_[index] = iteration + 1;
  cv_.notify_all();
  cv_.wait(l, [&] {
    if (failed_.load()) return true;
    for (size_t i = 0; i < channel_count_; ++i) {
      if (!ended_[i] && arrived_[i] < iteration + 1) return false;
    }
    return true;
  });
  if (failed_.load()) return error_;
  return absl::OkStatus();
}

void Receiver::PopulateAhead(BlockEntry& b, uint64_t page) {
  if (populator_ == nullptr || b.piece_count == 0) return;
  const uint64_t per = kPopulatePiece / b.memory->page_size();
  const uint64_t k = page / per;
  if (k >= b.piece_count) return;
  std::atomic<uint8_t>* f = b.pieces.get();
  const uint64_t last = std::min(b.piece_count - 1, k + kPopulateAheadPieces);
  // Fast path (every page but one or two per piece): this piece and the window are flagged.
  if (f[last].load(std::memory_order_relaxed) != 0 && f[k].load(std::memory_order_relaxed) != 0) {
    return;
  }
  f[k].store(1, std::memory_order_relaxed);
  if (k == 0 || f[k - 1].load(std::memory_order_relaxed) == 0) return;  // a lone page
  // Queue the unflagged pieces of (k, last] as ranges; exchange() makes each channel thread
  // queue a piece at most once between them.
  uint64_t from = 0, n = 0;
  auto queue = [&] {
    if (n > 0) populator_->Queue(b.id, from * per, n * per);
    n = 0;
  };
  for (uint64_t j = k + 1; j <= last; ++j) {
    if (f[j].exchange(1, std::memory_order_relaxed) != 0) {
      queue();
      continue;
    }
    if (n == 0) from = j;
    ++n;
  }
  queue();
}

bool Receiver::PopulateStep(uint32_t block_id, uint64_t first_page, uint64_t count) {
  std::shared_lock<std::shared_mutex> l(blocks_mu_);
  auto it = blocks_.find(block_id);
  if (it == blocks_.end() || first_page >= it->second.memory->page_count()) return false;
  it->second.memory->Populate(first_page, count);
  return true;
}

void Receiver::WaitForPopulationForTest() {
  BlockPopulator* p;
  {
    std::lock_guard<std::mutex> l(mu_);
    p = populator_.get();
  }
  if (p != nullptr) p->WaitIdleForTest();
}

void Receiver::StopPopulate() {
  BlockPopulator* p;
  {
    std::lock_guard<std::mutex> l(mu_);
    p = populator_.get();
  }
  if (p != nullptr) p->Stop();
}

void Receiver::ChannelClosed(size_t index, const absl::Status& why) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (index >= channel_count_ || state_ == State::kFailed || state_ == State::kAcked ||
        ended_[index]) {
      return;
    }
  }
  absl::Status s = why.ok() ? channels_[index]->reader.Finish() : why;
  if (s.ok()) s = absl::DataLossError("closed before end_of_stream");
  (void)Fail(WithPrefix(s, absl::StrCat("receive channel ", index, ": ")));
}

absl::Status Receiver::Fail(absl::Status s) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (state_ == State::kFailed) return error_;
    if (!TransitionTo(State::kFailed).ok()) return s;  // already acked: too late to fail
    error_ = s;
    failed_.store(true);
  }
  cv_.notify_all();
  StopPopulate();
  std::string message = ReadableMessage(s.message());
  (void)SendReverse([&](wire::StreamWriter& w) {
    absl::Status a = w.AddError(wire::ErrorRecord{static_cast<uint32_t>(s.code()), message});
    return a.ok() ? w.AddEndOfStream(/*aborted=*/true) : a;
  });
  {
    std::lock_guard<std::mutex> l(mu_);
    failure_reported_ = true;
  }
  cv_.notify_all();
  return s;
}

void Receiver::AwaitFailureReported() {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [&] { return state_ != State::kFailed || failure_reported_; });
}

absl::StatusOr<ImageManifest> Receiver::Finish() {
  ImageManifest m;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (state_ != State::kReceiving || ended_count_ != channel_count_) {
      return absl::InternalError(absl::StrCat("receiver: Finish in state ", StateName(state_)));
    }
    m.page_size = preamble_->page_size;
    m.session_id = preamble_->session_id;
    m.channels = static_cast<uint32_t>(channel_count_);
    m.stats.duration_ms =
        static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::steady_clock::now() - started_)
                                  .count());
  }
  StopPopulate();
  if (torn_count_.load() != 0) {
    absl::Status torn;
    {
      std::lock_guard<std::mutex> l(mu_);
      const auto& k = *torn_.begin();
      torn = absl::DataLossError(absl::StrCat("receive: ", torn_.size(),
                                              " torn page(s) never resent (e.g. block ", k.first,
                                              " page ", k.second, ")"));
    }
    return Fail(torn);
  }
  for (size_t i = 0; i < channel_count_; ++i) {
    const ChannelState& c = *channels_[i];
    if (c.iterations != channels_[0]->iterations) {
      return Fail(absl::DataLossError(
          absl::StrCat("receive: channel ", i, " carried ", c.iterations,
                       " iteration records, the main channel ", channels_[0]->iterations)));
    }
    m.stats.pages += c.stats.pages;
    m.stats.zero_pages += c.stats.zero_pages;
    m.stats.raw_pages += c.stats.raw_pages;
    m.stats.xbzrle_pages += c.stats.xbzrle_pages;
    m.stats.zlib_pages += c.stats.zlib_pages;
    m.stats.torn_pages += c.stats.torn_pages;
  }
  m.stats.bytes = session_bytes();
  m.iterations = channels_[0]->iterations;
  m.process_state_length = process_state_.size();
  m.process_state_crc32c = crc32c::Value(process_state_.data(), process_state_.size());

  std::vector<ReceivedBlockView> views;
  {
    std::shared_lock<std::shared_mutex> l(blocks_mu_);
    for (const auto& [id, b] : blocks_) {
      ImageBlock ib;
      ib.id = id;
      ib.flags = b.flags;
      ib.start = b.start;
      ib.length = b.memory->length();
      ib.name = b.name;
      ib.crc32c = b.memory->ContentCrc();  // from the page crcs: no second pass over memory
      views.push_back({id, b.start, ib.length, b.memory->bytes(), ib.crc32c});
      m.blocks.push_back(std::move(ib));
    }
  }
  if (options_.verify_digests) {
    absl::StatusOr<std::vector<BlockDigestCheck>> checks =
        options_.verify_digests(process_state_, views);
    if (!checks.ok()) return Fail(WithPrefix(checks.status(), "verify block digests: "));
    for (const BlockDigestCheck& d : *checks) {
      auto it = std::find_if(m.blocks.begin(), m.blocks.end(),
                             [&](const ImageBlock& b) { return b.id == d.block_id; });
      if (it == m.blocks.end()) {
        return Fail(absl::DataLossError(
            absl::StrCat("verify block digests: the sender's digest names block ", d.block_id,
                         ", which is not live at the end of the stream")));
      }
      it->digest = d.state;
      it->sent_digest = d.sent;
      if (d.state == DigestState::kMismatch) {
        return Fail(absl::DataLossError(absl::StrCat(
            "verify block digests: block ", it->id, " (", it->name, ", ", it->length,
            " bytes at 0x", absl::Hex(it->start), "): content does not match the sent digest ",
            d.sent, " (received crc32c 0x", absl::Hex(it->crc32c), ")")));
      }
    }
  }
  std::lock_guard<std::mutex> l(mu_);
  if (state_ == State::kFailed) return error_;
  RETURN_IF_ERROR(TransitionTo(State::kEnded));
  return m;
}

std::vector<const BlockMemory*> Receiver::BlockMemories() const {
  std::shared_lock<std::shared_mutex> l(blocks_mu_);
  std::vector<const BlockMemory*> out;
  for (const auto& [id, b] : blocks_) out.push_back(b.memory.get());
  return out;
}

absl::Status Receiver::Ack() {
  uint64_t iterations = channels_[0]->iterations;
  absl::Status s = SendReverse([&](wire::StreamWriter& w) {
    absl::Status a = w.AddAck(wire::Ack{wire::AckKind::kEndOfStream, iterations});
    return a.ok() ? w.AddEndOfStream(/*aborted=*/false) : a;
  });
  if (!s.ok()) return Fail(s);
  if (reverse_ != nullptr) (void)reverse_->Shutdown();
  std::lock_guard<std::mutex> l(mu_);
  return TransitionTo(State::kAcked);
}

}  // namespace procmig
