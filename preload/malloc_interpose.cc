// malloc and its family, and pthread_create: the agent's threads allocate from the agent heap
// (agent_heap.h), every other thread from the program's own malloc as if the agent were not
// there: the next definition after the preload (dlsym RTLD_NEXT), glibc's or a tcmalloc or
// jemalloc the program is linked with. That one is looked up at the first call, which may come
// from the dynamic loader itself; what dlsym allocates meanwhile comes from a static buffer that
// is never freed.
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "preload/agent_heap.h"

extern "C" {
void* __libc_malloc(size_t size);
void __libc_free(void* p);
void* __libc_calloc(size_t n, size_t size);
void* __libc_realloc(void* p, size_t size);
void* __libc_memalign(size_t align, size_t size);
void* __libc_valloc(size_t size);
void* __libc_pvalloc(size_t size);
}

namespace procmig::preload {
namespace {

// Initial-exec: one fs-relative load on every malloc of the program.
__attribute__((tls_model("initial-exec"))) thread_local bool t_agent = false;
__attribute__((tls_model("initial-exec"))) thread_local bool t_resolving = false;
// 16 MiB of small objects (migrated), 1 GiB of large runs (never migrated); what does not fit
// there comes from the program's malloc.
constinit AgentHeap g_heap(16u << 20, size_t{1} << 30);

// The program's allocator: the definitions after ours in the lookup order.
struct Next {
  void* (*malloc)(size_t) = __libc_malloc;
  void (*free)(void*) = __libc_free;
  void* (*calloc)(size_t, size_t) = __libc_calloc;
  void* (*realloc)(void*, size_t) = __libc_realloc;
  void* (*memalign)(size_t, size_t) = __libc_memalign;
  void* (*valloc)(size_t) = __libc_valloc;
  void* (*pvalloc)(size_t) = __libc_pvalloc;
  size_t (*usable)(void*) = nullptr;
};
constinit Next g_next;
std::atomic<int> g_state{0};  // 0: not looked up, 1: being looked up, 2: g_next is final

// The look-up's own allocations (dlsym's error state): 16-byte headers holding the size, bumped,
// zero (never reused), never freed.
alignas(16) char g_boot[16384];
std::atomic<size_t> g_boot_used{0};

bool IsBoot(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  const auto b = reinterpret_cast<uintptr_t>(g_boot);
  return a >= b && a < b + sizeof g_boot;
}

void* BootAllocate(size_t size) {
  const size_t need = 16 + ((size + 15) & ~size_t{15});
  const size_t at = g_boot_used.fetch_add(need, std::memory_order_relaxed);
  if (at + need > sizeof g_boot || need < size) return nullptr;
  *reinterpret_cast<size_t*>(g_boot + at) = size;
  return g_boot + at + 16;
}

size_t BootSize(const void* p) {
  return *reinterpret_cast<const size_t*>(static_cast<const char*>(p) - 16);
}

template <typename F>
void Lookup(F* slot, const char* name) {
  if (void* f = dlsym(RTLD_NEXT, name)) *slot = reinterpret_cast<F>(f);
}

// Whether the caller must use the boot buffer (this thread is inside the look-up); else g_next
// is final when it returns.
bool Resolving() {
  if (g_state.load(std::memory_order_acquire) == 2) [[likely]] {
    return false;
  }
  if (t_resolving) return true;
  int expected = 0;
  if (g_state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
    t_resolving = true;
    Next n;
    Lookup(&n.malloc, "malloc");
    Lookup(&n.free, "free");
    Lookup(&n.calloc, "calloc");
    Lookup(&n.realloc, "realloc");
    Lookup(&n.memalign, "memalign");
    Lookup(&n.valloc, "valloc");
    Lookup(&n.pvalloc, "pvalloc");
    Lookup(&n.usable, "malloc_usable_size");
    g_next = n;
    t_resolving = false;
    g_state.store(2, std::memory_order_release);
    return false;
  }
  while (g_state.load(std::memory_order_acquire) != 2) sched_yield();
  return false;
}

struct Start {
  void* (*fn)(void*);
  void* arg;
};

void* StartAgentThread(void* p) {
  MarkAgentThread();
  const Start s = *static_cast<Start*>(p);
  free(p);
  return s.fn(s.arg);
}

}  // namespace

void MarkAgentThread() { t_agent = true; }
bool IsAgentThread() { return t_agent; }
AgentHeap& TheAgentHeap() { return g_heap; }

void* AllocateIfAgent(size_t size, size_t align) {
  return t_agent ? g_heap.Allocate(size, align) : nullptr;
}

bool FreeIfNotProgramMemory(void* p) {
  if (g_heap.Owns(p)) {
    g_heap.Free(p);
    return true;
  }
  return p == nullptr || IsBoot(p);  // the boot buffer's are never freed
}

const char* ProgramAllocatorFile() {
  (void)Resolving();
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(g_next.malloc), &info) == 0 || info.dli_fname == nullptr) {
    return "an unknown file";
  }
  return info.dli_fname;
}

}  // namespace procmig::preload

using procmig::preload::BootAllocate;
using procmig::preload::BootSize;
using procmig::preload::g_heap;
using procmig::preload::g_next;
using procmig::preload::IsBoot;
using procmig::preload::Resolving;

#define PROCMIG_EXPORT extern "C" __attribute__((visibility("default")))

PROCMIG_EXPORT void* malloc(size_t size) {
  if (void* p = procmig::preload::AllocateIfAgent(size, 0)) return p;
  if (Resolving()) return BootAllocate(size);
  return g_next.malloc(size);
}

PROCMIG_EXPORT void free(void* p) {
  if (procmig::preload::FreeIfNotProgramMemory(p)) return;
  if (Resolving()) {
    __libc_free(p);  // (not one of ours, during the look-up: the loader's, glibc's)
  } else {
    g_next.free(p);
  }
}

PROCMIG_EXPORT void* calloc(size_t n, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(n, size, &total)) {
    errno = ENOMEM;
    return nullptr;
  }
  if (void* p = procmig::preload::AllocateIfAgent(total, 0)) {
    if (!procmig::preload::AgentHeap::ZeroedOnAllocate(total)) memset(p, 0, total);
    return p;
  }
  if (Resolving()) return BootAllocate(total);  // zero: the buffer is never reused
  return g_next.calloc(n, size);
}

PROCMIG_EXPORT void* realloc(void* p, size_t size) {
  if (p == nullptr) return malloc(size);
  if (IsBoot(p)) {  // moved out of the boot buffer, which keeps it
    void* q = malloc(size);
    if (q != nullptr) memcpy(q, p, BootSize(p) < size ? BootSize(p) : size);
    return q;
  }
  if (!g_heap.Owns(p)) return Resolving() ? __libc_realloc(p, size) : g_next.realloc(p, size);
  if (size == 0) {  // as glibc: frees and returns null
    g_heap.Free(p);
    return nullptr;
  }
  const size_t usable = g_heap.UsableSize(p);
  if (usable == 0) {  // a pointer of a forgotten zone: nothing to copy from
    errno = ENOMEM;
    return nullptr;
  }
  if (size <= usable) return p;
  // Whoever frees it, the memory was the agent's: its successor is too.
  void* q = g_heap.Allocate(size, 0);
  if (q == nullptr) q = malloc(size);
  if (q == nullptr) return nullptr;
  memcpy(q, p, usable);
  g_heap.Free(p);
  return q;
}

PROCMIG_EXPORT void* reallocarray(void* p, size_t n, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(n, size, &total)) {
    errno = ENOMEM;
    return nullptr;
  }
  return realloc(p, total);
}

PROCMIG_EXPORT void* memalign(size_t align, size_t size) {
  if (void* p = procmig::preload::AllocateIfAgent(size, align)) return p;
  if (Resolving()) return align <= 16 ? BootAllocate(size) : nullptr;
  return g_next.memalign(align, size);
}

PROCMIG_EXPORT void* aligned_alloc(size_t align, size_t size) { return memalign(align, size); }

PROCMIG_EXPORT int posix_memalign(void** out, size_t align, size_t size) {
  if (align < sizeof(void*) || (align & (align - 1)) != 0) return EINVAL;
  void* p = memalign(align, size);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}

PROCMIG_EXPORT void* valloc(size_t size) {
  if (void* p = procmig::preload::AllocateIfAgent(size, 4096)) return p;
  if (Resolving()) return nullptr;
  return g_next.valloc(size);
}

PROCMIG_EXPORT void* pvalloc(size_t size) {
  const size_t rounded = (size + 4095) & ~size_t{4095};
  if (void* p = procmig::preload::AllocateIfAgent(rounded == 0 ? 4096 : rounded, 4096)) return p;
  if (Resolving()) return nullptr;
  return g_next.pvalloc(size);
}

PROCMIG_EXPORT size_t malloc_usable_size(void* p) {
  if (p == nullptr) return 0;
  if (g_heap.Owns(p)) return g_heap.UsableSize(p);
  if (IsBoot(p)) return BootSize(p);
  if (Resolving() || g_next.usable == nullptr) return 0;
  return g_next.usable(p);
}

PROCMIG_EXPORT int pthread_create(pthread_t* thread, const pthread_attr_t* attr, void* (*fn)(void*),
                                  void* arg) {
  using Fn = int (*)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
  static std::atomic<Fn> real{nullptr};
  Fn f = real.load(std::memory_order_acquire);
  if (f == nullptr) {
    f = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "pthread_create"));
    if (f == nullptr) return EAGAIN;
    real.store(f, std::memory_order_release);
  }
  if (!procmig::preload::IsAgentThread()) return f(thread, attr, fn, arg);
  // A thread of the agent's (a compressor, a fault handler) allocates from the agent heap too.
  auto* s = static_cast<procmig::preload::Start*>(malloc(sizeof(procmig::preload::Start)));
  if (s == nullptr) return EAGAIN;
  *s = {fn, arg};
  const int r = f(thread, attr, procmig::preload::StartAgentThread, s);
  if (r != 0) free(s);
  return r;
}
