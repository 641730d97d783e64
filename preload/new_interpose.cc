// operator new and delete, every variant of the Itanium C++ ABI: the agent's threads allocate
// from the agent heap, as with malloc (malloc_interpose.cc), and every other thread gets the next
// definition after ours: libstdc++'s (which calls malloc), or the one a jemalloc or tcmalloc
// defines when the program preloads or links it. Those go straight to their own heap, bypassing
// malloc, so without these the agent's C++ objects were that allocator's: program memory, and
// per-thread state (jemalloc's tsd, in the agent thread's TLS) that the allocator keeps linked
// after the agent thread is reaped in a restored copy; its next list update wrote there (seen:
// a jemalloc program migrated twice died by SIGSEGV in libjemalloc, e2e_pingpong_..._jemalloc).
// Memory of the agent heap is freed there whichever variant deletes it, on whichever thread.
#include <dlfcn.h>

#include <atomic>
#include <cstddef>
#include <new>

#include "preload/agent_heap.h"

namespace procmig::preload {
namespace {

// The next definition of `name` (a mangled operator), looked up at its first use.
template <typename Fn>
Fn Next(std::atomic<Fn>& slot, const char* name) {
  Fn f = slot.load(std::memory_order_acquire);
  if (f == nullptr) {
    f = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
    slot.store(f, std::memory_order_release);
  }
  return f;
}

using New = void* (*)(std::size_t);
using NewAligned = void* (*)(std::size_t, std::align_val_t);
using NewNothrow = void* (*)(std::size_t, const std::nothrow_t&);
using NewAlignedNothrow = void* (*)(std::size_t, std::align_val_t, const std::nothrow_t&);
using Delete = void (*)(void*);
using DeleteSized = void (*)(void*, std::size_t);
using DeleteAligned = void (*)(void*, std::align_val_t);
using DeleteSizedAligned = void (*)(void*, std::size_t, std::align_val_t);
using DeleteNothrow = void (*)(void*, const std::nothrow_t&);
using DeleteAlignedNothrow = void (*)(void*, std::align_val_t, const std::nothrow_t&);

struct NextOperators {
  std::atomic<New> nw{nullptr}, na{nullptr};
  std::atomic<NewAligned> nw_al{nullptr}, na_al{nullptr};
  std::atomic<NewNothrow> nw_nt{nullptr}, na_nt{nullptr};
  std::atomic<NewAlignedNothrow> nw_al_nt{nullptr}, na_al_nt{nullptr};
  std::atomic<Delete> dl{nullptr}, da{nullptr};
  std::atomic<DeleteSized> dl_s{nullptr}, da_s{nullptr};
  std::atomic<DeleteAligned> dl_al{nullptr}, da_al{nullptr};
  std::atomic<DeleteSizedAligned> dl_s_al{nullptr}, da_s_al{nullptr};
  std::atomic<DeleteNothrow> dl_nt{nullptr}, da_nt{nullptr};
  std::atomic<DeleteAlignedNothrow> dl_al_nt{nullptr}, da_al_nt{nullptr};
};
constinit NextOperators g_ops;

void* Agent(std::size_t size, std::size_t align = 0) {
  return AllocateIfAgent(size == 0 ? 1 : size, align);
}
std::size_t Align(std::align_val_t a) { return static_cast<std::size_t>(a); }

}  // namespace
}  // namespace procmig::preload

using procmig::preload::Agent;
using procmig::preload::Align;
using procmig::preload::FreeIfNotProgramMemory;
using procmig::preload::g_ops;
using procmig::preload::Next;

#define PROCMIG_EXPORT __attribute__((visibility("default")))

// An agent thread whose request the agent heap cannot serve gets the next definition too (as
// malloc does), rather than a null the agent's -fno-exceptions code would not expect.
PROCMIG_EXPORT void* operator new(std::size_t n) {
  if (void* p = Agent(n)) return p;
  return Next(g_ops.nw, "_Znwm")(n);
}
PROCMIG_EXPORT void* operator new[](std::size_t n) {
  if (void* p = Agent(n)) return p;
  return Next(g_ops.na, "_Znam")(n);
}
PROCMIG_EXPORT void* operator new(std::size_t n, std::align_val_t a) {
  if (void* p = Agent(n, Align(a))) return p;
  return Next(g_ops.nw_al, "_ZnwmSt11align_val_t")(n, a);
}
PROCMIG_EXPORT void* operator new[](std::size_t n, std::align_val_t a) {
  if (void* p = Agent(n, Align(a))) return p;
  return Next(g_ops.na_al, "_ZnamSt11align_val_t")(n, a);
}
PROCMIG_EXPORT void* operator new(std::size_t n, const std::nothrow_t& t) noexcept {
  if (void* p = Agent(n)) return p;
  return Next(g_ops.nw_nt, "_ZnwmRKSt9nothrow_t")(n, t);
}
PROCMIG_EXPORT void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept {
  if (void* p = Agent(n)) return p;
  return Next(g_ops.na_nt, "_ZnamRKSt9nothrow_t")(n, t);
}
PROCMIG_EXPORT void* operator new(std::size_t n, std::align_val_t a,
                                  const std::nothrow_t& t) noexcept {
  if (void* p = Agent(n, Align(a))) return p;
  return Next(g_ops.nw_al_nt, "_ZnwmSt11align_val_tRKSt9nothrow_t")(n, a, t);
}
PROCMIG_EXPORT void* operator new[](std::size_t n, std::align_val_t a,
                                    const std::nothrow_t& t) noexcept {
  if (void* p = Agent(n, Align(a))) return p;
  return Next(g_ops.na_al_nt, "_ZnamSt11align_val_tRKSt9nothrow_t")(n, a, t);
}

PROCMIG_EXPORT void operator delete(void* p) noexcept {
  if (!FreeIfNotProgramMemory(p)) Next(g_ops.dl, "_ZdlPv")(p);
}
PROCMIG_EXPORT void operator delete[](void* p) noexcept {
  if (!FreeIfNotProgramMemory(p)) Next(g_ops.da, "_ZdaPv")(p);
}
PROCMIG_EXPORT void operator delete(void* p, std::size_t n) noexcept {
  if (!FreeIfNotProgramMemory(p)) Next(g_ops.dl_s, "_ZdlPvm")(p, n);
}
PROCMIG_EXPORT void operator delete[](void* p, std::size_t n) noexcept {
  if (!FreeIfNotProgramMemory(p)) Next(g_ops.da_s, "_ZdaPvm")(p, n);
}
PROCMIG_EXPORT void operator delete(void* p, std::align_val_t a) noexcept {
  if (!FreeIfNotProgramMemory(p)) Next(g_ops.dl_al, "_ZdlPvSt11align_val_t")(p, a);
}
PROCMIG_EXPORT void operator delete[](void* p, std::align_val_t a) noexcept {
  if (!FreeIfNotProgramMemory(p)) Next(g_ops.da_al, "_ZdaPvSt11align_val_t")(p, a);
}
PROCMIG_EXPORT void operator delete(void* p, std::size_t n, std::align_val_t a) noexcept {
  if (!FreeIfNotProgramMemory(p)) Next(g_ops.dl_s_al, "_ZdlPvmSt11align_val_t")(p, n, a);
}
PROCMIG_EXPORT void operator delete[](void* p, std::size_t n, std::align_val_t a) noexcept {
  if (!FreeIfNotProgramMemory(p)) Next(g_ops.da_s_al, "_ZdaPvmSt11align_val_t")(p, n, a);
}
PROCMIG_EXPORT void operator delete(void* p, const std::nothrow_t& t) noexcept {
  if (!FreeIfNotProgramMemory(p)) Next(g_ops.dl_nt, "_ZdlPvRKSt9nothrow_t")(p, t);
}
PROCMIG_EXPORT void operator delete[](void* p, const std::nothrow_t& t) noexcept {
  if (!FreeIfNotProgramMemory(p)) Next(g_ops.da_nt, "_ZdaPvRKSt9nothrow_t")(p, t);
}
PROCMIG_EXPORT void operator delete(void* p, std::align_val_t a, const std::nothrow_t& t) noexcept {
  if (!FreeIfNotProgramMemory(p)) {
    Next(g_ops.dl_al_nt, "_ZdlPvSt11align_val_tRKSt9nothrow_t")(p, a, t);
  }
}
PROCMIG_EXPORT void operator delete[](void* p, std::align_val_t a,
                                      const std::nothrow_t& t) noexcept {
  if (!FreeIfNotProgramMemory(p)) {
    Next(g_ops.da_al_nt, "_ZdaPvSt11align_val_tRKSt9nothrow_t")(p, a, t);
  }
}
