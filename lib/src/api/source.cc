// MigrationSource: connects the public source API (procmig/source.h) to the sender of the
// migration module.
#include "procmig/source.h"

#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstring>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "dirty/tracker_probe.h"
#include "migration/freezer.h"
#include "migration/layout_source.h"
#include "migration/process_capture.h"
#include "migration/sender.h"
#include "transport/channel_factory.h"
#include "transport/channel_group.h"
#include "transport/endpoint.h"
#include "transport/posix_channel.h"

namespace procmig {

namespace {

static_assert(sizeof(ThreadParkContext) <= sizeof(ThreadContext) + 16);

// What the process holds that cannot migrate, descriptors (less the agent's `own`) and memory.
std::vector<std::string> Unsupported(const ProcessStateRecord& r, std::span<const int> own) {
  std::vector<std::string> why = FindUnsupported(r, own);
  for (std::string& m : FindUnsupportedMemory(r)) why.push_back(std::move(m));
  return why;
}

// The migration module's Freezer over the agent's SourceFreezer. Contexts are converted into a
// buffer sized before parking, so ParkedThreads() never allocates.
class FreezerAdapter : public Freezer {
 public:
  FreezerAdapter(SourceFreezer* f, DirtyTracker** tracker, Sender** sender)
      : f_(f), tracker_(tracker), sender_(sender) {
    contexts_.resize(kMaxThreads / 64);
    exempt_.reserve(256);
  }
  absl::Status Park(int timeout_ms) override {
    // The tracker's and the sender's own threads (uffd handler, compression workers) run on.
    // Filled within the capacity reserved above: no allocation.
    exempt_.clear();
    auto add = [&](std::span<const pid_t> tids) {
      for (pid_t t : tids) {
        if (exempt_.size() < exempt_.capacity()) exempt_.push_back(t);
      }
    };
    if (*tracker_ != nullptr) add((*tracker_)->OwnThreads());
    if (*sender_ != nullptr) add((*sender_)->OwnThreads());
    RETURN_IF_ERROR(f_->Park(timeout_ms, exempt_));
    std::span<const ThreadParkContext> in = f_->ParkedThreads();
    if (in.size() > contexts_.size()) {
      f_->Unpark();
      return absl::ResourceExhaustedError("park: more threads than the agent prepared for");
    }
    for (size_t i = 0; i < in.size(); ++i) {
      const ThreadParkContext& a = in[i];
      ThreadContext& b = contexts_[i];
      b.tid = a.tid;
      b.rbx = a.rbx, b.rbp = a.rbp, b.r12 = a.r12, b.r13 = a.r13, b.r14 = a.r14, b.r15 = a.r15;
      b.rsp = a.rsp, b.rip = a.rip, b.fs_base = a.fs_base, b.gs_base = a.gs_base;
      b.tid_address = a.tid_address, b.robust_list = a.robust_list;
      b.robust_list_len = a.robust_list_len, b.rseq_area = a.rseq_area, b.sigmask = a.sigmask;
      b.altstack_sp = a.altstack_sp, b.altstack_size = a.altstack_size, b.ucontext = a.ucontext;
      b.siginfo = a.siginfo, b.park_time_ns = a.park_time_ns, b.rseq_size = a.rseq_size;
      b.altstack_flags = a.altstack_flags;
    }
    count_ = in.size();
    return absl::OkStatus();
  }
  void Unpark() override { f_->Unpark(); }
  void SetThrottle(uint32_t p) override { f_->SetThrottle(p); }
  std::span<const ThreadContext> ParkedThreads() const override {
    return {contexts_.data(), count_};
  }
  absl::Status RunFinalPhase(absl::FunctionRef<absl::Status()> body, bool leave_running,
                             int timeout_ms, absl::FunctionRef<void()> cancel) override {
    return f_->RunFinalPhase(body, leave_running, timeout_ms, cancel);
  }

 private:
  SourceFreezer* const f_;
  DirtyTracker** const tracker_;
  Sender** const sender_;
  std::vector<pid_t> exempt_;
  std::vector<ThreadContext> contexts_;
  size_t count_ = 0;
};

MigrationPhase PhaseOf(SenderState s) {
  switch (s) {
    case SenderState::kSetup:
      return MigrationPhase::kSetup;
    case SenderState::kBulk:
      return MigrationPhase::kBulk;
    case SenderState::kIterate:
      return MigrationPhase::kIterate;
    case SenderState::kStopAndCopy:
      return MigrationPhase::kStopAndCopy;
    case SenderState::kDone:
      return MigrationPhase::kDone;
    case SenderState::kFailed:
      return MigrationPhase::kFailed;
  }
  return MigrationPhase::kFailed;
}

MigrationStats ToStats(const SenderStats& s) {
  MigrationStats m;
  m.phase = PhaseOf(s.state);
  m.iteration = s.iteration;
  m.total_bytes = s.total_bytes;
  m.remaining_bytes = s.remaining_bytes;
  m.transferred_bytes = s.pages.bytes_out;
  m.normal_pages = s.pages.normal_pages;
  m.zero_pages = s.pages.zero_pages;
  m.unread_zero_pages = s.pages.unread_zero_pages;
  m.xbzrle_bytes = s.pages.xbzrle_bytes;
  m.xbzrle_pages = s.pages.xbzrle_pages;
  m.xbzrle_cache_misses = s.pages.xbzrle_cache_misses;
  m.xbzrle_overflows = s.pages.xbzrle_overflows;
  m.compressed_pages = s.pages.compressed_pages;
  m.compressed_bytes = s.pages.compressed_bytes;
  m.compress_skipped_pages = s.pages.compress_skipped_pages;
  m.dirty_pages_rate = s.dirty_pages_rate;
  m.throughput_bps = s.throughput_bps;
  m.expected_downtime_ms = s.expected_downtime_ms;
  m.downtime_ms = s.downtime_ms;
  m.ack_wait_ms = s.ack_wait_ms;
  m.park_us = s.park_us;
  m.sync_us = s.sync_us;
  m.spawn_us = s.spawn_us;
  m.final_send_us = s.final_send_us;
  m.final_pages = s.final_pages;
  m.setup_ms = s.setup_ms;
  m.total_ms = s.total_ms;
  m.throttle_percent = s.throttle_percent;
  return m;
}

class SourceImpl : public MigrationSource {
 public:
  explicit SourceImpl(SourceSetup setup)
      : setup_(std::move(setup)), freezer_(setup_.freezer, &tracker_raw_, &sender_raw_) {}

  absl::Status Run() override {
    absl::Status s = RunInner();
    if (!s.ok()) {
      std::lock_guard<std::mutex> l(mu_);
      last_.phase = cancelled_ ? MigrationPhase::kCancelled : MigrationPhase::kFailed;
    }
    return s;
  }

  void Cancel() override {
    cancelled_ = true;
    std::lock_guard<std::mutex> l(mu_);
    if (sender_) sender_->Cancel();
  }

  MigrationStats stats() const override {
    std::lock_guard<std::mutex> l(mu_);
    if (sender_) return ToStats(sender_->stats());
    return last_;
  }

 private:
  void Log(const std::string& s) {
    if (setup_.log) setup_.log(s);
  }

  absl::Status RunInner() {
    const MigrationOptions& o = setup_.options;
    {
      std::lock_guard<std::mutex> l(mu_);
      last_.phase = MigrationPhase::kSetup;
    }
    ASSIGN_OR_RETURN(Endpoint ep, Endpoint::Parse(o.target));
    if (ep.kind == Endpoint::Kind::kFile) {
      return absl::InvalidArgumentError(
          absl::StrCat("connect to ", o.target,
                       ": the agent streams to a receiver (HOST:PORT or unix:/path); `procmig "
                       "checkpoint --to DIR` runs one itself"));
    }
    // The unsupported-resource check compares against the fds the program had before this
    // migration opened any of its own, and its mappings less the agent's: what cannot migrate is
    // refused before anything is connected (the receiver never sees a session).
    ProcessStateRecord before;
    {
      ProcMapsLayout maps;
      ASSIGN_OR_RETURN(Layout layout, maps.Read());
      std::vector<MemoryRegion> program;
      for (const MemoryRegion& r : layout.regions) {
        bool agent = false;
        for (const auto& [b, e] : setup_.excluded) agent |= r.start < e && b < r.end;
        if (!agent) program.push_back(r);
      }
      RETURN_IF_ERROR(CaptureProcessBasics(program, {}, &before));
    }
    std::vector<std::string> unsupported = Unsupported(before, setup_.own_fds);
    if (!unsupported.empty()) {
      std::string why;
      for (const std::string& u : unsupported) absl::StrAppend(&why, why.empty() ? "" : "; ", u);
      return absl::FailedPreconditionError(
          absl::StrCat("setup: the process holds what cannot be migrated yet: ", why));
    }

    TransportConfig tc;
    ASSIGN_OR_RETURN(tc.kind, ParseTransportKind(o.transport));
    // One connection per channel; each also as a POSIX channel over a dup of its descriptor,
    // for the final phase's task (a frozen copy cannot use the io_uring rings of its parent).
    std::vector<std::unique_ptr<Channel>> chans;
    // A fixed array, not a vector: after a successful migration nothing may be freed (the
    // program's threads are parked), and the channels are released one by one.
    std::array<std::unique_ptr<PosixChannel>, 16> finals;
    if (o.channels < 1 || o.channels > static_cast<int>(finals.size())) {
      return absl::InvalidArgumentError("channels must be 1..16");
    }
    for (int i = 0; i < o.channels; ++i) {
      const std::string name = o.channels == 1 ? o.target : absl::StrCat(o.target, " #", i);
      ASSIGN_OR_RETURN(UniqueFd fd, Connect(ep));
      int dup_fd = fcntl(fd.get(), F_DUPFD_CLOEXEC, 0);
      if (dup_fd < 0) return ErrnoStatus("dup the migration socket", errno);
      ASSIGN_OR_RETURN(std::unique_ptr<PosixChannel> final_channel,
                       PosixChannel::Create(UniqueFd(dup_fd), absl::StrCat(name, " (final)")));
      ASSIGN_OR_RETURN(OpenedChannel opened, OpenChannel(std::move(fd), tc, name));
      if (i == 0) Log(absl::StrCat("transport: ", opened.reason));
      chans.push_back(std::move(opened.channel));
      finals[static_cast<size_t>(i)] = std::move(final_channel);
    }
    if (o.channels > 1) Log(absl::StrCat("channels: ", o.channels));

    std::array<uint8_t, 16> session{};
    while (true) {
      if (getrandom(session.data(), session.size(), 0) != static_cast<ssize_t>(session.size())) {
        return ErrnoStatus("getrandom session id", errno);
      }
      if (session != std::array<uint8_t, 16>{}) break;
    }
    uint64_t session64 = 0;
    std::memcpy(&session64, session.data(), 8);
    ASSIGN_OR_RETURN(std::unique_ptr<ChannelGroup> group,
                     ChannelGroup::Start(std::move(chans), session64));

    TrackerConfig tcfg;
    tcfg.layout_gate = setup_.layout_gate;
    tcfg.whole_process = true;
    if (o.tracker != "auto") {
      ASSIGN_OR_RETURN(TrackerKind k, ParseTrackerKind(o.tracker));
      tcfg.forced = k;
    }
    std::vector<TrackerProbeResult> probes;
    ASSIGN_OR_RETURN(std::unique_ptr<DirtyTracker> tracker, SelectTracker(tcfg, &probes));
    Log(absl::StrCat("tracker: ", std::string(TrackerKindName(tracker->kind()))));
    tracker_raw_ = tracker.get();

    SenderConfig c;
    c.convergence.downtime_limit_ms = o.downtime_limit_ms;
    c.convergence.max_iterations = o.max_iterations;
    c.convergence.auto_converge = o.auto_converge;
    c.verify_final = o.verify_final;
    for (const auto& [b, e] : setup_.unchecked) c.unchecked.push_back({b, e});
    c.pages.preamble.page_size = static_cast<uint32_t>(sysconf(_SC_PAGESIZE));
    c.pages.preamble.session_id = session;
    c.pages.xbzrle = o.xbzrle;
    c.pages.xbzrle_cache_bytes = o.xbzrle_cache_bytes;
    c.pages.max_bandwidth = o.max_bandwidth;
    c.pages.compress_level = o.compress_level;
    c.pages.compress_threads = o.compress_threads;
    c.pages.compress_adaptive = !o.compress_always;
    c.pages.flush_threads = true;
    c.leave_running = o.mode == MigrationMode::kCheckpoint && o.leave_running;
    c.park_timeout_ms = setup_.park_timeout_ms;
    c.final_timeout_ms = static_cast<int>(o.final_timeout_ms);
    for (const auto& [b, e] : setup_.excluded) c.excluded.push_back({b, e});
    c.capture = [](std::span<const MemoryRegion> regions, ProcessStateRecord* r) {
      return CaptureProcessBasics(regions, {}, r);
    };
    // Checked above before anything was connected, and again on each of the sender's captures
    // (what the program opened or mapped since), less the agent's own descriptors (the sender
    // drops them from the record).
    c.own_fds = setup_.own_fds;
    c.check_unsupported = [](const ProcessStateRecord& r) { return Unsupported(r, {}); };
    // The receiver checks CPU, vDSO and file identities before any memory is sent.
    c.restore_check = true;
    c.progress_interval_ms = setup_.progress_interval_ms;
    c.progress = [this](const SenderStats& s) {
      if (setup_.progress) setup_.progress(ToStats(s));
    };
    ProcMapsLayout layout;
    std::vector<Channel*> main_channels, final_channels;
    for (size_t i = 0; i < group->size(); ++i) {
      main_channels.push_back(&group->channel(i));
      final_channels.push_back(finals[i].get());
    }
    auto sender =
        std::make_unique<Sender>(std::move(c), std::move(main_channels), std::move(final_channels),
                                 tracker.get(), &freezer_, &layout);
    sender_raw_ = sender.get();
    {
      std::lock_guard<std::mutex> l(mu_);
      sender_ = sender.get();
      if (cancelled_) sender_->Cancel();
    }
    absl::Status s = sender->Run();
    if (!s.ok() || (o.mode == MigrationMode::kCheckpoint && o.leave_running)) {
      // (Not after a successful migration: the threads are parked and logging allocates.)
      SenderStats st = sender->stats();
      Log(absl::StrCat("stop: park ", st.park_us, " us, layout check + sync ", st.sync_us,
                       " us, final phase ", st.copy_us, " us (task start ", st.spawn_us,
                       " us, send ", st.final_send_us, " us; pause to end of stream ",
                       st.downtime_ms, " ms, ack wait ", st.ack_wait_ms, " ms), ", st.final_pages,
                       " final dirty pages, ", st.park_failures, " failed parks, ",
                       st.abandoned_stops, " abandoned stops",
                       sender->last_stop_failure().empty()
                           ? std::string()
                           : absl::StrCat(" (last: ", sender->last_stop_failure(), ")")));
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      last_ = ToStats(sender->stats());
      sender_ = nullptr;
    }
    if (s.ok() && !(o.mode == MigrationMode::kCheckpoint && o.leave_running)) {
      // The program's threads are parked and the process is about to end: release nothing that
      // could take a lock a parked thread holds (the objects are leaked on purpose).
      (void)sender.release();
      (void)tracker.release();
      (void)group.release();
      for (auto& f : finals) (void)f.release();
      return s;
    }
    tracker_raw_ = nullptr;
    sender_raw_ = nullptr;
    return s;
  }

  const SourceSetup setup_;
  DirtyTracker* tracker_raw_ = nullptr;
  Sender* sender_raw_ = nullptr;  // the Run() thread's: the freezer reads it while parking
  FreezerAdapter freezer_;
  mutable std::mutex mu_;
  Sender* sender_ = nullptr;  // guarded by mu_
  MigrationStats last_;       // guarded by mu_
  std::atomic<bool> cancelled_{false};
};

}  // namespace

absl::StatusOr<std::unique_ptr<MigrationSource>> MigrationSource::Create(SourceSetup setup) {
  RETURN_IF_ERROR(setup.options.Validate());
  if (setup.freezer == nullptr) return absl::InvalidArgumentError("migration source: no freezer");
  return std::unique_ptr<MigrationSource>(new SourceImpl(std::move(setup)));
}

}  // namespace procmig
