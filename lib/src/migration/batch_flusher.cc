#include "migration/batch_flusher.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <utility>

namespace procmig {

absl::StatusOr<std::unique_ptr<BatchFlusher>> BatchFlusher::Start(Channel* channel) {
  if (channel == nullptr) return absl::InvalidArgumentError("batch flusher: no channel");
  std::unique_ptr<BatchFlusher> f(new BatchFlusher(channel));
  f->thread_ = std::thread(&BatchFlusher::Loop, f.get());
  std::unique_lock<std::mutex> l(f->mu_);
  f->cv_.wait(l, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(f->mu_) { return f->started_; });
  return f;
}

BatchFlusher::~BatchFlusher() {
  {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !pending_; });
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void BatchFlusher::Post(std::span<const iovec> batch) {
  {
    std::lock_guard<std::mutex> l(mu_);
    job_ = batch;
    pending_ = true;
  }
  cv_.notify_all();
}

absl::Status BatchFlusher::Wait() {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !pending_; });
  return status_;
}

void BatchFlusher::Loop() {
  std::unique_lock<std::mutex> l(mu_);
  tid_ = static_cast<pid_t>(syscall(SYS_gettid));
  started_ = true;
  cv_.notify_all();
  for (;;) {
    cv_.wait(l, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || pending_; });
    if (stop_) return;
    const std::span<const iovec> job = job_;
    const bool failed = !status_.ok();
    l.unlock();
    // After a failure the stream is broken: later batches are dropped, the error stays.
    absl::Status s = failed ? absl::OkStatus() : channel_->WriteV(job.data(), job.size());
    l.lock();
    if (!s.ok()) status_ = std::move(s);
    pending_ = false;
    cv_.notify_all();
  }
}

}  // namespace procmig
