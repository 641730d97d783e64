// A malloc of the program's own, linked in as a shared library (as tcmalloc or jemalloc would
// be): every block carries a header with a magic word, and free() aborts on a pointer without
// it, so a block of this allocator given to glibc's free (or the other way round) cannot pass
// unnoticed. Counts the blocks it handed out (tagging_malloc_count).
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void* __libc_malloc(size_t size);
void __libc_free(void* p);
void* __libc_memalign(size_t align, size_t size);

enum { kHeader = 32 };
static const uint64_t kMagic = 0x7461676d616c6c63ull;  // "tagmallc"
static atomic_ulong g_count;

struct Header {
  uint64_t magic;
  void* raw;
  size_t size;
  uint64_t pad;
};

static void* Tag(void* raw, char* user, size_t size) {
  if (raw == NULL) return NULL;
  struct Header* h = (struct Header*)(user - kHeader);
  h->magic = kMagic;
  h->raw = raw;
  h->size = size;
  atomic_fetch_add(&g_count, 1);
  return user;
}

static struct Header* HeaderOf(void* p) {
  struct Header* h = (struct Header*)((char*)p - kHeader);
  if (h->magic != kMagic) abort();  // not ours: someone mixed allocators
  return h;
}

unsigned long tagging_malloc_count(void) { return atomic_load(&g_count); }

void* malloc(size_t size) {
  char* raw = __libc_malloc(size + kHeader);
  return Tag(raw, raw + kHeader, size);
}

void free(void* p) {
  if (p == NULL) return;
  struct Header* h = HeaderOf(p);
  h->magic = 0;
  __libc_free(h->raw);
}

void* calloc(size_t n, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(n, size, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  void* p = malloc(total);
  if (p != NULL) memset(p, 0, total);
  return p;
}

void* realloc(void* p, size_t size) {
  if (p == NULL) return malloc(size);
  struct Header* h = HeaderOf(p);
  void* q = malloc(size);
  if (q == NULL) return NULL;
  memcpy(q, p, h->size < size ? h->size : size);
  free(p);
  return q;
}

void* memalign(size_t align, size_t size) {
  if (align < kHeader) align = kHeader;
  char* raw = __libc_memalign(align, size + align);
  return Tag(raw, raw + align, size);
}

int posix_memalign(void** out, size_t align, size_t size) {
  void* p = memalign(align, size);
  if (p == NULL) return ENOMEM;
  *out = p;
  return 0;
}

void* aligned_alloc(size_t align, size_t size) { return memalign(align, size); }
void* valloc(size_t size) { return memalign(4096, size); }
void* pvalloc(size_t size) { return memalign(4096, (size + 4095) & ~(size_t)4095); }
size_t malloc_usable_size(void* p) { return p == NULL ? 0 : HeaderOf(p)->size; }
