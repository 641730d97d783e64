#include "preload/memory_interpose.h"

#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

#include "preload/agent.h"

#ifndef MADV_DONTNEED_LOCKED
#define MADV_DONTNEED_LOCKED 24
#endif

namespace procmig::preload {
namespace {

constinit LayoutGate g_gate;

using MmapFn = void* (*)(void*, size_t, int, int, int, off_t);
using MunmapFn = int (*)(void*, size_t);
using MremapFn = void* (*)(void*, size_t, size_t, int, ...);
using MprotectFn = int (*)(void*, size_t, int);
using MadviseFn = int (*)(void*, size_t, int);

// Fallbacks when dlsym finds nothing: the system calls glibc's wrappers make.
void* RawMmap(void* a, size_t l, int p, int f, int fd, off_t o) {
  if ((o & static_cast<off_t>(getauxval(AT_PAGESZ) - 1)) != 0) {
    errno = EINVAL;
    return MAP_FAILED;
  }
  return reinterpret_cast<void*>(syscall(SYS_mmap, a, l, p, f, fd, o));
}
int RawMunmap(void* a, size_t l) { return static_cast<int>(syscall(SYS_munmap, a, l)); }
void* RawMremap(void* a, size_t o, size_t n, int f, ...) {
  void* fixed = nullptr;
  if ((f & MREMAP_FIXED) != 0) {
    va_list ap;
    va_start(ap, f);
    fixed = va_arg(ap, void*);
    va_end(ap);
  }
  return reinterpret_cast<void*>(syscall(SYS_mremap, a, o, n, f, fixed));
}
int RawMprotect(void* a, size_t l, int p) { return static_cast<int>(syscall(SYS_mprotect, a, l, p)); }
int RawMadvise(void* a, size_t l, int v) { return static_cast<int>(syscall(SYS_madvise, a, l, v)); }

struct MemoryFunctions {
  std::atomic<MmapFn> mmap{nullptr};
  std::atomic<MmapFn> mmap64{nullptr};
  std::atomic<MunmapFn> munmap{nullptr};
  std::atomic<MremapFn> mremap{nullptr};
  std::atomic<MprotectFn> mprotect{nullptr};
  std::atomic<MadviseFn> madvise{nullptr};
};
constinit MemoryFunctions g_real;

template <typename Fn>
Fn Resolve(std::atomic<Fn>& slot, const char* name, Fn fallback) {
  Fn f = slot.load(std::memory_order_acquire);
  if (f != nullptr) return f;
  f = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
  if (f == nullptr) f = fallback;
  slot.store(f, std::memory_order_release);
  return f;
}

// Depth of open changes on this thread (a signal handler's call inside one passes through).
__attribute__((tls_model("initial-exec"))) thread_local int t_open = 0;

uintptr_t PageUp(uintptr_t v) {
  const uintptr_t page = getauxval(AT_PAGESZ);
  return (v + page - 1) & ~(page - 1);
}

// One layout change around a real call (see the header).
class Change {
 public:
  Change() {
    if (t_open > 0 || g_gate.HeldByCaller()) {
      pass_ = true;
      return;
    }
    for (;;) {
      const int sig = ParkSignal();
      if (sig != 0 && g_gate.tracking()) {
        uint64_t block = uint64_t{1} << (sig - 1);
        masked_ = syscall(SYS_rt_sigprocmask, SIG_BLOCK, &block, &old_mask_, sizeof block) == 0;
      }
      if (g_gate.TryBeginChange()) break;
      Unmask();
      g_gate.WaitUntilOpen();  // parkable here
    }
    ++t_open;
  }
  Change(const Change&) = delete;
  Change& operator=(const Change&) = delete;

  // Closes the change with the ranges it touched (as [lo, lo + len) pairs).
  void End(uintptr_t lo1, size_t len1, uintptr_t lo2 = 0, size_t len2 = 0) {
    if (pass_ || ended_) return;
    ended_ = true;
    --t_open;
    const int saved = errno;
    g_gate.EndChange(lo1, lo1 + PageUp(len1), lo2, lo2 + PageUp(len2));
    Unmask();
    errno = saved;
  }
  ~Change() { End(0, 0); }

 private:
  void Unmask() {
    if (!masked_) return;
    masked_ = false;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old_mask_, nullptr, sizeof old_mask_);
  }

  bool pass_ = false;
  bool ended_ = false;
  bool masked_ = false;
  uint64_t old_mask_ = 0;
};

uintptr_t U(const void* p) { return reinterpret_cast<uintptr_t>(p); }

void* Map(MmapFn real, void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  Change c;
  void* r = real(addr, len, prot, flags, fd, off);
  if (r != MAP_FAILED) {
    c.End(U(r), len);
  } else if ((flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) != 0) {
    c.End(U(addr), len);  // a failed MAP_FIXED may have unmapped what was there
  }
  return r;
}

bool IsDiscard(int advice) {
  return advice == MADV_DONTNEED || advice == MADV_FREE || advice == MADV_REMOVE ||
         advice == MADV_DONTNEED_LOCKED;
}

}  // namespace

LayoutGate& Gate() { return g_gate; }

void ForgetTracker() {
  LayoutGateLock hold(&g_gate);
  g_gate.Detach();
}

absl::Status GatedFreezer::Park(int timeout_ms, std::span<const pid_t> exempt) {
  LayoutGateLock hold(gate_);
  return inner_->Park(timeout_ms, exempt);
}

}  // namespace procmig::preload

using namespace procmig::preload;

extern "C" __attribute__((visibility("default"))) void* mmap(void* addr, size_t len, int prot,
                                                             int flags, int fd, off_t off) {
  return Map(Resolve(g_real.mmap, "mmap", &RawMmap), addr, len, prot, flags, fd, off);
}

extern "C" __attribute__((visibility("default"))) void* mmap64(void* addr, size_t len, int prot,
                                                               int flags, int fd, off_t off) {
  return Map(Resolve(g_real.mmap64, "mmap64", &RawMmap), addr, len, prot, flags, fd, off);
}

extern "C" __attribute__((visibility("default"))) int munmap(void* addr, size_t len) {
  MunmapFn real = Resolve(g_real.munmap, "munmap", &RawMunmap);
  Change c;
  int r = real(addr, len);
  c.End(U(addr), len);
  return r;
}

extern "C" __attribute__((visibility("default"))) void* mremap(void* old, size_t old_size,
                                                               size_t new_size, int flags, ...) {
  void* fixed = nullptr;
  if ((flags & MREMAP_FIXED) != 0) {
    va_list ap;
    va_start(ap, flags);
    fixed = va_arg(ap, void*);
    va_end(ap);
  }
  MremapFn real = Resolve(g_real.mremap, "mremap", &RawMremap);
  Change c;
  void* r = real(old, old_size, new_size, flags, fixed);
  // The old range (as far as it may have grown in place) and wherever it went.
  const size_t span = old_size > new_size ? old_size : new_size;
  if (r != MAP_FAILED) {
    c.End(U(old), span, r == old ? 0 : U(r), r == old ? 0 : new_size);
  } else {
    c.End(U(old), span, U(fixed), fixed == nullptr ? 0 : new_size);
  }
  return r;
}

extern "C" __attribute__((visibility("default"))) int mprotect(void* addr, size_t len, int prot) {
  MprotectFn real = Resolve(g_real.mprotect, "mprotect", &RawMprotect);
  Change c;
  int r = real(addr, len, prot);
  c.End(U(addr), len);
  return r;
}

extern "C" __attribute__((visibility("default"))) int madvise(void* addr, size_t len, int advice) {
  MadviseFn real = Resolve(g_real.madvise, "madvise", &RawMadvise);
  Change c;
  int r = real(addr, len, advice);
  if (r == 0 && IsDiscard(advice)) {
    const int saved = errno;
    Gate().NoteDiscard(U(addr), len);  // the change is still open: the tracker cannot go away
    errno = saved;
  }
  c.End(U(addr), len);
  return r;
}
