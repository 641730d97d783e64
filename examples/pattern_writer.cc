// pattern_writer: QEMU's migration-test oracle applied to a process.
//
// One anonymous region of --mib MiB. Page i at pass k holds the byte (k + i) mod 256 in every
// one of its bytes. A single cursor sweeps the pages in order, rewriting page i with the value of
// pass k + 1, at --rate MB/s of page writes (0 = as fast as memset goes). So at any instant the
// pages behind the cursor hold pass k + 1 and the pages from the cursor on hold pass k: a snapshot
// taken at any moment (the migration's stop-and-copy) must show exactly that shape, with at most
// one torn page at the cursor. tests/e2e/check_image.py checks a stored image against it.
//
// Before rewriting a page the writer checks the whole page still holds the value it wrote last
// (a continuous check that costs one read per write); SIGUSR1/SIGUSR2 check every page.
// Single-threaded.
#include <sys/mman.h>

#include <cinttypes>
#include <cstdint>

#include "workload_common.h"

namespace procmig::examples {
namespace {

struct Pattern {
  uint8_t* base = nullptr;
  size_t page = 4096;
  size_t pages = 0;
  uint64_t pass = 0;  // pages [cursor, pages) hold pass `pass`
  size_t cursor = 0;  // pages [0, cursor) hold pass `pass + 1`
};

uint8_t ValueOf(uint64_t pass, size_t page_index) {
  return static_cast<uint8_t>((pass + page_index) & 0xff);
}

// True when every byte of the page equals `v`; compares 8 bytes at a time.
bool PageHolds(const uint8_t* p, size_t len, uint8_t v) {
  const uint64_t word = 0x0101010101010101ull * v;
  const auto* w = reinterpret_cast<const uint64_t*>(p);
  for (size_t i = 0; i < len / 8; ++i) {
    if (w[i] != word) return false;
  }
  return true;
}

// Offset of the first byte of the page that is not `v` (len if none).
size_t FirstDiff(const uint8_t* p, size_t len, uint8_t v) {
  size_t i = 0;
  while (i < len && p[i] == v) ++i;
  return i;
}

// Checks every page; on failure describes the first bad page in `detail`.
bool CheckAll(const Pattern& s, char* detail, size_t detail_len) {
  for (size_t i = 0; i < s.pages; ++i) {
    const uint8_t want = ValueOf(i < s.cursor ? s.pass + 1 : s.pass, i);
    const uint8_t* p = s.base + i * s.page;
    if (!PageHolds(p, s.page, want)) {
      const size_t off = FirstDiff(p, s.page, want);
      snprintf(detail, detail_len,
               "page %zu at %p: byte %zu is %u, want %u (pass %" PRIu64 " cursor %zu)", i,
               static_cast<const void*>(p), off, p[off], want, s.pass, s.cursor);
      return false;
    }
  }
  snprintf(detail, detail_len,
           "pattern_writer: %zu pages hold the pattern (pass %" PRIu64 " cursor %zu)", s.pages,
           s.pass, s.cursor);
  return true;
}

int Main(int argc, char** argv) {
  InstallCheckHandlers();
  Pattern s;
  s.page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const uint64_t mib = FlagU64(argc, argv, "--mib", 64);
  const uint64_t rate_mbps = FlagU64(argc, argv, "--rate", 32);
  s.pages = (mib << 20) / s.page;
  void* m =
      mmap(nullptr, s.pages * s.page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) FailNow("mmap %" PRIu64 " MiB: %s", mib, strerror(errno));
  s.base = static_cast<uint8_t*>(m);
  for (size_t i = 0; i < s.pages; ++i) memset(s.base + i * s.page, ValueOf(0, i), s.page);

  Say("READY pid=%d addr=0x%" PRIxPTR " bytes=%zu page=%zu", getpid(),
      reinterpret_cast<uintptr_t>(s.base), s.pages * s.page, s.page);
  Pacer pacer(static_cast<double>(rate_mbps) * 1e6 / static_cast<double>(s.page));
  char detail[256];
  for (;;) {
    const CheckRequest req = CheckRequested();
    if (req == CheckRequest::kQuit) _exit(0);
    if (req != CheckRequest::kNone) {
      const bool ok = CheckAll(s, detail, sizeof(detail));
      ReportCheck(req, ok, detail);
    }
    uint8_t* p = s.base + s.cursor * s.page;
    if (!PageHolds(p, s.page, ValueOf(s.pass, s.cursor))) {
      const size_t off = FirstDiff(p, s.page, ValueOf(s.pass, s.cursor));
      FailNow("page %zu changed under the writer: byte %zu is %u, want %u (pass %" PRIu64 ")",
              s.cursor, off, p[off], ValueOf(s.pass, s.cursor), s.pass);
    }
    memset(p, ValueOf(s.pass + 1, s.cursor), s.page);
    if (++s.cursor == s.pages) {
      s.cursor = 0;
      ++s.pass;
    }
    pacer.Tick();
  }
}

}  // namespace
}  // namespace procmig::examples

int main(int argc, char** argv) { return procmig::examples::Main(argc, argv); }
