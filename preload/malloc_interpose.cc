// malloc and its family, and pthread_create: the agent's threads allocate from the agent heap
// (agent_heap.h), every other thread from glibc's malloc as if the agent were not there.
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
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
// 16 MiB of small objects (migrated), 1 GiB of large runs (never migrated); what does not fit
// there comes from glibc.
constinit AgentHeap g_heap(16u << 20, size_t{1} << 30);

void* AgentAllocate(size_t size, size_t align) {
  return t_agent ? g_heap.Allocate(size, align) : nullptr;
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

}  // namespace procmig::preload

using procmig::preload::g_heap;

#define PROCMIG_EXPORT extern "C" __attribute__((visibility("default")))

PROCMIG_EXPORT void* malloc(size_t size) {
  if (void* p = procmig::preload::AgentAllocate(size, 0)) return p;
  return __libc_malloc(size);
}

PROCMIG_EXPORT void free(void* p) {
  if (g_heap.Owns(p)) {
    g_heap.Free(p);
  } else {
    __libc_free(p);
  }
}

PROCMIG_EXPORT void* calloc(size_t n, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(n, size, &total)) {
    errno = ENOMEM;
    return nullptr;
  }
  if (void* p = procmig::preload::AgentAllocate(total, 0)) {
    if (!procmig::preload::AgentHeap::ZeroedOnAllocate(total)) memset(p, 0, total);
    return p;
  }
  return __libc_calloc(n, size);
}

PROCMIG_EXPORT void* realloc(void* p, size_t size) {
  if (p == nullptr) return malloc(size);
  if (!g_heap.Owns(p)) return __libc_realloc(p, size);
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
  if (q == nullptr) q = __libc_malloc(size);
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
  if (void* p = procmig::preload::AgentAllocate(size, align)) return p;
  return __libc_memalign(align, size);
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
  if (void* p = procmig::preload::AgentAllocate(size, 4096)) return p;
  return __libc_valloc(size);
}

PROCMIG_EXPORT void* pvalloc(size_t size) {
  const size_t rounded = (size + 4095) & ~size_t{4095};
  if (void* p = procmig::preload::AgentAllocate(rounded == 0 ? 4096 : rounded, 4096)) return p;
  return __libc_pvalloc(size);
}

PROCMIG_EXPORT size_t malloc_usable_size(void* p) {
  if (p == nullptr) return 0;
  if (g_heap.Owns(p)) return g_heap.UsableSize(p);
  using Fn = size_t (*)(void*);
  static std::atomic<Fn> real{nullptr};
  Fn f = real.load(std::memory_order_acquire);
  if (f == nullptr) {
    f = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "malloc_usable_size"));
    if (f == nullptr) return 0;
    real.store(f, std::memory_order_release);
  }
  return f(p);
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
