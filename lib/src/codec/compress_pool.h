// CompressPool: zlib compression of pages on N worker threads, results back in submission order
// (QEMU's multi-threaded compression, with the ordering made explicit by sequence numbers).
//
// One owner thread (the sender) calls Submit() and Collect(); the pool's workers only compress.
// Submit() copies the input into a job slot, so the caller's page may change or be reused at
// once (and a page written during compression cannot produce a stream that disagrees with
// itself). Collect() returns the oldest outstanding job's result, blocking until it is done.
// There are queue_depth slots, allocated with their buffers at Create(): steady-state use does
// not allocate. A slot is busy from Submit() until Collect() returns its result; the result's
// bytes stay valid until the owner's next Submit() or Collect(), which may reuse the slot. A full
// pool (queue_depth jobs outstanding) must be drained with Collect() before Submit() succeeds.
// Each worker owns one ZlibCompressor (one z_stream, deflateReset between jobs).
#ifndef PROCMIG_CODEC_COMPRESS_POOL_H_
#define PROCMIG_CODEC_COMPRESS_POOL_H_

#include <sys/types.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "codec/zlib_codec.h"

namespace procmig {

struct CompressPoolConfig {
  int threads = 1;                   // worker threads, 1..64
  int level = 1;                     // zlib level, 0..9
  size_t max_job_bytes = 16 * 4096;  // largest input of one job, 1 B .. 64 MiB
  size_t queue_depth = 0;            // jobs in flight, 1..4096; 0 means 4 per thread

  // InvalidArgument naming the first bad field.
  absl::Status Validate() const;
};

class CompressPool {
 public:
  struct Result {
    uint64_t seq;         // as returned by Submit()
    const uint8_t* data;  // the zlib stream; valid until the next Collect() or ~CompressPool
    size_t size;          // its length
    size_t input_size;    // bytes that were submitted
  };

  static absl::StatusOr<std::unique_ptr<CompressPool>> Create(const CompressPoolConfig& config);
  // Stops and joins the workers; results not collected are dropped.
  ~CompressPool();

  CompressPool(const CompressPool&) = delete;
  CompressPool& operator=(const CompressPool&) = delete;

  // Queues a copy of [data, data+len) and returns the job's sequence number (0, 1, 2, ...).
  // InvalidArgument when len > max_job_bytes; Internal when the pool is Full() (a caller bug:
  // collect first).
  absl::StatusOr<uint64_t> Submit(const uint8_t* data, size_t len);

  // Waits for the oldest outstanding job and returns its result, or the error compressing it
  // produced. Internal when nothing is outstanding.
  absl::StatusOr<Result> Collect();

  // True when Submit() would fail for lack of a free slot.
  bool Full() const { return next_submit_ - next_collect_ >= depth_; }
  // Jobs submitted and not yet collected.
  size_t Outstanding() const { return next_submit_ - next_collect_; }

  const CompressPoolConfig& config() const { return config_; }
  // The workers' kernel thread ids (known when Create() returns): a process-freezing caller must
  // not stop them.
  std::span<const pid_t> worker_tids() const { return {tids_.data(), tids_.size()}; }

 private:
  struct Job {
    std::unique_ptr<uint8_t[]> in;
    std::unique_ptr<uint8_t[]> out;
    size_t in_len = 0;
    size_t out_len = 0;
    absl::Status status;
    bool done = false;  // guarded by mu_
  };

  CompressPool(const CompressPoolConfig& config, size_t depth);
  void WorkerLoop(ZlibCompressor* compressor);

  // Immutable after construction.
  const CompressPoolConfig config_;
  const size_t depth_;
  const size_t out_cap_;
  std::vector<Job> jobs_;  // the vector itself is immutable; each Job is handed between threads
  std::vector<std::unique_ptr<ZlibCompressor>> compressors_;  // one per worker
  std::vector<std::thread> workers_;

  std::mutex mu_;
  std::condition_variable work_cv_;              // workers wait for jobs or stop_
  std::condition_variable done_cv_;              // the owner waits for a job to finish
  uint64_t submitted_ ABSL_GUARDED_BY(mu_) = 0;  // jobs visible to workers
  uint64_t next_take_ ABSL_GUARDED_BY(mu_) = 0;  // next job a worker picks up
  std::vector<pid_t> tids_;                      // appended under mu_ until Create() returns
  bool stop_ ABSL_GUARDED_BY(mu_) = false;

  // Owned by the owner thread.
  uint64_t next_submit_ = 0;
  uint64_t next_collect_ = 0;
};

}  // namespace procmig

#endif  // PROCMIG_CODEC_COMPRESS_POOL_H_
