// BatchFlusher: one thread that writes a channel's batches, so the sender thread builds the next
// batch (reads, checks and crcs of pages) while the kernel copies the last one into the socket
// (QEMU's multifd send threads, one per channel, with the page selection left to the sender).
//
// One batch at a time: Post() hands over a batch; Wait() returns once it is written (or failed).
// The batch's iovecs and the memory they point at belong to the flusher from Post() until Wait()
// returns. A failed write makes every later Wait() return that error; Post() after a failure
// writes nothing.
//
// Threads: Post() and Wait() from one owner thread. The destructor waits for the posted batch
// and joins the thread: a write blocked on a peer that stopped reading ends only when the owner
// aborts the channel (Channel::Abort) first.
#ifndef PROCMIG_MIGRATION_BATCH_FLUSHER_H_
#define PROCMIG_MIGRATION_BATCH_FLUSHER_H_

#include <sys/types.h>
#include <sys/uio.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <span>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "transport/channel.h"

namespace procmig {

class BatchFlusher {
 public:
  // Starts the thread; returns once it runs (tid() is known).
  static absl::StatusOr<std::unique_ptr<BatchFlusher>> Start(Channel* channel);
  ~BatchFlusher();
  BatchFlusher(const BatchFlusher&) = delete;
  BatchFlusher& operator=(const BatchFlusher&) = delete;

  // Hands `batch` over. Precondition: nothing posted since the last Wait().
  void Post(std::span<const iovec> batch);
  // Waits for the posted batch (OK at once when none is); the first write error, sticky.
  absl::Status Wait();
  pid_t tid() const { return tid_; }

 private:
  explicit BatchFlusher(Channel* channel) : channel_(channel) {}
  void Loop();

  Channel* const channel_;
  pid_t tid_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::span<const iovec> job_ ABSL_GUARDED_BY(mu_);
  bool pending_ ABSL_GUARDED_BY(mu_) = false;  // job_ is to be written
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;  // last: started after everything it uses
};

}  // namespace procmig

#endif  // PROCMIG_MIGRATION_BATCH_FLUSHER_H_
