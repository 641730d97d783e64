// BlockPopulator: one background thread that faults in announced blocks ahead of their data, so
// the receive path does not pay a page fault per page (the bench: ~2.8 us per fresh
// 4 KiB page on the reference VM, the first wall of a loopback receive).
//
// Queue(id, first_page[, count]) asks for block `id` from `first_page` on (to its end, or for
// `count` pages); the thread calls `step(id, page, n)` for successive pieces of at most
// pages_per_step until the range is done, `step` returns false (block gone or past its end) or
// Stop() is called. `step` runs on the populator thread and must do its own locking (the
// Receiver takes its block lock shared, so block add/remove/resize never wait longer than one
// piece). Queue and Stop may be called from any thread; Stop joins and is idempotent.
#ifndef PROCMIG_MIGRATION_BLOCK_POPULATOR_H_
#define PROCMIG_MIGRATION_BLOCK_POPULATOR_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"

namespace procmig {

class BlockPopulator {
 public:
  using Step = std::function<bool(uint32_t block_id, uint64_t first_page, uint64_t count)>;

  // `pages_per_step` > 0.
  BlockPopulator(Step step, uint64_t pages_per_step);
  ~BlockPopulator();
  BlockPopulator(const BlockPopulator&) = delete;
  BlockPopulator& operator=(const BlockPopulator&) = delete;

  void Queue(uint32_t block_id, uint64_t first_page, uint64_t count = UINT64_MAX);
  // Stops after the current piece; from the populator thread itself it only sets the flag.
  void Stop();
  // Returns once everything queued so far was done (or Stop() was called).
  void WaitIdleForTest();

 private:
  void Loop();

  const Step step_;
  const uint64_t pages_per_step_;
  std::mutex mu_;
  std::condition_variable cv_;
  struct Item {
    uint32_t block_id;
    uint64_t first_page;
    uint64_t count;
  };
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  bool busy_ ABSL_GUARDED_BY(mu_) = false;  // an item was taken and is being done
  std::atomic<bool> stop_{false};
  std::thread thread_;  // last member: started after everything it uses
};

}  // namespace procmig

#endif  // PROCMIG_MIGRATION_BLOCK_POPULATOR_H_
