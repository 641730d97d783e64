// Test helper: counts C++ heap allocations (replaces the global operator new for the whole test
// binary, so include it from exactly one file per binary). The agent sends while the program's
// threads are parked and may hold the malloc lock, so a channel's successful data path must not
// allocate; tests check that with AllocationsDuring().
#ifndef PROCMIG_TESTS_UNIT_TRANSPORT_ALLOC_COUNTER_H_
#define PROCMIG_TESTS_UNIT_TRANSPORT_ALLOC_COUNTER_H_

#include <atomic>
#include <cstdlib>
#include <new>

namespace procmig::testing {
inline std::atomic<uint64_t> g_allocations{0};

template <typename F>
uint64_t AllocationsDuring(F&& f) {
  uint64_t before = g_allocations.load();
  f();
  return g_allocations.load() - before;
}
}  // namespace procmig::testing

void* operator new(std::size_t n) {
  procmig::testing::g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

#endif  // PROCMIG_TESTS_UNIT_TRANSPORT_ALLOC_COUNTER_H_
