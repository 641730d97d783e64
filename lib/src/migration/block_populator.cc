#include "migration/block_populator.h"

namespace procmig {

BlockPopulator::BlockPopulator(Step step, uint64_t pages_per_step)
    : step_(std::move(step)),
      pages_per_step_(pages_per_step == 0 ? 1 : pages_per_step),
      thread_([this] { Loop(); }) {}

BlockPopulator::~BlockPopulator() { Stop(); }

void BlockPopulator::Queue(uint32_t block_id, uint64_t first_page) {
  {
    std::lock_guard<std::mutex> l(mu_);
    queue_.emplace_back(block_id, first_page);
  }
  cv_.notify_one();
}

void BlockPopulator::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_.store(true);
  }
  cv_.notify_all();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void BlockPopulator::Loop() {
  for (;;) {
    std::pair<uint32_t, uint64_t> item;
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return stop_.load() || !queue_.empty(); });
      if (stop_.load()) return;
      item = queue_.front();
      queue_.pop_front();
    }
    for (uint64_t page = item.second; !stop_.load(); page += pages_per_step_) {
      if (!step_(item.first, page, pages_per_step_)) break;
    }
  }
}

}  // namespace procmig
