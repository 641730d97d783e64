#include "procmig/layout_gate.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>

namespace procmig {
namespace {

uint32_t* Word(std::atomic<uint32_t>& a) { return reinterpret_cast<uint32_t*>(&a); }

void FutexWait(std::atomic<uint32_t>& word, uint32_t expected) {
  syscall(SYS_futex, Word(word), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
}

void FutexWake(std::atomic<uint32_t>& word, int count) {
  syscall(SYS_futex, Word(word), FUTEX_WAKE_PRIVATE, count, nullptr, nullptr, 0);
}

bool Overlaps(uintptr_t lo, uintptr_t hi, uintptr_t a, uintptr_t b) {
  return a < b && lo < hi && a < hi && lo < b;
}

}  // namespace

bool LayoutGate::TryBeginChange() {
  // Dekker with Lock(): each side announces itself, then looks at the other (seq_cst both ways).
  active_.fetch_add(1, std::memory_order_seq_cst);
  if (locked_.load(std::memory_order_seq_cst) == 0) return true;
  if (active_.fetch_sub(1, std::memory_order_seq_cst) == 1) FutexWake(active_, 1);
  return false;
}

void LayoutGate::WaitUntilOpen() {
  waits_.fetch_add(1, std::memory_order_relaxed);
  while (locked_.load(std::memory_order_acquire) != 0) FutexWait(locked_, 1);
}

void LayoutGate::EndChange(uintptr_t lo1, uintptr_t hi1, uintptr_t lo2, uintptr_t hi2) {
  if (lo1 < hi1 || lo2 < hi2) {
    const uint64_t s = seq_.fetch_add(1, std::memory_order_acq_rel) + 1;
    Entry& e = log_[s % kLogSize];
    e.lo1.store(lo1, std::memory_order_relaxed);
    e.hi1.store(hi1, std::memory_order_relaxed);
    e.lo2.store(lo2, std::memory_order_relaxed);
    e.hi2.store(hi2, std::memory_order_relaxed);
    e.seq.store(s, std::memory_order_release);
  }
  if (active_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
      locked_.load(std::memory_order_seq_cst) != 0) {
    FutexWake(active_, 1);
  }
}

void LayoutGate::NoteDiscard(uintptr_t addr, size_t len) {
  // Attach/Detach happen under the lock, which no open change overlaps: fn_ and ctx_ are stable.
  DiscardFn fn = fn_.load(std::memory_order_acquire);
  if (fn != nullptr) fn(ctx_.load(std::memory_order_relaxed), addr, len);
}

bool LayoutGate::HeldByCaller() const {
  return locked_.load(std::memory_order_relaxed) != 0 &&
         owner_.load(std::memory_order_relaxed) == static_cast<uintptr_t>(pthread_self());
}

void LayoutGate::Lock() {
  if (HeldByCaller()) {
    depth_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  uint32_t expected = 0;
  while (!locked_.compare_exchange_weak(expected, 1, std::memory_order_seq_cst)) {
    if (expected != 0) FutexWait(locked_, expected);
    expected = 0;
  }
  for (;;) {
    const uint32_t open = active_.load(std::memory_order_seq_cst);
    if (open == 0) break;
    FutexWait(active_, open);
  }
  owner_.store(static_cast<uintptr_t>(pthread_self()), std::memory_order_relaxed);
}

void LayoutGate::Unlock() {
  if (depth_.load(std::memory_order_relaxed) > 0) {
    depth_.fetch_sub(1, std::memory_order_relaxed);
    return;
  }
  owner_.store(0, std::memory_order_relaxed);
  locked_.store(0, std::memory_order_seq_cst);
  FutexWake(locked_, INT_MAX);
}

bool LayoutGate::ChangesSince(uint64_t since, uintptr_t lo, uintptr_t hi, RangeFn fn,
                              void* ctx) const {
  const uint64_t now = seq_.load(std::memory_order_acquire);
  if (since > now || now - since >= kLogSize) return now == since;
  for (uint64_t s = since + 1; s <= now; ++s) {
    if (log_[s % kLogSize].seq.load(std::memory_order_acquire) != s) return false;
  }
  for (uint64_t s = since + 1; s <= now; ++s) {
    const Entry& e = log_[s % kLogSize];
    const uintptr_t ranges[2][2] = {
        {e.lo1.load(std::memory_order_relaxed), e.hi1.load(std::memory_order_relaxed)},
        {e.lo2.load(std::memory_order_relaxed), e.hi2.load(std::memory_order_relaxed)}};
    for (const auto& r : ranges) {
      if (Overlaps(lo, hi, r[0], r[1])) fn(ctx, r[0] > lo ? r[0] : lo, r[1] < hi ? r[1] : hi);
    }
  }
  return true;
}

bool LayoutGate::ChangedSince(uint64_t since, uintptr_t lo, uintptr_t hi) const {
  bool touched = false;
  auto note = [](void* t, uintptr_t, uintptr_t) { *static_cast<bool*>(t) = true; };
  return !ChangesSince(since, lo, hi, note, &touched) || touched;
}

void LayoutGate::Attach(DiscardFn fn, void* ctx) {
  ctx_.store(ctx, std::memory_order_relaxed);
  fn_.store(fn, std::memory_order_release);
}

void LayoutGate::Detach() {
  fn_.store(nullptr, std::memory_order_release);
  ctx_.store(nullptr, std::memory_order_relaxed);
}

}  // namespace procmig
