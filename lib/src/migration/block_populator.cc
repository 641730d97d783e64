#include "migration/block_populator.h"

#include <algorithm>

namespace procmig {

BlockPopulator::BlockPopulator(Step step, uint64_t pages_per_step)
    : step_(std::move(step)),
      pages_per_step_(pages_per_step == 0 ? 1 : pages_per_step),
      thread_([this] { Loop(); }) {}

BlockPopulator::~BlockPopulator() { Stop(); }

void BlockPopulator::Queue(uint32_t block_id, uint64_t first_page, uint64_t count) {
  if (count == 0) return;
  {
    std::lock_guard<std::mutex> l(mu_);
    queue_.push_back(Item{block_id, first_page, count});
  }
  cv_.notify_all();  // the populator thread, or a WaitIdleForTest() caller
}

void BlockPopulator::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_.store(true);
  }
  cv_.notify_all();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void BlockPopulator::WaitIdleForTest() {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [&] { return stop_.load() || (queue_.empty() && !busy_); });
}

void BlockPopulator::Loop() {
  for (;;) {
    Item item;
    {
      std::unique_lock<std::mutex> l(mu_);
      busy_ = false;
      cv_.notify_all();  // a WaitIdleForTest() may be waiting
      cv_.wait(l, [&] { return stop_.load() || !queue_.empty(); });
      if (stop_.load()) return;
      item = queue_.front();
      queue_.pop_front();
      busy_ = true;
    }
    // Pages left to do; a count reaching past UINT64_MAX is "to the end of the block".
    for (uint64_t page = item.first_page, left = item.count; left > 0 && !stop_.load();) {
      const uint64_t n = std::min(left, pages_per_step_);
      if (!step_(item.block_id, page, n)) break;
      page += n;
      left -= n;
    }
  }
}

}  // namespace procmig
