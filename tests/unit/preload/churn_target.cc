// Run by memory_interpose_test.cc under LD_PRELOAD=libprocmig_preload.so. First it checks that
// mmap, mmap64, munmap, mremap, mprotect and madvise resolve to the agent's interposers and keep
// glibc's semantics (results, errno, mremap's fifth argument, MADV_DONTNEED zeroing), printing
// "FAIL: ..." and exiting 1 if not. Then three threads map, verify, write, unmap, grow, shrink,
// move, protect and discard regions of their own as fast as they can; a page's content is a
// function of (thread, region, generation, page), checked before every operation. It prints
// "ready", and after "go" on stdin stops the threads, verifies everything and prints
// "PASS <ops>" or "FAIL: <what>".
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cinttypes>
#include <cstdint>

namespace {

std::atomic<bool> g_stop{false};
std::atomic<int> g_failures{0};
std::atomic<uint64_t> g_ops{0};
char g_why[256];
size_t g_page = 4096;

void Fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void Fail(const char* fmt, ...) {
  if (g_failures.fetch_add(1) == 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_why, sizeof g_why, fmt, ap);
    va_end(ap);
  }
}

bool FromPreload(const char* name) {
  Dl_info info{};
  void* sym = dlsym(RTLD_DEFAULT, name);
  return sym != nullptr && dladdr(sym, &info) != 0 && info.dli_fname != nullptr &&
         strstr(info.dli_fname, "libprocmig_preload") != nullptr;
}

// The interposers' semantics, checked once before the threads start.
bool CheckSemantics() {
  for (const char* f : {"mmap", "mmap64", "munmap", "mremap", "mprotect", "madvise"}) {
    if (!FromPreload(f)) return Fail("%s does not resolve to the preload", f), false;
  }
  const size_t p = g_page;
  errno = 0;
  if (munmap(reinterpret_cast<void*>(0x1001), p) != -1 || errno != EINVAL)
    return Fail("munmap(unaligned): errno %d, want EINVAL", errno), false;
  int fd = open("/dev/zero", O_RDONLY);
  errno = 0;
  if (mmap(nullptr, p, PROT_READ, MAP_PRIVATE, fd, 1) != MAP_FAILED || errno != EINVAL)
    return Fail("mmap(offset 1): errno %d, want EINVAL", errno), false;
  close(fd);
  char* a = static_cast<char*>(
      mmap(nullptr, 4 * p, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (a == MAP_FAILED) return Fail("mmap: %s", strerror(errno)), false;
  memset(a, 0x5a, 4 * p);
  errno = 0;
  if (madvise(a, p, 12345) != -1 || errno != EINVAL)
    return Fail("madvise(bad advice): errno %d, want EINVAL", errno), false;
  if (madvise(a + p, p, MADV_DONTNEED) != 0 || a[p] != 0 || a[2 * p] != 0x5a)
    return Fail("madvise(MADV_DONTNEED) did not zero exactly its page"), false;
  // A free spot for MREMAP_FIXED: reserve, then move there.
  char* to = static_cast<char*>(
      mmap(nullptr, 4 * p, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  void* moved = mremap(a, 4 * p, 4 * p, MREMAP_MAYMOVE | MREMAP_FIXED, to);
  if (moved != to) return Fail("mremap(FIXED): %p, want %p (%s)", moved, to, strerror(errno)), false;
  if (to[0] != 0x5a || to[p] != 0 || to[3 * p] != 0x5a) return Fail("mremap lost content"), false;
  if (mprotect(to, p, PROT_READ) != 0 || mprotect(to, p, PROT_READ | PROT_WRITE) != 0)
    return Fail("mprotect: %s", strerror(errno)), false;
  errno = 0;
  if (mremap(a, p, 2 * p, 0) != MAP_FAILED || errno != EFAULT)
    return Fail("mremap(unmapped): errno %d, want EFAULT", errno), false;
  errno = 0;
  if (mprotect(a, p, PROT_READ) != -1 || errno != ENOMEM)
    return Fail("mprotect(unmapped): errno %d, want ENOMEM", errno), false;
  char* fixed = static_cast<char*>(mmap(to, p, PROT_READ | PROT_WRITE,
                                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0));
  if (fixed != to || to[0] != 0) return Fail("mmap(MAP_FIXED) over a mapping"), false;
  if (munmap(to, 4 * p) != 0) return Fail("munmap: %s", strerror(errno)), false;
  return true;
}

uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 33);
}

struct Region {
  char* addr = nullptr;
  size_t pages = 0;
  uint64_t gen = 0;
  bool read_only = false;
};

struct Churner {
  int index = 0;
  Region regions[8];
  uint64_t rng = 0;

  uint64_t Next() { return rng = Mix(rng + 0x9e3779b97f4a7c15ull); }
  uint64_t Base(size_t id, const Region& r, size_t j) const {
    return Mix((uint64_t(index) << 56) ^ (uint64_t(id) << 48) ^ (r.gen << 20) ^ j);
  }
  void Fill(size_t id, const Region& r, size_t from, size_t to) {
    for (size_t j = from; j < to; ++j) {
      auto* w = reinterpret_cast<uint64_t*>(r.addr + j * g_page);
      for (size_t k = 0; k < g_page / 8; k += 8) w[k] = Base(id, r, j) + k;
    }
  }
  bool Verify(size_t id, const Region& r) {
    for (size_t j = 0; j < r.pages; ++j) {
      auto* w = reinterpret_cast<const uint64_t*>(r.addr + j * g_page);
      for (size_t k = 0; k < g_page / 8; k += 8) {
        if (w[k] != Base(id, r, j) + k) {
          Fail("thread %d region %zu page %zu word %zu: %016" PRIx64 ", want %016" PRIx64, index,
               id, j, k, w[k], Base(id, r, j) + k);
          return false;
        }
      }
    }
    return true;
  }
  void Writable(Region& r) {
    if (!r.read_only) return;
    if (mprotect(r.addr, r.pages * g_page, PROT_READ | PROT_WRITE) != 0)
      Fail("mprotect rw: %s", strerror(errno));
    r.read_only = false;
  }

  void Op() {
    const size_t id = Next() % 8;
    Region& r = regions[id];
    if (r.addr == nullptr) {
      r.pages = 1 + Next() % 16;
      void* m = mmap(nullptr, r.pages * g_page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (m == MAP_FAILED) return Fail("mmap: %s", strerror(errno));
      r.addr = static_cast<char*>(m);
      r.gen++;
      r.read_only = false;
      Fill(id, r, 0, r.pages);
      return;
    }
    if (!Verify(id, r)) return;
    switch (Next() % 7) {
      case 0:
        if (munmap(r.addr, r.pages * g_page) != 0) return Fail("munmap: %s", strerror(errno));
        r.addr = nullptr;
        return;
      case 1: {  // grow (in place or moved)
        Writable(r);
        const size_t more = 1 + Next() % 8;
        void* m = mremap(r.addr, r.pages * g_page, (r.pages + more) * g_page, MREMAP_MAYMOVE);
        if (m == MAP_FAILED) return Fail("mremap grow: %s", strerror(errno));
        r.addr = static_cast<char*>(m);
        Fill(id, r, r.pages, r.pages + more);
        r.pages += more;
        return;
      }
      case 2:  // shrink
        if (r.pages > 1) {
          const size_t keep = 1 + Next() % (r.pages - 1);
          if (mremap(r.addr, r.pages * g_page, keep * g_page, 0) == MAP_FAILED)
            return Fail("mremap shrink: %s", strerror(errno));
          r.pages = keep;
        }
        return;
      case 3:  // read-only or back
        if (mprotect(r.addr, r.pages * g_page,
                     r.read_only ? PROT_READ | PROT_WRITE : PROT_READ) != 0)
          return Fail("mprotect: %s", strerror(errno));
        r.read_only = !r.read_only;
        return;
      case 4: {  // discard some pages, which read as zero, then refill them
        Writable(r);
        const size_t first = Next() % r.pages;
        const size_t n = 1 + Next() % (r.pages - first);
        if (madvise(r.addr + first * g_page, n * g_page, MADV_DONTNEED) != 0)
          return Fail("madvise: %s", strerror(errno));
        for (size_t j = first; j < first + n; ++j) {
          if (reinterpret_cast<const uint64_t*>(r.addr + j * g_page)[0] != 0)
            return Fail("page %zu not zero after MADV_DONTNEED", j);
        }
        Fill(id, r, first, first + n);
        return;
      }
      default:  // new content
        Writable(r);
        r.gen++;
        Fill(id, r, 0, r.pages);
        return;
    }
  }
};

Churner g_churners[3];

void* ChurnThread(void* arg) {
  Churner* c = static_cast<Churner*>(arg);
  while (!g_stop.load(std::memory_order_relaxed) && g_failures.load() == 0) {
    c->Op();
    g_ops.fetch_add(1, std::memory_order_relaxed);
  }
  return nullptr;
}

}  // namespace

int main() {
  g_page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  if (!CheckSemantics()) {
    printf("FAIL: %s\n", g_why);
    return 1;
  }
  pthread_t threads[3];
  for (int i = 0; i < 3; ++i) {
    g_churners[i].index = i;
    g_churners[i].rng = Mix(uint64_t(i) + 1);
    pthread_create(&threads[i], nullptr, ChurnThread, &g_churners[i]);
  }
  printf("ready\n");
  fflush(stdout);
  char line[16];
  ssize_t n = read(0, line, sizeof line);
  (void)n;
  g_stop = true;
  for (pthread_t t : threads) pthread_join(t, nullptr);
  for (Churner& c : g_churners) {
    for (size_t id = 0; id < 8; ++id) {
      if (c.regions[id].addr != nullptr) c.Verify(id, c.regions[id]);
    }
  }
  if (g_failures.load() != 0) {
    printf("FAIL: %s\n", g_why);
  } else {
    printf("PASS %" PRIu64 "\n", g_ops.load());
  }
  fflush(stdout);
  return g_failures.load() == 0 ? 0 : 1;
}
