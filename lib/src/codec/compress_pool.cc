#include "codec/compress_pool.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace procmig {

absl::Status CompressPoolConfig::Validate() const {
  if (threads < 1 || threads > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("compress pool config: threads ", threads, " is outside 1..64"));
  }
  if (level < 0 || level > 9) {
    return absl::InvalidArgumentError(
        absl::StrCat("compress pool config: level ", level, " is outside 0..9"));
  }
  if (max_job_bytes < 1 || max_job_bytes > (size_t{64} << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("compress pool config: max_job_bytes ",
                                                   max_job_bytes, " is outside 1..64 MiB"));
  }
  if (queue_depth > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("compress pool config: queue_depth ", queue_depth, " is above 4096"));
  }
  return absl::OkStatus();
}

CompressPool::CompressPool(const CompressPoolConfig& config, size_t depth)
    : config_(config),
      depth_(depth),
      out_cap_(ZlibCompressor::MaxCompressedSize(config.max_job_bytes)),
      jobs_(depth) {}

absl::StatusOr<std::unique_ptr<CompressPool>> CompressPool::Create(
    const CompressPoolConfig& config) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  const size_t depth =
      config.queue_depth != 0 ? config.queue_depth : 4 * static_cast<size_t>(config.threads);
  std::unique_ptr<CompressPool> pool(new CompressPool(config, depth));
  for (Job& job : pool->jobs_) {
    job.in = std::make_unique_for_overwrite<uint8_t[]>(config.max_job_bytes);
    job.out = std::make_unique_for_overwrite<uint8_t[]>(pool->out_cap_);
  }
  // Every fallible step happens before the first thread starts, so a failed Create() never has
  // threads to stop.
  for (int i = 0; i < config.threads; ++i) {
    absl::StatusOr<std::unique_ptr<ZlibCompressor>> c = ZlibCompressor::Create(config.level);
    if (!c.ok()) return c.status();
    pool->compressors_.push_back(*std::move(c));
  }
  pool->tids_.reserve(pool->compressors_.size());
  for (auto& c : pool->compressors_) {
    pool->workers_.emplace_back(&CompressPool::WorkerLoop, pool.get(), c.get());
  }
  {
    // Every worker has said who it is before the pool is handed out.
    std::unique_lock<std::mutex> lock(pool->mu_);
    pool->done_cv_.wait(lock, [&] { return pool->tids_.size() == pool->workers_.size(); });
  }
  return pool;
}

CompressPool::~CompressPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void CompressPool::WorkerLoop(ZlibCompressor* compressor) {
  std::unique_lock<std::mutex> lock(mu_);
  tids_.push_back(static_cast<pid_t>(syscall(SYS_gettid)));
  done_cv_.notify_all();
  while (true) {
    work_cv_.wait(lock, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stop_ || next_take_ < submitted_;
    });
    if (stop_) return;
    Job& job = jobs_[next_take_++ % depth_];
    lock.unlock();
    // The job's buffers belong to this worker until `done` is set under mu_.
    absl::StatusOr<size_t> n =
        compressor->Compress(job.in.get(), job.in_len, job.out.get(), out_cap_);
    lock.lock();
    if (n.ok()) {
      job.out_len = *n;
      job.status = absl::OkStatus();
    } else {
      job.out_len = 0;
      job.status = n.status();
    }
    job.done = true;
    done_cv_.notify_one();
  }
}

absl::StatusOr<uint64_t> CompressPool::Submit(const uint8_t* data, size_t len) {
  if (len > config_.max_job_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("compress pool submit: job of ", len,
                                                   " bytes exceeds max_job_bytes ",
                                                   config_.max_job_bytes));
  }
  if (Full()) {
    return absl::InternalError(absl::StrCat("compress pool submit: all ", depth_,
                                            " slots are in flight; Collect() first"));
  }
  const uint64_t seq = next_submit_++;
  Job& job = jobs_[seq % depth_];
  // The slot's previous job has been collected, so no worker can be looking at it. This is the
  // moment the last Collect()'s result may be overwritten, as the header says.
  std::memcpy(job.in.get(), data, len);
  job.in_len = len;
  {
    std::lock_guard<std::mutex> lock(mu_);
    job.done = false;
    ++submitted_;
  }
  work_cv_.notify_one();
  return seq;
}

absl::StatusOr<CompressPool::Result> CompressPool::Collect() {
  if (next_collect_ == next_submit_) {
    return absl::InternalError("compress pool collect: no job is outstanding");
  }
  const uint64_t seq = next_collect_++;
  Job& job = jobs_[seq % depth_];
  {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&job]() { return job.done; });
  }
  if (!job.status.ok()) {
    return absl::Status(job.status.code(),
                        absl::StrCat("compress pool job ", seq, ": ", job.status.message()));
  }
  return Result{seq, job.out.get(), job.out_len, job.in_len};
}

}  // namespace procmig
