#include "dirty/uffd_wp_tracker.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "dirty/block_list.h"
#include "os/kernel_compat.h"

namespace procmig {

UffdWpTracker::~UffdWpTracker() { (void)Stop(); }

int UffdWpTracker::RegisterAndProtect(const RamBlock& b) const {
  int err = uffd_.RegisterWpRaw(b.start, b.length, /*missing=*/true);
  if (err != 0) return err;
  return uffd_.WriteProtectAcrossVmas(b.start, b.length, /*protect=*/true, page_size_);
}

absl::Status UffdWpTracker::Arm(const RamBlock& b, BlockState& st, bool check) {
  st.armed = false;
  st.rearm = false;
  if (!check && gate_ != nullptr) check = gate_->ChangedSince(st.since, b.start, b.end());
  ASSIGN_OR_RETURN(st.armed, layout_.Arm(
                                 b, check, [&] { return RegisterAndProtect(b); }, stats_));
  return absl::OkStatus();
}

absl::Status UffdWpTracker::Start(std::span<const RamBlock> blocks) {
  if (started_) return absl::FailedPreconditionError("start uffd-wp tracker: already started");
  ASSIGN_OR_RETURN(std::vector<RamBlock> sorted, BlocksWithAdded({}, blocks));
  ASSIGN_OR_RETURN(uffd_, UserfaultFd::Open(0, /*allow_user_mode_only=*/false));
  if ((uffd_.features() & UFFD_FEATURE_PAGEFAULT_FLAG_WP) == 0) {
    uffd_.Close();
    return absl::FailedPreconditionError(
        "start uffd-wp tracker: kernel lacks userfaultfd write-protect (Linux 5.7+)");
  }
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) {
    int err = errno;
    uffd_.Close();
    return ErrnoStatus("start uffd-wp tracker: eventfd", err);
  }
  page_size_ = BasePageSize();
  result_ = DirtySet(sorted);
  {
    DirtySet live(sorted);
    std::lock_guard<std::mutex> lock(mu_);
    std::swap(live_, live);
  }
  blocks_ = sorted;
  state_.assign(blocks_.size(), BlockState{false, false, epoch_});
  layout_.GrowBufferIfNeeded();
  handler_tid_published_.store(0);
  handler_ = std::thread([this] { HandlerLoop(); });
  while ((handler_tid_ = handler_tid_published_.load(std::memory_order_acquire)) == 0) {
    sched_yield();
  }
  started_ = true;
  absl::Status s;
  {
    LayoutGateLock hold(gate_);
    layout_.Forget();
    if (gate_ != nullptr) gate_->Attach(&DiscardToTracker, this);
    for (size_t i = 0; i < blocks_.size() && s.ok(); ++i) s = Arm(blocks_[i], state_[i], false);
  }
  if (!s.ok()) {
    (void)Stop();
    return s;
  }
  return absl::OkStatus();
}

absl::Status UffdWpTracker::AddBlocks(std::span<const RamBlock> blocks) {
  if (!started_) return absl::FailedPreconditionError("add blocks to uffd-wp tracker: not started");
  std::vector<RamBlock> old_blocks = blocks_;
  ASSIGN_OR_RETURN(std::vector<RamBlock> next, BlocksWithAdded(old_blocks, blocks));
  std::vector<BlockState> next_state(next.size(), BlockState{false, false, epoch_});
  for (size_t i = 0, j = 0; i < next.size(); ++i) {
    while (j < blocks_.size() && blocks_[j].start < next[i].start) ++j;
    if (j < blocks_.size() && blocks_[j].id == next[i].id) next_state[i] = state_[j];
  }
  DirtySet next_live(next);
  DirtySet next_result(next);
  layout_.GrowBufferIfNeeded();
  {
    // Publish before registering: a fault in a new block must find it (see Start).
    std::lock_guard<std::mutex> lock(mu_);
    next_live.HarvestFrom(live_);
    std::swap(live_, next_live);
  }
  blocks_.swap(next);
  std::vector<BlockState> old_state = std::move(state_);
  state_ = std::move(next_state);
  result_ = std::move(next_result);
  absl::Status s;
  {
    LayoutGateLock hold(gate_);
    layout_.Forget();
    for (const RamBlock& added : blocks) {
      const RamBlock* b = FindBlockHolding(blocks_, added.start);
      if (b == nullptr) continue;  // impossible: BlocksWithAdded put it there
      s = Arm(*b, state_[static_cast<size_t>(b - blocks_.data())], false);
      if (!s.ok()) break;
    }
  }
  if (!s.ok()) {
    // Blocks armed before the failure stay registered (their faults are still resolved).
    DirtySet back_live(old_blocks);
    DirtySet back_result(old_blocks);
    {
      std::lock_guard<std::mutex> lock(mu_);
      back_live.HarvestFrom(live_);
      std::swap(live_, back_live);
    }
    blocks_.swap(old_blocks);
    state_ = std::move(old_state);
    result_ = std::move(back_result);
    return s;
  }
  return absl::OkStatus();
}

absl::Status UffdWpTracker::RemoveBlocks(std::span<const uint32_t> ids) {
  if (!started_)
    return absl::FailedPreconditionError("remove blocks from uffd-wp tracker: not started");
  ASSIGN_OR_RETURN(std::vector<RamBlock> next, BlocksWithRemoved(blocks_, ids));
  // No UFFDIO_UNREGISTER (see the header): the handler keeps resolving faults there.
  std::vector<BlockState> next_state;
  next_state.reserve(next.size());
  for (size_t i = 0, j = 0; i < next.size(); ++i) {
    while (blocks_[j].id != next[i].id) ++j;
    next_state.push_back(state_[j]);
  }
  DirtySet next_live(next);
  DirtySet next_result(next);
  {
    std::lock_guard<std::mutex> lock(mu_);
    next_live.HarvestFrom(live_);
    std::swap(live_, next_live);
  }
  blocks_.swap(next);
  state_ = std::move(next_state);
  result_ = std::move(next_result);
  return absl::OkStatus();
}

void UffdWpTracker::HandleFault(uintptr_t addr, bool write_protect_fault) {
  int err;
  {
    std::lock_guard<std::mutex> lock(mu_);
    live_.MarkPageAtomic(addr);
    err = write_protect_fault ? uffd_.WriteProtect(addr, page_size_, false)
                              : uffd_.ZeroPage(addr, page_size_);
  }
  // EEXIST: another thread populated the page first; ENOENT/EINVAL: the block was unregistered.
  // Either way the faulting thread only needs waking to retry.
  if (err != 0) (void)uffd_.Wake(addr, page_size_);
  faults_.fetch_add(1, std::memory_order_relaxed);
}

void UffdWpTracker::HandlerLoop() {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  handler_tid_published_.store(gettid(), std::memory_order_release);
  uffd_msg msgs[32];
  for (;;) {
    pollfd fds[2] = {{uffd_.fd(), POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    int rc = poll(fds, 2, -1);
    if (rc < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    if ((fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) != 0) return;
    ssize_t got = read(uffd_.fd(), msgs, sizeof(msgs));
    if (got < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return;
    }
    const size_t n = static_cast<size_t>(got) / sizeof(uffd_msg);
    for (size_t i = 0; i < n; ++i) {
      if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;
      const uintptr_t addr = msgs[i].arg.pagefault.address & ~(uint64_t{page_size_} - 1);
      HandleFault(addr, (msgs[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) != 0);
    }
  }
}

absl::StatusOr<const DirtySet*> UffdWpTracker::Sync() {
  if (!started_) return absl::FailedPreconditionError("sync uffd-wp tracker: not started");
  int err = 0;
  uintptr_t failed_at = 0;
  result_.ClearAll();
  LayoutGateLock hold(gate_);
  layout_.Forget();
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < blocks_.size(); ++i) {
      const RamBlock& b = blocks_[i];
      if (!state_[i].armed) continue;
      const int e = uffd_.WriteProtectAcrossVmas(b.start, b.length, true, page_size_);
      if (e == 0) continue;
      if (IsLayoutRefusal(e)) {
        state_[i].rearm = true;  // part of it is a mapping made since it was armed
      } else if (err == 0) {
        err = e;
        failed_at = b.start;
      }
    }
    result_.HarvestFrom(live_);
  }
  if (err != 0) {
    return ErrnoStatus(
        absl::StrFormat("sync uffd-wp tracker: write-protect block at 0x%x", failed_at), err);
  }
  // Stale or replaced blocks: armed again if they line up, and reported whole either way.
  std::span<DirtyBlock> out = result_.mutable_blocks();
  for (size_t i = 0; i < blocks_.size(); ++i) {
    if (state_[i].armed && !state_[i].rearm) {
      // What the program's layout changes since the last Sync touched: a mapping shrunk and
      // grown again in place, or moved in, changed its pages without a write fault.
      if (gate_ != nullptr) MarkChangedSince(epoch_, blocks_[i], out[i]);
      continue;
    }
    if (state_[i].rearm) ++stats_.rearms;
    RETURN_IF_ERROR(Arm(blocks_[i], state_[i], /*check=*/true));
    out[i].pages.SetRange(0, out[i].pages.size());
  }
  if (gate_ != nullptr) epoch_ = gate_->seq();
  ++stats_.syncs;
  return &result_;
}

void UffdWpTracker::MarkChangedSince(uint64_t since, const RamBlock& b, DirtyBlock& out) const {
  auto mark = [](void* ctx, uintptr_t lo, uintptr_t hi) {
    DirtyBlock& d = *static_cast<DirtyBlock*>(ctx);
    const size_t first = (lo - d.start) / d.page_size;
    d.pages.SetRange(first, (hi - d.start + d.page_size - 1) / d.page_size - first);
  };
  if (!gate_->ChangesSince(since, b.start, b.end(), mark, &out)) out.pages.SetAll();
}

absl::Status UffdWpTracker::Stop() {
  if (!started_ && !handler_.joinable()) return absl::OkStatus();
  started_ = false;
  if (gate_ != nullptr) {
    LayoutGateLock hold(gate_);
    gate_->Detach();
  }
  if (handler_.joinable()) {
    uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof(one));
    handler_.join();
  }
  // Closing the descriptor unregisters every range, clears the protection and wakes waiters.
  uffd_.Close();
  if (wake_fd_ >= 0) close(wake_fd_);
  wake_fd_ = -1;
  handler_tid_ = 0;
  blocks_.clear();
  state_.clear();
  {
    std::lock_guard<std::mutex> lock(mu_);
    live_ = DirtySet();  // frees outside any fault: the handler has exited
  }
  result_ = DirtySet();
  return absl::OkStatus();
}

void UffdWpTracker::MarkDiscarded(uintptr_t addr, size_t len) {
  std::lock_guard<std::mutex> lock(mu_);
  live_.MarkRange(addr, len);
}

std::span<const pid_t> UffdWpTracker::OwnThreads() const {
  if (handler_tid_ == 0) return {};
  return {&handler_tid_, 1};
}

TrackerStats UffdWpTracker::stats() const {
  TrackerStats s = stats_;
  s.faults = faults_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace procmig
