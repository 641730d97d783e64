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
  handler_tid_published_.store(0);
  handler_ = std::thread([this] { HandlerLoop(); });
  while ((handler_tid_ = handler_tid_published_.load(std::memory_order_acquire)) == 0) {
    sched_yield();
  }
  started_ = true;
  for (const RamBlock& b : sorted) {
    absl::Status s = Arm(b);
    if (!s.ok()) {
      (void)Stop();
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status UffdWpTracker::Arm(const RamBlock& b) {
  RETURN_IF_ERROR(uffd_.RegisterWp(b.start, b.length, /*missing=*/true));
  return uffd_.WriteProtectStatus(b.start, b.length, /*protect=*/true);
}

absl::Status UffdWpTracker::AddBlocks(std::span<const RamBlock> blocks) {
  if (!started_) return absl::FailedPreconditionError("add blocks to uffd-wp tracker: not started");
  std::vector<RamBlock> old_blocks = blocks_;
  ASSIGN_OR_RETURN(std::vector<RamBlock> next, BlocksWithAdded(old_blocks, blocks));
  DirtySet next_live(next);
  DirtySet next_result(next);
  {
    // Publish before registering: a fault in a new block must find it (see Start).
    std::lock_guard<std::mutex> lock(mu_);
    next_live.HarvestFrom(live_);
    std::swap(live_, next_live);
  }
  blocks_.swap(next);
  result_ = std::move(next_result);
  for (size_t i = 0; i < blocks.size(); ++i) {
    absl::Status s = Arm(blocks[i]);
    if (!s.ok()) {
      for (size_t j = 0; j <= i; ++j) (void)uffd_.Unregister(blocks[j].start, blocks[j].length);
      DirtySet back_live(old_blocks);
      DirtySet back_result(old_blocks);
      {
        std::lock_guard<std::mutex> lock(mu_);
        back_live.HarvestFrom(live_);
        std::swap(live_, back_live);
      }
      blocks_.swap(old_blocks);
      result_ = std::move(back_result);
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status UffdWpTracker::RemoveBlocks(std::span<const uint32_t> ids) {
  if (!started_)
    return absl::FailedPreconditionError("remove blocks from uffd-wp tracker: not started");
  ASSIGN_OR_RETURN(std::vector<RamBlock> gone, BlocksById(blocks_, ids));
  ASSIGN_OR_RETURN(std::vector<RamBlock> next, BlocksWithRemoved(blocks_, ids));
  // Unregistering clears the protection and wakes threads waiting on these ranges; a message
  // still queued for them is resolved with UFFDIO_WAKE by the handler.
  for (const RamBlock& b : gone) (void)uffd_.Unregister(b.start, b.length);
  DirtySet next_live(next);
  DirtySet next_result(next);
  {
    std::lock_guard<std::mutex> lock(mu_);
    next_live.HarvestFrom(live_);
    std::swap(live_, next_live);
  }
  blocks_.swap(next);
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
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const RamBlock& b : blocks_) {
      err = uffd_.WriteProtectAcrossVmas(b.start, b.length, true, page_size_);
      if (err != 0) {
        failed_at = b.start;
        break;
      }
    }
    result_.HarvestFrom(live_);
  }
  if (err != 0) {
    return ErrnoStatus(
        absl::StrFormat("sync uffd-wp tracker: write-protect block at 0x%x", failed_at), err);
  }
  ++stats_.syncs;
  return &result_;
}

absl::Status UffdWpTracker::Stop() {
  if (!started_ && !handler_.joinable()) return absl::OkStatus();
  started_ = false;
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
