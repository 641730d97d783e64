// Run under the agent (LD_PRELOAD): a program whose malloc is tagging_malloc, a shared library
// it is linked with. Every allocation the program makes, directly or inside glibc (strdup,
// fopen), must come from that allocator and go back to it: its free() aborts otherwise. Exits 0
// and prints "tagging_malloc: N blocks" when all went through it.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

unsigned long tagging_malloc_count(void);

int main(void) {
  const unsigned long before = tagging_malloc_count();
  void* slots[64] = {0};
  for (int i = 0; i < 100000; ++i) {
    const int k = (i * 7919) % 64;
    free(slots[k]);
    switch (i % 4) {
      case 0:
        slots[k] = malloc(16 + i % 5000);
        break;
      case 1:
        slots[k] = calloc(3, 16 + i % 700);
        break;
      case 2:
        slots[k] = realloc(malloc(10), 100 + i % 9000);
        break;
      default:
        if (posix_memalign(&slots[k], 64, 100 + i % 3000) != 0) return 2;
    }
    if (slots[k] == NULL) return 3;
    memset(slots[k], 0x5a, 16);
  }
  for (int k = 0; k < 64; ++k) free(slots[k]);
  char* s = strdup("through glibc's own malloc call");
  free(s);
  FILE* f = fopen("/proc/self/status", "r");  // its buffer too
  if (f == NULL) return 4;
  char line[256];
  while (fgets(line, sizeof line, f) != NULL) {
  }
  fclose(f);
  const unsigned long made = tagging_malloc_count() - before;
  // 100000 blocks, the 25000 realloc'ed ones twice, strdup's, the FILE's and its buffer.
  if (made < 125000 + 2) {
    fprintf(stderr, "tagging_malloc: only %lu blocks came from the program's allocator\n", made);
    return 1;
  }
  printf("tagging_malloc: %lu blocks\n", made);
  return 0;
}
